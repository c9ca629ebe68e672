"""numpy's rounding, remainders, products, cumulative sums and order statistics, and
the small elementwise functions around them, rebuilt from primitives: more rows of the
numpy table (``numpy_ops.op``), with numpy's signatures, dtypes and special values.

How three of them are built:

- Products and cumulative products are trees of ``mul`` (a halving tree for ``prod``,
  Hillis-Steele doubling for ``cumprod``), so reverse mode differentiates them like
  any other arithmetic: the adjoint reaching a factor is the product of the others,
  also where other factors are zero (never ``prod / x``).  Cumulative sums are the
  ``cumsum`` primitive (ir/primitives_cumsum.py), one pass in numpy's order.
- numpy's remainder and floor division follow numpy's own C code (``npy_divmod``):
  C's ``fmod`` (the primitive), moved by the divisor where the signs differ, a zero
  remainder signed like the divisor, and a quotient snapped to a whole number.
- Order statistics (median, percentile, quantile) take elements of the array sorted
  along the axes (``numpy_sort``, the ``argsort`` primitive), so the gradient goes
  to the elements taken through the permutation (of tied elements, to the one the
  stable order puts at the position taken).
"""
from __future__ import annotations

import builtins

import numpy as np

from llgrad.compiler.frontend.numpy_ops import (
    absolute,
    add,
    astype,
    concatenate,
    divide,
    equal,
    exp,
    exp2,
    greater,
    less,
    log1p,
    logical_and,
    logical_or,
    maximum,
    minimum,
    multiply,
    negative,
    not_equal,
    op,
    ravel,
    reshape,
    sin,
    subtract,
    sum,
    transpose,
    where,
    zeros_like,
)
from llgrad.compiler.frontend.numpy_sort import sorted_last
from llgrad.compiler.frontend.numpy_support import (
    accept,
    as_node,
    binary,
    broadcast_shapes,
    builder,
    float_dtype,
    has_tracer,
    integer,
    normalize_axes,
    on_last_axis,
    result_dtype,
    shape_of,
    traced,
    unary_float,
    wrap,
)
from llgrad.ir.errors import DTypeError, ShapeError, UnsupportedError
from llgrad.ir.types import TensorType, dtype_name

# ----------------------------------------------------------------------------------
# pieces along one axis


def _part(x, axis: int, start: int, stop: int):
    """x[..., start:stop, ...] along ``axis``."""
    starts, limits = [0] * x.ndim, list(x.shape)
    starts[axis], limits[axis] = start, stop
    return wrap(builder().slice(x.node, starts=tuple(starts), limits=tuple(limits),
                                strides=(1,) * x.ndim))


def _filled(value, shape, dtype: str):
    return wrap(builder().full(value, TensorType(tuple(shape), dtype)))


def _resized(shape, axis: int, n: int) -> tuple:
    return tuple(n if d == axis else k for d, k in enumerate(shape))


def _isnan(x):
    return not_equal(x, x)


def _as_float(x):
    return astype(x, float_dtype(x))


# ----------------------------------------------------------------------------------
# rounding: floor, ceil and trunc of integers are the integers (numpy 2)


def _rounding(prim):
    def f(x):
        if result_dtype(x) in ("int64", "bool"):
            return traced(x)
        return unary_float(prim)(x)
    return f


floor = op("floor")(_rounding("floor"))
ceil = op("ceil")(_rounding("ceil"))
trunc = op("trunc")(_rounding("trunc"))
rint = op("rint")(unary_float("rint"))
fmod = op("fmod")(binary("fmod"))


@op("round", aliases=("around",), methods=("round",))
def round(a, decimals=0, out=None):
    """Half to even, as numpy: a float is scaled by 10**decimals, rounded by rint and
    scaled back; an integer is itself for decimals >= 0, and else the nearest multiple
    of 10**-decimals, computed exactly with remainders."""
    accept("round", out=out)
    decimals = integer(decimals, "decimals")
    a = traced(a)
    dtype = a.node.dtype
    if dtype == "bool":
        raise DTypeError("round of a bool array is float16 in numpy, which llgrad does "
                         "not support; convert it first")
    if dtype == "int64":
        return a if decimals >= 0 else _round_integer(a, decimals)
    if decimals == 0:
        return rint(a)
    scale = 10.0 ** builtins.abs(decimals)
    if decimals > 0:
        return divide(rint(multiply(a, scale)), scale)
    return multiply(rint(divide(a, scale)), scale)


