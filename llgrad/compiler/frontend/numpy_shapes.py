"""numpy's construction, stacking, splitting and shape functions, rebuilt from primitives.

Rows of the numpy table (``numpy_ops.op``) like those of ``numpy_ops``, with numpy's
signatures, errors and dtypes.  Each is data movement (slice, concatenate, reshape,
transpose, broadcast, pad, a gather of rows with a constant index array) or a little
arithmetic, so its derivatives come from those primitives'.  Everything that decides
a shape (repeats, splits, pad widths, shifts, spacings) must be static.

Two things numpy does not hand to llgrad: ``np.array``/``np.asarray`` of a list of
traced arrays and numpy's functions given such a list (``np.mean([a, b])``) convert
each element without asking it (only ``like=`` dispatches), and ``np.r_``/``np.c_``
convert every piece that way too; ``Tracer.__array__`` refuses those conversions and
names ``np.stack``/``np.concatenate``.  ``llgrad.numpy.array`` and every function of
the table take such lists (``numpy_support.traced`` stacks them).
"""
from __future__ import annotations

import builtins
import itertools
import warnings

import numpy as np

from llgrad.compiler.frontend.numpy_ops import (
    add,
    astype,
    broadcast_to,
    concatenate,
    divide,
    multiply,
    negative,
    not_equal,
    op,
    ravel,
    reshape,
    stack,
    subtract,
    sum,
    transpose,
    where,
)
from llgrad.compiler.frontend.numpy_support import (
    accept,
    builder,
    has_tracer,
    integer,
    normalize_axes,
    result_dtype,
    traced,
    wrap,
)
from llgrad.ir.errors import DTypeError, ShapeError, UnsupportedError
from llgrad.ir.types import dtype_name


def _axis(axis, ndim) -> int:
    """One axis, negative counted from the end, checked against ``ndim``."""
    return normalize_axes(axis, ndim)[0]


def _axis_list(axis, ndim) -> list[int]:
    """One axis or a sequence of them, each normalised, in the order given (repeats
    kept: roll adds their shifts)."""
    return [_axis(d, ndim) for d in (axis if isinstance(axis, (tuple, list)) else (axis,))]


def _axis_tuple(axis, ndim) -> tuple[int, ...]:
    """numpy's normalize_axis_tuple: the axes in the order given, each once."""
    axes = tuple(_axis_list(axis, ndim))
    if len(set(axes)) != len(axes):
        raise ShapeError(f"repeated axis in {axis}")
    return axes


def _static(value, what: str):
    if has_tracer([value]):
        raise UnsupportedError(f"{what} must be static (it decides the result's shape); "
                               f"pass a Python or numpy value, not a traced array")
    return value


def _along(a, axis: int, key):
    """``a[..., key, ...]``, ``key`` on ``axis`` and full slices elsewhere: a slice
    with a positive step, or an integer (which drops the axis)."""
    a = traced(a)
    n = a.shape[axis]
    if isinstance(key, slice):
        start, stop, step = key.indices(n)
        stop = builtins.max(stop, start)
    else:
        start, stop, step = key % n, key % n + 1, 1
    node = a.node
    if (start, stop, step) != (0, n, 1):
        starts, limits, strides = [0] * a.ndim, list(a.shape), [1] * a.ndim
        starts[axis], limits[axis], strides[axis] = start, stop, step
        node = builder().slice(node, starts=tuple(starts), limits=tuple(limits),
                               strides=tuple(strides))
    if not isinstance(key, slice):
        node = builder().reshape(node, shape=a.shape[:axis] + a.shape[axis + 1:])
    return wrap(node)


