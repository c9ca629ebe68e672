"""The building blocks every front-end module uses to rebuild a numpy function from
primitives: the current Builder, Tracers in and out, numpy's dtype promotion and
broadcasting, static axes and integers, and numpy's keywords at neutral values.

They are public here so that the modules of the numpy table (``numpy_ops``,
``numpy_shapes``, ``numpy_indexing``, ``numpy_math``, ``numpy_sort``, ...) share one
definition without reaching into each other's private names.
"""
from __future__ import annotations

import operator

import numpy as np

from llgrad.compiler.frontend.trace import Tracer, current, lift
from llgrad.ir.errors import DTypeError, ShapeError, UnsupportedError
from llgrad.ir.graph import Node
from llgrad.ir.types import TensorType, dtype_name


def has_tracer(values) -> bool:
    """Whether a Tracer is among ``values`` or inside their (nested) lists and tuples."""
    for v in values:
        if isinstance(v, Tracer):
            return True
        if isinstance(v, (list, tuple)) and has_tracer(v):
            return True
    return False


def builder():
    """The Builder of the trace in progress."""
    return current().builder


def wrap(node: Node) -> Tracer:
    return Tracer(node)


def traced(x) -> Tracer:
    """``x`` as a Tracer: constants (arrays, scalars) become constant nodes, and (nested)
    lists or tuples holding Tracers are stacked into one array, as numpy makes one."""
    if isinstance(x, Tracer):
        return x
    if isinstance(x, (list, tuple)) and has_tracer(x):
        items = [traced(v) for v in x]
        shapes = {v.shape for v in items}
        if len(shapes) != 1:
            raise ShapeError(f"all input arrays must have the same shape, got "
                             f"{sorted(shapes)}")
        dtype = result_dtype(*items)
        b = builder()
        return wrap(b.concatenate(*[b.reshape(as_node(v, dtype), shape=(1, *v.shape))
                                    for v in items], axis=0))
    return wrap(lift(x))


# ----------------------------------------------------------------------------------
# numpy's keywords: each front-end function takes those of its numpy counterpart

#: the values of numpy keywords that leave a traced result as numpy's: no output array,
#: no mask, any memory layout or subclass (a traced array has neither), the CPU, and any
#: casting rule (which says when numpy refuses a cast; llgrad casts as asked)
_NEUTRAL = {"out": (None,), "where": (True,), "signature": (None,), "axes": (None,),
            "axis": (None,), "keepdims": (False,), "order": ("K", "A", "C", "F"),
            "subok": (True, False), "copy": (None, True, False), "device": (None, "cpu"),
            "casting": ("no", "equiv", "safe", "same_kind", "unsafe")}
_WHY = {"out": " (traced arrays are immutable: use the returned value)",
        "where": " with a mask (combine the results with np.where instead)"}


def accept(name: str, **given) -> None:
    """Refuse, naming the function and the keyword, a value of a numpy keyword that
    llgrad does not follow (``_NEUTRAL`` lists the values it does)."""
    for keyword, value in given.items():
        if not any(value is v or (isinstance(value, (str, bool, np.bool_)) and value == v)
                   for v in _NEUTRAL.get(keyword, ())):   # never an array's ==
            raise UnsupportedError(f"{name}({keyword}=...) is not supported"
                                   f"{_WHY.get(keyword, '')}")


# ----------------------------------------------------------------------------------
# static integers and axes

def integer(value, what: str) -> int:
    """A static integer (axis, index, dimension); a float such as NaN is a clear error."""
    try:
        return operator.index(value)
    except TypeError:
        raise DTypeError(f"{what} must be an integer, got {value!r}") from None


def normalize_axes(axis, ndim) -> tuple[int, ...]:
    """numpy's ``axis`` (None for all, an integer or a sequence, negative from the end)
    as sorted non-negative axes, each once."""
    if axis is None:
        return tuple(range(ndim))
    axes = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
    out = []
    for a in axes:
        a = integer(a, "axis")
        if not -ndim <= a < ndim:
            raise ShapeError(f"axis {a} is out of bounds for an array of dimension {ndim}")
        out.append(a % ndim if ndim else a)
    if len(set(out)) != len(out):
        raise ShapeError(f"duplicate value in axis {axis}")
    return tuple(sorted(out))


def on_last_axis(x: Tracer, axis: int, fn) -> Tracer:
    """``fn`` (an operation along the last axis that keeps the shape) applied along
    ``axis`` of ``x``: that axis moved last, and back."""
    if axis == x.ndim - 1:
        return fn(x)
    order = tuple(d for d in range(x.ndim) if d != axis) + (axis,)
    y = fn(wrap(builder().transpose(x.node, perm=order)))
    return wrap(builder().transpose(y.node, perm=tuple(int(d) for d in np.argsort(order))))


