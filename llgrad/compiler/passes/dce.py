"""Dead-code elimination.

A Graph holds only what its outputs reach, so a rebuilt graph is already free of
dead nodes; this pass exists to say so explicitly in the pipeline and to report
what a rewrite left behind (``removed``)."""
from __future__ import annotations

from llgrad.ir.graph import Graph


def dce(graph: Graph) -> Graph:
    return Graph(graph.inputs, graph.outputs, name=graph.name, output_names=graph.output_names)


def removed(before: Graph, after: Graph) -> int:
    return len(before.nodes) - len(after.nodes)