def _gathered(a, index, axis: int):
    """``a`` with the entries ``index`` (a constant integer array) along ``axis``: the
    axis moved first and its rows gathered (``take``, whose gradient is a scatter-add);
    no entries is an empty slice."""
    index = np.asarray(index, dtype=np.int64)
    if index.size == 0:
        return _along(a, axis, slice(0, 0))
    if np.array_equal(index, np.arange(a.shape[axis])):
        return a
    others = [d for d in range(a.ndim) if d != axis]
    rows = _moved(a, [axis] + others).node
    taken = wrap(builder().take(rows, builder().const(index, "int64")))
    return _moved(taken, [*range(1, axis + 1), 0, *range(axis + 1, a.ndim)])


def _joined(pieces, axis: int):
    """concatenate, leaving out pieces with nothing along ``axis``."""
    kept = [p for p in pieces if p.shape[axis]] or pieces[:1]
    return kept[0] if len(kept) == 1 else concatenate(kept, axis=axis)


def _reshaped(a, shape):
    return a if a.shape == tuple(shape) else reshape(a, tuple(shape))


def _moved(a, perm):
    return a if list(perm) == list(range(a.ndim)) else transpose(a, list(perm))


# ----------------------------------------------------------------------------------
# construction

@op("array")
def array(object, dtype=None, *, copy=True, order="K", subok=False, ndmin=0, ndmax=0,
          like=None):
    """Nested lists and tuples of traced arrays stacked into one (``np.array`` itself
    converts them without asking llgrad: this is ``llgrad.numpy.array``, or
    ``np.array(..., like=x)``)."""
    accept("array", copy=copy, order=order, subok=subok)
    a = traced(object)
    if ndmax and a.ndim > ndmax:
        raise UnsupportedError(f"array(ndmax={ndmax}) below the nesting depth makes an "
                               f"object array, which llgrad does not trace")
    a = a if dtype is None else astype(a, dtype)
    return _reshaped(a, (1,) * (ndmin - a.ndim) + a.shape)


@op("asarray", aliases=("asanyarray",))
def asarray(a, dtype=None, order=None, *, device=None, copy=None, like=None):
    accept("asarray", device=device, copy=copy, order=order or "K")
    return array(a, dtype)


@op("append")
def append(arr, values, axis=None):
    if axis is None:
        return concatenate([ravel(arr), ravel(values)])
    return concatenate([traced(arr), traced(values)], axis=axis)


# ----------------------------------------------------------------------------------
# stacking

def _at_least(name, grow):
    """atleast_Nd: each array reshaped by ``grow(shape)``; one array alone, else a tuple."""
    def f(*arys):
        out = tuple(_reshaped(a, grow(a.shape)) for a in map(traced, arys))
        return out[0] if len(out) == 1 else out
    return op(name)(f)


atleast_1d = _at_least("atleast_1d", lambda s: s or (1,))
atleast_2d = _at_least("atleast_2d", lambda s: (1,) * (2 - len(s)) + s)
atleast_3d = _at_least("atleast_3d", lambda s: {0: (1, 1, 1), 1: (1, *s, 1),
                                                 2: (*s, 1)}.get(len(s), s))


@op("vstack", aliases=("row_stack",))
def vstack(tup, *, dtype=None, casting="same_kind"):
    return concatenate([atleast_2d(a) for a in tup], axis=0, dtype=dtype, casting=casting)


@op("hstack")
def hstack(tup, *, dtype=None, casting="same_kind"):
    arrays = [atleast_1d(a) for a in tup]
    return concatenate(arrays, axis=0 if arrays and arrays[0].ndim == 1 else 1, dtype=dtype,
                       casting=casting)


@op("dstack")
def dstack(tup):
    return concatenate([atleast_3d(a) for a in tup], axis=2)


@op("column_stack")
def column_stack(tup):
    """1-d arrays become columns, 0-d ones 1x1; the rest are stacked as they are."""
    def column(a):
        a = traced(a)
        return reshape(a, (-1, 1)) if a.ndim < 2 else a
    return concatenate([column(a) for a in tup], axis=1)


# ----------------------------------------------------------------------------------
# splitting: static slices along one axis

