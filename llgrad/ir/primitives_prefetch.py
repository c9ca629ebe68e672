"""``prefetch_rows``: ask the memory system for rows that a later step will read.

``prefetch_rows(x, order, start, rows=k)`` starts loading the rows
``x[order[start + r]]``, r < k, into the cache (indices clamped into range, as
``take``'s and ``dynamic_slice``'s are) and returns ``0`` (an ``i64[]`` token).  A
training step (``llgrad.train``) prefetches the next step's minibatch this way and
adds the token to its own first index, so the request is made before the step's
arithmetic starts and overlaps it, and no pass can drop it as unused.  It changes no
result, only when the rows reach the cache.  Natively it is ``llvm.prefetch``
of each row's first cache lines (``codegen/prefetch.py``); the interpreter returns 0.
"""
from __future__ import annotations

import numpy as np

from llgrad.ir.errors import DTypeError, ShapeError
from llgrad.ir.primitives import register
from llgrad.ir.types import TensorType

TOKEN = TensorType((), "int64")


def _prefetch_type(types, rows):
    x, order, start = types
    if x.ndim < 1 or order.ndim != 1:
        raise ShapeError(f"prefetch_rows: needs rows of x (got shape {x.shape}) and a flat "
                         f"order (got shape {order.shape})")
    if order.dtype != "int64" or start != TOKEN:
        raise DTypeError(f"prefetch_rows: order must be int64 and start i64[], got "
                         f"{order} and {start}")
    if rows < 1:
        raise ShapeError(f"prefetch_rows: rows must be at least 1, got {rows}")
    return TOKEN


register("prefetch_rows", _prefetch_type, lambda x, order, start, rows: np.int64(0),
         "structural", differentiable=False)
