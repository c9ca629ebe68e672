"""The ``cumsum`` primitive: running sums along the last axis.

A left-to-right sum, one add per element, as numpy's ``add.accumulate`` adds (so
the native result is numpy's bit for bit); ``reverse`` sums from the right instead.
It is linear: its forward rule is itself on the tangent, and its adjoint is the
running sum of the adjoint the other way (each input element feeds every output at
or after it).  The front end sorts other axes by moving them last
(``compiler/frontend/numpy_math.py``).
"""
from __future__ import annotations

import numpy as np

from llgrad.ir.errors import DTypeError, ShapeError
from llgrad.ir.primitives import register


def _cumsum_type(types, reverse):
    (t,) = types
    if t.ndim == 0:
        raise ShapeError("cumsum: a 0-d array has no axis to sum along")
    if t.dtype == "bool":
        raise DTypeError("cumsum does not accept bool operands")
    return t


def _cumsum_eval(x, reverse):
    if not reverse:
        return np.cumsum(x, axis=-1, dtype=x.dtype)
    return np.flip(np.cumsum(np.flip(x, -1), axis=-1, dtype=x.dtype), -1).copy()


def _cumsum_vjp(b, node, g):
    return (b.cumsum(g, reverse=not node.attrs["reverse"]),)


def _cumsum_batch(b, node, args, batched):
    """The batch is a leading axis: the last axis, summed along, stays where it is."""
    return b.cumsum(args[0], **node.attrs)


register("cumsum", _cumsum_type, _cumsum_eval, "reduction", vjp=_cumsum_vjp, linear=True,
         batch=_cumsum_batch)