def _round_integer(a, decimals: int):
    if decimals < -18:
        raise UnsupportedError(f"round(decimals={decimals}) of int64: 10**{-decimals} "
                               f"is out of int64's range")
    step = 10 ** -decimals
    below = remainder(a, step)
    floor_ = subtract(a, below)
    twice = multiply(below, 2)
    odd = not_equal(remainder(floor_, 2 * step), 0)
    up = logical_or(greater(twice, step), logical_and(equal(twice, step), odd))
    return where(up, add(floor_, step), floor_)


# ----------------------------------------------------------------------------------
# remainder and floor division, as numpy's npy_divmod


def _moved_by_divisor(m, y):
    """Where C's remainder ``m`` is nonzero with a sign other than the divisor's."""
    return logical_and(not_equal(m, 0), not_equal(less(y, 0), less(m, 0)))


@op("remainder", aliases=("mod",), methods=("__mod__",), reflected=("__rmod__",))
def remainder(x, y):
    """The divisor's sign: fmod moved by the divisor where the signs differ (so d/dx
    is 1 and d/dy is -floor(x/y)); x % 0 is NaN for floats, 0 for integers.  A zero
    remainder is signed like the divisor: m + 0.0 makes it +0 and keeps d/dx = 1, and
    a +0 that must become -0 is the constant (there d/dx is 0)."""
    m = fmod(x, y)
    moved = where(_moved_by_divisor(m, y), add(m, y), m)
    if m.node.dtype == "int64":
        return moved
    zero = equal(m, 0)
    moved = where(logical_and(zero, greater(y, 0)), add(m, 0.0), moved)
    plus_zero = greater(divide(1.0, m), 0)
    return where(logical_and(zero, logical_and(less(y, 0), plus_zero)), -0.0, moved)


@op("floor_divide", methods=("__floordiv__",), reflected=("__rfloordiv__",))
def floor_divide(x, y):
    """Integers: the primitive.  Floats: (x - x % y) / y snapped to a whole number, x / y
    where y is 0, a zero quotient signed like x / y; its derivative is 0."""
    if result_dtype(x, y) in ("int64", "bool"):
        return binary("floordiv")(x, y)   # bools refused by name
    m = fmod(x, y)
    quotient = divide(x, y)
    exact = divide(subtract(x, m), y)
    exact = where(_moved_by_divisor(m, y), subtract(exact, 1.0), exact)
    whole = floor(exact)
    whole = where(greater(subtract(exact, whole), 0.5), add(whole, 1.0), whole)
    signed_zero = where(less(divide(1.0, quotient), 0), -0.0, zeros_like(quotient))
    return where(equal(y, 0), quotient, where(equal(exact, 0), signed_zero, whole))


# ----------------------------------------------------------------------------------
# elementwise functions made of a few primitives


@op("fabs")
def fabs(x):
    return absolute(_as_float(x))


def _nan_ignoring(extremum):
    """np.fmax/np.fmin: the other operand where one is NaN (NaN only where both are)."""
    def f(x, y):
        m = extremum(x, y)
        if m.node.dtype not in ("float32", "float64"):
            return m
        return where(_isnan(x), y, where(_isnan(y), x, m))
    return f


fmax = op("fmax")(_nan_ignoring(maximum))
fmin = op("fmin")(_nan_ignoring(minimum))


def _log_add(exponential, scale):
    """max(x, y) + scale·log1p(exponential(-|x - y|)): never overflows; equal operands
    (infinities included) give |x - y| = 0, so inf + inf is inf, not NaN.  At a tie each
    operand gets half the derivative (max's rule; |.|' is 0 at 0)."""
    def f(x1, x2):
        dtype = float_dtype(x1, x2)
        x, y = astype(x1, dtype), astype(x2, dtype)
        apart = absolute(where(equal(x, y), 0.0, subtract(x, y)))
        return add(maximum(x, y), multiply(log1p(exponential(negative(apart))), scale))
    return f


logaddexp = op("logaddexp")(_log_add(exp, 1.0))
logaddexp2 = op("logaddexp2")(_log_add(exp2, 1 / float(np.log(2.0))))


