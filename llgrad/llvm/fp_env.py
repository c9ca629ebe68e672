"""Subnormal floats flushed to zero while generated code runs, as ``-ffast-math`` does.

On x86 an operation that reads or makes a subnormal float (magnitude below 2.2e-308
in float64, 1.2e-38 in float32) runs through a microcode assist, some hundred cycles
instead of a few: a gradient where a few percent of the values underflow (a mixture
model's tiny responsibilities) runs at half speed.  GCC and Clang's ``-ffast-math``
(through crtfastmath) and XLA's CPU runtime therefore set two bits of the thread's
MXCSR register: FTZ (a subnormal result becomes a zero of its sign) and DAZ (a
subnormal input is read as zero).  MXCSR belongs to one thread, and the caller's
numpy must keep IEEE subnormals, so a function entered from outside its module (the
entry point, a part that a pool worker runs) saves the register, sets both bits and
puts the saved value back before each return; the functions it calls inherit the mode.
Every function of such a module is also told the mode (``"denormal-fp-math"``), so
that LLVM's constant folding flushes as the hardware will.
"""
from __future__ import annotations

import platform

from llvmlite import ir

from llgrad.llvm.scalar import PTR, declare

I32 = ir.IntType(32)

#: MXCSR's flush-to-zero (bit 15) and denormals-are-zero (bit 6) bits
FLUSH_BITS = 0x8040

#: what each function of a flushing module tells LLVM: outputs and inputs both flushed,
#: keeping the sign (``preserve-sign``), for float64 and float32
MODE_ATTRIBUTES = ('"denormal-fp-math"="preserve-sign,preserve-sign"',
                   '"denormal-fp-math-f32"="preserve-sign,preserve-sign"')


def available() -> bool:
    """Whether this machine has MXCSR (x86-64; elsewhere nothing is flushed)."""
    return platform.machine().lower() in ("x86_64", "amd64")


def flush_subnormals(module: ir.Module, entries) -> None:
    """Run the finished functions ``entries`` of ``module`` with subnormals flushed
    (MXCSR saved, FTZ and DAZ set, restored on every return), and tell every function
    defined in ``module`` that it runs so (a function the entries do not reach must do
    no float arithmetic).  Nothing changes where ``available()`` is false."""
    if not available():
        return
    for fn in entries:
        _flushed_while_running(fn)
    for fn in module.functions:
        if fn.blocks:
            for attribute in MODE_ATTRIBUTES:
                set.add(fn.attributes, attribute)   # string attributes pass unchecked
            # llvmlite keeps the text of a function printed before (kernels are
            # compared as text): drop it, or the module would print the old one
            for block in fn.blocks:
                block._clear_string_cache()
            fn._clear_string_cache()


def keep_subnormals(b: ir.IRBuilder) -> None:
    """Clear FTZ and DAZ on the thread running ``b``'s code: what a pool worker does
    first, since a new thread inherits its creator's MXCSR and the pool starts its
    workers from inside whatever call first splits work, flushing or not."""
    if available():
        _set_bits(b, b.alloca(I32, name="mxcsr"), ~FLUSH_BITS & 0xFFFFFFFF, b.and_)


def _set_bits(b: ir.IRBuilder, cell, bits: int, combine) -> None:
    """MXCSR := combine(MXCSR, bits), through ``cell`` (an i32 alloca that keeps the
    value read)."""
    save = declare(b.module, "llvm.x86.sse.stmxcsr", ir.VoidType(), [PTR])
    b.call(save, [cell])
    changed = b.alloca(I32, name="mxcsr.set")
    b.store(combine(b.load(cell, typ=I32), ir.Constant(I32, bits)), changed)
    b.call(_restore(b.module), [changed])


def _restore(module: ir.Module) -> ir.Function:
    return declare(module, "llvm.x86.sse.ldmxcsr", ir.VoidType(), [PTR])


def _flushed_while_running(fn: ir.Function) -> None:
    """Wrap ``fn``'s body: set FTZ and DAZ first, restore the caller's MXCSR at each
    ``ret``."""
    returns = [block.terminator for block in fn.blocks
               if isinstance(block.terminator, ir.Ret)]
    b = ir.IRBuilder()
    b.position_at_start(fn.entry_basic_block)
    saved = b.alloca(I32, name="mxcsr.saved")
    _set_bits(b, saved, FLUSH_BITS, b.or_)
    for ret in returns:
        b.position_before(ret)
        b.call(_restore(fn.module), [saved])
