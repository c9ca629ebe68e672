"""sympy ⇄ IR: where elementwise derivatives come from.

Each elementwise primitive states its meaning as a sympy formula in ``x`` (and ``y``);
``partials`` differentiates it once, on the primitive's first differentiation, and
``to_ir`` turns the derivative back into Builder calls.  Because the Builder
hash-conses, ``1 - tanh(x)**2`` finds the forward ``tanh`` node instead of
recomputing it: the backward graph reuses forward values with no special cases.

sympy is imported lazily so that ``import llgrad`` stays fast.
"""
from __future__ import annotations

import functools

from ..ir.primitives import PRIMITIVES


@functools.lru_cache(maxsize=None)
def _namespace():
    """Symbols and the functions sympy lacks (logistic, log1p, expm1), each with its
    derivative written in terms of itself so the backward graph can reuse it."""
    import sympy as sp

    class logistic(sp.Function):
        def fdiff(self, argindex=1):
            return logistic(self.args[0]) * (1 - logistic(self.args[0]))

    class log1p(sp.Function):
        def fdiff(self, argindex=1):
            return 1 / (1 + self.args[0])

    class expm1(sp.Function):
        def fdiff(self, argindex=1):
            return sp.exp(self.args[0])

    x, y = sp.symbols("x y", real=True)
    names = {"x": x, "y": y, "logistic": logistic, "log1p": log1p, "expm1": expm1,
             "exp": sp.exp, "log": sp.log, "sin": sp.sin, "cos": sp.cos, "tanh": sp.tanh,
             "sqrt": sp.sqrt, "Abs": sp.Abs, "sign": sp.sign, "Max": sp.Max, "Min": sp.Min}
    functions = {sp.exp: "exp", sp.log: "log", sp.sin: "sin", sp.cos: "cos",
                 sp.tanh: "tanh", sp.Abs: "abs", sp.sign: "sign", logistic: "logistic",
                 log1p: "log1p", expm1: "expm1"}
    return sp, names, functions


def formula(prim_name: str):
    """The sympy expression of an elementwise primitive, and its operand symbols."""
    sp, names, _ = _namespace()
    expr = sp.sympify(PRIMITIVES[prim_name].formula, locals=names)
    symbols = [names["x"], names["y"]][: _arity(prim_name)]
    return expr, symbols


def _arity(prim_name):
    return 2 if "y" in PRIMITIVES[prim_name].formula else 1


@functools.lru_cache(maxsize=None)
def partials(prim_name: str):
    """d formula / d operand for each operand; None where the derivative is zero
    almost everywhere (sign, comparisons), so no adjoint is ever materialised."""
    sp, _, _ = _namespace()
    expr, symbols = formula(prim_name)
    out = []
    for s in symbols:
        d = sp.powsimp(sp.diff(expr, s).replace(sp.DiracDelta, lambda *a: sp.Integer(0)))
        out.append(None if d == 0 else d)
    return tuple(out)


def to_ir(b, expr, env: dict, type_):
    """Build ``expr`` with Builder ``b``; ``env`` maps symbols to nodes of type ``type_``."""
    sp, _, functions = _namespace()

    def const(v):
        return b.full(float(v), type_)

    def product(factors):
        result = None
        for f in factors:
            result = f if result is None else b.mul(result, f)
        return result

    def build(e):
        if e in env:
            return env[e]
        if e.is_Number:
            return const(e)
        if e.is_Add:
            pos, neg = [], []
            for term in e.as_ordered_terms():
                coeff, rest = term.as_coeff_Mul()
                if coeff < 0:
                    neg.append(build(-term))
                else:
                    pos.append(build(term))
            result = pos[0] if pos else b.neg(neg.pop(0))
            for t in pos[1:]:
                result = b.add(result, t)
            for t in neg:
                result = b.sub(result, t)
            return result
        if e.is_Mul:
            coeff, rest = e.as_coeff_Mul()
            if coeff == -1:
                return b.neg(build(rest))
            num, den = [], []
            for f in sp.Mul.make_args(e):
                if f.is_Pow and f.exp.is_Number and f.exp < 0:
                    den.append(build(f.base ** -f.exp))
                elif f != 1:
                    num.append(const(f) if f.is_Number else build(f))
            top = product(num) if num else const(1)
            return b.div(top, product(den)) if den else top
        if e.is_Pow:
            base, exp = e.base, e.exp
            if exp == sp.Rational(1, 2):
                return b.sqrt(build(base))
            if exp.is_Integer and 1 <= exp <= 4:
                return product([build(base)] * int(exp))
            if exp.is_Number and exp < 0:
                return b.div(const(1), build(base ** -exp))
            return b.pow(build(base), build(exp))
        if isinstance(e, sp.Heaviside):
            # d max(x, y)/dx: 1 where x > y, 0 where x < y, ties share equally (as JAX)
            z = build(e.args[0])
            zero = const(0)
            return b.select(b.gt(z, zero), const(1),
                            b.select(b.eq(z, zero), const(0.5), zero))
        if isinstance(e, (sp.Max, sp.Min)):
            op = b.max if isinstance(e, sp.Max) else b.min
            args = [build(a) for a in e.args]
            result = args[0]
            for a in args[1:]:
                result = op(result, a)
            return result
        if e.func in functions:
            return b.emit(functions[e.func], build(e.args[0]))
        raise NotImplementedError(f"no IR translation for sympy expression {e}")

    return build(expr)
