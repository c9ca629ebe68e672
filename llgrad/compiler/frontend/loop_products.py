"""Products of a loop body done once over all steps instead of once per step.

A recurrent step multiplies its row of the input sequence by a weight no step changes
(an LSTM's ``x_t @ W``), and its reversed loop sums that weight's gradients over the
steps (``dW += x_t^T g_t``, ``dU += h_t^T g_t``).  Per step these are small products,
the sums also a full-size add per step; over the stacked steps each is one large product
(what JAX users and cuDNN do by hand for an LSTM's input projection).  These rewrites give
the same sums, up to float rounding (the order of the terms changes):

- ``hoist_invariant_operands``: an operand of a product that no step changes but the
  body computes (a slice or transpose of a weight) is computed once before the loop.
- ``hoist_row_products``: when a loop is traced (before differentiation), a product of
  a row of an invariant (a scan's ``xs``) by an invariant is computed for every row
  before the loop, and the body reads its row.  Reverse mode then inherits it: the
  stacked product is an invariant the body reads one row per step, whose adjoint the
  reversed loop returns row by row (``autodiff/loops.py``), so the weight's gradient
  is the vjp of one product after the loop.
- ``pretransposed_weights``: an invariant weight a product reads transposed on its
  right (the reversed loop's ``g @ U.T``) is transposed once before the loop instead of
  by the product's code on every step.
- ``stepwise_product``/``summed_product``: for the reversed loop, an invariant's
  per-step adjoint that is one product of per-step values is returned as those two
  factors, stacked per step, and summed over the steps by one product after the loop.
"""
from __future__ import annotations

import contextlib

from llgrad.ir.graph import Builder, Graph, Node
from llgrad.ir.inline import inline
from llgrad.ir.primitives import PRIMITIVES
from llgrad.ir.walk import scalar_constant


def _row_read(x: Node, step: Node, trip_count: int):
    """(array, index) if ``x`` is row ``index`` of ``array`` read at the step (or at
    ``trip_count - 1 - step``): ``reshape(dynamic_slice(array, index, size=1))``."""
    if x.op != "reshape" or x.inputs[0].op != "dynamic_slice":
        return None
    sliced = x.inputs[0]
    array, index = sliced.inputs[0], sliced.inputs[1]
    if sliced.attrs["size"] != 1 or array.shape[0] != trip_count or x.shape != array.shape[1:]:
        return None
    if index is step or (index.op == "sub" and index.inputs[1] is step
                         and scalar_constant(index.inputs[0]) == trip_count - 1):
        return array, index
    return None


def hoist_invariant_operands(b: Builder, body: Graph, n_carried: int,
                             inputs: list) -> tuple[Graph, list]:
    """(body, inputs) of a loop, with each operand of a product that no step changes but
    the body computes (``x @ w[:, :h]``, ``h @ v.T``: a slice, a transpose of an
    invariant) computed once before the loop, as a new invariant.  The product then
    reads an invariant, which the two rewrites below look for, and the step no longer
    slices or transposes it."""
    position = _invariant_positions(body, n_carried)
    invariant = set(position)
    for node in body.nodes:
        if (node.op not in ("parameter", "constant") and PRIMITIVES[node.op].pure
                and any(id(x) in invariant for x in node.inputs)
                and all(id(x) in invariant or x.op == "constant" for x in node.inputs)):
            invariant.add(id(node))
    operands = {id(x): x for n in body.nodes if n.op == "dot_general" for x in n.inputs
                if id(x) in invariant and id(x) not in position}
    if not operands:
        return body, inputs
    computed = inline(b, Graph(list(body.inputs), list(operands.values())),
                      [body.inputs[0], *inputs])
    outer = dict(zip(operands, computed))
    return _with_invariants(body, n_carried, inputs, outer,
                            lambda nb, node, new_inputs, param: param, "invariant operand")


def hoist_row_products(b: Builder, body: Graph, n_carried: int, trip_count: int,
                       inputs: list) -> tuple[Graph, list]:
    """(body, inputs) of a loop, with each ``dot_general(row of invariant A, invariant
    W)`` (no batch axes, float) computed before the loop as one product of A by W (a
    node of ``b``, appended to the loop's invariants) whose row the body reads; the
    loop as given when there is none."""
    step = body.inputs[0]
    position = _invariant_positions(body, n_carried)
    outer: dict = {}          # id(product in the body) -> the product over all rows
    for node in body.nodes:
        if node.op != "dot_general" or not node.type.is_float:
            continue
        (lc, rc), (lb, rb) = node.attrs["dims"]
        lhs, rhs = node.inputs
        read = _row_read(lhs, step, trip_count)
        if lb or rb or read is None or id(read[0]) not in position or id(rhs) not in position:
            continue
        with _stamped(b, node):
            outer[id(node)] = b.dot_general(
                inputs[position[id(read[0])]], inputs[position[id(rhs)]],
                dims=((tuple(d + 1 for d in lc), tuple(rc)), ((), ())))

    def read_row(nb, node, new_inputs, stacked):
        index = new_inputs[0].inputs[0].inputs[1]
        return nb.reshape(nb.dynamic_slice(stacked, index, size=1), shape=node.type.shape)

    return _with_invariants(body, n_carried, inputs, outer, read_row, "rows @ weight")


