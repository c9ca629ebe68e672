"""Matrix-vector products streamed from memory (``codegen/matvec.py``) against numpy.

Every form a product with a vector result takes (``X @ w`` with X's rows or columns
contiguous, ``w @ X``, ``X.T @ r``), both dtypes, every vector width the host can select,
one and two threads, sizes on both sides of each threshold (the streaming path, the
split across threads, the axpy chunks and their cap), row counts and lengths that no
group of rows or vector divides: results within the error bound of any order of the
sum, the path taken where it should be (and not below it), the same bits on one
thread as on two, and a gradient equal to the interpreter's.
"""
from __future__ import annotations

import numpy as np
import pytest

import llgrad
from llgrad.compiler.codegen import matvec
from llgrad.compiler.codegen.build import compile_graph
from llgrad.ir import Builder, Graph, TensorType

RNG = np.random.default_rng(20)
# lhs contracting axis, rhs contracting axis, as in test_matmul_tiles
LAYOUTS = {"NN": (1, 0), "TN": (0, 0), "NT": (1, 1), "TT": (0, 1)}


def _operands(M, K, N, layout, dtype):
    """A (M x K) and B (K x N), each stored transposed where ``layout`` says so."""
    lc, rc = LAYOUTS[layout]
    a, b = (RNG.standard_normal(shape).astype(dtype) for shape in ((M, K), (K, N)))
    stored = (np.ascontiguousarray(a.T) if lc == 0 else a,
              np.ascontiguousarray(b.T) if rc == 1 else b)
    return (*stored, (((lc,), (rc,)), ((), ())))


def _compile(a, b, dims, **options):
    builder = Builder()
    x, y = (builder.parameter(index=i, type=TensorType(v.shape, str(v.dtype)), name=f"v{i}")
            for i, v in enumerate((a, b)))
    return compile_graph(Graph([x, y], [builder.dot_general(x, y, dims=dims)]), **options)


def _check(got, a, b, dims):
    """Within K * eps * (|A| |B|) of the exact product: the bound of every order of sum."""
    (lc,), (rc,) = dims[0]
    A = a.T if lc == 0 else a
    B = b.T if rc == 1 else b
    exact = A.astype(np.longdouble) @ B.astype(np.longdouble)
    bound = A.shape[1] * np.finfo(a.dtype).eps * (np.abs(A).astype(np.float64)
                                                  @ np.abs(B).astype(np.float64))
    assert got.shape == exact.shape
    err = np.abs(got.astype(np.longdouble) - exact)
    assert np.all(err <= bound + np.finfo(a.dtype).tiny), float(np.max(err - bound))


# (M, K, N, layout, which kernel): N = 1 or M = 1, the matrix stored either way round
FORMS = [(333, 37, 1, "NN", "rows"),      # X @ w, rows contiguous
         (37, 333, 1, "TN", "axpy"),      # X.T @ r: r[k] * X[k, :] accumulated
         (1, 333, 37, "NN", "axpy"),      # r @ X
         (1, 37, 333, "NT", "rows"),      # w @ X.T
         (150, 41, 1, "NT", "rows"),      # the vector stored as a row
         (41, 150, 1, "TT", "axpy")]


@pytest.mark.parametrize("bits", [512, 256, 128])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_every_form_at_every_vector_width_matches_numpy(bits, dtype, monkeypatch):
    monkeypatch.setenv("LLGRAD_VECTOR_BITS", str(bits))
    for M, K, N, layout, kind in FORMS:
        a, b, dims = _operands(M, K, N, layout, dtype)
        for threads in (1, 2):
            exe = _compile(a, b, dims, threads=threads, blas=False)
            assert f"llgrad.matvec.{kind}.{dtype}." in exe.llvm_ir, (M, K, N, layout)
            _check(exe(a, b)[0], a, b, dims)


def test_small_products_stay_with_the_tiles_and_large_ones_stream():
    side = int(np.sqrt(matvec.MIN_ELEMENTS))
    for rows, streams in ((side - 1, False), (side, True)):
        a, b, dims = _operands(rows, side, 1, "NN", "float64")
        exe = _compile(a, b, dims, threads=1, blas=False)
        assert ("llgrad.matvec.rows" in exe.llvm_ir) == streams
        _check(exe(a, b)[0], a, b, dims)


@pytest.mark.parametrize("M, K, N, layout", [
    (4099, 67, 1, "NN"),                   # rows split across threads, 3 rows left over
    (67, 5000, 1, "TN"),                    # axpy chunks, the last one short
    (1, 2049, 130, "NN"),                   # chunks, a vector tail of columns
    (1, 90, 3001, "NN"),                    # one chunk: bands of columns
    (1, 300, 1500, "NN"),                   # the partial sums' cap: fewer chunks
    (4, 20_000, 1, "TN")])                  # more chunks than threads, few columns
@pytest.mark.parametrize("bits", [512, 256])
def test_splits_give_the_same_bits_on_one_thread_and_on_two(M, K, N, layout, bits, monkeypatch):
    """Chunks of 64 rows and 16 KiB of partial sums force every split at small sizes."""
    monkeypatch.setenv("LLGRAD_VECTOR_BITS", str(bits))
    monkeypatch.setattr(matvec, "CHUNK_ROWS", 64)
    monkeypatch.setattr(matvec, "MAX_PARTIAL_BYTES", 16 << 10)
    a, b, dims = _operands(M, K, N, layout, "float64")
    one = _compile(a, b, dims, threads=1, blas=False)(a, b)[0]
    two_exe = _compile(a, b, dims, threads=2, blas=False)
    assert ".matvec_" in two_exe.llvm_ir
    two = two_exe(a, b)[0]
    _check(one, a, b, dims)
    assert np.array_equal(one, two)


