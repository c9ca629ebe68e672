"""Forward mode and what is built on it: jvp, hessian (forward over reverse), hvp,
jacfwd, jacrev.

Oracles: reverse mode through duality (<J t, c> == <t, Jᵀ c> for random t and c, on
every primitive of the table and on the MLP), central finite differences, and
sympy's unsimplified symbolic Hessian for the size comparison."""
import numpy as np
import pytest
import sympy as sp
from helpers import (FD_CASES, arguments, assert_is_mlp_hvp, case_parameters,
                     central_differences, looped_graph, scalarised, small_mlp)
from models import mlp_loss

import llgrad
from llgrad.compiler.autodiff.reverse import vjp
from llgrad.compiler.autodiff.forward import jvp
from llgrad.compiler.passes.pipeline import optimize
from llgrad.ir import PRIMITIVES, Builder, Graph, interpret


def _one_op(case):
    b = Builder()
    params = case_parameters(b, case)
    return Graph(params, [b.emit(case.op, *params, **case.attrs)], name=f"one_{case.op}")


@pytest.mark.parametrize("case", FD_CASES, ids=[c.id for c in FD_CASES])
def test_jvp_of_every_primitive_is_the_transpose_of_its_vjp(case):
    """<jvp(t), c> == <t, vjp(c)>: forward rules (sympy partials, linear flags,
    hand-written jvps) against the independent reverse rules."""
    args = arguments(case)
    rng = np.random.default_rng(11)
    wrt = [k for k, (s, d) in enumerate(case.types) if d == "float64"]
    tangents = [rng.normal(size=args[k].shape) for k in wrt]
    graph = _one_op(case)
    out, tangent_out = interpret(optimize(jvp(graph, wrt)), *args, *tangents)
    cotangent = rng.normal(size=np.shape(out))
    pulled = interpret(optimize(vjp(graph, wrt, cotangents=True)), *args, cotangent)[1:]
    forward = float(np.sum(tangent_out * cotangent))
    reverse = sum(float(np.sum(t * g)) for t, g in zip(tangents, pulled))
    assert forward == pytest.approx(reverse, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("case", FD_CASES[::3], ids=[c.id for c in FD_CASES[::3]])
def test_native_jvp_of_a_primitive_matches_finite_differences(case):
    """The same rules compiled: d/ds sum(w * op(x + s t)) against central differences."""
    args = arguments(case)
    rng = np.random.default_rng(12)
    out_shape = PRIMITIVES[case.op].evaluate(*args, **case.attrs).shape
    graph = scalarised(case, rng.normal(size=out_shape))
    wrt = [k for k, (s, d) in enumerate(case.types) if d == "float64"]
    tangents = [rng.normal(size=args[k].shape) for k in wrt]
    _, slope = llgrad.compiler.codegen.build.compile_graph(optimize(jvp(graph, wrt)))(
        *args, *tangents)
    expected = sum(float(np.sum(central_differences(graph, args, k, 1e-6) * t))
                   for k, t in zip(wrt, tangents))
    assert float(slope) == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_jvp_of_the_mlp_is_dual_to_its_gradient(backend):
    params, xs, ys, direction = small_mlp(3)
    value, slope = llgrad.jvp(mlp_loss, (params, xs, ys),
                              (direction, np.zeros_like(xs), np.zeros_like(ys)),
                              backend=backend)
    g = llgrad.grad(mlp_loss, backend=backend)(params, xs, ys)
    assert value == pytest.approx(mlp_loss(params, xs, ys), rel=1e-13)
    assert slope == pytest.approx(sum(np.sum(g[k] * direction[k]) for k in g), rel=1e-12)


def test_jvp_and_vjp_of_a_vector_function_are_transposes(rng, backend):
    w = rng.normal(size=(5, 4))

    def f(v, s):
        return {"a": np.tanh(w @ v) * s, "b": np.arctan2(v, s + 2.0)}

    v, s = rng.normal(size=4), np.float64(0.7)
    t_v, t_s = rng.normal(size=4), np.float64(-1.3)
    c = {"a": rng.normal(size=5), "b": rng.normal(size=4)}
    _, tangent = llgrad.jvp(f, (v, s), (t_v, t_s), backend=backend)
    _, pullback = llgrad.vjp(f, v, s, backend=backend)
    g_v, g_s = pullback(c)
    forward = sum(np.sum(tangent[k] * c[k]) for k in c)
    assert forward == pytest.approx(np.sum(g_v * t_v) + g_s * t_s, rel=1e-12)


def test_jvp_is_compiled_once_per_signature():
    def f(v):
        return np.sin(v) * v
    for seed in range(3):
        llgrad.jvp(f, (np.full(3, seed + 0.5),), (np.ones(3),))
    staged = llgrad.api._pushforward(f, 1, "native")
    assert len(staged._cache) == 1


def test_jvp_tangent_of_the_wrong_shape_is_a_clear_error():
    with pytest.raises(llgrad.ShapeError, match="tangent.*shape"):
        llgrad.jvp(lambda v: np.sin(v), (np.ones(3),), (np.ones(4),))
    with pytest.raises(llgrad.ShapeError, match="tangents given to jvp.*expected"):
        llgrad.jvp(lambda v: np.sin(v), (np.ones(3),), (np.ones(3), np.ones(3)))


def test_forward_mode_differentiates_a_native_loop():
    """c squared three times in a native loop: the tangent of c**8 is 8 c**7 t."""
    graph = jvp(looped_graph(), [0])
    np.testing.assert_allclose(interpret(graph, 1.1, 0.5)[1], 8 * 1.1 ** 7 * 0.5, rtol=1e-14)


def _quartic(v, a):
    return np.sum(np.arcsinh(v) ** 3) + (a @ v) ** 2 * np.cos(v[0]) + v[1] * np.exp(v[2])


def test_hvp_equals_hessian_times_v(rng, backend):
    v, a, direction = rng.normal(size=5), rng.normal(size=5), rng.normal(size=5)
    h = llgrad.hessian(_quartic, backend=backend)(v, a)
    np.testing.assert_allclose(h, h.T, rtol=1e-12, atol=1e-12)
    hv = llgrad.hvp(_quartic, backend=backend)(v, direction, a)
    np.testing.assert_allclose(hv, h @ direction, rtol=1e-12, atol=1e-12)


def test_hessian_matches_finite_differences_of_the_gradient(rng):
    v, a = rng.normal(size=4), rng.normal(size=4)
    grad = llgrad.grad(_quartic)
    eps = 1e-6
    fd = np.stack([(grad(v + eps * e, a) - grad(v - eps * e, a)) / (2 * eps) for e in np.eye(4)])
    np.testing.assert_allclose(llgrad.hessian(_quartic)(v, a), fd, rtol=1e-6, atol=1e-7)


def test_hvp_of_the_mlp_matches_finite_differences(backend):
    params, xs, ys, direction = small_mlp(7)
    hv = llgrad.hvp(mlp_loss, backend=backend)(params, direction, xs, ys)
    assert_is_mlp_hvp(hv, params, xs, ys, direction)


def test_jacfwd_equals_jacrev_equals_finite_differences(rng, backend):
    w = rng.normal(size=(3, 2, 4))

    def f(m, s):
        return {"t": np.tanh(np.einsum("ijk,jk->i", w, m)) * s, "p": np.arctan(m).sum(axis=0)}

    m, s = rng.normal(size=(2, 4)), 1.7
    fwd = llgrad.jacfwd(f, backend=backend)(m, s)
    rev = llgrad.jacrev(f, backend=backend)(m, s)
    assert fwd["t"].shape == (3, 2, 4) and fwd["p"].shape == (4, 2, 4)
    eps = 1e-6
    for k in fwd:
        fd = np.zeros_like(fwd[k])
        for idx in np.ndindex(m.shape):
            e = np.zeros_like(m)
            e[idx] = eps
            fd[(...,) + idx] = (f(m + e, s)[k] - f(m - e, s)[k]) / (2 * eps)
        np.testing.assert_allclose(fwd[k], rev[k], rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(fwd[k], fd, rtol=1e-6, atol=1e-8)
    assert llgrad.jacobian is llgrad.jacrev


def test_jacobians_and_hessian_of_a_pytree_argument(rng, backend):
    """As JAX: per output leaf, a pytree like the argument; the Hessian of a pytree is
    a pytree of pytrees, and each block agrees with hvp along that leaf."""
    p = {"a": rng.normal(size=3), "b": np.float64(0.4)}
    c = rng.normal(size=3)

    def f(q):
        return np.sin(q["a"] * q["b"]) + np.arctan(q["a"]) * c

    def loss(q):
        return np.sum(f(q) ** 2)

    fwd, rev = llgrad.jacfwd(f, backend=backend)(p), llgrad.jacrev(f, backend=backend)(p)
    assert fwd["a"].shape == (3, 3) and np.shape(fwd["b"]) == (3,)
    for k in p:
        np.testing.assert_allclose(fwd[k], rev[k], rtol=1e-13, atol=1e-14)
    h = llgrad.hessian(loss, backend=backend)(p)
    assert h["a"]["a"].shape == (3, 3) and h["a"]["b"].shape == (3,) and np.shape(
        h["b"]["b"]) == ()
    v = {"a": rng.normal(size=3), "b": np.float64(-0.8)}
    hv = llgrad.hvp(loss, backend=backend)(p, v)
    np.testing.assert_allclose(hv["a"], h["a"]["a"] @ v["a"] + h["a"]["b"] * v["b"],
                               rtol=1e-12)
    assert hv["b"] == pytest.approx(h["b"]["a"] @ v["a"] + h["b"]["b"] * v["b"], rel=1e-12)


def test_grad_of_grad_of_a_scalar_function():
    assert llgrad.grad(llgrad.grad(lambda t: t ** 3 * np.arctan(t)))(1.5) == pytest.approx(
        float(sp.diff(sp.Symbol("t") ** 3 * sp.atan(sp.Symbol("t")), "t", 2).subs("t", 1.5)),
        rel=1e-13)


X3 = sp.symbols("x y z", real=True)


def fifty_terms(seed=0):
    rng = np.random.default_rng(seed)
    x, y, z = X3
    funcs = [sp.sin, sp.cos, sp.exp, sp.tanh, sp.atan]
    return sum(sp.Rational(int(rng.integers(1, 9)), int(rng.integers(1, 5)))
               * funcs[rng.integers(len(funcs))](
                   int(rng.integers(1, 4)) * x + int(rng.integers(-3, 4)) * y * z
                   + sp.Rational(int(rng.integers(-5, 6)), 5))
               * (x, y, z)[rng.integers(3)] ** int(rng.integers(1, 3))
               for _ in range(50))


def test_cse_shows_in_the_hessian_graph(capsys):
    """The compiled Hessian of a 50-term expression has fewer nodes than sympy's
    unsimplified symbolic Hessian has operations: shared subexpressions (each term's
    sin/cos/exp, its inner argument, the chain-rule factors) are computed once."""
    expr = fifty_terms()
    assert len(expr.args) == 50
    f = llgrad.from_sympy(expr, X3)
    nodes = len(f.hessian.trace(0.3, -0.4, 0.8).optimized.nodes)
    ops = sp.count_ops(sp.hessian(expr, X3))
    with capsys.disabled():
        print(f"\nHessian of a 50-term expression: {nodes} llgrad nodes, "
              f"sympy count_ops {ops}")
    assert nodes < ops
    point = {s: v for s, v in zip(X3, (0.3, -0.4, 0.8))}
    want = np.array(sp.hessian(expr, X3).evalf(subs=point), dtype=float)
    np.testing.assert_allclose(f.hessian(0.3, -0.4, 0.8), want, rtol=1e-11, atol=1e-11)
