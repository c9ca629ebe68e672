"""``cond``: a real branch.  Each branch graph becomes an internal function (through
``lower_graph``, as a loop body does, with the same packed-argument convention, so conds
nest and hold loops), and the kernel is an LLVM ``switch`` on the clamped index that
calls only the chosen one.  A branch not taken does no work and touches no memory.

The branches read the cond's operands where they lie and write their results straight
into the cond's buffer, part after part (see ``scalar.part_offset``); they share one
arena, the largest any of them needs (``scratch_bytes``), since only one runs.
"""
from __future__ import annotations

from llvmlite import ir

from llgrad.llvm.indexing import Index
from llgrad.llvm.scalar import I8, PTR, i64, part_offset


def scratch_bytes(node, branch_arena_bytes: int):
    return (branch_arena_bytes,)


def _clamped(b, index, last: int):
    index = b.select(b.icmp_signed("<", index, i64(0)), i64(0), index)
    return b.select(b.icmp_signed(">", index, i64(last)), i64(last), index)


def emit_cond(ctx, node, out):
    b, state = ctx.b, ctx.state
    index, operands = node.inputs[0], node.inputs[1:]
    plans = list(zip(*ctx.body))   # (fusion, memory) per branch
    functions = [state.lower_graph(fusion, memory, f"{b.function.name}.branch{k}",
                                   internal=True)
                 for k, (fusion, memory) in enumerate(plans)]

    n_out = len(node.type)
    packed = b.alloca(ir.ArrayType(PTR, len(operands) + n_out + 1), name="packed")

    def put(slot, ptr):
        b.store(ptr, b.gep(packed, [i64(0), i64(slot)], inbounds=True))

    for k, x in enumerate(operands):
        put(k, ctx.pointer(x))
    for k in range(n_out):
        put(len(operands) + k, b.gep(out, [i64(part_offset(node.type, k))], inbounds=True,
                                     source_etype=I8))
    put(len(operands) + n_out, ctx.scratch[0])
    args = [b.gep(packed, [i64(0), i64(0)], inbounds=True)]

    chosen = _clamped(b, ctx.read(index, Index(None, i64(0))), len(functions) - 1)
    done = b.append_basic_block("cond.done")
    blocks = [b.append_basic_block(f"cond.branch{k}") for k in range(len(functions))]
    switch = b.switch(chosen, blocks[-1])
    for k, block in enumerate(blocks[:-1]):
        switch.add_case(i64(k), block)
    for fn, block in zip(functions, blocks):
        b.position_at_end(block)
        b.call(fn, args)
        b.branch(done)
    b.position_at_end(done)
