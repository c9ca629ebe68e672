"""``checkpoint``: the body graph lowered to a function called once.

The planner gives the body its own fusion and memory plan (``ctx.body``), as for a
loop body: its intermediate values live in a scratch arena of this one kernel, so
nothing of the region outlives the call but its results.  Those are the parts of the
node's buffer (``scalar.part_offset``), which the body writes directly.
"""
from __future__ import annotations

from llvmlite import ir

from llgrad.llvm.scalar import I8, PTR, i64, part_offset


def scratch_bytes(node, body_arena_bytes: int):
    return (body_arena_bytes,)


def lower_body(ctx, node, n_carried: int = 0):
    """The function of ``node``'s body (planned in ``ctx.body``), its first
    ``n_carried`` values after the step marked as written anew every step."""
    state, (fusion, memory) = ctx.state, ctx.body
    count = state.loop_bodies
    state.loop_bodies += 1
    body = node.attrs["body"]
    state.carried.update(id(p) for p in body.inputs[1:1 + n_carried])
    return state.lower_graph(fusion, memory, f"{ctx.b.function.name}.body{count}",
                             internal=True)


def emit_call(ctx, node, out):
    b, body = ctx.b, node.attrs["body"]
    body_fn = lower_body(ctx, node)
    pointers = [ctx.pointer(x) for x in node.inputs]
    pointers += [b.gep(out, [i64(part_offset(node.type, k))], inbounds=True, source_etype=I8)
                 for k in range(len(body.outputs))]
    pointers.append(ctx.scratch[0])
    packed = b.alloca(ir.ArrayType(PTR, len(pointers)), name="packed")
    for slot, ptr in enumerate(pointers):
        b.store(ptr, b.gep(packed, [i64(0), i64(slot)], inbounds=True))
    b.call(body_fn, [b.gep(packed, [i64(0), i64(0)], inbounds=True)])
