"""sympy ⇄ IR: where elementwise derivatives come from, and the sympy bridge.

Each elementwise primitive states its meaning as a sympy formula in ``x`` (and ``y``);
``partials`` differentiates it and ``record_partials`` turns the derivative into
replayable Builder steps, once, when ``derivative_table`` is written (or in memory for
a formula edited since); ``replay`` builds them at every differentiation.  Because the
Builder hash-conses, ``1 - tanh(x)**2`` finds the forward ``tanh`` node instead of
recomputing it: the backward graph reuses forward values with no special cases.

The same two directions serve users: ``to_sympy`` reads an elementwise Graph back
as a sympy expression (each node's formula with its operands substituted), and
``to_ir`` builds any sympy expression made of the functions the primitive table
knows (``llgrad.from_sympy``).  Which sympy function is which primitive is derived
from the formulas themselves, so a new elementwise primitive joins both directions
by its one record.

sympy is imported lazily so that ``import llgrad`` stays fast.
"""
from __future__ import annotations

import functools

import numpy as np

from llgrad.ir.errors import UnsupportedError
from llgrad.ir.graph import Graph, parameter_identifiers
from llgrad.ir.primitives import PRIMITIVES
from llgrad.ir.walk import topological_order


@functools.lru_cache(maxsize=None)
def _namespace():
    """Symbols and the functions sympy lacks (logistic, log1p, expm1), each with its
    derivative written in terms of itself so the backward graph can reuse it, and the
    rounding functions (floor, ceil, rint, trunc), whose derivatives are 0."""
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

    class digamma(sp.Function):
        """psi, lgamma's derivative: the ``digamma`` primitive, whose own derivative
        (trigamma) llgrad refuses (its record's rules raise GradientError)."""

    def step(name):
        """A piecewise-constant function: its derivative is 0 almost everywhere (the
        steps' Dirac deltas dropped, as sign's are in ``partials``)."""
        return type(name, (sp.Function,), {"fdiff": lambda self, argindex=1: sp.Integer(0)})

    x, y = sp.symbols("x y", real=True)
    # every other name in a formula is sympy's own function of that name
    names = {"x": x, "y": y, "logistic": logistic, "log1p": log1p, "expm1": expm1,
             "digamma": digamma,
             **{n: step(n) for n in ("floor", "ceil", "rint", "trunc")}}
    return sp, names


def formula(prim_name: str):
    """The sympy expression of an elementwise primitive, and its operand symbols."""
    sp, names = _namespace()
    expr = sp.sympify(PRIMITIVES[prim_name].formula, locals=names)
    symbols = [names["x"], names["y"]][: _arity(prim_name)]
    return expr, symbols


def _arity(prim_name):
    return 2 if "y" in PRIMITIVES[prim_name].formula else 1


@functools.lru_cache(maxsize=None)
def _tables():
    """The sympy side of the primitive table, as data.

    ``functions``: sympy function -> unary primitive, for every formula that is one
    function applied to ``x`` (exp, log, ..., abs, sign, logistic); read from the
    formulas, never listed by hand.  ``relations``: sympy relational -> comparison.
    ``composites``: sympy functions with no primitive, spelt with ones that have."""
    sp, names = _namespace()
    functions = {}
    for name, prim in PRIMITIVES.items():
        if prim.symbolic:
            expr, symbols = formula(name)
            if expr.is_Function and expr.args == tuple(symbols) and expr.func not in (
                    sp.Max, sp.Min):  # n-ary in sympy: chained in to_ir
                functions[expr.func] = name
    functions[names["digamma"]] = "digamma"   # no formula: its derivative is refused
    relations = {sp.StrictLessThan: "lt", sp.LessThan: "le", sp.StrictGreaterThan: "gt",
                 sp.GreaterThan: "ge", sp.Equality: "eq", sp.Unequality: "ne"}
    expm1 = names["expm1"]
    sinh = lambda a: (expm1(a) - expm1(-a)) / 2  # noqa: E731  (no cancellation near 0)
    cosh = lambda a: (sp.exp(a) + sp.exp(-a)) / 2  # noqa: E731
    composites = {sp.floor: names["floor"], sp.ceiling: names["ceil"],
                  sp.tan: lambda a: sp.sin(a) / sp.cos(a),
                  sp.cot: lambda a: sp.cos(a) / sp.sin(a),
                  sp.sec: lambda a: 1 / sp.cos(a), sp.csc: lambda a: 1 / sp.sin(a),
                  sp.sinh: sinh, sp.cosh: cosh,
                  # loggamma's derivative, polygamma(0, x); higher orders untranslated
                  sp.polygamma: lambda n, a: (names["digamma"](a) if n == 0
                                              else sp.Function("polygamma")(n, a)),
                  sp.coth: lambda a: cosh(a) / sinh(a),
                  sp.sech: lambda a: 1 / cosh(a), sp.csch: lambda a: 1 / sinh(a),
                  # sympy's acot takes values in (-pi/2, pi/2]; atan(1/a) would lose
                  # its derivative at 0
                  sp.acot: lambda a: sp.Piecewise((sp.pi / 2 - sp.atan(a), a >= 0),
                                                  (-sp.pi / 2 - sp.atan(a), True))}
    return functions, relations, composites


