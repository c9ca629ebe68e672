"""Structural checks of a Graph: every pass's output must still satisfy them."""
from __future__ import annotations

from llgrad.ir.errors import LlgradError
from llgrad.ir.primitives import PRIMITIVES


class VerifyError(LlgradError):
    """The IR is malformed: a bug in llgrad, never in user code."""


def verify(graph) -> None:
    seen = set()
    params = {id(p) for p in graph.inputs}
    for node in graph.nodes:
        if node.op not in PRIMITIVES:
            raise VerifyError(f"unknown primitive {node.op!r}")
        if node.op == "parameter" and id(node) not in params:
            raise VerifyError(f"parameter {node.attrs['name']} is not an input of {graph.name}")
        for i in node.inputs:
            if id(i) not in seen:
                raise VerifyError(f"{node.op} #{node.id} uses a value defined after it")
        expected = PRIMITIVES[node.op].type_rule([i.type for i in node.inputs], **node.attrs)
        if expected != node.type:
            raise VerifyError(f"{node.op} #{node.id} has type {node.type}, rule says {expected}")
        if "body" in node.attrs:
            verify(node.attrs["body"])
        for branch in node.attrs.get("branches", ()):
            verify(branch)
        seen.add(id(node))
    for o in graph.outputs:
        if id(o) not in seen:
            raise VerifyError(f"output {o} is not in the graph")
