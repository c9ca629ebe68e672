"""Derivatives of ``loop`` (and of ``tuple_get``, which reads its results).

A ``loop`` node runs its body Graph ``(step, carried..., invariants...) ->
(carried'..., per-step...)`` ``trip_count`` times and yields the final carried values,
then each per-step value stacked over the steps.  Its rules are installed into the
primitive records here (``ir`` may not import the compiler), when the autodiff package
is imported.

Reverse mode (``loop_vjp``) is two loops:

1. the forward loop again, its body also returning each carried value as the step
   began, so the loop stacks them: the residuals, one row per step
   (``with_carries``).  It has the forward loop's inputs and its body extends the
   forward body, so the pass ``passes/loop_merge.py`` runs the two as one loop;
2. the reversed loop (``reverse_loop``), which walks the steps from the last to the
   first, reads the carry of step i from those stacks and runs the body's own joint
   vjp graph for that step, carrying the adjoints of the carried values and summing
   those of the invariants.

An invariant the body reads only as its row of the current step (a ``scan``'s xs:
``dynamic_slice(xs, i)``, or ``dynamic_slice(xs, T-1-i)`` when reversed) gets its
adjoint row by row as a per-step result of the reversed loop, instead of summing a
whole-array adjoint on every step (quadratic in the trip count).

Two more things keep a recurrent network's reversed loop to the products it must do
(within ``STACKS_MAX_BYTES`` of stacks each): a product of the step that the adjoints
are computed from (an LSTM's ``h @ U``) is also stacked by the forward loop and read
back, not computed again (``_saved_products``; the sum it is the first term of, an
LSTM's gates, when nothing else reads the product); and an invariant's per-step adjoint
that is a product of per-step values (``dU = h^T g``) comes out as its two factors per
step, summed by one large product after the loop (``_summed_adjoints``), each factor
from a stack that exists already where there is one (the forward loop's stack of h,
the adjoint rows: ``_factor_plan``).

Forward mode (``loop_jvp``) is one loop carrying each float carried value's tangent
beside it; the body is the body's jvp graph.  A loop with a ``runtime_count`` (its
last input) keeps it in forward mode; reverse mode refuses it (the reversed loop would
have to start from a step known only at run time: ``while_loop``'s tape does that).

Everything here is ordinary IR built through the Builder, so a derivative of a loop is
differentiated again like any other graph (grad of grad through a scan: the reversed
loop is itself a loop).
"""
from __future__ import annotations

import dataclasses
import weakref

from llgrad.compiler.autodiff.forward import jvp
from llgrad.compiler.autodiff.reverse import vjp
from llgrad.compiler.frontend.loop_products import (pretransposed_weights, stepwise_product,
                                                    summed_product)
from llgrad.compiler.frontend.loops import STEP, reverse_rows, row
from llgrad.ir.errors import GradientError
from llgrad.ir.graph import Builder, Graph
from llgrad.ir.inline import inline
from llgrad.ir.primitives import PRIMITIVES
from llgrad.ir.types import TensorType
from llgrad.ir.walk import scalar_constant

#: body -> {what was derived from it: its body with the carried values stacked, its
#: reversal per (trip count, wanted invariants), its tangent body per tangent positions};
#: weak, so a body's derived graphs live as long as the body
_DERIVED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def derived(body: Graph, key, make):
    """``make()`` once per body and key: the same Graph for the same request, so the
    Builder merges a rule applied twice (and each body is differentiated once)."""
    table = _DERIVED.setdefault(body, {})
    if key not in table:
        table[key] = make()
    return table[key]


def _float(t) -> bool:
    return isinstance(t, TensorType) and t.is_float


