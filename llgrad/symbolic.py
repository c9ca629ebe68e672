"""sympy expressions as llgrad functions: ``from_sympy`` (the other direction is
``llgrad.grad(f).trace(x).to_sympy()``).

    x, y = sp.symbols("x y", real=True)
    f = llgrad.from_sympy(sp.sin(x) * y, [x, y])
    f(np.linspace(0, 1, 5), 2.0)                   # elementwise, numpy broadcasting
    f.grad(0.3, 2.0); f.hessian(xs, ys)            # per point, one native call
    F = llgrad.from_sympy(sp.Matrix([x * y, sp.sin(x)]), [x, y]); F.jacobian(0.3, 2.0)

Inside a trace the function builds IR like any numpy function (``to_ir`` of the
expression over the arguments, broadcast and promoted to float as numpy_ops does);
outside one it runs through ``llgrad.jit`` of itself, so plain calls are native code
too, compiled once per argument signature.  The derivative methods are compiled the
same way: the expression is elementwise, so the gradient of its sum over all points
is the gradient at every point, and forward mode over it gives the Hessian.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from llgrad.api import jit
from llgrad.compiler.dispatch.staging import Staged
from llgrad.compiler.frontend import numpy_ops, numpy_support
from llgrad.compiler.frontend.sympy_io import _namespace, to_ir
from llgrad.compiler.frontend.trace import current
from llgrad.ir.graph import Builder
from llgrad.ir.types import TensorType

_SCALAR = TensorType((), "float64")


def from_sympy(expr, symbols: Sequence, *, backend: str = "native", name: str | None = None):
    """A function of ``len(symbols)`` arrays computing ``expr`` elementwise, with numpy
    broadcasting; the result is float32 where numpy would give float32, else float64.
    A ``sp.Matrix`` expression gives arrays of shape ``points + matrix.shape``.

    ``expr`` may use + - * / ** (any exponent), rational and real constants (pi, E),
    exp, log, trigonometric and hyperbolic functions and their inverses (atan2 too),
    sqrt, Abs, sign, floor, ceiling, Heaviside, Max, Min, Piecewise with relational
    conditions (and And/Or/Not), and llgrad's own logistic, log1p and expm1 (as
    ``to_sympy(..., standard=False)`` writes them).  Anything else raises UnsupportedError naming the
    sympy function, here rather than at the first call.  ``backend`` is the backend of
    calls made outside a trace ("native" or "interpret").

    The result has ``.grad(*points)`` (shape ``points + (n,)``), ``.hessian(*points)``
    (``points + (n, n)``) and ``.jacobian(*points)`` (``points + (m, n)`` for a vector
    Matrix, ``points + matrix.shape + (n,)`` otherwise), each one native call over all
    the points (the arguments broadcast together first); ``f.hessian.trace(*points)``
    shows what was compiled."""
    sp, _ = _namespace()
    matrix = isinstance(expr, sp.MatrixBase)
    entries = list(expr) if matrix else [sp.sympify(expr)]
    symbols = tuple(symbols)
    if not all(isinstance(s, sp.Symbol) for s in symbols) or len(set(symbols)) != len(symbols):
        raise TypeError(f"from_sympy: symbols must be distinct sympy Symbols, got {symbols}")
    check = Builder()
    params = [check.parameter(index=i, type=_SCALAR, name=str(s)) for i, s in enumerate(symbols)]
    for entry in entries:
        _build(check, entry, symbols, params)

    def build(*args):
        if len(args) != len(symbols):
            raise TypeError(f"{fn.__name__}() takes {len(symbols)} arguments "
                            f"({', '.join(map(str, symbols))}), got {len(args)}")
        dtype = numpy_support.float_dtype(*args) if args else "float64"
        operands = numpy_support.broadcast_operands(args, dtype)
        values = [numpy_support.wrap(_build(current().builder, e, symbols, operands))
                  for e in entries]
        if not matrix:
            return values[0]
        stacked = numpy_ops.stack(values, axis=-1)
        return numpy_ops.reshape(stacked, stacked.shape[:-1] + tuple(expr.shape))

    build.__name__ = build.__qualname__ = name or "sympy_function"
    fn = numpy_ops.traceable("from_sympy", jit(build, backend=backend))(build)
    fn.__doc__ = f"{expr}, elementwise in ({', '.join(map(str, symbols))})."
    fn.expr, fn.symbols = expr, symbols
    fn.grad, fn.hessian, fn.jacobian = _derivatives(fn, len(symbols), matrix and expr.shape,
                                                    backend)
    return fn


def _build(b, expr, symbols, nodes):
    type_ = nodes[0].type if nodes else _SCALAR
    return to_ir(b, expr, dict(zip(symbols, nodes)), type_)


def _derivatives(fn, n: int, matrix_shape, backend: str):
    """The compiled ``grad``, ``hessian`` and ``jacobian`` methods of ``fn``."""
    everything = tuple(range(n))

    def total(*xs):
        return np.sum(fn(*xs))

    def units(xs):
        """Tangents 1 for one argument, 0 for the others: per point, d/d symbol j."""
        return [tuple(np.ones_like(x) if i == j else np.zeros_like(x) for i, x in enumerate(xs))
                for j in range(n)]

    def gradient(*xs):
        return np.stack(Staged(total, "grad", argnums=everything)(*xs), axis=-1)

    def hessian(*xs):
        first = Staged(total, "grad", argnums=everything)
        _, columns = Staged(first, "jvp", argnums=everything).pushforward(xs, units(xs))
        return np.stack([np.stack(c, axis=-1) for c in columns], axis=-1)

    def jacobian(*xs):
        _, columns = Staged(fn, "jvp", argnums=everything).pushforward(xs, units(xs))
        jac = np.stack(columns, axis=-1)
        if matrix_shape and 1 in matrix_shape:  # a vector: rows are its entries, as sympy
            jac = np.reshape(jac, np.shape(xs[0]) + (-1, n))
        return jac

    def method(body, what):
        body.__name__ = f"{what}_{fn.__name__}"
        staged = Staged(body, "jit", backend=backend)

        def arguments(points):
            if len(points) != n:
                raise TypeError(f"{fn.__name__}.{what}() takes {n} arguments, got "
                                f"{len(points)}")
            if matrix_shape and what != "jacobian":
                raise TypeError(f"{fn.__name__} is a Matrix: use .jacobian(), not .{what}()")
            arrays = [np.asarray(p) for p in points]
            arrays = [a if a.dtype in (np.float32, np.float64) else a.astype(np.float64)
                      for a in arrays]
            return [np.array(a) for a in np.broadcast_arrays(*arrays)]  # own memory

        def call(*points):
            return staged(*arguments(points))
        call.__name__ = what
        call.trace = lambda *points: staged.trace(*arguments(points))
        return call

    return method(gradient, "grad"), method(hessian, "hessian"), method(jacobian, "jacobian")
