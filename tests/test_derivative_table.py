"""The derivative recipes llgrad ships (compiler/autodiff/derivatives.json) against sympy.

The table spares every process the sympy import and differentiation of a first
compile, so it must be current and right: each primitive's recipe, replayed into IR and
run by the interpreter, equals sympy's own derivative of the formula written in plain
sympy (logistic, log1p and expm1 spelled out), evaluated by lambdify."""
import os
import subprocess
import sys

import numpy as np
import pytest
import sympy as sp

from llgrad.compiler.autodiff import derivatives as derivative_table
from llgrad.compiler.frontend import sympy_io as sympy_frontend
from llgrad.ir.graph import Builder, Graph
from llgrad.ir.interpret import interpret
from llgrad.ir.primitives import PRIMITIVES
from llgrad.ir.types import TensorType

ELEMENTWISE = sorted(name for name, p in PRIMITIVES.items() if p.formula)
PLAIN = {"logistic": lambda a: 1 / (1 + sp.exp(-a)), "log1p": lambda a: sp.log(1 + a),
         "expm1": lambda a: sp.exp(a) - 1}
# the rounding functions: constant between their steps, so their derivative is 0 (the
# steps' deltas dropped, as sign's below); lambdify evaluates them by numpy's of that name
PLAIN.update({name: type(name, (sp.Function,), {"fdiff": lambda self, argindex=1: 0})
              for name in ("floor", "ceil", "rint", "trunc")})


def test_the_shipped_table_holds_every_formula_as_it_is_now():
    shipped = derivative_table.shipped()
    stale = [name for name in ELEMENTWISE
             if shipped.get(name, {}).get("formula") != PRIMITIVES[name].formula
             or shipped[name].get("partials") != (list(PRIMITIVES[name].partials or ()) or None)]
    assert not stale, (f"derivatives.json is stale for {stale}: run python -c \"from "
                       f"llgrad.compiler.autodiff import derivatives as t; t.write()\"")
    assert set(shipped) == set(ELEMENTWISE)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_each_shipped_recipe_is_sympys_derivative(name):
    x, y = sp.symbols("x y", real=True)
    expr = sp.sympify(PRIMITIVES[name].formula, locals={"x": x, "y": y, **PLAIN})
    symbols = [x, y] if "y" in PRIMITIVES[name].formula else [x]
    rng = np.random.default_rng(len(name))
    n = 64
    points = [np.where(rng.random(n) < 0.5, rng.uniform(0.1, 0.9, n), rng.uniform(1.1, 3.0, n))
              * rng.choice([-1.0, 1.0], n) for _ in symbols]
    type_ = TensorType((n,), "float64")
    checked = 0
    for recipe, s in zip(derivative_table.shipped()[name]["recipes"], symbols):
        derivative = sp.diff(expr, s).replace(sp.DiracDelta, lambda *a: sp.Integer(0))
        with np.errstate(all="ignore"):
            want = np.broadcast_to(sp.lambdify(symbols, derivative, ["numpy", "scipy"])(*points), (n,))
        if recipe is None:
            np.testing.assert_array_equal(want[np.isfinite(want)], 0.0)
            continue
        b = Builder()
        params = [b.parameter(index=k, type=type_, name=str(sym)) for k, sym in enumerate(symbols)]
        result = sympy_frontend.replay(b, recipe, dict(zip(["x", "y"], params)), type_)
        with np.errstate(all="ignore"):
            got = interpret(Graph(params, [b.broadcast_to(result, (n,))]), *points)[0]
        ok = np.isfinite(want)
        np.testing.assert_allclose(got[ok], want[ok], rtol=1e-12, atol=1e-14)
        checked += int(ok.sum())
    assert checked > 0 or all(r is None for r in derivative_table.shipped()[name]["recipes"])


def test_a_fresh_process_differentiates_without_importing_sympy(tmp_path):
    script = ("import sys, numpy as np, llgrad\n"
              "g = llgrad.grad(lambda x: (np.tanh(x) * np.sin(x) ** 2 / x).sum())"
              "(np.linspace(0.5, 1.5, 4))\n"
              "print(repr(g.tolist())); print('sympy' in sys.modules)\n")
    env = dict(os.environ, LLGRAD_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, check=True, timeout=120).stdout.splitlines()
    assert out[-1] == "False"
    x = np.linspace(0.5, 1.5, 4)
    expected = ((1 - np.tanh(x) ** 2) * np.sin(x) ** 2 / x
                + np.tanh(x) * 2 * np.sin(x) * np.cos(x) / x
                - np.tanh(x) * np.sin(x) ** 2 / x ** 2)
    np.testing.assert_allclose(eval(out[0]), expected, rtol=1e-13)


def test_an_edited_formula_is_derived_afresh(monkeypatch):
    monkeypatch.setitem(derivative_table.shipped(), "sin",
                        {"formula": "an older formula", "recipes": [None]})
    monkeypatch.setattr(derivative_table, "_derived", {})
    (recipe,) = derivative_table.recipes("sin")
    assert recipe is not None and recipe["steps"][-1][:2] == ["emit", "cos"]