@functools.lru_cache(maxsize=None)
def partials(prim_name: str):
    """d formula / d operand for each operand; None where the derivative is zero
    almost everywhere (sign, comparisons), so no adjoint is ever materialised.  A
    record's own ``partials`` (pow) are taken as they are written."""
    sp, names = _namespace()
    stated = PRIMITIVES[prim_name].partials
    if stated:
        return tuple(sp.sympify(d, locals=names) for d in stated)
    expr, symbols = formula(prim_name)
    out = []
    for s in symbols:
        d = sp.powsimp(sp.diff(expr, s).replace(sp.DiracDelta, lambda *a: sp.Integer(0)))
        out.append(None if d == 0 else d)
    return tuple(out)


class _Recorder:
    """Stands in for a Builder while ``to_ir`` runs once on a derivative: the steps it
    records replay later through a real Builder, with no sympy involved."""

    def __init__(self):
        self.steps = []

    def _add(self, step) -> int:
        self.steps.append(step)
        return len(self.steps) - 1

    def full(self, value, type_):
        return self._add(["full", value, type_.dtype == "bool"])

    def emit(self, op, *inputs, **attrs):
        assert not attrs, "derivative formulas use primitives without attributes"
        return self._add(["emit", op, list(inputs)])

    def __getattr__(self, name):
        return lambda *inputs: self.emit(name, *inputs)


def record_partials(prim_name: str):
    """The partials of a primitive's formula as replayable Builder steps (see
    derivative_table, which ships them)."""
    from llgrad.ir.types import TensorType
    _, symbols = formula(prim_name)
    env = dict(zip(symbols, ["x", "y"]))
    out = []
    for d in partials(prim_name):
        if d is None:
            out.append(None)
            continue
        recorder = _Recorder()
        result = to_ir(recorder, d, env, TensorType((), "float64"))
        out.append({"steps": recorder.steps, "result": result})
    return out


def replay(b, recipe, operands: dict, type_):
    """Build a recorded derivative with Builder ``b``; ``operands`` maps "x"/"y" to nodes."""
    values = []
    for step in recipe["steps"]:
        if step[0] == "full":
            values.append(b.full(step[1], type_.with_dtype("bool") if step[2] else type_))
        else:
            values.append(b.emit(step[1], *[operands[r] if isinstance(r, str) else values[r]
                                            for r in step[2]]))
    ref = recipe["result"]
    return operands[ref] if isinstance(ref, str) else values[ref]


def times_partial(b, recipe, operands: dict, type_, factor):
    """``factor`` times the recorded partial: the chain-rule step both modes take (an
    adjoint in reverse mode, a tangent in forward mode); a partial of 1 or -1 builds
    no multiplication."""
    constant = constant_recipe_value(recipe)
    if constant == 1:
        return factor
    if constant == -1:
        return b.neg(factor)
    return b.mul(factor, replay(b, recipe, operands, type_))