@op("array_split")
def array_split(ary, indices_or_sections, axis=0):
    """A number of sections (the first ``n % sections`` one longer) or the indices
    between pieces, which are sliced as Python slices (clamped, possibly empty)."""
    a = traced(ary)
    axis = _axis(axis, a.ndim)
    n = a.shape[axis]
    cuts = _static(indices_or_sections, "array_split's indices_or_sections")
    if np.ndim(cuts) == 0:
        sections = integer(cuts, "the number of sections")
        if sections <= 0:
            raise ShapeError("number sections must be larger than 0.")
        each, extras = divmod(n, sections)
        bounds = np.cumsum([0] + extras * [each + 1] + (sections - extras) * [each]).tolist()
    else:
        bounds = [0, *(integer(i, "a split index") for i in cuts), n]
    return [_along(a, axis, slice(start, stop)) for start, stop in itertools.pairwise(bounds)]


@op("split")
def split(ary, indices_or_sections, axis=0):
    a = traced(ary)
    if np.ndim(_static(indices_or_sections, "split's indices_or_sections")) == 0 and (
            a.shape[_axis(axis, a.ndim)] % integer(indices_or_sections, "sections")):
        raise ShapeError("array split does not result in an equal division")
    return array_split(a, indices_or_sections, axis=axis)


def _split_along(name, least, axis_of):
    def f(ary, indices_or_sections):
        a = traced(ary)
        if a.ndim < least:
            raise ShapeError(f"{name} only works on arrays of {least} or more dimensions")
        return split(a, indices_or_sections, axis=axis_of(a.ndim))
    return op(name)(f)


hsplit = _split_along("hsplit", 1, lambda ndim: 1 if ndim > 1 else 0)
vsplit = _split_along("vsplit", 2, lambda ndim: 0)
dsplit = _split_along("dsplit", 3, lambda ndim: 2)


# ----------------------------------------------------------------------------------
# repeating

@op("repeat", methods=("repeat",))
def repeat(a, repeats, axis=None):
    """Static repeats: one count for every entry is a broadcast (its gradient a sum),
    one count per entry a gather with numpy's own index ``np.repeat(arange(n), r)``."""
    a = traced(a)
    if axis is None:
        a, axis = ravel(a), 0
    axis = _axis(axis, a.ndim)
    counts = _static(repeats, "repeat's repeats")
    index = np.repeat(np.arange(a.shape[axis]), counts)   # numpy's checks and errors
    if np.size(counts) != 1:
        return _gathered(a, index, axis)
    k = int(np.asarray(counts).reshape(-1)[0])
    inner, outer = a.shape[:axis + 1], a.shape[axis + 1:]
    spread = broadcast_to(reshape(a, inner + (1,) + outer), inner + (k,) + outer)
    return reshape(spread, a.shape[:axis] + (a.shape[axis] * k,) + outer)


def _interleaved(a, lead, reps):
    """``a`` with ``lead`` size-1 axes in front, then each axis d repeated ``reps[d]``
    times as whole blocks: a broadcast over a new axis before each axis."""
    shape = (1,) * lead + a.shape
    blocks = [n for r, s in zip(reps, shape) for n in (r, s)]
    spread = broadcast_to(reshape(a, [n for s in shape for n in (1, s)]), blocks)
    return reshape(spread, [r * s for r, s in zip(reps, shape)])


@op("tile")
def tile(A, reps):
    a = traced(A)
    reps = tuple(integer(r, "a repetition") for r in (
        (reps,) if np.ndim(_static(reps, "tile's reps")) == 0 else reps))
    if any(r < 0 for r in reps):
        raise ShapeError("negative dimensions are not allowed")
    d = builtins.max(len(reps), a.ndim)
    reps = (1,) * (d - len(reps)) + reps
    if all(r == 1 for r in reps):
        return _reshaped(a, (1,) * (d - a.ndim) + a.shape)
    return _interleaved(a, d - a.ndim, reps)


