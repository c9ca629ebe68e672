"""Forward mode as a Graph → Graph rewrite.

``jvp`` walks the nodes in topological order and builds, next to each node that
depends on a differentiated input, its tangent: for an elementwise primitive
``sum_i d f/d x_i · t_i`` from the same sympy partials reverse mode replays; for a
structural one the record's rule (``linear``: the same op applied to the tangents;
``jvp``: a hand-written rule).  The result is one graph returning the outputs and
then their tangents; it shares every forward node through hash-consing, so it
optimises, compiles and differentiates like any other graph (``hessian`` is this
rewrite applied to a reverse-mode gradient graph).
"""
from __future__ import annotations

from llgrad.compiler.autodiff import derivatives as derivative_table
from llgrad.compiler.autodiff.reverse import float_inputs
from llgrad.compiler.frontend import sympy_io as sympy_frontend
from llgrad.ir.errors import GradientError
from llgrad.ir.graph import Builder, Graph
from llgrad.ir.primitives import PRIMITIVES


def elementwise_jvp(b, node, tangents):
    """The tangent of an elementwise node: its sympy partials times the input tangents."""
    operands = dict(zip(("x", "y"), node.inputs))
    out = None
    for recipe, t in zip(derivative_table.recipes(node.op), tangents):
        if recipe is None or t is None:
            continue
        term = sympy_frontend.times_partial(b, recipe, operands, node.type, t)
        out = term if out is None else b.add(out, term)
    return out


def _linear_jvp(b, node, tangents):
    """The same op over the tangents; float operands that do not vary are zero there,
    others (indices, conditions) are passed as they are."""
    args = [t if t is not None else b.full(0.0, x.type) if x.type.is_float else x
            for x, t in zip(node.inputs, tangents)]
    return b.emit(node.op, *args, **node.attrs)


def jvp_rule(prim):
    if prim.symbolic:
        return elementwise_jvp
    if prim.linear:
        return _linear_jvp
    return prim.jvp


def jvp(graph: Graph, wrt_indices) -> Graph:
    """``graph`` with one tangent parameter per input in ``wrt_indices`` appended to
    its inputs, returning its outputs and then d output · tangents for each output
    (an output that does not depend on the inputs, or is not float, has a zero
    tangent)."""
    wrt = float_inputs(graph, wrt_indices, "tangents")
    b = Builder(seed=graph)
    inputs = list(graph.inputs)
    tangent = {}
    for p in wrt:
        tangent[id(p)] = b.parameter(index=len(inputs), type=p.type,
                                     name=f"tangent[{p.attrs['name']}]")
        inputs.append(tangent[id(p)])

    for node in graph.nodes:
        if node.op == "parameter" or not any(id(x) in tangent for x in node.inputs):
            continue
        prim = PRIMITIVES[node.op]
        if not prim.differentiable:
            # comparisons give bool: a float result here would be a silent zero
            if node.type.is_float:
                raise GradientError(f"{node.op} is not differentiable")
            continue
        if isinstance(node.type, tuple) or node.type.is_float:  # loop: its rule refuses
            b.source = node.source
            t = jvp_rule(prim)(b, node, [tangent.get(id(x)) for x in node.inputs])
            if t is not None:
                tangent[id(node)] = t
    b.source = None
    tangents = [tangent.get(id(o)) or b.full(0, o.type) for o in graph.outputs]
    out_names = list(graph.output_names or [f"out[{k}]" for k in range(len(graph.outputs))])
    names = [f"tangent[{n}]" for n in out_names]
    return Graph(inputs, list(graph.outputs) + tangents, name=f"{graph.name}_jvp",
                 output_names=out_names + names)
