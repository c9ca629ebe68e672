"""Derivatives of ``while`` (``llgrad.while_loop``) and of ``tape_row``, installed into
their records (the batching of both is ``tape_batching.py``).

Reverse mode (``while_vjp``) is a loop over the recorded trip count N, run backwards:
step s of the reversed loop handles forward step k = N-1-s.  It needs the carry as
step k began:

- with ``max_steps`` the forward loop recorded it: row k of the carry's tape;
- without, it recorded it on its heap tape (``heap_tape``, a tape that grows in native
  code): ``tape_row`` of its handle reads row k.  ``tape_row`` means "the carry after
  the loop's first k steps", so it takes the loop's inputs too, and its own rules are
  those of that replay (``_replayed``): a second derivative through it, or a vmap of
  it, runs up to k steps per row (quadratic in N; first order stays linear).

Then it runs the joint vjp graph of one step (``_step_vjp``: the body without its
condition, differentiated with cotangents), carrying the adjoints of the float
carried values and the running sums of the invariants'.  The reversed loop is itself
a ``while`` node (its condition ``s + 1 < N``), so it has a dynamic trip count with no
new primitive, and differentiating a gradient again (second order) applies these rules
to it: the reversed loop has no ``max_steps``, so it keeps a heap tape too.
``reversed_while`` is the general form, which a loop with a trip count known only at
run time (``fori_loop`` with traced bounds) can share.

An adjoint that reaches a tape (the reversed loop reads tapes, so a second derivative
gives them adjoints) adds, row by row, to the adjoint of the carry as that step began.

Forward mode (``while_jvp``) is one ``while`` carrying the tangents of the float
carried values beside them; its body is the step's jvp graph.
"""
from __future__ import annotations

import dataclasses

from llgrad.compiler.autodiff.forward import jvp
from llgrad.compiler.autodiff.loops import derived, tangent_parameters
from llgrad.compiler.autodiff.reverse import vjp
from llgrad.ir.errors import GradientError
from llgrad.ir.graph import Builder, Graph
from llgrad.ir.inline import inline
from llgrad.ir.primitives import PRIMITIVES
from llgrad.ir.primitives_while import STEPS, handle_index, tape_index, trip_index
from llgrad.ir.types import TensorType

def _float(t) -> bool:
    return isinstance(t, TensorType) and t.is_float


def _step(body: Graph) -> Graph:
    """The body without its condition: ``(step, carried..., invariants...) -> carried'``."""
    return derived(body, "step", lambda: Graph(body.inputs, body.outputs[1:], name=body.name))


def _step_vjp(body: Graph, nc: int, carried_wrt: tuple, invariant_wrt: tuple) -> Graph:
    """The joint vjp graph of one step: inputs (step, carried..., invariants...,
    cotangent per carried'), outputs (carried'..., adjoints of ``carried_wrt``, then of
    ``invariant_wrt``)."""
    wrt = [1 + j for j in carried_wrt] + [1 + nc + j for j in invariant_wrt]
    return derived(body, ("step_vjp", carried_wrt, invariant_wrt),
                    lambda: vjp(_step(body), wrt, cotangents=True))


def _replay(body: Graph, nc: int) -> Graph:
    """The body of the loop that runs the first ``until`` steps again: ``(step,
    carried..., until, invariants...) -> (step + 1 < until, the body's carried')``."""
    def make():
        b = Builder()
        step = b.parameter(index=0, type=STEPS, name="step")
        carried = [b.parameter(index=1 + j, type=p.type, name=p.attrs["name"])
                   for j, p in enumerate(body.inputs[1:1 + nc])]
        until = b.parameter(index=1 + nc, type=STEPS, name="until")
        invariants = [b.parameter(index=2 + nc + j, type=p.type, name=p.attrs["name"])
                      for j, p in enumerate(body.inputs[1 + nc:])]
        new = inline(b, _step(body), [step, *carried, *invariants])
        more = b.lt(b.add(step, b.const(1, "int64")), until)
        return Graph([step, *carried, until, *invariants], [more, *new],
                     name=f"{body.name}_replay")
    return derived(body, ("replay", nc), make)


def _replayed(b: Builder, node):
    """What ``tape_row`` ``node`` means: the ``while`` that runs its loop's first k
    steps again from the loop's inputs; and where ``node``'s inputs (handle, k,
    condition, carried..., invariants...) go among its inputs (None: nowhere)."""
    body, nc = node.attrs["body"], node.attrs["n_carried"]
    _, k, _, *rest = node.inputs
    carried, invariants = rest[:nc], rest[nc:]
    again = b.emit("while", b.lt(b.const(0, "int64"), k), *carried, k, *invariants,
                   body=_replay(body, nc), n_carried=nc, max_steps=None, where=None,
                   heap_tape=True)
    places = [None, 1 + nc, None] + list(range(1, 1 + nc)) + [
        2 + nc + j for j in range(len(invariants))]
    return again, places


