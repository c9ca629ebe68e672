"""A graph drawn as inline SVG, each node a clickable element linked to its source line.

Graphviz's ``dot`` lays the graph out when it is on PATH.  Without it, a small layered
layout written here draws it (the documented fallback: rows by longest path from the
inputs, each row ordered by the mean position of its operands, a few sweeps; edges as
curves), so a drawing is always a picture, never DOT text.  Both give every node a
``<g class="node ...">`` with ``data-n`` (its name in the printed graph), ``data-s``
(its source line) and, for a backward node, ``data-adj`` (whose adjoint it is):
the attributes the inspector page's script links by.  Forward nodes are blue,
backward orange, arguments grey.
"""
from __future__ import annotations

import html
import re
import shutil
import subprocess

from llgrad.ir.errors import LlgradError
from llgrad.ir.printer import format_graph
from llgrad.ir.walk import forward_ids, scalar_constant

#: graphs with more nodes are not drawn (the page would be slow to lay out and read)
MAX_NODES = 600
_COLOURS = {"param": "#e4e4e4", "fw": "#d6e6ff", "bw": "#ffdcc2"}
_W, _H, _GAP_X, _GAP_Y = 150, 34, 16, 30


def render_dot(text: str, fmt: str = "svg") -> bytes:
    """Graphviz's drawing of DOT ``text``, or a clear error when ``dot`` is absent."""
    exe = shutil.which("dot")
    if exe is None:
        raise LlgradError("drawing a graph needs Graphviz's `dot` program, which is not on "
                          "PATH (install graphviz, e.g. `apt install graphviz`); "
                          "Trace.to_dot() gives the text without it")
    done = subprocess.run([exe, f"-T{fmt}"], input=text.encode(), capture_output=True)
    if done.returncode:
        raise LlgradError(f"dot -T{fmt} failed: {done.stderr.decode(errors='replace')}")
    return done.stdout


class Drawn:
    """One node of the drawing: its name, label, kind (param/fw/bw), links."""

    def __init__(self, node, name, kind, source, adjoint_of):
        self.node, self.name, self.kind = node, name, kind
        self.source, self.adjoint_of = source, adjoint_of
        self.label = node.attrs.get("name", node.op) if node.op == "parameter" else node.op
        self.inputs: list = []


def drawn_nodes(graph, file: str) -> list[Drawn]:
    """The nodes the printer names (scalar literals are inline there, and left out)."""
    names: dict = {}
    format_graph(graph, names=names)
    adjoints = graph.adjoints
    forward = forward_ids(graph, adjoints.n_forward) if adjoints else None
    drawn, by_id = [], {}
    for node in graph.nodes:
        if id(node) not in names or scalar_constant(node) is not None:
            continue
        kind = ("param" if node.op == "parameter"
                else "bw" if forward is not None and id(node) not in forward else "fw")
        where = (node.source or "").rpartition(":")
        source = int(where[2]) if where[0] == file and where[2].isdigit() else None
        of = tuple(names[id(n)] for n in adjoints.of(node) if id(n) in names) \
            if kind == "bw" else ()
        d = Drawn(node, names[id(node)], kind, source, of)
        d.inputs = [by_id[id(i)] for i in node.inputs if id(i) in by_id]
        by_id[id(node)] = d
        drawn.append(d)
    return drawn


def _attributes(d: Drawn) -> str:
    attrs = f'class="node {d.kind}" data-n="{d.name}"'
    if d.source is not None:
        attrs += f' data-s="{d.source}"'
    if d.adjoint_of:
        attrs += f' data-adj="{" ".join(d.adjoint_of)}"'
    return attrs


def draw(graph, file: str) -> str:
    """The SVG of ``graph`` (``file``: whose lines the nodes link to)."""
    nodes = drawn_nodes(graph, file)
    if len(nodes) > MAX_NODES:
        return (f"<p>The graph has {len(nodes)} nodes, more than the {MAX_NODES} drawn "
                f"here: its text is in the other tabs.</p>")
    return _laid_out(nodes)


