"""cumsum's native code: each row along the last axis summed in one pass, the running
total carried in a register, left to right (or right to left for ``reverse``), so
the additions happen in numpy's order and the result is numpy's."""
from __future__ import annotations

from llgrad.llvm.indexing import Index
from llgrad.llvm.loops import carried_loop, loop_nest
from llgrad.llvm.scalar import const, i64, linearise, store


def emit_cumsum(ctx, node, out):
    b, (x,) = ctx.b, node.inputs
    n, dtype = node.shape[-1], node.dtype
    add = (lambda p, q: b.fadd(p, q, flags=ctx.flags)) if node.type.is_float else b.add
    with loop_nest(b, node.shape[:-1], "cs") as prefix:
        with carried_loop(b, n, [const(dtype, 0)], "cs.run") as (j, total):
            at = b.sub(i64(n - 1), j) if node.attrs["reverse"] else j
            axes = list(prefix) + [at]
            where = linearise(b, axes, node.shape)
            total[0] = add(total[0], ctx.read(x, Index(tuple(axes), where)))
            store(b, total[0], out, where, dtype)
