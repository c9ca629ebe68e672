"""Which values fusion recomputes in their readers' loops instead of storing, and that
the results stay those of the interpreter."""
import numpy as np

from llgrad.compiler.passes.fusion import fuse
from llgrad.compiler.pipeline import compile_graph
from llgrad.ir.graph import Builder, Graph
from llgrad.ir.interpret import interpret
from llgrad.ir.types import TensorType


def _graph(shared):
    """``shared(b, x, y)`` is read by two elementwise consumers and a reduction."""
    b = Builder()
    x = b.parameter(index=0, type=TensorType((300,), "float64"), name="x")
    y = b.parameter(index=1, type=TensorType((300,), "float64"), name="y")
    s = shared(b, x, y)
    out = b.mul(b.exp(s), b.sin(s))
    return Graph([x, y], [out, b.reduce_sum(s, axes=(0,))], name="shared"), s


def _kernel_ops(graph):
    return [k.node.op for k in fuse(graph).kernels]


def _agrees(graph):
    rng = np.random.default_rng(0)
    args = [rng.normal(size=300), rng.normal(size=300)]
    for got, want in zip(compile_graph(graph)(*args), interpret(graph, *args)):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)


def test_one_cheap_operation_over_stored_values_is_recomputed_per_reader():
    graph, s = _graph(lambda b, x, y: b.add(x, y))
    plan = fuse(graph)
    assert id(s) in plan.inlined and "add" not in _kernel_ops(graph)
    _agrees(graph)


def test_a_transcendental_with_several_readers_is_stored_once():
    graph, s = _graph(lambda b, x, y: b.exp(x))
    assert id(s) not in fuse(graph).inlined
    _agrees(graph)


def test_recomputation_does_not_cascade_through_inlined_operands():
    """``add(mul(x, y), y)``: the mul is already inlined into the add, so recomputing
    the add per reader would repeat two operations; it is stored instead."""
    graph, s = _graph(lambda b, x, y: b.add(b.mul(x, y), y))
    assert id(s) not in fuse(graph).inlined
    _agrees(graph)
