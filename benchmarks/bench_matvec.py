"""Matrix-vector products against the machine's read bandwidth: ``X @ w``, ``X.T @ r``
and a logistic-regression gradient, each in GB/s of the matrix read once (what any
code must read; the gradient streams X once, ``matvec._emit_stream``).

    python benchmarks/bench_matvec.py [--sizes 20000x100,50000x200] [--dtype float64]
                                      [--baseline] [--stream]

Each line is the best of a few repeats of many calls of the jit'd function (native
call included), the matrix's bytes over that time, and numpy's time for the same
expression on this machine (its OpenBLAS gemv; run under ``OPENBLAS_NUM_THREADS=1``
to compare one thread with ``LLGRAD_THREADS=1``).  ``bench_peak.py`` measures the
read bandwidth these figures are read against.  ``--baseline`` also times the lowering
these products had before ``codegen/matvec.py`` (register tiles, BLAS's gemv), compiled
in the same process with the streaming path's threshold out of reach (and the on-disk
code cache off, so that neither version is loaded for the other).  ``--stream`` also
times the gradient with its two products apart (``apart``: X read twice), the same way.
"""
import argparse
import os
import statistics
import time

import numpy as np

import llgrad


def logistic_loss(w, X, y):
    z = X @ w
    return np.sum(np.log(1 + np.exp(z)) - y * z) / X.shape[0]


def _best(f, args, seconds=0.3):
    f(*args)
    calls = max(1, int(seconds / max(_once(f, args), 1e-6)))
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            f(*args)
        runs.append((time.perf_counter() - start) / calls)
    return min(runs), statistics.median(runs)


def _once(f, args):
    start = time.perf_counter()
    f(*args)
    return time.perf_counter() - start


def cases(n, d, dtype):
    """(bytes of X, [(name, llgrad function, numpy function, arguments)])."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, d)).astype(dtype)
    w, r = rng.normal(size=d).astype(dtype), rng.normal(size=n).astype(dtype)
    y = (rng.random(n) < 0.5).astype(dtype)
    grad = llgrad.grad(logistic_loss)
    return X.nbytes, [
        ("X @ w", llgrad.jit(lambda X, w: X @ w), lambda X, w: X @ w, (X, w)),
        ("X.T @ r", llgrad.jit(lambda X, r: X.T @ r), lambda X, r: X.T @ r, (X, r)),
        ("logistic gradient", grad,
         lambda w, X, y: X.T @ ((1 / (1 + np.exp(-(X @ w))) - y) / X.shape[0]), (w, X, y)),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20000x100,50000x200")
    parser.add_argument("--dtype", default="float64")
    parser.add_argument("--baseline", action="store_true",
                        help="also time the lowering before codegen/matvec.py")
    parser.add_argument("--stream", action="store_true",
                        help="also time the gradient with X @ w and X.T @ r apart")
    args = parser.parse_args()
    from llgrad.compiler.codegen import fusion, matvec
    if args.baseline or args.stream:
        os.environ["LLGRAD_NO_CACHE"] = "1"
    streams = fusion._streams
    streaming = matvec.MIN_ELEMENTS
    for size in args.sizes.split(","):
        n, d = (int(v) for v in size.split("x"))
        nbytes, rows = cases(n, d, args.dtype)
        print(f"{n} x {d} {args.dtype} ({nbytes / 1e6:.1f} MB):")
        for name, native, reference, operands in rows:
            versions = [("llgrad", native)]
            if args.baseline:
                matvec.MIN_ELEMENTS = 1 << 62
                versions.append(("before", type(native)(native.fn, native.kind, native.argnums)))
                versions[-1][1](*operands)          # compiled now, without streaming
                matvec.MIN_ELEMENTS = streaming
            if args.stream and name == "logistic gradient":
                fusion._streams = lambda *a: {}
                versions.append(("apart", type(native)(native.fn, native.kind, native.argnums)))
                versions[-1][1](*operands)          # compiled now, the products apart
                fusion._streams = streams
            for label, f in versions:
                best, median = _best(f, operands)
                print(f"  {name:18} {label:6} {best * 1e3:7.3f} ms (median "
                      f"{median * 1e3:.3f}), {nbytes / best / 1e9:5.1f} GB/s")
            ref, _ = _best(reference, operands)
            print(f"  {name:18} numpy  {ref * 1e3:7.3f} ms")


if __name__ == "__main__":
    main()
