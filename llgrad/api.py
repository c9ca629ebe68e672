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


def jvp(fn, primals, tangents, *, backend="native"):
    """``(fn(*primals), J·tangents)``, as jax.jvp, in one native call.

    Forward mode from reverse mode (the "double vjp"): the pullback ``u ↦ Jᵀu`` is
    linear in ``u``, so the gradient of ``u ↦ <Jᵀu, t>`` is ``J t`` for any ``u``.
    Both reverse passes are ordinary IR, so the simplifier and CSE see through them."""
    primals, tangents = tuple(primals), tuple(tangents)
    pytree.check_same(pytree.flatten(primals)[1], pytree.flatten(tangents)[1],
                      f"the tangents given to jvp of {getattr(fn, '__name__', 'f')}()")
    n = len(primals)
    wrt = tuple(range(n))

    def pushforward(*args):
        xs, ts = args[:n], args[n:]
        out_leaves, out_tree = pytree.flatten(fn(*xs))

        def pulled_back_onto_tangents(*us):
            def weighted(*xs_):
                return sum(np.sum(o * u) for o, u in zip(pytree.flatten(fn(*xs_))[0], us))
            cotangent = Staged(weighted, "grad", argnums=wrt)(*xs)
            return sum(np.sum(g * t) for g, t in zip(pytree.flatten(cotangent)[0],
                                                      pytree.flatten(ts)[0]))

        zeros = [np.zeros_like(o) for o in out_leaves]
        tangent_out = Staged(pulled_back_onto_tangents, "grad",
                             argnums=tuple(range(len(zeros))))(*zeros)
        return pytree.unflatten(out_tree, out_leaves), pytree.unflatten(out_tree, list(tangent_out))

    pushforward.__name__ = f"jvp_{getattr(fn, '__name__', 'f')}"
    return Staged(pushforward, "jit", backend=backend)(*primals, *tangents)


def vjp(fn, *primals, backend="native"):
    """``(fn(*primals), pullback)``: ``pullback(cotangent)`` gives the gradient of
    ``<cotangent, fn>`` with respect to every primal, as a tuple (as jax.vjp)."""
    staged = Staged(fn, "vjp", argnums=tuple(range(len(primals))), backend=backend)
    entry, leaves = staged._entry(primals, {})
    first = entry.executable(*leaves, *_zeros_like(entry.ir.outputs))
    value = staged.package(leaves, first, entry)[0]

    def pullback(cotangent):
        ct_leaves, ct_tree = pytree.flatten(cotangent)
        pytree.check_same(entry.out_tree, ct_tree,
                          f"the cotangent given to the pullback of {staged.name}()")
        outputs = entry.executable(*leaves, *ct_leaves)
        return staged.package(leaves, outputs, entry)[1]

    return value, pullback


def _zeros_like(nodes):
    return [np.zeros(n.shape, n.type.np_dtype) for n in nodes]
