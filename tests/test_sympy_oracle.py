"""Scalar functions: llgrad's derivative equals sympy's symbolic derivative.

The same function is written twice, once in numpy (what llgrad traces) and once in
sympy (the oracle), so the two share no code: the tables UNARY and BINARY in
helpers.py, which test_higher_order differentiates again."""
import numpy as np
import pytest
import sympy as sp
from helpers import BINARY, UNARY, x, y

import llgrad

POINTS = [0.3, 0.9, 1.7]


@pytest.mark.parametrize("name", sorted(UNARY))
@pytest.mark.parametrize("point", POINTS)
def test_derivative_equals_sympy_diff(name, point, backend):
    fn, expr = UNARY[name]
    expected = float(sp.diff(expr, x).subs(x, point).evalf(30))
    got = llgrad.grad(fn, backend=backend)(np.float64(point))
    assert got == pytest.approx(expected, rel=1e-13, abs=1e-14)


@pytest.mark.parametrize("name", sorted(BINARY))
@pytest.mark.parametrize("point", [(0.4, 1.3), (1.9, 0.7)])
def test_partial_derivatives_equal_sympy_diff(name, point, backend):
    fn, expr = BINARY[name]
    subs = {x: point[0], y: point[1]}
    expected = [float(sp.diff(expr, s).subs(subs).evalf(30)) for s in (x, y)]
    got = llgrad.grad(fn, argnums=(0, 1), backend=backend)(*map(np.float64, point))
    assert list(got) == pytest.approx(expected, rel=1e-13, abs=1e-14)