@op("kron")
def kron(a, b):
    """Every product a[i]·b[j] at i·shape(b) + j: the operands' axes interleaved
    (a's at even positions, b's at odd ones), multiplied by broadcasting."""
    b = traced(b)
    a = array(a, ndmin=b.ndim)
    if a.ndim == 0 or b.ndim == 0:
        return multiply(a, b)
    nd = builtins.max(a.ndim, b.ndim)
    sa, sb = (1,) * (nd - a.ndim) + a.shape, (1,) * (nd - b.ndim) + b.shape
    product = multiply(reshape(a, [n for s in sa for n in (s, 1)]),
                       reshape(b, [n for s in sb for n in (1, s)]))
    return reshape(product, [x * y for x, y in zip(sa, sb)])


# ----------------------------------------------------------------------------------
# rearranging

@op("roll")
def roll(a, shift, axis=None):
    """Each axis's shifts summed (as numpy), then two slices swapped."""
    a = traced(a)
    if axis is None:
        return reshape(roll(ravel(a), shift, 0), a.shape)
    pairs = np.broadcast(_static(shift, "roll's shift"), _axis_list(axis, a.ndim))
    if pairs.ndim > 1:
        raise ShapeError("'shift' and 'axis' should be scalars or 1D sequences")
    shifts = [0] * a.ndim
    for s, d in pairs:
        shifts[d] += integer(s, "a shift")
    for d, s in enumerate(shifts):
        n = a.shape[d]
        if n and s % n:
            a = concatenate([_along(a, d, slice(n - s % n, n)),
                             _along(a, d, slice(0, n - s % n))], axis=d)
    return a


@op("flip")
def flip(m, axis=None):
    """Reversal along each axis: a gather with the constant index n-1, ..., 0 (slices
    take only positive steps)."""
    m = traced(m)
    for d in range(m.ndim) if axis is None else _axis_tuple(axis, m.ndim):
        m = _gathered(m, np.arange(m.shape[d] - 1, -1, -1), d)
    return m


def _flip_one(name, least, axis):
    def f(m):
        m = traced(m)
        if m.ndim < least:
            raise ShapeError(f"Input must be >= {least}-d.")
        return flip(m, axis)
    return op(name)(f)


flipud = _flip_one("flipud", 1, 0)
fliplr = _flip_one("fliplr", 2, 1)


@op("rot90")
def rot90(m, k=1, axes=(0, 1)):
    m = traced(m)
    axes = tuple(axes)
    if len(axes) != 2:
        raise ShapeError("len(axes) must be 2.")
    if axes[0] == axes[1] or abs(axes[0] - axes[1]) == m.ndim:
        raise ShapeError("Axes must be different.")
    if any(not -m.ndim <= d < m.ndim for d in axes):
        raise ShapeError(f"Axes={axes} out of range for array of ndim={m.ndim}.")
    k = _static(k, "rot90's k") % 4   # as numpy: a k not 0, 1 or 2 turns as 3 does
    if k == 0:
        return m
    if k == 2:
        return flip(flip(m, axes[0]), axes[1])
    perm = list(range(m.ndim))
    perm[axes[0]], perm[axes[1]] = perm[axes[1]], perm[axes[0]]
    return transpose(flip(m, axes[1]), perm) if k == 1 else flip(transpose(m, perm), axes[1])


@op("moveaxis")
def moveaxis(a, source, destination):
    a = traced(a)
    source, destination = _axis_tuple(source, a.ndim), _axis_tuple(destination, a.ndim)
    if len(source) != len(destination):
        raise ShapeError("`source` and `destination` arguments must have the same number "
                         "of elements")
    order = [d for d in range(a.ndim) if d not in source]
    for dest, src in sorted(zip(destination, source)):
        order.insert(dest, src)
    return _moved(a, order)


