"""``prefetch_rows``: ``llvm.prefetch`` of the first cache lines of each requested row.

The rows are ``x[order[start + r]]`` with both indices clamped into range, so a
request past the end of the data (the step after the last) touches valid memory.
Only a row's first ``HEAD_LINES`` lines are requested: the rows are contiguous, and
once a row's first lines miss, the hardware's stream prefetcher fetches the rest of
it on its own, so what software prefetch can hide is the latency of those first
misses of every (randomly placed) row.  Requesting every line cost more instructions
than it saved (docs/performance.md, "Training that streams its data": 3-5% slower
than no prefetch at all on a 784-float row; the head alone: even to 3% faster).
Prefetches are hints: they read nothing into registers and cannot fault, and the
kernel's only result is the token 0.
"""
from __future__ import annotations

from llvmlite import ir

from llgrad.compiler.codegen.kernels import clamped_start
from llgrad.llvm.indexing import Index
from llgrad.llvm.loops import counted_loop
from llgrad.llvm.scalar import I8, ITEMSIZE, PTR, declare, i64, store

I32 = ir.IntType(32)
LINE = 64
#: read access, kept in the outer levels (prefetcht1: L2 and below), data cache
READ, LOCALITY, DATA = 0, 2, 1
#: lines requested per row: what a stream prefetcher needs to see before it runs ahead
HEAD_LINES = 4


def emit_prefetch_rows(ctx, node, out):
    b, (x, order, start) = ctx.b, node.inputs
    fn = declare(b.module, "llvm.prefetch.p0", ir.VoidType(), [PTR, I32, I32, I32])
    row_bytes = (x.type.size // x.shape[0] if x.shape[0] else 0) * ITEMSIZE[x.dtype]
    store(b, i64(0), out, i64(0), "int64")
    if not row_bytes or not order.shape[0]:
        return
    hint = [ir.Constant(I32, v) for v in (READ, LOCALITY, DATA)]
    first = ctx.read(start, Index.scalar())
    base = ctx.pointer(x)
    with counted_loop(b, node.attrs["rows"], "pf") as r:
        at = clamped_start(b, b.add(first, r), 1, order.shape[0])
        row = clamped_start(b, ctx.read(order, Index((at,), at)), 1, x.shape[0])
        row_start = b.mul(row, i64(row_bytes))
        for line in range(0, min(row_bytes, HEAD_LINES * LINE), LINE):
            offset = b.add(row_start, i64(line))
            b.call(fn, [b.gep(base, [offset], source_etype=I8)] + hint)
