"""llgrad.custom_vjp, llgrad.custom_jvp and llgrad.stop_gradient: derivatives given by
hand are the ones used.

Each test checks that the rule was traced (a Python counter), that the gradient is the
rule's and not the true derivative (they differ on purpose), against a numpy oracle of
the rule or central finite differences of a differentiable rule's own formula."""
import functools

import numpy as np
import pytest
from helpers import central_gradient

import llgrad

BACKENDS = ["native", "interpret"]


# ----------------------------------------------------------------------------------
# custom_vjp: gradient clipping

CALLS = {"fwd": 0, "bwd": 0}


@llgrad.custom_vjp
def clip_gradient(x):
    return x


def _clip_fwd(x):
    CALLS["fwd"] += 1
    return x, ()


def _clip_bwd(_, g):
    CALLS["bwd"] += 1
    return (np.clip(g, -1.0, 1.0),)   # the backward rule's line


clip_gradient.defvjp(_clip_fwd, _clip_bwd)


def _model(w, x):
    """A layer whose pre-activation gradient is clipped to [-1, 1]."""
    return (5.0 * np.tanh(clip_gradient(x @ w))).sum()


@pytest.mark.parametrize("backend", BACKENDS)
def test_custom_vjp_rule_is_traced_and_its_gradient_used(backend):
    rng = np.random.default_rng(0)
    w, x = rng.normal(size=(3, 2)), rng.normal(size=(4, 3))
    before = dict(CALLS)
    grad = llgrad.grad(_model, backend=backend)(w, x)
    assert CALLS["fwd"] > before["fwd"] and CALLS["bwd"] > before["bwd"]
    h = x @ w
    expected = x.T @ np.clip(5.0 * (1 - np.tanh(h) ** 2), -1.0, 1.0)
    np.testing.assert_allclose(grad, expected, rtol=1e-12)
    true = x.T @ (5.0 * (1 - np.tanh(h) ** 2))
    assert not np.allclose(grad, true)   # the rule, not the derivative


def test_custom_vjp_rule_shows_in_the_backward_graph_under_its_source_line():
    backward = str(llgrad.grad(_model).trace(np.ones((3, 2)), np.ones((4, 3))).backward)
    line = next(k for k, text in enumerate(open(__file__), 1) if "the backward rule's line" in text)
    clip_lines = [text for text in backward.splitlines() if f"test_custom_rules.py:{line}" in text]
    assert clip_lines and all("backward" in text for text in clip_lines)
    assert any(" max " in text for text in clip_lines)


def test_a_concrete_call_is_the_function_itself():
    assert clip_gradient(3.0) == 3.0


# ----------------------------------------------------------------------------------
# custom_vjp: a norm whose gradient at zero is zero rather than NaN

@llgrad.custom_vjp
def safe_norm(x):
    return np.sqrt((x * x).sum())


def _norm_fwd(x):
    norm = safe_norm(x)
    return norm, (x, norm)


def _norm_bwd(residuals, g):
    x, norm = residuals
    return (g * x / np.where(norm > 0, norm, 1.0),)


safe_norm.defvjp(_norm_fwd, _norm_bwd)


@pytest.mark.parametrize("backend", BACKENDS)
def test_custom_vjp_safe_norm_is_zero_at_zero_and_exact_elsewhere(backend):
    g = llgrad.grad(safe_norm, backend=backend)
    np.testing.assert_array_equal(g(np.zeros(3)), np.zeros(3))
    x = np.array([3.0, -4.0, 12.0])
    np.testing.assert_allclose(g(x), x / 13.0, rtol=1e-14)
    plain = llgrad.grad(lambda x: np.sqrt((x * x).sum()), backend=backend)(np.zeros(3))
    assert np.isnan(plain).all()   # what the rule avoids


