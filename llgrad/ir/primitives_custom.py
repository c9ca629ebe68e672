"""Values whose derivative is given, not derived: ``stop_gradient`` (zero) and the
calls of a user's ``custom_vjp`` / ``custom_jvp`` rule.

A custom call is the identity on its first input, the function's value computed by
the ordinary nodes of the trace (so it runs, and fuses, like any other code); its other
inputs are the function's arguments.  Differentiation sends nothing into that value:
the adjoint (or tangent) comes from the user's rule, a Graph in the attributes, which
``llgrad/custom_rules.py`` inlines (and attaches as these records' rules, since a
record may not import the compiler).  One call per output leaf; ``index`` says which.
"""
from __future__ import annotations

from llgrad.ir.errors import ShapeError
from llgrad.ir.primitives import register


def _identity(x, *args, **attrs):
    return x


def _no_arithmetic(node) -> int:
    return 0


register("stop_gradient", lambda types: types[0], _identity, "elementwise",
         flops=_no_arithmetic, recompute=True, vjp=lambda b, node, g: (None,),
         jvp=lambda b, node, tangents: None)


def _check_rule(rule, arg_types, name, what):
    takes = [p.type for p in rule.inputs[:len(arg_types)]]
    if takes != list(arg_types):
        raise ShapeError(f"{name}: its {what} rule {rule.name}() takes {takes}, the call "
                         f"passes {list(arg_types)}")


def _custom_vjp_type(types, fwd, bwd, index, n_out, name):
    """``fwd`` maps the arguments to (``n_out`` outputs..., residuals...); ``bwd`` maps
    (residuals..., one cotangent per output) to one cotangent per argument."""
    _check_rule(fwd, types[1:], name, "forward")
    if fwd.outputs[index].type != types[0]:
        raise ShapeError(f"{name}: its forward rule {fwd.name}() returns "
                         f"{fwd.outputs[index].type} for output {index}, the function "
                         f"{types[0]}")
    gives = [o.type for o in bwd.outputs]
    if gives != list(types[1:]):
        raise ShapeError(f"{name}: its backward rule {bwd.name}() returns cotangents "
                         f"{gives} for arguments {list(types[1:])}")
    return types[0]


def _custom_jvp_type(types, jvp, index, name):
    """``jvp`` maps (arguments..., one tangent per argument) to (outputs..., one
    tangent per output)."""
    _check_rule(jvp, types[1:], name, "jvp")
    tangent = jvp.outputs[len(jvp.outputs) // 2 + index].type
    if tangent != types[0]:
        raise ShapeError(f"{name}: its jvp rule {jvp.name}() returns the tangent {tangent} "
                         f"for an output of type {types[0]}")
    return types[0]


register("custom_vjp_call", lambda types, **attrs: _custom_vjp_type(types, **attrs),
         _identity, "structural")
register("custom_jvp_call", lambda types, **attrs: _custom_jvp_type(types, **attrs),
         _identity, "structural")
