"""numpy's indexing, rebuilt from primitives: ``x[key]`` with every index numpy takes,
``np.take``, ``np.take_along_axis``, and functional updates, ``llgrad.numpy.at``.

A key is read into one record per axis (``_Axis``): a range of the axis (a slice, or an
integer that drops the axis) or an index array (an integer array; a boolean mask given
as a numpy array, which is its ``np.nonzero``; an integer among index arrays).  A key
of ranges with positive steps is one ``slice``.  Any other is one gather (``_Plan``):
the axes up to the last one not kept whole are flattened into rows, the number of each
row the result reads is computed from the ranges (``iota``) and the index arrays, and
``take`` gathers them; its gradient scatter-adds, so repeated indices accumulate.
Functional updates scatter into the same rows (``scatter_add``).

Index arrays follow numpy: negative indices count from the end, several broadcast
together, and the axes they make go where the first of them was when they are adjacent
in the key, first otherwise (``None`` and ``...`` separate them).  Constant indices out
of range are numpy's IndexError (a ShapeError).  Traced int64 indices cannot be checked
at trace time and are clamped instead, as ``take`` clamps: a negative index has the
axis' size added once, then it is clipped into [0, size - 1] on its own axis, so native
code never reads or writes out of bounds.  A traced boolean mask is refused: the shape
of ``x[mask]`` would depend on its values.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import numpy as np

from llgrad.compiler.frontend.numpy_ops import (
    TABLE,
    NumpyFunction,
    add,
    astype,
    clip,
    divide,
    greater_equal,
    less,
    multiply,
    op,
    ravel,
    reshape,
    subtract,
    traceable,
    where,
)
from llgrad.compiler.frontend.numpy_support import (
    accept,
    as_node,
    broadcast_shapes,
    builder,
    has_tracer,
    integer,
    normalize_axes,
    traced,
    wrap,
)
from llgrad.compiler.frontend.trace import Tracer
from llgrad.ir.errors import DTypeError, ShapeError, UnsupportedError
from llgrad.ir.graph import Node
from llgrad.ir.types import TensorType

# ----------------------------------------------------------------------------------
# reading a key

@dataclass(frozen=True)
class _Axis:
    """One axis of the indexed array as the key treats it; ``None`` and a boolean
    scalar insert axes of size 1.  A range keeps ``count`` elements from ``start`` by
    ``step`` (an integer's one element drops the axis: ``keep`` False); an index array
    (``index``: non-negative int64, a numpy array or a node) makes, with the others,
    axes of their broadcast shape."""
    position: int           # its entry's place in the key: are the index arrays adjacent?
    size: int
    start: int = 0
    step: int = 1
    count: int = 1
    keep: bool = True
    index: object = None
    inserted: bool = False

    @property
    def whole(self) -> bool:
        return self.index is None and self.keep and (
            self.start, self.step, self.count) == (0, 1, self.size)


def _entry(k):
    """(kind, value) of one entry of a key, in numpy's terms."""
    if k is None or k is Ellipsis:
        return ("new" if k is None else "ellipsis"), k
    if isinstance(k, slice):
        return "slice", k
    if isinstance(k, (bool, np.bool_)):
        return "bool", bool(k)
    if isinstance(k, (list, tuple)) and has_tracer(k):
        k = traced(k)
    if isinstance(k, Tracer):
        if k.node.dtype == "bool":
            raise UnsupportedError(
                f"indexing with a traced {k.node.type} mask: boolean masks must be concrete: "
                f"a traced one selects a number of elements that depends on its values, and "
                f"shapes are static; keep the shape with np.where(mask, x, 0) (then reduce), "
                f"or give the mask as a numpy array")
        return "array", k
    if isinstance(k, (list, tuple, np.ndarray)):
        arr = np.asarray(k)
        if arr.size == 0 and not isinstance(k, np.ndarray):
            arr = arr.astype(np.int64)   # numpy reads [] as an empty index array
        if arr.dtype == np.bool_:
            return ("bool", bool(arr)) if arr.ndim == 0 else ("mask", arr)
        if arr.ndim == 0 and arr.dtype.kind in "iu":
            return "int", int(arr)
        return "array", arr
    return "int", integer(k, "an index")


def _bounded(i: int, n: int, axis: int) -> int:
    if not -n <= i < n:
        raise ShapeError(f"index {i} is out of bounds for axis {axis} with size {n}")
    return i % n


def _index_array(k, n: int, axis: int):
    """An integer index array of axis ``axis`` (size ``n``): a constant one as
    non-negative int64 (numpy's IndexError out of range), a traced one as an int64 node
    wrapped once and clamped into range (see the module's docstring)."""
    if isinstance(k, Tracer):
        t = k.node.type
        if t.dtype != "int64":
            raise UnsupportedError(f"indexing with a traced {t} array: index arrays must "
                                   f"be integer (int64) arrays")
        if n == 0 and t.size:
            raise ShapeError(f"cannot index axis {axis} of size 0 with a traced {t} array")
        if t.size == 0:
            return np.zeros(t.shape, np.int64)
        b = builder()
        i = b.select(b.lt(k.node, b.full(0, t)), b.add(k.node, b.full(n, t)), k.node)
        return b.min(b.max(i, b.full(0, t)), b.full(n - 1, t))
    arr = np.asarray(k)
    if arr.dtype.kind not in "iu":
        raise UnsupportedError(f"indexing with a {arr.dtype} array: index arrays must be "
                               f"integer arrays, or boolean masks given as numpy arrays")
    if arr.size and (arr.min() < -n or arr.max() >= n):
        _bounded(int(arr.max() if arr.max() >= n else arr.min()), n, axis)
    return np.where(arr < 0, arr + n, arr).astype(np.int64)


def _slice(k: slice, n: int) -> tuple[int, int, int]:
    """(start, step, count) of a slice of an axis of size ``n``; one element or none has
    step 1, so only a step below 0 over two elements or more reverses anything."""
    try:
        start, stop, step = k.indices(n)
    except ValueError as exc:
        raise ShapeError(str(exc)) from None
    except TypeError:
        raise DTypeError(f"slice indices must be integers or None, got {k}") from None
    count = len(range(start, stop, step))
    if count <= 1:
        return (start if count else 0), 1, count
    return start, step, count


def _width(kind: str, k) -> int:
    """How many axes of the array an entry of a key indexes (``...`` aside)."""
    return 1 if kind in ("slice", "int", "array") else k.ndim if kind == "mask" else 0


def _read_key(shape, key) -> list[_Axis]:
    """The axes of ``x[key]`` for ``x`` of ``shape``, numpy's rules checked."""
    key = key if isinstance(key, tuple) else (key,)
    entries = [_entry(k) for k in key]
    kinds = [kind for kind, _ in entries]
    used = sum(_width(kind, k) for kind, k in entries)
    if kinds.count("ellipsis") > 1:
        raise ShapeError("an index can only have a single ellipsis ('...')")
    if used > len(shape):
        raise ShapeError(f"too many indices for array of shape {tuple(shape)}: "
                         f"{used} were indexed")
    advanced = any(kind in ("array", "mask", "bool") for kind in kinds)
    axes, d = [], 0
    for position, (kind, k) in enumerate(entries):
        n = shape[d] if d < len(shape) else 1
        if kind == "ellipsis":
            axes += [_Axis(position, m, count=m) for m in shape[d:d + len(shape) - used]]
            d += len(shape) - used
        elif kind in ("new", "bool"):
            axes.append(_Axis(position, 1, inserted=True, index=None if kind == "new"
                              else np.zeros(int(k), np.int64)))
        elif kind == "slice":
            start, step, count = _slice(k, n)
            axes.append(_Axis(position, n, start, step, count))
        elif kind == "int" and not advanced:
            axes.append(_Axis(position, n, _bounded(k, n, d), keep=False))
        elif kind in ("int", "array"):
            axes.append(_Axis(position, n, index=_index_array(k, n, d)))
        else:
            _check_mask(k.shape, shape[d:d + k.ndim], d)
            axes += [_Axis(position, m, index=i.astype(np.int64))
                     for m, i in zip(shape[d:d + k.ndim], np.nonzero(k))]
        d += _width(kind, k)
    return axes + [_Axis(len(key), m, count=m) for m in shape[d:]]


def _check_mask(mask_shape, shape, first):
    """A mask's shape is that of the axes it indexes, as numpy checks it: an axis of
    the mask with no elements fits any."""
    for d, (m, n) in enumerate(zip(mask_shape, shape)):
        if m not in (n, 0):
            raise ShapeError(f"boolean index did not match indexed array along axis "
                             f"{first + d}; size of axis is {n} but size of corresponding "
                             f"boolean axis is {m}")


# ----------------------------------------------------------------------------------
# one gather: rows of the array, numbered from the key

@dataclass(frozen=True)
class _Plan:
    """``x[key]`` as a gather: ``x`` viewed as ``rows`` rows of shape ``rest``, the rows
    numbered ``offset + sum(terms)`` (an array of shape ``block``) read, the result
    given ``shape``.  A term (dims, index, scale) is ``scale`` times an index array
    placed on those dims of the block or, where ``index`` is None, times the position
    along its one dim."""
    rows: int
    rest: tuple
    block: tuple
    shape: tuple
    offset: int
    terms: tuple

    @property
    def empty(self) -> bool:
        return 0 in self.block or 0 in self.rest

    @property
    def constant(self) -> bool:
        return not any(isinstance(index, Node) for _, index, _ in self.terms)


def _plan(axes: list[_Axis]) -> _Plan:
    """The block is the axes up to the last one not kept whole; in its result, the
    index arrays' broadcast shape stands where the first of them was if they are
    adjacent in the key, else first."""
    end = max((j + 1 for j, a in enumerate(axes) if not a.whole), default=0)
    block = axes[:end]
    arrays = [j for j, a in enumerate(block) if a.index is not None]
    ranges = [j for j, a in enumerate(block) if a.index is None]
    shape = broadcast_shapes(*[block[j].index.shape for j in arrays]) if arrays else ()
    positions = sorted({block[j].position for j in arrays})
    adjacent = not arrays or positions == list(range(positions[0], positions[-1] + 1))
    first = sum(j < arrays[0] for j in ranges) if arrays and adjacent else 0
    dim = {j: k + (len(shape) if k >= first else 0) for k, j in enumerate(ranges)}
    counts = [block[j].count for j in ranges]
    out = (*counts[:first], *shape, *counts[first:])
    stride = [math.prod(a.size for a in block[j + 1:]) for j in range(end)]
    terms = [((dim[j],), None, block[j].step * stride[j]) for j in ranges
             if block[j].count > 1]
    terms += [(tuple(range(first + len(shape) - len(block[j].index.shape), first + len(shape))),
               block[j].index, stride[j]) for j in arrays]
    dropped = {dim[j] for j in ranges if not block[j].keep}
    rest = tuple(a.size for a in axes[end:])
    return _Plan(math.prod(a.size for a in block), rest, out,
                 tuple(n for k, n in enumerate(out) if k not in dropped) + rest,
                 sum(block[j].start * stride[j] for j in ranges), tuple(terms))


def _numbers(plan: _Plan):
    """The plan's row numbers as an int64 node of its block's shape."""
    b, block, total = builder(), TensorType(plan.block, "int64"), None
    for dims, index, scale in plan.terms:
        if index is None:
            part = b.iota(shape=plan.block, dtype="int64", axis=dims[0])
        else:
            part = index if isinstance(index, Node) else b.const(index, "int64")
            if part.shape != plan.block:
                part = b.broadcast_in_dim(part, shape=plan.block, dims=dims)
        part = part if scale == 1 else b.mul(part, b.full(scale, block))
        total = part if total is None else b.add(total, part)
    if total is None or plan.offset:
        offset = b.full(plan.offset, block)
        total = offset if total is None else b.add(total, offset)
    return total


def _constant_numbers(plan: _Plan) -> np.ndarray:
    """The row numbers of a plan whose index arrays are all constant, computed here."""
    numbers = np.full(plan.block, plan.offset, np.int64)
    for dims, index, scale in plan.terms:
        index = np.arange(plan.block[dims[0]]) if index is None else index
        placed = [1] * len(plan.block)
        for d, n in zip(dims, index.shape):
            placed[d] = n
        numbers += (index * scale).reshape(placed)
    return numbers


def _shaped(node: Node, shape) -> Node:
    shape = tuple(shape)
    return node if node.shape == shape else builder().reshape(node, shape=shape)


def _gather(x: Tracer, plan: _Plan) -> Tracer:
    b = builder()
    if plan.empty:
        return wrap(b.full(0, TensorType(plan.shape, x.node.dtype)))
    rows = _shaped(x.node, (plan.rows,) + plan.rest)
    taken = b.take(rows, _shaped(_numbers(plan), (math.prod(plan.block),)))
    return wrap(_shaped(taken, plan.shape))


def _sliced(x: Tracer, axes: list[_Axis]) -> Tracer:
    """A key of ranges with positive steps: one slice, then a reshape that drops the
    integers' axes and inserts None's."""
    real = [a for a in axes if not a.inserted]
    starts = tuple(a.start for a in real)
    limits = tuple(a.start + (a.count - 1) * a.step + 1 if a.count else a.start
                   for a in real)
    strides = tuple(a.step for a in real)
    node = x.node
    if (starts, limits, strides) != ((0,) * x.ndim, x.shape, (1,) * x.ndim):
        node = builder().slice(node, starts=starts, limits=limits, strides=strides)
    return wrap(_shaped(node, [a.count for a in axes if a.keep]))


@op("getitem", operator.getitem, methods=("__getitem__",), exported=False)
def getitem(x, key):
    """``x[key]`` as numpy reads every key: integers, slices (any step), None, ...,
    integer arrays (constant or traced) and constant boolean masks, on any axes."""
    x = traced(x)
    axes = _read_key(x.shape, key)
    if all(a.index is None and a.step > 0 for a in axes):
        return _sliced(x, axes)
    return _gather(x, _plan(axes))


# ----------------------------------------------------------------------------------
# numpy's take and take_along_axis

def _modulo(indices, n: int):
    """``indices`` modulo ``n`` (numpy's 'wrap'): a traced index through float64, so
    exact while |index| < 2**52 (the quotient's rounding is corrected either way)."""
    if not isinstance(indices, Tracer):
        return np.mod(indices, n)
    q = astype(divide(astype(indices, np.float64), float(n)), np.int64)
    r = subtract(indices, multiply(q, n))
    r = where(less(r, 0), add(r, n), r)
    return where(greater_equal(r, n), subtract(r, n), r)


def _index_values(indices):
    """Indices as a Tracer (when any is traced) or a numpy array."""
    return traced(indices) if has_tracer([indices]) else np.asarray(indices)


@op("take")
def take(a, indices, axis=None, out=None, mode="raise"):
    """numpy's modes: 'raise' checks constant indices (traced ones are clamped, as the
    module's docstring says), 'clip' clips every index into range (a negative one to
    0), 'wrap' takes it modulo the axis' size."""
    accept("take", out=out)
    a, indices = traced(a), _index_values(indices)
    if axis is None:
        a, axis = ravel(a), 0
    axis = normalize_axes(axis, a.ndim)[0]
    if mode not in ("raise", "clip", "wrap"):
        raise UnsupportedError(f"take(mode={mode!r}): the mode must be 'raise', 'clip' "
                               f"or 'wrap'")
    n = a.shape[axis]
    if mode != "raise" and indices.size:
        if n == 0:
            raise ShapeError("cannot do a non-empty take from an empty axes.")
        indices = clip(indices, 0, n - 1) if mode == "clip" else _modulo(indices, n)
    return getitem(a, (slice(None),) * axis + (indices,))


def _along_axis(shape, indices, axis) -> tuple:
    """The key of numpy's take_along_axis and put_along_axis: ``indices`` on ``axis``,
    every other axis by its positions, all broadcast together."""
    if indices.ndim != len(shape):
        raise ShapeError("`indices` and `arr` must have the same number of dimensions")
    if indices.dtype.kind not in "iu":
        raise DTypeError("`indices` must be an integer array")
    axis = normalize_axes(axis, len(shape))[0]
    return tuple(indices if d == axis else np.arange(n).reshape(
        [n if e == d else 1 for e in range(len(shape))]) for d, n in enumerate(shape))


def _flat_along(arr, indices, axis):
    """numpy's axis=None: the flattened array, ``indices`` one-dimensional."""
    if axis is not None:
        return arr, axis
    if indices.ndim != 1:
        raise ShapeError("when axis=None, `indices` must have a single dimension.")
    return ravel(arr), 0


@op("take_along_axis")
def take_along_axis(arr, indices, axis=-1):
    arr, indices = traced(arr), _index_values(indices)
    flat, axis = _flat_along(arr, indices, axis)
    return getitem(flat, _along_axis(flat.shape, indices, axis))


def _put_along_axis_numpy(arr, indices, values, axis, inplace=True):
    if inplace:
        return np.put_along_axis(arr, indices, values, axis)
    arr = np.array(arr, copy=True)
    np.put_along_axis(arr, indices, values, axis)
    return arr


@op("put_along_axis", _put_along_axis_numpy, numpy=(np.put_along_axis,))
def put_along_axis(arr, indices, values, axis, inplace=True):
    """numpy's put_along_axis writes into ``arr``, which a traced array cannot be; with
    ``inplace=False`` (as in JAX) it returns the new array instead."""
    if inplace:
        raise UnsupportedError(
            "np.put_along_axis writes into its array, and traced arrays are immutable; "
            "llgrad.numpy.put_along_axis(arr, indices, values, axis, inplace=False) "
            "returns the new array")
    arr, indices = traced(arr), _index_values(indices)
    flat, axis = _flat_along(arr, indices, axis)
    return reshape(_update(flat, _along_axis(flat.shape, indices, axis), values, False),
                   arr.shape)


# ----------------------------------------------------------------------------------
# functional updates: llgrad.numpy.at(x)[key].set(v) and .add(v)

class at:
    """``at(x)[key].set(v)``: a new array, ``x`` with ``x[key]`` replaced by ``v``
    (broadcast to the shape of ``x[key]`` and cast to x's dtype), what numpy's
    ``x[key] = v`` leaves in ``x``; ``.add(v)`` adds ``v`` there as ``np.add.at`` does,
    repeated indices accumulating; ``.get()`` is ``x[key]``.  Traced arrays are
    immutable, so this is how they are updated (as ``x.at[key]`` in JAX).

    The key is any key of ``x[key]``, and also a traced boolean mask over x's leading
    axes with a ``v`` of one row (np.where).  Where a constant index repeats, ``set``
    keeps the last value, as numpy's assignment; a repeated traced index gets the sum
    of its values (numpy leaves it unspecified).  Its gradient flows to ``x`` where it
    is kept and to the values written.  Outside a trace it computes with numpy."""

    __slots__ = ("array",)

    def __init__(self, array):
        self.array = array

    def __getitem__(self, key):
        return _At(self.array, key)


TABLE["at"] = NumpyFunction("at", at)


@dataclass(frozen=True)
class _At:
    array: object
    key: object

    def set(self, values):
        return _set(self.array, self.key, values)

    def add(self, values):
        return _add(self.array, self.key, values)

    def get(self):
        return getitem(self.array, self.key)


def _set_numpy(x, key, values):
    x = np.array(x, copy=True)
    x[key] = values
    return x


def _add_numpy(x, key, values):
    x = np.array(x, copy=True)
    np.add.at(x, key, values)
    return x


def _broadcasts(shape, target) -> bool:
    return len(shape) <= len(target) and all(
        n in (1, m) for n, m in zip(reversed(shape), reversed(target)))


def _update(x, key, values, accumulate: bool) -> Tracer:
    x = traced(x)
    mask = key[0] if isinstance(key, tuple) and len(key) == 1 else key
    if isinstance(mask, Tracer) and mask.node.dtype == "bool":
        return _masked_update(x, mask, values, accumulate)
    plan = _plan(_read_key(x.shape, key))
    values = as_node(traced(values), x.node.dtype)
    if not _broadcasts(values.shape, plan.shape):
        raise ShapeError(f"could not broadcast input array from shape {values.shape} "
                         f"into shape {plan.shape}")
    if plan.empty:
        return x
    b = builder()
    values = _shaped(b.broadcast_to(values, plan.shape), (math.prod(plan.block),) + plan.rest)
    if plan.constant and not accumulate:   # numpy assigns in order: the last repeat stays
        numbers = _constant_numbers(plan).ravel()
        last = np.sort(numbers.size - 1 - np.unique(numbers[::-1], return_index=True)[1])
        if last.size < numbers.size:
            numbers, values = numbers[last], b.take(values, b.const(last, "int64"))
        numbers = b.const(numbers, "int64")
    else:
        numbers = _shaped(_numbers(plan), (math.prod(plan.block),))
    rows = _shaped(x.node, (plan.rows,) + plan.rest)
    if not accumulate:
        counts = TensorType((plan.rows,), "int64")
        hits = b.scatter_add(b.full(0, counts), numbers, b.full(1, numbers.type))
        hit = b.broadcast_in_dim(b.ne(hits, b.full(0, counts)), shape=rows.shape, dims=(0,))
        rows = b.select(hit, b.full(0, rows.type), rows)
    if x.node.dtype == "bool":   # added as integers: bool + bool is or, as numpy's
        wide = b.scatter_add(b.convert(rows, dtype="int64"), numbers,
                             b.convert(values, dtype="int64"))
        updated = b.ne(wide, b.full(0, wide.type))
    else:
        updated = b.scatter_add(rows, numbers, values)
    return wrap(_shaped(updated, x.shape))


def _masked_update(x: Tracer, mask: Tracer, values, accumulate: bool) -> Tracer:
    """``x[mask] = v`` with a traced mask over x's leading axes and ``v`` one row
    (broadcast to every selected one): np.where(mask, v, x), or x + v there."""
    k = mask.ndim
    if k > x.ndim:
        raise ShapeError(f"too many indices for array of shape {x.shape}")
    _check_mask(mask.shape, x.shape[:k], 0)
    row = x.shape[k:]
    values = astype(values, x.dtype)
    if values.ndim == len(row) + 1 and values.shape[0] == 1:
        values = reshape(values, values.shape[1:])
    if values.ndim > len(row) or broadcast_shapes(values.shape, row) != row:
        raise UnsupportedError(f"at(x)[mask] with a traced mask takes values of one row "
                               f"{row}, written to every selected row (np.where); values "
                               f"of shape {values.shape} would have to match the number of "
                               f"selected rows, which depends on the mask's values")
    b = builder()
    chosen = wrap(b.broadcast_in_dim(mask.node, shape=x.shape, dims=tuple(range(k))))
    return where(chosen, add(x, values) if accumulate else values, x)


@traceable("at[...].set", _set_numpy)
def _set(x, key, values):
    return _update(x, key, values, accumulate=False)


@traceable("at[...].add", _add_numpy)
def _add(x, key, values):
    return _update(x, key, values, accumulate=True)


@op("setitem", operator.setitem, methods=("__setitem__",), exported=False)
def setitem(x, key, value):
    raise UnsupportedError(
        "traced arrays are immutable: x[key] = v is not supported; "
        "llgrad.numpy.at(x)[key].set(v) returns the new array (.add(v) adds to it), "
        "and np.where(mask, v, x) chooses between two arrays")