def with_carries(body: Graph, n_carried: int) -> tuple[Graph, list[int]]:
    """``body`` with each carried value, as it enters the step, also among its per-step
    results, and the index of each one's stack among the loop's results.  The same
    Graph for the same body (so the Builder merges repeated requests), and ``body``
    itself when it already returns every carried value per step."""
    def make():
        outputs = list(body.outputs)
        positions = []
        for p in body.inputs[1:1 + n_carried]:
            k = next((k for k in range(n_carried, len(outputs)) if outputs[k] is p), None)
            if k is None:
                outputs.append(p)
                k = len(outputs) - 1
            positions.append(k)
        extended = None if len(outputs) == len(body.outputs) else Graph(
            body.inputs, outputs, name=body.name)
        return extended, positions

    extended, positions = derived(body, ("with_carries", n_carried), make)
    return (extended or body), positions


def _row_reads(body: Graph, n_carried: int, trip_count: int) -> dict:
    """{invariant index: (the dynamic_slice node, reversed)} for each float invariant the
    body reads only as one row, at step i (or at T-1-i, ``reversed``)."""
    step = body.inputs[0]
    readers: dict = {}
    for node in body.nodes:
        for x in node.inputs:
            readers.setdefault(id(x), []).append(node)
    rows = {}
    for j, p in enumerate(body.inputs[1 + n_carried:]):
        uses = readers.get(id(p), [])
        if not (_float(p.type) and len(uses) == 1 and uses[0].op == "dynamic_slice"
                and uses[0].inputs[0] is p and uses[0].attrs["size"] == 1):
            continue
        index = uses[0].inputs[1]
        if index is step:
            rows[j] = (uses[0], False)
        elif (index.op == "sub" and index.inputs[1] is step
              and scalar_constant(index.inputs[0]) == trip_count - 1):
            rows[j] = (uses[0], True)
    return rows


@dataclasses.dataclass(frozen=True)
class _Reversal:
    """What the reversed loop of one body needs, built once per (body, trip count)."""
    joint: Graph          # vjp of the body with row reads as parameters
    rows: dict            # invariant index -> (dynamic_slice node, reversed)
    carried_wrt: tuple    # carried indices with adjoints (the float ones)
    invariant_wrt: tuple  # invariant indices with summed adjoints (float, not rows)


def _reversal(body: Graph, n_carried: int, trip_count: int, wanted_invariants) -> _Reversal:
    return derived(body, ("reversal", n_carried, trip_count, tuple(wanted_invariants)),
                    lambda: _make_reversal(body, n_carried, trip_count, wanted_invariants))


def _make_reversal(body: Graph, n_carried: int, trip_count: int, wanted_invariants):
    rows = {j: r for j, r in _row_reads(body, n_carried, trip_count).items()
            if j in wanted_invariants}
    b = Builder()
    row_params = {id(node): b.parameter(index=len(body.inputs) + k, type=node.type,
                                        name=f"row[{body.inputs[1 + n_carried + j].attrs['name']}]")
                  for k, (j, (node, _)) in enumerate(rows.items())}
    outputs = inline(b, body, body.inputs, lambda b, node, inputs: row_params.get(id(node)))
    rowed = Graph(list(body.inputs) + list(row_params.values()), outputs, name=body.name)
    carried_wrt = tuple(j for j in range(n_carried) if _float(body.inputs[1 + j].type))
    invariant_wrt = tuple(j for j in wanted_invariants if j not in rows)
    wrt = ([1 + j for j in carried_wrt] + [1 + n_carried + j for j in invariant_wrt]
           + list(range(len(body.inputs), len(rowed.inputs))))
    return _Reversal(vjp(rowed, wrt, cotangents=True), rows, carried_wrt, invariant_wrt)


#: the most bytes one value kept per step for the reversed loop may take, stacked over
#: the steps (the factors of a summed adjoint, ``_summed_adjoints``; a product kept from
#: the forward loop, ``_saved_products``): beyond it the reversed loop adds up the
#: adjoint step by step, or computes the product again, in constant memory (a long
#: scan's checkpointing must keep its small footprint)
STACKS_MAX_BYTES = 64 << 20


def _stack_fits(nodes, trip_count: int) -> bool:
    return trip_count * sum(x.type.size * x.type.np_dtype.itemsize
                            for x in nodes) <= STACKS_MAX_BYTES


