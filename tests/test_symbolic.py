"""The sympy bridge: from_sympy computes what sympy's own numpy printer computes, its
gradients are sympy's derivatives, and to_sympy reads a traced gradient back as the
derivative sympy would write.  Oracle everywhere: sympy (``lambdify``, ``diff``)."""

import numpy as np
import pytest
import sympy as sp

import llgrad
import llgrad.numpy as lnp
from llgrad.compiler.frontend import sympy_io as sympy_frontend
from llgrad.symbolic import from_sympy

x, y = sp.symbols("x y", real=True)

# name: (expression in x and y, domain of the random inputs)
EXPRESSIONS = {
    "polynomial": (x ** 5 - 3 * x ** 2 * y + sp.Rational(1, 3), "real"),
    "rational": (x / (1 + y ** 2) - sp.Rational(2, 7) * x ** 3, "real"),
    "trig": (sp.sin(x) * sp.cos(y) + sp.tan(x / 3), "real"),
    "exp_log": (sp.exp(-x ** 2) * sp.log(y), "positive"),
    "tanh_sqrt": (sp.tanh(x * y) + sp.sqrt(y) / x, "positive"),
    "any_exponent": (x ** y + x ** sp.Rational(3, 2) + x ** -2.5 + 2 ** y, "positive"),
    "abs_sign": (sp.Abs(x - y) * sp.sign(x) + sp.Abs(y), "real"),
    "max_min": (sp.Max(x, y, 0) - sp.Min(x, 2 * y), "real"),
    "constants": (sp.pi * x + sp.E * y + sp.sqrt(2), "real"),
    "piecewise": (sp.Piecewise((x ** 2, x < y), (-y, (x >= 0.5) & (y > 0)),
                               (sp.cos(x), True)), "real"),
}
SMOOTH = ["polynomial", "rational", "trig", "exp_log", "tanh_sqrt", "any_exponent",
          "constants", "max_min", "piecewise"]


def _inputs(domain, dtype, shape=(5, 7), seed=0):
    rng = np.random.default_rng(seed)
    draw = (lambda: rng.uniform(0.5, 2.0, shape)) if domain == "positive" else (
        lambda: rng.uniform(-2.0, 2.0, shape))
    return draw().astype(dtype), draw().astype(dtype)


def _lambdified(expr):
    return sp.lambdify([x, y], expr, "numpy")


@pytest.mark.parametrize("name", sorted(EXPRESSIONS))
def test_values_equal_sympy_lambdify_float64(name, backend):
    expr, domain = EXPRESSIONS[name]
    a, b = _inputs(domain, np.float64)
    got = from_sympy(expr, [x, y], backend=backend)(a, b)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, _lambdified(expr)(a, b), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("name", sorted(EXPRESSIONS))
