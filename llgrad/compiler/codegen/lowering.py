"""THE codegen table: one row per primitive, keyed by ``Primitive.lowering``.

Each row is one of the kinds in ``plan.py`` (elementwise scalar, index map, kernel,
loop, view, slice, leaf, part) holding the functions that emit the primitive's code.
Elementwise rows take the kernel context, the operands' values at one index, the
operands' dtype and the node's attributes.
"""
from __future__ import annotations

from llvmlite import ir

from llgrad.compiler.codegen import control, kernels, linalg, math, matmul
from llgrad.compiler.codegen.cumsum import emit_cumsum
from llgrad.compiler.codegen.sort import emit_argsort, scratch_bytes as sort_scratch
from llgrad.compiler.codegen.collective import emit_allreduce_sum
from llgrad.compiler.codegen.prefetch import emit_prefetch_rows
from llgrad.compiler.codegen import branches
from llgrad.compiler.codegen import call as region_call
from llgrad.compiler.codegen.while_loop import emit_while, scratch_bytes as while_scratch
from llgrad.compiler.codegen.heap_tape import emit_tape_row
from llgrad.compiler.codegen.plan import (
    Branches,
    Elementwise,
    IndexMap,
    Kernel,
    Leaf,
    Loop,
    Part,
    Slice,
    View,
)
from llgrad.ir.primitives import PRIMITIVES
from llgrad.llvm.indexing import Index
from llgrad.llvm.scalar import I64, REGISTER, const, declare, extremum, i64, is_float

# ----------------------------------------------------------------------------------
# elementwise scalars

def _by_kind(on_float, on_int):
    """Float operands: ``on_float(ctx, *args, dtype)``; integers: ``on_int(b, *args, dtype)``."""
    return Elementwise(lambda ctx, args, dtype, attrs:
                       on_float(ctx, *args, dtype=dtype) if is_float(dtype)
                       else on_int(ctx.b, *args, dtype=dtype))


def _float_only(fn):
    return Elementwise(lambda ctx, args, dtype, attrs: fn(ctx, *args, dtype=dtype))


def _math(name):
    return _float_only(lambda ctx, *xs, dtype: math.call(ctx, name, xs, dtype, ctx.flags))


def _pow_float(ctx, x, y, dtype):
    """``x ** y`` as pow(|x|, y), the sign of a negative base put back: for x < 0 (or
    -0.0) numpy's result is pow(|x|, y) for an even integer y, its negation for an odd
    one, and for any other y NaN (pow(|x|, y) for -0.0 and -inf, as C's pow).  glibc's
    vector pow takes a lane with a negative base through its scalar code: a 16392x128
    power of bases in [-1, 1] took 27 ms, of bases in [0, 1] 8 ms (GradBench's llsq,
    2026-12-07; ``python benchmarks/bench_gradbench.py --evals llsq``).  Parity from
    y / 2: for an integral y it is integral exactly when y is even, infinities and
    |y| >= 2**53 included."""
    b, flags = ctx.b, ctx.flags
    magnitude = math.call(ctx, "pow", [math.call(ctx, "fabs", [x], dtype), y], dtype, flags)
    half = b.fmul(y, const(dtype, 0.5))
    integral = b.fcmp_ordered("==", math.call(ctx, "floor", [y], dtype), y)
    odd = b.fcmp_unordered("!=", math.call(ctx, "floor", [half], dtype), half)
    bits = ir.IntType(8 * (8 if dtype == "float64" else 4))
    negative = b.icmp_signed("<", b.bitcast(x, bits), ir.Constant(bits, 0))
    finite = b.and_(b.fcmp_ordered("<", x, const(dtype, 0.0)),
                    b.fcmp_ordered(">", x, const(dtype, float("-inf"))))
    fraction = b.select(finite, const(dtype, float("nan")), magnitude)   # -0, -inf: C's
    on_negative = b.select(integral, b.select(odd, b.fneg(magnitude), magnitude), fraction)
    return b.select(negative, on_negative, magnitude)


def _sign_float(ctx, x, dtype):
    b = ctx.b
    one, zero = const(dtype, 1.0), const(dtype, 0.0)
    rest = b.select(b.fcmp_ordered("<", x, zero), const(dtype, -1.0),
                    b.fadd(x, zero))  # +0 for ±0, NaN stays NaN, as np.sign
    return b.select(b.fcmp_ordered(">", x, zero), one, rest)


def _sign_int(b, x, dtype):
    zero = i64(0)
    return b.sub(b.zext(b.icmp_signed(">", x, zero), I64),
                 b.zext(b.icmp_signed("<", x, zero), I64))