def keep_dims(node, x_shape, axes, keepdims):
    """A reduction's result over ``axes`` of ``x_shape`` with those axes kept as size 1
    when ``keepdims`` says so."""
    if not keepdims or keepdims is np._NoValue:
        return node
    return builder().reshape(node, shape=tuple(1 if d in axes else n
                                               for d, n in enumerate(x_shape)))


# ----------------------------------------------------------------------------------
# promotion and broadcasting

def _dtype_key(x):
    """What np.result_type should see: dtypes for arrays, the value for Python scalars
    (NEP 50: ``float32_array * 2.0`` stays float32)."""
    if isinstance(x, Tracer):
        return x.dtype
    if isinstance(x, (bool, int, float)) and not isinstance(x, np.generic):
        return x
    if isinstance(x, complex):
        raise DTypeError("complex numbers are not supported by llgrad")
    return np.asarray(x).dtype


def result_dtype(*values) -> str:
    try:
        return dtype_name(np.result_type(*[_dtype_key(v) for v in values]))
    except TypeError as exc:
        raise DTypeError(str(exc)) from None


def float_dtype(*values) -> str:
    """The dtype of a float result of ``values``: their promoted dtype if it is a float,
    else float64 (as numpy's float functions of integers)."""
    dtype = result_dtype(*values)
    return dtype if dtype in ("float32", "float64") else "float64"


def as_node(x, dtype: str) -> Node:
    """``x`` as a node of ``dtype``: constants are made in it, nodes converted."""
    if not isinstance(x, Tracer):
        arr = np.asarray(x)
        if arr.dtype.kind not in "biuf":
            raise DTypeError(f"dtype {arr.dtype} is not supported by llgrad")
        return builder().const(arr.astype(TensorType((), dtype).np_dtype), dtype)
    node = x.node
    return node if node.dtype == dtype else builder().convert(node, dtype=dtype)


def float_pair(a, b) -> tuple[Node, Node]:
    """Two operands of a product as nodes of their float dtype."""
    dtype = float_dtype(a, b)
    return as_node(a, dtype), as_node(b, dtype)


def broadcast_shapes(*shapes):
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise ShapeError("operands could not be broadcast together with shapes "
                         + " ".join(str(tuple(s)) for s in shapes)) from None


def shape_of(x):
    """The shape of a Tracer or of anything numpy makes an array of."""
    return x.shape if isinstance(x, Tracer) else np.shape(x)


def broadcast_operands(values, dtype):
    """``values`` as nodes of ``dtype``, broadcast to their common shape."""
    shape = broadcast_shapes(*[shape_of(v) for v in values])
    return [builder().broadcast_to(as_node(v, dtype), shape) for v in values]


# ----------------------------------------------------------------------------------
# elementwise functions from one primitive

def unary_float(prim):
    """numpy's float ufunc of one argument as primitive ``prim``."""
    def f(x):
        (n,) = broadcast_operands([x], float_dtype(x))
        return wrap(builder().emit(prim, n))
    return f


def unary_numeric(prim):
    """numpy's ufunc of one number (not bool), in the argument's dtype."""
    def f(x):
        dtype = result_dtype(x)
        if dtype == "bool":
            raise DTypeError(f"{prim} does not accept bool arrays")
        return wrap(builder().emit(prim, as_node(x, dtype)))
    return f


def bool_or(x, y):
    return builder().select(x, builder().full(True, x.type), y)


def bool_and(x, y):
    return builder().select(x, y, builder().full(False, x.type))


# numpy's arithmetic on two bool arrays is logic: a + b is a | b, a * b is a & b
_BOOL_ARITHMETIC = {"add": bool_or, "max": bool_or, "mul": bool_and, "min": bool_and}


def binary(prim, float_only=False):
    """numpy's ufunc of two broadcast arguments as primitive ``prim``."""
    def f(x, y):
        dtype = float_dtype(x, y) if float_only else result_dtype(x, y)
        if dtype == "bool" and prim in _BOOL_ARITHMETIC:
            return wrap(_BOOL_ARITHMETIC[prim](*broadcast_operands([x, y], "bool")))
        if dtype == "bool":
            raise DTypeError(f"{prim} does not accept bool arrays")
        return wrap(builder().emit(prim, *broadcast_operands([x, y], dtype)))
    return f


def compare(prim):
    """numpy's comparison of two broadcast arguments as primitive ``prim`` (bool)."""
    def f(x, y):
        return wrap(builder().emit(prim, *broadcast_operands([x, y], result_dtype(x, y))))
    return f