@op("sinc")
def sinc(x):
    """sin(πx)/(πx), and 1 at 0; where |πx| < 0.01 the series 1 - t²/6 + t⁴/120
    (exact to an ulp there), so the derivatives at 0 are right too (0, then -π²/3)."""
    t = multiply(_as_float(x), np.pi)
    small = less(absolute(t), 0.01)
    near = where(small, t, 0.0)            # the branch not taken stays finite
    far = where(small, 1.0, t)
    t2 = multiply(near, near)
    series = add(subtract(1.0, divide(t2, 6.0)), divide(multiply(t2, t2), 120.0))
    return where(small, series, divide(sin(far), far))


@op("nan_to_num")
def nan_to_num(x, copy=True, nan=0.0, posinf=None, neginf=None):
    """NaN, +inf and -inf replaced (by default by 0 and the dtype's largest and
    smallest finite values); integers and bools are themselves."""
    accept("nan_to_num", copy=copy)
    x = traced(x)
    if x.node.dtype not in ("float32", "float64"):
        return x
    info = np.finfo(x.dtype)
    x = where(_isnan(x), nan, x)
    x = where(equal(x, np.inf), info.max if posinf is None else posinf, x)
    return where(equal(x, -np.inf), info.min if neginf is None else neginf, x)


def _scaled(factor):
    def f(x):
        return multiply(_as_float(x), factor)
    return f


deg2rad = op("deg2rad", aliases=("radians",))(_scaled(np.pi / 180.0))
rad2deg = op("rad2deg", aliases=("degrees",))(_scaled(180.0 / np.pi))


# ----------------------------------------------------------------------------------
# complex parts of real arrays (llgrad has no complex numbers)


@op("real")
def real(val):
    return traced(val)


@op("imag")
def imag(val):
    return zeros_like(val)


@op("conjugate", aliases=("conj",), methods=("conj", "conjugate"))
def conjugate(x):
    if result_dtype(x) == "bool":
        raise DTypeError("conjugate of a bool array is int8 in numpy, which llgrad does "
                         "not support; convert it first")
    return traced(x)


@op("angle")
def angle(z, deg=False):
    """arctan2(0, z): π for negative z (-0.0 included), else 0, NaN for NaN; a
    constant between its steps, so its derivative is 0."""
    z = _as_float(z)
    negative_ = logical_or(less(z, 0), less(divide(1.0, z), 0))
    a = where(negative_, np.pi, where(equal(z, z), 0.0, z))
    return multiply(a, 180.0 / np.pi) if deg else a


# ----------------------------------------------------------------------------------
# choosing among arrays


@op("select")
def select(condlist, choicelist, default=0):
    """The first choice whose condition holds, else ``default``: np.where from the last
    condition to the first."""
    if len(condlist) != len(choicelist):
        raise ShapeError("list of cases must be same length as list of conditions")
    if not condlist:
        raise ShapeError("select with an empty condition list is not possible")
    for i, cond in enumerate(condlist):
        if result_dtype(cond) != "bool":
            raise DTypeError(f"invalid entry {i} in condlist: should be boolean ndarray")
    dtype = result_dtype(*choicelist, default)
    shape = broadcast_shapes(*[shape_of(v) for v in (*condlist, *choicelist, default)])
    result = wrap(builder().broadcast_to(as_node(default, dtype), shape))
    for cond, choice in reversed(list(zip(condlist, choicelist))):
        result = where(cond, choice, result)
    return result


@op("linspace")
def linspace(start, stop, num=50, endpoint=True, retstep=False, dtype=None, axis=0, *,
             device=None):
    """numpy's evenly spaced values between traced ``start`` and ``stop`` (static
    ``num``): start + i·step, the last one ``stop`` itself when ``endpoint``."""
    accept("linspace", device=device)
    num = integer(num, "num")
    if num < 0:
        raise ShapeError(f"Number of samples, {num}, must be non-negative.")
    div = num - 1 if endpoint else num
    dt = float_dtype(start, stop)
    start, stop = astype(start, dt), astype(stop, dt)
    delta = subtract(stop, start)
    shape = broadcast_shapes(start.shape, stop.shape)
    y = wrap(builder().iota(shape=(num,) + shape, dtype=dt, axis=0))
    if div > 0:
        step = divide(delta, float(div))
        y = where(equal(step, 0), multiply(divide(y, float(div)), delta), multiply(y, step))
    else:
        step = np.nan
        y = multiply(y, delta)
    y = add(y, start)
    if endpoint and num > 1:
        last = reshape(wrap(builder().broadcast_to(stop.node, shape)), (1,) + shape)
        y = concatenate([_part(y, 0, 0, num - 1), last], axis=0)
    axis = normalize_axes(axis, y.ndim)[0]
    if axis:
        y = transpose(y, [*range(1, axis + 1), 0, *range(axis + 1, y.ndim)])
    if dtype is not None:
        if np.issubdtype(np.dtype(dtype), np.integer):
            y = floor(y)
        y = astype(y, dtype)
    return (y, step) if retstep else y