def _saved_products(plan: _Reversal, n_carried: int, n_primal: int, trip_count: int) -> list:
    """The products of the body that its joint vjp graph computes again from the step's
    carried values for the adjoints (an LSTM's ``h @ U``): nodes of ``plan.joint``
    that read no cotangent (its inputs from ``n_primal`` on), change per step and lead
    to a value the backward part reads.  The forward loop
    keeps each per step instead, and the reversed loop reads its row (``with_products``),
    as reverse mode keeps the residuals of straight-line code."""
    joint = plan.joint
    cotangent = {id(p) for p in joint.inputs[n_primal:]}
    invariant = {id(p) for p in joint.inputs[1 + n_carried:n_primal - len(plan.rows)]}
    backward, constant, candidates = set(cotangent), set(invariant), []
    for node in joint.nodes:
        if node.op == "parameter":
            continue
        if any(id(x) in backward for x in node.inputs):
            backward.add(id(node))
        elif all(id(x) in constant or x.op == "constant" for x in node.inputs):
            constant.add(id(node))
        elif node.op == "dot_general" and _stack_fits([node], trip_count):
            candidates.append(node)
    # only what the adjoints are computed from: the forward values the backward nodes
    # read, and everything those are computed from
    needed = {id(x) for node in joint.nodes if id(node) in backward for x in node.inputs}
    for node in reversed(joint.nodes):
        if id(node) in needed and id(node) not in backward:
            needed.update(id(x) for x in node.inputs)
    readers: dict = {}
    for node in joint.nodes:
        for x in node.inputs:
            readers.setdefault(id(x), []).append(node)
    for x in joint.outputs:
        readers.setdefault(id(x), []).append(x)
    saved = [_widened(node, readers, backward) for node in candidates if id(node) in needed]
    return [node for node in dict.fromkeys(saved) if _stack_fits([node], trip_count)]


def _widened(product, readers: dict, backward: set):
    """The sum the product is the first term of, when nothing else reads it (an LSTM's
    ``gates = x W + h U + b``): kept instead of the product, the reversed loop reads the
    sum as the forward loop wrote it (the product's epilogue, ``codegen/epilogue.py``)
    instead of adding the terms again on every step."""
    node = product
    while True:
        users = readers.get(id(node), [])
        if (len(users) != 1 or users[0].op != "add" or id(users[0]) in backward
                or users[0].type != node.type):
            return node
        node = users[0]


def with_products(body: Graph, n_carried: int, plan: _Reversal, products: list):
    """``with_carries(body)`` whose body also returns each of ``products`` (nodes of
    ``plan.joint``) per step: (body, carried stack positions, product stack positions).
    Built on the body's own nodes (a Builder seeded with them), so a product the body
    already computes is returned, not computed twice."""
    extended, positions = with_carries(body, n_carried)
    if not products:
        return extended, positions, []

    def make():
        n_primal = len(body.inputs) + len(plan.rows)
        primal = Graph(list(plan.joint.inputs[:n_primal]), list(products))
        rows = [node for node, _ in plan.rows.values()]
        outputs, where = list(extended.outputs), []
        for node in inline(Builder(seed=extended), primal, list(extended.inputs) + rows):
            k = next((k for k in range(n_carried, len(outputs)) if outputs[k] is node), None)
            if k is None:     # a value the body returns per step already is stacked once
                outputs.append(node)
                k = len(outputs) - 1
            where.append(k)
        return Graph(extended.inputs, outputs, name=body.name), where

    key = ("with_products", n_carried, tuple(id(p) for p in products))
    grown, product_positions = derived(body, key, make)
    return grown, positions, product_positions


