"""numpy's functions, rebuilt from primitives: the front end of the tracer.

Every function here has numpy's signature and numpy's semantics (broadcasting,
dtype promotion with weak Python scalars, keepdims, negative axes) and emits IR
through the current trace's Builder.  Called with no Tracer among the arguments
they simply run numpy.

``op`` enters each function once in the numpy table (``TABLE``), whose row says
every way it is reached: the numpy callables it stands for, its names in
``llgrad.numpy`` and the Tracer methods and operators it is.  The rest is derived
from the table: ``UFUNCS`` and ``FUNCTIONS``, through which numpy's dispatch
protocols bring plain ``np.tanh(x)`` on a Tracer here; ``EXPORTS``, the names of
``llgrad.numpy``; and ``TRACER_METHODS``, which ``attach`` sets on the Tracer class.
"""
from __future__ import annotations

import builtins
import functools
import operator
from dataclasses import dataclass
from typing import Callable

import numpy as np

from llgrad.compiler.frontend.numpy_support import (
    accept,
    as_node,
    binary,
    bool_and,
    bool_or,
    broadcast_operands,
    broadcast_shapes,
    builder,
    compare,
    float_dtype,
    float_pair,
    has_tracer,
    integer,
    keep_dims,
    normalize_axes,
    result_dtype,
    shape_of,
    traced,
    unary_float,
    unary_numeric,
    wrap,
)
from llgrad.compiler.frontend.trace import Tracer, current, located, user_source
from llgrad.ir.errors import DTypeError, LlgradError, ShapeError, UnsupportedError
from llgrad.ir.types import TensorType, dtype_name


def traceable(name: str, numpy_fn):
    """Make a front-end function: stamp the user's line on the nodes it builds, turn
    errors into located ones (naming ``name``), and run ``numpy_fn`` when nothing is
    traced."""
    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if not has_tracer(args) and not has_tracer(kwargs.values()):
                return numpy_fn(*args, **kwargs)
            ctx = current()
            outer = ctx.builder.source
            if outer is None:
                ctx.builder.source = user_source()
            try:
                return fn(*args, **kwargs)
            except LlgradError as exc:
                raise located(exc, name) from None
            finally:
                ctx.builder.source = outer
        return wrapper
    return deco


@dataclass(frozen=True)
class NumpyFunction:
    """A row of the numpy table: one front-end function and every way it is reached."""
    name: str                       # in llgrad.numpy and in error messages
    fn: Callable
    numpy: tuple = ()               # numpy's ufuncs and functions it answers on Tracers
    aliases: tuple = ()             # further names in llgrad.numpy
    methods: tuple = ()             # Tracer attributes it is: "sum", "__add__"
    reflected: tuple = ()           # Tracer operators it is with operands swapped: "__radd__"
    exported: bool = True           # in llgrad.numpy


TABLE: dict[str, NumpyFunction] = {}


def _numpy_functions(names) -> tuple:
    """numpy's functions of these names, each once (np.abs is np.absolute)."""
    return tuple(dict.fromkeys(getattr(np, n) for n in names if hasattr(np, n)))


def op(name: str, reference=None, *, numpy=None, **row):
    """A front-end function (``traceable``) entered in the numpy table as ``name``, with
    the other fields of its row.  By default it answers for numpy's functions of its
    names (``name`` and ``aliases``), and runs the first outside a trace; a
    ``reference`` computes it there instead, for a function numpy lacks.  A function
    that stands for a numpy ufunc takes the ufunc's keywords too (``_ufunc_keywords``)."""
    if numpy is None:
        numpy = () if reference else _numpy_functions((name, *row.get("aliases", ())))

    def deco(fn):
        if numpy and isinstance(numpy[0], np.ufunc):
            fn = _ufunc_keywords(name, fn)
        wrapped = traceable(name, reference or numpy[0])(fn)
        TABLE[name] = NumpyFunction(name, wrapped, numpy, **row)
        return wrapped
    return deco


#: the rows that refuse, by name, with the reason their error gives
#: (docs/numpy-support.md lists them apart from what is merely not supported)
REFUSED: dict[str, str] = {}


def refuse(name: str, reason: str, reference=None, **row):
    """A row answering numpy's ``name`` on traced arrays with an UnsupportedError that
    says ``reason`` (and what to use instead), not the generic "not supported"."""
    shown = name if "." in name else f"np.{name}"

    def refusal(*args, **kwargs):
        raise UnsupportedError(f"{shown} is not supported on traced arrays: {reason}")
    REFUSED[name] = reason
    return op(name, reference, exported=False, **row)(refusal)


