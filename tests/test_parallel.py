"""Large elementwise kernels split across threads compute exactly what one thread does."""
import numpy as np
import pytest

import llgrad
from llgrad.compiler.codegen import parallel
from llgrad.compiler.pipeline import compile_graph


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
            ((3, 40, 300), (3, 300, 70), (((2,), (1,)), ((0,), (0,))), "bmk,bkn->bmn")]


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


def test_a_pipelined_product_matches_one_thread_with_more_parts_than_workers():
    """Few rows, long sums: the sum over k is cut into a pipeline of parts, each going
    on from the sums of the one before.  Twelve parts are more than the pool's
    workers; the rest run on the calling thread after part 0, in order."""
    from llgrad.runtime import pool
    graph = _product_graph((33, 700), (700, 100), (((1,), (0,)), ((), ())), "float64")
    rng = np.random.default_rng(12)
    a, b = rng.standard_normal((33, 700)), rng.standard_normal((700, 100))
    one = compile_graph(graph, threads=1, blas=False)
    for parts in (2, pool.MAX_WORKERS + 5):
        split = compile_graph(graph, threads=parts, blas=False)
        assert "k_stages" in split.llvm_ir
        np.testing.assert_array_equal(split(a, b)[0], one(a, b)[0])
    np.testing.assert_allclose(one(a, b)[0], a @ b, rtol=1e-12, atol=1e-11)


def test_pipelined_products_called_from_several_threads_at_once():
    """A caller that finds the pool busy runs every part itself, in order."""
    import threading
    graph = _product_graph((64, 784), (784, 128), (((1,), (0,)), ((), ())), "float32")
    rng = np.random.default_rng(4)
    a = rng.standard_normal((64, 784)).astype(np.float32)
    b = rng.standard_normal((784, 128)).astype(np.float32)
    split = compile_graph(graph, threads=2, blas=False)
    want = compile_graph(graph, threads=1, blas=False)(a, b)[0]
    failures = []

    def work():
        for _ in range(50):
            if not np.array_equal(split(a, b)[0], want):
                failures.append(1)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


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
