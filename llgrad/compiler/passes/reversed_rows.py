"""Products over steps whose larger factor arrives with its rows reversed.

The reversed loop of a ``scan`` yields an invariant's adjoint rows from the last step
to the first, which ``reverse_rows`` puts back in order (``autodiff/loops.py``); the
weight's gradient then contracts them with the inputs over the step axis (an LSTM's
``dW = xs^T dgates``, the hoisted input projection's vjp).  Pairing the rows is all
such a product needs: reversing the rows of the other factor instead gives the same
terms, and when that factor is the smaller (the inputs against the four gates'
adjoints), it moves less memory.  The sum over the steps runs in the opposite order,
so the result can differ by float rounding.
"""
from __future__ import annotations

from llgrad.compiler.frontend.loops import reverse_rows
from llgrad.compiler.passes.nested import rewrite_nested
from llgrad.ir.graph import Graph
from llgrad.ir.walk import scalar_constant


def _reversed_source(x):
    """``y`` when ``x`` is ``reverse_rows(y)``: a take of the rows n-1-iota."""
    if x.op != "take":
        return None
    y, index = x.inputs
    n = y.shape[0]
    if (index.op == "sub" and index.shape == (n,) and index.inputs[1].op == "iota"
            and index.inputs[1].attrs["axis"] == 0 and scalar_constant(index.inputs[0]) == n - 1):
        return y
    return None


def _swapped(b, node, inputs):
    """``dot_general(a, reverse_rows(y))`` contracting both axes 0, ``a`` the smaller:
    ``dot_general(reverse_rows(a), y)`` (either side)."""
    if node.op != "dot_general":
        return None
    (lc, rc), (lb, rb) = node.attrs["dims"]
    if (0, 0) not in zip(lc, rc):
        return None
    lhs, rhs = inputs
    for side, (x, other) in enumerate(((rhs, lhs), (lhs, rhs))):
        y = _reversed_source(x)
        if y is not None and other.type.size < x.type.size:
            swapped = [reverse_rows(b, other), y]
            return b.dot_general(*(swapped if side == 0 else swapped[::-1]),
                                 dims=node.attrs["dims"])
    return None


def unreversed_contractions(graph: Graph) -> Graph:
    """``graph`` with each product over reversed rows reversing its smaller factor."""
    if not any(n.op in ("take", "loop") for n in graph.nodes):
        return graph
    return rewrite_nested(graph, _swapped)