def _summed_adjoints(plan: _Reversal, n_out: int, n_carried: int, n_invariants: int,
                     trip_count: int) -> dict:
    """{position in ``plan.invariant_wrt``: dims} for each invariant whose adjoint from
    one step is a product of two per-step values, neither an invariant of the body
    (``stepwise_product``: the weight gradients of a recurrent step): the reversed
    loop returns the two factors per step, and one product over the stacked steps
    sums them after it."""
    n_cw = len(plan.carried_wrt)
    invariant = {id(p) for p in plan.joint.inputs[1 + n_carried:1 + n_carried + n_invariants]}
    summed = {}
    for pos in range(len(plan.invariant_wrt)):
        found = stepwise_product(plan.joint.outputs[n_out + n_cw + pos],
                                 lambda node: id(node) in invariant)
        if found is not None and _stack_fits(found[:2], trip_count):
            summed[pos] = found[2]
    return summed


def reverse_loop(b: Builder, body: Graph, n_carried: int, trip_count: int, invariants,
                 stacked, carried_adjoint, per_step_adjoint, wanted_invariants=None,
                 saved=()):
    """The reversed loop of a ``loop``: the adjoints of its inputs, built with ``b``.

    - ``body``: the forward body, ``(step, carried..., invariants...) -> (carried'...,
      per-step...)``; ``n_carried``, ``trip_count``: the forward loop's.
    - ``invariants``: the forward loop's invariant inputs (nodes of ``b``'s graph).
    - ``stacked``: per carried value, a node ``[trip_count, *shape]`` whose row i is its
      value as step i began (``with_carries`` makes the forward loop produce them).
    - ``carried_adjoint``: per carried value, the adjoint of its final value, or None.
    - ``per_step_adjoint``: per per-step result, the adjoint of its stack, or None.
    - ``wanted_invariants``: the invariant indices whose adjoints are wanted (default:
      every float one); others are not computed.
    - ``saved``: (node of the joint vjp graph, its values stacked per step by the
      forward loop) pairs (``_saved_products``): the reversed body reads their rows
      instead of computing them again.

    Returns (adjoint per carried input, adjoint per invariant input), None where the
    value is not float or not wanted.  The reversed loop runs ``trip_count`` steps, step
    k handling forward step i = trip_count-1-k: it carries the carried values' adjoints
    and the sums of the invariants', and reads row i of ``stacked`` and of each
    per-step adjoint.  Rows of an invariant read one per step (``_row_reads``) come out
    as its per-step results, reordered to the forward order."""
    nc = n_carried
    inv_types = [p.type for p in body.inputs[1 + nc:]]
    if wanted_invariants is None:
        wanted_invariants = [j for j, t in enumerate(inv_types) if _float(t)]
    plan = _reversal(body, nc, trip_count, wanted_invariants)
    n_out = len(body.outputs)
    summed = _summed_adjoints(plan, n_out, nc, len(inv_types), trip_count)
    accumulated = [pos for pos in range(len(plan.invariant_wrt)) if pos not in summed]
    per_step = [k for k in range(n_out - nc) if per_step_adjoint[k] is not None]

    rb = Builder()
    k = rb.parameter(index=0, type=STEP, name="step")
    params = [k]

    def param(type_, name):
        params.append(rb.parameter(index=len(params), type=type_, name=name))
        return params[-1]

    a_carried = [param(body.inputs[1 + j].type, f"adjoint[carried[{j}]]")
                 for j in plan.carried_wrt]
    a_invariant = [param(inv_types[plan.invariant_wrt[pos]],
                         f"adjoint[invariant[{plan.invariant_wrt[pos]}]]") for pos in accumulated]
    s_params = [param(s.type, f"stacked[carried[{j}]]") for j, s in enumerate(stacked)]
    saved_params = [param(s.type, f"stacked[{node.op}]") for node, s in saved]
    g_params = [param(per_step_adjoint[q].type, f"adjoint[per_step[{q}]]") for q in per_step]
    v_params = [param(t, body.inputs[1 + nc + j].attrs["name"]) for j, t in enumerate(inv_types)]

    i = rb.sub(rb.const(trip_count - 1, "int64"), k)

    carried_now = [row(rb, s, i) for s in s_params]
    cotangents = [rb.full(0, o.type) for o in body.outputs]
    for pos, j in enumerate(plan.carried_wrt):
        cotangents[j] = a_carried[pos]
    for pos, q in enumerate(per_step):
        cotangents[nc + q] = row(rb, g_params[pos], i)
    row_values = [rb.dynamic_slice(v_params[j], k if reversed_ else i, size=1)
                  for j, (_, reversed_) in plan.rows.items()]
    saved_rows = {id(node): row(rb, p, i) for (node, _), p in zip(saved, saved_params)}
    outs = inline(rb, plan.joint, [i, *carried_now, *v_params, *row_values, *cotangents],
                  lambda rb, node, inputs: saved_rows.get(id(node)))
    grads = outs[n_out:]
    n_cw, n_iw = len(plan.carried_wrt), len(plan.invariant_wrt)
    new_invariant = [rb.add(a, grads[n_cw + pos]) for a, pos in zip(a_invariant, accumulated)]
    row_outputs = grads[n_cw + n_iw:]
    sources = _factor_sources(carried_now, saved_rows.values(), row_outputs,
                              [reversed_ for _, reversed_ in plan.rows.values()])
    factors = _factor_plan([grads[n_cw + pos].inputs for pos in summed], sources)
    restacked = list({id(x): x for pair in factors for kind, x in pair[1:]
                      if kind == "stack"}.values())
    reversed_body = Graph(params, grads[:n_cw] + new_invariant + row_outputs + restacked,
                          name=f"{body.name}_reversed")

    init = [carried_adjoint[j] if carried_adjoint[j] is not None
            else b.full(0.0, body.inputs[1 + j].type) for j in plan.carried_wrt]
    init += [b.full(0.0, inv_types[plan.invariant_wrt[pos]]) for pos in accumulated]
    n_acc = len(accumulated)
    reversed_body, loop_inputs = pretransposed_weights(
        b, reversed_body, n_cw + n_acc, [*init, *stacked, *[s for _, s in saved],
                                         *[per_step_adjoint[q] for q in per_step], *invariants])
    looped = b.loop(*loop_inputs, body=reversed_body, trip_count=trip_count,
                    n_carried=n_cw + n_acc)
    results = [b.tuple_get(looped, index=r) for r in range(len(looped.type))]

    d_carried = [None] * nc
    for pos, j in enumerate(plan.carried_wrt):
        d_carried[j] = results[pos]
    d_invariant = [None] * len(inv_types)
    for at, pos in enumerate(accumulated):
        d_invariant[plan.invariant_wrt[pos]] = results[n_cw + at]
    for pos, (j, (_, reversed_)) in enumerate(plan.rows.items()):
        rows = b.reshape(results[n_cw + n_acc + pos], shape=inv_types[j].shape)
        d_invariant[j] = rows if reversed_ else reverse_rows(b, rows)
    first_row = n_cw + n_acc
    stacks = {id(x): results[first_row + len(plan.rows) + q] for q, x in enumerate(restacked)}
    forward_stacks = [*stacked, *[s for _, s in saved]]

    def stack_of(kind, x, ahead):
        if kind == "stack":
            return stacks[id(x)]
        if kind == "row":
            rows = b.reshape(results[first_row + x[0]], shape=(trip_count, *x[1].shape))
            return reverse_rows(b, rows) if ahead else rows
        return forward_stacks[x]            # "forward": a stack the forward loop made

    for (pos, dims), (ahead, lhs, rhs) in zip(summed.items(), factors):
        d_invariant[plan.invariant_wrt[pos]] = summed_product(
            b, stack_of(*lhs, ahead), stack_of(*rhs, ahead), dims)
    return d_carried, d_invariant


