"""Sums of zero-padded pieces written as one concatenation.

Reverse mode gives a value read as slices (an LSTM's four gates, ``gates[:, k*h:(k+1)*h]``)
one adjoint per slice, each padded with zeros to the whole value (``pad``, the vjp of
``slice``), and adds them up: every piece writes the whole array, the adds read them
all again.  Where the pieces lie along one axis without overlapping, the sum is their
concatenation, zeros in the gaps (a ``pad`` of it when they leave margins): one
write of the result, the pieces' own work fused into it.  The values are the sum's,
but for the sign of a zero: ``-0 + 0`` is ``+0``, where the concatenation keeps the
piece's ``-0``.  Loop bodies are rewritten too (the reversed loop of a recurrent step
sums such pieces on every step).
"""
from __future__ import annotations

from llgrad.compiler.passes.nested import rewrite_nested
from llgrad.ir.graph import Graph
from llgrad.ir.walk import scalar_constant


def _pieces(x):
    """(axis, [(offset, piece), ...]) when ``x`` is zero outside pieces along one axis:
    a ``pad`` without interior padding along one axis (of a concatenation whose zero
    parts are left out, as this pass builds it), or None."""
    if x.op != "pad" or any(x.attrs["interior"]):
        return None
    margins = [d for d, (lo, hi) in enumerate(zip(x.attrs["low"], x.attrs["high"])) if lo or hi]
    if len(margins) != 1:
        return None
    axis, inner = margins[0], x.inputs[0]
    offset = x.attrs["low"][axis]
    if inner.op != "concatenate" or inner.attrs["axis"] != axis:
        return axis, [(offset, inner)]
    pieces = []
    for part in inner.inputs:
        if scalar_constant(part) != 0:
            pieces.append((offset, part))
        offset += part.shape[axis]
    return axis, pieces


def _joined(b, node, inputs):
    """``add`` of two values zero outside disjoint pieces along the same axis: the
    pieces concatenated, zeros between them, padded to the sum's shape."""
    if node.op != "add":
        return None
    found = [_pieces(x) for x in inputs]
    if any(f is None for f in found) or found[0][0] != found[1][0]:
        return None
    axis = found[0][0]
    pieces = sorted(found[0][1] + found[1][1], key=lambda p: p[0])
    parts, at = [], pieces[0][0]
    for offset, piece in pieces:
        if offset < at:
            return None        # overlapping pieces really are added
        if offset > at:
            parts.append(b.full(0, piece.type.with_shape(
                n if d != axis else offset - at for d, n in enumerate(piece.shape))))
        parts.append(piece)
        at = offset + piece.shape[axis]
    low, high = [0] * node.type.ndim, [0] * node.type.ndim
    first = pieces[0][0]
    low[axis], high[axis] = first, node.shape[axis] - at
    joined = b.concatenate(*parts, axis=axis) if len(parts) > 1 else parts[0]
    if not (low[axis] or high[axis]):
        return joined
    return b.pad(joined, low=tuple(low), high=tuple(high), interior=(0,) * node.type.ndim)


def join_pad_sums(graph: Graph) -> Graph:
    """``graph`` with each sum of disjoint zero-padded pieces one concatenation, in
    loop bodies too."""
    if not any(n.op in ("add", "loop") for n in graph.nodes):
        return graph
    return rewrite_nested(graph, _joined)