def test_axpy_chunk_count_depends_on_the_shape_only_and_respects_the_cap():
    wide = matvec.Plan("axpy", True, 1500, 1500, 300_000, 1)
    assert matvec.chunks(wide, "float64") == 1 + matvec.MAX_PARTIAL_BYTES // (1500 * 8)
    narrow = matvec.Plan("axpy", True, 100, 100, 20_000, 1)
    assert matvec.chunks(narrow, "float64") == -(-20_000 // matvec.CHUNK_ROWS)


def test_the_sum_over_each_chunk_runs_in_row_order():
    """Values whose sum depends on the order: 1, then many terms each below half an ulp
    of 1 (lost when added to 1 one by one), within one chunk: the in-order sum is 1."""
    K = matvec.CHUNK_ROWS
    r = np.full(K, 1e-17)
    r[0] = 1.0
    X = np.ones((K, 8))
    exe = _compile(X, r, (((0,), (0,)), ((), ())), threads=1, blas=False)
    assert "llgrad.matvec.axpy" in exe.llvm_ir
    assert np.all(exe(X, r)[0] == 1.0)


@pytest.mark.parametrize("threads", ["1", "2"])
def test_logistic_regression_gradient_equals_the_interpreter(threads, monkeypatch):
    monkeypatch.setenv("LLGRAD_THREADS", threads)

    def loss(w, X, y):
        z = X @ w
        return np.mean(np.log(1 + np.exp(z)) - y * z)

    X = RNG.standard_normal((3001, 45))
    y = (RNG.random(3001) < 0.5).astype(np.float64)
    w = RNG.standard_normal(45) / 7
    native = llgrad.grad(loss)(w, X, y)
    interpreted = llgrad.grad(loss, backend="interpret")(w, X, y)
    np.testing.assert_allclose(native, interpreted, rtol=1e-12, atol=1e-15)
    by_hand = X.T @ ((1 / (1 + np.exp(-(X @ w))) - y) / len(y))
    np.testing.assert_allclose(native, by_hand, rtol=1e-12, atol=1e-15)


def test_the_bandwidth_loop_reads_and_adds_every_element_it_counts():
    """bench_peak's read loop against numpy's sum of the same integers (exact in float64):
    a loop that skipped loads would report a bandwidth it never reached."""
    from benchmarks import bench_peak
    f, step = bench_peak.read_loop()
    data = np.arange(37 * step, dtype=np.float64) % 1000
    assert f(data.ctypes.data, data.size) == data.sum()
    assert 0 < bench_peak.read_gbps(1, 8 * step * 64, repeats=1)


def test_an_elementwise_successor_of_a_streamed_product_sees_every_row():
    """``tanh(X @ w + b)`` and an update of the product's result: whatever runs after the
    product (its epilogue, when fused) reads the finished result, on two threads too."""
    def f(X, w, b, r):
        return np.tanh(X @ w + b), 0.5 - 0.1 * (X.T @ r)

    X, w = RNG.standard_normal((5000, 30)), RNG.standard_normal(30)
    b, r = RNG.standard_normal(5000), RNG.standard_normal(5000)
    for threads in ("1", "2"):
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("LLGRAD_THREADS", threads)
            got = llgrad.jit(f)(X, w, b, r)
        for g, want in zip(got, f(X, w, b, r)):
            np.testing.assert_allclose(g, want, rtol=1e-12, atol=1e-12)


# -- reductions over a short last axis (pairwise distances) ----------------------------------

def _in_order(x, axes):
    """Sums in the order the native loops take: every reduced element added to its
    output in memory order, one at a time (numpy, element by element, no reordering)."""
    out = np.zeros([n for d, n in enumerate(x.shape) if d not in axes], x.dtype)
    for index in np.ndindex(*x.shape):
        kept = tuple(i for d, i in enumerate(index) if d not in axes)
        out[kept] = out[kept] + x[index]
    return out


@pytest.mark.parametrize("axes", [(2,), (0, 2), (1, 2)])
@pytest.mark.parametrize("d", [1, 3, 8, 15])
def test_a_short_reduced_last_axis_sums_in_order_in_a_register(axes, d):
    """Pairwise squared differences (n, k, d) summed over d and maybe more: the run
    along d is summed in a register, unrolled, in the order of one element at a time."""
    x = RNG.standard_normal((5, 1, d)) * 10.0 ** RNG.integers(-8, 8, (5, 1, d))
    c = RNG.standard_normal((1, 7, d))

    def f(x, c):
        diff = x - c
        return np.sum(diff * diff, axis=axes)

    got = llgrad.jit(f)(x, c)
    diff = x - c
    assert np.array_equal(got, _in_order(diff * diff, axes))
    np.testing.assert_allclose(got, llgrad.jit(f, backend="interpret")(x, c), rtol=1e-13)


def test_nearest_centroid_cost_and_gradient_equal_the_interpreter():
    def cost(c, x):
        diff = x[:, None, :] - c[None, :, :]
        return np.sum(np.min(np.sum(diff * diff, axis=2), axis=1))

    x, c = RNG.standard_normal((300, 8)), RNG.standard_normal((40, 8))
    native = llgrad.value_and_grad(cost)(c, x)
    interpreted = llgrad.value_and_grad(cost, backend="interpret")(c, x)
    np.testing.assert_allclose(native[0], interpreted[0], rtol=1e-13)
    np.testing.assert_allclose(native[1], interpreted[1], rtol=1e-12, atol=1e-12)
    nearest = ((x[:, None, :] - c[None]) ** 2).sum(2).argmin(1)
    by_hand = np.zeros_like(c)
    np.add.at(by_hand, nearest, 2 * (c[nearest] - x))
    np.testing.assert_allclose(native[1], by_hand, rtol=1e-12, atol=1e-12)
