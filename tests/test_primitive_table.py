"""The primitive table is complete: every record has a type rule, a numpy meaning, a
derivative (or says it has none) and a lowering, and every derivative agrees with
central finite differences of the primitive's own numpy meaning — through the
interpreter and through native code.

The sample inputs are the float64 cases of test_codegen's table (one table of cases
for the whole suite)."""
import numpy as np
import pytest
from test_codegen import CASES, _arguments

import llgrad
from llgrad.compiler.autodiff.reverse import vjp
from llgrad.compiler.codegen.lowering import LOWERINGS
from llgrad.compiler.codegen.build import compile_graph
from llgrad.compiler.dispatch.staging import optimize
from llgrad.compiler.frontend.sympy_io import partials
from llgrad.ir import PRIMITIVES, Builder, Graph, TensorType, interpret

NOT_YET_DIFFERENTIABLE = {"loop", "tuple_get"}  # rules raise GradientError: never a silent 0


@pytest.mark.parametrize("name", sorted(PRIMITIVES))
def test_record_is_complete(name):
    prim = PRIMITIVES[name]
    assert callable(prim.type_rule) and callable(prim.evaluate)
    assert prim.lowering in LOWERINGS
    if prim.elementwise:
        assert len(partials(name)) in (1, 2)  # sympy differentiates the formula
    else:
        assert prim.vjp is not None or not prim.differentiable


def _fd_cases():
    chosen = {}
    for case in CASES:
        prim = PRIMITIVES[case.op]
        float_inputs = [k for k, (s, d) in enumerate(case.types) if d == "float64"]
        if (not prim.differentiable or case.op in NOT_YET_DIFFERENTIABLE or not float_inputs
                or case.domain == "special" or any(d == "float32" for _, d in case.types)):
            continue
        if any(0 in s for s, _ in case.types) or case.attrs.get("dtype", "float64") != "float64":
            continue  # empty, or rounded to another dtype: finite differences say nothing
        chosen.setdefault(case.op, []).append(case)
    return [c for cases in chosen.values() for c in cases[:4]]


FD_CASES = _fd_cases()


def test_every_differentiable_primitive_has_a_gradient_check():
    covered = {c.op for c in FD_CASES}
    expected = {n for n, p in PRIMITIVES.items() if p.differentiable
                and n not in NOT_YET_DIFFERENTIABLE and n != "parameter"}
    assert expected - covered == set()


def _scalarised(case, weights):
    """sum(w * op(inputs)): a scalar whose gradient is the op's vjp applied to w."""
    b = Builder()
    params = [b.parameter(index=i, type=TensorType(s, d), name=f"a{i}")
              for i, (s, d) in enumerate(case.types)]
    out = b.emit(case.op, *params, **case.attrs)
    w = b.const(weights, "float64")
    return Graph(params, [b.reduce_sum(b.mul(out, w), axes=tuple(range(out.type.ndim)))],
                 name=f"sum_w_{case.op}")


@pytest.mark.parametrize("case", FD_CASES, ids=[c.id for c in FD_CASES])
@pytest.mark.parametrize("backend", ["native", "interpret"])
def test_vjp_matches_finite_differences(case, backend):
    args = _arguments(case)
    out_shape = PRIMITIVES[case.op].evaluate(*args, **case.attrs).shape
    weights = np.random.default_rng(5).normal(size=out_shape)
    graph = _scalarised(case, weights)
    wrt = [k for k, (s, d) in enumerate(case.types) if d == "float64"]
    joint = optimize(vjp(graph, wrt))
    run = compile_graph(joint) if backend == "native" else (lambda *a: interpret(joint, *a))
    grads = run(*args)[1:]
    for k, got in zip(wrt, grads):
        np.testing.assert_allclose(got, _central_differences(graph, args, k, 1e-6),
                                   rtol=1e-5, atol=1e-6, err_msg=f"d {case.id} / d input {k}")


def _central_differences(graph, args, k, eps):
    """d graph / d args[k] by central differences of the interpreted (scalar) graph."""
    expected = np.zeros_like(args[k])
    for idx in np.ndindex(args[k].shape):
        step = eps * max(1.0, abs(args[k][idx]))
        moved = [a.copy() for a in args]
        moved[k][idx] += step
        up = interpret(graph, *moved)[0]
        moved[k][idx] -= 2 * step
        expected[idx] = (up - interpret(graph, *moved)[0]) / (2 * step)
    return expected


SMOOTH_CASES = [c for c in FD_CASES if c.op not in ("abs", "sign", "max", "min", "reduce_max",
                                                    "select")][::2]


@pytest.mark.parametrize("case", SMOOTH_CASES, ids=[c.id for c in SMOOTH_CASES])
def test_second_order_vjp_matches_finite_differences_of_the_gradient(case):
    """Reverse mode over the joint graph: d/dx <grad(x), v> against central
    differences of the interpreted gradient (every rule differentiates again)."""
    args = _arguments(case)
    out_shape = PRIMITIVES[case.op].evaluate(*args, **case.attrs).shape
    rng = np.random.default_rng(6)
    graph = _scalarised(case, rng.normal(size=out_shape))
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
        np.testing.assert_allclose(got, _central_differences(directional, args, k, 1e-5),
                                   rtol=1e-4, atol=1e-6,
                                   err_msg=f"second order, d {case.id} / d input {k}")


def looped_graph():
    """c ↦ c squared three times, as a native loop."""
    b = Builder()
    i = b.parameter(index=0, type=TensorType((), "int64"), name="i")
    c = b.parameter(index=1, type=TensorType((), "float64"), name="c")
    body = Graph([i, c], [b.mul(c, c)], name="body")
    outer = Builder()
    c0 = outer.parameter(index=0, type=TensorType((), "float64"), name="c0")
    looped = outer.loop(c0, body=body, trip_count=3, n_carried=1)
    return Graph([c0], [outer.tuple_get(looped, index=0)], name="looped")


def test_loop_refuses_differentiation_loudly():
    with pytest.raises(llgrad.GradientError, match="loop"):
        vjp(looped_graph(), [0])
