"""Independent scalar libm calls of straight-line code, batched into libmvec calls.

Loop-free code (the gradient of an expression of a few scalars) has no loop for
LLVM's loop vectoriser, and its SLP vectoriser groups calls to libm only now and
then, in pairs: fifty ``exp`` of fifty terms stayed fifty scalar calls, most of the
native time of such a gradient.  ``batch_calls`` schedules a straight-line block by *call
depth* (the number of batchable calls on the longest chain of operands leading to
an instruction): calls to one function at one depth cannot depend on each other,
so each such group runs as vector calls (``insertelement`` the arguments, call the
libmvec variant, ``extractelement`` the results), 8 doubles per AVX-512 call.
A group's last partial vector takes the narrowest variant that holds it, its
unused lanes repeating lane 0's arguments (so they meet no special case lane 0
does not); a lone call stays scalar.  Every load has depth 0 and so moves ahead
of any store of a later depth: no load may read what a store of the block wrote
(``region`` emits blocks so).
"""
from __future__ import annotations

from collections import defaultdict

from llvmlite import ir

from llgrad.compiler.codegen.math import vector_variants
from llgrad.llvm.scalar import i64

#: instructions a batched block may hold: all of them may move, none has operands
#: outside ``operands``
_MOVABLE = (ir.CallInstr, ir.SelectInstr, ir.CompareInstr, ir.CastInstr, ir.LoadInstr,
            ir.StoreInstr, ir.GEPInstr)
_ARITHMETIC = frozenset({"fadd", "fsub", "fmul", "fdiv", "frem", "fneg", "add", "sub",
                         "mul", "sdiv", "udiv", "srem", "urem", "and", "or", "xor", "shl",
                         "lshr", "ashr"})


def _movable(instr) -> bool:
    if isinstance(instr, ir.CallInstr):
        return "readnone" in instr.callee.attributes or instr.callee.name.startswith("llvm.")
    return isinstance(instr, _MOVABLE) or (type(instr) is ir.Instruction
                                           and instr.opname in _ARITHMETIC)


def batch_calls(state, block: ir.Block) -> int:
    """Rewrite ``block`` (straight-line, not yet terminated) so that independent calls
    of one libm function run as libmvec vector calls; returns how many scalar calls
    were replaced (0: the block is left exactly as it was)."""
    instructions = list(block.instructions)
    if not all(_movable(i) for i in instructions):
        return 0
    variants = {id(i): vector_variants(state, i.callee)
                for i in instructions if isinstance(i, ir.CallInstr)}
    batchable = {key for key, v in variants.items() if v}
    depth, waves = {}, defaultdict(lambda: ([], []))
    for instr in instructions:
        d = max((depth[id(op)] + (id(op) in batchable) for op in instr.operands
                 if id(op) in depth), default=0)
        depth[id(instr)] = d
        waves[d][id(instr) in batchable].append(instr)
    waves = [(plain, _by_function(calls)) for _, (plain, calls) in sorted(waves.items())]
    if all(len(group) == 1 for _, groups in waves for group in groups):
        return 0

    block.instructions = []
    b = ir.IRBuilder(block)
    replaced = {}
    for plain, groups in waves:
        block.instructions.extend(plain)
        for group in groups:
            b.position_at_end(block)
            replaced.update(_vector_calls(b, group, variants[id(group[0])]))
    for instr in block.instructions:
        for op in instr.operands:
            if id(op) in replaced:
                instr.replace_usage(op, replaced[id(op)])
    return len(replaced)


def _by_function(calls):
    """Calls grouped by callee and fast-math flags, in first-call order."""
    groups = {}
    for call in calls:
        groups.setdefault((call.callee.name, tuple(sorted(call.fastmath))), []).append(call)
    return list(groups.values())


def _vector_calls(b: ir.IRBuilder, group, variants: dict) -> dict:
    """``{id(scalar call): its lane of a vector call}`` for a group of independent
    calls of one function; a lone leftover call stays where it is."""
    widest = max(variants)
    out = {}
    for start in range(0, len(group), widest):
        chunk = group[start:start + widest]
        if len(chunk) == 1:
            b.block.instructions.append(chunk[0])
            b.position_at_end(b.block)
            continue
        lanes = min(n for n in variants if n >= len(chunk))
        fn = variants[lanes]
        vectors = []
        for k in range(len(chunk[0].args)):
            v = ir.Constant(fn.function_type.args[k], ir.Undefined)
            for lane in range(lanes):
                v = b.insert_element(v, chunk[lane if lane < len(chunk) else 0].args[k],
                                     i64(lane))
            vectors.append(v)
        result = b.call(fn, vectors, fastmath=tuple(chunk[0].fastmath))
        for lane, call in enumerate(chunk):
            out[id(call)] = b.extract_element(result, i64(lane))
    return out
