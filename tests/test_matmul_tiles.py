"""Matrix products as generated register tiles (``codegen/tiles.py``) against numpy.

Shapes from 1 to 70 on every axis, none a multiple of the tile, every operand layout
dot_general can describe, batches, float32 and float64, three vector widths; results
within the error bound of a k-ordered sum, bit-equal to that sum where it can be
computed exactly; NaN and infinities as numpy's matmul; gradients against central
differences; and which products go to BLAS.
"""
from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest

import llgrad
from llgrad.compiler.codegen import matmul, tiles
from llgrad.compiler.codegen.build import compile_graph
from llgrad.ir import Builder, Graph, TensorType
from llgrad.runtime import blas

RNG = np.random.default_rng(11)

# (M, K, N): none of 70, 47, 33, 25, 17... is a multiple of a tile's rows or vectors;
# N = 1 takes the transposed (vectorised along M) or the scalar path; K = 0 sums nothing
SHAPES = [(1, 1, 1), (1, 70, 9), (3, 2, 1), (5, 1, 8), (7, 3, 16), (9, 17, 24), (13, 6, 25),
          (16, 70, 16), (17, 4, 33), (24, 9, 47), (33, 1, 2), (47, 31, 5), (64, 2, 17),
          (70, 70, 70), (70, 13, 1), (1, 33, 70), (2, 64, 3), (11, 0, 4), (0, 3, 5), (4, 3, 0)]
# lhs contracting axis, rhs contracting axis: A or A^T stored, B or B^T stored
LAYOUTS = {"NN": (1, 0), "TN": (0, 0), "NT": (1, 1), "TT": (0, 1)}


def _operands(M, K, N, layout, dtype):
    lc, rc = LAYOUTS[layout]
    a = RNG.standard_normal((K, M) if lc == 0 else (M, K)).astype(dtype)
    b = RNG.standard_normal((N, K) if rc == 1 else (K, N)).astype(dtype)
    return a, b, (((lc,), (rc,)), ((), ()))


def _compile(specs, dtype, **options):
    """One executable computing every product of ``specs`` [(a, b, dims)]."""
    builder, params, outs = Builder(), [], []
    for a, b, dims in specs:
        x, y = (builder.parameter(index=len(params) + i, type=TensorType(v.shape, dtype),
                                  name=f"v{len(params) + i}") for i, v in enumerate((a, b)))
        params += [x, y]
        outs.append(builder.dot_general(x, y, dims=dims))
    return compile_graph(Graph(params, outs), **options)


def _reference(a, b, dims):
    """numpy's product in long double, and the bound on an in-order sum's error."""
    (lc, rc), (lb, rb) = dims
    letters = "abcdefgh"
    la, lb_ = list(letters[:a.ndim]), list(letters[a.ndim:a.ndim + b.ndim])
    for x, y in zip(lc + lb, rc + rb):
        lb_[y] = la[x]
    out = [la[d] for d in lb] + [c for d, c in enumerate(la) if d not in lc + lb] + \
          [c for d, c in enumerate(lb_) if d not in rc + rb]
    spec = f"{''.join(la)},{''.join(lb_)}->{''.join(out)}"
    ref = np.einsum(spec, a.astype(np.longdouble), b.astype(np.longdouble))
    terms = int(np.prod([a.shape[d] for d in lc]))
    scale = np.einsum(spec, np.abs(a).astype(np.float64), np.abs(b).astype(np.float64))
    return ref, terms * np.finfo(a.dtype).eps * scale


def _assert_close(got, a, b, dims):
    ref, bound = _reference(a, b, dims)
    assert got.shape == ref.shape
    err = np.abs(got.astype(np.longdouble) - ref)
    assert np.all(err <= bound + np.finfo(a.dtype).tiny), float(np.max(err - bound))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_products_of_every_layout_and_awkward_size_match_numpy(dtype):
    specs = [_operands(M, K, N, layout, dtype)
             for (M, K, N), layout in itertools.product(SHAPES, LAYOUTS)]
    exe = _compile(specs, dtype, blas=False)
    for got, (a, b, dims) in zip(exe(*[v for s in specs for v in s[:2]]), specs):
        _assert_close(got, a, b, dims)


