"""One self-contained HTML page with every stage of a Trace side by side.

    python -m llgrad inspect examples/mlp.py:loss --html mlp.html

No scripts, no external files: inline CSS, one column per stage, scrolled sideways.
Graphs are drawn as inline SVG when Graphviz's ``dot`` is on PATH, and shown as DOT
text otherwise, so the page is the same document on any machine.
"""
from __future__ import annotations

import html
import shutil

from llgrad.compiler.inspection.stages import render_dot
from llgrad.ir.dot import to_dot
from llgrad.ir.errors import LlgradError

_STYLE = """
body { font-family: sans-serif; margin: 1em; }
.stages { display: flex; gap: 1em; overflow-x: auto; align-items: flex-start; }
section { flex: 0 0 auto; max-width: 70em; border: 1px solid #ccc; border-radius: 4px;
          padding: 0 .8em .8em; }
pre { font-size: 12px; max-height: 80vh; overflow: auto; }
svg { max-width: 60em; height: auto; }
"""


def _graph(graph) -> str:
    """The drawing of ``graph`` as inline SVG, or its DOT text when dot is absent."""
    dot = to_dot(graph)
    if shutil.which("dot"):
        svg = render_dot(dot, "svg").decode()
        return svg[svg.index("<svg"):]  # drop the XML prologue and DOCTYPE
    return f"<p>(Graphviz's dot is not installed: the graph as DOT text)</p>{_pre(dot)}"


def _pre(text: str) -> str:
    return f"<pre>{html.escape(text)}</pre>"


def _stages(trace) -> list[tuple[str, str]]:
    stages = [("forward graph", _pre(str(trace.ir)))]
    if trace.backward is not None:
        stages.append(("backward (joint) graph", _pre(str(trace.backward))))
    for p in trace.passes:
        stages.append((f"after {p.name}", _pre(str(p.graph))))
    stages += [("optimized, with kernels", _pre(str(trace.optimized))),
               ("kernels", _pre(trace.kernels)),
               ("stats", _pre(str(trace.stats))),
               ("residuals", _pre("\n".join(map(str, trace.residuals)) or "(none)")),
               ("forward graph drawn", _graph(trace.ir))]
    if trace.backward is not None:
        stages.append(("joint graph drawn", _graph(trace.backward)))
    for title, what in (("as numpy", lambda: trace.as_python()),
                        ("LLVM IR", lambda: trace.llvm_ir),
                        ("LLVM IR, optimised", lambda: trace.llvm_ir_optimized),
                        ("assembly", lambda: trace.asm)):
        try:
            stages.append((title, _pre(what())))
        except LlgradError as e:  # interpreted (no native code), or a loop as_python skips
            stages.append((title, _pre(str(e))))
    return stages


def html_report(trace, title: str) -> str:
    sections = "\n".join(f"<section><h2>{html.escape(name)}</h2>\n{body}</section>"
                         for name, body in _stages(trace))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n"
            f"<body><h1>{html.escape(title)}</h1>\n<div class=\"stages\">\n{sections}\n"
            f"</div></body></html>\n")
