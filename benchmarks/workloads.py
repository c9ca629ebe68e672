"""The workloads of the benchmark suite, each defined once.

A loss is written against an array namespace ``xp`` (``tanh exp log sin cos sqrt sum max
mean`` and the operators), so that every system runs the same source: llgrad traces it
with ``xp = numpy``, HIPS autograd gets ``autograd.numpy``, JAX ``jax.numpy``, PyTensor
``pytensor.tensor``, PyTorch a thin adapter, and micrograd numpy itself over object
arrays of its ``Value``s.  The LSTM's loss also takes ``xp.stack`` and, where the
system has one, ``xp.scan`` (``WithScan``: llgrad.scan, jax.lax.scan); without it the
steps are a Python loop.  Beside each loss sits its gradient by hand in numpy: run in
float64 it is the reference every system is checked against, and the suite checks it
against central finite differences before trusting it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import numpy as np

SEED = 0


@dataclass(frozen=True)
class Problem:
    """One configuration of a workload: the differentiable ``params`` (a dict, in the
    order gradients are compared) and the remaining arguments ``data``."""
    params: dict
    data: tuple
    size: str                 # how the configuration is shown in tables
    scale: dict               # the numbers behind ``size`` (plot axes, JSON)
    steps: int = 0            # training only: SGD steps, each on the next ``batch`` rows
    batch: int = 0
    lr: float = 0.0
    shuffle: int | None = None  # training only: the rows in the order of llgrad.train's
                                # shuffle with this seed (see ``row_order``); None: in order


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    loss: Callable            # loss(xp, params, *data) -> scalar
    backprop: Callable        # backprop(params, *data) -> {name: gradient}, numpy by hand
    problems: Callable        # problems(quick) -> [Problem, ...]
    training: bool = False    # time a whole SGD run instead of one gradient


# -- 1. scalar expression ------------------------------------------------------------

TERMS = 50


def scalar_loss(xp, params):
    x, y, z = params["x"], params["y"], params["z"]
    total = 0.0
    for i in range(TERMS):
        total = total + xp.tanh(0.01 * i * x + y) * xp.exp(-0.001 * i * z * z)
    return total + xp.log(1 + x * x) * xp.sin(y * z)


def scalar_backprop(params):
    x, y, z = (float(params[k]) for k in "xyz")
    i = np.arange(TERMS)
    t, e = np.tanh(0.01 * i * x + y), np.exp(-0.001 * i * z * z)
    dt = (1 - t * t) * e
    log_term, s, c = np.log(1 + x * x), np.sin(y * z), np.cos(y * z)
    return {"x": float(np.sum(dt * 0.01 * i) + 2 * x / (1 + x * x) * s),
            "y": float(np.sum(dt) + log_term * c * z),
            "z": float(np.sum(t * e * (-0.002 * i * z)) + log_term * c * y)}


def scalar_problems(quick):
    return [Problem({"x": 0.7, "y": -0.3, "z": 1.2}, (), "3 floats, 50 terms", {"terms": TERMS})]


# -- 2. tiny MLP (micrograd scale) -------------------------------------------------------

def tiny_mlp_loss(xp, params, x, y):
    h = xp.tanh(x @ params["w1"] + params["b1"])
    h = xp.tanh(h @ params["w2"] + params["b2"])
    return xp.mean((h @ params["w3"] + params["b3"] - y) ** 2)


def tiny_mlp_backprop(params, x, y):
    h1 = np.tanh(x @ params["w1"] + params["b1"])
    h2 = np.tanh(h1 @ params["w2"] + params["b2"])
    dout = 2 * (h2 @ params["w3"] + params["b3"] - y) / y.size
    dh2 = (dout @ params["w3"].T) * (1 - h2 * h2)
    dh1 = (dh2 @ params["w2"].T) * (1 - h1 * h1)
    return {"w1": x.T @ dh1, "b1": dh1.sum(0), "w2": h1.T @ dh2, "b2": dh2.sum(0),
            "w3": h2.T @ dout, "b3": dout.sum(0)}


def _layers(rng, widths, dtype):
    params = {}
    for k, (n_in, n_out) in enumerate(zip(widths, widths[1:]), start=1):
        params[f"w{k}"] = (rng.normal(size=(n_in, n_out)) / np.sqrt(n_in)).astype(dtype)
        params[f"b{k}"] = (0.1 * rng.normal(size=n_out)).astype(dtype)
    return params


def tiny_mlp_problems(quick):
    rng = np.random.default_rng(SEED)
    x = rng.uniform(-2, 2, size=(100, 2))
    y = np.sin(x[:, :1]) * np.cos(x[:, 1:])
    return [Problem(_layers(rng, (2, 16, 16, 1), np.float64), (x, y), "2-16-16-1, 100 points",
                    {"points": 100})]


# -- 3, 4, 6. the MLP step, its training loop and its scaling ---------------------------

def mlp_loss(xp, params, x, y):
    h = xp.tanh(x @ params["w1"] + params["b1"])
    logits = h @ params["w2"] + params["b2"]
    logits = logits - xp.max(logits, axis=1, keepdims=True)
    logp = logits - xp.log(xp.sum(xp.exp(logits), axis=1, keepdims=True))
    return -xp.mean(xp.sum(logp * y, axis=1))


def mlp_backprop(params, x, y):
    """Softmax cross-entropy with one-hot targets: d loss / d logits = (softmax - y) / batch."""
    h = np.tanh(x @ params["w1"] + params["b1"])
    logits = h @ params["w2"] + params["b2"]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    dlogits = (e / e.sum(axis=1, keepdims=True) - y) / x.shape[0]
    dh = (dlogits @ params["w2"].T) * (1 - h * h)
    return {"w1": x.T @ dh, "b1": dh.sum(0), "w2": h.T @ dlogits, "b2": dlogits.sum(0)}


def mlp_problem(n_in, hidden, n_out, batch, steps=1, lr=0.0, sweeps=()):
    """float32 data for ``steps`` minibatches of ``batch`` rows, and initial parameters;
    ``sweeps`` names the scaling curves (hidden, batch) this point lies on."""
    rng = np.random.default_rng(SEED)
    params = _layers(rng, (n_in, hidden, n_out), np.float32)
    x = rng.normal(size=(steps * batch, n_in)).astype(np.float32)
    y = np.eye(n_out, dtype=np.float32)[rng.integers(0, n_out, steps * batch)]
    size = f"{n_in}-{hidden}-{n_out}, batch {batch}" + (f", {steps} steps" if steps > 1 else "")
    return Problem(params, (x, y), size, {"hidden": hidden, "batch": batch, "sweeps": sweeps},
                   steps=steps if lr else 0, batch=batch, lr=lr)


def mlp_step_problems(quick):
    return [mlp_problem(64, 32, 10, 16) if quick else mlp_problem(784, 128, 10, 64)]


def training_problems(quick):
    if quick:
        return [mlp_problem(64, 32, 10, 16, steps=10, lr=0.1)]
    return [mlp_problem(784, 128, 10, 64, steps=200, lr=0.1)]


def streaming_problems(quick):
    """Workload 4's epoch with every minibatch gathered from rows spread over the whole
    data set (12,800 x 784 float32, 40 MB, at full size): each step reads rows that no
    hardware prefetcher can guess, from memory unless the last-level cache holds 40 MB."""
    return [dataclasses.replace(p, shuffle=SEED, size=p.size + ", shuffled rows")
            for p in training_problems(quick)]


def row_order(problem):
    """The training rows in step order: the first epoch of ``llgrad.train``'s shuffle."""
    n = problem.steps * problem.batch
    if problem.shuffle is None:
        return np.arange(n)
    return np.random.default_rng(problem.shuffle).permutation(len(problem.data[0]))[:n]


