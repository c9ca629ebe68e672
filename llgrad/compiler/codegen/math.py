"""Transcendental functions: libmvec, LLVM intrinsics or libm.

libm functions are declared ``memory(none) nounwind willreturn`` so that LLVM may
hoist, vectorise and delete calls to them like intrinsics (a plain declaration
blocks vectorisation).  LLVM's vectoriser would turn ``llvm.exp.v4f64`` back into
four scalar calls, so when glibc's libmvec is loaded (``configure(module, isas)``)
the scalar libm function carries a ``vector-function-abi-variant`` attribute naming
its libmvec entry points (``_ZGVdN4v_exp`` for 4 doubles with AVX2...), and the
vectoriser calls those.  The vector declarations are kept in ``llvm.compiler.used``
so that nothing deletes them before the vectoriser runs.  All names are resolved by
the JIT at load time, never baked in.
"""
from __future__ import annotations

from llvmlite import ir

from .scalar import REGISTER, const

_SUFFIX = {"float64": "f64", "float32": "f32"}

#: functions with an LLVM intrinsic ``llvm.<name>.<type>``
INTRINSICS = frozenset({"exp", "log", "sin", "cos", "sqrt", "tanh", "pow", "fabs",
                        "copysign"})
#: functions only libm has (float32 variants carry an ``f`` suffix)
LIBM = frozenset({"log1p", "expm1", "asin", "acos", "atan", "asinh", "acosh", "atanh",
                  "atan2"})


#: functions glibc's libmvec provides, with their parameter count
LIBMVEC = {"exp": 1, "log": 1, "sin": 1, "cos": 1, "tanh": 1, "expm1": 1, "log1p": 1,
           "pow": 2, "asin": 1, "acos": 1, "atan": 1, "asinh": 1, "acosh": 1, "atanh": 1,
           "atan2": 2}
#: vector ISA letter of the x86 vector ABI -> register bits
ISA_BITS = {"b": 128, "d": 256, "e": 512}


def configure(module: ir.Module, isas=()) -> None:
    """Use libmvec variants for the given ISA letters (empty: scalar libm/intrinsics)."""
    module.llgrad_vector_isas = tuple(isas)
    module.llgrad_vector_fns = []
    module.llgrad_vector_variants = {}   # scalar symbol -> {lanes: vector function}


def finish(module: ir.Module) -> None:
    """Keep the declared vector variants alive until the vectoriser has seen them."""
    fns = getattr(module, "llgrad_vector_fns", [])
    if fns:
        typ = ir.ArrayType(ir.PointerType(), len(fns))
        used = ir.GlobalVariable(module, typ, "llvm.compiler.used")
        used.linkage = "appending"
        used.section = "llvm.metadata"
        used.initializer = ir.Constant(typ, fns)


def _with_variants(module, fn, name, dtype, arity):
    scalar = fn.name
    bits = 64 if dtype == "float64" else 32
    t = REGISTER[dtype]
    variants = []
    for isa in getattr(module, "llgrad_vector_isas", ()):
        lanes = ISA_BITS[isa] // bits
        vname = f"_ZGV{isa}N{lanes}{'v' * arity}_{scalar}"
        vt = ir.VectorType(t, lanes)
        vfn = ir.Function(module, ir.FunctionType(vt, [vt] * arity), vname)
        module.llgrad_vector_fns.append(vfn)
        module.llgrad_vector_variants.setdefault(scalar, {})[lanes] = vfn
        variants.append(f"{vname}({vname})")
    if variants:
        set.add(fn.attributes, f'"vector-function-abi-variant"="{",".join(variants)}"')
    return fn


def vector_variants(module: ir.Module, fn) -> dict:
    """lanes -> the libmvec function computing scalar libm function ``fn`` lane-wise
    (empty when ``fn`` has none in this module: an intrinsic, or no vector ISA)."""
    return getattr(module, "llgrad_vector_variants", {}).get(getattr(fn, "name", None), {})


def _pure(fn: ir.Function) -> ir.Function:
    fn.attributes.add("readnone")   # parsed by LLVM as memory(none)
    fn.attributes.add("nounwind")
    set.add(fn.attributes, "willreturn")  # not in llvmlite's list, but valid LLVM
    return fn


def declare(module: ir.Module, name: str, dtype: str, arity: int = 1) -> ir.Function:
    """The declaration of math function ``name`` for ``dtype``, created once per module."""
    t = REGISTER[dtype]
    vectorised = name in LIBMVEC and getattr(module, "llgrad_vector_isas", ())
    if vectorised:
        symbol = name if dtype == "float64" else name + "f"
    elif name in INTRINSICS:
        symbol = f"llvm.{name}.{_SUFFIX[dtype]}"
    elif name in LIBM:
        symbol = name if dtype == "float64" else name + "f"
    else:
        raise KeyError(f"no math function {name!r}")
    existing = module.globals.get(symbol)
    if existing is not None:
        return existing
    fn = _pure(ir.Function(module, ir.FunctionType(t, [t] * arity), symbol))
    return _with_variants(module, fn, name, dtype, arity) if vectorised else fn


def call(b: ir.IRBuilder, name: str, args, dtype: str, fastmath=()):
    fn = declare(b.module, name, dtype, len(args))
    return b.call(fn, list(args), fastmath=fastmath)


def tanh(b: ir.IRBuilder, x, dtype: str, flags=()):
    """tanh(x) = copysign(-t / (t + 2), x) with t = expm1(-2|x|) where libmvec is loaded.

    For float64, libmvec's vector expm1 plus a division cost ~0.6 of its vector tanh
    (measured 1.6x faster per element); for float32 the form was slower than tanhf, and
    without libmvec there is nothing to gain, so those keep tanh.  The argument -2|x|
    keeps t in [-1, 0]: nothing overflows, so no saturation branch is needed (t = -1
    gives 1), small |x| loses no accuracy (t is accurate to an ulp and t + 2 has no
    cancellation), and copysign keeps -0.0 and NaN.
    """
    if dtype != "float64" or not getattr(b.module, "llgrad_vector_isas", ()):
        return call(b, "tanh", [x], dtype, flags)
    minus_2abs = b.fmul(call(b, "fabs", [x], dtype), const(dtype, -2.0), flags=flags)
    t = call(b, "expm1", [minus_2abs], dtype, flags)
    magnitude = b.fdiv(b.fneg(t, flags=flags), b.fadd(t, const(dtype, 2.0), flags=flags),
                       flags=flags)
    return call(b, "copysign", [magnitude, x], dtype)
