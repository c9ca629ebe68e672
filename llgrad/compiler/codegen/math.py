"""Transcendental functions: libmvec, LLVM intrinsics or libm.

libm functions are declared ``memory(none) nounwind willreturn`` so that LLVM may
hoist, vectorise and delete calls to them like intrinsics (a plain declaration
blocks vectorisation).  LLVM's vectoriser would turn ``llvm.exp.v4f64`` back into
four scalar calls, so when glibc's libmvec is loaded (``CodegenOptions.vector_isas``)
the scalar libm function carries a ``vector-function-abi-variant`` attribute naming
its libmvec entry points (``_ZGVdN4v_exp`` for 4 doubles with AVX2...), and the
vectoriser calls those.  The vector declarations are kept in ``llvm.compiler.used``
so that nothing deletes them before the vectoriser runs.  All names are resolved by
the JIT at load time, never baked in.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from llvmlite import ir

from llgrad.llvm.scalar import I64, REGISTER, const

_SUFFIX = {"float64": "f64", "float32": "f32"}

#: functions with an LLVM intrinsic ``llvm.<name>.<type>``
INTRINSICS = frozenset({"exp", "log", "sin", "cos", "sqrt", "tanh", "pow", "fabs",
                        "copysign", "fmuladd", "floor", "ceil", "roundeven", "trunc"})
#: functions only libm has (float32 variants carry an ``f`` suffix)
LIBM = frozenset({"log1p", "expm1", "asin", "acos", "atan", "asinh", "acosh", "atanh",
                  "atan2", "erf", "erfc", "lgamma"})


#: functions glibc's libmvec provides, with their parameter count
LIBMVEC = {"exp": 1, "log": 1, "sin": 1, "cos": 1, "tanh": 1, "expm1": 1, "log1p": 1,
           "pow": 2, "asin": 1, "acos": 1, "atan": 1, "asinh": 1, "acosh": 1, "atanh": 1,
           "atan2": 2, "erf": 1, "erfc": 1}   # erf, erfc: glibc 2.35, as tanh
#: vector ISA letter of the x86 vector ABI -> register bits
ISA_BITS = {"b": 128, "d": 256, "e": 512}


def finish(state) -> None:
    """Keep the declared vector variants alive until the vectoriser has seen them."""
    if state.vector_fns:
        typ = ir.ArrayType(ir.PointerType(), len(state.vector_fns))
        used = ir.GlobalVariable(state.module, typ, "llvm.compiler.used")
        used.linkage = "appending"
        used.section = "llvm.metadata"
        used.initializer = ir.Constant(typ, state.vector_fns)


def _with_variants(state, fn, name, dtype, arity):
    scalar = fn.name
    bits = 64 if dtype == "float64" else 32
    t = REGISTER[dtype]
    variants = []
    for isa in state.options.vector_isas:
        lanes = ISA_BITS[isa] // bits
        vname = f"_ZGV{isa}N{lanes}{'v' * arity}_{scalar}"
        vt = ir.VectorType(t, lanes)
        vfn = ir.Function(state.module, ir.FunctionType(vt, [vt] * arity), vname)
        state.vector_fns.append(vfn)
        state.vector_variants.setdefault(scalar, {})[lanes] = vfn
        variants.append(f"{vname}({vname})")
    if variants:
        set.add(fn.attributes, f'"vector-function-abi-variant"="{",".join(variants)}"')
    return fn


def vector_variants(state, fn) -> dict:
    """lanes -> the libmvec function computing scalar libm function ``fn`` lane-wise
    (empty when ``fn`` has none in this module: an intrinsic, or no vector ISA)."""
    return state.vector_variants.get(getattr(fn, "name", None), {})


def _pure(fn: ir.Function) -> ir.Function:
    fn.attributes.add("readnone")   # parsed by LLVM as memory(none)
    fn.attributes.add("nounwind")
    set.add(fn.attributes, "willreturn")  # not in llvmlite's list, but valid LLVM
    return fn


def declare(state, name: str, dtype: str, arity: int = 1) -> ir.Function:
    """The declaration of math function ``name`` for ``dtype``, created once per module
    (``state``: the module's ``ModuleState``)."""
    t = REGISTER[dtype]
    vectorised = name in LIBMVEC and state.options.vector_isas
    if vectorised:
        symbol = name if dtype == "float64" else name + "f"
    elif name in INTRINSICS:
        symbol = f"llvm.{name}.{_SUFFIX[dtype]}"
    elif name in LIBM:
        symbol = name if dtype == "float64" else name + "f"
    else:
        raise KeyError(f"no math function {name!r}")
    existing = state.module.globals.get(symbol)
    if existing is not None:
        return existing
    fn = _pure(ir.Function(state.module, ir.FunctionType(t, [t] * arity), symbol))
    return _with_variants(state, fn, name, dtype, arity) if vectorised else fn


def call(ctx, name: str, args, dtype: str, fastmath=()):
    """Math function ``name`` of ``args``, emitted with the kernel context's builder."""
    fn = declare(ctx.state, name, dtype, len(args))
    return ctx.b.call(fn, list(args), fastmath=fastmath)


class _TanhForm(NamedTuple):
    """The constants of ``tanh`` for one float type (see ``tanh``)."""
    bits: ir.IntType       # the integer type as wide as the float
    mantissa: int          # stored mantissa bits: where the exponent field starts
    shifter: float         # 1.5·2^mantissa (rounds to an integer) + exponent bias
    clamp: float           # tanh rounds to exactly 1 far below it; 2^k stays normal
    half_ln2: tuple        # ln2/2 = hi + lo, hi short enough that k·hi is exact
    poly: tuple            # tanh(z) = z + z^3·P(z^2) on |z| <= ln2/4 (P's coefficients)


#: ln 2 as a double-double (its double and the double nearest the rest)
_LN2 = (0.6931471805599453, 2.3190468138462996e-17)


def _half_ln2(fraction_bits: int, dtype: str) -> tuple:
    """ln2/2 as a high part with ``fraction_bits`` bits and the rest."""
    hi_d, lo_d = _LN2[0] / 2, _LN2[1] / 2
    hi = float(int(hi_d * 2 ** fraction_bits)) / 2 ** fraction_bits
    lo = (hi_d - hi) + lo_d
    return (hi, float(np.float32(lo))) if dtype == "float32" else (hi, lo)


#: P: Remez fits for the relative error of tanh on |z| <= ln2/4 (4e-18 for float64,
#: 2e-10 for float32 before rounding the coefficients)
_TANH = {
    "float64": _TanhForm(I64, 52, 1.5 * 2.0 ** 52 + 1023, 32.0, _half_ln2(40, "float64"),
                         (-0.3333333333333249, 0.1333333333278429, -0.053968252782944016,
                          0.021869370783759803, -0.00885731107734565, 0.0034448662328147046)),
    "float32": _TanhForm(ir.IntType(32), 23, 1.5 * 2.0 ** 23 + 127, 16.0,
                         _half_ln2(16, "float32"),
                         (-0.3333332272434815, 0.1333118444361796, -0.05272726967830233)),
}


def tanh(ctx, x, dtype: str):
    """tanh in loop kernels (the ``noinline`` functions of codegen/module.py) without
    calls, so that the loop vectoriser keeps the whole loop in registers; elsewhere
    libm's, which loop-free regions batch into libmvec calls (``vector_calls``), as
    inlining the same code at each scalar tanh of a loop-free expression adds much
    optimisation to its first call (re-measure: the first call in ``python -m llgrad
    bench --cold --workloads scalar --systems "llgrad native"``).  The fast-math flags
    are not applied to the inline form: reassociation would undo its shifter and its
    hi/lo split.
    """
    if "noinline" in ctx.b.function.attributes:
        return _tanh_inline(ctx, x, dtype)
    return call(ctx, "tanh", [x], dtype, ctx.flags)


def _tanh_inline(ctx, x, dtype: str):
    """With u = |x| = z - k·ln2/2 (k = round(-2u/ln2) <= 0, |z| <= ln2/4) and v = tanh(z)
    from an odd polynomial, e^(-2u) = 2^k (1 - v)/(1 + v), so

        tanh(u) = (A + vB) / (B + vA),   A = 1 - 2^k,  B = 1 + 2^k:

    one division, faster than refining a float32 reciprocal (time a float32 tanh loop
    both ways with ``llgrad.profile``).  For
    |x| < ln2/4, k = 0 and the quotient is 2v/2 = v, so small and subnormal x lose
    nothing (no expm1 cancellation); for large |x|, A and B round to 1 and the quotient
    to exactly 1.  2^k is the shifter's low bits moved into the exponent field.  u is
    clamped (NaN passes: the comparison is false) so that k and 2^k stay in range;
    copysign restores the sign, -0.0 included.
    """
    b, form = ctx.b, _TANH[dtype]
    one = const(dtype, 1.0)

    def mad(p, q, r):
        return call(ctx, "fmuladd", [p, q, r], dtype)

    u = call(ctx, "fabs", [x], dtype)
    u = b.select(b.fcmp_ordered(">", u, const(dtype, form.clamp)), const(dtype, form.clamp), u)
    shifted = mad(u, const(dtype, -2 / _LN2[0]), const(dtype, form.shifter))
    k = b.fsub(shifted, const(dtype, form.shifter))
    z = mad(k, const(dtype, form.half_ln2[1]), mad(k, const(dtype, form.half_ln2[0]), u))
    z2 = b.fmul(z, z)
    poly = const(dtype, form.poly[-1])
    for c in reversed(form.poly[:-1]):
        poly = mad(poly, z2, const(dtype, c))
    v = mad(b.fmul(z, z2), poly, z)
    scale = b.bitcast(b.shl(b.bitcast(shifted, form.bits), ir.Constant(form.bits, form.mantissa)),
                      REGISTER[dtype])
    minus, plus = b.fsub(one, scale), b.fadd(one, scale)
    magnitude = b.fdiv(mad(v, plus, minus), mad(v, minus, plus))
    return call(ctx, "copysign", [magnitude, x], dtype)