def pretransposed_weights(b: Builder, body: Graph, n_carried: int,
                          inputs: list) -> tuple[Graph, list]:
    """(body, inputs) of a loop, with each invariant matrix that a product reads
    transposed on its right (``g @ W.T``: W's last axis contracted, as in the reversed
    loop of ``h @ W``) transposed once before the loop.  The product's code would
    otherwise copy W into (k, n) order on every step (``codegen/matmul.py``: the tiles
    read the left operand transposed in place, the right one only by rows)."""
    position = _invariant_positions(body, n_carried)
    outer: dict = {}          # id(product in the body) -> the transposed weight
    for node in body.nodes:
        if node.op != "dot_general" or not node.type.is_float:
            continue
        (_, rc), (lb, rb) = node.attrs["dims"]
        rhs = node.inputs[1]
        if lb or rb or rhs.type.ndim != 2 or tuple(rc) != (1,) or id(rhs) not in position:
            continue
        with _stamped(b, node):
            outer[id(node)] = b.transpose(inputs[position[id(rhs)]], perm=(1, 0))

    def read_transposed(nb, node, new_inputs, transposed):
        (lc, _), _ = node.attrs["dims"]
        return nb.dot_general(new_inputs[0], transposed, dims=((tuple(lc), (0,)), ((), ())))

    return _with_invariants(body, n_carried, inputs, outer, read_transposed, "weight.T")


def _invariant_positions(body: Graph, n_carried: int) -> dict:
    """{id(body parameter): its position among the loop's inputs}, for the invariants."""
    return {id(p): k for k, p in enumerate(body.inputs[1:]) if k >= n_carried}


@contextlib.contextmanager
def _stamped(b: Builder, node: Node):
    """Nodes built in the enclosing graph carry the source line of the body node they
    replace (the profile and the printed graph then name the user's line)."""
    outer, b.source = b.source, node.source
    try:
        yield
    finally:
        b.source = outer


def _with_invariants(body: Graph, n_carried: int, inputs: list, outer: dict, replace,
                     name: str) -> tuple[Graph, list]:
    """(body, inputs) with the nodes ``outer.values()`` (of the enclosing graph) appended
    to the loop's invariants and each body node ``outer`` names rebuilt by
    ``replace(nb, node, new_inputs, parameter of its new invariant)``; invariants the
    body then no longer reads are dropped.  The loop as given when ``outer`` is empty."""
    if not outer:
        return body, inputs
    added = list({id(n): n for n in outer.values()}.values())
    nb = Builder()
    params = {id(n): nb.parameter(index=len(body.inputs) + k, type=n.type, name=name)
              for k, n in enumerate(added)}

    def rule(nb, node, new_inputs):
        if id(node) not in outer:
            return None
        return replace(nb, node, new_inputs, params[id(outer[id(node)])])

    rebuilt = Graph(list(body.inputs) + list(params.values()),
                    inline(nb, body, body.inputs, rule), name=body.name)
    return _without_unread(rebuilt, n_carried, list(inputs) + added)


def _without_unread(body: Graph, n_carried: int, inputs: list) -> tuple[Graph, list]:
    """(body, inputs) without the invariants the body no longer reads (a weight whose
    every product was hoisted, or that it reads only transposed), which reverse mode
    would otherwise carry a zero adjoint for on every step."""
    read = {id(x) for n in body.nodes for x in n.inputs} | {id(o) for o in body.outputs}
    kept = [k for k, p in enumerate(body.inputs) if k <= n_carried or id(p) in read]
    if len(kept) == len(body.inputs):
        return body, inputs
    nb = Builder()
    fresh = {k: nb.parameter(index=at, type=body.inputs[k].type,
                             name=body.inputs[k].attrs["name"]) for at, k in enumerate(kept)}
    outputs = inline(nb, body, [fresh.get(k, p) for k, p in enumerate(body.inputs)])
    return (Graph([fresh[k] for k in kept], outputs, name=body.name),
            [inputs[k - 1] for k in kept[1:]])


def stepwise_product(d: Node, is_invariant) -> tuple | None:
    """(lhs, rhs, dims) if ``d``, an invariant's adjoint from one step, is a product
    without batch axes of two values that change per step (``is_invariant(node)`` is
    false for both); None otherwise."""
    if d.op != "dot_general":
        return None
    (_, _), (lb, rb) = d.attrs["dims"]
    lhs, rhs = d.inputs
    if lb or rb or is_invariant(lhs) or is_invariant(rhs):
        return None
    return lhs, rhs, d.attrs["dims"]


def summed_product(b: Builder, lhs_rows: Node, rhs_rows: Node, dims) -> Node:
    """The sum over steps of ``dot_general(lhs_t, rhs_t, dims)`` from the factors
    stacked per step (axis 0): one product also contracting the step axis."""
    (lc, rc), _ = dims
    return b.dot_general(lhs_rows, rhs_rows,
                         dims=(((0,) + tuple(d + 1 for d in lc), (0,) + tuple(d + 1 for d in rc)),
                               ((), ())))