def constant_recipe_value(recipe):
    """The value of a recipe that is just a constant (d(x+y)/dx = 1), else None."""
    steps, ref = recipe["steps"], recipe["result"]
    if isinstance(ref, int) and len(steps) == 1 and steps[0][0] == "full":
        return steps[0][1]
    return None


def to_ir(b, expr, env: dict, type_):
    """Build ``expr`` with Builder ``b``; ``env`` maps symbols to nodes of type ``type_``.

    Raises UnsupportedError, naming it, for a sympy function with no translation."""
    sp, _ = _namespace()
    functions, relations, composites = _tables()
    bool_type = type_.with_dtype("bool")

    def const(v):
        try:
            return b.full(float(v), type_)
        except TypeError:
            raise UnsupportedError(f"the sympy constant {v} is not a real number") from None

    def product(factors):
        result = None
        for f in factors:
            result = f if result is None else b.mul(result, f)
        return result

    def chain(op, args):
        result = args[0]
        for a in args[1:]:
            result = op(result, a)
        return result

    def piecewise(pairs):
        """Piecewise((v1, c1), (v2, c2), ...): the first true condition wins; where
        none holds (no ``True`` branch) the value is nan, as sympy leaves it undefined."""
        (value, cond), rest = pairs[0], pairs[1:]
        if cond == sp.true:
            return build(value)
        otherwise = piecewise(rest) if rest else const(float("nan"))
        return b.select(build(cond), build(value), otherwise)

    def build(e):
        if e in memo:
            return memo[e]
        memo[e] = node = _build(e)
        return node

    def _build(e):
        if e.is_Number or (e.is_number and not e.is_Boolean):
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
            # d max(x, y)/dx: 1 where x > y, 0 where x < y, ties share equally (as JAX);
            # a user's Heaviside(z, h0) says what it is at 0
            z = build(e.args[0])
            zero = const(0)
            at_zero = const(e.args[1]) if len(e.args) > 1 else const(0.5)
            return b.select(b.gt(z, zero), const(1),
                            b.select(b.eq(z, zero), at_zero, zero))
        if isinstance(e, (sp.Max, sp.Min)):
            return chain(b.max if isinstance(e, sp.Max) else b.min, [build(a) for a in e.args])
        if isinstance(e, sp.Piecewise):
            return piecewise(e.args)
        if e.func in relations:
            return b.emit(relations[e.func], build(e.lhs), build(e.rhs))
        if e in (sp.true, sp.false):
            return b.full(bool(e), bool_type)
        if isinstance(e, (sp.And, sp.Or)):
            false, true = b.full(False, bool_type), b.full(True, bool_type)
            combine = ((lambda p, q: b.select(p, q, false)) if isinstance(e, sp.And)
                       else (lambda p, q: b.select(p, true, q)))
            return chain(combine, [build(a) for a in e.args])
        if isinstance(e, sp.Not):
            return b.eq(build(e.args[0]), b.full(False, bool_type))
        if e.func in functions:
            return b.emit(functions[e.func], *[build(a) for a in e.args])
        if e.func in composites:
            return build(composites[e.func](*e.args))
        if e.is_Symbol:
            raise UnsupportedError(f"the sympy symbol {e} is not one of the function's "
                                   f"arguments")
        known = sorted({f.__name__ for f in (*functions, *composites)}
                       | {"Pow", "sqrt", "Max", "Min", "Piecewise", "Heaviside"})
        raise UnsupportedError(
            f"the sympy function {getattr(e.func, '__name__', e.func)} has no llgrad "
            f"translation (in {e}); supported: + - * / **, {', '.join(known)}, "
            f"comparisons, And/Or/Not and real constants")

    memo = dict(env)
    return build(expr)


# ----------------------------------------------------------------------------------
# IR -> sympy

def _symbol_names(params) -> dict:
    return {p.id: name for p, name in zip(params, parameter_identifiers(params))}