def _safe_divisor(b, y):
    """``y`` with 1 for -1 and 0: sdiv and srem are undefined for a zero divisor and
    for INT64_MIN by -1 (their callers give numpy's results there)."""
    return b.select(b.icmp_unsigned("<=", b.add(y, i64(1)), i64(1)), i64(1), y)


def _fmod_int(b, x, y, dtype):
    """srem: x fmod ±1 is 0, and numpy's x fmod 0 is 0 too, so the safe divisor's
    remainder is right everywhere."""
    return b.srem(x, _safe_divisor(b, y))


def _floordiv(ctx, args, dtype, attrs):
    """sdiv rounded down where the remainder's sign is not the divisor's; a divisor of 0
    gives 0 and one of -1 the negation (wrapping), both undefined for sdiv itself."""
    b, (x, y) = ctx.b, args
    safe = _safe_divisor(b, y)
    quotient, rest = b.sdiv(x, safe), b.srem(x, safe)
    quotient = b.select(b.icmp_signed("==", y, i64(-1)), b.neg(x),
                        b.select(b.icmp_signed("==", y, i64(0)), i64(0), quotient))
    down = b.and_(b.icmp_signed("!=", rest, i64(0)),
                  b.icmp_unsigned("!=", b.icmp_signed("<", rest, i64(0)),
                                  b.icmp_signed("<", y, i64(0))))
    return b.sub(quotient, b.zext(down, I64))


def _extremum(order):
    return Elementwise(lambda ctx, args, dtype, attrs: extremum(ctx.b, *args, dtype, order))


def _logistic(ctx, x, dtype):
    b, flags = ctx.b, ctx.flags
    one = const(dtype, 1.0)
    e = math.call(ctx, "exp", [b.fneg(x, flags=flags)], dtype, flags)
    return b.fdiv(one, b.fadd(one, e, flags=flags), flags=flags)


def _digamma(ctx, x, dtype):
    """psi(x), which libm lacks: for x < 0 the reflection psi(1 - x) - pi/tan(pi x);
    then psi(z) = psi(z + n) - sum 1/(z + k) up to z + n >= n (DIGAMMA_SHIFT = 10),
    where the asymptotic series log z - 1/(2z) - sum B_2k/(2k z^2k) (7 terms) is
    accurate to about 1e-16 relative; as the interpreter's digamma_reference."""
    from llgrad.ir.primitives import DIGAMMA_SERIES, DIGAMMA_SHIFT
    b, flags = ctx.b, ctx.flags
    c = lambda v: const(dtype, v)  # noqa: E731
    neg = b.fcmp_ordered("<", x, c(0.0))
    z = b.select(neg, b.fsub(c(1.0), x, flags=flags), x)
    shift = None
    for k in range(DIGAMMA_SHIFT):
        term = b.fdiv(c(1.0), b.fadd(z, c(float(k)), flags=flags), flags=flags)
        shift = term if shift is None else b.fadd(shift, term, flags=flags)
    z = b.fadd(z, c(float(DIGAMMA_SHIFT)), flags=flags)
    w = b.fdiv(c(1.0), b.fmul(z, z, flags=flags), flags=flags)
    poly = c(0.0)
    for coeff in reversed(DIGAMMA_SERIES):
        poly = b.fmul(b.fadd(poly, c(coeff), flags=flags), w, flags=flags)
    psi = b.fsub(math.call(ctx, "log", [z], dtype, flags),
                 b.fdiv(c(0.5), z, flags=flags), flags=flags)
    psi = b.fsub(b.fsub(psi, poly, flags=flags), shift, flags=flags)
    pix = b.fmul(c(3.141592653589793), x, flags=flags)
    tan = b.fdiv(math.call(ctx, "sin", [pix], dtype, flags),
                 math.call(ctx, "cos", [pix], dtype, flags), flags=flags)
    reflected = b.fsub(psi, b.fdiv(c(3.141592653589793), tan, flags=flags), flags=flags)
    return b.select(neg, reflected, psi)


def _comparison(float_op, int_op, bool_op):
    def lower(ctx, args, dtype, attrs):
        b, (x, y) = ctx.b, args
        if is_float(dtype):
            if float_op == "!=":
                return b.fcmp_unordered("!=", x, y)   # NaN != NaN is true
            return b.fcmp_ordered(float_op, x, y)
        if dtype == "bool":
            return b.icmp_unsigned(bool_op, x, y)
        return b.icmp_signed(int_op, x, y)
    return Elementwise(lower)


