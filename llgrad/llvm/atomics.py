"""What threads of generated code use to hand work to each other: atomic stores and
polling that lets the other hyperthread or core run.

``IRBuilder.store_atomic`` of llvmlite 0.50 reads the pointee type of its pointer,
which opaque pointers no longer have; the instruction itself is fine, so it is made
here directly.
"""
from __future__ import annotations

import platform

from llvmlite import ir

from llgrad.llvm.scalar import I64, declare

X86 = platform.machine().lower() in ("x86_64", "amd64")


def store_atomic(b: ir.IRBuilder, value, ptr, ordering: str, align: int) -> None:
    b._insert(ir.instructions.StoreAtomicInstr(b.block, value, ptr, ordering, align))


def relax(b: ir.IRBuilder) -> None:
    """One round of a polling loop: x86's ``pause`` (its length varies by CPU), nothing
    elsewhere."""
    if X86:
        b.call(declare(b.module, "llvm.x86.sse2.pause", ir.VoidType(), []), [])


def publish(b: ir.IRBuilder, counter, value) -> None:
    """Store ``value`` to the ``i64`` at ``counter`` after everything written before
    (a release store): a thread that sees it sees those writes too."""
    store_atomic(b, value, counter, "release", 8)


def wait_beyond(b: ir.IRBuilder, counter, value) -> None:
    """Poll until the ``i64`` at ``counter`` exceeds ``value`` (another thread's
    ``publish``)."""
    head, wait, done = (b.append_basic_block(n) for n in ("poll", "poll.wait", "poll.done"))
    b.branch(head)
    b.position_at_end(head)
    seen = b.load_atomic(counter, "acquire", 8, typ=I64)
    b.cbranch(b.icmp_signed(">", seen, value), done, wait)
    b.position_at_end(wait)
    relax(b)
    b.branch(head)
    b.position_at_end(done)
