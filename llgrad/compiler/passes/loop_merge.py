"""Running as one loop the loops that differ only in what they stack.

Reverse mode differentiates a ``loop`` with a second forward loop, over the same inputs,
whose body is the forward body with more per-step results (the carried values it
stacks for the reversed loop: ``autodiff/loops.py``).  Where both are in a graph, the
results of the shorter are read from the longer, so the forward steps run once.  The
pass also looks inside loop bodies (nested loops are differentiated the same way).
"""
from __future__ import annotations

from llgrad.compiler.passes.rewrite import rebuild
from llgrad.ir.graph import Graph


def _extends(longer, shorter) -> bool:
    """Whether ``longer``'s body is ``shorter``'s with per-step results appended."""
    a, b = longer.attrs["body"], shorter.attrs["body"]
    return (a.inputs == b.inputs and a.outputs[:len(b.outputs)] == b.outputs
            and longer.attrs["trip_count"] == shorter.attrs["trip_count"]
            and longer.attrs["n_carried"] == shorter.attrs["n_carried"]
            and len(longer.inputs) == len(shorter.inputs)
            and all(x is y for x, y in zip(longer.inputs, shorter.inputs)))


def _merged_into(graph: Graph) -> dict:
    """{id(loop): the loop whose results replace its results}."""
    loops = [n for n in graph.nodes if n.op == "loop"]
    by_inputs: dict = {}
    for n in loops:
        by_inputs.setdefault(tuple(id(x) for x in n.inputs), []).append(n)
    into = {}
    for group in by_inputs.values():
        group.sort(key=lambda n: -len(n.attrs["body"].outputs))
        for n in group[1:]:
            longest = next((m for m in group if m is not n and _extends(m, n)), None)
            if longest is not None and len(longest.attrs["body"].outputs) > len(
                    n.attrs["body"].outputs):
                into[id(n)] = longest
    return into


def merge_loops(graph: Graph, merged_bodies: dict | None = None) -> Graph:
    """``graph`` with each loop rebuilt as the loop it merges into (the same inputs,
    the longer body, whose first results are its own), bodies merged too.
    ``merged_bodies`` (id(body) -> merged body) is shared down the nesting."""
    if not any(n.op == "loop" for n in graph.nodes):
        return graph
    into = _merged_into(graph)
    merged_bodies = {} if merged_bodies is None else merged_bodies

    def rule(b, node, inputs):
        if node.op != "loop":
            return None
        attrs = dict(into.get(id(node), node).attrs)
        body = attrs["body"]
        if id(body) not in merged_bodies:
            merged_bodies[id(body)] = (body, merge_loops(body, merged_bodies))
        attrs["body"] = merged_bodies[id(body)][1]
        return b.emit("loop", *inputs, **attrs)

    return rebuild(graph, rule)