def _convert(ctx, args, dtype, attrs):
    b, (x,), to = ctx.b, args, attrs["dtype"]
    if to == dtype:
        return x
    target = REGISTER[to]
    if to == "bool":
        return (b.fcmp_unordered("!=", x, const(dtype, 0.0)) if is_float(dtype)
                else b.icmp_unsigned("!=", x, ir.Constant(x.type, 0)))
    if dtype == "bool":
        return b.uitofp(x, target) if is_float(to) else b.zext(x, target)
    if is_float(dtype) and is_float(to):
        return b.fpext(x, target) if to == "float64" else b.fptrunc(x, target)
    if not is_float(dtype):
        return b.sitofp(x, target)
    # saturating: NaN and out-of-range floats give defined integers (plain fptosi gives
    # poison, which a later clamp of an index could not tame)
    name = f"llvm.fptosi.sat.i64.{'f64' if dtype == 'float64' else 'f32'}"
    return b.call(declare(b.module, name, target, [x.type]), [x])


# ----------------------------------------------------------------------------------
# index maps

def _read_broadcast(ctx, node, index):
    (x,) = node.inputs
    dims = node.attrs["dims"]
    if x.type.ndim == 0:
        return ctx.read(x, Index.scalar())
    axes = tuple(index.axes[d] if x.shape[i] != 1 else i64(0) for i, d in enumerate(dims))
    return ctx.read(x, Index(axes))


def _read_transpose(ctx, node, index):
    (x,) = node.inputs
    axes = [None] * x.type.ndim
    for k, p in enumerate(node.attrs["perm"]):
        axes[p] = index.axes[k]
    return ctx.read(x, Index(tuple(axes)))


def _read_slice(ctx, node, index):
    (x,) = node.inputs
    b, a = ctx.b, node.attrs
    axes = []
    for i, s, st in zip(index.axes, a["starts"], a["strides"]):
        if st != 1:
            i = b.mul(i, i64(st), flags=["nuw", "nsw"])
        axes.append(b.add(i, i64(s), flags=["nuw", "nsw"]) if s else i)
    return ctx.read(x, Index(tuple(axes)))


def _read_iota(ctx, node, index):
    b, to = ctx.b, node.attrs["dtype"]
    i = index.axes[node.attrs["axis"]]
    if to == "int64":
        return i
    if to == "bool":
        return b.icmp_unsigned("!=", i, i64(0))
    return b.sitofp(i, REGISTER[to])


def _read_first(ctx, node, index):
    """The identity's read: its first operand at the same index."""
    return ctx.read(node.inputs[0], index)


def _read_reshape(ctx, node, index):
    (x,) = node.inputs
    if x.type.ndim == 0:
        return ctx.read(x, Index.scalar())
    b = ctx.b
    flat = index.linear(b, node.shape)   # row-major offsets agree before and after
    axes, rest = [], flat
    for n in reversed(x.shape):
        axes.append(b.urem(rest, i64(n)))
        rest = b.udiv(rest, i64(n))
    return ctx.read(x, Index(tuple(reversed(axes)), flat))


_ALWAYS = lambda node: True  # noqa: E731


# ----------------------------------------------------------------------------------
# the table

_fneg = lambda ctx, x, dtype: ctx.b.fneg(x, flags=ctx.flags)  # noqa: E731
_ineg = lambda b, x, dtype: b.neg(x)                        # noqa: E731


def _fbin(op):
    return lambda ctx, x, y, dtype: getattr(ctx.b, op)(x, y, flags=ctx.flags)


def _ibin(op):
    return lambda b, x, y, dtype: getattr(b, op)(x, y)


