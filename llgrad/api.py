"""The transformations users call: jit, grad, value_and_grad, vjp.

Each returns a Staged function (compiler/staging.py) that traces per signature and
calls native code; ``.trace(*args)`` on it returns everything llgrad made.
"""
from __future__ import annotations

import functools

import numpy as np

from .compiler import pytree
from .compiler.staging import Staged


def _transform(kind):
    def transform(fn=None, *, argnums=0, static_argnums=(), backend="native", fastmath=False):
        if fn is None:  # used as @llgrad.grad(argnums=1)
            return functools.partial(transform, argnums=argnums, static_argnums=static_argnums,
                                     backend=backend, fastmath=fastmath)
        return Staged(fn, kind, argnums=argnums, static_argnums=static_argnums,
                      backend=backend, fastmath=fastmath)
    transform.__name__ = kind
    return transform


jit = _transform("jit")
jit.__doc__ = """Compile ``fn`` to native code, specialised per argument signature (forward only)."""

grad = _transform("grad")
grad.__doc__ = """The gradient of a scalar-valued ``fn`` with respect to ``argnums``, as native
code; the result has the structure of the differentiated arguments."""

value_and_grad = _transform("value_and_grad")
value_and_grad.__doc__ = """Like ``grad``, but returns ``(fn(*args), gradient)`` from one native call."""


def hessian(fn, argnums: int = 0, *, backend="native", fastmath=False):
    """The matrix of second derivatives of scalar ``fn`` with respect to the array
    argument ``argnums``, shaped ``x.shape + x.shape``: one native function holding one
    reverse pass over the gradient per element of ``x`` (reverse over reverse; the
    forward and first backward passes are shared).  Meant for small ``x``."""
    first = Staged(fn, "grad", argnums=argnums)

    def hess(*args):
        x = args[argnums]
        rows = []
        for i in range(int(np.prod(np.shape(x), dtype=np.int64))):
            basis = np.zeros(np.shape(x))
            basis.flat[i] = 1.0

            def directional(*a, basis=basis):
                return (first(*a) * basis).sum()
            rows.append(Staged(directional, "grad", argnums=argnums)(*args))
        return np.reshape(np.stack(rows), np.shape(x) + np.shape(x))

    hess.__name__ = f"hessian_{getattr(fn, '__name__', 'f')}"
    return Staged(hess, "jit", backend=backend, fastmath=fastmath)


def vjp(fn, *primals, backend="native"):
    """``(fn(*primals), pullback)``: ``pullback(cotangent)`` gives the gradient of
    ``<cotangent, fn>`` with respect to every primal, as a tuple (as jax.vjp)."""
    staged = Staged(fn, "vjp", argnums=tuple(range(len(primals))), backend=backend)
    entry, leaves = staged._entry(primals, {})
    first = entry.executable(*leaves, *_zeros_like(entry.ir.outputs))
    value = staged.package(leaves, first, entry)[0]

    def pullback(cotangent):
        ct_leaves, ct_tree = pytree.flatten(cotangent)
        if ct_tree != entry.out_tree:
            raise ValueError(f"cotangent structure does not match the output of {staged.name}()")
        outputs = entry.executable(*leaves, *ct_leaves)
        return staged.package(leaves, outputs, entry)[1]

    return value, pullback


def _zeros_like(nodes):
    return [np.zeros(n.shape, n.type.np_dtype) for n in nodes]
