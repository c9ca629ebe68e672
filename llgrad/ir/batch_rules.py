"""What vmap does with a primitive: the parts batching rules share, and each kind's default.

A batching rule is ``batch(b, node, args, batched) -> Node``: ``node`` is the node being
batched (its attributes and per-example types), ``args`` its operands in the batched
graph, ``batched`` one flag per operand, true where that operand carries the batch on
its axis 0; the result carries the batch on its axis 0.  Keeping every batch axis in
front (vmap moves the users' in_axes there once) is what lets most rules be one line.
A rule runs only when some operand is batched, so leaves (no operands) never need one.

A record states its rule in ``batch=``; without one it gets its kind's default
(``KIND_BATCH``): elementwise ops and comparisons broadcast their unbatched operands
and run on whole batches; reductions shift their ``axes`` by one; anything else runs
once per example (``per_example``): always right, but its IR grows with the batch size,
so the primitives vmap meets often have rules of their own.
"""
from __future__ import annotations

from llgrad.ir.errors import UnsupportedError


def batch_size(args, batched) -> int:
    return next(a.shape[0] for a, flag in zip(args, batched) if flag)


def with_batch(b, x, flag: bool, n: int):
    """``x`` with the batch on axis 0: an unbatched operand is broadcast along a new axis."""
    if flag:
        return x
    return b.broadcast_in_dim(x, shape=(n,) + x.shape, dims=tuple(range(1, x.type.ndim + 1)))


def all_batched(b, args, batched) -> list:
    n = batch_size(args, batched)
    return [with_batch(b, a, flag, n) for a, flag in zip(args, batched)]


def move_axis(b, x, source: int, dest: int):
    """``x`` with its axis ``source`` moved to position ``dest`` (np.moveaxis)."""
    if source == dest:
        return x
    perm = [d for d in range(x.type.ndim) if d != source]
    perm.insert(dest, source)
    return b.transpose(x, perm=tuple(perm))


def elementwise(b, node, args, batched):
    """Same op over whole batches: an unbatched operand meets every example."""
    return b.emit(node.op, *all_batched(b, args, batched), **node.attrs)


def leading_axis(**front):
    """The rule of a one-operand op whose tuple attributes have one entry per axis: the
    batch axis joins each named attribute in front, as ``front[name]`` says: a number,
    "size" (the batch size), "axis" (the attribute holds axis numbers: they shift by one
    and the batch axis is 0) or "shift" (axis numbers that shift by one, the batch axis
    not among them: a reduction's axes)."""
    def rule(b, node, args, batched):
        (x,) = args
        attrs = dict(node.attrs)
        for name, entry in front.items():
            old = tuple(attrs[name])
            shifted = tuple(a + 1 for a in old)
            attrs[name] = {"axis": (0,) + shifted, "shift": shifted,
                           "size": (x.shape[0],) + old}.get(entry, (entry,) + old)
        return b.emit(node.op, x, **attrs)
    return rule


_shift_axes = leading_axis(axes="shift")


def reduction(b, node, args, batched):
    """A reduction whose only attribute is its ``axes`` reduces the same axes, one
    further along; any other reduction runs per example."""
    if set(node.attrs) == {"axes"} and len(args) == 1:
        return _shift_axes(b, node, args, batched)
    return per_example(b, node, args, batched)


def example(b, x, i: int):
    """Example ``i`` of batched ``x``: a slice of its axis 0, that axis dropped."""
    rank = x.type.ndim
    row = b.slice(x, starts=(i,) + (0,) * (rank - 1), limits=(i + 1,) + x.shape[1:],
                  strides=(1,) * rank)
    return b.reshape(row, shape=x.shape[1:])


def per_example(b, node, args, batched):
    """The op once per example, results stacked: right for any op of one result, at an
    IR size that grows with the batch."""
    if isinstance(node.type, tuple):
        raise UnsupportedError(f"vmap of {node.op} (a primitive of several results) is not "
                               f"supported")
    rows = []
    for i in range(batch_size(args, batched)):
        out = b.emit(node.op, *[example(b, a, i) if flag else a
                                for a, flag in zip(args, batched)], **node.attrs)
        rows.append(b.reshape(out, shape=(1,) + out.shape))
    if not rows:   # an empty batch
        return b.full(0, node.type.with_shape((0,) + node.shape))
    return rows[0] if len(rows) == 1 else b.concatenate(*rows, axis=0)


#: each kind's batching rule, which a record may replace (leaves have no operands)
KIND_BATCH = {"elementwise": elementwise, "comparison": elementwise, "reduction": reduction,
              "indexing": per_example, "structural": per_example, "leaf": None}
