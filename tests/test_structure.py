"""The backward graph is short, readable and shares work with the forward graph."""
import numpy as np

import llgrad
from llgrad.compiler.autodiff.reverse import vjp
from llgrad.compiler.passes.cse import cse
from llgrad.compiler.passes.simplify import simplify
from llgrad.ir import Builder, Graph, TensorType, interpret, verify

A = np.random.default_rng(3).normal(size=(3, 4))


def chain(x):
    a = 2 * x
    b = a + 3
    return b ** 2


def test_chain_rule_example_is_twenty(backend):
    assert llgrad.grad(chain, backend=backend)(1.0) == 20.0


def test_chain_rule_backward_graph_is_short_and_readable():
    text = str(llgrad.grad(chain, backend="interpret").trace(1.0).optimized)
    body = [line for line in text.splitlines()[1:] if "return" not in line]
    assert len(body) == 4, text  # a, b; db = b + b; dx = db * 2 (grad never computes c = b²)
    assert "add %2, %2" in text and "mul %3, 2.0" in text
    assert "test_structure.py" in text  # every line says where it came from


def test_tanh_backward_reuses_forward_tanh():
    t = llgrad.grad(lambda x: np.tanh(x).sum(), backend="interpret").trace(A)
    assert t.ir.count("tanh") == 1
    assert t.backward.count("tanh") == 1
    # forward: param, tanh, sum; backward: tanh*tanh, 1 - that (the seed 1.0 folds away)
    assert t.optimized.count("mul") == 1 and t.optimized.count("sub") == 1


def test_sin_and_cos_computed_once_each():
    t = llgrad.grad(lambda x: (np.sin(x) * np.sin(x) + np.sin(x)).sum(),
                    backend="interpret").trace(A)
    assert t.backward.count("sin") == 1
    assert t.backward.count("cos") == 1


def test_cse_merges_graphs_built_apart():
    ty = TensorType((3,), "float64")
    b1, b2 = Builder(), Builder()
    x = b1.parameter(index=0, type=ty, name="x")
    left = b1.exp(x)
    right = b2.exp(x)  # same expression, other builder: a different node
    g = Graph([x], [b1.add(left, b1.mul(right, right))])
    assert g.count("exp") == 2
    merged = cse(g)
    verify(merged)
    assert merged.count("exp") == 1
    np.testing.assert_array_equal(interpret(merged, A[0, :3])[0], interpret(g, A[0, :3])[0])


def test_simplify_removes_exact_identities_only():
    ty = TensorType((4,), "float64")
    b = Builder()
    x = b.parameter(index=0, type=ty, name="x")
    one, zero = b.full(1.0, ty), b.full(0.0, ty)
    kept = b.add(x, zero)                      # x + 0 is not x for x = -0.0: must stay
    y = b.sub(b.mul(b.neg(b.neg(x)), one), zero)   # all exact identities: y is x
    z = b.mul(x, zero)                         # x * 0 is NaN for inf: must stay
    g = simplify(Graph([x], [y, kept, z]))
    verify(g)
    assert g.outputs[0] is x
    assert g.outputs[1].op == "add" and g.outputs[2].op == "mul"
    value = np.array([-0.0, np.inf, 1.5, np.nan])
    with np.errstate(invalid="ignore"):
        wanted = [value, value + 0.0, value * 0.0]
    for got, want in zip(interpret(g, value), wanted):
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(np.signbit(got), np.signbit(want))


def test_simplify_folds_scalar_constants():
    b = Builder()
    x = b.parameter(index=0, type=TensorType((), "float64"), name="x")
    two = b.add(b.const(1.0, "float64"), b.const(1.0, "float64"))
    g = simplify(Graph([x], [b.mul(x, b.mul(two, b.const(3.0, "float64")))]))
    assert "6.0" in str(g) and g.count("add") == 0


def test_joint_graph_differentiates_only_what_depends_on_wrt():
    ty = TensorType((3,), "float64")
    b = Builder()
    x = b.parameter(index=0, type=ty, name="x")
    c = b.parameter(index=1, type=ty, name="c")
    out = b.reduce_sum(b.mul(b.exp(c), x), axes=(0,))
    joint = vjp(Graph([x, c], [out]), [0])
    assert joint.count("exp") == 1  # d/dx needs exp(c) but never d exp(c)/dc


def test_dot_export_colours_forward_and_backward_apart():
    t = llgrad.grad(lambda x: np.tanh(x).sum(), backend="interpret").trace(A)
    dot = t.to_dot()
    assert dot.startswith('digraph "<lambda>_vjp"') and dot.rstrip().endswith("}")
    tanh_line = next(line for line in dot.splitlines() if ' tanh\\n' in line)
    assert "#dbe9f6" in tanh_line  # the forward tanh, reused by the backward pass
    assert any("#fde0c5" in line and ' mul\\n' in line for line in dot.splitlines())
    assert dot.count("->") >= len(t.backward.nodes) - 3


def test_debug_switch_reports_every_pass(monkeypatch, capsys):
    monkeypatch.setenv("LLGRAD_DEBUG", "1")
    llgrad.grad(lambda x: np.tanh(x).sum(), backend="interpret")(A)
    err = capsys.readouterr().err
    for name in ("simplify", "cse", "dce"):
        assert f"llgrad: {name}" in err
