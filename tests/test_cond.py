"""llgrad.cond and llgrad.switch: a traced predicate or index chooses a branch, only that
branch runs (natively a conditional branch), and derivatives flow through it alone.

Oracles: the same function with a Python if/else on concrete values, central finite
differences on both sides of the branch, the numpy interpreter, and a branch that would
fail (NaN, a checked NaN under debug_nans) when it is not the one taken."""
import numpy as np
import pytest
from helpers import central_gradient

import llgrad

BACKENDS = ["native", "interpret"]
X = np.array([0.7, -1.3, 2.1])


def piecewise(x, w):
    """sin(x)·w where the sum is positive, log(x²)+w elsewhere (w captured)."""
    return llgrad.cond(x.sum() > 0, lambda x: np.sin(x) * w, lambda x: np.log(x * x) + w, x)


def piecewise_python(x, w):
    return np.sin(x) * w if x.sum() > 0 else np.log(x * x) + w


def _loss(x, w):
    return (piecewise(x, w) ** 2).sum()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_value_matches_python_if_else_on_both_sides(backend, sign):
    f = llgrad.jit(piecewise, backend=backend)
    np.testing.assert_allclose(f(sign * X, 1.5), piecewise_python(sign * X, 1.5), rtol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_gradient_matches_finite_differences_on_both_sides(backend, sign):
    x = sign * X
    gx, gw = llgrad.grad(_loss, argnums=(0, 1), backend=backend)(x, 1.5)
    oracle = lambda x, w: (piecewise_python(x, w) ** 2).sum()  # noqa: E731
    np.testing.assert_allclose(gx, central_gradient(lambda v: oracle(v, 1.5), x), rtol=1e-6)
    np.testing.assert_allclose(gw, central_gradient(lambda v: oracle(x, v[0]), np.array([1.5]))[0],
                               rtol=1e-6)


def test_native_equals_interpreter_for_value_and_gradient():
    for x in (X, -X):
        native = llgrad.value_and_grad(_loss)(x, 0.5)
        interpreted = llgrad.value_and_grad(_loss, backend="interpret")(x, 0.5)
        np.testing.assert_allclose(native[0], interpreted[0], rtol=1e-14)
        np.testing.assert_allclose(native[1], interpreted[1], rtol=1e-14)


def _safe_sqrt(x):
    return llgrad.cond(x > 0, np.sqrt, lambda x: x * 0.0, x)


def test_the_branch_not_taken_leaks_no_nan_into_value_or_gradient():
    """sqrt of a negative number is NaN and its derivative too (np.where's double-where
    trap); under cond the branch not taken never runs."""
    f = llgrad.value_and_grad(_safe_sqrt)
    value, grad = f(-4.0)
    assert (value, grad) == (0.0, 0.0)
    np.testing.assert_allclose(f(4.0), (2.0, 0.25))
    trapped = llgrad.grad(lambda x: np.where(x > 0, np.sqrt(x), 0.0))(-4.0)
    assert np.isnan(trapped)   # what cond avoids


def test_only_the_chosen_branch_runs_natively():
    """With NaN checks on, a branch that would make NaN stops the call only if it runs."""
    with llgrad.debug_nans():
        f = llgrad.jit(lambda x: llgrad.cond(x > 0, np.log, lambda x: -x, x))
        assert f(-2.0) == 2.0
        with pytest.raises(FloatingPointError):
            llgrad.jit(lambda x: llgrad.cond(x < 0, np.log, lambda x: -x, x))(-2.0)


@pytest.mark.parametrize("sign, runs", [(1.0, "mul"), (-1.0, "neg")])  # log(x)·x; -x
def test_the_profile_counts_calls_of_the_chosen_branch_s_kernels_only(sign, runs):
    f = llgrad.jit(lambda x: llgrad.cond(x.sum() > 0, lambda x: np.log(x) * x, lambda x: -x, x))
    profile = llgrad.profile(f, sign * np.arange(1.0, 4.0), seconds=0.01)
    called = {r["label"]["op"]: r["calls"] for r in profile.rows if r["depth"] == 1}
    assert called.get(runs) == profile.calls
    assert sum(called.values()) == profile.calls   # the other branch: no call at all


def _three_way(i, x):
    return llgrad.switch(i, [lambda x: 2 * x, lambda x: x ** 3, lambda x: np.exp(-x)], x)


@pytest.mark.parametrize("backend", BACKENDS)
def test_switch_chooses_among_three_and_clamps_the_index(backend):
    f = llgrad.jit(_three_way, backend=backend)
    g = llgrad.grad(lambda i, x: _three_way(i, x).sum(), argnums=1, backend=backend)
    x = np.array([0.5, 1.5])
    expected = {0: (2 * x, 2 + 0 * x), 1: (x ** 3, 3 * x ** 2), 2: (np.exp(-x), -np.exp(-x))}
    for i, k in [(-5, 0), (0, 0), (1, 1), (2, 2), (9, 2)]:
        np.testing.assert_allclose(f(i, x), expected[k][0], rtol=1e-14)
        np.testing.assert_allclose(g(i, x), expected[k][1], rtol=1e-14)


def test_concrete_predicate_and_index_just_call_the_function():
    assert llgrad.cond(True, lambda: 1, lambda: 2) == 1
    assert llgrad.cond(np.array(0.0), lambda: 1, lambda: 2) == 2
    assert llgrad.switch(7, [lambda: "a", lambda: "b"]) == "b"


def test_pytree_operands_and_results():
    def f(params, x):
        out = llgrad.cond(x.sum() > 0,
                          lambda p, x: {"y": p["a"] * x, "n": (x.sum(),)},
                          lambda p, x: {"y": p["b"] - x, "n": (2.0 * x.sum(),)},
                          params, x)
        return out["y"].sum() + out["n"][0]
    params = {"a": np.array(3.0), "b": np.array(4.0)}
    for x in (X, -X):
        expected = 3 * x.sum() + x.sum() if x.sum() > 0 else (4 - x).sum() + 2 * x.sum()
        assert np.isclose(llgrad.jit(f)(params, x), expected)
        grad = llgrad.grad(f)(params, x)
        assert grad["a"] == (x.sum() if x.sum() > 0 else 0.0)
        assert grad["b"] == (0.0 if x.sum() > 0 else x.size)


def test_second_order_grad_of_grad_and_hessian_vector_product():
    """d²/dx² of sin(x)·w is -sin(x)·w, of log(x²)+w is -2/x², each on its side."""
    def f(x):
        return piecewise(x, 1.5).sum()
    for x in (X, -X):
        second = -np.sin(x) * 1.5 if x.sum() > 0 else -2 / x ** 2
        np.testing.assert_allclose(llgrad.hvp(f)(x, np.ones(3)), second, rtol=1e-12)
        gg = llgrad.grad(lambda x: llgrad.grad(f)(x).sum())(x)
        np.testing.assert_allclose(gg, second, rtol=1e-12)


def test_hessian_of_a_cond_is_each_side_s_own():
    f = lambda x: piecewise(x, 1.5).sum()  # noqa: E731
    for x in (X, -X):
        second = -np.sin(x) * 1.5 if x.sum() > 0 else -2 / x ** 2
        np.testing.assert_allclose(llgrad.hessian(f)(x), np.diag(second), rtol=1e-12,
                                   atol=1e-15)


def test_forward_mode_matches_finite_differences():
    for x in (X, -X):
        _, tangent = llgrad.jvp(lambda x: _loss(x, 1.5), (x,), (np.ones(3),))
        np.testing.assert_allclose(tangent, central_gradient(lambda v: _loss(v, 1.5), x).sum(),
                                   rtol=1e-6)


def test_nested_conds():
    def f(x):
        return llgrad.cond(x > 0,
                           lambda x: llgrad.cond(x > 1, lambda x: x * x, lambda x: 3 * x, x),
                           lambda x: -x, x)
    for x, value, slope in [(2.0, 4.0, 4.0), (0.5, 1.5, 3.0), (-1.0, 1.0, -1.0)]:
        assert llgrad.jit(f)(x) == value
        assert llgrad.grad(f)(x) == slope


def test_the_printed_graph_shows_each_branch_once_indented():
    text = str(llgrad.jit(lambda x: piecewise(x, 1.5)).trace(X).ir)
    assert "= cond " in text
    assert "    def <lambda>(" in text   # both branches, as graphs of their own
    assert text.count("sin ") == 1 and text.count("log ") == 1


def test_branches_returning_different_types_name_both_functions_the_leaf_and_the_types():
    def one(x):
        return x, x.sum()

    def other(x):
        return x, x

    with pytest.raises(llgrad.ShapeError, match=r"test_cond.py.*out\[1\]") as error:
        llgrad.jit(lambda x: llgrad.cond(x.sum() > 0, one, other, x))(X)
    assert "one() gives f64[]" in str(error.value)
    assert "other() gives f64[3]" in str(error.value)


def test_branches_returning_different_structures_are_refused():
    with pytest.raises(llgrad.ShapeError, match="different structures"):
        llgrad.jit(lambda x: llgrad.cond(x.sum() > 0, lambda x: (x, x), lambda x: x, x))(X)


def test_a_predicate_that_is_not_a_scalar_is_refused():
    with pytest.raises(llgrad.ShapeError, match="test_cond.py.*scalar, got bool"):
        llgrad.jit(lambda x: llgrad.cond(x > 0, np.sin, np.cos, x))(X)


def test_a_float_switch_index_is_refused():
    with pytest.raises(llgrad.DTypeError, match="index must be an integer, got f64"):
        llgrad.jit(lambda i, x: llgrad.switch(i, [np.sin, np.cos], x))(1.0, X)


def test_python_if_on_a_traced_value_points_to_cond_and_where():
    def f(x):
        if x > 0:
            return x
        return -x
    with pytest.raises(llgrad.UnsupportedError, match=r"llgrad\.cond.*np\.where"):
        llgrad.jit(f)(1.0)
