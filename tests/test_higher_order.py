"""Second and third derivatives: reverse mode applied to backward graphs.

Oracles: sympy's symbolic derivatives for scalar functions (the tables in helpers.py
that test_sympy_oracle checks to first order), analytic Hessians, and finite
differences of the gradient."""
import numpy as np
import pytest
import sympy as sp
from helpers import BINARY, UNARY, assert_is_mlp_hvp, small_mlp, x, y
from models import mlp_loss

import llgrad

SMOOTH = sorted(set(UNARY) - {"abs"})  # |x|'' is a Dirac delta: nothing to compare


@pytest.mark.parametrize("name", SMOOTH)
@pytest.mark.parametrize("point", [0.4, 1.3])
def test_second_derivative_equals_sympy(name, point, backend):
    fn, expr = UNARY[name]
    expected = float(sp.diff(expr, x, 2).subs(x, point).evalf(30))
    got = llgrad.grad(llgrad.grad(fn, backend=backend), backend=backend)(np.float64(point))
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-13)


def test_third_derivative_equals_sympy(backend):
    fn, expr = UNARY["nested"]
    d3 = llgrad.grad(llgrad.grad(llgrad.grad(fn, backend=backend), backend=backend),
                     backend=backend)
    expected = float(sp.diff(expr, x, 3).subs(x, 0.8).evalf(30))
    assert d3(np.float64(0.8)) == pytest.approx(expected, rel=1e-11)


@pytest.mark.parametrize("name", sorted(set(BINARY) - {"max", "min"}))
def test_hessian_of_two_variables_equals_sympy(name, backend):
    fn, expr = BINARY[name]
    point = np.array([0.6, 1.4])
    subs = {x: point[0], y: point[1]}
    expected = np.array([[float(sp.diff(expr, a, b).subs(subs).evalf(30)) for b in (x, y)]
                         for a in (x, y)])
    got = llgrad.hessian(lambda v: fn(v[0], v[1]), backend=backend)(point)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-13)


def test_hessian_matches_analytic_form(backend):
    a = np.array([1.0, 2.0, -1.0, 0.5])
    v = np.array([0.3, -0.5, 0.9, 1.1])
    h = llgrad.hessian(lambda v: (v ** 3).sum() + (a @ v) ** 2 + np.exp(v).sum(),
                       backend=backend)(v)
    np.testing.assert_allclose(h, np.diag(6 * v + np.exp(v)) + 2 * np.outer(a, a), rtol=1e-13)


def test_mlp_hessian_vector_product_matches_finite_differences(backend):
    params, xs, ys, direction = small_mlp(2)
    grad = llgrad.grad(mlp_loss, backend=backend)

    def directional(p):
        g = grad(p, xs, ys)
        return sum((g[k] * direction[k]).sum() for k in g)

    assert_is_mlp_hvp(llgrad.grad(directional, backend=backend)(params), params, xs, ys,
                      direction)


def test_inner_gradient_may_close_over_outer_values(backend):
    """d/dy [d/dx (x * y * x)] = 2x: the inner function uses the outer argument y."""
    def mixed(x_, y_):
        return llgrad.grad(lambda t: t * y_ * t, backend=backend)(x_)

    assert llgrad.grad(mixed, argnums=1, backend=backend)(1.5, 0.7) == pytest.approx(3.0)
    assert llgrad.grad(mixed, argnums=0, backend=backend)(1.5, 0.7) == pytest.approx(1.4)


def test_jvp_is_the_jacobian_times_the_tangent(backend):
    rng = np.random.default_rng(4)
    w = rng.normal(size=(3, 4))
    v, t = rng.normal(size=4), rng.normal(size=4)
    out, tangent = llgrad.jvp(lambda v: np.tanh(w @ v) * v[:3], (v,), (t,), backend=backend)
    s = np.tanh(w @ v)
    jacobian = ((1 - s ** 2) * v[:3])[:, None] * w + np.diag(s) @ np.eye(3, 4)
    np.testing.assert_allclose(out, s * v[:3], rtol=1e-14)
    np.testing.assert_allclose(tangent, jacobian @ t, rtol=1e-13)


def test_jvp_of_a_pytree_function_matches_finite_differences(backend):
    params, xs, ys, direction = small_mlp(5)
    value, slope = llgrad.jvp(lambda p: mlp_loss(p, xs, ys), (params,), (direction,),
                              backend=backend)
    eps = 1e-6
    shifted = lambda s: mlp_loss({k: v + s * direction[k] for k, v in params.items()}, xs, ys)  # noqa: E731
    assert value == pytest.approx(mlp_loss(params, xs, ys), rel=1e-13)
    assert slope == pytest.approx((shifted(eps) - shifted(-eps)) / (2 * eps), rel=1e-6)
