"""Scalars in LLVM: the register type of each dtype, memory access, constants.

In registers a bool is ``i1``; in memory it is one byte (``i8``) as in numpy, so
loads and stores of bools convert at the boundary and nowhere else.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir

I1 = ir.IntType(1)
I8 = ir.IntType(8)
I64 = ir.IntType(64)
PTR = ir.PointerType()

#: register type of each llgrad dtype
REGISTER = {"float64": ir.DoubleType(), "float32": ir.FloatType(), "int64": I64, "bool": I1}
#: memory type of each llgrad dtype
MEMORY = {"float64": ir.DoubleType(), "float32": ir.FloatType(), "int64": I64, "bool": I8}
ITEMSIZE = {"float64": 8, "float32": 4, "int64": 8, "bool": 1}


def is_float(dtype: str) -> bool:
    return dtype in ("float64", "float32")


def const(dtype: str, value) -> ir.Constant:
    """An inline scalar constant (NaN and infinities included)."""
    if is_float(dtype):
        value = float(np.float32(value)) if dtype == "float32" else float(value)
        return ir.Constant(REGISTER[dtype], value)
    if dtype == "bool":
        return ir.Constant(I1, int(bool(value)))
    return ir.Constant(I64, int(value))


def i64(value: int) -> ir.Constant:
    return ir.Constant(I64, int(value))


def extremum(b: ir.IRBuilder, x, y, dtype: str, order: str):
    """np.maximum (``order`` ">=") or np.minimum ("<=") of two values, exactly: for
    floats ``(x >= y or isnan(x)) ? x : y``, which propagates NaN."""
    if is_float(dtype):
        keep = b.or_(b.fcmp_ordered(order, x, y), b.fcmp_unordered("uno", x, x))
        return b.select(keep, x, y)
    return b.select(b.icmp_signed(order, x, y), x, y)


def declare(module: ir.Module, name: str, ret, args) -> ir.Function:
    """The external function or intrinsic ``name`` (BLAS, pthreads, llvm.*), declared
    once per module; external symbols are resolved by name when the code is loaded."""
    fn = module.globals.get(name)
    return fn if fn is not None else ir.Function(module, ir.FunctionType(ret, args), name)


def copy_bytes(b: ir.IRBuilder, dst, src, size) -> None:
    """``memcpy(dst, src, size)`` (``size`` an i64 value)."""
    fn = b.module.declare_intrinsic("llvm.memcpy", [PTR, PTR, I64])
    b.call(fn, [dst, src, size, ir.Constant(ir.IntType(1), 0)])


def load(b: ir.IRBuilder, ptr, linear, dtype: str):
    """Element ``linear`` of a buffer of ``dtype``, in register form."""
    addr = b.gep(ptr, [linear], inbounds=True, source_etype=MEMORY[dtype])
    value = b.load(addr, typ=MEMORY[dtype])
    return b.trunc(value, I1) if dtype == "bool" else value


def store(b: ir.IRBuilder, value, ptr, linear, dtype: str) -> None:
    addr = b.gep(ptr, [linear], inbounds=True, source_etype=MEMORY[dtype])
    if dtype == "bool":
        value = b.zext(value, I8)
    b.store(value, addr)


def strides(shape) -> tuple[int, ...]:
    """Row-major strides in elements."""
    out, acc = [], 1
    for n in reversed(shape):
        out.append(acc)
        acc *= n
    return tuple(reversed(out))


def linearise(b: ir.IRBuilder, axes, shape):
    """The row-major element offset of a multi-index (size-1 axes contribute nothing)."""
    total = None
    for a, n, s in zip(axes, shape, strides(shape)):
        if n == 1:
            continue
        term = a if s == 1 else b.mul(a, i64(s), flags=["nuw", "nsw"])
        total = term if total is None else b.add(total, term, flags=["nuw", "nsw"])
    return total if total is not None else i64(0)


ALIGN = 64


def aligned(nbytes: int) -> int:
    return -(-nbytes // ALIGN) * ALIGN


def nbytes(type_) -> int:
    """Bytes of a value; a tuple (multi-result node) stores its parts 64-byte aligned."""
    if isinstance(type_, tuple):
        return sum(aligned(nbytes(t)) for t in type_)
    return type_.size * ITEMSIZE[type_.dtype]


def part_offset(type_: tuple, index: int) -> int:
    return sum(aligned(nbytes(t)) for t in type_[:index])
