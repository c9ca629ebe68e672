"""Tracing ``llgrad.while_loop``: the condition and the body traced once into one
``while`` node (``ir/primitives_while.py``).

The condition is traced twice: on the initial value in the enclosing trace (whether
the loop runs at all), and inside the body graph on the value each step makes, so
that one call of the body function per step computes both.  The body is traced by
the loops' ``trace_body`` (closures become invariants, the carry keeps its types).
"""
from __future__ import annotations


from llgrad.compiler.frontend import pytree
from llgrad.compiler.frontend.loops import check_carry, lifted, trace_body
from llgrad.compiler.frontend.nested import function_name
from llgrad.compiler.frontend.trace import Tracer, current, lift, located, user_source
from llgrad.ir.errors import DTypeError, LlgradError, ShapeError
from llgrad.ir.primitives_while import BOOL


def condition(cond_fun, value):
    """``cond_fun(value)`` as a ``bool[]`` node of the current trace, or a clear error."""
    result = cond_fun(value)
    try:
        node = lift(result)
    except LlgradError as exc:
        raise located(exc) from None
    if node.type.dtype != "bool" or node.type.size != 1:
        error = DTypeError if node.type.size == 1 else ShapeError
        raise located(error(f"while_loop: {function_name(cond_fun)}() must return one bool "
                            f"(a scalar comparison), it returned {node.type}"))
    if node.type != BOOL:
        node = current().builder.reshape(node, shape=())
    return node


def while_loop(cond_fun, body_fun, init_val, max_steps=None):
    """One ``while`` node in the current trace; returns the final value's pytree."""
    if max_steps is not None and (not isinstance(max_steps, int) or max_steps < 0):
        raise ValueError(f"while_loop: max_steps must be a non-negative int or None, "
                         f"got {max_steps!r}")
    where = user_source()
    leaves, tree = pytree.flatten(init_val)
    carried = lifted(leaves)
    types = [n.type for n in carried]
    body_name = function_name(body_fun)
    pred0 = condition(cond_fun, init_val)

    def step(_, *values):
        new = body_fun(pytree.unflatten(tree, list(values)))
        new_leaves, new_tree = pytree.flatten(new)
        nodes = lifted(new_leaves)
        check_carry(body_name, "carry", tree, types, new_tree, [n.type for n in nodes])
        return [condition(cond_fun, new)] + nodes, None

    body, captured, _ = trace_body(body_name, types, pytree.leaf_names(tree, "carry"), step)
    b = current().builder
    outer, b.source = b.source, where    # the loop's nodes name its line; what follows, its own
    node = b.emit("while", pred0, *carried, *captured, body=body, n_carried=len(carried),
                  max_steps=max_steps, where=where, heap_tape=max_steps is None)
    results = [Tracer(b.tuple_get(node, index=k)) for k in range(len(carried))]
    b.source = outer
    return pytree.unflatten(tree, results)