@pytest.mark.parametrize("bits", [256, 128])
def test_narrower_vector_registers_give_the_same_products(bits, monkeypatch):
    """AVX2 and SSE tiles (16 registers, 4 or 2 doubles a vector) on this machine."""
    monkeypatch.setenv("LLGRAD_VECTOR_BITS", str(bits))
    for dtype in ("float64", "float32"):
        specs = [_operands(M, K, N, layout, dtype) for (M, K, N), layout in
                 [((13, 6, 25), "NN"), ((17, 4, 33), "TN"), ((70, 13, 1), "TN"),
                  ((9, 17, 24), "NT"), ((2, 64, 3), "TT")]]
        exe = _compile(specs, dtype, blas=False)
        lanes = bits // (8 * np.dtype(dtype).itemsize)
        assert f"x{lanes}+{lanes}+{lanes}." in exe.llvm_ir      # tiles of that width ran
        for got, (a, b, dims) in zip(exe(*[v for s in specs for v in s[:2]]), specs):
            _assert_close(got, a, b, dims)


@pytest.mark.parametrize("bits, M, tile", [(512, 64, "8x16+16+16"), (512, 72, "9x16+16+16"),
                                            (256, 64, "4x8+8+8")])
def test_tiles_are_sized_so_that_no_rows_are_computed_twice_where_one_size_allows(
        bits, M, tile, monkeypatch):
    """AVX-512 FMAs broadcast A's element from memory, so 8 rows of 3 vectors fit its 32
    registers: 64 rows are 8 tiles, not ten of 7 (whose last overlaps its neighbour);
    AVX2 keeps one broadcast register (16 registers: 4 rows of 3 vectors)."""
    monkeypatch.setenv("LLGRAD_VECTOR_BITS", str(bits))
    spec = _operands(M, 40, 48 * 512 // bits, "NN", "float32")
    exe = _compile([spec], "float32", blas=False)
    assert f"llgrad.tile.float32.{tile}." in exe.llvm_ir
    _assert_close(exe(*spec[:2])[0], *spec)


def test_a_product_takes_a_tile_size_the_module_has_when_it_costs_about_the_same(monkeypatch):
    """784 rows are 88 tiles of 9 or 98 of 8 (0.2% more work): after a 64-row product
    made the 8-row tile, the 784-row one reuses it instead of compiling a second."""
    monkeypatch.setenv("LLGRAD_VECTOR_BITS", "512")
    specs = [_operands(64, 20, 48, "NN", "float32"), _operands(784, 20, 48, "TN", "float32")]
    exe = _compile(specs, "float32", blas=False)
    assert "llgrad.tile.float32.8x16+16+16." in exe.llvm_ir
    assert "llgrad.tile.float32.9x" not in exe.llvm_ir
    for got, (a, b, dims) in zip(exe(*[v for s in specs for v in s[:2]]), specs):
        _assert_close(got, a, b, dims)
    alone = _compile(specs[1:], "float32", blas=False)
    assert "llgrad.tile.float32.9x16+16+16." in alone.llvm_ir


def test_batched_products_with_batch_axes_anywhere_match_numpy():
    x3, y3 = RNG.standard_normal((3, 5, 4)), RNG.standard_normal((3, 4, 6))
    specs = [(x3, y3, (((2,), (1,)), ((0,), (0,)))),                    # matmul
             (x3, RNG.standard_normal((3, 6, 4)), (((2,), (2,)), ((0,), (0,)))),  # B^T
             (RNG.standard_normal((4, 3, 5)), y3, (((0,), (1,)), ((1,), (0,)))),  # A^T, batch 2nd
             (RNG.standard_normal((5, 4, 2)), RNG.standard_normal((4, 9, 2)),  # batch last
              (((1,), (0,)), ((2,), (2,)))),
             (RNG.standard_normal((2, 3, 7)), RNG.standard_normal((2, 7)),    # matrix-vector
              (((2,), (1,)), ((0,), (0,))))]
    exe = _compile(specs, "float64", blas=False)
    for got, (a, b, dims) in zip(exe(*[v for s in specs for v in s[:2]]), specs):
        _assert_close(got, a, b, dims)


def _ordered_sums(a, b):
    """Each C[i, j] summed over k in order from 0, once with every multiply-add
    rounded once (FMA) and once rounding the product too, computed exactly."""
    fused = np.zeros((a.shape[0], b.shape[1]))
    plain = np.zeros_like(fused)
    for i, j in np.ndindex(fused.shape):
        f = p = 0.0
        for k in range(a.shape[1]):
            f = float(Fraction(a[i, k]) * Fraction(b[k, j]) + Fraction(f))
            p = p + a[i, k] * b[k, j]
        fused[i, j], plain[i, j] = f, p
    return fused, plain


def test_exact_mode_sums_over_k_in_order():
    """Without fastmath each element is the k-ordered sum bit for bit (the rounding
    of a reassociated or blocked sum would differ somewhere in these products)."""
    specs = [_operands(M, K, N, layout, "float64") for (M, K, N), layout in
             [((13, 40, 25), "NN"), ((17, 33, 9), "TN"), ((11, 29, 1), "TN"),
              ((12, 35, 10), "NT"), ((5, 50, 1), "NN")]]
    exe = _compile(specs, "float64", blas=False)
    for got, (a, b, dims) in zip(exe(*[v for s in specs for v in s[:2]]), specs):
        (lc, rc), _ = dims
        fused, plain = _ordered_sums(a if lc == (1,) else a.T, b if rc == (0,) else b.T)
        assert np.all((got == fused) | (got == plain))


def test_fastmath_products_match_numpy():
    specs = [_operands(M, K, N, layout, dtype) for (M, K, N), layout, dtype in
             [((13, 40, 25), "NN", "float64"), ((17, 33, 9), "TN", "float32"),
              ((70, 13, 1), "TN", "float64"), ((12, 35, 10), "NT", "float32")]]
    for (a, b, dims) in specs:
        exe = _compile([(a, b, dims)], str(a.dtype), blas=False, fastmath=True)
        _assert_close(exe(a, b)[0], a, b, dims)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_nan_and_infinity_propagate_as_in_numpy_matmul(layout):
    """An infinity times a zero is NaN (no term is skipped), NaN spreads along its row
    and column, an infinity alone stays infinite."""
    a, b, dims = _operands(9, 6, 17, layout, "float64")
    a_mat = a if LAYOUTS[layout][0] == 1 else a.T      # views: writes reach a and b
    b_mat = b if LAYOUTS[layout][1] == 0 else b.T
    a_mat[1, 2] = np.inf
    b_mat[2, 5] = 0.0
    a_mat[4, 0] = np.nan
    b_mat[3, 7] = -np.inf
    a_mat[6, 3] = 0.0
    for vector in (False, True):      # N = 1 (vectorised along M when A is transposed)
        bb = b[:, 5:6] if vector and LAYOUTS[layout][1] == 0 else b
        bb = b[5:6, :] if vector and LAYOUTS[layout][1] == 1 else bb
        got = _compile([(a, bb, dims)], "float64", blas=False)(a, bb)[0]
        with np.errstate(invalid="ignore"):
            want = a_mat @ (bb if LAYOUTS[layout][1] == 0 else bb.T)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_array_equal(got[np.isinf(want)], want[np.isinf(want)])
        assert np.isnan(got[1, 0 if vector else 5])          # inf * 0
        finite = np.isfinite(want)
        np.testing.assert_allclose(got[finite], want[finite], rtol=1e-12, atol=1e-12)


def test_mlp_gradient_through_tiled_products_matches_finite_differences():
    rng = np.random.default_rng(3)
    params = {"w1": rng.normal(size=(3, 17)), "b1": rng.normal(size=17) * 0.1,
              "w2": rng.normal(size=(17, 9)), "w3": rng.normal(size=(9, 1))}
    x, y = rng.normal(size=(13, 3)), rng.normal(size=(13, 1))

    def loss(p, x, y):
        h = np.tanh(x @ p["w1"] + p["b1"])
        h = np.tanh(h @ p["w2"])
        return np.mean((h @ p["w3"] - y) ** 2)

    llgrad.check_grad(loss, params, x, y)
    exact = llgrad.grad(loss)(params, x, y)
    fast = llgrad.grad(loss, fastmath=True)(params, x, y)
    for k in params:
        np.testing.assert_allclose(fast[k], exact[k], rtol=1e-10, atol=1e-12)


def _uses_gemm(M, K, N, layout, dtype="float64", threads=1):
    found = blas.available()
    if dtype not in found:
        pytest.skip("no BLAS here")
    a, b, dims = _operands(M, K, N, layout, dtype)
    exe = _compile([(a, b, dims)], dtype, threads=threads)
    _assert_close(exe(a, b)[0], a, b, dims)
    return found[dtype].symbol in exe.llvm_ir


def test_products_below_the_threshold_are_tiles_and_larger_ones_blas():
    assert 100 * 16 * 16 < matmul.BLAS_MIN_FLOPS <= 70 * 70 * 70 * 2
    assert not _uses_gemm(100, 16, 16, "NT")
    assert not _uses_gemm(16, 100, 16, "TN", "float32")
    assert _uses_gemm(140, 70, 70, "NN")


def test_large_products_are_tiles_while_what_they_re_read_fits_half_the_l2_cache():
    """Above LARGE_TILES_MIN_FLOPS the tiles come back as long as the right operand
    (re-read by every row of tiles), or the left one with one panel of the right (A is
    re-read for every panel of columns), fits ``tile_panel_bytes``; larger ones go to
    BLAS."""
    from llgrad.runtime import host
    panel = host.current().tile_panel_bytes
    assert matmul.LARGE_TILES_MIN_FLOPS <= 64 * 784 * 128
    fits = panel // (8 * 64)                     # columns of a float64 K = 64 operand
    assert not _uses_gemm(matmul.LARGE_TILES_MIN_FLOPS // (64 * fits) + 1, 64, fits, "TN")
    assert not _uses_gemm(64, 64, fits + 8, "TN")      # B too large, A small
    assert _uses_gemm(fits + 8, 64, fits + 8, "TN")    # both too large


def test_with_llgrad_threads_products_blas_would_thread_are_tiles():
    """OpenBLAS threads products from BLAS_THREADS_MIN_FLOPS; a module that splits its
    own work keeps them on llgrad's pool (two pools on two cores took 6x as long),
    even those whose operands do not fit the L2 cache."""
    from llgrad.runtime import host
    assert matmul.BLAS_MIN_FLOPS < matmul.BLAS_THREADS_MIN_FLOPS <= 64 * 1024 * 10
    assert _uses_gemm(64, 1024, 10, "NN", "float32", threads=1)
    assert not _uses_gemm(64, 1024, 10, "NN", "float32", threads=2)
    assert _uses_gemm(64, 256, 10, "NN", "float32", threads=2)       # OpenBLAS: one thread
    large = host.current().tile_panel_bytes // (8 * 64) + 8                   # A and B beyond L2 / 2
    assert _uses_gemm(large, 64, large, "TN", threads=1)
    assert not _uses_gemm(large, 64, large, "TN", threads=2)


def test_a_product_blas_threads_sends_llgrad_workers_to_rest_first():
    """Where a module with threads leaves a product to BLAS that BLAS will thread, it
    runs as single-threaded calls on llgrad's pool (``matmul._emit_gemm_on_pool``) if
    it has rows enough, and otherwise the pool's spinning workers park first
    (``runtime.pool``: they held the cores OpenBLAS's threads needed); neither for
    products BLAS runs on one thread, nor without threads."""
    if "float32" not in blas.available():
        pytest.skip("no BLAS here")
    on_pool = blas.available()["float32"].thread_count_symbols is not None

    def way(M, K, N, threads):
        a, b, dims = _operands(M, K, N, "NN", "float32")
        exe = _compile([(a, b, dims)], "float32", threads=threads, blas_min_flops=1)
        _assert_close(exe(a, b)[0], a, b, dims)
        return ("rest" if "llgrad_pool_rest" in exe.llvm_ir else
                "pool" if blas.OPENBLAS_THREAD_COUNT[1] in exe.llvm_ir else "call")

    assert 64 * 64 * 64 >= matmul.BLAS_THREADS_MIN_FLOPS > 32 * 64 * 64
    assert way(64, 64, 64, threads=2) == ("pool" if on_pool else "rest")
    assert 8 * 256 * 256 >= matmul.BLAS_THREADS_MIN_FLOPS and 8 < 2 * matmul.POOL_GEMM_MIN_ROWS
    assert way(8, 256, 256, threads=2) == "rest"
    assert way(32, 64, 64, threads=2) == "call"
    assert way(64, 64, 64, threads=1) == "call"
    # a batch is one gemm call per product: OpenBLAS threads none of 4 x 32x64x64
    a = RNG.standard_normal((4, 32, 64)).astype("float32")
    b = RNG.standard_normal((4, 64, 64)).astype("float32")
    dims = (((2,), (1,)), ((0,), (0,)))
    exe = _compile([(a, b, dims)], "float32", threads=2, blas_min_flops=1)
    _assert_close(exe(a, b)[0], a, b, dims)
    assert "llgrad_pool_rest" not in exe.llvm_ir


def test_scalar_only_products_go_to_blas_and_vectorisable_ones_stay_tiles():
    """N = 1 with A's columns strided is a chain of scalar FMAs as tiles (BLAS's gemv
    reorders the sum and is faster); with A transposed it is vectorised along M."""
    assert _uses_gemm(100, 16, 1, "NN")
    assert not _uses_gemm(16, 100, 1, "TN")
    assert not _uses_gemm(30, 30, 1, "NN")             # below SCALAR_BLAS_MIN_FLOPS


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("M,K,N", [(5, 16, 16), (7, 33, 45), (64, 128, 784), (3, 8, 1)])
def test_a_transposed_right_operand_is_copied_exactly(M, K, N, dtype):
    """A @ W.T copies W transposed (in blocks of lanes x lanes, edges one by one) and
    runs the tiles of A @ W.T.copy(): the same bits, whatever the edges."""
    a, w, dims = _operands(M, K, N, "NT", dtype)
    transposed = _compile([(a, w, dims)], dtype, blas=False, threads=1)
    direct = _compile([(a, np.ascontiguousarray(w.T), (((1,), (0,)), ((), ())))], dtype,
                      blas=False, threads=1)
    got = transposed(a, w)[0]
    np.testing.assert_array_equal(got, direct(a, np.ascontiguousarray(w.T))[0])
    _assert_close(got, a, w, dims)


def test_a_batch_of_transposed_operands_is_copied_exactly():
    a = RNG.standard_normal((3, 20, 30))
    w = RNG.standard_normal((3, 40, 30))
    batched = (((2,), (2,)), ((0,), (0,)))
    wt = np.ascontiguousarray(w.transpose(0, 2, 1))
    got = _compile([(a, w, batched)], "float64", blas=False, threads=1)(a, w)[0]
    want = _compile([(a, wt, (((2,), (1,)), ((0,), (0,))))], "float64", blas=False,
                    threads=1)(a, wt)[0]
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(got, a @ w.transpose(0, 2, 1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_rows_an_l1_span_apart_are_read_through_a_packed_or_padded_copy(dtype, threads):
    """B's rows a multiple of half the L1 data cache's span apart (2 KB: N = 512
    float32, 256 float64) are read through packed column panels (``tiles.packs``) by
    two tiles of A's rows or more, or where a panel would be too large and the rows are
    a whole span apart, through a copy with longer rows (``matmul._pads_by_copy``), by
    many rows of A and of B; rows a quarter span apart or more (1280 bytes here) are
    packed for many rows of A (``matmul._packing_rows``): every element still equals
    the in-order sum; fewer rows read B in place."""
    n = 4096 // np.dtype(dtype).itemsize
    lanes = 64 // np.dtype(dtype).itemsize
    lo_m, lo_k, pack_m = matmul.PAD_MIN_ROWS, matmul.PAD_MIN_K, matmul.PACK_MIN_ROWS
    wide_m, wide_n = matmul.PACK_WIDE_MIN_ROWS, 1280 // np.dtype(dtype).itemsize
    long_k = tiles.PACK_MAX_BYTES // (tiles.MAX_VECTORS * lanes * np.dtype(dtype).itemsize) + 1
    assert tiles.packs(lo_k, n, lanes, dtype) and not tiles.packs(long_k, n, lanes, dtype)
    cases = [(lo_m, lo_k, n, "pack"), (lo_m + 3, lo_k, 2 * n, "pack"), (lo_m, long_k, n, "pad"),
             (lo_m, lo_k, n // 2, "pack"), (lo_m, long_k, n // 2, None),
             (2 * pack_m, 64, n, "pack"), (pack_m - 1, lo_k, n, None),
             (2 * wide_m, lo_k, wide_n, "pack"), (wide_m - 1, lo_k, wide_n, None),
             (lo_m - 1, long_k, n, None), (pack_m, lo_k, n + 16, None)]
    for M, K, N, way in cases:
        a, b, dims = _operands(M, K, N, "NN", dtype)
        exe = _compile([(a, b, dims)], dtype, blas=False, threads=threads)
        _assert_close(exe(a, b)[0], a, b, dims)
        code = exe.llvm_ir.replace("padding", "")
        assert ("pack" in code, "pad" in code) == (way == "pack", way == "pad"), (M, K, N)
    # a batch of them, each batch's panels packed
    a = RNG.standard_normal((2, lo_m, lo_k)).astype(dtype)
    b = RNG.standard_normal((2, lo_k, n)).astype(dtype)
    dims = (((2,), (1,)), ((0,), (0,)))
    exe = _compile([(a, b, dims)], dtype, blas=False, threads=threads)
    _assert_close(exe(a, b)[0], a, b, dims)
    assert "pack" in exe.llvm_ir


@pytest.mark.parametrize("isa", ["avx2", "avx512"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_packed_panels_of_a_forced_host_equal_the_in_order_sum(monkeypatch, isa, dtype):
    """Packed column panels are as wide as the host's tiles (three vectors of 8 or 16
    floats): each width, forced on this machine whichever it would pick."""
    monkeypatch.setenv("LLGRAD_HOST", isa)
    n = 4096 // np.dtype(dtype).itemsize
    a, b, dims = _operands(matmul.PAD_MIN_ROWS + 5, matmul.PAD_MIN_K, n + n // 2, "NN", dtype)
    exe = _compile([(a, b, dims)], dtype, blas=False, threads=1)
    _assert_close(exe(a, b)[0], a, b, dims)
    a, b, dims = _operands(matmul.PAD_MIN_ROWS + 5, matmul.PAD_MIN_K, n, "NN", dtype)
    exe = _compile([(a, b, dims)], dtype, blas=False, threads=1)
    _assert_close(exe(a, b)[0], a, b, dims)
    assert "pack" in exe.llvm_ir


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_transposed_left_operand_with_long_sums_is_copied_for_the_tiles(dtype, threads):
    """``X.T @ dH`` over many rows of X (``matmul.COPY_TRANSPOSED_MIN_K``) reads a
    transposed copy of X; shorter sums, or few columns of C, read X in place: every
    element equals the in-order sum either way, batched too."""
    k, n = matmul.COPY_TRANSPOSED_MIN_K, matmul.COPY_TRANSPOSED_MIN_N
    for M, K, N, copied in [(37, k, n, True), (37, k - 1, n, False), (37, k, n - 1, False)]:
        a, b, dims = _operands(M, K, N, "TN", dtype)
        exe = _compile([(a, b, dims)], dtype, blas=False, threads=threads)
        _assert_close(exe(a, b)[0], a, b, dims)
        builder = Builder()
        x, y = (builder.parameter(index=i, type=TensorType(v.shape, dtype), name=f"v{i}")
                for i, v in enumerate((a, b)))
        assert matmul.canonical(builder.dot_general(x, y, dims=dims)).copies[0] == copied
    a = RNG.standard_normal((2, k, 9)).astype(dtype)
    b = RNG.standard_normal((2, k, n)).astype(dtype)
    dims = (((1,), (1,)), ((0,), (0,)))
    exe = _compile([(a, b, dims)], dtype, blas=False, threads=threads)
    _assert_close(exe(a, b)[0], a, b, dims)
