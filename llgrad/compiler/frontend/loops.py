"""Tracing loops: a Python body function traced once into the body Graph of a ``loop``.

``scan`` and ``fori_loop`` (``llgrad/loops.py``) call ``loop_node``, which traces the
body on fresh parameters ``(step, carried..., invariants...)`` in a trace of its own and
emits one ``loop`` node into the enclosing trace: the IR holds the body once, whatever
the trip count.

A body may read values of the enclosing trace it did not receive as arguments (a
weight matrix its closure sees, the loop's own step bound).  Those are found after
tracing, as the nodes the body reads that were made before its trace began (node ids
only grow), and become extra invariants of the loop, appended after the given ones:
the body graph then reads only its own parameters, as codegen and the derivative rules
need.
"""
from __future__ import annotations

from llgrad.compiler.frontend import pytree
from llgrad.compiler.frontend.loop_products import (hoist_invariant_operands, hoist_row_products,
                                                    pretransposed_weights)
from llgrad.compiler.frontend.nested import Nested, close, made_before
from llgrad.compiler.frontend.trace import TraceContext, Tracer, current, lift, located
from llgrad.ir.errors import DTypeError, LlgradError, ShapeError, UnsupportedError
from llgrad.ir.graph import Builder, Graph, Node
from llgrad.ir.types import TensorType

STEP = TensorType((), "int64")


def tracing() -> bool:
    """Whether a trace is under way (a loop then becomes a node of it)."""
    try:
        current()
    except UnsupportedError:
        return False
    return True


def trace_body(fn_name: str, types: list, names: list, call):
    """The body graph of a loop: ``call(step, *values)`` (Tracers of ``types``) run in a
    trace of its own must return (output nodes, output treedef): ``lifted`` leaves.
    Returns (body Graph ``(step, *types, *captured) -> outputs``, the captured nodes of
    the enclosing trace, the output treedef).  Closing over the captured values is
    ``nested.close``, as for cond's branches."""
    with TraceContext(fn_name) as ctx:
        b = ctx.builder
        step = b.parameter(index=0, type=STEP, name="step")
        params = [b.parameter(index=k + 1, type=t, name=n)
                  for k, (t, n) in enumerate(zip(types, names))]
        outputs, out_tree = call(Tracer(step), *[Tracer(p) for p in params])
    traced = Nested(fn_name, [step, *params], outputs, out_tree, made_before(outputs, step.id))
    return close(traced, traced.captured), traced.captured, out_tree


def check_carry(fn_name: str, what: str, in_tree, in_types, out_tree, out_types) -> None:
    """The carry a body returns must have the structure, shapes and dtypes it was given:
    the loop's buffers are fixed.  The error names the body, the leaf and both types,
    and the user's line of the loop."""
    if in_tree != out_tree:
        raise located(ShapeError(
            f"{fn_name}() must return its {what} with the structure it was given: it took "
            f"{pytree.leaf_names(in_tree, what)} and returned "
            f"{pytree.leaf_names(out_tree, what)}"))
    for name, t_in, t_out in zip(pytree.leaf_names(in_tree, what), in_types, out_types):
        if t_in != t_out:
            error = DTypeError if t_in.shape == t_out.shape else ShapeError
            raise located(error(
                f"{fn_name}() changes the type of its {what} leaf {name}: it enters as "
                f"{t_in} and the body returns {t_out}; a loop's carry keeps one type "
                f"(convert it with .astype, or start it with that type)"))


def loop_node(body: Graph, captured: list, carried: list, invariants: list,
              trip_count: int) -> list:
    """One ``loop`` node in the enclosing trace; returns its results (final carried
    values, then the stacked per-step values) as nodes."""
    b = current().builder
    body, inputs = hoist_invariant_operands(b, body, len(carried),
                                            [*carried, *invariants, *captured])
    body, inputs = hoist_row_products(b, body, len(carried), trip_count, inputs)
    body, inputs = pretransposed_weights(b, body, len(carried), inputs)
    node = b.loop(*inputs, body=body, trip_count=trip_count, n_carried=len(carried))
    return [b.tuple_get(node, index=k) for k in range(len(node.type))]


def lifted(leaves) -> list[Node]:
    """Nodes of the current trace for a pytree's leaves (Tracers or constants)."""
    try:
        return [lift(leaf) for leaf in leaves]
    except LlgradError as exc:
        raise located(exc) from None


def row(b: Builder, x: Node, at: Node) -> Node:
    """Row ``at`` (an int64 scalar node) of ``x``, without its leading axis."""
    return b.reshape(b.dynamic_slice(x, at, size=1), shape=x.shape[1:])


def reverse_rows(b: Builder, x: Node) -> Node:
    """``x`` with its rows (axis 0) in reverse order: a gather by n-1-iota, whose size in
    the IR does not depend on n."""
    n = x.shape[0]
    if n < 2:
        return x
    index = b.sub(b.full(n - 1, TensorType((n,), "int64")),
                  b.iota(shape=(n,), dtype="int64", axis=0))
    return b.take(x, index)