SCALING_WIDTHS = (32, 64, 128, 256, 512, 1024)
SCALING_BATCHES = (16, 32, 64, 128, 256, 512, 1024)


def scaling_problems(quick):
    """Hidden width swept at batch 64, then batch swept at width 128 (the point both
    sweeps share is measured once)."""
    n_in, widths, batches, at_width, at_batch = (
        (64, (16, 32), (16, 32), 32, 16) if quick
        else (784, SCALING_WIDTHS, SCALING_BATCHES, 128, 64))
    points = {(h, at_batch): ("hidden",) for h in widths}
    for b in batches:
        points[at_width, b] = points.get((at_width, b), ()) + ("batch",)
    return [mlp_problem(n_in, h, 10, b, sweeps=sweeps) for (h, b), sweeps in points.items()]


# -- 5. elementwise vector ---------------------------------------------------------------

def elementwise_loss(xp, params):
    x = params["x"]
    return xp.sum(xp.log(1 + xp.exp(xp.sin(x) * x)) + xp.sqrt(x * x + 1) * xp.cos(x))


def elementwise_backprop(params):
    x = params["x"]
    s, c, r = np.sin(x), np.cos(x), np.sqrt(x * x + 1)
    u = s * x
    return {"x": (c * x + s) / (1 + np.exp(-u)) + x / r * c - r * s}


def elementwise_problems(quick):
    n = 10_000 if quick else 1_000_000
    x = np.random.default_rng(SEED).uniform(-5, 5, size=n)
    return [Problem({"x": x}, (), f"n = {n:,}", {"n": n})]


# -- 7. matrix-vector gradient (memory-bound) ----------------------------------------------

