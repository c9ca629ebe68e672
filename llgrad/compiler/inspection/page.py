"""The inspector page: one self-contained HTML file linking every stage of a Trace.

    python -m llgrad inspect examples/mlp.py:loss --html mlp.html
    trace.to_html("mlp.html")          # or, in a notebook, just evaluate ``trace``

The user's function is on the left; tabs on the right hold the forward IR, the joint
(backward) graph, the optimised graph with its kernels, drawings of the graphs, the
LLVM IR before and after O3, the assembly, the stats and, when given, a profile.
Every line of every stage that came from a source line carries it (``linking``), so
clicking a source line highlights its nodes, kernels, LLVM instructions and assembly
lines everywhere; clicking a value highlights its source line and, for a backward
node, the forward values whose adjoint it is.  The page has no external resources:
its script and style (``assets/``) are inlined, the drawings are inline SVG
(``svg``).  ``?tab=asm&line=12`` in its address opens a tab with a line selected.
"""
from __future__ import annotations

import html
import inspect
import os
import sys
from pathlib import Path

from llgrad.compiler.inspection import linking
from llgrad.ir import svg
from llgrad.ir.errors import LlgradError

_ASSETS = Path(__file__).with_name("assets")


def _asset(name: str) -> str:
    return (_ASSETS / name).read_text()


def _code(lines: list[linking.Line]) -> str:
    """A ``<div class="code">`` of one stage's text, one span per line."""
    out = []
    for line in lines:
        attrs = ""
        if line.source is not None:
            attrs += f' data-s="{line.source}"'
        if line.node:
            attrs += f' data-n="{line.node}"'
        if line.adjoint_of:
            attrs += f' data-adj="{" ".join(line.adjoint_of)}"'
        if line.backward:
            attrs += ' class="bw"'
        out.append(f"<span{attrs}>{html.escape(line.text) or ' '}</span>")
    return f'<div class="code">{"".join(out)}</div>'


def _plain(text: str) -> str:
    return _code([linking.Line(t) for t in text.splitlines()])


def source_of(trace, function=None) -> tuple[str, int, list[str]]:
    """(file name, first line number, lines) of the traced function's source.

    From ``function`` (or ``trace.function``, set by the staged function) when it has
    source; otherwise the lines its nodes name, read from a loaded module's file of
    that name."""
    function = function or getattr(trace, "function", None)
    function = inspect.unwrap(function) if function is not None else None
    if function is not None:
        try:
            lines, first = inspect.getsourcelines(function)
            return os.path.basename(inspect.getsourcefile(function)), max(first, 1), lines
        except (OSError, TypeError):
            pass
    wheres = [n.source.rpartition(":") for n in trace.ir.nodes if n.source]
    if not wheres:
        return "", 1, []
    file = wheres[0][0]
    numbers = [int(w[2]) for w in wheres if w[0] == file and w[2].isdigit()]
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and os.path.basename(path) == file and os.path.isfile(path):
            with open(path) as f:
                text = f.readlines()
            first, last = min(numbers), max(numbers)
            return file, first, text[first - 1:last]
    return file, 1, []


def _source_panel(file: str, first: int, lines: list[str]) -> str:
    spans = [f'<span data-s="{first + k}" data-no="{first + k}">'
             f'{html.escape(text.rstrip()) or " "}</span>' for k, text in enumerate(lines)]
    if not spans:
        spans = ["<span>(the function's source could not be found)</span>"]
    return (f'<div id="source"><p class="note">{html.escape(file)}: click a line to see '
            f'what became of it</p><div class="code">{"".join(spans)}</div></div>')