@op("rollaxis")
def rollaxis(a, axis, start=0):
    a = traced(a)
    n = a.ndim
    axis = _axis(axis, n)
    start = integer(start, "start")
    start += n if start < 0 else 0
    if not 0 <= start < n + 1:
        raise ShapeError(f"'start' arg requires {-n} <= start < {n + 1}, but {start} was "
                         f"passed in")
    start -= 1 if axis < start else 0
    order = [d for d in range(n) if d != axis]
    order.insert(start, axis)
    return _moved(a, order)


# ----------------------------------------------------------------------------------
# pad

#: modes whose padding repeats entries: a gather per axis with numpy's own index map,
#: np.pad(arange(n), widths, mode)
_INDEXED_MODES = ("edge", "reflect", "symmetric", "wrap")
_PAD_KEYWORDS = {"constant": {"constant_values"}, "empty": set(), "edge": set(),
                 "wrap": set(), "reflect": {"reflect_type"}, "symmetric": {"reflect_type"}}


def _pad_widths(pad_width, ndim) -> np.ndarray:
    """numpy's pad_width, one (before, after) row per axis: from an int, a pair, one
    pair per axis, or {axis: width}."""
    if isinstance(pad_width, dict):
        seq = [(0, 0)] * ndim
        for axis, width in pad_width.items():
            seq[axis] = (width, width) if np.ndim(width) == 0 else tuple(width)
        pad_width = seq
    widths = np.asarray(_static(pad_width, "pad_width"))
    if widths.dtype.kind not in "iu":
        raise DTypeError("`pad_width` must be of integral type.")
    if widths.size and widths.min() < 0:
        raise ShapeError("index can't contain negative values")
    try:
        return np.broadcast_to(widths.astype(np.int64), (ndim, 2))
    except ValueError:
        raise ShapeError(f"pad_width {pad_width!r} does not fit an array of dimension "
                         f"{ndim}") from None


@op("pad")
def pad(array, pad_width, mode="constant", **kwargs):
    """Modes constant (and empty, as zeros), edge, reflect, symmetric and wrap, with
    static widths.  Constant padding is the pad primitive (zeros), with other
    constants chosen in by a constant mask; the other modes gather entries."""
    a = traced(array)
    if not isinstance(mode, str) or mode not in _PAD_KEYWORDS:
        raise UnsupportedError(f"pad(mode={mode!r}) is not supported: modes "
                               f"{', '.join(_PAD_KEYWORDS)}")
    unknown = set(kwargs) - _PAD_KEYWORDS[mode]
    if unknown:
        raise ShapeError(f"unsupported keyword arguments for mode '{mode}': {unknown}")
    if kwargs.get("reflect_type", "even") != "even":
        raise UnsupportedError("pad(reflect_type='odd') is not supported")
    widths = _pad_widths(pad_width, a.ndim)
    if a.ndim == 0:
        return a
    if mode in _INDEXED_MODES:
        for d, (low, high) in enumerate(widths.tolist()):
            if low or high:
                if not a.shape[d]:
                    raise ShapeError(f"can't extend empty axis {d} using modes other than "
                                     f"'constant' or 'empty'")
                a = _gathered(a, np.pad(np.arange(a.shape[d]), (low, high), mode=mode), d)
        return a
    padded = wrap(builder().pad(a.node, low=tuple(widths[:, 0].tolist()),
                                high=tuple(widths[:, 1].tolist()), interior=(0,) * a.ndim))
    values = np.pad(np.zeros(a.shape, a.dtype), widths,
                    constant_values=_static(kwargs.get("constant_values", 0),
                                            "pad's constant_values"))
    if not (values.any() or np.signbit(values).any()):
        return padded
    return where(np.pad(np.ones(a.shape, bool), widths), padded, values)


# ----------------------------------------------------------------------------------
# differences

