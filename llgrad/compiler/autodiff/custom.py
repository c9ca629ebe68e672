"""Derivatives of ``custom_vjp_call`` and ``custom_jvp_call``: the user's rule, inlined.

A custom call is the identity on the function's value (its first input), so neither
mode differentiates the function itself: the adjoint or tangent comes from the rule
Graph in its attributes, built into the joint graph by ``inline`` with each node keeping
the user's source line, so the printed backward graph shows the rule where it was
written.

- ``custom_vjp``: reverse mode runs ``fwd`` on the arguments for the residuals, then
  ``bwd`` on the residuals and the cotangents (the call's adjoint for its own output,
  zero for the others: one call per output, and ``bwd`` is linear in them, so the
  contributions add up to the rule's result).  Forward mode has no rule to apply and
  refuses, as JAX does.
- ``custom_jvp``: forward mode inlines the rule and takes its tangent output.  Reverse
  mode transposes the rule, which is linear in the tangents: the vjp of ``tangents ->
  rule's tangent`` with respect to the tangents, at zero tangents.

The rules are installed into the records here (``ir`` may not import the compiler)
when the autodiff package is imported.
"""
from __future__ import annotations

import dataclasses

from llgrad.compiler.autodiff.reverse import vjp
from llgrad.ir.errors import GradientError
from llgrad.ir.graph import Graph
from llgrad.ir.inline import inline
from llgrad.ir.primitives import PRIMITIVES


def custom_vjp_adjoint(b, node, g):
    fwd, bwd = node.attrs["fwd"], node.attrs["bwd"]
    index, n_out = node.attrs["index"], node.attrs["n_out"]
    residuals = inline(b, fwd, node.inputs[1:])[n_out:]
    cotangents = [g if k == index else b.full(0, fwd.outputs[k].type) for k in range(n_out)]
    return (None, *inline(b, bwd, residuals + cotangents))


def custom_vjp_tangent(b, node, tangents):
    raise GradientError(f"{node.attrs['name']} has a custom_vjp rule, which forward mode "
                        f"(jvp, jacfwd, hessian) cannot apply; give it a custom_jvp rule, "
                        f"or use reverse mode (grad of grad for second derivatives)")


def _zero_tangents(b, node, tangents):
    return [b.full(0, x.type) if t is None else t
            for x, t in zip(node.inputs[1:], tangents)]


def custom_jvp_tangent(b, node, tangents):
    rule = node.attrs["jvp"]
    outs = inline(b, rule, list(node.inputs[1:]) + _zero_tangents(b, node, tangents[1:]))
    return outs[len(rule.outputs) // 2 + node.attrs["index"]]


def custom_jvp_adjoint(b, node, g):
    rule, index = node.attrs["jvp"], node.attrs["index"]
    args = list(node.inputs[1:])
    tangent_out = rule.outputs[len(rule.outputs) // 2 + index]
    linear = Graph(rule.inputs, [tangent_out], name=f"{rule.name}_tangent")
    wrt = [len(args) + k for k, x in enumerate(args) if x.type.is_float]
    joint = vjp(linear, wrt, cotangents=True)
    grads = inline(b, joint, args + _zero_tangents(b, node, [None] * len(args)) + [g])[1:]
    out = [None] * len(node.inputs)
    for k, grad in zip(wrt, grads):
        out[1 + k - len(args)] = grad
    return out


for _name, _rules in {"custom_vjp_call": (custom_vjp_adjoint, custom_vjp_tangent),
                      "custom_jvp_call": (custom_jvp_adjoint, custom_jvp_tangent)}.items():
    PRIMITIVES[_name] = dataclasses.replace(PRIMITIVES[_name], vjp=_rules[0], jvp=_rules[1])
