"""Batching (vmap) of ``while`` and ``checkpoint``, installed into their records.

``checkpoint``: the checkpoint of the batched body (its ``recomputes`` batched too).

``while`` with a condition that does not depend on the batch: one loop over the
batched body, as a ``loop``.  With a batched condition each example may stop at
another step (as jax.vmap of lax.while_loop): the loop runs while any example's
condition holds, and carries beside the values a mask of the examples still running
and each one's step count.  An example that has stopped keeps its values (a
``select``), so its tape rows from its own trip count on repeat its final carry,
and its trip count is its own, which is what the reversed loop reads.
"""
from __future__ import annotations

import dataclasses

from llgrad.compiler.autodiff.batching import batched_outputs, batched_results, vmap
from llgrad.compiler.autodiff.while_loop import _replayed
from llgrad.ir import batch_rules
from llgrad.ir.graph import Builder, Graph
from llgrad.ir.inline import inline
from llgrad.ir.primitives import PRIMITIVES
from llgrad.ir.primitives_while import STEPS, tape_index, trip_index
from llgrad.ir.types import TensorType


def _batch_checkpoint(b, node, args, batched):
    body, region = node.attrs["body"], node.attrs["recomputes"]
    n = batch_rules.batch_size(args, batched)
    in_axes = [0 if f else None for f in batched]
    out_axes = [0 if d else None for d in batched_outputs(body, in_axes)]
    if region is not None:
        region_axes = in_axes[:len(region.inputs)]
        region = vmap(region, region_axes,
                      [0 if d else None for d in batched_outputs(region, region_axes)], n)
    looped = b.checkpoint(*args, body=vmap(body, in_axes, out_axes, n), recomputes=region)
    return batched_results(b, looped, out_axes, n)


def _batched_carry(body, nc, batched):
    """Which carried values (and whether the condition) depend on the batch: iterated to
    a fixed point, as a value carried from a batched one becomes batched."""
    carried = list(batched[1:1 + nc])
    while True:
        in_axes = [None] + [0 if f else None for f in carried + list(batched[1 + nc:])]
        depends = batched_outputs(body, in_axes)
        grown = [c or d for c, d in zip(carried, depends[1:])]
        if grown == carried:
            return carried, in_axes, batched[0] or depends[0]
        carried = grown


def _masked_body(batched_body: Graph, nc: int, n: int) -> Graph:
    """``(step, running, steps, carried..., invariants...) -> (any running, running',
    steps', carried'...)``: the batched body, whose results count only for the examples
    still running."""
    b = Builder()
    step = b.parameter(index=0, type=STEPS, name="step")
    running = b.parameter(index=1, type=TensorType((n,), "bool"), name="running")
    steps = b.parameter(index=2, type=TensorType((n,), "int64"), name="steps")
    rest = [b.parameter(index=3 + k, type=p.type, name=p.attrs["name"])
            for k, p in enumerate(batched_body.inputs[1:])]
    more, *new = inline(b, batched_body, [step, *rest])

    def where(mask, x, y):
        return b.select(b.broadcast_in_dim(mask, shape=x.shape, dims=(0,)), x, y)

    kept = [where(running, x, old) for x, old in zip(new, rest[:nc])]
    still = where(running, more, b.full(False, more.type))
    counted = b.add(steps, b.convert(running, dtype="int64"))
    return Graph([step, running, steps, *rest], [_any(b, still), still, counted, *kept],
                 name=f"{batched_body.name}_masked")


def _batch_while(b, node, args, batched):
    body, nc, limit = node.attrs["body"], node.attrs["n_carried"], node.attrs["max_steps"]
    n = batch_rules.batch_size(args, batched)
    carried, in_axes, condition = _batched_carry(body, nc, batched)
    if condition:   # stopped examples keep their values: every carried value is batched
        carried = [True] * nc
        in_axes = [None] + [0] * nc + in_axes[1 + nc:]
    start = [batch_rules.with_batch(b, a, given, n) if flag else a
             for a, given, flag in zip(args[1:1 + nc], batched[1:1 + nc], carried)]
    invariants = args[1 + nc:]
    carried_axes = [0 if f else None for f in carried]
    if not condition:
        looped = b.emit("while", args[0], *start, *invariants,
                        **{**node.attrs, "body": vmap(body, in_axes, [None] + carried_axes, n)})
        values = [b.tuple_get(looped, index=k) for k in range(nc)]
        trips = b.tuple_get(looped, index=trip_index(looped))
        first_tape = nc + 1
    else:
        masked = _masked_body(vmap(body, in_axes, [0] + carried_axes, n), nc, n)
        running = batch_rules.with_batch(b, args[0], batched[0], n)
        looped = b.emit("while", _any(b, running), running, b.full(0, TensorType((n,), "int64")),
                        *start, *invariants, body=masked, n_carried=nc + 2, max_steps=limit,
                        where=node.attrs["where"], heap_tape=node.attrs.get("heap_tape", False))
        values = [b.tuple_get(looped, index=2 + k) for k in range(nc)]
        trips = b.tuple_get(looped, index=1)   # each example's own
        first_tape = tape_index(looped, 2)
    out = [v if f else batch_rules.with_batch(b, v, False, n) for v, f in zip(values, carried)]
    out.append(trips if condition else batch_rules.with_batch(b, trips, False, n))
    if node.attrs.get("heap_tape"):   # batched, ``tape_row`` replays: none reads a handle
        out.append(batch_rules.with_batch(b, b.const(0, "int64"), False, n))
    if limit is not None:
        for k, f in enumerate(carried):   # a batched tape has the batch behind the steps
            tape = b.tuple_get(looped, index=first_tape + k)
            out.append(batch_rules.move_axis(b, tape, 1, 0) if f
                       else batch_rules.with_batch(b, tape, False, n))
    return tuple(out)


def _batch_tape_row(b, node, args, batched):
    """The batched replay of the row's first k steps (see ``while_loop._replayed``)."""
    template, places = _replayed(Builder(), node)
    k, k_batched = args[1], batched[1]
    zero = b.full(0, k.type) if k_batched else b.const(0, "int64")
    replay_args, flags = [b.lt(zero, k)], [k_batched]
    for at in range(1, len(template.inputs)):
        source = places.index(at)
        replay_args.append(args[source])
        flags.append(batched[source])
    return _batch_while(b, template, replay_args, flags)[node.attrs["index"]]


def _any(b, mask):
    return b.lt(b.const(0, "int64"), b.reduce_sum(b.convert(mask, dtype="int64"), axes=(0,)))


def install() -> None:
    for name, rule in {"while": _batch_while, "checkpoint": _batch_checkpoint,
                       "tape_row": _batch_tape_row}.items():
        PRIMITIVES[name] = dataclasses.replace(PRIMITIVES[name], batch=rule)


install()
