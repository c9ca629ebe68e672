"""Scalar functions: llgrad's derivative equals sympy's symbolic derivative.

The same function is written twice, once in numpy (what llgrad traces) and once in
sympy (the oracle), so the two share no code."""
import numpy as np
import pytest
import sympy as sp

import llgrad
import llgrad.numpy as lnp

x, y = sp.symbols("x y", real=True)

UNARY = {
    "neg": (lambda a: -a, -x),
    "exp": (np.exp, sp.exp(x)),
    "log": (np.log, sp.log(x)),
    "log1p": (np.log1p, sp.log(1 + x)),
    "expm1": (np.expm1, sp.exp(x) - 1),
    "sin": (np.sin, sp.sin(x)),
    "cos": (np.cos, sp.cos(x)),
    "tanh": (np.tanh, sp.tanh(x)),
    "sigmoid": (lnp.sigmoid, 1 / (1 + sp.exp(-x))),
    "sqrt": (np.sqrt, sp.sqrt(x)),
    "abs": (np.abs, sp.Abs(x)),
    "square": (np.square, x ** 2),
    "cube": (lambda a: a ** 3, x ** 3),
    "reciprocal": (lambda a: 1 / a, 1 / x),
    "chain": (lambda a: (2 * a + 3) ** 2, (2 * x + 3) ** 2),
    "nested": (lambda a: np.sin(np.exp(np.tanh(a)) * a) / (1 + a * a),
               sp.sin(sp.exp(sp.tanh(x)) * x) / (1 + x ** 2)),
    "log_sqrt_pow": (lambda a: np.log(np.sqrt(a) + a ** 1.5), sp.log(sp.sqrt(x) + x ** 1.5)),
    "reuse": (lambda a: np.sin(a) * np.sin(a) + np.sin(a), sp.sin(x) ** 2 + sp.sin(x)),
    # inverse functions, their arguments scaled into their domains for every point
    "arcsin": (lambda a: np.arcsin(a / 2), sp.asin(x / 2)),
    "arccos": (lambda a: np.arccos(a / 2), sp.acos(x / 2)),
    "arctan": (np.arctan, sp.atan(x)),
    "arcsinh": (np.arcsinh, sp.asinh(x)),
    "arccosh": (lambda a: np.arccosh(a + 1), sp.acosh(x + 1)),
    "arctanh": (lambda a: np.arctanh(a / 2), sp.atanh(x / 2)),
}
POINTS = [0.3, 0.9, 1.7]


@pytest.mark.parametrize("name", sorted(UNARY))
@pytest.mark.parametrize("point", POINTS)
def test_derivative_equals_sympy_diff(name, point, backend):
    fn, expr = UNARY[name]
    expected = float(sp.diff(expr, x).subs(x, point).evalf(30))
    got = llgrad.grad(fn, backend=backend)(np.float64(point))
    assert got == pytest.approx(expected, rel=1e-13, abs=1e-14)


BINARY = {
    "add": (lambda a, b: a + b, x + y),
    "sub": (lambda a, b: a - b, x - y),
    "mul": (lambda a, b: a * b, x * y),
    "div": (lambda a, b: a / b, x / y),
    "pow": (lambda a, b: a ** b, x ** y),
    "max": (np.maximum, sp.Max(x, y)),
    "min": (np.minimum, sp.Min(x, y)),
    "mixed": (lambda a, b: np.tanh(a * b) * np.exp(b - a) + np.log(a + b * b),
              sp.tanh(x * y) * sp.exp(y - x) + sp.log(x + y ** 2)),
    "arctan2": (np.arctan2, sp.atan2(x, y)),
}


@pytest.mark.parametrize("name", sorted(BINARY))
@pytest.mark.parametrize("point", [(0.4, 1.3), (1.9, 0.7)])
def test_partial_derivatives_equal_sympy_diff(name, point, backend):
    fn, expr = BINARY[name]
    subs = {x: point[0], y: point[1]}
    expected = [float(sp.diff(expr, s).subs(subs).evalf(30)) for s in (x, y)]
    got = llgrad.grad(fn, argnums=(0, 1), backend=backend)(*map(np.float64, point))
    assert list(got) == pytest.approx(expected, rel=1e-13, abs=1e-14)