LOWERINGS = {
    # elementwise
    "neg": _by_kind(_fneg, _ineg),
    "exp": _math("exp"),
    "log": _math("log"),
    "log1p": _math("log1p"),
    "expm1": _math("expm1"),
    "sin": _math("sin"),
    "cos": _math("cos"),
    "tanh": _float_only(math.tanh),
    "logistic": _float_only(_logistic),
    "sqrt": _math("sqrt"),
    "abs": _by_kind(lambda ctx, x, dtype: math.call(ctx, "fabs", [x], dtype),
                    lambda b, x, dtype: b.select(b.icmp_signed("<", x, i64(0)), b.neg(x), x)),
    "sign": _by_kind(_sign_float, _sign_int),
    "add": _by_kind(_fbin("fadd"), _ibin("add")),
    "sub": _by_kind(_fbin("fsub"), _ibin("sub")),
    "mul": _by_kind(_fbin("fmul"), _ibin("mul")),
    "div": _float_only(_fbin("fdiv")),
    "pow": _float_only(_pow_float),
    "asin": _math("asin"),
    "acos": _math("acos"),
    "atan": _math("atan"),
    "asinh": _math("asinh"),
    "acosh": _math("acosh"),
    "atanh": _math("atanh"),
    "atan2": _math("atan2"),
    "erf": _math("erf"),
    "erfc": _math("erfc"),
    "lgamma": _math("lgamma"),
    "digamma": _float_only(_digamma),
    "floor": _math("floor"),
    "ceil": _math("ceil"),
    "rint": _math("roundeven"),
    "trunc": _math("trunc"),
    "fmod": _by_kind(_fbin("frem"), _fmod_int),
    "floordiv": Elementwise(_floordiv),
    "max": _extremum(">="),
    "min": _extremum("<="),
    "lt": _comparison("<", "<", "<"),
    "le": _comparison("<=", "<=", "<="),
    "gt": _comparison(">", ">", ">"),
    "ge": _comparison(">=", ">=", ">="),
    "eq": _comparison("==", "==", "=="),
    "ne": _comparison("!=", "!=", "!="),
    "select": Elementwise(lambda ctx, args, dtype, attrs: ctx.b.select(*args)),
    "convert": Elementwise(_convert),
    # index maps
    "broadcast_in_dim": IndexMap(_read_broadcast, lambda n: n.inputs[0].type.ndim > 0,
                                 cheap=True),
    "transpose": IndexMap(_read_transpose, _ALWAYS),
    "slice": IndexMap(_read_slice, _ALWAYS),
    "iota": IndexMap(_read_iota, _ALWAYS, cheap=True),
    # kernels with their own loop nests
    "reduce_sum": Kernel(kernels.emit_reduce_sum),
    "reduce_max": Kernel(kernels.emit_reduce_max),
    "pad": Kernel(kernels.emit_pad),
    "concatenate": Kernel(kernels.emit_concatenate),
    "dynamic_slice": Slice(kernels.emit_dynamic_slice),
    "dynamic_update_slice": Kernel(kernels.emit_dynamic_update_slice),
    "take": Kernel(kernels.emit_take),
    "scatter_add": Kernel(kernels.emit_scatter_add),
    "argsort": Kernel(emit_argsort, scratch=sort_scratch, inline_inputs=False),
    "cumsum": Kernel(emit_cumsum),
    "dot_general": Kernel(matmul.emit_dot_general, scratch=matmul.scratch_bytes,
                          inline_inputs=False),
    # linear algebra: one matrix of the batch at a time (codegen/linalg.py)
    "cholesky": Kernel(linalg.emit_cholesky, inline_inputs=False),
    "triangular_solve": Kernel(linalg.emit_triangular_solve, inline_inputs=False),
    "solve": Kernel(linalg.emit_solve, scratch=linalg.square_scratch, inline_inputs=False),
    "slogdet": Kernel(linalg.emit_slogdet, scratch=linalg.square_scratch,
                      inline_inputs=False),
    "eigh": Kernel(linalg.emit_eigh, scratch=linalg.eigh_scratch, inline_inputs=False),
    "svd": Kernel(linalg.emit_svd, scratch=linalg.svd_scratch, inline_inputs=False),
    "qr": Kernel(linalg.emit_qr, scratch=linalg.qr_scratch, inline_inputs=False),
    # structured control flow: the body graph is lowered to a function called per step
    "loop": Loop(control.emit_loop, scratch=control.scratch_bytes, inline_inputs=False),
    "tuple_get": Part(),
    "cond": Branches(branches.emit_cond, scratch=branches.scratch_bytes, inline_inputs=False),
    # values whose derivative is given, not derived: the identity on their first input
    "stop_gradient": Elementwise(lambda ctx, args, dtype, attrs: args[0]),
    "custom_vjp_call": View(_read_first, lambda n: False),
    "custom_jvp_call": View(_read_first, lambda n: False),
    "while": Loop(emit_while, scratch=while_scratch, inline_inputs=False),  # while_loop.py
    "tape_row": Kernel(emit_tape_row, inline_inputs=False),  # heap_tape.py
    "checkpoint": Loop(region_call.emit_call, scratch=region_call.scratch_bytes,
                       inline_inputs=False),
    # collectives: one MPI call each, a kernel of its own (see codegen/collective.py)
    "allreduce_sum": Kernel(emit_allreduce_sum, inline_inputs=False),
    # a hint to the cache about rows a later step reads (see codegen/prefetch.py)
    "prefetch_rows": Kernel(emit_prefetch_rows, inline_inputs=False),
    # views and leaves
    "reshape": View(_read_reshape, lambda n: n.inputs[0].type.ndim > 0),
    "parameter": Leaf(),
    "constant": Leaf(),
}


def row(node):
    """The lowering row of ``node``'s primitive."""
    return LOWERINGS[PRIMITIVES[node.op].lowering]
