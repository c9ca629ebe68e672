"""Applying a node rule to a graph and to the bodies of its loops.

``rewrite.rebuild`` stops at a ``loop`` node: its body is an attribute, a graph of its
own.  Rewrites meant for what runs on every step (``pad_sums``, ``reversed_rows``)
go through here, which rebuilds each body once (a body shared by several loops stays
shared) and leaves a graph it did not change as it is.
"""
from __future__ import annotations

from llgrad.compiler.passes.rewrite import rebuild
from llgrad.ir.graph import Graph


def rewrite_nested(graph: Graph, rule, rewritten: dict | None = None) -> Graph:
    """``graph`` rebuilt with ``rule(b, node, inputs) -> Node | None``, loop bodies too
    (``rewritten``: id(body) -> (body, its rewrite), shared down the nesting; the body
    is kept beside its rewrite so that its id is not reused while the pass runs)."""
    rewritten = {} if rewritten is None else rewritten
    changed = []

    def nested_rule(b, node, inputs):
        if node.op == "loop":
            body = node.attrs["body"]
            if id(body) not in rewritten:
                rewritten[id(body)] = (body, rewrite_nested(body, rule, rewritten))
            new_body = rewritten[id(body)][1]
            if new_body is body:
                return None
            changed.append(node)
            return b.emit("loop", *inputs, **{**node.attrs, "body": new_body})
        replaced = rule(b, node, inputs)
        if replaced is not None:
            changed.append(node)
        return replaced

    result = rebuild(graph, nested_rule)
    return result if changed else graph