def _row(b: Builder, x, at):
    return b.reshape(b.dynamic_slice(x, at, size=1), shape=x.shape[1:])


def reversed_while(b: Builder, step_vjp: Graph, nc: int, carried_wrt, invariant_wrt,
                   trips, carry_at, sources, invariants, carried_adjoint, row_adjoints=(),
                   where=None):
    """The reversed loop over ``trips`` forward steps, built with ``b``; returns (adjoint
    per ``carried_wrt``, summed adjoint per ``invariant_wrt``).

    - ``step_vjp``: ``_step_vjp`` of the forward body; ``nc`` its carried count.
    - ``carry_at(rb, k, sources, invariants) -> carry as step k began``, built with the
      reversed body's Builder ``rb`` from the body's parameters standing for
      ``sources`` (tapes, or the initial carry) and ``invariants``.
    - ``carried_adjoint``: per ``carried_wrt``, the adjoint of the final value (a node).
    - ``row_adjoints``: (position in ``carried_wrt``, node [max_steps, *shape]) whose
      row k adds to that carry's adjoint at step k (a tape's adjoint).
    - ``where``: the forward loop's line, which the reversed loop's heap tape names.
    """
    inv_types = [p.type for p in step_vjp.inputs[1 + nc:1 + nc + len(invariants)]]
    carried_types = [p.type for p in step_vjp.inputs[1:1 + nc]]
    rb = Builder()
    params = [rb.parameter(index=0, type=STEPS, name="step")]

    def param(type_, name):
        params.append(rb.parameter(index=len(params), type=type_, name=name))
        return params[-1]

    a_carried = [param(carried_types[j], f"adjoint[carry[{j}]]") for j in carried_wrt]
    a_invariant = [param(inv_types[j], f"adjoint[invariant[{j}]]") for j in invariant_wrt]
    n = param(STEPS, "trips")
    s_params = [param(x.type, f"source[{j}]") for j, x in enumerate(sources)]
    r_params = [param(x.type, f"adjoint[tape[{pos}]]") for pos, x in row_adjoints]
    v_params = [param(t, f"invariant[{j}]") for j, t in enumerate(inv_types)]

    s = params[0]
    one = rb.const(1, "int64")
    k = rb.sub(rb.sub(n, one), s)
    carried_now = carry_at(rb, k, s_params, v_params)
    cotangents = [rb.full(0, t) for t in carried_types]
    for pos, j in enumerate(carried_wrt):
        cotangents[j] = a_carried[pos]
    outs = inline(rb, step_vjp, [k, *carried_now, *v_params, *cotangents])
    grads = outs[nc:]
    d_carried = list(grads[:len(carried_wrt)])
    for (pos, _), tape_adjoint in zip(row_adjoints, r_params):
        d_carried[pos] = rb.add(d_carried[pos], _row(rb, tape_adjoint, k))
    d_invariant = [rb.add(a, d) for a, d in zip(a_invariant, grads[len(carried_wrt):])]
    more = rb.lt(rb.add(s, one), n)
    body = Graph(params, [more, *d_carried, *d_invariant], name=f"{step_vjp.name}_reversed")

    init = list(carried_adjoint) + [b.full(0.0, inv_types[j]) for j in invariant_wrt]
    looped = b.emit("while", b.lt(b.const(0, "int64"), trips), *init, trips, *sources,
                    *[x for _, x in row_adjoints], *invariants, body=body,
                    n_carried=len(init), max_steps=None, where=where, heap_tape=True)
    results = [b.tuple_get(looped, index=r) for r in range(len(init))]
    return results[:len(carried_wrt)], results[len(carried_wrt):]


