"""``llgrad.cond`` and ``llgrad.switch``: choose a function by a value known only at
run time, running only the chosen one (JAX's ``lax.cond`` and ``lax.switch``).

Python's ``if`` on a traced value cannot work: the value is not known while tracing.
``np.where(c, a, b)`` computes both sides; ``cond`` traces both branches once into
Graphs of their own and emits one ``cond`` node, which natively is a conditional
branch around each branch's code, so a branch that would fail (a log of a negative
number, an index out of range) is harmless when not taken, and costs nothing.
Gradients flow through the chosen branch only (``compiler/autodiff/branches.py``).

With a concrete (Python or numpy) predicate or index, the chosen function is simply
called, as in JAX.
"""
from __future__ import annotations

import numpy as np

from llgrad.compiler.frontend import pytree
from llgrad.compiler.frontend.nested import (call_site, captured_union, close, function_name,
                                             trace_nested)
from llgrad.compiler.frontend.trace import Tracer, current, lift
from llgrad.ir.errors import DTypeError, ShapeError
from llgrad.ir.primitives_cond import clamp_index


def cond(pred, true_fn, false_fn, *operands):
    """``true_fn(*operands)`` if ``pred`` else ``false_fn(*operands)``, with ``pred`` a
    scalar (bool, or a number: nonzero is true) that may be traced.  The operands and
    results are pytrees; both functions must return the same structure, shapes and
    dtypes."""
    if not isinstance(pred, Tracer):
        return true_fn(*operands) if bool(np.asarray(pred)) else false_fn(*operands)
    return _branch("cond", pred, [false_fn, true_fn], operands)


def switch(index, branches, *operands):
    """``branches[index](*operands)``, with the integer ``index`` clamped into
    ``[0, len(branches) - 1]`` (as ``jax.lax.switch``) and possibly traced."""
    branches = list(branches)
    if not branches:
        raise ValueError("llgrad.switch needs at least one branch")
    if not isinstance(index, Tracer):
        return branches[clamp_index(np.asarray(index), len(branches))](*operands)
    return _branch("switch", index, branches, operands)


def _index(what: str, value: Tracer):
    """The branch index node: a scalar int64 (cond: 1 where the predicate holds)."""
    b, node = current().builder, value.node
    if node.shape != ():
        raise ShapeError(f"the {'predicate' if what == 'cond' else 'index'} must be a "
                         f"scalar, got {node.type}")
    if what == "cond" and node.dtype != "bool":
        node = b.ne(node, b.full(0, node.type))
    if what == "switch" and node.type.is_float:
        raise DTypeError(f"the branch index must be an integer, got {node.type}")
    return node if node.dtype == "int64" else b.convert(node, dtype="int64")


def _branch(what: str, selector: Tracer, fns: list, operands: tuple):
    with call_site(what) as b:
        index = _index(what, selector)
        leaves, in_tree = pytree.flatten(tuple(operands))
        nodes = [lift(leaf) for leaf in leaves]
        names = pytree.leaf_names(in_tree, "operands")
        traces = [trace_nested(fn, function_name(fn), [n.type for n in nodes], in_tree, names)
                  for fn in fns]
        first = traces[0]
        for other in traces[1:]:
            if other.out_tree != first.out_tree:
                raise ShapeError(
                    f"branches return different structures: {first.name}() returns "
                    f"{pytree.leaf_names(first.out_tree, 'out')}, {other.name}() returns "
                    f"{pytree.leaf_names(other.out_tree, 'out')}")
        captured = captured_union(traces)
        out_names = pytree.leaf_names(first.out_tree, "out")
        graphs = tuple(close(t, captured, out_names) for t in traces)
        node = b.cond(index, *nodes, *captured, branches=graphs)
        results = [Tracer(b.tuple_get(node, index=k)) for k in range(len(node.type))]
    return pytree.unflatten(first.out_tree, results)
