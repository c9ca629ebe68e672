"""Measure, once per machine, which products BLAS multiplies faster than llgrad's tiles.

    python -m llgrad.calibrate            # measure and store (about a second once compiled)
    python -m llgrad.calibrate --show     # the stored table

Each shape of ``SHAPES`` is compiled twice (tiles only; BLAS from one multiply-add) at
one and two threads (numpy's OpenBLAS set to the same count), and both are timed in
alternation, the fastest of ``ROUNDS`` rounds each: another process on the machine
only ever adds time (on a loaded machine a round's time is often several times the
product's), so the fastest round is the product's own time.  The table goes to ``runtime.calibration``, which code generation reads.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from llgrad.compiler.codegen.build import compile_graph
from llgrad.ir import Builder, Graph, TensorType
from llgrad.runtime import blas, calibration

#: (M, K, N): from a small model's products to a wide layer's and a square
SHAPES = ((32, 32, 32), (64, 784, 128), (784, 64, 128), (256, 256, 256), (1024, 784, 128),
          (64, 784, 1024))
DTYPES = ("float32", "float64")
THREADS = (1, 2)
ROUNDS = 7
#: seconds one side of one round takes at least (a few calls of a large product)
ROUND_S = 2e-3


def _product(M, K, N, dtype, threads, use_blas):
    """A @ B compiled as tiles only (``use_blas`` False), BLAS (True), or as llgrad
    would choose (None)."""
    b = Builder()
    x = b.parameter(index=0, type=TensorType((M, K), dtype), name="a")
    y = b.parameter(index=1, type=TensorType((K, N), dtype), name="b")
    graph = Graph([x, y], [b.dot_general(x, y, dims=(((1,), (0,)), ((), ())))])
    if use_blas is None:
        return compile_graph(graph, threads=threads)
    if use_blas:
        return compile_graph(graph, blas_min_flops=1, threads=threads)
    return compile_graph(graph, blas=False, threads=threads)


def _per_call(fn, args, calls):
    start = time.perf_counter()
    for _ in range(calls):
        fn(*args)
    return (time.perf_counter() - start) / calls


def time_shape(M, K, N, dtype, threads) -> calibration.Timing:
    """Both ways of one product, alternating, the fastest of ``ROUNDS`` rounds each."""
    rng = np.random.default_rng(0)
    args = (rng.standard_normal((M, K)).astype(dtype), rng.standard_normal((K, N)).astype(dtype))
    tiles, gemm = _product(M, K, N, dtype, threads, False), _product(M, K, N, dtype, threads, True)
    first = max(_per_call(tiles, args, 1), _per_call(gemm, args, 1), 1e-7)
    calls = max(1, int(ROUND_S / first))
    rounds = [(_per_call(tiles, args, calls), _per_call(gemm, args, calls))
              for _ in range(ROUNDS)]
    return calibration.Timing(dtype, threads, M, K, N, min(r[0] for r in rounds),
                              min(r[1] for r in rounds))


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
    print(f"{'dtype':8} {'threads':>7} {'M x K x N':>16} {'tiles':>10} {'BLAS':>10}  faster")
    for t in timings:
        print(f"{t.dtype:8} {t.threads:7} {f'{t.M}x{t.K}x{t.N}':>16} {t.tiles_s * 1e6:8.1f}us "
              f"{t.blas_s * 1e6:8.1f}us  {'BLAS' if t.blas_s < t.tiles_s else 'tiles'}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--show", action="store_true", help="print the stored table only")
    args = parser.parse_args(argv)
    if args.show:
        _show(calibration.load())
        print(calibration.path())
        return
    start = time.perf_counter()
    timings = measure()
    where = calibration.store(timings)
    _show(timings)
    print(f"stored in {where} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