def _panels(trace, file: str, profile) -> list[tuple[str, str, str, str | None]]:
    """(id, tab title, body, graph scope) per stage, in pipeline order."""
    graph_text = lambda g: _code(linking.graph_lines(str(g), file))  # noqa: E731
    panels = [("forward", "forward IR", graph_text(trace.ir), "forward")]
    if trace.backward is not None:
        panels.append(("joint", "joint graph", graph_text(trace.backward), "joint"))
    for p in trace.passes:
        scope = f"pass-{p.name}"
        panels.append((scope, f"after {p.name}", graph_text(p.graph), scope))
    panels.append(("optimized", "optimised + kernels",
                   graph_text(trace.optimized) + "<h3>kernels</h3>" + _plain(trace.kernels),
                   "optimized"))
    legend = ('<p class="legend"><span style="background:#d6e6ff">forward</span>'
              '<span style="background:#ffdcc2">backward</span>'
              '<span style="background:#e4e4e4">argument</span></p>')
    drawings = [legend]
    for title, graph, scope in (("forward graph", trace.ir, "forward"),
                                ("joint graph", trace.backward, "joint")):
        if graph is not None:
            drawings.append(f'<h3>{title}</h3><div data-graph="{scope}">'
                            f'{svg.draw(graph, file)}</div>')
    panels.append(("drawings", "graph drawings", "".join(drawings), None))
    for key, title, reader in (("llvm_ir", "LLVM IR", linking.llvm_lines),
                               ("llvm_ir_optimized", "LLVM IR after O3", linking.llvm_lines),
                               ("asm", "assembly", linking.asm_lines)):
        try:
            body = _code(reader(getattr(trace, key), file))
        except LlgradError as e:     # interpreted: no native code
            body = _plain(str(e))
        panels.append((key, title, body, None))
    try:
        panels.append(("python", "as numpy", _plain(trace.as_python()), None))
    except LlgradError as e:      # a loop as_python does not write
        panels.append(("python", "as numpy", _plain(str(e)), None))
    residuals = "\n".join(map(str, trace.residuals)) or "(none)"
    panels.append(("stats", "stats", _plain(str(trace.stats)) + "<h3>residuals</h3>"
                   + _plain(residuals), None))
    if profile is not None:
        panels.append(("profile", "profile", profile_table(profile, file), None))
    return panels


def profile_table(profile, file: str = "") -> str:
    """A profile's rows as a table, each linked to its kernel's source line."""
    rows = []
    for r in profile.rows:
        where = (r.get("source") or "").rpartition(":")
        link = f' data-s="{where[2]}"' if where[0] == file and where[2].isdigit() else ""
        share = r["seconds"] / profile.calls / profile.seconds_per_call
        label = r["label"]
        rows.append(f"<tr{link}><td>{share:.1%}</td><td>{r['seconds'] / profile.calls * 1e6:.1f}"
                    f" µs</td><td>k{label['kernels'][0]} {html.escape(str(label['op']))}</td>"
                    f"<td>{html.escape(r.get('source') or '')}</td></tr>")
    return (f"<p>{html.escape(profile.name)}: {profile.calls} calls, "
            f"{profile.seconds_per_call * 1e6:.1f} µs a call</p><table class=\"stats\">"
            f"<tr><th>share</th><th>per call</th><th>kernel</th><th>source</th></tr>"
            f"{''.join(rows)}</table>")


def html_report(trace, title: str, function=None, profile=None) -> str:
    """The whole page (see the module docstring)."""
    file, first, lines = source_of(trace, function)
    panels = _panels(trace, file, profile)
    tabs = "".join(f'<button data-panel="{pid}">{html.escape(name)}<span class="count">'
                   f"</span></button>" for pid, name, _, _ in panels)
    bodies = "".join(f'<section class="panel" id="{pid}"'
                     + (f' data-graph="{scope}"' if scope else "") + f">{body}</section>"
                     for pid, _, body, scope in panels)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{_asset('inspector.css')}</style>"
            f"</head>\n<body><header><h1>{html.escape(title)}</h1><span class=\"hint\">"
            f"click a source line, or a value in a graph</span></header>\n<main>"
            f"{_source_panel(file, first, lines)}<div id=\"stages\"><nav>{tabs}</nav>"
            f"{bodies}</div></main>\n<script>{_asset('inspector.js')}</script></body></html>\n")


def inline_frame(page: str, height: int = 640) -> str:
    """``page`` inside an iframe: how a notebook shows it (its script and style stay
    its own, whatever the notebook's are)."""
    return (f'<iframe srcdoc="{html.escape(page, quote=True)}" style="width:100%;'
            f'height:{height}px;border:1px solid #ccc" sandbox="allow-scripts"></iframe>')
