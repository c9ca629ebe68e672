"""Functions traced inside a trace into Graphs of their own: the branches of a ``cond``
and the rules of ``custom_vjp`` / ``custom_jvp``.

A nested function runs on fresh parameters in a trace of its own (so its nodes stay out
of the enclosing graph until a node that holds its Graph is emitted there).  It may read
values of the enclosing trace it was not given (a weight its closure sees): those are
the nodes made before its trace began that its nodes read (node ids only grow).
``close`` turns several such traces into Graphs that take the same parameters: the
given ones, then every value any of them captured, which the caller passes as extra
operands, so each Graph reads only its own parameters, as codegen and the derivative
rules need.
"""
from __future__ import annotations

from dataclasses import dataclass

from llgrad.compiler.frontend import pytree
from llgrad.compiler.frontend.trace import (TraceContext, Tracer, current, located,
                                            output_nodes, user_source)
from llgrad.ir.errors import LlgradError
from llgrad.ir.graph import Builder, Graph, Node
from llgrad.ir.inline import inline


@dataclass
class Nested:
    """One nested trace: its parameters, outputs and output structure, and the values of
    the enclosing trace it read (in the order they were made)."""
    name: str
    params: list
    outputs: list
    out_tree: object
    captured: list

    @property
    def out_types(self) -> list:
        return [o.type for o in self.outputs]


def made_before(outputs, first_id: int) -> list[Node]:
    """The nodes made before id ``first_id`` that nodes made since (reachable from
    ``outputs``) read, in the order they were made: what a nested function captured."""
    found, seen, stack = {}, set(), list(outputs)
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if node.id < first_id:
            found[node.id] = node
        else:
            stack.extend(node.inputs)
    return [found[k] for k in sorted(found)]


def trace_nested(fn, name: str, types: list, in_tree, leaf_names: list) -> Nested:
    """``fn`` called on Tracers of ``types`` (rebuilt into the pytree ``in_tree``) in a
    trace of its own; its result may be any pytree of arrays and constants."""
    with TraceContext(name) as ctx:
        # ids only grow: every node made from here on is the function's own
        start = ctx.builder.const(0, "int64").id
        params = [ctx.builder.parameter(index=k, type=t, name=n)
                  for k, (t, n) in enumerate(zip(types, leaf_names))]
        result = fn(*pytree.unflatten(in_tree, [Tracer(p) for p in params]))
        leaves, out_tree = pytree.flatten(result)
        outputs = output_nodes(leaves, ctx)
    return Nested(name, params, outputs, out_tree, made_before(outputs, start))


def captured_union(traces) -> list[Node]:
    """Every value any of ``traces`` captured, each once, in the order they were made."""
    union = {}
    for t in traces:
        for node in t.captured:
            union.setdefault(id(node), node)
    return sorted(union.values(), key=lambda n: n.id)


def close(trace: Nested, captured: list[Node], output_names=None) -> Graph:
    """``trace`` as a Graph of (its parameters..., ``captured``...): a value it did not
    capture is a parameter it does not read."""
    b = Builder()
    inputs = [b.parameter(index=k, type=p.type, name=p.attrs["name"])
              for k, p in enumerate(trace.params)]
    extra = {id(c): b.parameter(index=len(inputs) + k, type=c.type,
                                name=_captured_name(c, k))
             for k, c in enumerate(captured)}
    traced = Graph(trace.params + trace.captured, trace.outputs, name=trace.name)
    outputs = inline(b, traced, inputs + [extra[id(c)] for c in trace.captured])
    return Graph(inputs + list(extra.values()), outputs, name=trace.name,
                 output_names=output_names)


def _captured_name(node: Node, k: int) -> str:
    return str(node.attrs["name"]) if node.op == "parameter" else f"captured[{k}]"


class call_site:
    """``with call_site(what) as b``: the enclosing trace's Builder, stamping the user's
    line of this call (``cond``, a custom rule's function) on what it builds; an error
    inside is located there and names ``what``.  (A class, not a generator, so that no
    frame of contextlib stands between llgrad and the user's line.)"""

    def __init__(self, what: str):
        self.what = what

    def __enter__(self):
        self.b = current().builder
        self.outer = self.b.source
        self.b.source = self.outer or user_source()
        return self.b

    def __exit__(self, kind, exc, tb):
        self.b.source = self.outer
        if isinstance(exc, LlgradError):
            raise located(exc, self.what) from None
        return False


def function_name(fn) -> str:
    """How a user's function is named in graphs and errors."""
    return getattr(fn, "__name__", type(fn).__name__)
