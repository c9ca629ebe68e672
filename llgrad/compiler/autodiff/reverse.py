"""Reverse mode as a Graph → Graph rewrite.

``vjp`` walks the forward nodes in reverse topological order, pushing each node's
adjoint to its inputs with the primitive's rule and accumulating with ``add`` (a
pairwise sum of a node's contributions, formed when the walk reaches the node).  The
result is one joint graph that returns the forward outputs and then the gradients:
ordinary IR that prints, optimises, compiles and differentiates like any other.
Adjoints flow only into values that depend on a differentiated input, so no zero
and no dead derivative is ever built.
"""
from __future__ import annotations

from llgrad.compiler.autodiff import derivatives as derivative_table
from llgrad.compiler.frontend import sympy_io as sympy_frontend
from llgrad.ir.errors import GradientError
from llgrad.ir.graph import AdjointTable, Builder, Graph
from llgrad.ir.primitives import PRIMITIVES


def elementwise_vjp(b, node, g):
    """Adjoints of an elementwise node: g times the partials of its sympy formula
    (recorded once per primitive, see derivative_table.recipes)."""
    operands = dict(zip(("x", "y"), node.inputs))
    return [None if recipe is None else
            sympy_frontend.times_partial(b, recipe, operands, node.type, g)
            for recipe in derivative_table.recipes(node.op)]


def vjp_rule(prim):
    return elementwise_vjp if prim.symbolic else prim.vjp


def float_inputs(graph: Graph, wrt_indices, what: str) -> list:
    """The inputs a derivative is taken with respect to; each must be float."""
    wrt = [graph.inputs[i] for i in wrt_indices]
    for p in wrt:
        if not p.type.is_float:
            raise GradientError(
                f"cannot differentiate {graph.name}() with respect to {p.attrs['name']}: "
                f"it is {p.type}, and {what} need a float input")
    return wrt


def _depends_on(graph: Graph, wrt) -> set:
    """ids of the nodes whose value depends on one of ``wrt``."""
    live = {id(p) for p in wrt}
    for node in graph.nodes:
        if any(id(i) in live for i in node.inputs):
            live.add(id(node))
    return live


def pairwise_sum(b, terms: list):
    """``terms`` summed as a balanced tree of ``add``: a value used n times gets its
    adjoint in log2(n) dependent additions instead of n - 1 (a chain's additions run one
    after another, since float addition may not be reordered: re-measure on the fifty
    terms of ``python -m llgrad bench --workloads scalar --systems "llgrad native"``),
    and pairwise summation rounds less.  Each
    add is attributed to the source line of its later term, as a chain's would be."""
    while len(terms) > 1:
        summed = []
        for k in range(0, len(terms) - 1, 2):
            b.source = terms[k + 1].source
            summed.append(b.add(terms[k], terms[k + 1]))
        terms = summed + terms[len(terms) - len(terms) % 2:]
    return terms[0]


def _differentiable(type_) -> bool:
    """Whether a value carries an adjoint: a float tensor, or a multi-result node's
    tuple of results (a loop's, whose adjoint is a tuple too)."""
    return isinstance(type_, tuple) or type_.is_float


def _total(b, node, terms):
    """A node's adjoint from its contributions.  A multi-result node's are tuples (one
    entry per result, None where a result got nothing: see tuple_get's rule), summed
    result by result."""
    if not isinstance(node.type, tuple):
        return pairwise_sum(b, terms)
    return tuple(pairwise_sum(b, found) if found else None
                 for found in ([t[k] for t in terms if t[k] is not None]
                               for k in range(len(node.type))))


def _contributions(b, prim, node, g, needed):
    """The rule's adjoint per input.  A rule marked ``selective`` (a loop's) is told
    which inputs need one, so it builds no others (a reversed loop would otherwise sum
    the adjoint of every array the body reads, on every step)."""
    rule = vjp_rule(prim)
    if getattr(rule, "selective", False):
        return rule(b, node, g, [id(x) in needed and _differentiable(x.type)
                                 for x in node.inputs])
    return rule(b, node, g)


def vjp(graph: Graph, wrt_indices, cotangents: bool = False) -> Graph:
    """The joint graph of ``graph``: its outputs, then d output / d inputs[wrt_indices].

    With ``cotangents=False`` the graph must have one float output of one element (a
    scalar, or an array of shape (1,) or (1, 1), as autograd allows), seeded with 1.0
    (``grad``).  With ``cotangents=True`` one cotangent parameter per output is
    appended to the inputs (``vjp``).
    """
    wrt = float_inputs(graph, wrt_indices, "gradients")
    b = Builder(seed=graph)
    inputs = list(graph.inputs)
    if cotangents:
        seeds = []
        for k, out in enumerate(graph.outputs):
            seeds.append(b.parameter(index=len(inputs), type=out.type, name=f"cotangent[{k}]"))
            inputs.append(seeds[-1])
    else:
        (out,) = graph.outputs if len(graph.outputs) == 1 else (None,)
        if out is None or out.type.size != 1 or not out.type.is_float:
            got = ", ".join(str(o.type) for o in graph.outputs)
            sources = [o.source for o in graph.outputs if o.source]
            where = f" at {sources[0]}" if sources else ""
            raise GradientError(
                f"grad needs {graph.name}() to return one float scalar (or an array of one "
                f"element); it returned ({got}){where}. Reduce it (e.g. .sum()) or use "
                f"llgrad.vjp")
        seeds = [b.full(1.0, out.type)]

    needed = _depends_on(graph, wrt)
    parts = {}     # id(node) -> the contributions to its adjoint, summed once all are in
    adjoint = {}
    for out, seed in zip(graph.outputs, seeds):
        if id(out) in needed:
            parts.setdefault(id(out), []).append(seed)

    for node in reversed(graph.nodes):
        if id(node) not in parts:
            continue
        g = adjoint[id(node)] = _total(b, node, parts.pop(id(node)))
        if node.op == "parameter":
            continue
        prim = PRIMITIVES[node.op]
        if not prim.differentiable:
            # only for ops whose derivative is zero wherever it exists (comparisons give
            # bool, iota and constants have no inputs): anything else would be a silent zero
            if any(id(x) in needed and x.type.is_float for x in node.inputs):
                raise GradientError(f"{node.op} is not differentiable")
            continue
        b.source = node.source
        for x, contribution in zip(node.inputs, _contributions(b, prim, node, g, needed)):
            if contribution is None or id(x) not in needed or not _differentiable(x.type):
                continue
            parts.setdefault(id(x), []).append(contribution)
    b.source = None
    grads = [adjoint.get(id(p)) or b.full(0.0, p.type) for p in wrt]
    names = [f"d{graph.name}/d{p.attrs['name']}" for p in wrt]
    out_names = list(graph.output_names or [f"out[{k}]" for k in range(len(graph.outputs))])
    adjoints = AdjointTable(len(graph.outputs), [
        (node, adjoint[id(node)]) for node in graph.nodes
        if id(node) in adjoint and not isinstance(node.type, tuple)])
    joint = Graph(inputs, list(graph.outputs) + grads, name=f"{graph.name}_vjp",
                  output_names=out_names + names, adjoints=adjoints)
    joint.pruned = b.created - (len(joint.nodes) - len(graph.nodes))
    return joint
