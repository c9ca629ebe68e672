"""numpy's sorting functions on traced arrays: sort, argsort, partition, argpartition;
more rows of the numpy table, built on the ``argsort`` primitive
(ir/primitives_sort.py), which sorts along the last axis.

- Any axis is sorted by moving it last and back (two transposes); ``axis=None``
  sorts the flattened array, as numpy.
- The order is numpy's ``kind='stable'`` whatever ``kind`` says: equal elements keep
  their order, NaN comes last.  numpy's default (quicksort) gives the same values,
  but its ``argsort`` may order equal elements otherwise; compare with
  ``kind='stable'``.
- ``partition`` and ``argpartition`` may return any arrangement with the k-th
  elements in place and nothing greater before them: a full sort is one, so they
  are sorts here (``kth`` checked as numpy checks it).
- The sorted values are the operand gathered by the permutation (``take``), so
  their derivative is the gather's: the adjoint is scattered back through the
  permutation, a tangent gathered by it.  Where elements tie, the one the stable
  order puts at a position receives that position's adjoint.
- ``unique`` is refused: how many values it returns depends on the data.
- ``ndarray.sort`` and ``ndarray.partition`` sort in place, which a traced array
  (immutable) cannot; they say to use the functions.
"""
from __future__ import annotations

import numpy as np

from llgrad.compiler.frontend.numpy_ops import (
    add,
    multiply,
    op,
    refuse,
    reshape,
)
from llgrad.compiler.frontend.numpy_support import (
    builder,
    integer,
    normalize_axes,
    on_last_axis,
    traced,
    wrap,
)
from llgrad.compiler.frontend.trace import Tracer
from llgrad.ir.errors import ShapeError, UnsupportedError

_KINDS = (None, "quicksort", "mergesort", "heapsort", "stable")


def _check_keywords(name: str, kind, order, stable) -> None:
    """numpy's kind (any: the sort is stable, which each kind's result allows or is),
    ``order`` (fields of structured arrays, which llgrad has not) and ``stable``."""
    if kind not in _KINDS:
        raise ShapeError(f"{name}: sort kind must be one of {list(_KINDS[1:])}, got {kind!r}")
    if order is not None:
        raise UnsupportedError(f"{name}(order=...) is not supported: it names fields of "
                               f"structured arrays, which llgrad does not trace")
    if stable not in (None, True, False):
        raise ShapeError(f"{name}: stable must be True, False or None, got {stable!r}")


def _along(a, axis, fn) -> Tracer:
    """``fn`` (along the last axis) applied along ``axis`` of ``a``, or to the
    flattened array for ``axis=None``."""
    a = traced(a)
    if axis is None:
        return fn(reshape(a, (-1,)))
    return on_last_axis(a, normalize_axes(axis, a.ndim)[0], fn)


def _permutation(x: Tracer) -> Tracer:
    """The stable sorting permutation of ``x`` along its last axis."""
    return wrap(builder().emit("argsort", x.node))


def _gathered(x: Tracer, perm: Tracer) -> Tracer:
    """``x`` reordered along its last axis by ``perm``: one ``take`` of the flattened
    array, each row's indices offset by the row's start."""
    if x.size == 0:
        return x
    n = x.shape[-1]
    rows = (x.size // n, n)
    b = builder()
    starts = wrap(b.iota(shape=rows, dtype="int64", axis=0))
    flat = reshape(add(reshape(perm, rows), multiply(starts, n)), (-1,))
    return reshape(wrap(b.take(reshape(x, (-1,)).node, flat.node)), x.shape)


def sorted_last(x: Tracer) -> Tracer:
    """``x`` sorted ascending along its last axis, NaN last (for the order statistics)."""
    return _gathered(x, _permutation(x))


@op("argsort", methods=("argsort",))
def argsort(a, axis=-1, kind=None, order=None, *, stable=None):
    _check_keywords("argsort", kind, order, stable)
    return _along(a, axis, _permutation)


@op("sort")
def sort(a, axis=-1, kind=None, order=None, *, stable=None):
    _check_keywords("sort", kind, order, stable)
    return _along(a, axis, sorted_last)


def _check_kth(kth, x: Tracer, kind) -> Tracer:
    """``x``, once ``kth`` passes numpy's checks (integers within the last axis,
    negative from its end)."""
    if kind != "introselect":
        raise ShapeError(f"partition: kind must be 'introselect', got {kind!r}")
    if isinstance(kth, Tracer):
        raise UnsupportedError("partition needs a constant kth")
    n = x.shape[-1]
    for k in np.ravel(kth).tolist():
        k = integer(k, "kth")
        if not -n <= k < n:
            raise ShapeError(f"kth(={k}) out of bounds ({n})")
    return x


@op("partition")
def partition(a, kth, axis=-1, kind="introselect", order=None):
    """A full sort: every element is where a partition at any kth may put it."""
    _check_keywords("partition", None, order, None)
    return _along(a, axis, lambda x: sorted_last(_check_kth(kth, x, kind)))


@op("argpartition", methods=("argpartition",))
def argpartition(a, kth, axis=-1, kind="introselect", order=None):
    """The sorting permutation: one of the results numpy's argpartition allows."""
    _check_keywords("argpartition", None, order, None)
    return _along(a, axis, lambda x: _permutation(_check_kth(kth, x, kind)))


refuse("unique", "how many values it returns depends on the data, and a traced array's "
       "shape must not (np.sort keeps every element)")
refuse("ndarray.sort", "it sorts in place (as ndarray.partition does), and a traced "
       "array is immutable: use x = np.sort(x) (or np.partition(x, kth))",
       np.ndarray.sort, numpy=(), methods=("sort", "partition"))
