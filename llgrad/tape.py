"""``while_loop`` and ``checkpoint``: loops and regions whose reverse mode keeps a tape
of forward values or recomputes them.

``while_loop(cond_fun, body_fun, init_val, max_steps=None)`` has jax.lax.while_loop's
meaning, and reverse mode too (which JAX refuses): with ``max_steps`` the forward pass
records each step's carry on a tape of that many rows, which the backward pass reads
in reverse (a loop that needs more steps fails with ``LoopLimitError`` naming its
line); without it the tape grows in native code: the forward pass appends each step's
carry to a heap buffer that doubles as it fills, the backward pass reads it in
reverse, and it is freed before the call returns (a tape that cannot grow fails with
``MemoryError`` naming the line).  Either way a gradient runs the loop once forward
and once reversed (``compiler/autodiff/while_loop.py``, ``compiler/codegen/heap_tape.py``);
a second derivative (or a vmap of the gradient) through a loop without ``max_steps``
replays up to k steps per row (quadratic in the trip count: give ``max_steps`` for
long ones).
Called outside a trace it is a plain Python loop.

``checkpoint(f)`` is ``f`` whose forward values the backward pass recomputes instead
of keeping: it keeps only ``f``'s arguments.  ``checkpointed_scan`` is
``scan(..., checkpoint=k)``: a scan of scans of k steps, each inner one checkpointed,
so reverse mode keeps the carry every k steps and recomputes the steps in between.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from llgrad.compiler.frontend import pytree
from llgrad.compiler.frontend import while_loop as traced_while
from llgrad.compiler.frontend.checkpoint import checkpointed_call, leading_rows
from llgrad.compiler.frontend.loops import tracing
from llgrad.ir.errors import LoopLimitError, ShapeError


def while_loop(cond_fun, body_fun, init_val, max_steps=None):
    """Repeat ``val = body_fun(val)`` while ``cond_fun(val)``; returns the final ``val``.

    ``init_val`` is a pytree; ``body_fun`` must return the same structure, shapes and
    dtypes.  ``max_steps`` bounds the trip count and sizes the tape that reverse mode
    reads; without it the tape grows on the heap (see the module docstring)."""
    if not tracing():
        val, steps = init_val, 0
        while cond_fun(val):
            if max_steps is not None and steps == max_steps:
                raise LoopLimitError(f"while_loop did not finish within max_steps="
                                     f"{max_steps} steps")
            val, steps = body_fun(val), steps + 1
        return val
    return traced_while.while_loop(cond_fun, body_fun, init_val, max_steps)


def checkpoint(fn):
    """``fn`` as one region whose forward values reverse mode recomputes in the
    backward pass instead of keeping them (jax.checkpoint): less memory, one more
    forward run of ``fn``.  Its arguments and results are pytrees of arrays."""
    @functools.wraps(fn)
    def recomputed(*args):
        return checkpointed_call(fn, args) if tracing() else fn(*args)
    return recomputed


def block_length(every, trips: int) -> int:
    """The steps per checkpointed block: ``every``, or ceil(sqrt(T)) for "sqrt"."""
    if every == "sqrt":
        return max(1, math.isqrt(max(trips - 1, 0)) + 1)
    if not isinstance(every, (int, np.integer)) or isinstance(every, bool) or every < 1:
        raise ShapeError(f"scan: checkpoint must be a positive int or 'sqrt', got {every!r}")
    return int(every)


def checkpointed_scan(scan, f, init, xs, length, reverse, every):
    """``scan(f, init, xs, length, reverse)`` keeping, for reverse mode, the carry
    every ``k = block_length(every, T)`` steps: an outer scan over T // k blocks whose
    body is ``checkpoint`` of an inner scan of k steps, then (or first, reversed) a
    plain scan of the T mod k steps left.  The backward pass keeps T // k carries and,
    while it handles one block, that block's k; it runs each block forward once more.
    ``scan`` is ``llgrad.scan`` (passed in: ``llgrad/loops.py`` imports this module)."""
    leaves, tree = pytree.flatten(xs)
    trips = int(length) if length is not None else int(np.shape(leaves[0])[0])
    k = block_length(every, trips)
    blocks, rest = divmod(trips, k)
    if blocks < 2:
        return scan(f, init, xs, length=length, reverse=reverse)
    main = pytree.unflatten(tree, [np.reshape(leading_rows(x, 0, blocks * k),
                                              (blocks, k) + np.shape(x)[1:]) for x in leaves])
    tail = pytree.unflatten(tree, [leading_rows(x, blocks * k, rest) for x in leaves])

    @checkpoint
    def block(carry, x_block):
        return scan(f, carry, x_block, length=k, reverse=reverse)

    def run_blocks(carry):
        carry, ys = scan(block, carry, main, length=blocks, reverse=reverse)
        y_leaves, y_tree = pytree.flatten(ys)
        return carry, y_leaves, y_tree

    def run_rest(carry):
        carry, ys = scan(f, carry, tail, length=rest, reverse=reverse)
        return carry, pytree.flatten(ys)[0]

    if reverse:
        carry, rest_ys = run_rest(init) if rest else (init, None)
        carry, block_ys, y_tree = run_blocks(carry)
    else:
        carry, block_ys, y_tree = run_blocks(init)
        carry, rest_ys = run_rest(carry) if rest else (carry, None)
    ys = [np.reshape(y, (blocks * k,) + np.shape(y)[2:]) for y in block_ys]
    if rest_ys is not None:
        ys = [np.concatenate([y, r]) for y, r in zip(ys, rest_ys)]
    return carry, pytree.unflatten(y_tree, ys)
