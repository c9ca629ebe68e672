"""Work split across threads by the generated code itself, on the pool of ``runtime.pool``.

``run_parts`` outlines code that computes one part of a result and has the pool run
every part; ``call_split`` cuts a flat elementwise kernel's element range ``[lo, hi)``
into pieces on 64-element boundaries.  Each element is computed exactly as in one
thread (no single sum is split: a pipelined product hands its partial sums on, see
``matmul._emit_k_stages``; ``matvec`` cuts ``X.T @ r`` into chunks of rows fixed by
the shape alone), so the results are identical bit for bit whatever the number of
threads, and a part the pool cannot take runs on the calling thread.
Small kernels are not split: see ``MIN_ELEMENTS``.  The pool is resolved by name
when the code is loaded, like BLAS.
"""
from __future__ import annotations

import os
from contextlib import contextmanager

from llvmlite import ir

from llgrad.llvm.loops import counted_loop
from llgrad.llvm.scalar import I64, PTR, declare, i64
from llgrad.runtime.pool import SYMBOL as POOL_SYMBOL

#: outputs split from this size: below it, handing out and joining a part costs the
#: pool much of what splitting saves.  Re-measure: time a 2**15-element float32 update
#: with ``llgrad.profile`` under ``LLGRAD_THREADS=1`` and ``LLGRAD_THREADS=2``
MIN_ELEMENTS = 1 << 15

#: pieces start on multiples of this many elements: 64 bytes or more, a cache line, so
#: no two threads write one line
LINE_ELEMENTS = 64
#: ``void part(ptr ctx, i64 part)``: what the pool runs
_TASK = ir.FunctionType(ir.VoidType(), [PTR, I64])


def default_parts() -> int:
    """Threads to split a large kernel into: the usable cores (``LLGRAD_THREADS``
    overrides; 1 turns splitting off), at most 8."""
    wanted = os.environ.get("LLGRAD_THREADS")
    if wanted:
        return max(1, min(int(wanted), 8))
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


def split_unit(threads: int, elements: int, rows: int, flat: bool) -> int | None:
    """The boundary an elementwise loop over ``elements`` (``rows`` rows) is cut on
    across ``threads`` (elements when ``flat``, else rows: whole cache lines where a row
    is shorter than a line), or None when it runs whole (small, or fewer rows than
    threads)."""
    if threads < 2 or elements < MIN_ELEMENTS or not (flat or rows >= threads):
        return None
    return LINE_ELEMENTS if flat else -(-LINE_ELEMENTS // max(1, elements // rows))


def run_parts(b: ir.IRBuilder, name: str, parts: int, pointers, emit_part) -> None:
    """Run the code ``emit_part(builder, pointers, part)`` emits once for each ``part``
    (an ``i64`` value) in ``[0, parts)``, on the pool's threads (``runtime.pool``).

    The code is outlined into ``void name(ptr ctx, i64 part)``, where ``ctx`` holds
    ``pointers``; the pool runs part 0 on the calling thread."""
    _call_parts(b, _outline(b.module, name, len(pointers), emit_part), pointers, parts)


def _outline(module, name: str, n_pointers: int, emit_part) -> ir.Function:
    fn = ir.Function(module, _TASK, module.get_unique_name(name))
    fn.linkage = "internal"
    pb = ir.IRBuilder(fn.append_basic_block("entry"))
    ctx, part = fn.args
    inner = [pb.load(pb.gep(ctx, [i64(k)], inbounds=True, source_etype=PTR), typ=PTR)
             for k in range(n_pointers)]
    emit_part(pb, inner, part)
    pb.ret_void()
    return fn


def _call_parts(b: ir.IRBuilder, fn: ir.Function, pointers, parts: int) -> None:
    run = declare(b.module, POOL_SYMBOL, ir.VoidType(), [_TASK.as_pointer(), PTR, I64])
    with b.goto_entry_block():
        cells = b.alloca(PTR, size=i64(max(1, len(pointers))))
    for k, pointer in enumerate(pointers):
        b.store(pointer, b.gep(cells, [i64(k)], inbounds=True, source_etype=PTR))
    b.call(run, [fn, cells, i64(parts)])


def tasks(module: ir.Module) -> list[ir.Function]:
    """The functions of ``module`` that it hands to the pool: what a worker thread
    enters (``fp_env`` sets each one's float mode, which is the thread's own)."""
    found = {}
    for fn in module.functions:
        for block in fn.blocks:
            for instr in block.instructions:
                if (isinstance(instr, ir.CallInstr)
                        and getattr(instr.callee, "name", None) == POOL_SYMBOL):
                    found[instr.args[0].name] = instr.args[0]
    return list(found.values())


def piece(b: ir.IRBuilder, size: int, parts: int, part, unit: int | None = None):
    """``[lo, hi)`` of ``part`` when ``size`` elements (or rows) are cut into ``parts``
    pieces on ``unit`` boundaries (default ``LINE_ELEMENTS``)."""
    unit = LINE_ELEMENTS if unit is None else unit

    def bound(k):
        cut = b.udiv(b.mul(k, i64(size)), i64(parts))
        return b.select(b.icmp_unsigned("<", k, i64(parts)),
                        b.mul(b.udiv(b.add(cut, i64(unit - 1)), i64(unit)), i64(unit)),
                        i64(size))
    lo, hi = bound(part), bound(b.add(part, i64(1)))
    clamp = lambda v: b.select(b.icmp_unsigned("<", v, i64(size)), v, i64(size))  # noqa: E731
    return clamp(lo), clamp(hi)


def call_split(state, b: ir.IRBuilder, kernel: ir.Function, pointers, size: int, parts: int,
               unit: int | None = None):
    """Run ``kernel(*pointers, lo, hi)`` over ``[0, size)`` in ``parts`` pieces cut on
    ``unit`` boundaries (see ``piece``).  One outlined part function serves every split
    of the same kernel, size and parts: a kernel that ``module._shared`` found
    identical to an earlier one is split from each place that computes it."""
    def emit_part(pb, inner, part):
        lo, hi = piece(pb, size, parts, part, unit)
        pb.call(kernel, [*inner, lo, hi])
    key = (kernel.name, size, parts, unit)
    if key not in state.split_parts:
        state.split_parts[key] = _outline(b.module, kernel.name + ".part", len(pointers),
                                          emit_part)
    _call_parts(b, state.split_parts[key], pointers, parts)


@contextmanager
def range_loop(b: ir.IRBuilder, lo, hi):
    """``for i in range(lo, hi)`` as a counted loop LLVM vectorises; yields ``i``."""
    with counted_loop(b, b.sub(hi, lo, flags=["nsw"]), "e") as j:
        yield b.add(lo, j, flags=["nuw", "nsw"])
