"""Graphviz DOT export: forward nodes and backward nodes coloured apart.

    print(llgrad.grad(f).trace(x).to_dot())   # paste into `dot -Tsvg`

In a joint graph the first ``n_forward`` outputs are the function's values: the nodes
they need are the forward pass, everything else is the backward pass.
"""
from __future__ import annotations

from .graph import scalar_constant, topological_order

_FORWARD, _BACKWARD, _PARAM = "#dbe9f6", "#fde0c5", "#e2f0d9"


def to_dot(graph, n_forward=None) -> str:
    forward_ids = None if n_forward is None else {
        id(n) for n in topological_order(graph.outputs[:n_forward])}
    lines = [f'digraph "{graph.name}" {{', "  rankdir=TB;",
             '  node [shape=box, style="rounded,filled", fontname="monospace", fontsize=10];']
    names = {}
    for node in graph.nodes:
        literal = scalar_constant(node)
        if literal is not None and node.op != "parameter":
            continue  # literals are written on the edges' target labels instead
        name = names[id(node)] = f"n{len(names)}"
        if node.op == "parameter":
            label, colour = f"{node.attrs['name']}\\n{node.type}", _PARAM
        else:
            consts = [repr(scalar_constant(i)) for i in node.inputs
                      if scalar_constant(i) is not None]
            extra = f" ({', '.join(consts)})" if consts else ""
            label = f"{node.op}{extra}\\n{node.type}"
            colour = _FORWARD if forward_ids is None or id(node) in forward_ids else _BACKWARD
        lines.append(f'  {name} [label="{label}", fillcolor="{colour}"];')
        for i in node.inputs:
            if id(i) in names:
                lines.append(f"  {names[id(i)]} -> {name};")
    for k, out in enumerate(graph.outputs):
        label = graph.output_names[k] if graph.output_names else f"out[{k}]"
        lines.append(f'  o{k} [label="{label}", shape=plaintext, style=""];')
        if id(out) in names:
            lines.append(f"  {names[id(out)]} -> o{k};")
    lines.append("}")
    return "\n".join(lines)
