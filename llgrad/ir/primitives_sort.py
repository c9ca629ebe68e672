"""The sort primitive: ``argsort``, the permutation that sorts along the last axis.

One primitive serves np.sort, np.argsort, np.partition, np.argpartition and the order
statistics (median, percentile, quantile): the front end sorts other axes by moving
them last, and gathers the values with the permutation (``take_along_axis``).  The
values' derivative is then the gather's: the adjoint goes back through the
permutation by a scatter-add and a tangent is gathered the same way, so the
permutation itself (integers) needs none.

The order is numpy's ``kind='stable'``: ascending, equal elements in their original
order (so -0.0 and 0.0 stay as they came), NaN after everything else.  numpy's
default kind (quicksort, an introsort) may order equal elements otherwise; its
sorted values are the same.  The native code (``codegen/sort.py``) is an insertion
sort of short runs and a bottom-up merge sort of the runs, both stable.
"""
from __future__ import annotations

import math

import numpy as np

from llgrad.ir.errors import DTypeError, ShapeError
from llgrad.ir.primitives import register


def _argsort_type(types):
    (t,) = types
    if t.ndim == 0:
        raise ShapeError("argsort: a 0-d array has no axis to sort along")
    if t.dtype not in ("float64", "float32", "int64", "bool"):
        raise DTypeError(f"argsort does not accept {t.dtype} operands")
    return t.with_dtype("int64")


def _argsort_eval(x):
    return np.argsort(x, axis=-1, kind="stable").astype(np.int64)


def _argsort_flops(node) -> int:
    """A comparison per element and merge level: n·ceil(log2 n) per row."""
    n = node.shape[-1]
    return node.type.size * max(math.ceil(math.log2(n)), 1) if n > 1 else 0


def _argsort_batch(b, node, args, batched):
    """The batch is a leading axis: the last axis, sorted along, stays where it is."""
    return b.emit("argsort", args[0])


register("argsort", _argsort_type, _argsort_eval, "indexing", flops=_argsort_flops,
         differentiable=False, batch=_argsort_batch)