def _factor_sources(carried_now, saved_rows, row_outputs, row_reversed) -> dict:
    """{id(node of the reversed body): where its values over all steps already are}:
    ("forward", k) for the row of the forward loop's k-th stack (a carried value as the
    step began, then the saved products), ("row", (r, node)) for the value whose
    reshape is the reversed loop's r-th per-step result (an adjoint row), with
    whether those rows, read in the forward steps' order, cost no reordering of their
    own (the invariant's adjoint reorders them anyway: ``reverse_loop``)."""
    sources = {id(x): (("forward", k), True) for k, x in enumerate([*carried_now, *saved_rows])}
    for r, (out, reversed_) in enumerate(zip(row_outputs, row_reversed)):
        x = out.inputs[0] if out.op == "reshape" else out
        sources.setdefault(id(x), (("row", (r, x)), not reversed_))
    return sources


def _factor_plan(pairs, sources) -> list:
    """Per summed adjoint's factors ``(lhs, rhs)`` (nodes of the reversed body): (in
    the forward steps' order, (kind, what) for each factor).  The two stacks a summed
    product contracts over the steps need only be in the same order: both in the
    forward order when both already are (a carried value's stack from the forward loop
    and an adjoint row the invariant's adjoint reorders anyway), else both in the
    reversed loop's order, a factor kept nowhere else stacked by the reversed loop
    (kind "stack") -- never stacked twice, nor copied out of a stack that exists."""
    plan = []
    for pair in pairs:
        found = [sources.get(id(x)) for x in pair]
        if all(f is not None and f[1] for f in found):
            plan.append((True, *[f[0] for f in found]))
        else:
            plan.append((False, *[f[0] if f is not None and f[0][0] == "row" else ("stack", x)
                                  for f, x in zip(found, pair)]))
    return plan


