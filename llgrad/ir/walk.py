"""Reading a graph without changing it: the order nodes run in, which nodes of a joint
graph are its forward pass, and the scalar literals the printers write inline.

Apart from ``graph.py`` so that the printer, which ``Graph.__str__`` calls, can use
these without importing the module that defines Graph (so they take its Nodes and
Graphs unannotated).
"""
from __future__ import annotations

from typing import Iterable


def forward_ids(graph, n_forward: int) -> set:
    """ids of the nodes the first ``n_forward`` outputs need: in a joint graph, the
    forward pass; every other node is backward."""
    return {id(n) for n in topological_order(graph.outputs[:n_forward])}


def scalar_constant(node):
    """The value of a scalar constant, or of a broadcast of one (how literals like
    ``2.0`` appear in the IR); None for anything else."""
    if node.op == "broadcast_in_dim" and node.inputs[0].op == "constant":
        node = node.inputs[0]
    if node.op == "constant" and node.attrs["value"].ndim == 0:
        return node.attrs["value"].item()
    return None


def topological_order(outputs: Iterable, inputs: Iterable = ()) -> list:
    """Iterative post-order DFS (graphs can be deeper than Python's recursion limit)."""
    order, seen = [], set()
    for p in inputs:
        if id(p) not in seen:
            seen.add(id(p))
            order.append(p)
    for root in outputs:
        if id(root) in seen:
            continue
        stack = [(root, iter(root.inputs))]
        seen.add(id(root))
        while stack:
            node, it = stack[-1]
            for child in it:
                if id(child) not in seen:
                    seen.add(id(child))
                    stack.append((child, iter(child.inputs)))
                    break
            else:
                stack.pop()
                order.append(node)
    return order
