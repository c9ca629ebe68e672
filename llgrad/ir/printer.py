"""The text form of a Graph: one line per node, SSA names, a type on every value.

    def f(%0: f64[] x) -> f64[]:
      %1: f64[] = mul 2.0, %0                      # chain.py:5
      ...
      return %4

Scalar constants (and their broadcasts) are printed inline as literals, so that the
IR reads like the formula it came from; everything else is one named line.

A joint graph made by reverse mode (one with ``adjoints``) marks its backward lines
and names, after the source line, the forward value each adjoint belongs to::

      %5: f64[] = add %4, %4               # chain.py:5  backward: adjoint of %2, %1

``notes`` adds a stage's own remark to a node's line (the fusion kernel it runs in).
"""
from __future__ import annotations

import numpy as np

from llgrad.ir.walk import forward_ids, scalar_constant


def _literal(node):
    v = scalar_constant(node)
    if v is None:
        return None
    return str(v).lower() if isinstance(v, bool) else repr(v)


def _format_attr(value):
    if isinstance(value, np.ndarray):
        return np.array2string(value, precision=6, threshold=8, separator=",").replace("\n", "")
    if isinstance(value, tuple):
        return "(" + ",".join(_format_attr(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if hasattr(value, "nodes") and hasattr(value, "outputs"):
        return "{body}"
    return str(value)


def format_graph(graph, indent: str = "", names: dict | None = None,
                 notes: dict | None = None, n_carried: int | None = None,
                 condition: bool = False) -> str:
    """The text form; ``names`` (id(node) -> "%k") is filled in as lines are written,
    so a caller can refer to values by the names the reader sees.  A loop's body
    (``n_carried`` given) ends by saying which value each carried one becomes for the
    next step, and which values are stacked per step; a while's (``condition``) first
    says which value decides whether another step runs."""
    names = {} if names is None else names
    notes = notes or {}
    lines = []
    adjoints = graph.adjoints
    forward = forward_ids(graph, adjoints.n_forward) if adjoints else None

    def name(node):
        lit = _literal(node)
        if lit is not None:
            return lit
        if id(node) not in names:
            names[id(node)] = f"%{len(names)}"
        return names[id(node)]

    params = ", ".join(f"{name(p)}: {p.type} {p.attrs['name']}" for p in graph.inputs)
    out_types = ", ".join(str(o.type) for o in graph.outputs)
    lines.append(f"{indent}def {graph.name}({params}) -> ({out_types}):")
    for node in graph.nodes:
        if node.op == "parameter" or _literal(node) is not None:
            continue
        args = ", ".join(name(i) for i in node.inputs)
        attrs = " ".join(f"{k}={_format_attr(v)}" for k, v in node.attrs.items()
                         if k not in ("body", "branches"))
        type_ = (", ".join(map(str, node.type)) if isinstance(node.type, tuple)
                 else str(node.type))
        text = f"{indent}  {name(node)}: {type_} = {node.op} {args}"
        if attrs:
            text += f"  {attrs}"
        remarks = [node.source] if node.source else []
        if forward is not None and id(node) not in forward:
            of = ", ".join(name(n) for n in adjoints.of(node))
            remarks.append(f"backward: adjoint of {of}" if of else "backward")
        if id(node) in notes:
            remarks.append(notes[id(node)])
        if remarks:
            text = f"{text:<72}  # {'  '.join(remarks)}"
        lines.append(text)
        if "body" in node.attrs:
            lines.append(format_graph(node.attrs["body"], indent + "    ", names,
                                      n_carried=node.attrs.get("n_carried"),
                                      condition=node.op in ("while", "tape_row")))
        for branch in node.attrs.get("branches", ()):   # a cond's, each once, indented
            lines.append(format_graph(branch, indent + "    ", names))
    outs = ", ".join(name(o) for o in graph.outputs)
    text = f"{indent}  return {outs}"
    if n_carried is not None:
        values = graph.outputs[1:] if condition else graph.outputs
        carried = ", ".join(f"{name(p)} <- {name(o)}" for p, o in
                            zip(graph.inputs[1:1 + n_carried], values))
        stacked = ", ".join(name(o) for o in values[n_carried:])
        text = f"{text:<72}  # " + (f"again if {name(graph.outputs[0])}; " if condition else "")
        text += f"carried: {carried or 'none'}; stacked per step: {stacked or 'none'}"
    lines.append(text)
    return "\n".join(lines)
