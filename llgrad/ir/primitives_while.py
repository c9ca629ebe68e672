"""``while``: a loop that runs until a traced condition is false (``llgrad.while_loop``).

Inputs: the condition on the initial carried values (``bool[]``), the carried values,
then loop invariants (values the body reads but never changes).  ``body`` is a Graph
``(step: i64[], carried..., invariants...) -> (condition on the new values, new
carried...)``, as a ``loop`` body takes its parameters (the step counts from 0): the
condition is evaluated once per carry, right after the step that made it, so the loop
never evaluates the body more often than it must.

The results are the final carried values and the trip count (``i64[]``).  With
``max_steps`` (an int) the loop also returns a *tape* per carried value: an array of
``max_steps`` rows, row ``k`` the value at the start of step ``k`` (rows from the trip
count on are left as they were).  The tape is what reverse mode reads, backwards; the
forward pass fills it in the same run that computes the values, so a gradient runs the
loop once.  A loop that would run more than ``max_steps`` steps stops and fails with
``LoopLimitError`` naming ``where`` (the user's line): nothing is written past the
tape.  Without ``max_steps`` (``heap_tape``) the loop returns instead a *handle*
(``i64[]``): native code appends each step's carried values, one row, to a heap buffer
that doubles as it fills, the handle its address (``compiler/codegen/heap_tape.py``
frees it after its last reader).  ``tape_row`` reads row k back.  Its meaning is the
carry as step k began, so it also takes the loop's inputs: the interpreter (and every
derivative and batching rule) runs the loop's first k steps again from them, while
native code only reads the row.  A loop whose handle nothing reads records nothing.

The derivative rules live with the rest of reverse mode (``compiler/autodiff/``); the
record refuses here only as a guard for a graph built by hand before they register.
"""
from __future__ import annotations

import numpy as np

from llgrad.ir.errors import ShapeError
from llgrad.ir.graph import Graph
from llgrad.ir.primitives import register
from llgrad.ir.types import TensorType

BOOL = TensorType((), "bool")
STEPS = TensorType((), "int64")
HANDLE = TensorType((), "int64")   # the address of a heap tape (0 in the interpreter)


def while_type(types, body, n_carried, max_steps, where, heap_tape=False):
    """(final carried..., trip count) and, with ``max_steps``, a tape per carried, or
    with ``heap_tape``, the handle of the tape."""
    pred, carried = types[0], list(types[1:1 + n_carried])
    if pred != BOOL:
        raise ShapeError(f"while: the condition is {pred}, not bool[]")
    body_in = [p.type for p in body.inputs]
    if body_in != [STEPS] + list(types[1:]):
        raise ShapeError(f"while: body takes {body_in}, the loop passes "
                         f"(i64[], {list(types[1:])})")
    body_out = [o.type for o in body.outputs]
    if body_out != [BOOL] + carried:
        raise ShapeError(f"while: body returns {body_out} for (bool[], {carried})")
    if max_steps is None:
        return tuple(carried) + (STEPS,) + ((HANDLE,) if heap_tape else ())
    if heap_tape:
        raise ShapeError("while: a loop with max_steps keeps its tape in its results")
    return tuple(carried) + (STEPS,) + tuple(
        t.with_shape((max_steps,) + t.shape) for t in carried)


def tape_index(node, k: int) -> int:
    """The result index of carried value ``k``'s tape (of a ``while`` with max_steps)."""
    return node.attrs["n_carried"] + 1 + k


def handle_index(node) -> int:
    """The result index of the heap tape's handle (of a ``while`` with heap_tape)."""
    return node.attrs["n_carried"] + 1


def trip_index(node) -> int:
    """The result index of the trip count."""
    return node.attrs["n_carried"]


def register_structured(name: str, type_rule) -> None:
    """The record of a primitive whose meaning is a body graph: the interpreter runs
    it (``interpret.STRUCTURED``) and its derivative rules come from the compiler
    (``compiler/autodiff``), which replaces these refusals when it is imported."""
    def evaluated_by_interpreter(*values, **attrs):
        raise RuntimeError(f"{name} is evaluated by the interpreter, which runs its body")

    def rules_not_loaded(*args):
        from llgrad.ir.errors import GradientError
        raise GradientError(f"{name}: its derivative rules are registered by llgrad.compiler")

    register(name, lambda types, **attrs: type_rule(types, **attrs), evaluated_by_interpreter,
             "structural", vjp=rules_not_loaded, jvp=rules_not_loaded)


register_structured("while", while_type)


def run_while(interpret, node, pred, *values):
    """The interpreter's meaning of a ``while`` node (``interpret`` runs the body)."""
    from llgrad.ir.errors import LoopLimitError
    nc, limit = node.attrs["n_carried"], node.attrs["max_steps"]
    body = node.attrs["body"]
    carried, invariants = list(values[:nc]), list(values[nc:])
    tapes = [] if limit is None else [
        np.zeros(t.shape, t.np_dtype) for t in node.type[nc + 1:]]
    step = 0
    while bool(pred):
        if limit is not None and step == limit:
            raise LoopLimitError(limit_message(node))
        for tape, value in zip(tapes, carried):
            tape[step] = value
        pred, *carried = interpret(body, np.int64(step), *carried, *invariants)
        step += 1
    handle = (np.int64(0),) if node.attrs.get("heap_tape") else ()
    return tuple(carried) + (np.int64(step),) + handle + tuple(tapes)


def tape_row_type(types, body, n_carried, index):
    """The carried value ``index`` of the loop ``body``, from (handle, k, the loop's
    inputs: condition, carried..., invariants...)."""
    if types[0] != HANDLE or types[1] != STEPS:
        raise ShapeError(f"tape_row: takes (i64[] handle, i64[] row, ...), got {types[:2]}")
    return body.inputs[1 + index].type


register_structured("tape_row", tape_row_type)


def replay_graph(body):
    """The loop body without its condition: ``(step, carried..., invariants...) ->
    carried'``, what running the first k steps again repeats."""
    return Graph(body.inputs, body.outputs[1:], name=body.name)


def run_tape_row(interpret, node, handle, k, pred, *values):
    """The interpreter's meaning of ``tape_row``: the loop's first k steps run again."""
    nc, body = node.attrs["n_carried"], node.attrs["body"]
    carried, invariants = list(values[:nc]), list(values[nc:])
    step_graph = replay_graph(body)
    for step in range(int(k)):
        carried = interpret(step_graph, np.int64(step), *carried, *invariants)
    return carried[node.attrs["index"]]


def limit_message(node) -> str:
    """What a loop that ran out of steps says: where it is, and its bound."""
    where = node.attrs["where"] or "an unknown line"
    return (f"while_loop at {where} did not finish within max_steps="
            f"{node.attrs['max_steps']} steps (its condition was still true); "
            f"raise max_steps or check the condition")