def matvec_loss(xp, params, x, y):
    """Logistic regression's mean loss, log(1 + e^z) - y z with z = X w."""
    z = x @ params["w"]
    return xp.mean(xp.log(1 + xp.exp(z)) - y * z)


def matvec_backprop(params, x, y):
    z = x @ params["w"]
    return {"w": x.T @ ((1 / (1 + np.exp(-z)) - y) / x.shape[0])}


def matvec_problems(quick):
    """float64 rows well beyond L2 (80 MB at full size): the gradient reads X twice,
    once for X @ w and once for X^T r, and does two flop per element it reads."""
    n, d = (2_000, 20) if quick else (50_000, 200)
    rng = np.random.default_rng(SEED)
    x = rng.normal(size=(n, d))
    y = (rng.random(n) < 0.5).astype(np.float64)
    return [Problem({"w": rng.normal(size=d) / np.sqrt(d)}, (x, y), f"{n:,} x {d} float64",
                    {"n": n, "d": d})]


# -- 8. k-means cost (pairwise differences) ------------------------------------------------

def kmeans_loss(xp, params, x):
    """Each point's squared distance to its nearest centroid, summed: the (n, k, d)
    differences broadcast, squared and summed over d, the least of each row taken."""
    c = params["centroids"]
    diff = x[:, None, :] - c[None, :, :]
    distances = xp.sum(diff * diff, axis=2)
    return -xp.sum(xp.max(-distances, axis=1))


def kmeans_backprop(params, x):
    c = params["centroids"]
    distances = ((x[:, None, :] - c[None, :, :]) ** 2).sum(axis=2)
    nearest = distances.argmin(axis=1)
    grad = np.zeros_like(c)
    np.add.at(grad, nearest, 2 * (c[nearest] - x))
    return {"centroids": grad}


def kmeans_problems(quick):
    n, k, d = (500, 50, 8) if quick else (10_000, 1_000, 8)
    rng = np.random.default_rng(SEED)
    x = rng.normal(size=(n, d))
    return [Problem({"centroids": rng.normal(size=(k, d))}, (x,),
                    f"n = {n:,}, k = {k:,}, d = {d}", {"n": n, "k": k, "d": d})]


# -- 10. an LSTM layer through scan ---------------------------------------------------

def python_scan(xp, step, init, xs):
    """``scan`` as a Python loop over the rows of ``xs``, its ``ys`` stacked: what a
    namespace without a ``scan`` of its own runs (numpy for the references, eager
    PyTorch)."""
    carry, ys = init, []
    for t in range(xs.shape[0]):
        carry, y = step(carry, xs[t])
        ys.append(y)
    return carry, xp.stack(ys)


class WithScan:
    """An array namespace and the system's ``scan(f, init, xs) -> (carry, ys)``
    (llgrad.scan, jax.lax.scan), so that one LSTM source runs on every system."""

    def __init__(self, xp, scan):
        self._xp, self.scan = xp, scan

    def __getattr__(self, name):
        return getattr(self._xp, name)


def _sigmoid(xp, x):
    return 1 / (1 + xp.exp(-x))


def lstm_loss(xp, params, xs):
    """One LSTM layer (gates i, f, g, o, as PyTorch's nn.LSTM orders them) over the
    sequence ``xs`` from zero state; the loss is the sum of squares of every hidden
    state."""
    w, u, bias = params["w"], params["u"], params["bias"]
    hidden = u.shape[0]

    def step(state, x):
        h, c = state
        gates = x @ w + h @ u + bias
        i, f, g, o = (gates[:, k * hidden:(k + 1) * hidden] for k in range(4))
        c = _sigmoid(xp, f) * c + _sigmoid(xp, i) * xp.tanh(g)
        h = _sigmoid(xp, o) * xp.tanh(c)
        return (h, c), h

    zeros = xs[0, :, :1] * u[:1, :hidden] * 0     # (batch, hidden), by operators alone
    scan = getattr(xp, "scan", None) or (lambda f, init, rows: python_scan(xp, f, init, rows))
    _, hs = scan(step, (zeros, zeros), xs)
    return xp.sum(hs * hs)


def lstm_backprop(params, xs):
    """Backpropagation through time by hand: the forward steps kept, then walked back."""
    w, u, bias = params["w"], params["u"], params["bias"]
    hidden, batch = u.shape[0], xs.shape[1]
    h, c = np.zeros((batch, hidden), xs.dtype), np.zeros((batch, hidden), xs.dtype)
    kept = []
    for x in xs:
        gates = x @ w + h @ u + bias
        i, f, g, o = (gates[:, k * hidden:(k + 1) * hidden] for k in range(4))
        i, f, o, g = 1 / (1 + np.exp(-i)), 1 / (1 + np.exp(-f)), 1 / (1 + np.exp(-o)), np.tanh(g)
        c_new = f * c + i * g
        kept.append((x, h, c, i, f, g, o, np.tanh(c_new)))
        h, c = o * kept[-1][7], c_new
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    dh_next, dc_next = np.zeros_like(h), np.zeros_like(c)
    for x, h_prev, c_prev, i, f, g, o, tc in reversed(kept):
        dh = 2 * o * tc + dh_next
        dc = dh * o * (1 - tc * tc) + dc_next
        dgates = np.concatenate([dc * g * i * (1 - i), dc * c_prev * f * (1 - f),
                                 dc * i * (1 - g * g), dh * tc * o * (1 - o)], axis=1)
        grads["w"] += x.T @ dgates
        grads["u"] += h_prev.T @ dgates
        grads["bias"] += dgates.sum(0)
        dh_next, dc_next = dgates @ u.T, dc * f
    return grads