# ----------------------------------------------------------------------------------
# products and cumulative sums and products


def _combined(x, axis: int, combine, identity):
    """``x`` combined along ``axis`` into size 1 by halving: x[:h] ∘ x[h:2h], the odd
    element left over kept; log2(n) steps of elementwise work."""
    n = x.shape[axis]
    if n == 0:
        return _filled(identity, _resized(x.shape, axis, 1), x.node.dtype)
    while n > 1:
        h = n // 2
        half = combine(_part(x, axis, 0, h), _part(x, axis, h, 2 * h))
        x = concatenate([half, _part(x, axis, 2 * h, n)], axis=axis) if n % 2 else half
        n = x.shape[axis]
    return x


def _accumulated_dtype(a, dtype) -> str:
    """numpy's for sums and products: bools and integers in int64, floats as they are."""
    if dtype is not None:
        return dtype_name(dtype)
    return "int64" if a.node.dtype in ("bool", "int64") else a.node.dtype


@op("prod", methods=("prod",))
def prod(a, axis=None, dtype=None, out=None, keepdims=False, initial=np._NoValue,
         where=True):
    """A halving tree of multiplications per axis (1 for no elements); ``initial``
    multiplies every product."""
    accept("prod", out=out, where=where)
    a = traced(a)
    target = _accumulated_dtype(a, dtype)
    axes = normalize_axes(axis, a.ndim)
    x = astype(a, target)
    for d in axes:
        x = _combined(x, d, multiply, 1)
    kept = tuple(1 if d in axes else n for d, n in enumerate(a.shape))
    dropped = tuple(n for d, n in enumerate(a.shape) if d not in axes)
    x = reshape(x, kept if _kept(keepdims) else dropped)
    return x if initial is np._NoValue else multiply(x, wrap(as_node(initial, target)))


def _scan(name, combine, identity):
    """numpy's cumulative ``combine`` along an axis (the flattened array for None), by
    Hillis-Steele doubling: after the step with shift s every element combines the 2s
    elements ending at it, the missing ones read as ``identity``."""
    def f(a, axis=None, dtype=None, out=None):
        accept(name, out=out)
        a = traced(a)
        if axis is None:
            a, axis = ravel(a), 0
        axis = normalize_axes(axis, a.ndim)[0]
        x = astype(a, _accumulated_dtype(a, dtype))
        n, shift = x.shape[axis], 1
        while shift < n:
            head = _filled(identity, _resized(x.shape, axis, shift), x.node.dtype)
            x = combine(x, concatenate([head, _part(x, axis, 0, n - shift)], axis=axis))
            shift *= 2
        return x
    return op(name, methods=(name,))(f)


cumprod = _scan("cumprod", multiply, 1)


@op("cumsum", methods=("cumsum",))
def cumsum(a, axis=None, dtype=None, out=None):
    """The ``cumsum`` primitive along the axis (moved last): one pass adding left to
    right, numpy's order, so numpy's result."""
    accept("cumsum", out=out)
    a = traced(a)
    if axis is None:
        a, axis = ravel(a), 0
    x = astype(a, _accumulated_dtype(a, dtype))
    return on_last_axis(x, normalize_axes(axis, a.ndim)[0],
                        lambda t: wrap(builder().cumsum(t.node, reverse=False)))


# ----------------------------------------------------------------------------------
# order statistics: the values sorted along the axes (numpy_sort)

def _reduced_last(a, axis, dtype: str):
    """``a`` in ``dtype`` with the axes reduced over moved last and made one axis,
    and those axes."""
    a = astype(a, dtype)
    axes = normalize_axes(axis, a.ndim)
    rest = [d for d in range(a.ndim) if d not in axes]
    count = int(np.prod([a.shape[d] for d in axes], dtype=np.int64))
    moved = transpose(a, rest + list(axes)) if a.ndim > 1 else a
    return reshape(moved, tuple(a.shape[d] for d in rest) + (count,)), axes