def picture(graph):
    """The SVG of ``graph`` for a notebook's ``_repr_svg_``, or None (the notebook then
    shows the printed text) when it has more than ``MAX_NODES`` nodes."""
    nodes = drawn_nodes(graph, "")
    return None if len(nodes) > MAX_NODES else _laid_out(nodes)


def _laid_out(nodes) -> str:
    return _with_dot(nodes) if shutil.which("dot") else _layered(nodes)


def _with_dot(nodes) -> str:
    lines = ["digraph g {", '  node [shape=box, style="rounded,filled", fontsize=10, '
             'fontname="Helvetica"];', "  edge [arrowsize=0.5];"]
    index = {id(d): k for k, d in enumerate(nodes)}
    for k, d in enumerate(nodes):
        lines.append(f'  n{k} [id="llg{k}", label="{d.name} {d.label}", '
                     f'fillcolor="{_COLOURS[d.kind]}"];')
        lines += [f"  n{index[id(i)]} -> n{k};" for i in d.inputs]
    lines.append("}")
    svg = render_dot("\n".join(lines), "svg").decode()
    svg = svg[svg.index("<svg"):]
    return re.sub(r'<g id="llg(\d+)" class="node">',
                  lambda m: f"<g {_attributes(nodes[int(m.group(1))])}>", svg)


def _layered(nodes) -> str:
    """The fallback layout: rows by depth, rows ordered by barycentre sweeps."""
    depth = {}
    for d in nodes:
        depth[id(d)] = 1 + max((depth[id(i)] for i in d.inputs), default=-1)
    rows: dict = {}
    for d in nodes:
        rows.setdefault(depth[id(d)], []).append(d)
    order = {id(d): k for row in rows.values() for k, d in enumerate(row)}
    for _ in range(3):
        for r in sorted(rows)[1:]:
            def centre(d):
                return (sum(order[id(i)] for i in d.inputs) / len(d.inputs)
                        if d.inputs else order[id(d)])
            rows[r].sort(key=centre)
            order.update({id(d): k for k, d in enumerate(rows[r])})
    widest = max((len(row) for row in rows.values()), default=1)
    width = widest * (_W + _GAP_X) + _GAP_X
    height = len(rows) * (_H + _GAP_Y) + _GAP_Y
    where = {}
    for r, row in rows.items():
        offset = (width - len(row) * (_W + _GAP_X) + _GAP_X) / 2
        for k, d in enumerate(row):
            where[id(d)] = (offset + k * (_W + _GAP_X), _GAP_Y + r * (_H + _GAP_Y))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" '
             f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" class="graph">'
             "<style>.edge{fill:none;stroke:#8a8a8a}text{font:11px sans-serif}</style>"]
    for d in nodes:
        x, y = where[id(d)]
        for i in d.inputs:
            ix, iy = where[id(i)]
            x0, y0, x1, y1 = ix + _W / 2, iy + _H, x + _W / 2, y
            parts.append(f'<path class="edge" d="M{x0:.0f},{y0:.0f} C{x0:.0f},{y0 + 20:.0f} '
                         f'{x1:.0f},{y1 - 20:.0f} {x1:.0f},{y1:.0f}"/>')
    for d in nodes:
        x, y = where[id(d)]
        label = html.escape(f"{d.name} {d.label}")
        parts.append(f'<g {_attributes(d)}><title>{label}</title>'
                     f'<rect x="{x:.0f}" y="{y:.0f}" width="{_W}" height="{_H}" rx="6" '
                     f'fill="{_COLOURS[d.kind]}"/><text x="{x + _W / 2:.0f}" '
                     f'y="{y + _H / 2 + 4:.0f}" text-anchor="middle">{label[:24]}</text></g>')
    parts.append("</svg>")
    return "".join(parts)
