"""Transcendental functions: LLVM intrinsics where LLVM has them, libm otherwise.

libm functions are declared ``memory(none) nounwind willreturn`` so that LLVM may
hoist, vectorise and delete calls to them like intrinsics (a plain declaration
blocks vectorisation).  Names are resolved by the JIT at load time.
"""
from __future__ import annotations

from llvmlite import ir

from .scalar import REGISTER

_SUFFIX = {"float64": "f64", "float32": "f32"}

#: functions with an LLVM intrinsic ``llvm.<name>.<type>``
INTRINSICS = frozenset({"exp", "log", "sin", "cos", "sqrt", "tanh", "pow", "fabs"})
#: functions only libm has (float32 variants carry an ``f`` suffix)
LIBM = frozenset({"log1p", "expm1"})


def _pure(fn: ir.Function) -> ir.Function:
    fn.attributes.add("readnone")   # parsed by LLVM as memory(none)
    fn.attributes.add("nounwind")
    set.add(fn.attributes, "willreturn")  # not in llvmlite's list, but valid LLVM
    return fn


def declare(module: ir.Module, name: str, dtype: str, arity: int = 1) -> ir.Function:
    """The declaration of math function ``name`` for ``dtype``, created once per module."""
    t = REGISTER[dtype]
    if name in INTRINSICS:
        symbol = f"llvm.{name}.{_SUFFIX[dtype]}"
    elif name in LIBM:
        symbol = name if dtype == "float64" else name + "f"
    else:
        raise KeyError(f"no math function {name!r}")
    existing = module.globals.get(symbol)
    if existing is not None:
        return existing
    return _pure(ir.Function(module, ir.FunctionType(t, [t] * arity), symbol))


def call(b: ir.IRBuilder, name: str, args, dtype: str, fastmath=()):
    fn = declare(b.module, name, dtype, len(args))
    return b.call(fn, list(args), fastmath=fastmath)