def test_custom_vjp_second_order_through_a_differentiable_rule():
    """grad of grad differentiates the inlined rule: d/dx (x/|x|)·v is (v - u(u·v))/|x|."""
    x, v = np.array([1.0, 2.0, -2.0]), np.array([0.5, -1.0, 2.0])
    second = llgrad.grad(lambda x: llgrad.grad(safe_norm)(x) @ v)(x)
    np.testing.assert_allclose(second, central_gradient(lambda x: x / np.linalg.norm(x) @ v, x),
                               rtol=1e-7)


def test_custom_vjp_refuses_forward_mode():
    with pytest.raises(llgrad.GradientError, match="safe_norm.*custom_vjp.*forward mode"):
        llgrad.jvp(safe_norm, (np.ones(3),), (np.ones(3),))


# ----------------------------------------------------------------------------------
# custom_jvp: log(1 + e^x), stable where exp overflows

JVP_CALLS = [0]


@llgrad.custom_jvp
def log1pexp(x):
    return np.log1p(np.exp(x))


@log1pexp.defjvp
def _log1pexp_jvp(primals, tangents):
    JVP_CALLS[0] += 1
    (x,), (t,) = primals, tangents
    return log1pexp(x), t * (1 - 1 / (1 + np.exp(x)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_custom_jvp_rule_gives_a_finite_gradient_where_the_formula_overflows(backend):
    x = np.array([-3.0, 0.0, 2.0, 800.0])
    before = JVP_CALLS[0]
    grad = llgrad.grad(lambda x: log1pexp(x).sum(), backend=backend)(x)
    assert JVP_CALLS[0] > before
    np.testing.assert_allclose(grad, 1 / (1 + np.exp(-x)), rtol=1e-14)
    plain = llgrad.grad(lambda x: np.log1p(np.exp(x)).sum(), backend=backend)(x)
    assert np.isnan(plain[-1])   # inf / inf without the rule


def test_custom_jvp_forward_mode_applies_the_rule():
    x, t = np.array([-1.0, 0.5, 900.0]), np.array([1.0, 2.0, 3.0])
    _, tangent = llgrad.jvp(lambda x: log1pexp(x), (x,), (t,))
    np.testing.assert_allclose(tangent, t / (1 + np.exp(-x)), rtol=1e-14)


def test_custom_jvp_second_order_matches_finite_differences_of_the_rule():
    x = np.array([-1.0, 0.3, 2.0])
    sigmoid = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    second = llgrad.grad(lambda x: llgrad.grad(lambda y: log1pexp(y).sum())(x).sum())(x)
    np.testing.assert_allclose(second, central_gradient(lambda x: sigmoid(x).sum(), x), rtol=1e-7)
    hv = llgrad.hvp(lambda x: log1pexp(x).sum())(x, np.ones(3))
    np.testing.assert_allclose(hv, second, rtol=1e-12)


# ----------------------------------------------------------------------------------
# the straight-through estimator, two ways

def _ste_round(x):
    return x + llgrad.stop_gradient(np.round(x) - x)


@llgrad.custom_vjp
def round_ste(x):
    return np.round(x)


round_ste.defvjp(lambda x: (np.round(x), ()), lambda _, g: (g,))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rounding", [_ste_round, round_ste], ids=["stop_gradient", "custom_vjp"])
def test_straight_through_estimator_rounds_forward_and_passes_the_gradient(backend, rounding):
    x = np.array([0.3, 1.7, -2.6])
    loss = lambda x: (rounding(x) ** 2).sum()  # noqa: E731
    np.testing.assert_array_equal(llgrad.jit(rounding, backend=backend)(x), np.round(x))
    np.testing.assert_allclose(llgrad.grad(loss, backend=backend)(x), 2 * np.round(x))


def test_stop_gradient_is_zero_in_every_mode_and_keeps_pytrees():
    def f(p):
        frozen = llgrad.stop_gradient(p)
        return (p["a"] * frozen["a"] + frozen["b"]).sum()
    p = {"a": np.array([1.0, 2.0]), "b": np.array(3.0)}
    np.testing.assert_allclose(llgrad.jit(f)(p), (p["a"] ** 2 + 3.0).sum())
    grad = llgrad.grad(f)(p)
    np.testing.assert_allclose(grad["a"], p["a"])    # only the unfrozen factor
    assert grad["b"] == 0.0
    _, tangent = llgrad.jvp(lambda x: llgrad.stop_gradient(x) * 2.0, (1.0,), (1.0,))
    assert tangent == 0.0
    assert llgrad.stop_gradient(2.5) == 2.5


# ----------------------------------------------------------------------------------
# mistakes

def test_a_rule_closing_over_a_traced_value_is_refused():
    def f(x, scale):
        @llgrad.custom_vjp
        def scaled(y):
            return y * 2.0
        scaled.defvjp(lambda y: (y * 2.0, ()), lambda _, g: (g * scale,))
        return scaled(x).sum()
    with pytest.raises(llgrad.UnsupportedError, match="backward rule <lambda>.*closes over"):
        llgrad.grad(f)(np.ones(2), 3.0)


def test_a_backward_rule_of_the_wrong_structure_is_refused():
    @llgrad.custom_vjp
    def f(x, y):
        return x * y
    f.defvjp(lambda x, y: (x * y, (x, y)), lambda res, g: (g * res[1],))
    with pytest.raises(llgrad.ShapeError, match="tuple of 2 cotangents"):
        llgrad.grad(f)(1.0, 2.0)


def test_a_function_without_its_rule_says_so():
    @llgrad.custom_vjp
    def f(x):
        return x
    with pytest.raises(llgrad.UnsupportedError, match=r"f\.defvjp"):
        llgrad.grad(f)(1.0)


# ----------------------------------------------------------------------------------
# nondiff_argnums: constants of the rules (JAX's convention)

@functools.partial(llgrad.custom_vjp, nondiff_argnums=(0, 1))
def clip_between(lo, hi, x):
    return x


clip_between.defvjp(lambda lo, hi, x: (x, ()),
                    lambda lo, hi, _, g: (np.clip(g, lo, hi),))


def test_custom_vjp_nondiff_arguments_reach_the_backward_rule_first(backend):
    w = np.array([0.5, -2.0, 3.0])
    x = np.array([[4.0, 1.0, -3.0], [0.1, -0.2, 2.0]])
    loss = lambda w, x: (clip_between(-0.25, 0.5, x * w) ** 2).sum()   # noqa: E731
    got = llgrad.grad(loss, backend=backend)(w, x)
    upstream = 2 * x * w                       # d loss / d (x * w), then clipped by the rule
    np.testing.assert_allclose(got, (np.clip(upstream, -0.25, 0.5) * x).sum(0), rtol=1e-12)


@functools.partial(llgrad.custom_jvp, nondiff_argnums=(0,))
def power(n, x):
    return x ** n


@power.defjvp
def _power_jvp(n, primals, tangents):
    (x,), (t,) = primals, tangents
    return x ** n, 2 * n * x ** (n - 1) * t     # twice the true derivative, on purpose


def test_custom_jvp_nondiff_arguments_reach_the_rule_first(backend):
    x = np.array([0.5, -1.5, 2.0])
    got = llgrad.grad(lambda x: power(3, x).sum(), backend=backend)(x)
    np.testing.assert_allclose(got, 2 * 3 * x ** 2, rtol=1e-12)
    _, tangent = llgrad.jvp(lambda x: power(3, x), (x,), (np.ones(3),))
    np.testing.assert_allclose(tangent, 6 * x ** 2, rtol=1e-12)
    np.testing.assert_allclose(power(3, x), x ** 3)            # concrete: the function


def test_a_traced_nondiff_argument_is_refused_with_advice():
    with pytest.raises(llgrad.UnsupportedError, match="nondiff_argnums.*ordinary argument"):
        llgrad.grad(lambda lo, x: clip_between(lo, 1.0, x).sum())(np.float64(0.1),
                                                                    np.ones(2))