# ----------------------------------------------------------------------------------
# numpy's keywords: each front-end function takes those of its numpy counterpart


def _ufunc_keywords(name: str, fn):
    """``fn`` taking the keywords of numpy's ufuncs: ``dtype`` is the result's dtype,
    computed in it (the operands cast to it, as numpy's loop does) unless the result
    has it anyway (a comparison's bool); the others only at values that leave the
    result as it is (``accept``)."""
    @functools.wraps(fn)
    def f(*operands, dtype=None, **kwargs):
        accept(name, **kwargs)
        result = fn(*operands)
        target = result.node.dtype if dtype is None else dtype_name(dtype)
        if result.node.dtype == target:
            return result
        result = fn(*[astype(x, target) for x in operands])
        if result.node.dtype != target:
            raise UnsupportedError(f"{name}(dtype={target}) is not supported: {name} "
                                   f"gives {result.node.dtype} here")
        return result
    return f


# ----------------------------------------------------------------------------------
# elementwise functions

exp = op("exp")(unary_float("exp"))
log = op("log")(unary_float("log"))
log1p = op("log1p")(unary_float("log1p"))
expm1 = op("expm1")(unary_float("expm1"))
sin = op("sin")(unary_float("sin"))
cos = op("cos")(unary_float("cos"))
tanh = op("tanh")(unary_float("tanh"))
sqrt = op("sqrt")(unary_float("sqrt"))
arcsin = op("arcsin")(unary_float("asin"))
arccos = op("arccos")(unary_float("acos"))
arctan = op("arctan")(unary_float("atan"))
arcsinh = op("arcsinh")(unary_float("asinh"))
arccosh = op("arccosh")(unary_float("acosh"))
arctanh = op("arctanh")(unary_float("atanh"))
negative = op("negative", methods=("__neg__",))(unary_numeric("neg"))
absolute = op("absolute", aliases=("abs",), methods=("__abs__",))(unary_numeric("abs"))
sign = op("sign")(unary_numeric("sign"))
add = op("add", methods=("__add__",), reflected=("__radd__",))(binary("add"))
subtract = op("subtract", methods=("__sub__",), reflected=("__rsub__",))(binary("sub"))
multiply = op("multiply", methods=("__mul__",), reflected=("__rmul__",))(binary("mul"))
divide = op("divide", aliases=("true_divide",), methods=("__truediv__",),
            reflected=("__rtruediv__",))(binary("div", float_only=True))
maximum = op("maximum")(binary("max"))
minimum = op("minimum")(binary("min"))
arctan2 = op("arctan2")(binary("atan2", float_only=True))
less = op("less", methods=("__lt__",))(compare("lt"))
less_equal = op("less_equal", methods=("__le__",))(compare("le"))
greater = op("greater", methods=("__gt__",))(compare("gt"))
greater_equal = op("greater_equal", methods=("__ge__",))(compare("ge"))
equal = op("equal", methods=("__eq__",))(compare("eq"))
not_equal = op("not_equal", methods=("__ne__",))(compare("ne"))


def _logical(combine):
    def f(x, y):
        return wrap(combine(*broadcast_operands([x, y], "bool")))
    return f


logical_and = op("logical_and")(_logical(bool_and))
logical_or = op("logical_or")(_logical(bool_or))
logical_xor = op("logical_xor")(_logical(lambda x, y: builder().ne(x, y)))


@op("logical_not")
def logical_not(x):
    (n,) = broadcast_operands([x], "bool")
    return wrap(builder().eq(n, builder().full(False, n.type)))


def _bitwise(name, logical, **row):
    """& | ^ ~ are logic on bool arrays; on integers (bit operations) they are not
    supported, and say so."""
    def f(*xs):
        if result_dtype(*xs) != "bool":
            raise UnsupportedError(f"{name} of integer arrays (bit operations) is not "
                                   f"supported; on bool arrays it is logic")
        return logical(*xs)
    return op(name, **row)(f)


bitwise_and = _bitwise("bitwise_and", logical_and, methods=("__and__",),
                       reflected=("__rand__",))
bitwise_or = _bitwise("bitwise_or", logical_or, methods=("__or__",), reflected=("__ror__",))
bitwise_xor = _bitwise("bitwise_xor", logical_xor, methods=("__xor__",),
                       reflected=("__rxor__",))
invert = _bitwise("invert", logical_not, methods=("__invert__",))


def _sigmoid_numpy(x):
    return 1 / (1 + np.exp(-np.asarray(x)))


sigmoid = op("sigmoid", _sigmoid_numpy, aliases=("logistic",))(unary_float("logistic"))


@op("positive", methods=("__pos__",))
def positive(x):
    return x


