"""What subnormal floats cost, and what ``fastmath=True`` (which flushes them) saves.

    python benchmarks/bench_subnormals.py [--n 1000000] [--repeats 20]

The gradient of ``sum(exp(-x))`` over float64 ``x``, with and without ``fastmath``, for
inputs whose ``exp(-x)`` stays normal (x in [0, 700]: the control, where fastmath can
only change the sum's order) and inputs where a share of it underflows to subnormals
(x up to 745: exp(-x) < 2.2e-308 from x = 708.4).  On x86 every operation that reads or
writes a subnormal takes a microcode assist; fastmath sets FTZ and DAZ in MXCSR for the
call (``llgrad/llvm/fp_env.py``), so the assists never happen.  One thread
(``LLGRAD_THREADS=1``), the median of ``--repeats`` calls after a warm-up.
"""
import argparse
import os
import statistics
import time

os.environ.setdefault("LLGRAD_THREADS", "1")

import numpy as np  # noqa: E402

import llgrad  # noqa: E402


def loss(x):
    return np.sum(np.exp(-x))


def median_ms(f, x, repeats: int) -> float:
    f(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        f(x)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    plain, flushed = llgrad.grad(loss), llgrad.grad(loss, fastmath=True)
    print(f"{'inputs':<28} {'subnormal':>9} {'plain ms':>9} {'fastmath ms':>12} {'ratio':>6}")
    for label, top in (("x in [0, 700]", 700.0), ("x in [0, 745]", 745.0),
                       ("x in [709, 745]", None)):
        x = (rng.uniform(709.0, 745.0, args.n) if top is None
             else rng.uniform(0.0, top, args.n))
        gradient = plain(x)
        share = np.mean((gradient != 0) & (np.abs(gradient) < np.finfo(np.float64).tiny))
        slow, fast = median_ms(plain, x, args.repeats), median_ms(flushed, x, args.repeats)
        print(f"{label:<28} {share:>9.1%} {slow:>9.2f} {fast:>12.2f} {slow / fast:>6.1f}")


if __name__ == "__main__":
    main()
