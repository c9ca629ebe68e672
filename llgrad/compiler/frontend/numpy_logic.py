"""numpy's tests of values (isnan, isfinite, isinf, isposinf, isneginf), its logical
reductions (all, any, count_nonzero), the NaN-ignoring reductions (nansum, nanmean,
nanmax, nanmin), ptp and average: more rows of the numpy table, composed from the
comparisons, ``where`` and the reductions, with numpy's signatures and dtypes.

- The tests are comparisons: NaN is the value unequal to itself, an infinity the one
  whose magnitude equals inf; integers and bools are never NaN nor infinite.
- ``any`` and ``all`` count (the elements that are not 0, or that are 0), so a slice
  of no elements is ``False`` for any and ``True`` for all, as numpy.
- The NaN-ignoring reductions read a NaN as the operation's identity (0 for sums,
  -inf for a maximum), so a NaN element receives a zero gradient; a slice of nothing
  but NaN gives NaN as numpy does (nanmean 0/0; nanmax and nanmin NaN by a ``where``).
"""
from __future__ import annotations

import builtins

import numpy as np

from llgrad.compiler.frontend.numpy_ops import (
    absolute,
    astype,
    broadcast_to,
    divide,
    equal,
    greater,
    less,
    logical_not,
    max,
    min,
    multiply,
    not_equal,
    op,
    reshape,
    subtract,
    sum,
    where as pick,
)
from llgrad.compiler.frontend.numpy_support import (
    accept,
    builder,
    normalize_axes,
    result_dtype,
    traced,
    wrap,
)
from llgrad.compiler.frontend.trace import Tracer
from llgrad.ir.errors import ShapeError
from llgrad.ir.types import TensorType


def _is_float(x) -> bool:
    return result_dtype(x) in ("float32", "float64")


def _all_false(x: Tracer) -> Tracer:
    """False at every element of ``x`` (no integer is NaN or infinite)."""
    return wrap(builder().full(False, TensorType(x.shape, "bool")))


# ----------------------------------------------------------------------------------
# tests of values


@op("isnan")
def isnan(x):
    return not_equal(x, x) if _is_float(x) else _all_false(traced(x))


@op("isinf")
def isinf(x):
    return equal(absolute(x), np.inf) if _is_float(x) else _all_false(traced(x))


@op("isfinite")
def isfinite(x):
    """|x| < inf: false for NaN too, whose comparisons are all false."""
    return less(absolute(x), np.inf) if _is_float(x) else logical_not(_all_false(traced(x)))


def _signed_infinity(name, value):
    def f(x, out=None):
        accept(name, out=out)
        return equal(x, value) if _is_float(x) else _all_false(traced(x))
    return op(name)(f)


isposinf = _signed_infinity("isposinf", np.inf)
isneginf = _signed_infinity("isneginf", -np.inf)


# ----------------------------------------------------------------------------------
# logical reductions

def _count(a, axis, keepdims):
    """How many elements of ``a`` are not 0 (or False) along ``axis``, as int64."""
    a = traced(a)
    return sum(astype(not_equal(a, 0), "int64"), axis=axis, keepdims=keepdims)


def _logical_reduction(name, true_when):
    def f(a, axis=None, out=None, keepdims=False, *, where=True):
        accept(name, out=out, where=where)
        a = traced(a)
        counted = _count(a, axis, keepdims is True)
        if true_when == "some":
            return greater(counted, 0)
        total = a.size // counted.size if counted.size else 0
        return equal(counted, total)
    return op(name, methods=(name,))(f)


any = _logical_reduction("any", "some")
all = _logical_reduction("all", "every")


@op("count_nonzero")
def count_nonzero(a, axis=None, *, keepdims=False):
    return _count(a, axis, keepdims)


# ----------------------------------------------------------------------------------
# reductions that ignore NaN

def _without_nan(a, identity):
    a = traced(a)
    return pick(isnan(a), identity, a) if _is_float(a) else a


