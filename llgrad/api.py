"""The transformations users call: jit, grad, value_and_grad, vjp, jvp, hessian, hvp,
jacfwd, jacrev.

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


def _named(fn, prefix, inner):
    fn.__name__ = f"{prefix}_{getattr(inner, '__name__', 'f')}"
    return fn


def _basis(shape):
    """The one-hot arrays of ``shape``, in row-major order."""
    size = int(np.prod(shape, dtype=np.int64))
    return [np.eye(1, size, i).reshape(shape) for i in range(size)]


def _array_arg(args, argnums, what):
    if not isinstance(argnums, int):
        raise TypeError(f"{what} takes one argnums (an int), got {argnums!r}")
    x = args[argnums]
    if pytree.flatten(x)[1] != pytree.flatten(np.zeros(()))[1]:
        raise TypeError(f"{what} differentiates with respect to one array; argument "
                        f"{argnums} is a {type(x).__name__} (use hvp or grad for pytrees)")
    return x


def hessian(fn, argnums: int = 0, *, backend="native", fastmath=False):
    """The matrix of second derivatives of scalar ``fn`` with respect to the array
    argument ``argnums``, shaped ``x.shape + x.shape``, as one native function: forward
    mode over the gradient graph (one jvp per basis direction of ``x``, all sharing the
    forward and backward passes through hash-consing).  Meant for small ``x``; for a
    Hessian-vector product use ``hvp``."""
    gradient = Staged(fn, "grad", argnums=argnums)

    def hess(*args):
        x = _array_arg(args, argnums, "hessian")
        _, columns = Staged(gradient, "jvp", argnums=argnums).pushforward(
            args, _basis(np.shape(x)))
        return np.reshape(np.stack(columns), np.shape(x) + np.shape(x))

    return Staged(_named(hess, "hessian", fn), "jit", backend=backend, fastmath=fastmath)


def hvp(fn, argnums: int = 0, *, backend="native", fastmath=False):
    """``hvp(loss)(params, v, *rest)``: the Hessian of scalar ``loss`` with respect to
    argument ``argnums`` applied to ``v`` (in the structure of that argument, given
    right after it), without forming the Hessian: one jvp of the gradient graph in
    direction ``v`` (forward over reverse), one native call."""
    if not isinstance(argnums, int):
        raise TypeError(f"hvp takes one argnums (an int), got {argnums!r}")
    gradient = Staged(fn, "grad", argnums=argnums)

    def product(*args):
        primal = args[:argnums + 1] + args[argnums + 2:]
        _, (hv,) = Staged(gradient, "jvp", argnums=argnums).pushforward(
            primal, [args[argnums + 1]])
        return hv

    return Staged(_named(product, "hvp", fn), "jit", backend=backend, fastmath=fastmath)


def jacfwd(fn, argnums: int = 0, *, backend="native", fastmath=False):
    """The Jacobian of ``fn`` with respect to the array argument ``argnums`` by forward
    mode (one jvp per element of the input): each output leaf ``o`` gives an array of
    shape ``o.shape + x.shape``.  Cheaper than ``jacrev`` for few inputs, many outputs."""
    def jac(*args):
        x = _array_arg(args, argnums, "jacfwd")
        value, columns = Staged(fn, "jvp", argnums=argnums).pushforward(
            args, _basis(np.shape(x)))
        leaves, tree = pytree.flatten(value)
        return pytree.unflatten(tree, [
            np.reshape(np.stack([pytree.flatten(c)[0][k] for c in columns], axis=-1),
                       np.shape(leaf) + np.shape(x)) for k, leaf in enumerate(leaves)])

    return Staged(_named(jac, "jacfwd", fn), "jit", backend=backend, fastmath=fastmath)


def jacrev(fn, argnums: int = 0, *, backend="native", fastmath=False):
    """The Jacobian by reverse mode (one pullback per output element), in the same
    layout as ``jacfwd``: cheaper for many inputs, few outputs."""
    def jac(*args):
        x = _array_arg(args, argnums, "jacrev")
        pullback = Staged(fn, "vjp", argnums=argnums)
        leaves, tree = pytree.flatten(fn(*args))
        cotangents = [[basis if j == k else np.zeros(np.shape(o)) for j, o in enumerate(leaves)]
                      for k, leaf in enumerate(leaves) for basis in _basis(np.shape(leaf))]
        graph, _, _, results = pullback.inline_joint(args, cotangents)
        rows = [r[len(graph.outputs)] for r in results]
        out, start = [], 0
        for leaf in leaves:
            size = int(np.prod(np.shape(leaf), dtype=np.int64))
            block = np.stack(rows[start:start + size]) if size else np.zeros((0,) + np.shape(x))
            out.append(np.reshape(block, np.shape(leaf) + np.shape(x)))
            start += size
        return pytree.unflatten(tree, out)

    return Staged(_named(jac, "jacrev", fn), "jit", backend=backend, fastmath=fastmath)


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
    if len(primals) != len(tangents):
        raise TypeError(f"jvp of {getattr(fn, '__name__', 'f')}(): {len(primals)} primals "
                        f"but {len(tangents)} tangents")
    return _pushforward(fn, len(primals), backend)(*primals, *tangents)


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