def test_values_equal_sympy_lambdify_float32(name):
    expr, domain = EXPRESSIONS[name]
    a, b = _inputs(domain, np.float32)
    got = from_sympy(expr, [x, y])(a, b)
    assert got.dtype == np.float32  # float32 in, float32 out, as numpy
    want = _lambdified(expr)(a.astype(np.float64), b.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


def test_arguments_broadcast_like_numpy():
    expr = sp.sin(x) * y + x
    a, b = np.linspace(-1, 1, 4).reshape(4, 1), np.linspace(0, 2, 3)
    got = from_sympy(expr, [x, y])(a, b)
    assert got.shape == (4, 3)
    np.testing.assert_allclose(got, _lambdified(expr)(a, b), rtol=1e-15)
    assert from_sympy(expr, [x, y])(0.5, 2) == pytest.approx(np.sin(0.5) * 2 + 0.5)


@pytest.mark.parametrize("name", SMOOTH)
def test_gradients_equal_sympy_diff(name, backend):
    expr, domain = EXPRESSIONS[name]
    a, b = _inputs(domain, np.float64, seed=1)
    f = from_sympy(expr, [x, y])
    ga, gb = llgrad.grad(lambda u, v: f(u, v).sum(), argnums=(0, 1), backend=backend)(a, b)
    # "+ 0 * a": a derivative that is a constant lambdifies to a scalar
    np.testing.assert_allclose(ga, _lambdified(sp.diff(expr, x))(a, b) + 0 * a,
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gb, _lambdified(sp.diff(expr, y))(a, b) + 0 * b,
                               rtol=1e-12, atol=1e-12)


def test_grad_of_from_sympy_on_python_scalars():
    f = from_sympy(sp.sin(x) * y, [x, y])
    gx, gy = llgrad.grad(f, argnums=(0, 1))(0.3, 2.0)
    assert (gx, gy) == pytest.approx((2 * np.cos(0.3), np.sin(0.3)), rel=1e-15)


def test_from_sympy_mixes_with_numpy_inside_a_trace(backend):
    softplus = from_sympy(sp.log(1 + sp.exp(x)), [x])
    a = np.linspace(-2, 2, 9)
    g = llgrad.grad(lambda v: np.sum(softplus(2 * v) ** 2), backend=backend)(a)
    sp_a = np.log1p(np.exp(2 * a))
    np.testing.assert_allclose(g, 2 * sp_a * 2 / (1 + np.exp(-2 * a)), rtol=1e-13)


def _traced_scalar(fn, original):
    """``fn``'s argument is named x, so its symbol is the x of ``original``."""
    trace = llgrad.grad(fn).trace(0.7)
    (expr_grad,) = trace.to_sympy()          # what grad returns; output 0 is the value
    expr_value = trace.to_sympy(0)
    return expr_value, expr_grad, sp.diff(original, x)


def test_to_sympy_of_a_gradient_simplifies_to_sympy_diff():
    value, grad, want = _traced_scalar(lambda x: np.tanh(x) ** 2 + np.sin(x),
                                       sp.tanh(x) ** 2 + sp.sin(x))
    assert sp.simplify(value - (sp.tanh(x) ** 2 + sp.sin(x))) == 0
    assert sp.simplify(grad - want) == 0


def test_to_sympy_spells_llgrad_functions_in_standard_sympy():
    original = 1 / (1 + sp.exp(-x)) * sp.log(1 + x ** 2) + sp.exp(x) - 1
    value, grad, want = _traced_scalar(
        lambda x: lnp.sigmoid(x) * np.log1p(x * x) + np.expm1(x), original)
    for point in (-1.3, 0.2, 0.9, 2.5):
        assert float(value.subs(x, point)) == pytest.approx(float(original.subs(x, point)),
                                                            rel=1e-14)
        assert float(grad.subs(x, point)) == pytest.approx(float(want.subs(x, point)),
                                                           rel=1e-14)
    assert {f.func for f in grad.atoms(sp.Function)} <= {sp.exp, sp.log}


def test_to_sympy_round_trips_through_from_sympy():
    def fn(x):
        return lnp.sigmoid(x) * np.log1p(x * x) + np.maximum(x, 0.25)
    trace = llgrad.grad(fn).trace(0.5)
    grad = from_sympy(trace.to_sympy(1, standard=False), [x])
    for point in (-1.0, 0.1, 0.5, 2.0):
        assert grad(point) == pytest.approx(llgrad.grad(fn)(point), rel=1e-15)


def test_to_sympy_names_symbols_after_the_arguments():
    trace = llgrad.grad(lambda p: np.sin(p["w1"]) * p["b"]).trace({"w1": 0.3, "b": 2.0})
    value = trace.to_sympy(0)
    w1, b = sp.Symbol("p_w1", real=True), sp.Symbol("p_b", real=True)
    assert value == sp.sin(w1) * b
    grads = trace.to_sympy()
    assert set(grads) == {b * sp.cos(w1), sp.sin(w1)}


def test_to_sympy_reads_select_and_comparisons_as_piecewise():
    trace = llgrad.jit(lambda x: np.where(x > 1.0, x * x, -x)).trace(np.ones(3))
    (expr,) = trace.to_sympy()
    assert expr == sp.Piecewise((x ** 2, x > 1), (-x, True))


def test_to_sympy_converts_shared_nodes_once(monkeypatch):
    def deep(x):
        for _ in range(40):  # a DAG of 121 nodes; as a tree, 2**40 leaves
            x = np.sin(x) * np.cos(x)
        return x
    graph = llgrad.jit(deep).trace(0.5).optimized
    reading = sympy_frontend._reading
    calls = []
    monkeypatch.setattr(sympy_frontend, "_reading",
                        lambda *a: calls.append(a[0]) or reading(*a))
    expr = sympy_frontend.to_sympy(graph)
    assert len(calls) == sum(1 for n in graph.nodes if n.op in ("sin", "cos", "mul")) == 120
    assert expr.func is sp.Mul and {a.func for a in expr.args} == {sp.sin, sp.cos}


def test_to_sympy_rejects_dot_general():
    a, b = np.ones((2, 3)), np.ones((3, 4))
    with pytest.raises(llgrad.UnsupportedError, match="dot_general"):
        llgrad.jit(lambda u, v: u @ v).trace(a, b).to_sympy()


def test_to_sympy_rejects_reductions_in_the_requested_output_only():
    trace = llgrad.grad(lambda x: np.tanh(x).sum()).trace(np.ones(3))
    with pytest.raises(llgrad.UnsupportedError, match="elementwise graphs.*reduce_sum"):
        trace.to_sympy(0)
    assert sp.simplify(trace.to_sympy(1) - (1 - sp.tanh(x) ** 2)) == 0


def test_from_sympy_rejects_unsupported_functions_by_name():
    with pytest.raises(llgrad.UnsupportedError, match="gamma"):
        from_sympy(sp.gamma(x) + 1, [x])
    with pytest.raises(llgrad.UnsupportedError, match="besselj"):
        from_sympy(sp.besselj(0, x), [x])


def test_from_sympy_rejects_symbols_that_are_not_arguments():
    with pytest.raises(llgrad.UnsupportedError, match="symbol y"):
        from_sympy(x + y, [x])


MORE_FUNCTIONS = {  # sympy functions with no primitive of their own, and Heaviside
    "sec_csc_cot": sp.sec(x) + sp.csc(y) * sp.cot(x + 3),
    "hyperbolic": sp.sinh(x) * sp.cosh(y) + sp.coth(y) - sp.sech(x) * sp.csch(y),
    "small_sinh": sp.sinh(x * 1e-9) * 1e9,   # no cancellation near 0
    "acot_atan2": sp.acot(x) + sp.atan2(y, x) + sp.asin(x / 3) * sp.acos(y / 3),
    "inverse_hyperbolic": sp.asinh(x) + sp.acosh(y ** 2 + 1) + sp.atanh(x / 3),
    "heaviside": sp.Heaviside(x - y) * x + sp.Heaviside(x, 1) + sp.Rational(-7, 3),
}


@pytest.mark.parametrize("name", sorted(MORE_FUNCTIONS))
def test_more_sympy_functions_equal_lambdify(name):
    expr = MORE_FUNCTIONS[name]
    a, b = _inputs("positive", np.float64, seed=3)
    a[0, :2], b[0, :2] = (0.7, 0.0), (0.7, 0.3)   # Heaviside at 0: its second argument
    f = from_sympy(expr, [x, y])
    with np.errstate(divide="ignore"):  # x = 0 in sympy's own derivative formulas
        np.testing.assert_allclose(f(a, b), _lambdified(expr)(a, b) + 0 * a, rtol=1e-13,
                                   atol=1e-13)
        if name != "heaviside":
            want = np.stack([_lambdified(sp.diff(expr, s))(a, b) + 0 * a for s in (x, y)], -1)
            np.testing.assert_allclose(f.grad(a, b), want, rtol=1e-12, atol=1e-12)


def test_grad_and_hessian_methods_at_one_point_equal_sympy():
    expr = sp.sin(x * y) + sp.exp(x) / (1 + y ** 2)
    f = from_sympy(expr, [x, y])
    point = {x: 0.3, y: 0.7}
    grad = np.array([float(sp.diff(expr, s).subs(point)) for s in (x, y)])
    hess = np.array(sp.hessian(expr, (x, y)).subs(point), dtype=float)
    assert f.grad(0.3, 0.7).shape == (2,) and f.hessian(0.3, 0.7).shape == (2, 2)
    np.testing.assert_allclose(f.grad(0.3, 0.7), grad, rtol=1e-14)
    np.testing.assert_allclose(f.hessian(0.3, 0.7), hess, rtol=1e-13)
    # one argument an array, the other a scalar: broadcast, one row per point
    xs = np.array([0.3, -0.2, 1.1])
    assert f.hessian(xs, 0.7).shape == (3, 2, 2)
    np.testing.assert_allclose(f.hessian(xs, 0.7)[0], hess, rtol=1e-13)


def test_matrix_outputs_and_their_jacobian_equal_sympy():
    column = sp.Matrix([x * y, sp.sin(x), sp.Rational(1, 2)])
    square = sp.Matrix([[x * y, sp.exp(y)], [sp.atan(x), x + y]])
    a, b = _inputs("real", np.float64, shape=(4,), seed=5)
    for matrix in (column, square):
        f = from_sympy(matrix, [x, y])
        got = f(a, b)
        assert got.shape == (4,) + matrix.shape
        for k in range(4):
            point = {x: a[k], y: b[k]}
            np.testing.assert_allclose(got[k], np.array(matrix.subs(point), dtype=float),
                                       rtol=1e-14)
    jac = from_sympy(column, [x, y]).jacobian(a, b)
    assert jac.shape == (4, 3, 2)                 # a vector's Jacobian, as sympy's
    for k in range(4):
        want = np.array(column.jacobian([x, y]).subs({x: a[k], y: b[k]}), dtype=float)
        np.testing.assert_allclose(jac[k], want, rtol=1e-14)
    assert from_sympy(square, [x, y]).jacobian(0.3, 0.5).shape == (2, 2, 2)
    with pytest.raises(TypeError, match="Matrix.*jacobian"):
        from_sympy(column, [x, y]).grad(0.3, 0.5)


def test_from_sympy_names_an_unsupported_function_inside_a_matrix():
    with pytest.raises(llgrad.UnsupportedError, match="besselj"):   # (erf is supported)
        from_sympy(sp.Matrix([x, sp.besselj(1, y)]), [x, y])
