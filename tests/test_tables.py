"""The tables are complete and agree: every primitive record has a kind, a flops rule,
a lowering row and a derivative (test_primitive_table checks the derivatives against
finite differences); the flops rules give what a hand count gives; and the numpy
table is where every numpy function, llgrad.numpy name and Tracer method comes from."""
import ast
import inspect

import numpy as np
import pytest
from helpers import (CASES, branched_graph, case_parameters, collective_graph,
                     heap_taped_graph, looped_graph, taped_graph)

import llgrad
import llgrad.numpy as lnp
from llgrad.compiler.codegen.fusion import RECOMPUTED
from llgrad.compiler.codegen.lowering import LOWERINGS
from llgrad.compiler.frontend import numpy_ops, trace
from llgrad.compiler.frontend.trace import Tracer
from llgrad.ir import PRIMITIVES, Builder, TensorType
from llgrad.ir.primitives import KINDS, flops

ROWS = list(numpy_ops.TABLE.values())


def _sample(name):
    """A node of primitive ``name``: built from its first case, or found in a sample graph."""
    for case in CASES:
        if case.op == name:
            b = Builder()
            params = case_parameters(b, case)
            return params[0] if name == "parameter" else b.emit(name, *params, **case.attrs)
    sample = next((n for graph in (looped_graph(), branched_graph(),
                                          collective_graph(), taped_graph(),
                                          heap_taped_graph())
                   for n in graph.nodes if n.op == name), None)
    assert sample is not None, f"primitive {name} has no case in tests/helpers.py (CASES)"
    return sample


@pytest.mark.parametrize("name", sorted(PRIMITIVES))
def test_every_primitive_has_an_entry_in_every_table(name):
    prim = PRIMITIVES[name]
    assert prim.kind in KINDS
    count = flops(_sample(name))
    assert isinstance(count, int) and count >= 0
    assert prim.lowering in LOWERINGS
    if prim.formula is not None:
        assert prim.kind == "elementwise"
    if prim.differentiable:
        assert prim.formula is not None or prim.vjp is not None


def test_fusion_recomputes_exactly_the_cheap_elementwise_records():
    assert RECOMPUTED == {n for n, p in PRIMITIVES.items() if p.recompute}
    assert {PRIMITIVES[n].kind for n in RECOMPUTED} == {"elementwise", "comparison"}


# ----------------------------------------------------------------------------------
# flops, counted by hand

def _parameters(*shapes):
    b = Builder()
    return b, [b.parameter(index=i, type=TensorType(s, "float64"), name=f"a{i}")
               for i, s in enumerate(shapes)]


def test_a_matmul_costs_a_multiply_and_an_add_per_term():
    b, (x, w) = _parameters((3, 4), (4, 5))
    assert flops(b.dot_general(x, w, dims=(((1,), (0,)), ((), ())))) == 2 * 3 * 5 * 4


def test_a_batched_matmul_counts_every_batch():
    b, (x, w) = _parameters((2, 3, 4), (2, 4, 5))
    assert flops(b.dot_general(x, w, dims=(((2,), (1,)), ((0,), (0,))))) == 2 * 2 * 3 * 5 * 4


def test_a_reduction_costs_one_flop_per_operand_element():
    b, (x,) = _parameters((3, 4))
    assert flops(b.reduce_sum(x, axes=(1,))) == 12
    assert flops(b.reduce_max(x, axes=(0, 1))) == 12


def test_elementwise_ops_comparisons_and_select_cost_one_flop_per_element():
    b, (x, y) = _parameters((3, 4), (3, 4))
    less = b.lt(x, y)
    assert [flops(n) for n in (b.tanh(x), b.add(x, y), less, b.select(less, x, y))] == [12] * 4


def test_data_movement_and_leaves_cost_nothing():
    b, (x,) = _parameters((3, 4))
    moved = [b.reshape(x, shape=(12,)), b.transpose(x, perm=(1, 0)),
             b.broadcast_to(x, (2, 3, 4)), b.convert(x, dtype="float32"),
             b.const(np.ones(3), "float64"), x]
    assert [flops(n) for n in moved] == [0] * len(moved)


# ----------------------------------------------------------------------------------
# the numpy table

def test_every_row_of_the_numpy_table_is_a_callable_with_callable_numpy_counterparts():
    for row in ROWS:
        assert callable(row.fn), row.name
        assert all(callable(f) for f in row.numpy), row.name


def test_every_name_numpy_function_and_method_belongs_to_one_row():
    for reached in (lambda row: (row.name, *row.aliases), lambda row: row.numpy,
                    lambda row: (*row.methods, *row.reflected)):
        every = [x for row in ROWS for x in reached(row)]
        assert len(every) == len(set(every))


def test_numpy_dispatch_reaches_each_row_by_its_numpy_functions():
    for row in ROWS:
        for f in row.numpy:
            table = numpy_ops.UFUNCS if isinstance(f, np.ufunc) else numpy_ops.FUNCTIONS
            assert table[f] is row.fn, f
    assert len(numpy_ops.UFUNCS) + len(numpy_ops.FUNCTIONS) == sum(len(r.numpy) for r in ROWS)


def test_llgrad_numpy_exports_the_rows_marked_exported_by_all_their_names():
    names = {n: row.fn for row in ROWS if row.exported for n in (row.name, *row.aliases)}
    assert sorted(lnp.__all__) == sorted(names)
    for name in lnp.__all__:
        assert getattr(lnp, name) is names[name], name


def test_the_tracer_has_every_method_and_operator_of_the_table():
    for row in ROWS:
        for name in row.methods:
            assert Tracer.__dict__[name] is row.fn, name
        for name in row.reflected:
            assert callable(Tracer.__dict__[name]), name


def test_reflected_operators_swap_their_operands():
    def reflected(v):   # Python scalars and lists defer to the array's __r*__ operators
        return 2.0 - v, 2.0 / v, 2.0 ** v, [[1.0, 1.0], [0.0, 1.0]] @ v

    x = np.array([[1.0, 4.0], [2.0, 8.0]])
    for got, want in zip(llgrad.jit(reflected)(x), reflected(x)):
        np.testing.assert_allclose(got, want)


def test_attaching_the_table_again_changes_nothing():
    before = dict(Tracer.__dict__)
    numpy_ops.attach(Tracer)
    assert dict(Tracer.__dict__) == before


def test_the_tracer_module_imports_nothing_of_the_numpy_table():
    imported = []
    for node in ast.walk(ast.parse(inspect.getsource(trace))):
        if isinstance(node, ast.Import):
            imported += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            imported += [f"{node.module}.{a.name}" for a in node.names]
    assert not [m for m in imported if "numpy_ops" in m]