def lstm_problems(quick):
    hidden, batch, steps, features = (16, 4, 10, 8) if quick else (256, 32, 100, 256)
    rng = np.random.default_rng(SEED)
    f32 = np.float32
    params = {"w": (rng.normal(size=(features, 4 * hidden)) / np.sqrt(features)).astype(f32),
              "u": (rng.normal(size=(hidden, 4 * hidden)) / np.sqrt(hidden)).astype(f32),
              "bias": (0.1 * rng.normal(size=4 * hidden)).astype(f32)}
    xs = rng.normal(size=(steps, batch, features)).astype(f32)
    return [Problem(params, (xs,), f"hidden {hidden}, batch {batch}, {steps} steps",
                    {"hidden": hidden, "batch": batch, "steps": steps})]


WORKLOADS = [
    Workload("scalar", "1. scalar expression", scalar_loss, scalar_backprop, scalar_problems),
    Workload("tiny_mlp", "2. tiny MLP 2-16-16-1, tanh, MSE", tiny_mlp_loss, tiny_mlp_backprop,
             tiny_mlp_problems),
    Workload("mlp_step", "3. MLP step, tanh, softmax cross-entropy, float32", mlp_loss,
             mlp_backprop, mlp_step_problems),
    Workload("training", "4. training loop, SGD over fixed minibatches, float32", mlp_loss,
             mlp_backprop, training_problems, training=True),
    Workload("elementwise", "5. elementwise vector", elementwise_loss, elementwise_backprop,
             elementwise_problems),
    Workload("scaling", "6. scaling of the MLP step", mlp_loss, mlp_backprop, scaling_problems),
    Workload("matvec", "7. logistic-regression gradient, float64 matrix beyond L2",
             matvec_loss, matvec_backprop, matvec_problems),
    Workload("kmeans", "8. k-means cost, pairwise differences", kmeans_loss, kmeans_backprop,
             kmeans_problems),
    Workload("streaming", "9. training over data beyond the cache, shuffled rows, float32",
             mlp_loss, mlp_backprop, streaming_problems, training=True),
    Workload("lstm", "10. LSTM layer through scan, forward and backward, float32", lstm_loss,
             lstm_backprop, lstm_problems),
]


# -- what the checks compare against ------------------------------------------------------

def as_float64(tree):
    return {k: np.asarray(v, np.float64) for k, v in tree.items()}


def reference_gradient(workload, problem):
    """The hand-written gradient in float64 (inputs widened, never narrowed)."""
    return as_float64(workload.backprop(as_float64(problem.params),
                                        *(np.asarray(d, np.float64) for d in problem.data)))


def reference_training(workload, problem):
    """SGD in float64 with the hand-written gradient: the parameters every system's
    training run must reproduce."""
    params = as_float64(problem.params)
    data = [np.asarray(d, np.float64) for d in problem.data]
    order = row_order(problem)
    for step in range(problem.steps):
        rows = order[step * problem.batch:(step + 1) * problem.batch]
        grads = workload.backprop(params, *(d[rows] for d in data))
        params = {k: params[k] - problem.lr * grads[k] for k in params}
    return params


def finite_difference_error(workload, problem, eps=1e-6):
    """Relative disagreement between the reference gradient and a central difference of
    the float64 loss along a random direction (for training, of the first minibatch)."""
    params = as_float64(problem.params)
    data = [np.asarray(d, np.float64) for d in problem.data]
    if workload.training:
        data = [d[:problem.batch] for d in data]
    rng = np.random.default_rng(SEED + 1)
    direction = {k: rng.normal(size=np.shape(v)) for k, v in params.items()}

    def loss_along(t):
        return float(workload.loss(np, {k: params[k] + t * direction[k] for k in params}, *data))

    numeric = (loss_along(eps) - loss_along(-eps)) / (2 * eps)
    grads = workload.backprop(params, *data)
    analytic = float(sum(np.sum(np.asarray(grads[k]) * direction[k]) for k in params))
    return abs(numeric - analytic) / max(abs(analytic), 1e-12)