@op("diff")
def diff(a, n=1, axis=-1, prepend=np._NoValue, append=np._NoValue):
    """Repeated differences of neighbours (not_equal for bool, as numpy), after
    ``prepend`` and ``append`` (scalars broadcast to one slice) join ``a``."""
    n = integer(n, "the order n")
    if n == 0:
        return a
    if n < 0:
        raise ShapeError(f"order must be non-negative but got {n!r}")
    a = traced(a)
    if a.ndim == 0:
        raise ShapeError("diff requires input that is at least one dimensional")
    axis = _axis(axis, a.ndim)
    one = a.shape[:axis] + (1,) + a.shape[axis + 1:]

    def slab(extra):   # a scalar is one slice of it
        extra = traced(extra)
        return broadcast_to(extra, one) if extra.ndim == 0 else extra
    pieces = [slab(prepend)] if prepend is not np._NoValue else []
    pieces += [a] + ([slab(append)] if append is not np._NoValue else [])
    a = concatenate(pieces, axis=axis) if len(pieces) > 1 else a
    step = not_equal if a.dtype == np.bool_ else subtract
    for _ in range(n):
        a = step(_along(a, axis, slice(1, None)), _along(a, axis, slice(None, -1)))
    return a


def _spacings(varargs, axes, shape):
    """numpy's gradient spacing: none (1), one scalar for all axes, or a scalar or 1-d
    coordinates per axis; uniform coordinates become their step, others the steps."""
    if not varargs:
        return [1.0] * len(axes)
    _static(varargs, "gradient's spacing")
    if len(varargs) == 1 and np.ndim(varargs[0]) == 0:
        return list(varargs) * len(axes)
    if len(varargs) != len(axes):
        raise TypeError("invalid number of arguments")
    out = []
    for d, given in zip(axes, varargs):
        distances = np.asanyarray(given)
        if distances.ndim == 0:
            out.append(given)   # as given: a Python float stays weak (NEP 50)
            continue
        if distances.ndim != 1:
            raise ShapeError("distances must be either scalars or 1d")
        if len(distances) != shape[d]:
            raise ShapeError("when 1d, distances must match the length of the "
                             "corresponding dimension")
        steps = np.diff(distances.astype(np.float64) if distances.dtype.kind in "iub"
                        else distances)
        out.append(steps[0] if (steps == steps[0]).all() else steps)
    return out


def _weighted(f, axis, terms):
    """sum of coefficient·f[slice] over ``terms`` (coefficient, slice) along ``axis``;
    1-d coefficient arrays lie along ``axis``."""
    total = None
    for c, key in terms:
        c = np.reshape(c, [-1 if d == axis else 1 for d in range(f.ndim)]) if np.ndim(c) else c
        term = multiply(c, _along(f, axis, key))
        total = term if total is None else add(total, term)
    return total


def _gradient_along(f, axis, dx, edge_order):
    """numpy's gradient along one axis: second-order central differences inside, first-
    or second-order one-sided ones at the two ends."""
    if np.ndim(dx) == 0:
        inner = divide(subtract(_along(f, axis, slice(2, None)),
                               _along(f, axis, slice(None, -2))), 2.0 * dx)
    else:
        dx1, dx2 = dx[:-1], dx[1:]
        inner = _weighted(f, axis, [(-dx2 / (dx1 * (dx1 + dx2)), slice(None, -2)),
                                    ((dx2 - dx1) / (dx1 * dx2), slice(1, -1)),
                                    (dx1 / (dx2 * (dx1 + dx2)), slice(2, None))])
    first, last = (dx, dx) if np.ndim(dx) == 0 else (dx[0], dx[-1])
    if edge_order == 1:
        start = divide(subtract(_along(f, axis, slice(1, 2)), _along(f, axis, slice(0, 1))),
                       first)
        end = divide(subtract(_along(f, axis, slice(-1, None)), _along(f, axis, slice(-2, -1))),
                     last)
    else:
        if np.ndim(dx) == 0:
            head, tail = (-1.5 / dx, 2.0 / dx, -0.5 / dx), (0.5 / dx, -2.0 / dx, 1.5 / dx)
        else:
            (d1, d2), (e1, e2) = dx[:2], dx[-2:]
            head = (-(2.0 * d1 + d2) / (d1 * (d1 + d2)), (d1 + d2) / (d1 * d2),
                    -d1 / (d2 * (d1 + d2)))
            tail = (e2 / (e1 * (e1 + e2)), -(e2 + e1) / (e1 * e2),
                    (2.0 * e2 + e1) / (e2 * (e1 + e2)))
        start = _weighted(f, axis, zip(head, (slice(0, 1), slice(1, 2), slice(2, 3))))
        end = _weighted(f, axis, zip(tail, (slice(-3, -2), slice(-2, -1), slice(-1, None))))
    return _joined([start, inner, end], axis)