@op("square")
def square(x):
    return multiply(x, x)


@op("reciprocal")
def reciprocal(x):
    return divide(1.0, x)


@op("power", methods=("__pow__",), reflected=("__rpow__",))
def power(x, y):
    """Small constant exponents become exact products (as numpy's fast paths do)."""
    if not isinstance(y, Tracer) and np.ndim(y) == 0 and float_dtype(x, y) == result_dtype(x):
        e = float(y)
        if e == 1:
            return multiply(x, 1) if not isinstance(x, Tracer) else x
        if e == 2:
            return multiply(x, x)
        if e == 0.5:
            return sqrt(x)
        if e == -1:
            return reciprocal(x)
    if result_dtype(x, y) == "int64":
        return _integer_power(x, y)
    return binary("pow", float_only=True)(x, y)


def _integer_power(x, y):
    """int ** int stays int (wrapping on overflow, as numpy), by repeated squaring of
    a constant exponent; a negative or traced exponent is numpy's error, or ours."""
    if isinstance(y, Tracer) or np.ndim(y) != 0:
        raise UnsupportedError("integer ** integer needs a constant scalar exponent; "
                               "convert the base to float (x.astype(float) ** y)")
    e = int(y)
    if e < 0:
        raise DTypeError("integers to negative integer powers are not allowed (as in "
                         "numpy); use a float base")
    result, square_ = ones_like(x), x
    while e:
        if e & 1:
            result = multiply(result, square_)
        e >>= 1
        square_ = multiply(square_, square_) if e else square_
    return result


@op("where")
def where(condition, *x_y):
    if len(x_y) != 2:
        raise UnsupportedError("where(condition) alone is np.nonzero, whose shape depends "
                               "on the values; give both x and y")
    x, y = x_y
    cond = condition if isinstance(condition, Tracer) else np.asarray(condition)
    if cond.dtype != np.bool_:
        cond = not_equal(cond, 0)
    dtype = result_dtype(x, y)
    shape = broadcast_shapes(shape_of(cond), shape_of(x), shape_of(y))
    b = builder()
    c = b.broadcast_to(as_node(cond, "bool"), shape)
    return wrap(b.select(c, b.broadcast_to(as_node(x, dtype), shape),
                         b.broadcast_to(as_node(y, dtype), shape)))


@op("clip", methods=("clip",))
def clip(a, a_min=np._NoValue, a_max=np._NoValue, out=None, *, min=np._NoValue,
         max=np._NoValue, dtype=None, **kwargs):
    """numpy's bounds, positional or as min=/max= (numpy 2.1), None or absent for none;
    the other keywords are those of a ufunc."""
    accept("clip", out=out, **kwargs)
    if dtype is not None:
        a = astype(a, dtype)
    low = min if a_min is np._NoValue else a_min
    high = max if a_max is np._NoValue else a_max
    if low is not None and low is not np._NoValue:
        a = maximum(a, low)
    if high is not None and high is not np._NoValue:
        a = minimum(a, high)
    return a


def _relu_numpy(x):
    return np.maximum(x, 0)


@op("relu", _relu_numpy)
def relu(x):
    return maximum(x, 0)


# ----------------------------------------------------------------------------------
# reductions


@op("sum", methods=("sum",))
def sum(a, axis=None, dtype=None, out=None, keepdims=False, initial=np._NoValue, where=True):
    """``initial`` (cast to the sum's dtype, as numpy) is added to every sum."""
    accept("sum", out=out, where=where)
    a = traced(a)
    target = dtype_name(dtype) if dtype is not None else (
        "int64" if a.node.dtype == "bool" else a.node.dtype)
    axes = normalize_axes(axis, a.ndim)
    node = builder().reduce_sum(as_node(a, target), axes=axes)
    total = wrap(keep_dims(node, a.shape, axes, keepdims))
    return total if initial is np._NoValue else add(total, wrap(as_node(initial, target)))


@op("mean", methods=("mean",))
def mean(a, axis=None, dtype=None, out=None, keepdims=False, *, where=True):
    accept("mean", out=out, where=where)
    a = traced(a)
    axes = normalize_axes(axis, a.ndim)
    count = int(np.prod([a.shape[d] for d in axes], dtype=np.int64))
    target = dtype_name(dtype) if dtype is not None else float_dtype(a)
    return divide(sum(astype(a, target), axis=axes, keepdims=keepdims), float(count))


_mean = mean   # for var and std, whose keyword ``mean`` hides the function


