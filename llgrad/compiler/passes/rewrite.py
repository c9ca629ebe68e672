"""Rebuilding a graph node by node through a Builder: the engine of every pass, and
of inlining one graph into another (a training step inlines the loss's joint graph;
``inline`` itself lives in ``ir/inline.py``, where the loop rules reach it too).

A pass is a function ``rule(b, node, inputs) -> Node | None`` that may replace a node
(given its already-rebuilt inputs); returning None keeps the node as it is.  Since
the Builder hash-conses, rebuilding alone merges duplicates (that is CSE).
"""
from __future__ import annotations

from llgrad.ir.graph import Builder, Graph
from llgrad.ir.inline import inline


def rebuild(graph: Graph, rule=None) -> Graph:
    """The same function as a fresh graph (parameters keep their identity)."""
    b = Builder()
    outputs = inline(b, graph, graph.inputs, rule)
    result = Graph(graph.inputs, outputs, name=graph.name, output_names=graph.output_names)
    result.pruned = b.created - sum(1 for n in result.nodes if n.op != "parameter")
    return result
