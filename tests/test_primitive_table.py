"""The primitive table is complete: every record has a type rule, a numpy meaning, a
derivative (or says it has none) and a lowering, and every derivative agrees with
central finite differences of the primitive's own numpy meaning — through the
interpreter and through native code.

The sample inputs are the float64 cases (``FD_CASES``) of the table in helpers.py that
test_codegen checks natively (one table of cases for the whole suite)."""
import numpy as np
import pytest
from helpers import (FD_CASES, NOT_YET_DIFFERENTIABLE, arguments, central_differences,
                     looped_graph, scalarised)

from llgrad.compiler.autodiff.reverse import vjp
from llgrad.compiler.codegen.lowering import LOWERINGS
from llgrad.compiler.codegen.build import compile_graph
from llgrad.compiler.passes.pipeline import optimize
from llgrad.compiler.frontend.sympy_io import partials
from llgrad.ir import PRIMITIVES, Builder, Graph, interpret


@pytest.mark.parametrize("name", sorted(PRIMITIVES))
def test_record_is_complete(name):
    prim = PRIMITIVES[name]
    assert callable(prim.type_rule) and callable(prim.evaluate)
    assert prim.lowering in LOWERINGS
    if prim.symbolic:
        assert len(partials(name)) in (1, 2)  # sympy differentiates the formula
    else:
        assert prim.vjp is not None or not prim.differentiable


def test_every_differentiable_primitive_has_a_gradient_check():
    covered = {c.op for c in FD_CASES}
    expected = {n for n, p in PRIMITIVES.items() if p.differentiable
                and n not in NOT_YET_DIFFERENTIABLE and n != "parameter"}
    assert expected - covered == set()


@pytest.mark.parametrize("case", FD_CASES, ids=[c.id for c in FD_CASES])
@pytest.mark.parametrize("backend", ["native", "interpret"])
def test_vjp_matches_finite_differences(case, backend):
    args = arguments(case)
    out_shape = PRIMITIVES[case.op].evaluate(*args, **case.attrs).shape
    weights = np.random.default_rng(5).normal(size=out_shape)
    graph = scalarised(case, weights)
    wrt = [k for k, (s, d) in enumerate(case.types) if d == "float64"]
    joint = optimize(vjp(graph, wrt))
    run = compile_graph(joint) if backend == "native" else (lambda *a: interpret(joint, *a))
    grads = run(*args)[1:]
    for k, got in zip(wrt, grads):
        np.testing.assert_allclose(got, central_differences(graph, args, k, 1e-6),
                                   rtol=1e-5, atol=1e-6, err_msg=f"d {case.id} / d input {k}")


# lgamma: its derivative, digamma, has none in llgrad (trigamma is refused)
SMOOTH_CASES = [c for c in FD_CASES if c.op not in ("abs", "sign", "max", "min", "reduce_max",
                                                    "select", "lgamma")][::2]


@pytest.mark.parametrize("case", SMOOTH_CASES, ids=[c.id for c in SMOOTH_CASES])
def test_second_order_vjp_matches_finite_differences_of_the_gradient(case):
    """Reverse mode over the joint graph: d/dx <grad(x), v> against central
    differences of the interpreted gradient (every rule differentiates again)."""
    args = arguments(case)
    out_shape = PRIMITIVES[case.op].evaluate(*args, **case.attrs).shape
    rng = np.random.default_rng(6)
    graph = scalarised(case, rng.normal(size=out_shape))
    wrt = [k for k, (s, d) in enumerate(case.types) if d == "float64"]
    joint = vjp(graph, wrt)
    directions = [rng.normal(size=args[k].shape) for k in wrt]
    b = Builder(seed=joint)
    total = None
    for g, v in zip(joint.outputs[1:], directions):
        term = b.reduce_sum(b.mul(g, b.const(v, "float64")), axes=tuple(range(g.type.ndim)))
        total = term if total is None else b.add(total, term)
    directional = Graph(joint.inputs, [total], name=f"dd_{case.op}")
    second = compile_graph(optimize(vjp(directional, wrt)))(*args)[1:]
    for k, got in zip(wrt, second):
        np.testing.assert_allclose(got, central_differences(directional, args, k, 1e-5),
                                   rtol=1e-4, atol=1e-6,
                                   err_msg=f"second order, d {case.id} / d input {k}")


def test_loop_differentiates_in_reverse_mode():
    """c squared three times in a native loop: d c**8 / dc = 8 c**7 (tests/test_scan.py
    checks loops against finite differences and unrolled programs)."""
    joint = optimize(vjp(looped_graph(), [0]))
    for run in (compile_graph(joint), lambda *a: interpret(joint, *a)):
        np.testing.assert_allclose(run(np.array(1.1))[1], 8 * 1.1 ** 7, rtol=1e-14)
