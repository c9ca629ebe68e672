"""The transformations users call: jit, grad, value_and_grad, vjp, jvp, hessian, hvp,
jacfwd, jacrev.

Each returns a Staged function (compiler/staging.py) that traces per signature and
calls native code; ``.trace(*args)`` on it returns everything llgrad made.
``fastmath=True`` lets LLVM reassociate float arithmetic and runs the code with
subnormal floats flushed to zero, as ``-ffast-math`` and XLA do (``compile_graph``).
"""
from __future__ import annotations

import functools

import numpy as np

from llgrad.compiler.dispatch.batching import batched_call
from llgrad.compiler.dispatch.staging import Staged
from llgrad.compiler.frontend import pytree


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


def _named(fn, prefix, inner):
    """``fn`` named for ``inner``, whose parameter names it also shows (``fn`` takes
    ``*args``): the IR, errors and exported headers then name the user's arguments."""
    fn.__name__ = f"{prefix}_{getattr(inner, '__name__', 'f')}"
    fn.__wrapped__ = inner
    return fn


def _name(fn) -> str:
    return getattr(fn, "__name__", "f")


def _size(shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


def _basis(x):
    """The standard basis of the elements of ``x``'s leaves (in leaf order, row-major
    within a leaf) as one pytree like ``x`` whose leaves carry the basis vectors on a
    new axis 0: vmap maps a jvp or a pullback over that axis."""
    leaves, tree = pytree.flatten(x)
    sizes = [_size(np.shape(leaf)) for leaf in leaves]
    columns = np.split(np.eye(sum(sizes)), np.cumsum(sizes)[:-1], axis=1)
    return pytree.unflatten(tree, [c.reshape((sum(sizes),) + np.shape(leaf))
                                   for c, leaf in zip(columns, leaves)])


def _ranges(tree):
    """(leaf, start, size) for each leaf of ``tree``: where its elements sit in
    ``_basis``'s order."""
    leaves = pytree.flatten(tree)[0]
    sizes = [_size(np.shape(leaf)) for leaf in leaves]
    return list(zip(leaves, np.cumsum([0] + sizes[:-1]).tolist(), sizes))


def _one_argnum(argnums, what):
    if not isinstance(argnums, int):
        raise TypeError(f"{what} takes one argnums (an int), got {argnums!r}")
    return argnums


def jacfwd(fn, argnums: int = 0, *, backend="native", fastmath=False):
    """The Jacobian of ``fn`` with respect to argument ``argnums`` by forward mode (the
    jvp mapped by vmap over the basis of the argument: one batched pass): each output
    leaf ``o`` becomes, for an array argument ``x``, an array of shape ``o.shape +
    x.shape`` (for a pytree argument, a pytree of them, as jax.jacfwd).  Cheaper than
    ``jacrev`` for few inputs, many outputs."""
    return Staged(_named(_forward_jacobian(fn, _one_argnum(argnums, "jacfwd")), "jacfwd", fn),
                  "jit", backend=backend, fastmath=fastmath)


def _forward_jacobian(fn, argnums):
    def jac(*args):
        def column(tangent):
            return Staged(fn, "jvp", argnums=argnums).pushforward(args, [tangent])[1][0]

        x = args[argnums]
        x_tree = pytree.flatten(x)[1]
        columns, tree = pytree.flatten(batched_call(column, (_basis(x),), 0, -1, _name(fn)))
        return pytree.unflatten(tree, [pytree.unflatten(x_tree, [
            np.reshape(c[..., start:start + n], np.shape(c)[:-1] + np.shape(xj))
            for xj, start, n in _ranges(x)]) for c in columns])
    return jac


def jacrev(fn, argnums: int = 0, *, backend="native", fastmath=False):
    """The Jacobian by reverse mode (the pullback mapped by vmap over the basis of the
    outputs: one batched pass), in the same layout as ``jacfwd``: cheaper for many
    inputs, few outputs."""
    _one_argnum(argnums, "jacrev")

    def jac(*args):
        def row(cotangents):
            graph, _, _, (results,) = Staged(fn, "vjp", argnums=argnums).inline_joint(
                args, [list(cotangents)])
            return results[len(graph.outputs):][:len(x_leaves)]

        x_leaves, x_tree = pytree.flatten(args[argnums])
        leaves, tree = pytree.flatten(fn(*args))
        rows = batched_call(row, (_basis(tuple(leaves)),), 0, 0, _name(fn))
        return pytree.unflatten(tree, [pytree.unflatten(x_tree, [
            np.reshape(r[start:start + n], np.shape(o) + np.shape(xj))
            for xj, r in zip(x_leaves, rows)]) for o, start, n in _ranges(tuple(leaves))])

    return Staged(_named(jac, "jacrev", fn), "jit", backend=backend, fastmath=fastmath)


def hessian(fn, argnums: int = 0, *, backend="native", fastmath=False):
    """The second derivatives of scalar ``fn`` with respect to argument ``argnums``:
    ``x.shape + x.shape`` for an array ``x`` (for a pytree, a pytree of pytrees, as
    jax.hessian).  Forward over reverse: ``jacfwd`` of the gradient graph, its jvp
    mapped by vmap over the basis of ``x`` (the forward and backward passes computed
    once, the tangents as one batch).  The result has ``x.size ** 2`` elements; for a
    Hessian-vector product use ``hvp``."""
    gradient = Staged(fn, "grad", argnums=_one_argnum(argnums, "hessian"))
    return Staged(_named(_forward_jacobian(gradient, argnums), "hessian", fn), "jit",
                  backend=backend, fastmath=fastmath)


def hvp(fn, argnums: int = 0, *, backend="native", fastmath=False):
    """``hvp(loss)(params, v, *rest)``: the Hessian of scalar ``loss`` with respect to
    argument ``argnums`` applied to ``v`` (in the structure of that argument, given
    right after it), without forming the Hessian: one jvp of the gradient graph in
    direction ``v`` (forward over reverse), one native call."""
    gradient = Staged(fn, "grad", argnums=_one_argnum(argnums, "hvp"))

    def product(*args):
        primal = args[:argnums + 1] + args[argnums + 2:]
        _, (hv,) = Staged(gradient, "jvp", argnums=argnums).pushforward(
            primal, [args[argnums + 1]])
        return hv

    return Staged(_named(product, "hvp", fn), "jit", backend=backend, fastmath=fastmath)


jacobian = jacrev


@functools.lru_cache(maxsize=64)
def _pushforward(fn, n: int, backend: str):
    """The compiled ``(primals, tangents) -> (value, tangent)`` of ``fn``, kept so that
    repeated ``jvp`` calls reuse its per-signature cache."""
    def pushforward(*args):
        value, (tangent,) = Staged(fn, "jvp", argnums=tuple(range(n))).pushforward(
            args[:n], [args[n:]])
        return value, tangent
    return Staged(_named(pushforward, "jvp", fn), "jit", backend=backend)


def jvp(fn, primals, tangents, *, backend="native"):
    """``(fn(*primals), J·tangents)``, as jax.jvp, in one native call compiled once per
    signature: forward mode, a Graph → Graph rewrite (compiler/forward.py)."""
    primals, tangents = tuple(primals), tuple(tangents)
    pytree.check_same(pytree.flatten(primals)[1], pytree.flatten(tangents)[1],
                      f"the tangents given to jvp of {getattr(fn, '__name__', 'f')}()")
    return _pushforward(fn, len(primals), backend)(*primals, *tangents)


def vjp(fn, *primals, backend="native"):
    """``(fn(*primals), pullback)``: ``pullback(cotangent)`` gives the gradient of
    ``<cotangent, fn>`` with respect to every primal, as a tuple (as jax.vjp)."""
    staged = Staged(fn, "vjp", argnums=tuple(range(len(primals))), backend=backend)
    entry, leaves = staged._entry(primals, {})
    if entry is None or entry.executable is None:   # inside a trace: refused there
        return staged._nested(primals, {}, leaves, entry)
    first = entry.executable(*leaves, *_zeros_like(entry.ir.outputs))
    value = entry.package(first)[0]

    def pullback(cotangent):
        ct_leaves, ct_tree = pytree.flatten(cotangent)
        pytree.check_same(entry.out_tree, ct_tree,
                          f"the cotangent given to the pullback of {staged.name}()")
        outputs = entry.executable(*leaves, *ct_leaves)
        return entry.package(outputs)[1]

    pullback.llgrad_vjp = (staged, primals)   # llgrad.export(pullback, cotangent) reads it
    return value, pullback


def _zeros_like(nodes):
    return [np.zeros(n.shape, n.type.np_dtype) for n in nodes]
