"""Which values fusion recomputes in their readers' loops instead of storing, and that
the results stay those of the interpreter."""
import re

import numpy as np

from llgrad.compiler.codegen.fusion import fuse
from llgrad.compiler.codegen.build import compile_graph
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
    args = [rng.normal(size=p.type.shape) for p in graph.inputs]
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


def _one_loop_graph(read_twice_elsewhere=False, through=None):
    """``s = exp(x)`` read by ``sin(s)`` and by ``s * y``, both inside the loop of one
    output ``sin(s) + s * y`` (optionally also read by a second output's loop, or through
    an index map ``through(b, s)`` such as a transpose)."""
    b = Builder()
    x = b.parameter(index=0, type=TensorType((17, 17), "float64"), name="x")
    y = b.parameter(index=1, type=TensorType((17, 17), "float64"), name="y")
    s = b.exp(x)
    other = through(b, s) if through else s
    outputs = [b.add(b.sin(s), b.mul(other, y))]
    if read_twice_elsewhere:
        outputs.append(b.reduce_sum(b.cos(s), axes=(0, 1)))
    return Graph([x, y], outputs, name="one_loop"), s


def test_a_costly_value_read_twice_in_one_loop_is_computed_there_once():
    graph, s = _one_loop_graph()
    plan = fuse(graph)
    assert id(s) in plan.inlined and _kernel_ops(graph) == ["add"]
    _agrees(graph)
    ir = compile_graph(graph).llvm_ir
    exp_calls = re.findall(r'call double @"?(?:llvm\.)?exp(?:\.f64)?"?\(', ir)
    assert len(exp_calls) == 1, "exp is computed once per element"


def test_a_costly_value_read_by_two_loops_is_stored():
    graph, s = _one_loop_graph(read_twice_elsewhere=True)
    assert id(s) not in fuse(graph).inlined
    _agrees(graph)


def test_a_costly_value_read_at_another_index_is_stored():
    """The transpose of ``s`` reads element (j, i) in the loop of element (i, j): that
    is not the value the loop already has, so ``s`` keeps its buffer."""
    graph, s = _one_loop_graph(through=lambda b, s: b.emit("transpose", s, perm=(1, 0)))
    assert id(s) not in fuse(graph).inlined
    _agrees(graph)


def test_the_elementwise_benchmark_gradient_is_one_loop_without_intermediates():
    """Workload 5's gradient (sin, cos, exp, sqrt, log of one vector, each value read by
    the forward and the backward formula) is one loop over the input, no arena."""
    import llgrad

    def loss(x):
        return np.sum(np.log(1 + np.exp(np.sin(x) * x)) + np.sqrt(x * x + 1) * np.cos(x))

    x = np.random.default_rng(3).uniform(-5, 5, size=1001)
    trace = llgrad.grad(loss).trace(x)
    assert len(trace.kernels.splitlines()) == 1 and trace.executable.arena_bytes == 0
    s, c, r = np.sin(x), np.cos(x), np.sqrt(x * x + 1)
    want = (c * x + s) / (1 + np.exp(-s * x)) + x / r * c - r * s
    np.testing.assert_allclose(llgrad.grad(loss)(x), want, rtol=1e-12, atol=1e-14)
