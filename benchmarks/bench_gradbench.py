"""GradBench's evals as an external check: llgrad against JAX and PyTorch, float64.

    python benchmarks/bench_gradbench.py [--sizes small|default] [--threads 1]
                                         [--evals gmm,lse,...] [--systems llgrad,jax,torch]

GradBench (https://github.com/gradbench/gradbench, Haskell/Python/C++ by Troels Henriksen,
Sam Estep and others) is the field's public benchmark of automatic-differentiation tools.
The objectives below are written here from its evals' specifications (evals/*/README.md),
with its input generators' sizes and seeds; no code of GradBench's is copied.  Each
objective is written once against an array namespace ``xp`` (numpy traced by llgrad,
``jax.numpy``, a thin torch adapter) and differentiated by each system:

- gmm: the log posterior of a Gaussian mixture with a Wishart prior on the precision
  matrices (ADBench's, with GradBench's three fixes); the gradient with respect to
  alpha, mu, q, l.  n = 1,000 points from a normal, GradBench's generator's sizes.
- lse: log-sum-exp of x ~ U[0, 1) by the max trick; its gradient.
- llsq: cmpad's least-squares objective 1/2 sum_i (s_i - sum_j x_j t_i^j)^2 with
  t_i = -1 + 2i/(n - 1), s_i = sign(t_i); its gradient (m = 128 coefficients).
- kmeans: sum over points of the squared distance to the nearest centroid (centroids
  the last k points, as GradBench's generator takes them); GradBench's "dir", the Newton
  direction J / diag(H): the gradient and the Hessian's diagonal in one pass, a jvp of
  the gradient along a vector of ones (the Hessian is diagonal, so H 1 = diag H).
- ode: cmpad's an_ode, y_0' = x_0, y_i' = x_i y_{i-1} (the form GradBench's C++
  reference computes), y(0) = 0, s steps of classical Runge-Kutta up to t = 2; the
  gradient of the last element of y(2) (exactly 0 at GradBench's sizes: see
  ``ode_problems``).  A loop carried by the system's own
  fori_loop (llgrad.fori_loop, jax.lax.fori_loop; a Python loop in PyTorch).
- lstm: ADBench's LSTM (elementwise gate weights, log-softmax prediction), the
  gradient with respect to the main and extra parameters; its time loop a scan
  (llgrad.scan, jax.lax.scan; a Python loop in PyTorch).  GradBench reads
  its characters from a text file not stored with its repository: here a fixed-seed
  random 0/1 sequence of the same shape (14 bits a character).

Not here: ba and ht (their inputs are GradBench's data files; their Jacobians are
sparse or dense Jacobians, not gradients) and the C++ reference tool.

Oracle: every system's objective value and gradient (kmeans: also H 1 and the
direction) against every other system's, and its gradient's projection on a random
direction against a central difference of the float64 numpy objective; kmeans also
against its closed form (J = sum 2 (c - p) over each centroid's points, H = 2 count).
The exit status is 1 on any mismatch or failure.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the checkout's `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.workloads import python_scan

SEED = 31337                  # GradBench's generators' seed
PEER_TOLERANCE = 1e-8         # relative difference between two systems' float64 results
FD_TOLERANCE = 1e-5           # relative difference from a central difference
FD_STEP = 1e-6


# -- array namespaces ----------------------------------------------------------------------

class Namespace:
    """An array module plus what the objectives need beyond numpy's names
    (``fori_loop``), so that one source runs on every system."""

    def __init__(self, base, **extra):
        self._base = base
        self.__dict__.update(extra)

    def __getattr__(self, name):
        return getattr(self._base, name)


def python_fori_loop(lower, upper, body, init):
    value = init
    for i in range(lower, upper):
        value = body(i, value)
    return value


NUMPY = Namespace(np, fori_loop=python_fori_loop)
NUMPY.scan = lambda step, carry, xs: python_scan(np, step, carry, xs)


def _logsumexp0(xp, v):
    """log sum exp over axis 0 by the max trick (GradBench's lse asks for exactly this)."""
    top = xp.max(v, axis=0, keepdims=True)
    return top[0] + xp.log(xp.sum(xp.exp(v - top), axis=0))


# -- the evals ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Problem:
    """One input: the differentiable ``params`` (a tuple of float64 arrays), the other
    arrays ``data``, and ``static`` keywords that shape the program."""
    params: tuple
    data: tuple
    size: str
    static: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Eval:
    key: str
    objective: Callable           # objective(xp, params, data, **static) -> scalar
    problems: Callable            # problems(sizes) -> [Problem]
    computes: str = "gradient"    # or "dir": kmeans's Newton direction
    closed_form: Callable | None = None   # closed_form(problem) -> {quantity: arrays}


def gmm_objective(xp, params, data, *, triangle, m=0, gamma=1.0):
    """log p(X | theta, phi) + log p(theta): beta_ik = alpha_k + sum_j q_kj
    - |Q_k (x_i - mu_k)|^2 / 2, Q_k = diag(exp q_k) + the strictly lower triangle
    filled from l_k column by column (``triangle`` indexes [0, l_k] into it)."""
    alpha, mu, q, l = params
    (x,) = data
    n, d = x.shape
    k = mu.shape[0]
    diagonal = xp.exp(q)
    lower = xp.concatenate([0.0 * l[:, :1], l], axis=1)[:, triangle].reshape(k, d, d)
    centred = x.T[None, :, :] - mu[:, :, None]                          # (k, d, n)
    z = diagonal[:, :, None] * centred + lower @ centred                # Q_k (x_i - mu_k)
    beta = alpha[:, None] + xp.sum(q, axis=1)[:, None] - 0.5 * xp.sum(z * z, axis=1)
    log_likelihood = (xp.sum(_logsumexp0(xp, beta))
                      - n * (0.5 * d * math.log(2 * math.pi) + _logsumexp0(xp, alpha)))
    dof = d + m + 1
    log_gamma_d = (d * (d - 1) / 4 * math.log(math.pi)
                   + sum(math.lgamma(dof / 2 + (1 - j) / 2) for j in range(1, d + 1)))
    log_prior = (k * (dof * d * math.log(gamma / math.sqrt(2)) - log_gamma_d)
                 - 0.5 * gamma * gamma * (xp.sum(diagonal * diagonal) + xp.sum(l * l))
                 + m * xp.sum(q))
    return log_likelihood + log_prior


def lower_triangle_index(d: int) -> np.ndarray:
    """For Q's row-major d*d entries: 0 off the strict lower triangle, else 1 + the
    entry's position in l (filled column by column, as GradBench specifies)."""
    index = np.zeros(d * d, np.int64)
    position = 1
    for col in range(d):
        for row in range(col + 1, d):
            index[row * d + col] = position
            position += 1
    return index


def gmm_problems(sizes):
    dk = [(2, 5), (5, 3)] if sizes == "small" else [(2, 5), (10, 25), (20, 50), (64, 100)]
    n = 20 if sizes == "small" else 1000
    problems = []
    for d, k in dk:   # the draws of GradBench's generate(), in its order
        rng = np.random.default_rng(SEED)
        x = rng.normal(size=(n, d))
        alpha, mu = rng.normal(size=k), rng.uniform(size=(k, d))
        q, l = rng.normal(size=(k, d)), rng.normal(size=(k, d * (d - 1) // 2))
        problems.append(Problem((alpha, mu, q, l), (x,), f"d={d} k={k} n={n}",
                                {"triangle": lower_triangle_index(d)}))
    return problems


def lse_objective(xp, params, data):
    return _logsumexp0(xp, params[0])


def lse_problems(sizes):
    ns = [2500] if sizes == "small" else [10_000, 160_000, 1_280_000]
    return [Problem((np.random.default_rng(SEED).random(n),), (), f"n={n:,}") for n in ns]


def llsq_objective(xp, params, data):
    """t and s are data (they do not depend on x); ``powers`` is 0, 1, ..., m - 1."""
    (x,), (t, s, powers) = params, data
    residual = s - (t[:, None] ** powers[None, :]) @ x
    return 0.5 * xp.sum(residual * residual)


def llsq_problems(sizes):
    m = 128
    ns = [64] if sizes == "small" else [1024, 16_392]
    problems = []
    for n in ns:
        t = -1 + np.arange(n) * 2 / (n - 1)
        x = np.random.default_rng(SEED).random(m)
        problems.append(Problem((x,), (t, np.sign(t), np.arange(m, dtype=np.float64)),
                                f"n={n:,} m={m}"))
    return problems


def kmeans_objective(xp, params, data):
    """Each point's squared distance to its nearest centroid, summed; the distances as
    |p|^2 - 2 p.c + |c|^2, an (n, k) matrix rather than (n, k, d) differences."""
    (centroids,), (points,) = params, data
    distances = (xp.sum(points * points, axis=1)[:, None] - 2 * points @ centroids.T
                 + xp.sum(centroids * centroids, axis=1)[None, :])
    return xp.sum(xp.min(distances, axis=1))


def kmeans_closed_form(problem):
    (centroids,), (points,) = problem.params, problem.data
    nearest = np.argmin(((points[:, None, :] - centroids[None]) ** 2).sum(axis=2), axis=1)
    gradient = np.zeros_like(centroids)
    np.add.at(gradient, nearest, 2 * (centroids[nearest] - points))
    counts = np.bincount(nearest, minlength=len(centroids))[:, None]
    hessian = 2.0 * counts * np.ones_like(centroids)
    return {"gradient": (gradient,), "hessian diagonal": (hessian,),
            "dir": (gradient / hessian,)}


def kmeans_problems(sizes):
    knd = [(5, 100, 8)] if sizes == "small" else [(10, 1000, 8), (100, 10_000, 16),
                                                  (1000, 10_000, 16)]
    problems = []
    for k, n, d in knd:
        points = np.random.default_rng(SEED).random((n, d))
        problems.append(Problem((points[-k:].copy(),), (points,), f"k={k} n={n:,} d={d}"))
    return problems


def ode_objective(xp, params, data, *, steps):
    (x,) = params
    h = 2.0 / steps

    def rate(y):
        return xp.concatenate([x[:1], x[1:] * y[:-1]])

    def runge_kutta(i, y):
        k1 = rate(y)
        k2 = rate(y + h / 2 * k1)
        k3 = rate(y + h / 2 * k2)
        k4 = rate(y + h * k3)
        return y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)

    return xp.fori_loop(0, steps, runge_kutta, 0.0 * x)[-1]


def ode_problems(sizes):
    """GradBench's sizes have n > 4s, where y_{n-1}(2) and its gradient are exactly 0
    (each Runge-Kutta step carries x's influence at most four places down y): timed,
    but their check is empty; (50, 100) and the small (30, 10) check numbers."""
    ns = [(30, 10)] if sizes == "small" else [(50, 100), (1000, 10), (10_000, 100),
                                               (100_000, 100)]
    return [Problem((np.random.default_rng(SEED).random(n),), (), f"n={n:,} s={s}",
                    {"steps": s}) for n, s in ns]


def lstm_objective(xp, params, data):
    """ADBench's LSTM: per layer, gates = [x, h, x, h] * weight + bias (elementwise), forget/input/output
    sigmoids and a tanh change; the prediction's log-softmax scored against the next
    character, averaged (negated) over characters and bits."""
    (main, extra), (state, sequence) = params, data
    layers, b = main.shape[0] // 2, sequence.shape[1]

    def sigmoid(v):
        return 1 / (1 + xp.exp(-v))

    def step(carry, pair):
        x, gold = pair[:b], pair[b:]
        below = x * extra[0]
        new = []
        for k in range(layers):
            hidden, cell = carry[2 * k], carry[2 * k + 1]
            gates = xp.concatenate([below, hidden, below, hidden]) * main[2 * k] + main[2 * k + 1]
            cell = cell * sigmoid(gates[:b]) + sigmoid(gates[b:2 * b]) * xp.tanh(gates[3 * b:])
            hidden = sigmoid(gates[2 * b:3 * b]) * xp.tanh(cell)
            new += [hidden, cell]
            below = hidden
        prediction = below * extra[1] + extra[2]
        log_softmax = prediction - xp.log(xp.sum(xp.exp(prediction)))
        return xp.stack(new), xp.sum(gold * log_softmax)

    pairs = xp.concatenate([sequence[:-1], sequence[1:]], axis=1)   # (this, next) character
    _, totals = xp.scan(step, state, pairs)
    return -xp.sum(totals) / ((sequence.shape[0] - 1) * b)


def lstm_problems(sizes):
    lc = [(1, 16)] if sizes == "small" else [(2, 1024), (4, 1024)]
    b = 14
    problems = []
    for layers, c in lc:
        rng = np.random.default_rng(SEED)
        sequence = rng.integers(0, 2, size=(c, b)).astype(np.float64)
        state, main = rng.random((2 * layers, b)), rng.random((2 * layers, 4 * b))
        problems.append(Problem((main, rng.random((3, b))), (state, sequence),
                                f"l={layers} c={c:,} b={b}"))
    return problems


EVALS = [
    Eval("gmm", gmm_objective, gmm_problems),
    Eval("lse", lse_objective, lse_problems),
    Eval("llsq", llsq_objective, llsq_problems),
    Eval("kmeans", kmeans_objective, kmeans_problems, computes="dir",
         closed_form=kmeans_closed_form),
    Eval("ode", ode_objective, ode_problems),
    Eval("lstm", lstm_objective, lstm_problems),
]


# -- the systems ----------------------------------------------------------------------------

@dataclass
class Transforms:
    """What a system needs to run an eval: its namespace, transformations and array
    conversions."""
    name: str
    xp: object
    value_and_grad: Callable
    jvp: Callable
    jit: Callable
    to_system: Callable
    to_numpy: Callable


def llgrad_transforms():
    import llgrad
    return Transforms("llgrad", Namespace(np, fori_loop=llgrad.fori_loop, scan=llgrad.scan),
                      lambda f: llgrad.value_and_grad(f, argnums=0), llgrad.jvp, llgrad.jit,
                      lambda a: a, np.asarray)


def jax_transforms():
    import jax.numpy as jnp

    from benchmarks.systems.jax_system import _jax
    jax = _jax()   # float64 on, synchronous dispatch
    return Transforms("jax", Namespace(jnp, fori_loop=jax.lax.fori_loop, scan=jax.lax.scan),
                      jax.value_and_grad, jax.jvp, jax.jit, jax.device_put, np.asarray)


def torch_transforms():
    from benchmarks.systems.torch_systems import _torch, namespace
    torch = _torch()   # at the pinned thread count
    xp = Namespace(namespace(torch), fori_loop=python_fori_loop,
                   min=lambda a, axis=None: torch.amin(a) if axis is None else torch.amin(a, axis),
                   concatenate=lambda arrays, axis=0: torch.cat(list(arrays), dim=axis))
    xp.scan = lambda step, carry, xs: python_scan(xp, step, carry, xs)

    def value_and_grad(f):
        def both(*args):
            gradient, value = torch.func.grad_and_value(f)(*args)
            return value, gradient
        return both

    return Transforms("torch", xp, value_and_grad, torch.func.jvp, lambda f: f,
                      torch.from_numpy, lambda t: t.detach().numpy())


SYSTEMS = {"llgrad": (llgrad_transforms, None), "jax": (jax_transforms, "jax"),
           "torch": (torch_transforms, "torch")}


def _convert(tree, convert):
    if isinstance(tree, (tuple, list)):
        return tuple(_convert(t, convert) for t in tree)
    return convert(tree)


def build_call(system: Transforms, ev: Eval, problem: Problem):
    """A no-argument call running the eval once on ``system``; it returns
    {quantity: tuple of numpy arrays} (a quantity per compared result)."""
    static = problem.static

    def objective(params, *data):
        return ev.objective(system.xp, params, data, **static)

    params = _convert(problem.params, system.to_system)
    data = _convert(problem.data, system.to_system)
    if ev.computes == "gradient":
        run = system.jit(system.value_and_grad(objective))

        def call():
            value, gradient = run(params, *data)
            return {"value": (system.to_numpy(value),),
                    "gradient": _convert(gradient, system.to_numpy)}
        return call

    ones = _convert(tuple(np.ones_like(p) for p in problem.params), system.to_system)

    def newton(params, *data):
        (value, gradient), (_, curvature) = system.jvp(
            lambda p: system.value_and_grad(objective)(p, *data), (params,), (ones,))
        return value, gradient, curvature, tuple(g / h for g, h in zip(gradient, curvature))

    run = system.jit(newton)

    def call():
        value, gradient, curvature, direction = run(params, *data)
        return {"value": (system.to_numpy(value),), "gradient": _convert(gradient, system.to_numpy),
                "hessian diagonal": _convert(curvature, system.to_numpy),
                "dir": _convert(direction, system.to_numpy)}
    return call


# -- the oracle -----------------------------------------------------------------------------

def relative_difference(a: tuple, b: tuple) -> float:
    """max |a - b| / max(|a|, |b|) over the arrays of one quantity; inf on a shape
    mismatch or a NaN; 0 where both are exactly zero (ode's underflowing y_n)."""
    worst = 0.0
    for x, y in zip(a, b):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        if x.shape != y.shape:
            return math.inf
        difference = float(np.max(np.abs(x - y), initial=0.0))
        scale = max(float(np.max(np.abs(x), initial=0.0)), float(np.max(np.abs(y), initial=0.0)))
        if not math.isfinite(difference):
            return math.inf
        if difference:
            worst = max(worst, difference / scale)
    return worst


def directional_derivative(ev: Eval, problem: Problem, seed: int = SEED + 1):
    """(direction, central difference of the float64 numpy objective along it)."""
    rng = np.random.default_rng(seed)
    direction = tuple(rng.normal(size=np.shape(p)) for p in problem.params)

    def along(t):
        params = tuple(p + t * v for p, v in zip(problem.params, direction))
        return float(ev.objective(NUMPY, params, problem.data, **problem.static))

    return direction, (along(FD_STEP) - along(-FD_STEP)) / (2 * FD_STEP)


def check(results: dict, direction: tuple, numeric: float, closed_form: dict | None = None) -> dict:
    """{system: {"peers": worst relative difference from any other system over every
    quantity, "fd": relative error of its gradient along ``direction`` against the
    central difference ``numeric``, "closed form": (kmeans)}, "passed": bool}."""
    report = {}
    for name, result in results.items():
        peers = max((relative_difference(result[q], other[q])
                     for other_name, other in results.items() if other_name != name
                     for q in result), default=0.0)
        analytic = float(sum(np.sum(g * v) for g, v in zip(result["gradient"], direction)))
        fd = relative_difference((analytic,), (numeric,))
        entry = {"peers": peers, "fd": fd}
        passed = peers <= PEER_TOLERANCE and fd <= FD_TOLERANCE
        if closed_form:
            entry["closed form"] = max(relative_difference(result[q], closed_form[q])
                                       for q in closed_form)
            passed = passed and entry["closed form"] <= PEER_TOLERANCE
        entry["passed"] = passed
        report[name] = entry
    return report


# -- timing and the report ------------------------------------------------------------------

def time_call(call, seconds: float, min_calls: int = 3, max_calls: int = 200):
    """(first call seconds, its result, median of the calls after it)."""
    t0 = time.perf_counter()
    result = call()
    first = time.perf_counter() - t0
    times, deadline = [], time.perf_counter() + seconds
    while len(times) < min_calls or (time.perf_counter() < deadline and len(times) < max_calls):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return first, result, statistics.median(times)


def _duration(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} µs"


def table(ev: Eval, problem: Problem, timings: dict, checks: dict, failures: dict) -> list[str]:
    baseline = timings.get("llgrad", (None, None))[1]
    quantity = "Newton direction (J, H 1)" if ev.computes == "dir" else "value and gradient"
    lines = [f"### {ev.key} {problem.size}: {quantity}", "",
             ("| system | first call (compile) | median | ratio to llgrad | max rel. error "
              "(peers / central difference) |"), "|---|---|---|---|---|"]
    for name, (first, median) in timings.items():
        ratio = f"{median / baseline:.2f}×" if baseline else "-"
        c = checks[name]
        errors = f"{c['peers']:.1e} / {c['fd']:.1e}" + (
            f" / closed form {c['closed form']:.1e}" if "closed form" in c else "")
        lines.append(f"| {name} | {_duration(first)} | {_duration(median)} | {ratio} | "
                     f"{errors}{'' if c['passed'] else ' **MISMATCH**'} |")
    for name, why in failures.items():
        lines.append(f"| {name} | failed: {why} | | | |")
    return lines + [""]


def run_eval(ev: Eval, systems: dict, sizes: str, seconds: float, log=print) -> bool:
    """Every problem of ``ev`` on every system: tables printed; True when all passed."""
    ok = True
    for problem in ev.problems(sizes):
        direction, numeric = directional_derivative(ev, problem)
        closed = ev.closed_form(problem) if ev.closed_form else None
        results, timings, failures = {}, {}, {}
        for name, transforms in systems.items():
            try:
                first, result, median = time_call(build_call(transforms, ev, problem), seconds)
            except Exception as error:  # a system failing is a finding: report it
                failures[name] = _failure(error)
                continue
            results[name], timings[name] = result, (first, median)
        checks = check(results, direction, numeric, closed)
        log("\n".join(table(ev, problem, timings, checks, failures)))
        if results and not any(np.any(g) for r in results.values() for g in r["gradient"]):
            log("(every system's gradient is exactly 0 here: the comparison is empty)\n")
        ok = ok and not failures and all(c["passed"] for c in checks.values())
    return ok


def _failure(error: BaseException) -> str:
    import traceback
    where = traceback.extract_tb(error.__traceback__)[-1]
    first_line = (str(error).strip().splitlines() or [""])[0][:200]
    return f"{type(error).__name__}: {first_line} ({Path(where.filename).name}:{where.lineno})"


def load_systems(wanted: list[str], log=print) -> dict:
    import importlib.util
    systems = {}
    for name in wanted:
        make, module = SYSTEMS[name]
        if module and importlib.util.find_spec(module) is None:
            log(f"- {name}: skipped, not installed (pip install {module})")
            continue
        systems[name] = make()
    return systems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", choices=("small", "default"), default="default",
                        help="small: seconds, for tests; default: GradBench's main sizes")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--evals", default=",".join(e.key for e in EVALS))
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--seconds", type=float, default=None,
                        help="timed seconds per system and size (default 1, small 0.1)")
    args = parser.parse_args(argv)
    wanted_evals = [e for e in EVALS if e.key in args.evals.split(",")]
    wanted_systems = [s for s in args.systems.split(",") if s in SYSTEMS]
    if not wanted_evals or not wanted_systems:
        raise SystemExit(f"nothing to run: --evals {args.evals!r} --systems {args.systems!r}")
    seconds = args.seconds if args.seconds is not None else (0.1 if args.sizes == "small" else 1.0)
    from benchmarks.report import cpu_model, thread_counts
    from benchmarks.run import pinned_threads
    with pinned_threads(args.threads) as pinned_by:
        print(f"# GradBench evals, float64 ({args.sizes} sizes)\n")
        print(f"- CPU: {cpu_model()}")
        systems = load_systems(wanted_systems, log=print)
        print(f"- threads: {args.threads} ({thread_counts(pinned_by)})")
        print("- first call: trace, differentiate and compile, then run; llgrad's on-disk "
              "cache as the machine has it (LLGRAD_NO_CACHE=1: from scratch)\n")
        ok = True
        for ev in wanted_evals:
            ok = run_eval(ev, systems, args.sizes, seconds) and ok
    print("all checks passed" if ok else "MISMATCH or FAILURE: see the tables above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