@op("nansum")
def nansum(a, axis=None, dtype=None, out=None, keepdims=False, initial=np._NoValue,
           where=True):
    return sum(_without_nan(a, 0), axis=axis, dtype=dtype, out=out, keepdims=keepdims,
               initial=initial, where=where)


@op("nanmean")
def nanmean(a, axis=None, dtype=None, out=None, keepdims=False, *, where=True):
    """The sum of the numbers over their count (0/0, NaN, where a slice has none)."""
    accept("nanmean", out=out, where=where)
    a = traced(a)
    if not _is_float(a):
        return a.mean(axis=axis, dtype=dtype, keepdims=keepdims)
    numbers = logical_not(isnan(a))
    total = sum(_without_nan(a, 0), axis=axis, dtype=dtype, keepdims=keepdims)
    return divide(total, sum(astype(numbers, total.dtype), axis=axis, keepdims=keepdims))


def _nan_extremum(name, reduce, identity, logical):
    """``reduce`` (max or min) with NaN read as ``identity``; of bools, ``logical``
    (any or all), which is what max and min of bools are."""
    def f(a, axis=None, out=None, keepdims=False, initial=np._NoValue, where=True):
        accept(name, out=out, where=where)
        a = traced(a)
        if a.dtype == "bool" and initial is np._NoValue:
            if builtins.any(a.shape[d] == 0 for d in normalize_axes(axis, a.ndim)):
                raise ShapeError(f"zero-size array {a.shape} to reduction operation {name} "
                                 f"which has no identity")
            return logical(a, axis=axis, keepdims=keepdims)
        result = reduce(_without_nan(a, identity), axis=axis, keepdims=keepdims,
                        initial=initial)
        if not _is_float(a) or initial is not np._NoValue:
            return result
        only_nan = logical_not(any(logical_not(isnan(a)), axis=axis, keepdims=keepdims))
        return pick(only_nan, np.nan, result)
    return op(name)(f)


nanmax = _nan_extremum("nanmax", max, -np.inf, any)
nanmin = _nan_extremum("nanmin", min, np.inf, all)


@op("ptp")
def ptp(a, axis=None, out=None, keepdims=False):
    accept("ptp", out=out)
    return subtract(max(a, axis=axis, keepdims=keepdims), min(a, axis=axis, keepdims=keepdims))


@op("average")
def average(a, axis=None, weights=None, returned=False, *, keepdims=False):
    """mean, or sum(a·w)/sum(w) with weights of a's shape or, along one axis, of
    that axis's length; ``returned`` adds the sum of the weights, broadcast like the
    average."""
    a = traced(a)
    keep = keepdims is not np._NoValue and bool(keepdims)
    if weights is None:
        avg = a.mean(axis=axis, keepdims=keep)
        if not returned:
            return avg
        if avg.size == 0:
            raise ShapeError("average(returned=True) of an empty result: numpy divides "
                             "0 elements by 0 averages (ZeroDivisionError)")
        return avg, broadcast_to(astype(a.size // avg.size, avg.dtype), avg.shape)
    w = traced(weights)
    along = w.shape != a.shape
    if not isinstance(weights, Tracer) and np.any(
            np.sum(weights, axis=None if along else axis) == 0):
        raise ShapeError("average: weights sum to zero, can't be normalized")
    if along:
        if axis is None:
            raise ShapeError("average: axis must be specified when shapes of a and weights "
                             "differ")
        axes = normalize_axes(axis, a.ndim)
        if w.shape != tuple(a.shape[d] for d in axes):
            raise ShapeError(f"average: shape of weights {w.shape} must be that of a "
                             f"{a.shape} or of its axes {axes}")
        w = reshape(w, tuple(n if d in axes else 1 for d, n in enumerate(a.shape)))
        w = broadcast_to(w, a.shape)
    if _is_float(a) or _is_float(w):
        a = astype(a, result_dtype(a, w, 1.0))
    total = sum(w, axis=axis, keepdims=keep)
    avg = divide(sum(multiply(a, w), axis=axis, keepdims=keep), total)
    if returned:
        return avg, broadcast_to(astype(total, avg.dtype), avg.shape)
    return avg