def _nan_where_nan(result, x):
    """NaN where the slice of ``x`` (along its last axis) holds a NaN, as numpy."""
    has_nan = greater(sum(astype(_isnan(x), x.node.dtype), axis=-1), 0)
    return where(has_nan, np.nan, result)


def _kept(keepdims) -> bool:
    return keepdims is not np._NoValue and bool(keepdims)


def _keepdims(result, a, axes, keepdims, lead: tuple = ()):
    if not _kept(keepdims):
        return result
    return reshape(result, lead + tuple(1 if d in axes else n for d, n in enumerate(a.shape)))


def _last(x, i: int):
    return reshape(_part(x, x.ndim - 1, i, i + 1), x.shape[:-1])


@op("median")
def median(a, axis=None, out=None, overwrite_input=False, keepdims=False):
    """The middle element along the axes, or the mean of the middle two."""
    accept("median", out=out)
    a = traced(a)
    dtype = float_dtype(a)
    x, axes = _reduced_last(a, axis, dtype)
    n = x.shape[-1]
    if n == 0:   # numpy's mean of nothing
        return _keepdims(_filled(np.nan, x.shape[:-1], dtype), a, axes, keepdims)
    s = sorted_last(x)
    middle = _last(s, n // 2)
    if n % 2 == 0:
        middle = divide(add(_last(s, n // 2 - 1), middle), 2.0)
    return _keepdims(_nan_where_nan(middle, x), a, axes, keepdims)


def _lerp(a, b, t: float):
    """numpy's _lerp: a + (b - a)·t, or b - (b - a)·(1 - t) from t = 0.5 on."""
    diff = subtract(b, a)
    return subtract(b, multiply(diff, 1.0 - t)) if t >= 0.5 else add(a, multiply(diff, t))


def _quantiles(name, a, q, fractions, axis, method, keepdims, weights, interpolation,
               out):
    """The linear method (numpy's default) at constant fractions: the sorted values at
    floor and ceil of q·(n - 1), interpolated; q's axes come first."""
    accept(name, out=out)
    if has_tracer([q]):
        raise UnsupportedError(f"{name} needs constant q (its positions in the sorted "
                               f"array decide the shape of the computation)")
    method = interpolation if interpolation is not None else method
    if method != "linear" or weights is not None:
        raise UnsupportedError(f"{name}(method={method!r}, weights=...) is not supported: "
                               f"only the linear method, unweighted")
    fractions = np.asarray(fractions, dtype=np.float64)
    if fractions.size and not (np.all(fractions >= 0) and np.all(fractions <= 1)):
        raise ShapeError(f"{'Percentiles' if name == 'percentile' else 'Quantiles'} must "
                         f"be in the range [{'0, 100' if name == 'percentile' else '0, 1'}]")
    a = traced(a)
    reference = np.percentile if name == "percentile" else np.quantile
    dtype = dtype_name(np.asarray(reference(np.zeros(1, a.dtype), q)).dtype)
    x, axes = _reduced_last(a, axis, dtype)
    if x.shape[-1] == 0:
        raise ShapeError(f"{name} of an empty axis: cannot do a non-empty take from an "
                         f"empty axes")
    s, n = sorted_last(x), x.shape[-1]
    values = []
    for f in fractions.ravel():
        virtual = f * (n - 1)
        low = builtins.min(int(np.floor(virtual)), n - 1)
        high = builtins.min(low + 1, n - 1)
        values.append(_lerp(_last(s, low), _last(s, high), float(virtual - low)))
    rest = x.shape[:-1]
    result = concatenate([reshape(v, (1,) + rest) for v in values], axis=0) if values else \
        _filled(0, (0,) + rest, dtype)
    result = reshape(_nan_where_nan(result, x), fractions.shape + rest)
    return _keepdims(result, a, axes, keepdims, fractions.shape)


@op("quantile")
def quantile(a, q, axis=None, out=None, overwrite_input=False, method="linear",
             keepdims=False, *, weights=None, interpolation=None):
    return _quantiles("quantile", a, q, 0 if has_tracer([q]) else q, axis, method,
                      keepdims, weights, interpolation, out)


@op("percentile")
def percentile(a, q, axis=None, out=None, overwrite_input=False, method="linear",
               keepdims=False, *, weights=None, interpolation=None):
    fractions = 0 if has_tracer([q]) else np.true_divide(q, 100)
    return _quantiles("percentile", a, q, fractions, axis, method, keepdims, weights,
                      interpolation, out)
