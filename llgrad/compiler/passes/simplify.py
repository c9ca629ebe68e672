"""Constant folding and algebraic identities that are exact under IEEE semantics.

``x * 1 → x`` and ``x - (+0) → x`` hold for every float including -0, inf and NaN;
``x * 0 → 0`` and ``x + 0 → x`` do not (NaN, inf, -0) and are deliberately absent.
Rules are data: one function per primitive name, each returning a replacement or None.
"""
from __future__ import annotations

import numpy as np

from llgrad.compiler.passes.rewrite import rebuild
from llgrad.ir.primitives import PRIMITIVES
from llgrad.ir.walk import scalar_constant


def _is(node, value) -> bool:
    v = scalar_constant(node)
    return v is not None and not isinstance(v, bool) and v == value


def _fold(b, node, inputs):
    """An elementwise op on scalar literals becomes a literal (broadcast if needed)."""
    values = [scalar_constant(i) for i in inputs]
    if not inputs or any(v is None for v in values):
        return None
    arrays = [np.asarray(v, dtype=i.type.np_dtype) for v, i in zip(values, inputs)]
    with np.errstate(all="ignore"):
        result = PRIMITIVES[node.op].evaluate(*arrays, **node.attrs)
    return b.full(np.asarray(result).item(), node.type)


def _mul(b, node, inputs):
    x, y = inputs
    if _is(y, 1):
        return x
    if _is(x, 1):
        return y
    if _is(y, -1):
        return b.neg(x)
    if _is(x, -1):
        return b.neg(y)
    return None


def _add(b, node, inputs):
    x, y = inputs
    if y.op == "neg":
        return b.sub(x, y.inputs[0])
    if x.op == "neg":
        return b.sub(y, x.inputs[0])
    return None


def _sub(b, node, inputs):
    """x - (+0) is x; x - (-0) is x + 0, which is +0 for x = -0, so it stays."""
    x, y = inputs
    if _is(y, 0) and not np.signbit(scalar_constant(y)):
        return x
    if y.op == "neg":
        return b.add(x, y.inputs[0])
    return None


def _reshape_or_convert(b, node, inputs):
    (x,) = inputs
    if x.type == node.type:
        return x
    if x.op == node.op == "reshape":
        return b.reshape(x.inputs[0], shape=node.shape)
    if node.op == "reshape" and scalar_constant(x) is not None:
        return b.full(scalar_constant(x), node.type)
    return None


def _transpose(b, node, inputs):
    (x,) = inputs
    perm = node.attrs["perm"]
    if perm == tuple(range(len(perm))):
        return x
    if x.op == "transpose":
        inner = x.attrs["perm"]
        return b.transpose(x.inputs[0], perm=tuple(inner[p] for p in perm))
    return None


def _broadcast(b, node, inputs):
    (x,) = inputs
    if x.type == node.type:
        return x
    if x.op == "broadcast_in_dim":
        dims = node.attrs["dims"]
        return b.broadcast_in_dim(x.inputs[0], shape=node.shape,
                                  dims=tuple(dims[d] for d in x.attrs["dims"]))
    return None


def _dot_general(b, node, inputs):
    """A transposed operand is read in place: dot_general(transpose(x), y) is a
    dot_general of x with renumbered dims, when that keeps the result's axis order
    (the free axes must stay in increasing order).  BLAS then reads x transposed
    instead of copying it."""
    (lc, rc), (lb, rb) = node.attrs["dims"]
    dims = [[list(lc), list(rc)], [list(lb), list(rb)]]
    operands = list(inputs)
    changed = False
    for side, x in enumerate(inputs):
        if x.op != "transpose":
            continue
        perm = x.attrs["perm"]
        contract, batch = dims[0][side], dims[1][side]
        free = [d for d in range(len(perm)) if d not in contract and d not in batch]
        if [perm[d] for d in free] != sorted(perm[d] for d in free):
            continue
        dims[0][side] = [perm[d] for d in contract]
        dims[1][side] = [perm[d] for d in batch]
        operands[side] = x.inputs[0]
        changed = True
    if not changed:
        return None
    return b.dot_general(*operands, dims=((tuple(dims[0][0]), tuple(dims[0][1])),
                                          (tuple(dims[1][0]), tuple(dims[1][1]))))


def _pow(b, node, inputs):
    """x ** 1 is x exactly; x ** 2 is x * x, as numpy computes a square (derivatives of
    x ** n with constant n leave such powers behind)."""
    x, y = inputs
    if _is(y, 1):
        return x
    if _is(y, 2):
        return b.mul(x, x)
    return None


def _select(b, node, inputs):
    """A constant condition picks its branch (pow's partials guard their operands with
    one, which a constant operand decides); equal branches are either."""
    cond, x, y = inputs
    decided = scalar_constant(cond)
    if decided is not None:
        return x if decided else y
    return x if x is y else None


RULES = {
    "dot_general": _dot_general,
    "pow": _pow,
    "mul": _mul,
    "div": lambda b, node, inputs: inputs[0] if _is(inputs[1], 1) else None,
    "add": _add,
    "sub": _sub,
    "neg": lambda b, node, inputs: inputs[0].inputs[0] if inputs[0].op == "neg" else None,
    "reshape": _reshape_or_convert,
    "convert": _reshape_or_convert,
    "transpose": _transpose,
    "broadcast_in_dim": _broadcast,
    "reduce_sum": lambda b, node, inputs: inputs[0] if not node.attrs["axes"] else None,
    "reduce_max": lambda b, node, inputs: inputs[0] if not node.attrs["axes"] else None,
    "select": _select,
}


def _folds(prim) -> bool:
    """Whether an op on scalar literals folds to a literal: the math ops (those with a
    formula) and the comparisons."""
    return prim.symbolic or prim.kind == "comparison"


def _rule(b, node, inputs):
    if _folds(PRIMITIVES[node.op]):
        folded = _fold(b, node, inputs)
        if folded is not None:
            return folded
    rule = RULES.get(node.op)
    return rule(b, node, inputs) if rule else None


def simplify(graph, max_rounds: int = 4):
    """Apply the rules until nothing changes (rewrites can expose new ones)."""
    pruned = 0  # what every round left dead, for Trace.stats
    for _ in range(max_rounds):
        new = rebuild(graph, _rule)
        pruned += new.pruned
        done = len(new.nodes) == len(graph.nodes)
        graph = new
        if done:
            break
    graph.pruned = pruned
    return graph
