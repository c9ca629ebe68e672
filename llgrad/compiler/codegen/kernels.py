"""Loop nests of the structural primitives that write their whole output themselves.

Each ``emit_*(ctx, node, out)`` reads its inputs with ``ctx.read(input, index)``
(which inlines fused producers) and stores into ``out``, the node's buffer.
Indices are always in range: dynamic starts are clamped before use.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir

from llgrad.llvm.indexing import Index
from llgrad.llvm.loops import counted_loop, loop_nest
from llgrad.llvm.scalar import MEMORY, const, extremum, i64, linearise, load, store


def _fill(ctx, out, type_, value):
    with loop_nest(ctx.b, (type_.size,), "fill") as (i,):
        store(ctx.b, value, out, i, type_.dtype)


def _flat_index(b, axes, shape):
    return Index(tuple(axes), linearise(b, axes, shape))


# ----------------------------------------------------------------------------------
# reductions.  When the last axis is kept, walk the input in memory order and
# accumulate into the output, so the kept inner axis vectorises.  When it is reduced,
# each run along it is summed in registers by LANES interleaved partial results
# (element j goes to lane j % LANES), combined pairwise at the end of the run: a
# fixed, deterministic order (numpy's pairwise summation also keeps 8 partial sums)
# that breaks the add-latency chain of a strictly sequential sum.

LANES = 8
#: elements of an inline-computed reduced value staged at a time (a multiple of LANES)
CHUNK = 512


def _emit_reduce(ctx, node, out, init, combine):
    """``combine(builder, accumulated, value)``: the builder is that of the function
    being emitted (a band of rows runs in a function of its own)."""
    b, (x,) = ctx.b, node.inputs
    axes, dtype = node.attrs["axes"], node.dtype
    _fill(ctx, out, node.type, init)
    last = x.type.ndim - 1
    if last in axes and x.shape[last] < 2 * LANES:
        # a short reduced run (pairwise distances' d): summed in a register, unrolled,
        # in the same order as element by element; the loop over the kept axes then
        # vectorises across outputs instead of storing and reloading each partial sum
        with loop_nest(b, x.shape[:last], "r") as prefix:
            kept = [i for d, i in enumerate(prefix) if d not in axes]
            where = linearise(b, kept, node.shape)
            total = load(b, out, where, dtype)
            for j in range(x.shape[last]):
                total = combine(b, total, ctx.read(x, _flat_index(b, prefix + [i64(j)],
                                                                   x.shape)))
            store(b, total, out, where, dtype)
        return
    if last not in axes:
        with loop_nest(b, x.shape, "r") as idx:
            kept = [i for d, i in enumerate(idx) if d not in axes]
            where = linearise(b, kept, node.shape)
            value = ctx.read(x, _flat_index(b, idx, x.shape))
            store(b, combine(b, load(b, out, where, dtype), value), out, where, dtype)
        return
    if x.type.ndim == 2 and tuple(axes) == (1,):
        # one output per row, each summed on its own: rows can go to several threads
        def rows(kctx, out, first, count):
            with counted_loop(kctx.b, count, "r") as r:
                row = kctx.b.add(first, r, flags=["nuw", "nsw"])
                _reduce_run(kctx, x, [row], row, out, init, combine, dtype)
        ctx.by_rows(out, x.shape[0], x.type.size, rows)
        return
    with loop_nest(b, x.shape[:last], "r") as prefix:
        kept = [i for d, i in enumerate(prefix) if d not in axes]
        _reduce_run(ctx, x, prefix, linearise(b, kept, node.shape), out, init, combine, dtype)


def _reduce_run(ctx, x, prefix, where, out, init, combine, dtype):
    """out[where] combined with the run of ``x`` along its last axis at ``prefix``."""
    b = ctx.b
    run = x.shape[-1]
    # A reduced value computed inline is first staged, CHUNK elements at a time, in a
    # small stack buffer by a plain loop that LLVM vectorises (transcendental calls
    # become libmvec vector calls); the lanes then sum the buffer in the same order.
    staged = id(x) not in ctx.pointers and run >= CHUNK
    if staged:
        with b.goto_entry_block():
            chunk = b.alloca(MEMORY[x.dtype], size=i64(CHUNK))
            chunk.align = 64
    read = lambda j: ctx.read(x, _flat_index(b, prefix + [j], x.shape))  # noqa: E731
    # the lanes are one vector: LLVM's SLP vectoriser, given LANES scalar partial sums,
    # builds <2 x float> sums fed by four copies of each product, several times slower
    # (re-measure: the gradient-norm kernels in ``python -m llgrad bench --workloads
    # training --systems "llgrad native" --profile``).  Each lane still sums its
    # elements in the same order; a value computed inline past the staged chunks may
    # now come from a vector libm function, as the staged ones already did
    lanes = ir.VectorType(init.type, LANES)
    with b.goto_entry_block():  # in the entry block, so it becomes a register
        slot = b.alloca(lanes)
    b.store(ir.Constant(lanes, [init.constant] * LANES), slot)

    def accumulate(blocks, value_at):
        with counted_loop(b, blocks, "lane") as block:
            start = b.mul(block, i64(LANES), flags=["nuw", "nsw"])
            values = ir.Constant(lanes, ir.Undefined)
            for lane in range(LANES):
                j = b.add(start, i64(lane), flags=["nuw", "nsw"])
                values = b.insert_element(values, value_at(j), ir.Constant(ir.IntType(32), lane))
            b.store(combine(b, b.load(slot), values), slot)

    done = run - run % CHUNK if staged else 0
    if staged:
        with counted_loop(b, run // CHUNK, "chunk") as c:
            base = b.mul(c, i64(CHUNK), flags=["nuw", "nsw"])
            with counted_loop(b, CHUNK, "stage") as j:
                store(b, read(b.add(base, j, flags=["nuw", "nsw"])), chunk, j, x.dtype)
            accumulate(CHUNK // LANES, lambda j: load(b, chunk, j, x.dtype))
    accumulate((run - done) // LANES,
               lambda j: read(b.add(j, i64(done), flags=["nuw", "nsw"])))
    vector = b.load(slot)
    partial = [b.extract_element(vector, ir.Constant(ir.IntType(32), lane))
               for lane in range(LANES)]
    while len(partial) > 1:
        partial = [combine(b, partial[k], partial[k + 1]) for k in range(0, len(partial), 2)]
    total = partial[0]
    for j in range(run - run % LANES, run):
        total = combine(b, total, read(i64(j)))
    store(b, combine(b, load(b, out, where, dtype), total), out, where, dtype)


def emit_reduce_sum(ctx, node, out):
    if node.type.dtype in ("float64", "float32"):
        add = lambda b, acc, v: b.fadd(acc, v, flags=ctx.flags)  # noqa: E731
    else:
        add = lambda b, acc, v: b.add(acc, v)  # noqa: E731
    _emit_reduce(ctx, node, out, const(node.dtype, 0), add)


def emit_reduce_max(ctx, node, out):
    dtype = node.dtype
    init = const(dtype, -np.inf) if dtype in ("float64", "float32") else i64(
        np.iinfo(np.int64).min)
    _emit_reduce(ctx, node, out, init, lambda b, acc, v: extremum(b, acc, v, dtype, ">="))


# ----------------------------------------------------------------------------------
# shape kernels

def emit_pad(ctx, node, out):
    b, (x,) = ctx.b, node.inputs
    a = node.attrs
    _fill(ctx, out, node.type, const(node.dtype, 0))
    with loop_nest(b, x.shape, "p") as idx:
        target = []
        for i, lo, it in zip(idx, a["low"], a["interior"]):
            if it:
                i = b.mul(i, i64(it + 1), flags=["nuw", "nsw"])
            target.append(b.add(i, i64(lo), flags=["nuw", "nsw"]) if lo else i)
        value = ctx.read(x, _flat_index(b, idx, x.shape))
        store(b, value, out, linearise(b, target, node.shape), node.dtype)


def emit_concatenate(ctx, node, out):
    b, axis, offset = ctx.b, node.attrs["axis"], 0
    for x in node.inputs:
        with loop_nest(b, x.shape, "c") as idx:
            target = list(idx)
            if offset:
                target[axis] = b.add(idx[axis], i64(offset), flags=["nuw", "nsw"])
            value = ctx.read(x, _flat_index(b, idx, x.shape))
            store(b, value, out, linearise(b, target, node.shape), node.dtype)
        offset += x.shape[axis]


def clamped_start(b, start, size, rows):
    """``min(max(start, 0), rows - size)``, as ``_clamped_start`` in the IR."""
    start = b.select(b.icmp_signed("<", start, i64(0)), i64(0), start)
    top = i64(rows - size)
    return b.select(b.icmp_signed(">", start, top), top, start)


def emit_dynamic_slice(ctx, node, out):
    b, (x, start) = ctx.b, node.inputs
    s = clamped_start(b, ctx.read(start, Index.scalar()), node.shape[0], x.shape[0])
    with loop_nest(b, node.shape, "ds") as idx:
        source = [b.add(idx[0], s, flags=["nuw", "nsw"])] + list(idx[1:])
        store(b, ctx.read(x, Index(tuple(source))), out, linearise(b, idx, node.shape),
              node.dtype)


def emit_dynamic_update_slice(ctx, node, out):
    b, (x, update, start) = ctx.b, node.inputs
    s = clamped_start(b, ctx.read(start, Index.scalar()), update.shape[0], x.shape[0])
    with loop_nest(b, x.shape, "du") as idx:
        store(b, ctx.read(x, _flat_index(b, idx, x.shape)), out,
              linearise(b, idx, x.shape), node.dtype)
    with loop_nest(b, update.shape, "du") as idx:
        target = [b.add(idx[0], s, flags=["nuw", "nsw"])] + list(idx[1:])
        store(b, ctx.read(update, _flat_index(b, idx, update.shape)), out,
              linearise(b, target, node.shape), node.dtype)



def emit_take(ctx, node, out):
    """Rows ``x[clip(idx, 0, rows - 1)]``: a gather that can never read out of bounds.
    A large one (a minibatch) is copied by the pool's threads at once."""
    x, idx = node.inputs

    def gather(kctx, out, first, count):
        kb = kctx.b
        with counted_loop(kb, count, "tk") as j:
            r = kb.add(first, j, flags=["nuw", "nsw"])
            row = clamped_start(kb, kctx.read(idx, Index((r,), r)), 1, x.shape[0])
            with loop_nest(kb, x.shape[1:], "tk") as rest:
                store(kb, kctx.read(x, Index((row,) + tuple(rest))), out,
                      linearise(kb, [r] + list(rest), node.shape), node.dtype)

    ctx.by_rows(out, idx.shape[0], node.type.size, gather)


def emit_scatter_add(ctx, node, out):
    """``x`` with ``updates[k]`` added to row ``clip(idx[k])``, k in order (so repeated
    rows accumulate deterministically); never writes out of bounds."""
    b, (x, idx, updates) = ctx.b, node.inputs
    with loop_nest(b, x.shape, "sa") as axes:
        store(b, ctx.read(x, _flat_index(b, axes, x.shape)), out,
              linearise(b, axes, x.shape), node.dtype)
    add = (lambda p, q: b.fadd(p, q, flags=ctx.flags)) if node.type.is_float else b.add
    with loop_nest(b, idx.shape, "sa") as (r,):
        row = clamped_start(b, ctx.read(idx, Index((r,), r)), 1, x.shape[0])
        with loop_nest(b, x.shape[1:], "sa") as rest:
            where = linearise(b, [row] + list(rest), x.shape)
            value = ctx.read(updates, _flat_index(b, [r] + list(rest), updates.shape))
            store(b, add(load(b, out, where, node.dtype), value), out, where, node.dtype)
