"""sympy expressions as llgrad functions: ``from_sympy`` (the other direction is
``llgrad.grad(f).trace(x).to_sympy()``).

    x, y = sp.symbols("x y", real=True)
    f = llgrad.from_sympy(sp.sin(x) * y, [x, y])
    f(np.linspace(0, 1, 5), 2.0)                   # elementwise, numpy broadcasting
    llgrad.grad(f, argnums=(0, 1))(0.3, 2.0)       # (2 cos 0.3, sin 0.3), native code

Inside a trace the function builds IR like any numpy function (``to_ir`` of the
expression over the arguments, broadcast and promoted to float as numpy_ops does);
outside one it runs through ``llgrad.jit`` of itself, so plain calls are native code
too, compiled once per argument signature.
"""
from __future__ import annotations

from typing import Sequence

from .api import jit
from .compiler import numpy_ops
from .compiler.sympy_frontend import _namespace, to_ir
from .compiler.trace import current
from .ir.graph import Builder
from .ir.types import TensorType

_SCALAR = TensorType((), "float64")


def from_sympy(expr, symbols: Sequence, *, backend: str = "native", name: str | None = None):
    """A function of ``len(symbols)`` arrays computing ``expr`` elementwise, with numpy
    broadcasting; the result is float32 where numpy would give float32, else float64.

    ``expr`` may use + - * / ** (any exponent), rational and real constants (pi, E),
    exp, log, sin, cos, tan, tanh, sqrt, Abs, sign, Max, Min, Piecewise with
    relational conditions (and And/Or/Not), and llgrad's own logistic, log1p and
    expm1 (as ``to_sympy(..., standard=False)`` writes them).  Anything else raises
    UnsupportedError naming the sympy function, here rather than at the first call.
    ``backend`` is the backend of calls made outside a trace ("native" or "interpret").
    """
    sp, _ = _namespace()
    expr = sp.sympify(expr)
    symbols = tuple(symbols)
    if not all(isinstance(s, sp.Symbol) for s in symbols) or len(set(symbols)) != len(symbols):
        raise TypeError(f"from_sympy: symbols must be distinct sympy Symbols, got {symbols}")
    check = Builder()
    _build(check, expr, symbols, [check.parameter(index=i, type=_SCALAR, name=str(s))
                                  for i, s in enumerate(symbols)])

    def build(*args):
        if len(args) != len(symbols):
            raise TypeError(f"{fn.__name__}() takes {len(symbols)} arguments "
                            f"({', '.join(map(str, symbols))}), got {len(args)}")
        dtype = numpy_ops._float_dtype(*args) if args else "float64"
        return numpy_ops._wrap(_build(current().builder, expr, symbols,
                                      numpy_ops._operands(args, dtype)))

    build.__name__ = build.__qualname__ = name or "sympy_function"
    fn = numpy_ops.op("from_sympy", jit(build, backend=backend))(build)
    fn.__doc__ = f"{expr}, elementwise in ({', '.join(map(str, symbols))})."
    fn.expr, fn.symbols = expr, symbols
    return fn


def _build(b, expr, symbols, nodes):
    type_ = nodes[0].type if nodes else _SCALAR
    return to_ir(b, expr, dict(zip(symbols, nodes)), type_)
