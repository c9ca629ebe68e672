"""Derivatives of ``checkpoint`` (``llgrad.checkpoint``), installed into its record.

Reverse mode emits one more ``checkpoint`` whose body is the region's backward graph:
the joint vjp graph of the region's body with cotangents as extra inputs, reduced to
its adjoint outputs, so it runs the region's forward nodes again (in its own body, so
hash-consing cannot merge them with the forward pass's) and then their adjoints.  The
backward pass reads only the region's arguments and the cotangents of its results.
The backward node is itself a ``checkpoint``: a second derivative recomputes too.

Forward mode is one ``checkpoint`` of the body's jvp graph: values and tangents.
"""
from __future__ import annotations

import dataclasses

from llgrad.compiler.autodiff.forward import jvp
from llgrad.compiler.autodiff.loops import derived
from llgrad.compiler.autodiff.reverse import vjp
from llgrad.ir.graph import Graph
from llgrad.ir.primitives import PRIMITIVES, flops
from llgrad.ir.types import TensorType


def _float(t) -> bool:
    return isinstance(t, TensorType) and t.is_float


def backward_body(body: Graph, wrt: tuple) -> Graph:
    """``(arguments..., cotangent per result) -> adjoint per argument in wrt``."""
    def make():
        joint = vjp(body, list(wrt), cotangents=True)
        return Graph(joint.inputs, joint.outputs[len(body.outputs):],
                     name=f"{body.name}_recomputed", output_names=joint.output_names[
                         len(body.outputs):])
    return derived(body, ("checkpoint_vjp", wrt), make)


def checkpoint_vjp(b, node, g, wanted=None):
    body = node.attrs["body"]
    wrt = tuple(i for i, x in enumerate(node.inputs)
                if _float(x.type) and (wanted is None or wanted[i]))
    if not wrt or all(a is None for a in g):
        return [None] * len(node.inputs)
    cotangents = [a if a is not None else b.full(0, o.type) for a, o in zip(g, body.outputs)]
    back = b.checkpoint(*node.inputs, *cotangents, body=backward_body(body, wrt),
                        recomputes=body)
    out = [None] * len(node.inputs)
    for k, i in enumerate(wrt):
        out[i] = b.tuple_get(back, index=k)
    return out


checkpoint_vjp.selective = True   # reverse mode passes ``wanted`` (see reverse.vjp)


def checkpoint_jvp(b, node, tangents):
    body = node.attrs["body"]
    moving = tuple(i for i, t in enumerate(tangents) if t is not None)
    if not moving:
        return None
    joint = derived(body, ("checkpoint_jvp", moving), lambda: jvp(body, list(moving)))
    both = b.checkpoint(*node.inputs, *[tangents[i] for i in moving], body=joint,
                        recomputes=None)
    n = len(body.outputs)
    return tuple(b.tuple_get(both, index=n + k) if _float(o.type) else None
                 for k, o in enumerate(body.outputs))


def install() -> None:
    PRIMITIVES["checkpoint"] = dataclasses.replace(PRIMITIVES["checkpoint"],
                                                   vjp=checkpoint_vjp, jvp=checkpoint_jvp)


install()


def recomputed_flops(graph: Graph) -> int:
    """Arithmetic the backward pass of ``graph`` spends running checkpointed regions'
    forward nodes again: per backward ``checkpoint``, its region's flops, times the trip
    count of the loops around it (a ``while`` counts once: its trips are not known)."""
    total = 0
    for node in graph.nodes:
        region = node.attrs.get("recomputes") if node.op == "checkpoint" else None
        if region is not None:
            total += _all_flops(region)
        for key in ("body", "branches"):
            for inner in _graphs(node.attrs.get(key)):
                total += node.attrs.get("trip_count", 1) * recomputed_flops(inner)
    return total


def _graphs(value) -> list:
    if isinstance(value, Graph):
        return [value]
    return [g for g in value if isinstance(g, Graph)] if isinstance(value, tuple) else []


def _all_flops(graph: Graph) -> int:
    """A graph's flops, loop bodies counted once per trip."""
    total = 0
    for node in graph.nodes:
        total += flops(node)
        for key in ("body", "branches"):
            for inner in _graphs(node.attrs.get(key)):
                total += node.attrs.get("trip_count", 1) * _all_flops(inner)
    return total
