"""Graphviz DOT export: forward nodes and backward nodes coloured apart.

    llgrad.grad(f).trace(x).to_dot("f.dot")   # then `dot -Tsvg f.dot`

In a joint graph made by reverse mode (one with ``adjoints``) the nodes its first
outputs need are the forward pass, everything else is the backward pass.  Nodes are
labelled with the SSA names the text printer uses, so the drawing and the listing
can be read side by side.
"""
from __future__ import annotations

from llgrad.ir.printer import format_graph
from llgrad.ir.walk import forward_ids, scalar_constant

_FORWARD, _BACKWARD, _PARAM = "#dbe9f6", "#fde0c5", "#e2f0d9"


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(graph) -> str:
    adjoints = graph.adjoints
    forward = None if adjoints is None else forward_ids(graph, adjoints.n_forward)
    ssa: dict = {}
    format_graph(graph, names=ssa)
    lines = [f"digraph {_quoted(graph.name)} {{", "  rankdir=TB;",
             '  node [shape=box, style="rounded,filled", fontname="monospace", fontsize=10];']
    names = {}
    for node in graph.nodes:
        literal = scalar_constant(node)
        if literal is not None and node.op != "parameter":
            continue  # literals are written on the edges' target labels instead
        name = names[id(node)] = f"n{len(names)}"
        if node.op == "parameter":
            label, colour = f"{ssa[id(node)]} {node.attrs['name']}\n{node.type}", _PARAM
        else:
            consts = [repr(scalar_constant(i)) for i in node.inputs
                      if scalar_constant(i) is not None]
            extra = f" ({', '.join(consts)})" if consts else ""
            label = f"{ssa[id(node)]} {node.op}{extra}\n{node.type}"
            colour = _FORWARD if forward is None or id(node) in forward else _BACKWARD
        label = _quoted(label).replace("\n", "\\n")
        lines.append(f'  {name} [label={label}, fillcolor="{colour}"];')
        for i in node.inputs:
            if id(i) in names:
                lines.append(f"  {names[id(i)]} -> {name};")
    for k, out in enumerate(graph.outputs):
        label = graph.output_names[k] if graph.output_names else f"out[{k}]"
        lines.append(f'  o{k} [label={_quoted(label)}, shape=plaintext, style=""];')
        if id(out) in names:
            lines.append(f"  {names[id(out)]} -> o{k};")
    lines.append("}")
    return "\n".join(lines)
