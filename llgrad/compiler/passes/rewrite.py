"""Rebuilding a graph node by node through a Builder: the engine of every pass, and
of inlining one graph into another (a training step inlines the loss's joint graph).

A pass is a function ``rule(b, node, inputs) -> Node | None`` that may replace a node
(given its already-rebuilt inputs); returning None keeps the node as it is.  Since
the Builder hash-conses, rebuilding alone merges duplicates (that is CSE).
"""
from __future__ import annotations

from llgrad.ir.graph import Builder, Graph


def inline(b: Builder, graph: Graph, args, rule=None) -> list:
    """Build ``graph``'s nodes with ``b``, its parameters bound to the nodes ``args``;
    returns the nodes of its outputs."""
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


def rebuild(graph: Graph, rule=None) -> Graph:
    """The same function as a fresh graph (parameters keep their identity)."""
    b = Builder()
    outputs = inline(b, graph, graph.inputs, rule)
    result = Graph(graph.inputs, outputs, name=graph.name, output_names=graph.output_names)
    result.pruned = b.created - sum(1 for n in result.nodes if n.op != "parameter")
    return result
