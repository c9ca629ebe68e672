"""Batching (vmap) as a Graph → Graph rewrite.

``vmap`` takes the graph of one example and returns the graph of a batch: each input
mapped over an axis (``in_axes``) gets that axis, and every node that depends on one
is rebuilt by its record's batching rule (ir/batch_rules.py) with the batch on its
axis 0; the nodes that depend on no batched input stay as they are, computed once for
the whole batch.  Outputs get the batch on their ``out_axes``.  The result is ordinary
IR: it prints, optimises, compiles and differentiates like any other graph, which is
how vmap composes with grad, jit and itself.

A node of several results (``loop``, ``cond``) batches into the tuple of its results,
each with the batch on axis 0, which ``tuple_get``'s rule reads.  Their rules batch
the body or branch graphs with this same rewrite, so they are installed into the
records here (``ir`` may not import the compiler).
"""
from __future__ import annotations

import dataclasses

from llgrad.ir import batch_rules
from llgrad.ir.errors import ShapeError, UnsupportedError
from llgrad.ir.graph import Builder, Graph
from llgrad.ir.inline import inline
from llgrad.ir.primitives import PRIMITIVES


def vmap(graph: Graph, in_axes, out_axes, size: int) -> Graph:
    """The batched ``graph``: ``in_axes`` has one entry per input (the axis of the batch
    in that input, or None for an input every example shares), ``out_axes`` one per
    output (None only for an output that does not depend on the batch); ``size`` is
    the batch size."""
    b = Builder()
    inputs, value, batched = [], {}, set()
    for p, axis in zip(graph.inputs, in_axes, strict=True):
        shape = p.shape if axis is None else p.shape[:axis] + (size,) + p.shape[axis:]
        new = b.parameter(index=len(inputs), type=p.type.with_shape(shape),
                          name=p.attrs["name"])
        inputs.append(new)
        value[id(p)] = new if axis is None else batch_rules.move_axis(b, new, axis, 0)
        if axis is not None:
            batched.add(id(p))

    for node in graph.nodes:
        if id(node) in value:
            continue
        if node.op == "parameter":   # an enclosing trace's value, shared by every example
            value[id(node)] = node
            continue
        args = [value[id(x)] for x in node.inputs]
        flags = tuple(id(x) in batched for x in node.inputs)
        b.source = node.source
        if any(flags):
            value[id(node)] = PRIMITIVES[node.op].batch(b, node, args, flags)
            batched.add(id(node))
        else:
            value[id(node)] = b.emit(node.op, *args, **node.attrs)
    b.source = None

    outputs = []
    names = graph.output_names or [f"out[{k}]" for k in range(len(graph.outputs))]
    for out, axis, name in zip(graph.outputs, out_axes, names, strict=True):
        v = value[id(out)]
        if axis is None:
            if id(out) in batched:
                raise ShapeError(f"vmap of {graph.name}(): out_axes is None for {name}, "
                                 f"which depends on the batched arguments")
            outputs.append(v)
            continue
        if id(out) not in batched:
            v = batch_rules.with_batch(b, v, False, size)
        outputs.append(batch_rules.move_axis(b, v, 0, axis))
    return Graph(inputs, outputs, name=f"vmap_{graph.name}", output_names=graph.output_names)


def batched_outputs(graph: Graph, axes) -> list[bool]:
    """Which outputs of ``graph`` depend on the inputs whose entry in ``axes`` is not None."""
    live = {id(p) for p, a in zip(graph.inputs, axes) if a is not None}
    for node in graph.nodes:
        if any(id(x) in live for x in node.inputs):
            live.add(id(node))
    return [id(o) in live for o in graph.outputs]


def _batch_loop(b, node, args, batched):
    """The loop over the batched body.  A carried value is batched if its initial value
    is, or if the body makes it depend on a batched value (found by iterating to a
    fixed point); its unbatched initial value is then broadcast.  Stacked per-step
    results come out with the batch behind the steps, and move to the front.  A runtime
    trip count (the last input) is kept as it is; one that differs per example is
    refused."""
    body, nc = node.attrs["body"], node.attrs["n_carried"]
    n = batch_rules.batch_size(args, batched)
    count = list(args[-1:]) if node.attrs.get("runtime_count") else []
    if count and batched[-1]:
        raise UnsupportedError(f"vmap of loop {body.name!r}: its runtime trip count differs "
                               f"per example (use while_loop, or one count for the batch)")
    args, batched = args[:len(args) - len(count)], batched[:len(batched) - len(count)]
    carried = list(batched[:nc])
    while True:
        in_axes = [None] + [0 if f else None for f in carried + list(batched[nc:])]
        depends = batched_outputs(body, in_axes)
        grown = [c or d for c, d in zip(carried, depends[:nc])]
        if grown == carried:
            break
        carried = grown
    out_axes = [0 if f else None for f in carried + depends[nc:]]
    looped = b.emit("loop", *[batch_rules.with_batch(b, a, flag, n) if k < nc and carried[k]
                              else a for k, (a, flag) in enumerate(zip(args, batched))],
                    *count, **{**node.attrs, "body": vmap(body, in_axes, out_axes, n)})
    return batched_results(b, looped, out_axes, n, stacked_from=nc)


def batched_results(b, node, out_axes, n, stacked_from=None):
    """The results of the batched multi-result ``node``, each with the batch on axis 0:
    one that does not depend on the batch (``out_axes`` None) broadcast, one stacked
    over a loop's steps (from index ``stacked_from`` on) moved from behind the steps."""
    results = []
    for k, axis in enumerate(out_axes):
        r = b.tuple_get(node, index=k)
        stacked = stacked_from is not None and k >= stacked_from
        results.append(batch_rules.with_batch(b, r, False, n) if axis is None
                       else batch_rules.move_axis(b, r, 1, 0) if stacked else r)
    return tuple(results)


def _batch_cond(b, node, args, batched):
    """With a shared branch index, the cond of the batched branches.  With a batched
    index each example may take another branch: every branch runs on the whole batch
    and a select keeps each example's (as jax.vmap of lax.cond), so a branch not taken
    must be harmless to compute (np.where's rule)."""
    index, *operands = args
    branches = node.attrs["branches"]
    n = batch_rules.batch_size(args, batched)
    in_axes = [0 if f else None for f in batched[1:]]
    if batched[0]:
        outs = [inline(b, vmap(g, in_axes, [0] * len(g.outputs), n), operands)
                for g in branches]
        chosen = outs[0]
        for k, taken in enumerate(outs[1:], start=1):
            later = b.ge(index, b.full(k, index.type))   # the index is clamped to the ends
            chosen = [b.select(b.broadcast_in_dim(later, shape=o.shape, dims=(0,)), o, c)
                      for o, c in zip(taken, chosen)]
        return tuple(chosen)
    depends = [any(d) for d in zip(*(batched_outputs(g, in_axes) for g in branches))]
    out_axes = [0 if d else None for d in depends]
    batched_branches = type(branches)(vmap(g, in_axes, out_axes, n) for g in branches)
    return batched_results(b, b.emit("cond", index, *operands,
                              **{**node.attrs, "branches": batched_branches}), out_axes, n)


for _name, _rule in {"loop": _batch_loop, "cond": _batch_cond}.items():
    PRIMITIVES[_name] = dataclasses.replace(PRIMITIVES[_name], batch=_rule)
