"""Native linear algebra against numpy's LAPACK, by matrix size.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_linalg.py [--sizes 4,16,32,64,128]

For each op and size n: the first call of ``llgrad.jit`` (trace and compile, on-disk
cache off) and the best of repeated calls, against the same numpy function.  Figures
in docs/linalg.md.
"""
import argparse
import os
import time

os.environ.setdefault("LLGRAD_NO_CACHE", "1")

import numpy as np  # noqa: E402

import llgrad  # noqa: E402

OPS = {"cholesky": np.linalg.cholesky,
       "solve": lambda a: np.linalg.solve(a, a[:, :1]),
       "slogdet": lambda a: np.linalg.slogdet(a)[1],
       "eigvalsh": np.linalg.eigvalsh,
       "eigh": lambda a: np.linalg.eigh(a)[1],
       "svd": lambda a: np.linalg.svd(a)[0],
       "qr": lambda a: np.linalg.qr(a)[0]}


def _best(f, x, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        f(x)
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="4,16,32,64,128")
    sizes = [int(n) for n in parser.parse_args().sizes.split(",")]
    print(f"{'op':9s} {'n':>4s} {'compile s':>9s} {'llgrad us':>10s} {'numpy us':>9s}")
    for n in sizes:
        a = np.random.default_rng(0).standard_normal((n, n))
        spd = a @ a.T + n * np.eye(n)
        for name, f in OPS.items():
            x = spd if name == "cholesky" else a
            jitted = llgrad.jit(f)
            start = time.perf_counter()
            jitted(x)
            compile_s = time.perf_counter() - start
            repeats = 5 if n >= 64 else 20
            print(f"{name:9s} {n:4d} {compile_s:9.3f} {_best(jitted, x, repeats) * 1e6:10.1f} "
                  f"{_best(f, x, repeats) * 1e6:9.1f}", flush=True)


if __name__ == "__main__":
    main()
