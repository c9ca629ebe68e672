"""Gradients and Hessians of a 200-term sympy expression: llgrad.from_sympy against
sympy.lambdify of sympy.diff (numpy backend), plain and after sympy.cse.

    pip install -e . && python benchmarks/bench_sympy.py [--terms 200] [--points 100000]

"compile" is everything between the expression and a callable: for llgrad
from_sympy, tracing, differentiation, passes and LLVM for the one-point signature
(with an empty object cache, so nothing is reused from an earlier run; the N-point
signature is compiled separately, see the note); for sympy ``diff`` of every entry
and ``lambdify`` (one callable serves any number of points).  "1 point"
is one call on Python floats; "N points" one call on arrays of N points (llgrad: one
native loop; lambdify: numpy's whole-array operations).  Medians of repeated calls
after a warm-up, on one thread.  The results of the three are compared, so a fast
wrong answer cannot hide.
"""
import argparse
import os
import tempfile
import time

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--terms", type=int, default=200)
parser.add_argument("--points", type=int, default=100_000)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"
os.environ["LLGRAD_CACHE_DIR"] = tempfile.mkdtemp(prefix="llgrad-bench-sympy-")

import numpy as np  # noqa: E402
import sympy as sp  # noqa: E402

import llgrad  # noqa: E402

SYMBOLS = sp.symbols("x y z w", real=True)


def expression(terms, seed):
    """A sum of ``terms`` products: rational coefficient × smooth function of a random
    linear combination × a monomial, over four variables."""
    rng = np.random.default_rng(seed)
    funcs = [sp.sin, sp.cos, sp.exp, sp.tanh, sp.atan, sp.sqrt, sp.log]
    out = 0
    for _ in range(terms):
        inner = sum(int(rng.integers(-2, 3)) * s for s in SYMBOLS) + sp.Rational(
            int(rng.integers(1, 9)), 4)
        f = funcs[rng.integers(len(funcs))]
        if f in (sp.sqrt, sp.log):
            inner = 1 + inner ** 2  # inside the domain everywhere
        out += (sp.Rational(int(rng.integers(1, 9)), int(rng.integers(1, 5))) * f(inner)
                * SYMBOLS[rng.integers(4)] ** int(rng.integers(0, 3)))
    return out


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def median_time(fn, budget=2.0, most=200):
    fn()
    times = []
    deadline = time.perf_counter() + budget
    while len(times) < most and (len(times) < 3 or time.perf_counter() < deadline):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def sympy_callables(expr, cse):
    """[(gradient, seconds), (hessian, seconds)]: lambdified numpy functions returning
    nested lists, and what diff + lambdify took for each (the Hessian's diff starts
    from the gradient's derivatives)."""
    start = time.perf_counter()
    grad = [sp.diff(expr, s) for s in SYMBOLS]
    g = sp.lambdify(SYMBOLS, grad, "numpy", cse=cse)
    middle = time.perf_counter()
    hess = [[sp.diff(d, s) for s in SYMBOLS] for d in grad]
    h = sp.lambdify(SYMBOLS, hess, "numpy", cse=cse)
    return [(g, middle - start), (h, time.perf_counter() - middle)]


def as_array(value, n):
    """lambdify's nested lists (scalars where an entry is constant) as (n, 4[, 4])."""
    def leaf(v):
        return np.broadcast_to(np.asarray(v, float), (n,))
    nested = [[leaf(v) for v in row] if isinstance(row, (list, tuple)) else leaf(row)
              for row in value]
    return np.moveaxis(np.array(nested), -1, 0)


def main():
    expr = expression(args.terms, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    point = [float(v) for v in rng.uniform(-1, 1, 4)]
    points = [rng.uniform(-1, 1, args.points) for _ in SYMBOLS]
    print(f"expression: {args.terms} terms, {sp.count_ops(expr)} operations, 4 variables; "
          f"{args.points} points; one thread; timings are medians on a shared machine")

    rows = []
    results = {}
    f, t_from = timed(lambda: llgrad.from_sympy(expr, SYMBOLS))
    for what in ("grad", "hessian"):
        method = getattr(f, what)
        _, t_one = timed(lambda: method(*point))
        results[("llgrad", what)], t_many = timed(lambda: method(*points))
        trace = method.trace(*points)
        s = trace.stats
        rows.append((f"llgrad {what}", t_from + t_one, median_time(lambda: method(*point)),
                     median_time(lambda: method(*points), most=20),
                     f"{len(trace.optimized.nodes)} IR nodes; the {args.points}-point "
                     f"signature compiled in {t_many:.1f} s (trace {s['trace_s']:.1f}, "
                     f"passes {sum(s[p + '_s'] for p in ('cse', 'simplify', 'dce')):.1f}, "
                     f"LLVM {s['compile_s']:.1f})"))
    for label, cse in (("sympy lambdify", False), ("sympy lambdify+cse", True)):
        for what, (fn, t) in zip(("grad", "hessian"), sympy_callables(expr, cse)):
            results[(label, what)] = as_array(fn(*points), args.points)
            rows.append((f"{label} {what}", t, median_time(lambda: fn(*point)),
                         median_time(lambda: fn(*points), most=20), "diff + lambdify"))

    print(f"\n{'':<28}{'compile s':>10}{'1 point us':>12}{f'{args.points} pts ms':>15}  note")
    for name, c, one, many, note in rows:
        print(f"{name:<28}{c:>10.3f}{one * 1e6:>12.1f}{many * 1e3:>15.2f}  {note}")
    for what in ("grad", "hessian"):
        want = results[("llgrad", what)]
        for label in ("sympy lambdify", "sympy lambdify+cse"):
            got = results[(label, what)]
            err = np.max(np.abs(got - want) / np.maximum(np.abs(want), 1.0))
            print(f"max relative difference, llgrad vs {label} {what}: {err:.2e}")


if __name__ == "__main__":
    main()
