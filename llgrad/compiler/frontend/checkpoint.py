"""Tracing ``llgrad.checkpoint(f)``: ``f`` traced once into the body of one
``checkpoint`` node (``ir/primitives_checkpoint.py``), the values it closes over
passed as extra arguments (``nested.close``)."""
from __future__ import annotations

from llgrad.compiler.frontend import pytree
from llgrad.compiler.frontend.loops import lifted
from llgrad.compiler.frontend.nested import close, function_name, trace_nested
from llgrad.compiler.frontend.trace import Tracer, current, user_source


def checkpointed_call(fn, args):
    """``fn(*args)`` in the current trace as one ``checkpoint`` node; its results'
    pytree."""
    leaves, tree = pytree.flatten(tuple(args))
    nodes = lifted(leaves)
    name = function_name(fn)
    traced = trace_nested(lambda *a: fn(*a), name, [n.type for n in nodes], tree,
                          pytree.leaf_names(tree, "arg"))
    body = close(traced, traced.captured)
    b = current().builder
    outer, b.source = b.source, user_source()
    node = b.checkpoint(*nodes, *traced.captured, body=body, recomputes=None)
    results = [Tracer(b.tuple_get(node, index=k)) for k in range(len(body.outputs))]
    b.source = outer
    return pytree.unflatten(traced.out_tree, results)


def leading_rows(x, start: int, size: int):
    """Rows ``[start, start + size)`` of ``x``: for a traced array a ``dynamic_slice``,
    which codegen takes by address from a stored operand (no copy, nothing kept), where
    a static slice would be a copy."""
    if not isinstance(x, Tracer):
        return x[start:start + size]
    b = current().builder
    return Tracer(b.dynamic_slice(x.node, b.const(start, "int64"), size=size))
