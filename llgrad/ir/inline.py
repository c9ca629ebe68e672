"""Building one graph's nodes into another Builder, its parameters bound to given nodes.

The engine of every rewrite pass (``compiler/passes/rewrite.py``), of inlining one
graph into another (a training step inlines the loss's joint graph) and of the loop
rules, which build a body's derivative graph into the body of a reverse loop.  Here in
the IR, below all of them, so that each may use it.
"""
from __future__ import annotations

from llgrad.ir.graph import Builder, Graph


def inline(b: Builder, graph: Graph, args, rule=None) -> list:
    """Build ``graph``'s nodes with ``b``, its parameters bound to the nodes ``args``;
    returns the nodes of its outputs.  ``rule(b, node, inputs) -> Node | None`` may
    replace a node (given its already-rebuilt inputs); None keeps it as it is."""
    new = {id(p): a for p, a in zip(graph.inputs, args)}
    outer_source = b.source
    for node in graph.nodes:
        if id(node) in new:
            continue
        if node.op == "parameter":
            # a parameter of an enclosing graph (a nested function closed over a value
            # being traced outside it) stands for itself
            new[id(node)] = node
            continue
        inputs = tuple(new[id(i)] for i in node.inputs)
        b.source = node.source
        replacement = rule(b, node, inputs) if rule else None
        new[id(node)] = replacement if replacement is not None else b.emit(
            node.op, *inputs, **node.attrs)
    b.source = outer_source
    return [new[id(o)] for o in graph.outputs]