def while_vjp(b: Builder, node, g, wanted=None):
    """Adjoints of a while's inputs (condition, carried..., invariants...) from those of
    its results ``g`` (a tuple, None where a result has none)."""
    body, nc = node.attrs["body"], node.attrs["n_carried"]
    limit = node.attrs["max_steps"]
    carried, invariants = node.inputs[1:1 + nc], node.inputs[1 + nc:]
    n_inputs = len(node.inputs)
    carried_wrt = tuple(j for j in range(nc) if _float(carried[j].type))
    invariant_wrt = tuple(j for j, x in enumerate(invariants) if _float(x.type)
                          and (wanted is None or wanted[1 + nc + j]))
    tape_adjoints = [] if limit is None else [
        (pos, g[tape_index(node, j)]) for pos, j in enumerate(carried_wrt)
        if g[tape_index(node, j)] is not None]
    if all(g[j] is None for j in carried_wrt) and not tape_adjoints:
        return [None] * n_inputs
    trips = b.tuple_get(node, index=trip_index(node))
    final = [g[j] if g[j] is not None else b.full(0.0, carried[j].type) for j in carried_wrt]
    if limit is not None:
        sources = [b.tuple_get(node, index=tape_index(node, j)) for j in range(nc)]

        def carry_at(rb, k, tapes, _invariants):
            return [_row(rb, tape, k) for tape in tapes]
    elif node.attrs.get("heap_tape"):
        sources = [b.tuple_get(node, index=handle_index(node)), node.inputs[0], *carried]

        def carry_at(rb, k, handle_and_inputs, invariant_params):
            handle, *inputs = handle_and_inputs
            return [rb.emit("tape_row", handle, k, *inputs, *invariant_params, body=body,
                            n_carried=nc, index=j) for j in range(nc)]
    else:
        raise GradientError(f"while at {node.attrs['where'] or 'an unknown line'}: reverse "
                            f"mode needs max_steps or a heap tape (heap_tape=True)")

    d_carried, d_invariant = reversed_while(
        b, _step_vjp(body, nc, carried_wrt, invariant_wrt), nc, carried_wrt, invariant_wrt,
        trips, carry_at, sources, invariants, final, tape_adjoints, node.attrs["where"])
    out = [None] * n_inputs
    for pos, j in enumerate(carried_wrt):
        out[1 + j] = d_carried[pos]
    for pos, j in enumerate(invariant_wrt):
        out[1 + nc + j] = d_invariant[pos]
    return out


while_vjp.selective = True   # reverse mode passes ``wanted`` (see reverse.vjp)


def _tangent_body(body: Graph, nc: int, carried_t: tuple, invariant_t: tuple) -> Graph:
    """``(step, carried..., tangents..., invariants..., their tangents...) ->
    (condition, carried'..., tangents'...)``."""
    def make():
        joint = jvp(_step(body), [1 + j for j in carried_t] + [1 + nc + j for j in invariant_t])
        b, params, jvp_args = tangent_parameters(body, nc, carried_t, invariant_t, STEPS)
        outs = inline(b, joint, jvp_args)
        (more,) = inline(b, Graph(body.inputs, body.outputs[:1]), jvp_args[:len(body.inputs)])
        new_values, tangents = outs[:nc], outs[nc:]
        return Graph(params, [more, *new_values, *[tangents[j] for j in carried_t]],
                     name=f"{body.name}_jvp")
    return derived(body, ("tangents", nc, carried_t, invariant_t), make)


def while_jvp(b: Builder, node, tangents):
    """Tangents of a while's results: one while carrying the float tangents."""
    body, nc = node.attrs["body"], node.attrs["n_carried"]
    carried, invariants = node.inputs[1:1 + nc], node.inputs[1 + nc:]
    carried_t = tuple(j for j in range(nc) if _float(carried[j].type))
    invariant_t = tuple(j for j, t in enumerate(tangents[1 + nc:]) if t is not None)
    if all(tangents[1 + j] is None for j in carried_t) and not invariant_t:
        return None
    t_init = [tangents[1 + j] if tangents[1 + j] is not None else b.full(0.0, carried[j].type)
              for j in carried_t]
    looped = b.emit("while", node.inputs[0], *carried, *t_init, *invariants,
                    *[tangents[1 + nc + j] for j in invariant_t],
                    body=_tangent_body(body, nc, carried_t, invariant_t),
                    n_carried=nc + len(carried_t), max_steps=node.attrs["max_steps"],
                    where=node.attrs["where"], heap_tape=node.attrs.get("heap_tape", False))
    out = [None] * len(node.type)
    for pos, j in enumerate(carried_t):
        out[j] = b.tuple_get(looped, index=nc + pos)
        if node.attrs["max_steps"] is not None:   # a tape's tangent: the tangents' tape
            out[tape_index(node, j)] = b.tuple_get(looped, index=tape_index(looped, nc + pos))
    return tuple(out)


def tape_row_vjp(b: Builder, node, g):
    """Adjoints of a ``tape_row``'s loop inputs: those of the loop that replays its row."""
    again, places = _replayed(b, node)
    index = node.attrs["index"]
    adjoints = while_vjp(b, again, tuple(g if r == index else None
                                         for r in range(len(again.type))))
    return [None if at is None else adjoints[at] for at in places]


def tape_row_jvp(b: Builder, node, tangents):
    """The tangent of a ``tape_row``: that of the loop that replays its row."""
    again, places = _replayed(b, node)
    given = [None] * len(again.inputs)
    for at, tangent in zip(places, tangents):
        if at is not None:
            given[at] = tangent
    result = while_jvp(b, again, given)
    return None if result is None else result[node.attrs["index"]]


def install() -> None:
    """Put these rules into the records of ``while`` and ``tape_row``."""
    PRIMITIVES["while"] = dataclasses.replace(PRIMITIVES["while"], vjp=while_vjp,
                                              jvp=while_jvp)
    PRIMITIVES["tape_row"] = dataclasses.replace(PRIMITIVES["tape_row"], vjp=tape_row_vjp,
                                                 jvp=tape_row_jvp)


install()
