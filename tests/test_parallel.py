"""Work split across the pool's threads (elementwise kernels, products, gathers, row
reductions) computes exactly what one thread does."""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import llgrad
from llgrad.compiler.codegen import parallel
from llgrad.compiler.codegen.build import compile_graph


def loss(x):
    return np.sum(np.log(1 + np.exp(np.sin(x) * x)) + np.sqrt(x * x + 1) * np.cos(x))


def _graph(n):
    x = np.random.default_rng(n).normal(size=n)
    return llgrad.value_and_grad(loss).trace(x).optimized, x


@pytest.mark.parametrize("parts", [2, 3])
def test_split_kernels_equal_one_thread_bit_for_bit(parts):
    graph, x = _graph(parallel.MIN_ELEMENTS + 1001)   # pieces of unequal length
    one = compile_graph(graph, threads=1)
    split = compile_graph(graph, threads=parts)
    assert "llgrad_parallel" in split.llvm_ir and "llgrad_parallel" not in one.llvm_ir
    value, grad = split(x)
    want_value, want_grad = one(x)
    assert value == want_value
    np.testing.assert_array_equal(grad, want_grad)
    s, c = np.sin(x), np.cos(x)
    e = np.exp(s * x)
    np.testing.assert_allclose(grad, e / (1 + e) * (c * x + s) + x / np.sqrt(x * x + 1) * c
                               - np.sqrt(x * x + 1) * s, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sizes", [(1, 1), (1, 2)])
def test_one_kernel_split_from_two_places(sizes):
    """Two tanh loops of one body (the kernel is emitted once and shared) are each
    split: one part function for equal sizes, one per size otherwise.  This failed to
    compile (a duplicated LLVM name) with two threads: ``np.tanh(np.tanh(x) @ w) @ w``."""
    n = parallel.MIN_ELEMENTS
    x = np.random.default_rng(0).normal(size=sizes[0] * n)
    y = np.random.default_rng(1).normal(size=sizes[1] * n)
    graph = llgrad.jit(lambda x, y: (np.tanh(x), np.tanh(y))).trace(x, y).optimized
    one, split = compile_graph(graph, threads=1), compile_graph(graph, threads=2)
    assert split.llvm_ir.count('call void @"llgrad_parallel"') == 2
    parts = [line for line in split.llvm_ir.splitlines()
             if line.startswith("define") and ".part" in line]
    assert len(parts) == len(set(sizes))
    for got, want in zip(split(x, y), one(x, y)):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(split(x, y)[1], np.tanh(y), rtol=1e-15, atol=0)


@pytest.mark.parametrize("parts", [2, 3])
def test_broadcasting_kernels_are_split_by_rows_bit_for_bit(parts):
    """A loop over axes (a bias added along rows, a transposed operand) is cut into
    bands of rows; 131 rows of 300 split unevenly."""
    rng = np.random.default_rng(parts)
    x, bias, y = rng.normal(size=(131, 300)), rng.normal(size=300), rng.normal(size=(300, 131))
    graph = llgrad.jit(lambda x, bias, y: np.tanh(x + bias) * y.T).trace(x, bias, y).optimized
    one, split = compile_graph(graph, threads=1), compile_graph(graph, threads=parts)
    assert "llgrad_parallel" in split.llvm_ir and "llgrad_parallel" not in one.llvm_ir
    got = split(x, bias, y)[0]
    np.testing.assert_array_equal(got, one(x, bias, y)[0])
    np.testing.assert_allclose(got, np.tanh(x + bias) * y.T, rtol=1e-15, atol=1e-15)


def test_small_kernels_are_never_split():
    graph, _ = _graph(parallel.MIN_ELEMENTS - 1)
    assert "llgrad_parallel" not in compile_graph(graph, threads=4).llvm_ir


def test_llgrad_threads_sets_the_default(monkeypatch):
    monkeypatch.setenv("LLGRAD_THREADS", "1")
    assert parallel.default_parts() == 1
    monkeypatch.setenv("LLGRAD_THREADS", "3")
    assert parallel.default_parts() == 3


def _product_graph(a_shape, b_shape, dims, dtype):
    from llgrad.ir import Builder, Graph, TensorType
    b = Builder()
    x = b.parameter(index=0, type=TensorType(a_shape, dtype), name="a")
    y = b.parameter(index=1, type=TensorType(b_shape, dtype), name="b")
    return Graph([x, y], [b.dot_general(x, y, dims=dims)], name="product")


# (a shape, b shape, dims, the product for numpy): C = A B, A^T B (workload 4's weight
# gradient), A B^T, a batch; widths that are and are not a multiple of the bands
PRODUCTS = [((64, 784), (784, 128), (((1,), (0,)), ((), ())), "mk,kn->mn"),
            ((64, 784), (64, 128), (((0,), (0,)), ((), ())), "km,kn->mn"),
            ((33, 700), (100, 700), (((1,), (1,)), ((), ())), "mk,nk->mn"),
            ((64, 128), (790, 128), (((1,), (1,)), ((), ())), "mk,nk->mn"),  # dh @ W.T
            ((3, 40, 300), (3, 300, 70), (((2,), (1,)), ((0,), (0,))), "bmk,bkn->bmn"),
            ((6, 2000), (2000, 250), (((1,), (0,)), ((), ())), "mk,kn->mn")]   # column bands


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("a_shape,b_shape,dims,spec", PRODUCTS)
@pytest.mark.parametrize("parts", [2, 3])
def test_split_products_equal_one_thread_bit_for_bit(a_shape, b_shape, dims, spec, dtype,
                                                     parts):
    graph = _product_graph(a_shape, b_shape, dims, dtype)
    rng = np.random.default_rng(parts)
    a = rng.standard_normal(a_shape).astype(dtype)
    b = rng.standard_normal(b_shape).astype(dtype)
    one = compile_graph(graph, threads=1, blas=False)
    split = compile_graph(graph, threads=parts, blas=False)
    assert "llgrad_parallel" in split.llvm_ir and "llgrad_parallel" not in one.llvm_ir
    got = split(a, b)[0]
    np.testing.assert_array_equal(got, one(a, b)[0])
    want = np.einsum(spec, a.astype(np.float64), b.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=1e-4 if dtype == "float32" else 1e-12,
                               atol=1e-3 if dtype == "float32" else 1e-11)


def _weight_loop(a_shape, w_shape, dtype, steps=3):
    """A loop that updates a weight every step (w <- w - 0.01 * a^T (a w)) and stacks
    the products a w: what a training loop's first layer does."""
    from llgrad.ir import Builder, Graph, TensorType
    b = Builder()
    step = b.parameter(index=0, type=TensorType((), "int64"), name="step")
    w = b.parameter(index=1, type=TensorType(w_shape, dtype), name="w")
    a = b.parameter(index=2, type=TensorType(a_shape, dtype), name="a")
    h = b.dot_general(a, w, dims=(((1,), (0,)), ((), ())))
    grad = b.dot_general(a, h, dims=(((0,), (0,)), ((), ())))
    body = Graph([step, w, a], [b.sub(w, b.mul(b.full(0.01, w.type), grad)), h], name="body")
    b = Builder()
    w0 = b.parameter(index=0, type=TensorType(w_shape, dtype), name="w0")
    a0 = b.parameter(index=1, type=TensorType(a_shape, dtype), name="a0")
    loop = b.loop(w0, a0, body=body, trip_count=steps, n_carried=1)
    return Graph([w0, a0], [b.tuple_get(loop, index=0), b.tuple_get(loop, index=1)],
                 name="weights")


def _weight_loop_reference(w, a, steps=3):
    hs = []
    for _ in range(steps):
        h = a @ w
        hs.append(h)
        w = w - 0.01 * (a.T @ h)
    return w, np.stack(hs)


@pytest.mark.parametrize("a_shape,w_shape,dtype", [((64, 784), (784, 128), "float32"),
                                                   ((33, 700), (700, 100), "float64")])
def test_a_product_with_a_weight_the_loop_updates_runs_as_a_pipeline(a_shape, w_shape, dtype):
    """Few rows, long sums, a weight written anew every step: the sum over k is cut
    into a pipeline of parts, each going on from the sums of the one before.  With
    more parts than the pool has workers, the rest run on the calling thread after
    part 0, in order."""
    from llgrad.runtime import pool
    graph = _weight_loop(a_shape, w_shape, dtype)
    rng = np.random.default_rng(7)
    w = (rng.standard_normal(w_shape) * 0.05).astype(dtype)
    a = (rng.standard_normal(a_shape) * 0.05).astype(dtype)
    one = compile_graph(graph, threads=1, blas=False)
    want = one(w, a)
    for parts in (2, pool.MAX_WORKERS + 5):
        split = compile_graph(graph, threads=parts, blas=False)
        assert "k_stages" in split.llvm_ir
        for got, same in zip(split(w, a), want):
            np.testing.assert_array_equal(got, same)
    tight = 1e-4 if dtype == "float32" else 1e-12
    for got, exact in zip(want, _weight_loop_reference(w.astype(np.float64),
                                                       a.astype(np.float64))):
        np.testing.assert_allclose(got, exact, rtol=tight, atol=tight)


def test_a_weight_the_graph_only_reads_is_cut_into_row_bands():
    """Read again and again, a parameter sits in every core's cache: no pipeline."""
    graph = _product_graph((64, 784), (784, 128), (((1,), (0,)), ((), ())), "float32")
    ir_text = compile_graph(graph, threads=2, blas=False).llvm_ir
    assert ".bands" in ir_text and "k_stages" not in ir_text


def test_pipelined_products_called_from_several_threads_at_once():
    """A caller that finds the pool busy runs every part itself, in order."""
    graph = _weight_loop((64, 784), (784, 128), "float32")
    rng = np.random.default_rng(4)
    w = (rng.standard_normal((784, 128)) * 0.05).astype(np.float32)
    a = (rng.standard_normal((64, 784)) * 0.05).astype(np.float32)
    split = compile_graph(graph, threads=2, blas=False)
    want = compile_graph(graph, threads=1, blas=False)(w, a)

    def agreements(_):
        return all(all(np.array_equal(g, s) for g, s in zip(split(w, a), want))
                   for _ in range(30))

    with ThreadPoolExecutor(3) as callers:
        assert all(callers.map(agreements, range(3)))


def test_small_products_are_not_split():
    graph = _product_graph((16, 64), (64, 64), (((1,), (0,)), ((), ())), "float32")
    assert "llgrad_parallel" not in compile_graph(graph, threads=2, blas=False).llvm_ir


def _two_threads_agree(graph, args, parts=2):
    one = compile_graph(graph, threads=1)
    split = compile_graph(graph, threads=parts)
    assert "llgrad_parallel" in split.llvm_ir and "llgrad_parallel" not in one.llvm_ir
    got, want = split(*args), one(*args)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    return got


@pytest.mark.parametrize("parts", [2, 3])
def test_a_large_gather_is_split_into_row_bands(parts):
    """A minibatch gather (``take``), out-of-range rows clipped as on one thread."""
    from llgrad.ir import Builder, Graph, TensorType
    rows, width, picked = 1000, 100, 401
    b = Builder()
    x = b.parameter(index=0, type=TensorType((rows, width), "float64"), name="x")
    idx = b.parameter(index=1, type=TensorType((picked,), "int64"), name="idx")
    graph = Graph([x, idx], [b.take(x, idx)], name="gather")
    assert picked * width >= parallel.MIN_ELEMENTS
    rng = np.random.default_rng(parts)
    xs = rng.standard_normal((rows, width))
    order = rng.integers(-5, rows + 5, picked)
    (got,) = _two_threads_agree(graph, (xs, order), parts)
    np.testing.assert_array_equal(got, xs[np.clip(order, 0, rows - 1)])


@pytest.mark.parametrize("op", ["reduce_sum", "reduce_max"])
@pytest.mark.parametrize("parts", [2, 3])
def test_row_reductions_are_split_into_row_bands(op, parts):
    """Sums and maxima along rows of a value computed inline (x * x), one per row."""
    from llgrad.ir import Builder, Graph, TensorType
    rows, width = 333, 1000
    b = Builder()
    x = b.parameter(index=0, type=TensorType((rows, width), "float32"), name="x")
    graph = Graph([x], [b.emit(op, b.mul(x, x), axes=(1,))], name="rows")
    xs = np.random.default_rng(parts).standard_normal((rows, width)).astype(np.float32)
    (got,) = _two_threads_agree(graph, (xs,), parts)
    want = (np.sum if op == "reduce_sum" else np.max)(xs.astype(np.float64) ** 2, axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("parts", [2, 3])
def test_a_wide_right_operand_is_split_into_column_bands_bit_for_bit(dtype, parts):
    """A B larger than the tiles may keep re-reading (half of this host's L2) and
    wider than A is tall goes to column bands (``matmul._columns_fit_better``), with
    the bias and tanh of a layer after them; the same as one thread and as numpy."""
    from llgrad.compiler.codegen import matmul
    from llgrad.compiler.codegen.options import CodegenOptions
    from llgrad.runtime import host
    panel = host.current().tile_panel_bytes
    itemsize = np.dtype(dtype).itemsize
    M, K = 16, 256
    N = (panel // (K * itemsize) // 64 + 1) * 64 + 8      # past the panel; a partial vector
    product = _product_graph((M, K), (K, N), (((1,), (0,)), ((), ())), dtype)
    canonical = matmul.canonical(product.outputs[0])
    options = CodegenOptions(threads=parts, tile_panel_bytes=panel,
                             vector_bits=host.current().vector_bits)
    assert matmul._columns_fit_better(options, canonical, dtype, parts,
                                      matmul._lanes(options, dtype))
    rng = np.random.default_rng(parts)
    x = rng.standard_normal((M, K)).astype(dtype)
    w = (rng.standard_normal((K, N)) / np.sqrt(K)).astype(dtype)
    bias = rng.standard_normal(N).astype(dtype)
    layer = llgrad.jit(lambda x, w, bias: np.tanh(x @ w + bias)).trace(x, w, bias).optimized
    for graph, args, want in [(product, (x, w), x.astype(np.float64) @ w),
                              (layer, (x, w, bias), np.tanh(x.astype(np.float64) @ w + bias))]:
        one = compile_graph(graph, threads=1, blas=False)
        split = compile_graph(graph, threads=parts, blas=False)
        assert "llgrad_parallel" in split.llvm_ir
        got = split(*args)[0]
        np.testing.assert_array_equal(got, one(*args)[0])
        np.testing.assert_allclose(got, want, rtol=1e-4 if dtype == "float32" else 1e-12,
                                   atol=1e-4 if dtype == "float32" else 1e-12)