@op("gradient")
def gradient(f, *varargs, axis=None, edge_order=1):
    """One array per axis (a tuple of them for several axes), float64 for integers."""
    f = traced(f)
    axes = tuple(range(f.ndim)) if axis is None else _axis_tuple(axis, f.ndim)
    spacings = _spacings(varargs, axes, f.shape)
    if edge_order not in (1, 2):
        raise ShapeError("'edge_order' greater than 2 not supported" if edge_order > 2
                         else f"edge_order {edge_order!r} is not supported: 1 or 2")
    out_dtype = f.dtype if f.dtype.kind == "f" else np.dtype(np.float64)
    f = astype(f, np.float64) if f.dtype.kind in "iu" else f
    outs = []
    for d, dx in zip(axes, spacings):
        if f.shape[d] < edge_order + 1:
            raise ShapeError("Shape of array too small to calculate a numerical gradient, "
                             "at least (edge_order + 1) elements are required.")
        g = _gradient_along(f, d, dx, edge_order)
        outs.append(g if g.dtype == out_dtype else astype(g, out_dtype))
    return outs[0] if len(outs) == 1 else tuple(outs)


# ----------------------------------------------------------------------------------
# triangles and diagonals

@op("tril")
def tril(m, k=0):
    """numpy's own mask, np.tri over the last two axes (a 1-d ``m`` gives a matrix)."""
    m = traced(m)
    if m.ndim == 0:
        raise ShapeError("tril needs an array of at least one dimension")
    return where(np.tri(*m.shape[-2:], k=k, dtype=bool), m, np.zeros(1, m.dtype))


@op("triu")
def triu(m, k=0):
    m = traced(m)
    if m.ndim == 0:
        raise ShapeError("triu needs an array of at least one dimension")
    return where(np.tri(*m.shape[-2:], k=k - 1, dtype=bool), np.zeros(1, m.dtype), m)


@op("diagonal", methods=("diagonal",))
def diagonal(a, offset=0, axis1=0, axis2=1):
    """The two axes moved last and flattened together: the diagonal is then one strided
    slice (step n2 + 1), and it comes last, as in numpy."""
    a = traced(a)
    if a.ndim < 2:
        raise ShapeError("diag requires an array of at least two dimensions")
    axis1, axis2 = _axis(axis1, a.ndim), _axis(axis2, a.ndim)
    if axis1 == axis2:
        raise ShapeError("axis1 and axis2 cannot be the same")
    k = integer(offset, "offset")
    rest = [d for d in range(a.ndim) if d not in (axis1, axis2)]
    n1, n2 = a.shape[axis1], a.shape[axis2]
    flat = reshape(_moved(a, rest + [axis1, axis2]), [a.shape[d] for d in rest] + [n1 * n2])
    length = builtins.max(0, builtins.min(n1, n2 - k) if k >= 0 else builtins.min(n1 + k, n2))
    start = k if k >= 0 else -k * n2
    key = slice(start, start + (length - 1) * (n2 + 1) + 1, n2 + 1) if length else slice(0, 0)
    return _along(flat, flat.ndim - 1, key)


