"""``llgrad.fori_loop``: values against Python loops, gradients against the unrolled
program and central differences, static and traced bounds, errors."""
import numpy as np
import pytest

import llgrad
from llgrad.check import numerical_grad

X0 = np.array([0.3, -0.8, 1.1])


def damped(i, state):
    """One step of a damped, index-dependent recurrence with an integer counter."""
    count, x, a = state
    return count + i, np.sin(x) * a + 0.1 * i * x, a


def run_fori(x0, a, lower=2, upper=9):
    count, x, _ = llgrad.fori_loop(lower, upper, damped, (0, x0, a))
    return np.sum(x ** 2) + 0.01 * count


def run_python(x0, a, lower=2, upper=9):
    state = (0, x0, a)
    for i in range(lower, upper):
        state = damped(i, state)
    return np.sum(state[1] ** 2) + 0.01 * state[0]


def test_values_match_a_python_loop():
    np.testing.assert_allclose(llgrad.jit(run_fori)(X0, 0.9), run_python(X0, 0.9),
                               rtol=1e-12)
    # the loop variable: i runs from lower, and an empty range leaves the carry alone
    assert llgrad.jit(lambda x: run_fori(x, 0.9, 5, 5))(X0) == pytest.approx(np.sum(X0 ** 2))


def test_gradient_matches_the_unrolled_program_and_finite_differences():
    got = llgrad.grad(run_fori, argnums=(0, 1))(X0, 0.9)
    unrolled = llgrad.grad(run_python, argnums=(0, 1))(X0, 0.9)
    for k, (g, u) in enumerate(zip(got, unrolled)):
        np.testing.assert_allclose(g, u, rtol=1e-11, atol=1e-14)
        np.testing.assert_allclose(g, numerical_grad(run_python, (X0, 0.9), k, 1e-6),
                                   rtol=1e-6, atol=1e-8)


def test_eager_call_compiles_and_matches_python():
    assert llgrad.fori_loop(0, 6, lambda i, c: c * 2 + i, 1) == 2 ** 6 + sum(
        i * 2 ** (5 - i) for i in range(6))


def _traced_bounds(x0, a, k):
    """The trip count is data: the sum of an int array argument."""
    return llgrad.fori_loop(0, np.sum(k), lambda i, x: np.sin(x) * a + 0.1 * i * x, x0,
                            max_steps=50).sum()


def _python_bounds(x0, a, n):
    x = x0
    for i in range(n):
        x = np.sin(x) * a + 0.1 * i * x
    return x.sum()


@pytest.mark.parametrize("k", [np.array([2, 3]), np.array([0, 0]), np.array([4, 7])])
def test_traced_bounds_run_the_trip_count_of_the_data(k):
    n = int(k.sum())
    np.testing.assert_allclose(llgrad.jit(_traced_bounds)(X0, 0.9, k),
                               _python_bounds(X0, 0.9, n), rtol=1e-12)
    got = llgrad.grad(_traced_bounds, argnums=(0, 1))(X0, 0.9, k)
    for j, g in enumerate(got):
        np.testing.assert_allclose(g, numerical_grad(lambda x, a: _python_bounds(x, a, n),
                                                     (X0, 0.9), j, 1e-6),
                                   rtol=1e-6, atol=1e-8)


def test_bad_bounds_and_carries_are_clear_errors():
    with pytest.raises(llgrad.DTypeError, match="upper bound must be an int"):
        llgrad.jit(lambda x: llgrad.fori_loop(0, 2.5, lambda i, c: c, x))(X0)
    with pytest.raises(llgrad.DTypeError, match="upper bound must be an int"):
        llgrad.jit(lambda x, n: llgrad.fori_loop(0, n, lambda i, c: c, x))(X0, 2.0)

    def to_float32(i, c):
        return c.astype(np.float32)
    with pytest.raises(llgrad.DTypeError, match=r"to_float32\(\).*carry.*f64\[3\].*f32\[3\]"):
        llgrad.jit(lambda x: llgrad.fori_loop(0, 3, to_float32, x))(X0)
