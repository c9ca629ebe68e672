"""Rebuilding a graph node by node through a fresh Builder: the engine of every pass.

A pass is a function ``rule(b, node, inputs) -> Node | None`` that may replace a node
(given its already-rebuilt inputs); returning None keeps the node as it is.  Since
the new Builder hash-conses, rebuilding alone merges duplicates (that is CSE).
"""
from __future__ import annotations

from ...ir.graph import Builder, Graph


def rebuild(graph: Graph, rule=None) -> Graph:
    b = Builder()
    new = {id(p): p for p in graph.inputs}  # parameters keep their identity
    for node in graph.nodes:
        if id(node) in new:
            continue
        inputs = tuple(new[id(i)] for i in node.inputs)
        b.source = node.source
        replacement = rule(b, node, inputs) if rule else None
        new[id(node)] = replacement if replacement is not None else b.emit(
            node.op, *inputs, **node.attrs)
    return Graph(graph.inputs, [new[id(o)] for o in graph.outputs], name=graph.name,
                 output_names=graph.output_names)