@op("diag")
def diag(v, k=0):
    """A 1-d ``v`` on the k-th diagonal of a square matrix (v spread over rows, kept on
    the diagonal, then padded by |k|); of a 2-d ``v``, its k-th diagonal."""
    v = traced(v)
    k = integer(k, "k")
    if v.ndim == 2:
        return diagonal(v, k)
    if v.ndim != 1:
        raise ShapeError("Input must be 1- or 2-d.")
    n = v.shape[0]
    square = where(np.eye(n, dtype=bool), broadcast_to(v, (n, n)), np.zeros(1, v.dtype))
    if k == 0:
        return square
    return pad(square, ((0, k), (k, 0)) if k >= 0 else ((-k, 0), (0, -k)))


@op("trace", methods=("trace",))
def trace(a, offset=0, axis1=0, axis2=1, dtype=None, out=None):
    accept("trace", out=out)
    return sum(diagonal(a, offset, axis1, axis2), axis=-1, dtype=dtype)


# ----------------------------------------------------------------------------------
# products

@op("cross")
def cross(a, b, axisa=-1, axisb=-1, axisc=-1, axis=None):
    """Vectors along axisa and axisb (moved last), of 3 components, or 2 (numpy 2.0
    deprecates those, and warns as numpy does): a 2-vector has a zero third component,
    and two 2-vectors give the scalar a0·b1 - a1·b0."""
    if axis is not None:
        axisa = axisb = axisc = axis
    a, b = traced(a), traced(b)
    if a.ndim < 1 or b.ndim < 1:
        raise ShapeError("At least one array has zero dimension")
    a, b = moveaxis(a, _axis(axisa, a.ndim), -1), moveaxis(b, _axis(axisb, b.ndim), -1)
    na, nb = a.shape[-1], b.shape[-1]
    if na not in (2, 3) or nb not in (2, 3):
        raise ShapeError("incompatible dimensions for cross product\n"
                         "(dimension must be 2 or 3)")
    if 2 in (na, nb):
        warnings.warn("Arrays of 2-dimensional vectors are deprecated. Use arrays of "
                      "3-dimensional vectors instead. (deprecated in NumPy 2.0)",
                      DeprecationWarning, stacklevel=3)
    dtype = dtype_name(np.promote_types(a.dtype, b.dtype))
    a, b = astype(a, dtype), astype(b, dtype)
    x = [_along(a, a.ndim - 1, i) for i in range(na)]
    y = [_along(b, b.ndim - 1, i) for i in range(nb)]

    def minor(i, j):   # x_i·y_j - x_j·y_i, where a missing third component is 0
        left = multiply(x[i], y[j]) if i < na and j < nb else None
        right = multiply(x[j], y[i]) if j < na and i < nb else None
        if right is None:
            return left
        return negative(right) if left is None else subtract(left, right)

    if na == nb == 2:
        return minor(0, 1)
    product = stack([minor(1, 2), minor(2, 0), minor(0, 1)], axis=-1)
    return moveaxis(product, -1, _axis(axisc, product.ndim))


@op("inner")
def inner(a, b):
    """Sums of products over the last axes: a dot_general for floats, products and a
    sum for integers and bools (which stay exact, and bool, as numpy's)."""
    a, b = traced(a), traced(b)
    if a.ndim == 0 or b.ndim == 0:
        return multiply(a, b)
    if a.shape[-1] != b.shape[-1]:
        raise ShapeError(f"shapes {a.shape} and {b.shape} not aligned: {a.shape[-1]} "
                         f"(dim {a.ndim - 1}) != {b.shape[-1]} (dim {b.ndim - 1})")
    dtype = result_dtype(a, b)
    if dtype in ("float32", "float64"):
        x, y = astype(a, dtype), astype(b, dtype)
        return wrap(builder().dot_general(x.node, y.node, dims=(((a.ndim - 1,), (b.ndim - 1,)),
                                                            ((), ()))))
    products = multiply(reshape(a, a.shape[:-1] + (1,) * (b.ndim - 1) + a.shape[-1:]), b)
    total = sum(products, axis=-1)
    return not_equal(total, 0) if dtype == "bool" else total