def loop_vjp(b: Builder, node, g, wanted=None):
    """Adjoints of a loop's inputs from the adjoints ``g`` of its results (a tuple, None
    where a result has none); ``wanted``: per input, whether its adjoint is needed."""
    body, trip, nc = node.attrs["body"], node.attrs["trip_count"], node.attrs["n_carried"]
    invariants = node.inputs[nc:]
    if all(a is None for a in g):
        return [None] * len(node.inputs)
    if node.attrs.get("runtime_count"):
        raise GradientError(
            f"loop {body.name!r}: reverse mode needs a trip count known when compiling; "
            f"this loop's count is a runtime value (use forward mode, a static count, or "
            f"llgrad.while_loop, whose reverse mode records a tape)")
    if trip == 0:   # the loop passes its initial carried values through
        return list(g[:nc]) + [None] * len(invariants)
    wanted_invariants = [j for j, x in enumerate(invariants) if _float(x.type)
                         and (wanted is None or wanted[nc + j])]
    plan = _reversal(body, nc, trip, wanted_invariants)
    products = _saved_products(plan, nc, len(body.inputs) + len(plan.rows), trip)
    extended, positions, product_positions = with_products(body, nc, plan, products)
    forward = b.loop(*node.inputs, body=extended, trip_count=trip, n_carried=nc)
    stacked = [b.tuple_get(forward, index=k) for k in positions]
    saved = [(p, b.tuple_get(forward, index=k)) for p, k in zip(products, product_positions)]
    d_carried, d_invariant = reverse_loop(
        b, body, nc, trip, invariants, stacked, list(g[:nc]), list(g[nc:]), wanted_invariants,
        saved)
    return d_carried + d_invariant


loop_vjp.selective = True   # reverse mode passes ``wanted`` (see reverse.vjp)


def _tangent_body(body: Graph, nc: int, carried_t: tuple, invariant_t: tuple) -> Graph:
    """The body of the forward-mode loop: ``(step, carried..., their tangents...,
    invariants..., their tangents...) -> (carried'..., tangents'..., per-step...,
    float per-step tangents...)``."""
    return derived(body, ("tangents", nc, carried_t, invariant_t),
                    lambda: _make_tangent_body(body, nc, carried_t, invariant_t))


