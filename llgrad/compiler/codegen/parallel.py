"""Large elementwise kernels split across threads, from the generated code itself.

A flat elementwise kernel takes an extra element range ``[lo, hi)``.  When its output
has at least ``MIN_ELEMENTS`` elements, the entry point cuts the range into ``parts``
pieces (on 64-element boundaries), starts a POSIX thread for every piece but the first
through a small trampoline, runs the first piece itself and joins the others.  Each
element is computed exactly as in one thread (no reduction is split), so the results
are identical bit for bit; a thread that cannot be started leaves its piece to the
calling thread.  Small kernels never pay for a thread: starting one costs tens of
microseconds, so only outputs of 128 Ki elements and more are split.
``pthread_create``/``pthread_join`` are resolved by name when the code is loaded.
"""
from __future__ import annotations

import os
from contextlib import contextmanager

from llvmlite import ir

from .loops import counted_loop
from .scalar import I64, PTR, declare, i64

MIN_ELEMENTS = 1 << 17
_I32 = ir.IntType(32)


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


def _trampoline(module, kernel: ir.Function, n_ptrs: int) -> ir.Function:
    """``ptr <kernel>.worker(ptr task)``: task is ``[pointers..., lo, hi]``, all as ``ptr``."""
    name = kernel.name + ".worker"
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    fn = ir.Function(module, ir.FunctionType(PTR, [PTR]), name)
    fn.linkage = "internal"
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    slot = lambda k: b.load(b.gep(fn.args[0], [i64(k)], inbounds=True,  # noqa: E731
                                  source_etype=PTR), typ=PTR)
    args = [slot(k) for k in range(n_ptrs)] + [b.ptrtoint(slot(n_ptrs + k), I64)
                                               for k in (0, 1)]
    b.call(kernel, args)
    b.ret(ir.Constant(PTR, None))
    return fn


def call_split(b: ir.IRBuilder, kernel: ir.Function, pointers, size: int, parts: int):
    """Run ``kernel(*pointers, lo, hi)`` over ``[0, size)`` in ``parts`` threads."""
    module = b.module
    create = declare(module, "pthread_create", _I32, [PTR, PTR, PTR, PTR])
    join = declare(module, "pthread_join", _I32, [I64, PTR])
    worker = _trampoline(module, kernel, len(pointers))
    bounds = [min(size, (size * k // parts + 63) // 64 * 64) for k in range(parts)] + [size]
    started = []
    for k in range(1, parts):
        lo, hi = bounds[k], bounds[k + 1]
        if lo >= hi:
            continue
        with b.goto_entry_block():
            task = b.alloca(PTR, size=i64(len(pointers) + 2))
            tid = b.alloca(I64)
        values = [*pointers, b.inttoptr(i64(lo), PTR), b.inttoptr(i64(hi), PTR)]
        for j, value in enumerate(values):
            b.store(value, b.gep(task, [i64(j)], inbounds=True, source_etype=PTR))
        rc = b.call(create, [tid, ir.Constant(PTR, None), worker, task], name="pthread_rc")
        started.append((b.icmp_signed("==", rc, ir.Constant(_I32, 0)), tid, lo, hi))
    b.call(kernel, [*pointers, i64(0), i64(bounds[1])])
    for ok, tid, lo, hi in started:
        with b.if_else(ok) as (joined, failed):
            with joined:
                b.call(join, [b.load(tid, typ=I64), ir.Constant(PTR, None)])
            with failed:   # no thread: this piece runs here
                b.call(kernel, [*pointers, i64(lo), i64(hi)])


@contextmanager
def range_loop(b: ir.IRBuilder, lo, hi):
    """``for i in range(lo, hi)`` as a counted loop LLVM vectorises; yields ``i``."""
    with counted_loop(b, b.sub(hi, lo, flags=["nsw"]), "e") as j:
        yield b.add(lo, j, flags=["nuw", "nsw"])
