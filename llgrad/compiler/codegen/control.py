"""``loop``: a counted loop whose body is a Graph, lowered to a function called per step.

The planner gives the body graph its own fusion and memory plan (``ctx.body``), and it
becomes an internal function with the same packed-argument convention as the entry
point, so loops nest.  Per step it reads the carried values from one buffer set and
writes the new ones to the other (the body may still read an old value after writing
a new one); the sets swap roles every step, so nothing is copied between steps.
Per-step results go straight into their row of the stacked output.  The loop's results
live in one buffer, part after part (see ``scalar.part_offset``).  A loop with a
``runtime_count`` reads its trip count (clamped to the static bound) when it starts,
picks the buffer set that holds the final carried values by its parity, and zeroes
the stacked rows it did not run, as the interpreter does.
"""
from __future__ import annotations

from llvmlite import ir

from llgrad.llvm.indexing import Index
from llgrad.llvm.loops import counted_loop, loop_nest
from llgrad.llvm.scalar import I8, I64, PTR, const, i64, load, nbytes, part_offset, store


def scratch_bytes(node, body_arena_bytes: int):
    """Carried values twice (current and next), then the body's arena."""
    carried = [nbytes(x.type) for x in node.inputs[:node.attrs["n_carried"]]]
    return tuple(carried) + tuple(carried) + (body_arena_bytes,)


def _copy(b, dst, dtype, size, value_at):
    with loop_nest(b, (size,), "cp") as (i,):
        store(b, value_at(i), dst, i, dtype)


def _clamped_count(ctx, count, trip: int):
    """The runtime trip count, clamped to [0, trip] (as a cond's index is)."""
    b = ctx.b
    n = ctx.read(count, Index.scalar())
    n = b.select(b.icmp_signed("<", n, i64(0)), i64(0), n)
    return b.select(b.icmp_signed(">", n, i64(trip)), i64(trip), n)


def _zero_rows_from(b, out, node, nc: int, trip: int, count):
    """Zero the stacked per-step rows from row ``count`` on (the steps not run)."""
    for k, t in enumerate(node.type[nc:]):
        part = b.gep(out, [i64(part_offset(node.type, nc + k))], inbounds=True,
                     source_etype=I8)
        first = b.mul(count, i64(t.size // trip if trip else 0), flags=["nuw", "nsw"])
        with counted_loop(b, b.sub(i64(t.size), first), "zero") as j:
            store(b, const(t.dtype, 0), part, b.add(first, j), t.dtype)


def emit_loop(ctx, node, out):
    b, state = ctx.b, ctx.state
    body, trip, nc = node.attrs["body"], node.attrs["trip_count"], node.attrs["n_carried"]
    runtime_count = node.attrs.get("runtime_count", False)
    inputs = node.inputs[:-1] if runtime_count else node.inputs
    carried, invariants = inputs[:nc], inputs[nc:]
    steps = _clamped_count(ctx, node.inputs[-1], trip) if runtime_count else trip
    fusion, memory = ctx.body
    count = state.loop_bodies
    state.loop_bodies += 1
    # values the loop writes anew every step, in split bands of rows (see
    # matmul._emit_k_stages, which reads such a weight where those bands lie)
    state.carried.update(id(p) for p in body.inputs[1:1 + nc])
    body_fn = state.lower_graph(fusion, memory, f"{b.function.name}.body{count}", internal=True)

    n_slots = len(body.inputs) + len(body.outputs) + 1
    packed = b.alloca(ir.ArrayType(PTR, n_slots), name="packed")
    step = b.alloca(I64, name="step")
    current, nxt, arena = ctx.scratch[:nc], ctx.scratch[nc:2 * nc], ctx.scratch[2 * nc]

    def put(slot, ptr):
        b.store(ptr, b.gep(packed, [i64(0), i64(slot)], inbounds=True))

    for x, a in zip(carried, current):
        _copy(b, a, x.dtype, x.type.size, lambda i, x=x: ctx.read(x, Index(None, i)))
    put(0, step)
    for k, x in enumerate(invariants):
        put(1 + nc + k, ctx.pointer(x))
    base = len(body.inputs)
    put(n_slots - 1, arena)

    ys = node.type[nc:]
    with counted_loop(b, steps, "step") as i:
        b.store(i, step)
        odd = b.trunc(i, ir.IntType(1))
        for k, (a, n) in enumerate(zip(current, nxt)):  # even steps read A, odd steps B
            put(1 + k, b.select(odd, n, a))
            put(base + k, b.select(odd, a, n))
        for k, t in enumerate(ys):
            row_bytes = nbytes(t) // trip if trip else 0
            offset = b.add(i64(part_offset(node.type, nc + k)),
                           b.mul(i, i64(row_bytes), flags=["nuw", "nsw"]), flags=["nuw", "nsw"])
            put(base + nc + k, b.gep(out, [offset], inbounds=True, source_etype=I8))
        b.call(body_fn, [b.gep(packed, [i64(0), i64(0)], inbounds=True)])
    if runtime_count:
        odd = b.trunc(steps, ir.IntType(1))
        final = [b.select(odd, n, a) for a, n in zip(current, nxt)]
        _zero_rows_from(b, out, node, nc, trip, steps)
    else:
        final = current if trip % 2 == 0 else nxt
    for k, (x, a) in enumerate(zip(carried, final)):
        dst = b.gep(out, [i64(part_offset(node.type, k))], inbounds=True, source_etype=I8)
        _copy(b, dst, x.dtype, x.type.size, lambda j, a=a, x=x: load(b, a, j, x.dtype))
