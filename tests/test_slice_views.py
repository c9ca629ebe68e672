"""dynamic_slice of a stored operand is a view at an address computed when the code runs:
no kernel copies it, and every reader (a product, an elementwise loop, a loop-free
region, a graph output, another slice) sees the interpreter's rows, start clamped."""
import numpy as np
import pytest

from models import tanh_layer_loss, tanh_layer_sgd

import llgrad
from llgrad import optim
from llgrad.compiler.codegen.fusion import fuse
from llgrad.compiler.codegen.build import compile_graph
from llgrad.ir.graph import Builder, Graph
from llgrad.ir.interpret import interpret
from llgrad.ir.types import TensorType

F64 = "float64"
#: starts below, inside and past the operand's rows: clamped to [0, rows - size]
STARTS = [-3, 0, 2, 5, 6, 40]


def _param(b, i, shape, dtype=F64, name=None):
    return b.parameter(index=i, type=TensorType(shape, dtype), name=name or f"p{i}")


def _agrees(graph, args, **options):
    """Equal to the interpreter's up to products' rounding (FMA contraction)."""
    for got, want in zip(compile_graph(graph, **options)(*args), interpret(graph, *args)):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)


def _kernel_ops(graph):
    return [k.node.op for k in fuse(graph).kernels if not k.copy]


def _rows_times_matrix():
    """x[s:s+3] @ w, the slice also returned as it is and reshaped."""
    b = Builder()
    x, s, w = _param(b, 0, (9, 4)), _param(b, 1, (), "int64"), _param(b, 2, (4, 5))
    rows = b.dynamic_slice(x, s, size=3)
    product = b.dot_general(rows, w, dims=(((1,), (0,)), ((), ())))
    return Graph([x, s, w], [product, rows, b.reshape(rows, shape=(12,))], name="rows")


@pytest.mark.parametrize("start", STARTS)
def test_a_product_reads_the_rows_in_place(start):
    graph = _rows_times_matrix()
    assert "dynamic_slice" not in _kernel_ops(graph)
    rng = np.random.default_rng(start + 3)
    args = [rng.normal(size=(9, 4)), np.int64(start), rng.normal(size=(4, 5))]
    _agrees(graph, args, blas=False)
    _agrees(graph, args)
    first = min(max(start, 0), 6)
    np.testing.assert_array_equal(compile_graph(graph)(*args)[1], args[0][first:first + 3])


@pytest.mark.parametrize("start", STARTS)
def test_slices_of_slices_and_of_computed_values(start):
    """A slice of a slice of a product's result, and of a stored transcendental."""
    b = Builder()
    x, s = _param(b, 0, (9, 4)), _param(b, 1, (), "int64")
    square = b.dot_general(x, b.transpose(x, perm=(1, 0)), dims=(((1,), (0,)), ((), ())))
    outer = b.dynamic_slice(square, b.sub(s, b.const(1, "int64")), size=6)
    inner = b.dynamic_slice(outer, s, size=2)
    t = b.tanh(x)
    graph = Graph([x, s], [b.mul(inner, inner), b.dynamic_slice(t, s, size=4),
                           b.exp(t)], name="nested")
    assert _kernel_ops(graph).count("dynamic_slice") == 0
    rng = np.random.default_rng(start + 3)
    _agrees(graph, [rng.normal(size=(9, 4)), np.int64(start)])


@pytest.mark.parametrize("start", STARTS)
def test_a_slice_of_a_value_computed_inline_is_copied(start):
    """tanh(x) read only by the slice is computed for the slice's rows alone."""
    b = Builder()
    x, s = _param(b, 0, (9, 4)), _param(b, 1, (), "int64")
    graph = Graph([x, s], [b.dynamic_slice(b.tanh(x), s, size=3)], name="inline")
    assert _kernel_ops(graph) == ["dynamic_slice"]
    _agrees(graph, [np.random.default_rng(1).normal(size=(9, 4)), np.int64(start)])


@pytest.mark.parametrize("start", [-1, 0, 3, 4, 9])
def test_a_start_computed_in_a_loop_free_region(start):
    """The start and the one-element slice reading it are scalar kernels of one region:
    the start must be stored for the slice's address, though no later kernel reads it."""
    b = Builder()
    x, i = _param(b, 0, (5,)), _param(b, 1, (), "int64")
    s = b.sub(b.mul(i, b.const(2, "int64")), b.const(1, "int64"))
    one = b.dynamic_slice(x, s, size=1)
    value = b.add(b.mul(one, b.full(3.0, one.type)), b.convert(b.reshape(s, shape=(1,)), dtype=F64))
    graph = Graph([x, i], [value], name="region")
    _agrees(graph, [np.arange(5.0) + 0.5, np.int64(start)])


def test_split_readers_see_the_slice():
    """A large elementwise reader of a slice, split across the pool's threads."""
    b = Builder()
    x, s = _param(b, 0, (4000, 64)), _param(b, 1, (), "int64")
    rows = b.dynamic_slice(x, s, size=3000)
    graph = Graph([x, s], [b.sin(b.add(rows, rows))], name="split")
    rng = np.random.default_rng(2)
    for start in (0, 517, 3000):
        _agrees(graph, [rng.normal(size=(4000, 64)), np.int64(start)], threads=2)


def test_unshuffled_training_slices_batches_and_matches_numpy():
    """train(shuffle=None) reads each batch by address (no take in its loop) and follows
    the same SGD steps as numpy does on consecutive rows."""
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(40, 6)), rng.normal(size=(40, 3))
    params = {"w": rng.normal(size=(6, 3)) * 0.3, "b": np.zeros(3)}
    result = llgrad.train(tanh_layer_loss, params, (x, y), optim.sgd(0.1), batch_size=8,
                          epochs=2)
    body = next(n for n in result.graph.nodes if n.op == "loop").attrs["body"]
    ops = {n.op for n in body.nodes}
    assert "take" not in ops and "dynamic_slice" in ops
    w, bias = tanh_layer_sgd(params, x, y, 0.1, 8, 10)
    np.testing.assert_allclose(result.params["w"], w, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(result.params["b"], bias, rtol=1e-12, atol=1e-12)