def tangent_parameters(body: Graph, nc: int, carried_t: tuple, invariant_t: tuple,
                       step_type) -> tuple[Builder, list, list]:
    """A Builder holding the parameters of a forward-mode body of ``body`` (a loop's or
    a while's), in the order ``(step, carried..., their tangents..., invariants...,
    their tangents...)``; those parameters; and the same values in the order the body's
    jvp graph takes them (step, carried, invariants, then the tangents)."""
    b = Builder()
    params = [b.parameter(index=0, type=step_type, name="step")]

    def param(p, name):
        params.append(b.parameter(index=len(params), type=p.type, name=name))
        return params[-1]

    def tangent(p):
        return param(p, f"tangent[{p.attrs['name']}]")

    carried = [param(p, p.attrs["name"]) for p in body.inputs[1:1 + nc]]
    t_carried = [tangent(body.inputs[1 + j]) for j in carried_t]
    invariants = [param(p, p.attrs["name"]) for p in body.inputs[1 + nc:]]
    t_invariants = [tangent(body.inputs[1 + nc + j]) for j in invariant_t]
    return b, params, [params[0], *carried, *invariants, *t_carried, *t_invariants]


def _make_tangent_body(body: Graph, nc: int, carried_t: tuple, invariant_t: tuple) -> Graph:
    joint = jvp(body, [1 + j for j in carried_t] + [1 + nc + j for j in invariant_t])
    n_out = len(body.outputs)
    b, params, jvp_args = tangent_parameters(body, nc, carried_t, invariant_t, STEP)
    outs = inline(b, joint, jvp_args)
    values, tangents = outs[:n_out], outs[n_out:]
    float_steps = [q for q in range(nc, n_out) if _float(body.outputs[q].type)]
    return Graph(params, values[:nc] + [tangents[j] for j in carried_t] + values[nc:]
                 + [tangents[q] for q in float_steps], name=f"{body.name}_jvp")


def loop_jvp(b: Builder, node, tangents):
    """Tangents of a loop's results (a tuple, None where there is none): one loop that
    carries every float carried value's tangent beside it."""
    body, trip, nc = node.attrs["body"], node.attrs["trip_count"], node.attrs["n_carried"]
    runtime_count = node.attrs.get("runtime_count", False)
    count = list(node.inputs[-1:]) if runtime_count else []
    carried, invariants = node.inputs[:nc], node.inputs[nc:len(node.inputs) - len(count)]
    carried_t = tuple(j for j in range(nc) if _float(carried[j].type))
    invariant_t = tuple(j for j, t in enumerate(tangents[nc:nc + len(invariants)])
                        if t is not None)
    if all(tangents[j] is None for j in carried_t) and not invariant_t:
        return None
    t_body = _tangent_body(body, nc, carried_t, invariant_t)
    t_init = [tangents[j] if tangents[j] is not None else b.full(0.0, carried[j].type)
              for j in carried_t]
    looped = b.loop(*carried, *t_init, *invariants, *[tangents[nc + j] for j in invariant_t],
                    *count, body=t_body, trip_count=trip, n_carried=nc + len(carried_t),
                    **({"runtime_count": True} if runtime_count else {}))
    n_out, n_ct = len(body.outputs), len(carried_t)
    out = [None] * n_out
    for pos, j in enumerate(carried_t):
        out[j] = b.tuple_get(looped, index=nc + pos)
    float_steps = [q for q in range(nc, n_out) if _float(body.outputs[q].type)]
    for pos, q in enumerate(float_steps):
        out[q] = b.tuple_get(looped, index=n_out + n_ct + pos)
    return tuple(out)


def tuple_get_vjp(b, node, g):
    """The adjoint of one result, as the loop's adjoint tuple with None elsewhere."""
    index = node.attrs["index"]
    return (tuple(g if k == index else None for k in range(len(node.inputs[0].type))),)


def tuple_get_jvp(b, node, tangents):
    (t,) = tangents
    return None if t is None else t[node.attrs["index"]]


def install() -> None:
    """Put these rules into the records of ``loop`` and ``tuple_get``."""
    for name, rules in {"loop": (loop_vjp, loop_jvp),
                        "tuple_get": (tuple_get_vjp, tuple_get_jvp)}.items():
        PRIMITIVES[name] = dataclasses.replace(PRIMITIVES[name], vjp=rules[0], jvp=rules[1])


install()
