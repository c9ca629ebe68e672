"""``llgrad.vmap``: a function mapped over a batch axis of its arguments, as jax.vmap.

The function is traced once for one example and its graph batched by the records'
batching rules (compiler/autodiff/batching.py), so the batch runs as whole-array
operations in one native call, not as a Python loop of calls.
"""
from __future__ import annotations

import functools

from llgrad.compiler.dispatch.batching import batched_call
from llgrad.compiler.dispatch.staging import Staged


def vmap(fn, in_axes=0, out_axes=0, *, backend="native", fastmath=False):
    """``fn`` mapped over axis ``in_axes`` of its positional arguments, its results
    stacked along ``out_axes``.  Each is an int (negative counts from the end), None
    (not mapped: every example shares the argument; for an output, one that does not
    depend on the batch) or a pytree prefix of the arguments (a tuple with one entry per
    argument) or of the result.  Keyword arguments are static and shared.  Composes
    with grad, jit and itself: ``vmap(grad(loss), in_axes=(None, 0, 0))(params, xs,
    ys)`` is the per-example gradients."""
    name = getattr(fn, "__name__", "f")

    def batched(*args, **kwargs):
        call = functools.partial(fn, **kwargs) if kwargs else fn
        return batched_call(call, args, in_axes, out_axes, name)

    batched.__name__ = f"vmap_{name}"
    batched.__wrapped__ = fn
    return Staged(batched, "jit", backend=backend, fastmath=fastmath)