@op("max", aliases=("amax",), methods=("max",))
def max(a, axis=None, out=None, keepdims=False, initial=np._NoValue, where=True):
    """``initial`` joins every maximum (and makes one of no elements)."""
    accept("max", out=out, where=where)
    a = traced(a)
    axes = normalize_axes(axis, a.ndim)
    if any(a.shape[d] == 0 for d in axes):
        if initial is np._NoValue:
            raise ShapeError(f"zero-size array {a.shape} to reduction operation max which "
                             f"has no identity")
        empty = builder().broadcast_to(as_node(initial, a.node.dtype),
                                       tuple(n for d, n in enumerate(a.shape) if d not in axes))
        return wrap(keep_dims(empty, a.shape, axes, keepdims))
    node = wrap(keep_dims(builder().reduce_max(a.node, axes=axes), a.shape, axes, keepdims))
    return node if initial is np._NoValue else maximum(node, wrap(as_node(initial, a.node.dtype)))


@op("min", aliases=("amin",), methods=("min",))
def min(a, axis=None, out=None, keepdims=False, initial=np._NoValue, where=True):
    """-max(-a): negation is exact, so this is min, and its gradient is max's."""
    return negative(max(negative(a), axis=axis, out=out, keepdims=keepdims,
                        initial=initial if initial is np._NoValue else negative(initial),
                        where=where))


@op("var", methods=("var",))
def var(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, *, where=True,
        mean=np._NoValue, correction=np._NoValue):
    """As numpy, the sum of squares over max(n - ddof, 0): with ddof >= n that is a
    division by zero, inf (nan where every element is equal, or n is 0), and the
    gradient of that value is not finite either (inf or nan).  ``mean`` is the mean
    already computed (keepdims=True), ``correction`` another name for ddof."""
    accept("var", out=out, where=where)
    if correction is not np._NoValue:
        if ddof != 0:
            raise LlgradError("ddof and correction can't be provided simultaneously")
        ddof = correction
    a = traced(a)
    axes = normalize_axes(axis, a.ndim)
    count = int(np.prod([a.shape[d] for d in axes], dtype=np.int64))
    centred = subtract(a, _mean(a, axis=axes, dtype=dtype, keepdims=True)
                       if mean is np._NoValue else mean)
    return divide(sum(multiply(centred, centred), axis=axes, dtype=dtype, keepdims=keepdims),
                  float(builtins.max(count - ddof, 0)))


@op("std", methods=("std",))
def std(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, *, where=True,
        mean=np._NoValue, correction=np._NoValue):
    return _deviation(var(a, axis=axis, dtype=dtype, out=out, ddof=ddof, keepdims=keepdims,
                          where=where, mean=mean, correction=correction))


def _deviation(v):
    """sqrt(v) of a variance, whose derivative is 0 where v is 0 (as in PyTorch): exact
    over one element, where std is constantly 0, and the least subgradient where all
    elements are equal (std moves as |t| along any direction there).  sqrt's own
    derivative, inf times var's 0, would be NaN: sqrt sees only positive variances, and
    where v is 0 (or NaN) the result is v itself, whose gradient there is 0 (or NaN)."""
    spread = greater(v, 0)
    return where(spread, sqrt(where(spread, v, 1)), v)


