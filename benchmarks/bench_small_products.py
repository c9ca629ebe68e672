"""Small products called many times: the median and the tail of each call's time.

    python benchmarks/bench_small_products.py [--sizes 64,100,128] [--calls 3000]
    LLGRAD_THREADS=1 python benchmarks/bench_small_products.py

A product split across llgrad's pool waits for its worker; on a machine whose cores
other processes keep busy a worker may not get a core for milliseconds, which shows
in the tail (p99, max) and in the total, not in the median.  Run it at the default
thread count and at ``LLGRAD_THREADS=1`` on a loaded machine (state ``uptime``'s load
average with the figures) to see what splitting costs there.
"""
import argparse
import time

import numpy as np

import llgrad


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="64,100,128", help="n of each n x n x n product")
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--dtype", default="float64")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    for n in map(int, args.sizes.split(",")):
        a, b = (rng.standard_normal((n, n)).astype(args.dtype) for _ in range(2))
        f = llgrad.jit(lambda x, y: x @ y)
        f(a, b)
        times = np.empty(args.calls)
        for i in range(args.calls):
            start = time.perf_counter()
            f(a, b)
            times[i] = time.perf_counter() - start
        ms = times * 1e3
        print(f"{n}x{n}x{n} {args.dtype}: median {np.median(ms):.4f} ms, p99 "
              f"{np.percentile(ms, 99):.3f} ms, max {ms.max():.2f} ms, "
              f"total {ms.sum():.0f} ms for {args.calls} calls")


if __name__ == "__main__":
    main()
