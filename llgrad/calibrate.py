"""Measure, once per machine, which products BLAS multiplies faster than llgrad's tiles.

    python -m llgrad.calibrate            # measure the grid and store it (seconds)
    python -m llgrad.calibrate --show     # the stored table
    python -m llgrad.calibrate --forget   # drop the products timed so far

Every product large enough for the choice to matter is timed both ways by itself the
first time a module containing it is compiled (``codegen.product_timing``); this
command times a grid of shapes (``SHAPES``, each dtype, at one and two threads, numpy's
OpenBLAS set to the same count), from which ``runtime.calibration`` interpolates for a
product where timing it is off.  ``--show`` lists both kinds of row.  A timing taken
while other work kept the cores busy can be wrong; ``--forget`` drops the products
timed so far, and each is timed again the next time it is compiled.
"""
from __future__ import annotations

import argparse
import time

from llgrad.compiler.codegen.build import compile_graph
from llgrad.compiler.codegen.product_timing import time_product
from llgrad.ir import TensorType
from llgrad.runtime import blas, calibration

#: (M, K, N): from a small model's products to a wide layer's and a square
SHAPES = ((32, 32, 32), (64, 784, 128), (784, 64, 128), (256, 256, 256), (1024, 784, 128),
          (64, 784, 1024))
DTYPES = ("float32", "float64")
THREADS = (1, 2)


def time_shape(M, K, N, dtype, threads) -> calibration.Timing:
    """The grid's row for an (M, K) @ (K, N) product."""
    timed = time_product(TensorType((M, K), dtype), TensorType((K, N), dtype),
                         (((1,), (0,)), ((), ())), threads, threads, compile_graph)
    return timed._replace(signature="")


def measure() -> list[calibration.Timing]:
    if not blas.available():
        raise RuntimeError("no BLAS found (LLGRAD_NO_BLAS=1, or neither numpy's OpenBLAS "
                           "nor scipy): every product runs as tiles, nothing to calibrate")
    timings = []
    for threads in THREADS:
        before = blas.set_threads(threads)
        try:
            timings += [time_shape(*shape, dtype, threads) for dtype in DTYPES
                        for shape in SHAPES]
        finally:
            if before is not None:
                blas.set_threads(before)
    return timings


def _show(timings) -> None:
    print(f"{'dtype':8} {'threads':>7} {'M x K x N':>16} {'tiles':>10} {'BLAS':>10}  faster  "
          f"product (empty: grid)")
    for t in timings:
        print(f"{t.dtype:8} {t.threads:7} {f'{t.M}x{t.K}x{t.N}':>16} {t.tiles_s * 1e6:8.1f}us "
              f"{t.blas_s * 1e6:8.1f}us  {'BLAS ' if t.blas_s < t.tiles_s else 'tiles'}  "
              f"{t.signature}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--show", action="store_true", help="print the stored table only")
    parser.add_argument("--forget", action="store_true",
                        help="drop the products timed so far (timed again when next compiled)")
    args = parser.parse_args(argv)
    if args.forget:
        kept = [t for t in calibration.load() if not t.signature]
        print(f"kept the grid ({len(kept)} rows) in {calibration.store(kept)}")
        return
    if args.show:
        _show(calibration.load())
        print(calibration.path())
        return
    start = time.perf_counter()
    timings = measure()
    where = calibration.add(timings)
    _show(timings)
    print(f"stored in {where} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