def logsumexp_reference(a, axis=None, keepdims=False):
    m = np.max(a, axis=axis, keepdims=True)
    out = np.log(np.sum(np.exp(a - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis)


@op("logsumexp", logsumexp_reference)
def logsumexp(a, axis=None, keepdims=False):
    """Max-shifted, so it never overflows; the shift is a constant for the gradient's
    purposes only in value, not in IR (its adjoint cancels exactly)."""
    a = traced(a)
    m = max(a, axis=axis, keepdims=True)
    out = add(log(sum(exp(subtract(a, m)), axis=axis, keepdims=True)), m)
    return out if keepdims else squeeze(out, axis=normalize_axes(axis, a.ndim))


def softmax_reference(a, axis=-1):
    e = np.exp(a - np.max(a, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


@op("softmax", softmax_reference)
def softmax(a, axis=-1):
    e = exp(subtract(a, max(a, axis=axis, keepdims=True)))
    return divide(e, sum(e, axis=axis, keepdims=True))


def log_softmax_reference(a, axis=-1):
    return a - logsumexp_reference(a, axis=axis, keepdims=True)


@op("log_softmax", log_softmax_reference)
def log_softmax(a, axis=-1):
    return subtract(a, logsumexp(a, axis=axis, keepdims=True))


# ----------------------------------------------------------------------------------
# shapes

def _normalize_shape(shape, size):
    shape = list(shape)
    if shape.count(-1) > 1:
        raise ShapeError("can only specify one unknown dimension")
    if -1 in shape:
        known = int(np.prod([d for d in shape if d != -1], dtype=np.int64))
        if known == 0 or size % known:
            raise ShapeError(f"cannot reshape array of size {size} into shape {tuple(shape)}")
        shape[shape.index(-1)] = size // known
    return tuple(integer(d, "a dimension of the new shape") for d in shape)


@op("reshape", methods=("reshape",))
def reshape(a, *dims, shape=None, order="C", newshape=None, copy=None):
    """The shape as numpy takes it: positional (one tuple, or the method's integers),
    shape= or newshape= (numpy < 2.1).  A traced array is C-ordered, so order 'A' is 'C'."""
    accept("reshape", copy=copy)
    shape = dims or (shape if shape is not None else newshape,)
    if order not in ("C", "A"):
        raise UnsupportedError(f"reshape(order={order!r}) is not supported: only 'C' order")
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    a = traced(a)
    return wrap(builder().reshape(a.node, shape=_normalize_shape(shape, a.size)))


@op("transpose", methods=("transpose",))
def transpose(a, *perm, axes=None):
    """The axes as numpy's function (axes=, or one tuple) or the method (integers) take them."""
    if len(perm) == 1 and (perm[0] is None or not isinstance(perm[0], (int, np.integer))):
        perm = perm[0]
    axes = perm or axes
    a = traced(a)
    perm = tuple(reversed(range(a.ndim))) if not axes else tuple(
        operator.index(p) % a.ndim for p in axes)
    if sorted(perm) != list(range(a.ndim)):
        raise ShapeError(f"axes {axes} don't match array of shape {a.shape}")
    return wrap(builder().transpose(a.node, perm=perm))


@op("swapaxes", methods=("swapaxes",))
def swapaxes(a, axis1, axis2):
    perm = list(range(np.ndim(a) if not isinstance(a, Tracer) else a.ndim))
    i, j = normalize_axes(axis1, len(perm))[0], normalize_axes(axis2, len(perm))[0]
    perm[i], perm[j] = perm[j], perm[i]
    return transpose(a, perm)


@op("broadcast_to")
def broadcast_to(array, shape, subok=False):
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    x = traced(array)
    if broadcast_shapes(x.shape, shape) != shape:
        raise ShapeError(f"cannot broadcast {x.shape} to {shape}")
    return wrap(builder().broadcast_to(x.node, shape))


@op("expand_dims")
def expand_dims(a, axis):
    a = traced(a)
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    ndim = a.ndim + len(axes)
    axes = normalize_axes(axes, ndim)
    it = iter(a.shape)
    return reshape(a, tuple(1 if d in axes else next(it) for d in range(ndim)))


@op("squeeze", methods=("squeeze",))
def squeeze(a, axis=None):
    a = traced(a)
    axes = tuple(d for d, n in enumerate(a.shape) if n == 1) if axis is None else normalize_axes(axis, a.ndim)
    for d in axes:
        if a.shape[d] != 1:
            raise ShapeError(f"cannot squeeze axis {d} of size {a.shape[d]}")
    return reshape(a, tuple(n for d, n in enumerate(a.shape) if d not in axes))


@op("ravel", methods=("ravel", "flatten"))
def ravel(a, order="C"):
    """A traced array is C-ordered: order 'K' (the memory order) and 'A' are 'C'."""
    return reshape(a, (-1,), order="C" if order in ("K", "A") else order)


@op("concatenate")
def concatenate(arrays, axis=0, out=None, *, dtype=None, casting="same_kind"):
    accept("concatenate", out=out, casting=casting)
    arrays = list(arrays)
    if axis is None:
        arrays, axis = [ravel(a) for a in arrays], 0
    target = dtype_name(dtype) if dtype is not None else result_dtype(*arrays)
    nodes = [as_node(a, target) for a in arrays]
    ndim = nodes[0].type.ndim
    if ndim == 0:
        raise ShapeError("zero-dimensional arrays cannot be concatenated")
    return wrap(builder().concatenate(*nodes, axis=normalize_axes(axis, ndim)[0]))


@op("stack")
def stack(arrays, axis=0, out=None, *, dtype=None, casting="same_kind"):
    accept("stack", out=out, casting=casting)
    arrays = list(arrays)
    shapes = {tuple(shape_of(a)) for a in arrays}
    if len(shapes) != 1:
        raise ShapeError(f"all input arrays must have the same shape, got {sorted(shapes)}")
    ndim = len(shapes.pop()) + 1
    axis = normalize_axes(axis, ndim)[0]
    return concatenate([expand_dims(a, axis) for a in arrays], axis=axis, dtype=dtype)


@op("astype", lambda x, dtype, **kw: np.asarray(x).astype(dtype, **kw),
    methods=("astype",))
def astype(x, dtype, order="K", casting="unsafe", subok=True, copy=True):
    accept("astype", order=order, casting=casting, subok=subok, copy=copy)
    return wrap(as_node(x, dtype_name(dtype)))


def _filled(name, a, value, dtype, order, subok, shape, device):
    """numpy's full_like: ``a``'s shape and dtype unless ``shape`` and ``dtype`` say."""
    accept(name, order=order, subok=subok, device=device)
    target = dtype_name(dtype) if dtype is not None else result_dtype(a)
    shape = shape_of(a) if shape is None else (
        (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape))
    return wrap(builder().full(value, TensorType(shape, target)))


@op("full_like")
def full_like(a, fill_value, dtype=None, order="K", subok=True, shape=None, *, device=None):
    return _filled("full_like", a, fill_value, dtype, order, subok, shape, device)


def _full_like(name, value):
    def f(a, dtype=None, order="K", subok=True, shape=None, *, device=None):
        return _filled(name, a, value, dtype, order, subok, shape, device)
    return op(name)(f)


zeros_like = _full_like("zeros_like", 0)
ones_like = _full_like("ones_like", 1)


# ----------------------------------------------------------------------------------
# linear algebra


@op("matmul", methods=("__matmul__",), reflected=("__rmatmul__",))
def matmul(a, b):
    x, y = float_pair(a, b)
    if x.type.ndim == 0 or y.type.ndim == 0:
        raise ShapeError("matmul: input operand does not have enough dimensions "
                         f"(shapes {x.shape} and {y.shape})")
    k_y = 0 if y.type.ndim == 1 else y.type.ndim - 2
    if x.shape[-1] != y.shape[k_y]:
        raise ShapeError(f"matmul: shapes {x.shape} and {y.shape} are not aligned: "
                         f"{x.shape[-1]} (dim {x.type.ndim - 1}) != {y.shape[k_y]} (dim {k_y})")
    bld = builder()
    if x.type.ndim <= 2 and y.type.ndim <= 2:
        return wrap(bld.dot_general(x, y, dims=(((x.type.ndim - 1,), (0,)), ((), ()))))
    x2 = x if x.type.ndim > 1 else bld.reshape(x, shape=(1,) + x.shape)
    y2 = y if y.type.ndim > 1 else bld.reshape(y, shape=y.shape + (1,))
    batch = broadcast_shapes(x2.shape[:-2], y2.shape[:-2])
    x2 = bld.broadcast_to(x2, batch + x2.shape[-2:])
    y2 = bld.broadcast_to(y2, batch + y2.shape[-2:])
    nb = len(batch)
    out = bld.dot_general(x2, y2, dims=(((nb + 1,), (nb,)), (tuple(range(nb)), tuple(range(nb)))))
    shape = batch + (x.shape[-2:-1] if x.type.ndim > 1 else ()) + (
        y.shape[-1:] if y.type.ndim > 1 else ())
    return wrap(out if out.shape == shape else bld.reshape(out, shape=shape))


@op("dot", methods=("dot",))
def dot(a, b, out=None):
    accept("dot", out=out)
    if np.ndim(a) == 0 or np.ndim(b) == 0 or (
            isinstance(a, Tracer) and a.ndim == 0) or (isinstance(b, Tracer) and b.ndim == 0):
        return multiply(a, b)
    x, y = float_pair(a, b)
    k_y = 0 if y.type.ndim == 1 else y.type.ndim - 2
    if x.shape[-1] != y.shape[k_y]:
        raise ShapeError(f"dot: shapes {x.shape} and {y.shape} are not aligned: "
                         f"{x.shape[-1]} (dim {x.type.ndim - 1}) != {y.shape[k_y]} (dim {k_y})")
    return wrap(builder().dot_general(x, y, dims=(((x.type.ndim - 1,), (k_y,)), ((), ()))))


@op("tensordot")
def tensordot(a, b, axes=2):
    x, y = float_pair(a, b)
    if isinstance(axes, (int, np.integer)):
        la = tuple(range(x.type.ndim - axes, x.type.ndim))
        lb = tuple(range(axes))
    else:
        la, lb = axes
        la = (la,) if isinstance(la, (int, np.integer)) else tuple(la)
        lb = (lb,) if isinstance(lb, (int, np.integer)) else tuple(lb)
        la, lb = tuple(a % x.type.ndim for a in la), tuple(c % y.type.ndim for c in lb)
    if any(x.shape[i] != y.shape[j] for i, j in zip(la, lb)) or len(la) != len(lb):
        raise ShapeError(f"tensordot: shape-mismatch for sum: {x.shape} axes {la}, "
                         f"{y.shape} axes {lb}")
    return wrap(builder().dot_general(x, y, dims=((la, lb), ((), ()))))


@op("outer")
def outer(a, b, out=None):
    accept("outer", out=out)
    return multiply(reshape(a, (-1, 1)), reshape(b, (1, -1)))


@op("argmax", methods=("argmax",))
def argmax(a, axis=None, out=None, *, keepdims=False):
    """The first index of the maximum (as numpy), as int64: the smallest index whose
    value equals the max (or is NaN), via iota, select and a max-reduction of negated
    indices."""
    accept("argmax", out=out)
    a = traced(a)
    if axis is None:
        flat = argmax(reshape(a, (-1,)), axis=0)
        return reshape(flat, (1,) * a.ndim) if keepdims is True else flat
    (axis,) = normalize_axes(axis, a.ndim)
    b = builder()
    index = b.iota(shape=a.shape, dtype="int64", axis=axis)
    # a NaN is the maximum (np.max propagates it), and equals nothing: mark it itself
    hit = logical_or(equal(a, max(a, axis=axis, keepdims=True)), not_equal(a, a))
    candidates = b.select(hit.node, index, b.full(a.shape[axis], index.type))
    first = b.neg(b.reduce_max(b.neg(candidates), axes=(axis,)))
    return wrap(keep_dims(first, a.shape, (axis,), keepdims))


@op("argmin", methods=("argmin",))
def argmin(a, axis=None, out=None, *, keepdims=False):
    accept("argmin", out=out)
    return argmax(negative(a), axis=axis, keepdims=keepdims)


def _scaled_log(base):
    def f(x):
        return divide(log(x), float(np.log(base)))
    return f


log2 = op("log2")(_scaled_log(2.0))
log10 = op("log10")(_scaled_log(10.0))


@op("exp2")
def exp2(x):
    """pow(2, x): exp(x·ln 2) would carry ln 2's rounding error times x (4e-14 at 710)."""
    return binary("pow", float_only=True)(2.0, x)


def _where_small(x, small, large, cut=1.0):
    """``small(x)`` where |x| < cut, else ``large(x)``; each branch sees its argument
    clamped into (a margin beyond) its own range, so the branch not taken stays finite
    and its zero adjoint cannot turn into 0·inf = NaN in the gradient."""
    near = clip(x, -2 * cut, 2 * cut)
    far = maximum(absolute(x), cut / 2)
    return where(less(absolute(x), cut), small(near), large(far))


def _half_exp_squared(ax):
    """exp(ax) / 2 without overflowing where exp(ax) alone would (ax up to ~710)."""
    t = exp(multiply(ax, 0.5))
    return multiply(multiply(t, 0.5), t)


@op("sinh")
def sinh(x):
    """Accurate near 0 (t + t/(t+1) with t = expm1 x has no cancellation) and finite up
    to where sinh itself overflows (e^|x|/2 - 1/(2e^|x|) for |x| >= 1), as numpy."""
    def small(v):
        t = expm1(v)
        return multiply(add(t, divide(t, add(t, 1.0))), 0.5)

    def large(ax):
        h = _half_exp_squared(ax)
        magnitude = subtract(h, divide(0.25, h))
        return where(less(x, 0), negative(magnitude), magnitude)
    return _where_small(x, small, large)


@op("cosh")
def cosh(x):
    """1 + 2 sinh²(x/2) near 0 (so the derivative, sinh, keeps its precision) and
    e^|x|/2 + 1/(2e^|x|) beyond: finite up to where cosh itself overflows, as numpy."""
    def large(ax):
        h = _half_exp_squared(ax)
        return add(h, divide(0.25, h))
    return _where_small(x, lambda v: add(multiply(square(sinh(multiply(v, 0.5))), 2.0), 1.0),
                        large)


@op("tan")
def tan(x):
    return divide(sin(x), cos(x))


@op("hypot")
def hypot(x, y):
    """sqrt(x² + y²) with x and y scaled by a power of two s ~ 1/max(|x|, |y|), so the
    squares neither overflow nor underflow and the scaling is exact.  s is computed
    through an integer exponent, so it is a constant to the derivative (differentiating
    through a float scale overflowed at |x| ~ 1e154).  An infinite operand gives inf
    even beside a NaN, as numpy."""
    dtype = float_dtype(x, y)
    limit = 1000 if dtype == "float64" else 100   # keeps s and 1/s finite
    exponent = astype(log2(maximum(absolute(x), absolute(y))), np.int64)
    s = exp2(astype(negative(clip(exponent, -limit, limit)), dtype))
    h = divide(sqrt(add(square(multiply(x, s)), square(multiply(y, s)))), s)
    infinite = logical_or(equal(absolute(x), np.inf), equal(absolute(y), np.inf))
    return where(infinite, np.inf, h)


# ----------------------------------------------------------------------------------
# numpy's shape queries: answered from the static shape (no IR), so also outside a trace

def _shape_query(name, fn):
    TABLE[name] = NumpyFunction(name, fn, _numpy_functions((name,)), exported=False)


_shape_query("shape", lambda a: shape_of(a))
_shape_query("ndim", lambda a: len(shape_of(a)))
_shape_query("size", lambda a, axis=None: int(np.prod(shape_of(a), dtype=np.int64))
             if axis is None else shape_of(a)[axis])


# ----------------------------------------------------------------------------------
# numpy's dispatch protocols on Tracers

def _numpy_name(fn) -> str:
    module = getattr(fn, "__module__", None) or "numpy"
    if module.startswith("numpy"):  # numpy.linalg._linalg -> np.linalg
        module = ".".join(["np"] + [p for p in module.split(".")[1:] if not p.startswith("_")])
    return f"{module}.{getattr(fn, '__name__', repr(fn))}"


def array_ufunc(tracer, ufunc, method, *inputs, **kwargs):
    """``Tracer.__array_ufunc__``: numpy's ufunc called on traced arrays."""
    if method != "__call__":
        raise located(UnsupportedError(
            f"np.{ufunc.__name__}.{method} is not supported by llgrad"))
    if kwargs.get("out") is not None:
        raise located(UnsupportedError(f"np.{ufunc.__name__}(out=...) is not supported "
                                       f"(traced arrays are immutable)"))
    fn = UFUNCS.get(ufunc)
    if fn is None and _scipy_ufunc(ufunc):
        fn = SCIPY_UFUNCS.get(ufunc.__name__)
    if fn is None:
        raise located(UnsupportedError(f"np.{ufunc.__name__} is not supported by llgrad"))
    return fn(*inputs, **{k: v for k, v in kwargs.items() if k != "out"})


def _scipy_ufunc(ufunc) -> bool:
    """Whether ``ufunc`` is one of scipy.special's (``SCIPY_UFUNCS`` has some)."""
    import sys
    special = sys.modules.get("scipy.special")
    return special is not None and getattr(special, ufunc.__name__, None) is ufunc


def array_function(tracer, func, types, args, kwargs):
    """``Tracer.__array_function__``: numpy's other functions called on traced arrays."""
    fn = FUNCTIONS.get(func)
    if fn is None:
        raise located(UnsupportedError(f"{_numpy_name(func)} is not supported by llgrad"))
    return fn(*args, **kwargs)


@functools.cache   # one per function, so that attaching again sets the same methods
def _swapped(fn):
    """``fn`` as a reflected operator: ``2 - x`` is ``x.__rsub__(2)``, so subtract(2, x)."""
    return lambda self, other: fn(other, self)


# ----------------------------------------------------------------------------------
# everything derived from the table

UFUNCS: dict = {}
SCIPY_UFUNCS: dict = {}     # scipy.special's ufuncs by name (frontend/scipy_special.py)
FUNCTIONS: dict = {}
EXPORTS: dict = {}
TRACER_METHODS: dict = {}


def _derive() -> None:
    """Fill the dicts above from the table, in place: ``attach`` derives them again, so
    the rows that modules imported after this one register (``numpy_shapes``, ...) are
    in them too."""
    rows = TABLE.values()
    for derived, entries in (
            (UFUNCS, {f: r.fn for r in rows for f in r.numpy if isinstance(f, np.ufunc)}),
            (FUNCTIONS, {f: r.fn for r in rows for f in r.numpy if not isinstance(f, np.ufunc)}),
            (EXPORTS, {n: r.fn for r in rows if r.exported for n in (r.name, *r.aliases)}),
            (TRACER_METHODS, {"__array_ufunc__": array_ufunc,
                              "__array_function__": array_function,
                              **{m: r.fn for r in rows for m in r.methods},
                              **{m: _swapped(r.fn) for r in rows for m in r.reflected}})):
        derived.clear()
        derived.update(entries)


_derive()


def attach(tracer_class) -> None:
    """Make ``tracer_class`` (the Tracer) an array: numpy's protocols, the operators
    and the array methods of the table, derived again from it.  Idempotent: it sets
    the same functions."""
    _derive()
    for name, fn in TRACER_METHODS.items():
        setattr(tracer_class, name, fn)
