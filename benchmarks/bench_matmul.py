"""One matrix product as register tiles and as a BLAS call: the figures behind
``matmul.BLAS_MIN_FLOPS`` (and where a product is better left to BLAS).

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_matmul.py [--dtype float32] [M,K,N,LAYOUT ...]

LAYOUT is NN, TN (A stored transposed), NT (B stored transposed) or TT.  Each product
is compiled twice, forced to the tiles (``blas=False``) and to BLAS (``blas_min_flops=1``),
checked against numpy, and its raw entry point timed (best of 15 repeats: no argument
checks, only the native call); 1x1x1 shows what a call costs without any product.
Default shapes: workload 2's eight products, then squares up to 128.
"""
import argparse
import timeit

import numpy as np

from llgrad.compiler.codegen.build import compile_graph
from llgrad.ir import Builder, Graph, TensorType

DEFAULT = ["1,1,1,NN", "100,2,16,NN", "100,16,16,NN", "100,16,1,NN", "100,1,16,NT",
           "100,16,16,NT", "2,100,16,TN", "16,100,16,TN", "16,100,1,TN",
           "32,32,32,NN", "64,64,64,NN", "128,128,128,NN"]


def microseconds(M, K, N, layout, dtype, **options):
    lc, rc = (0 if layout[0] == "T" else 1), (1 if layout[1] == "T" else 0)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((K, M) if lc == 0 else (M, K)).astype(dtype)
    b = rng.standard_normal((N, K) if rc == 1 else (K, N)).astype(dtype)
    builder = Builder()
    x = builder.parameter(index=0, type=TensorType(a.shape, dtype), name="a")
    y = builder.parameter(index=1, type=TensorType(b.shape, dtype), name="b")
    exe = compile_graph(Graph([x, y], [builder.dot_general(x, y, dims=(((lc,), (rc,)), ((), ())))]),
                        **options)
    want = (a.T if lc == 0 else a).astype(np.float64) @ (b.T if rc == 1 else b).astype(np.float64)
    np.testing.assert_allclose(exe(a, b)[0], want, rtol=1e-4, atol=1e-4 * K)
    state = exe._thread_state()
    number = max(200, int(2e7 // (M * K * N + 2000)))
    return min(timeit.repeat(lambda: exe._entry(state[1]), number=number, repeat=15)) / number * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shapes", nargs="*", default=DEFAULT)
    parser.add_argument("--dtype", default="float64")
    args = parser.parse_args()
    print(f"{'M x K x N layout':>22} {'multiply-adds':>13} {'tiles us':>9} {'BLAS us':>8}")
    for shape in args.shapes:
        M, K, N, layout = shape.split(",")
        M, K, N = int(M), int(K), int(N)
        tiles = microseconds(M, K, N, layout, args.dtype, blas=False)
        gemm = microseconds(M, K, N, layout, args.dtype, blas_min_flops=1)
        print(f"{f'{M} x {K} x {N} {layout}':>22} {M * K * N:>13} {tiles:>9.3f} {gemm:>8.3f}")


if __name__ == "__main__":
    main()