def _constant(value: np.ndarray):
    """A scalar constant as an exact sympy number: integers stay integers, floats are
    the shortest decimal that rounds back to them in their own dtype (0.1, not
    0.1000000000000000055...), so ``sp.simplify`` can cancel them."""
    sp, _ = _namespace()
    v = value.item()
    if isinstance(v, bool):
        return sp.true if v else sp.false
    if isinstance(v, int) or float(v).is_integer():
        return sp.Integer(int(v))
    if v != v:
        return sp.nan
    if v in (float("inf"), float("-inf")):
        return sp.oo if v > 0 else -sp.oo
    return sp.Rational(np.format_float_positional(value[()], unique=True))


@functools.lru_cache(maxsize=None)
def _structural_rules():
    """How the non-formula nodes of an elementwise graph read in sympy, one row each:
    ``rule(node, operand expressions, symbol names) -> expression``, or None where the
    node has no per-element formula."""
    sp, _ = _namespace()
    _, relations, _ = _tables()
    rules = {prim: (lambda rel: lambda node, a, names: rel(*a))(rel)
             for rel, prim in relations.items()}

    def convert(node, a, names):
        source = node.inputs[0].dtype
        if source == "bool":  # True -> 1, False -> 0
            return sp.Piecewise((sp.Integer(1), a[0]), (sp.Integer(0), True))
        if node.type.is_float or source == node.dtype:  # to float: the same number
            return a[0]
        return None  # float -> int truncates: no identity

    rules.update({
        "parameter": lambda node, a, names: sp.Symbol(names[node.id], real=True),
        "constant": lambda node, a, names: (_constant(node.attrs["value"])
                                            if node.attrs["value"].ndim == 0 else None),
        "broadcast_in_dim": lambda node, a, names: a[0],
        "reshape": lambda node, a, names: a[0],
        "select": lambda node, a, names: sp.Piecewise((a[1], a[0]), (a[2], True)),
        "convert": convert,
    })
    return rules


def to_sympy(graph: Graph, output: int = 0, *, standard: bool = True):
    """The sympy expression of ``graph.outputs[output]``, per element.

    The graph must be elementwise: elementwise primitives (their formulas, operands
    substituted), scalar constants, comparisons (relationals), ``select`` (Piecewise)
    and ``convert`` to float (the identity; from bool, 1 or 0).  ``broadcast_in_dim``
    and ``reshape`` are the identity too: the expression states what holds for each
    element after broadcasting.  Parameters become real Symbols named after the
    arguments.  Shared nodes are converted once.  ``standard=True`` spells logistic,
    log1p and expm1 in standard sympy (1/(1 + exp(-x)), log(1 + x), exp(x) - 1) so
    that ``sp.simplify`` understands them; ``standard=False`` keeps llgrad's own
    functions, which ``from_sympy`` also reads.
    """
    _, names = _namespace()
    x, y = names["x"], names["y"]
    rules = _structural_rules()
    symbol_names = _symbol_names(graph.inputs)
    root = graph.outputs[output]
    memo: dict = {}
    for node in topological_order([root]):
        args = [memo[i.id] for i in node.inputs]
        if PRIMITIVES[node.op].symbolic:
            expr = _reading(node.op, standard).xreplace(dict(zip((x, y), args)))
        else:
            rule = rules.get(node.op)
            expr = rule(node, args, symbol_names) if rule else None
        if expr is None:
            what = "an array constant" if node.op == "constant" else node.op
            raise UnsupportedError(
                f"to_sympy covers elementwise graphs (elementwise primitives, scalar "
                f"constants, broadcasts, comparisons, select); output {output} of "
                f"{graph.name} uses {what} ({node.type}), which has no per-element formula")
        memo[node.id] = expr
    return memo[root.id]


@functools.lru_cache(maxsize=None)
def _reading(prim_name: str, standard: bool):
    """The formula ``to_sympy`` substitutes operands into.  Standard spellings are
    put into the one-node formula, not the finished expression, whose tree can be
    exponentially larger than the graph it came from."""
    sp, names = _namespace()
    expr = formula(prim_name)[0]
    if standard:
        x = names["x"]
        expr = expr.xreplace({names["logistic"](x): 1 / (1 + sp.exp(-x)),
                              names["log1p"](x): sp.log(1 + x),
                              names["expm1"](x): sp.exp(x) - 1})
    return expr
