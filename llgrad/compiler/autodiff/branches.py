"""Derivatives of ``cond``: another cond under the same index, whose branches are the
derivatives of the branches, so gradients flow through the chosen branch only.

Reverse mode (``cond_vjp``): the backward cond's branch k is branch k's joint vjp graph
``(operands..., cotangents...) -> d/d float operands``.  Its residuals are recomputed:
the backward branch runs its branch's forward pass again, rather than the forward cond
returning them (the branches' residuals differ in number and type, and only the chosen
one is ever needed; a cond recomputes at most one branch).  Forward mode
(``cond_jvp``): a cond of the branches' jvp graphs, returning the tangents.

Both are ordinary IR, so a derivative of a cond differentiates again (grad of grad
through a cond: the backward cond's branches are vjp graphs, differentiated in turn).
The rules are installed into the record here (``ir`` may not import the compiler) when
the autodiff package is imported.  A multi-result node's adjoint and tangent are
tuples, one entry per result, None where it has none (see ``autodiff/loops.py``).
"""
from __future__ import annotations

import dataclasses
import weakref

from llgrad.compiler.autodiff.forward import jvp
from llgrad.compiler.autodiff.reverse import vjp
from llgrad.ir.graph import Graph
from llgrad.ir.primitives import PRIMITIVES

#: branch -> {(mode, positions): its derivative graph}; one Graph per request, so a
#: rule applied twice builds one node (the Builder merges them)
_DERIVED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _derivative(branch: Graph, mode: str, positions: tuple) -> Graph:
    """Branch's vjp (``positions``: the operands differentiated) or jvp (the operands
    with a tangent) graph, without its forward outputs."""
    table = _DERIVED.setdefault(branch, {})
    key = (mode, positions)
    if key not in table:
        joint = (vjp(branch, positions, cotangents=True) if mode == "vjp"
                 else jvp(branch, positions))
        n = len(branch.outputs)
        table[key] = Graph(joint.inputs, joint.outputs[n:], name=joint.name,
                           output_names=joint.output_names[n:])
    return table[key]


def cond_vjp(b, node, g):
    index, operands = node.inputs[0], node.inputs[1:]
    wrt = tuple(k for k, x in enumerate(operands) if x.type.is_float)
    if not wrt:
        return [None] * len(node.inputs)
    cotangents = [b.full(0, t) if adj is None else adj for adj, t in zip(g, node.type)]
    branches = tuple(_derivative(branch, "vjp", wrt) for branch in node.attrs["branches"])
    grads = b.cond(index, *operands, *cotangents, branches=branches)
    out = [None] * len(node.inputs)
    for j, k in enumerate(wrt):
        out[1 + k] = b.tuple_get(grads, index=j)
    return out


def cond_jvp(b, node, tangents):
    index, operands = node.inputs[0], node.inputs[1:]
    given = tuple(k for k, t in enumerate(tangents[1:]) if t is not None)
    branches = tuple(_derivative(branch, "jvp", given) for branch in node.attrs["branches"])
    out = b.cond(index, *operands, *(tangents[1 + k] for k in given), branches=branches)
    return tuple(b.tuple_get(out, index=k) if t.is_float else None
                 for k, t in enumerate(node.type))


PRIMITIVES["cond"] = dataclasses.replace(PRIMITIVES["cond"], vjp=cond_vjp, jvp=cond_jvp)
