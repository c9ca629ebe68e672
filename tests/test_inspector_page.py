"""The inspector page (compiler/inspection/page.py) of a 784-128-10 MLP's gradient:
self-contained, small, and linked, checked in headless Chromium.

Oracles: the page's own DOM after a real click in a real browser (the page's
``?selftest=1`` script clicks the source line with the most links and writes what is
highlighted in each stage), and the source lines of the nodes themselves."""
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest

import llgrad
from models import mlp_loss

#: the lines of models.mlp_loss that compute something (its def is line 5)
LINES = (6, 7, 8, 9, 10)

#: the stages a source line must reach (the graph texts, drawings and native code)
LINKED = ["forward", "joint", "optimized", "drawings", "llvm_ir", "llvm_ir_optimized", "asm"]


def chromium():
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(n)), None)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inspector")
    rng = np.random.default_rng(0)
    params = {"w1": rng.normal(size=(784, 128)) * 0.05, "b1": np.zeros(128),
              "w2": rng.normal(size=(128, 10)) * 0.1, "b2": np.zeros(10)}
    x, y = rng.normal(size=(32, 784)), np.eye(10)[rng.integers(0, 10, 32)]
    trace = llgrad.grad(mlp_loss).trace(params, x, y)
    path = folder / "mlp784.html"
    trace.to_html(path, title="784-128-10 MLP gradient")
    return path


def test_the_page_is_self_contained_and_under_2_mb(page):
    """Nothing is fetched: no element names a resource (src, href, xlink:href, link),
    the style imports nothing (namespace names of the inline SVG are no fetch)."""
    text = page.read_text()
    assert page.stat().st_size < 2_000_000
    assert not re.search(r'\s(src|href|xlink:href)=', text)
    assert "<link" not in text and "@import" not in text and "url(" not in text


def test_every_line_of_the_function_reaches_every_stage(page):
    """Each source line that computes something is named by the graph texts and the
    native code (``data-s``); a line that is only a definition reaches none."""
    text = page.read_text()
    panels = dict(re.findall(r'<section class="panel" id="([\w-]+)"[^>]*>(.*?)</section>',
                             text, re.S))
    for line in LINES:
        for stage in LINKED:
            assert f'data-s="{line}"' in panels[stage], (line, stage)
    assert 'data-s="5"' not in panels["llvm_ir"]    # the def line computes nothing


def test_clicking_a_source_line_in_chromium_highlights_every_stage(page):
    browser = chromium()
    if browser is None:
        pytest.skip("no Chromium on PATH (.ci/run installs the Debian package chromium)")
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    done = subprocess.run(flags + ["--virtual-time-budget=5000", "--dump-dom",
                                   page.as_uri() + "?selftest=1"],
                          capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="selftest"[^>]*>(.*?)</pre>', done.stdout, re.S)
    assert found, done.stderr[-2000:]
    report = json.loads(found.group(1).replace("&quot;", '"'))
    assert report["line"] in LINES
    for stage in LINKED:
        assert report["counts"][stage] > 0, (stage, report)
    assert report["source_highlighted"] == 1
    assert report["adjoint_highlighted"] > 0 and report["node_source_highlighted"] == 1
    artifacts = Path(os.environ.get("LLGRAD_ARTIFACTS", page.parent))
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / "inspector-mlp784.png"
    subprocess.run(flags + ["--window-size=1400,850", f"--screenshot={shot}",
                            page.as_uri() + f"?tab=asm&line={report['line']}"],
                   capture_output=True, timeout=120)
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")


@pytest.mark.parametrize("layout", ["dot", "built-in"])
def test_graph_drawings_are_svg_with_every_value_linked(layout, monkeypatch):
    """With Graphviz's dot or the built-in layered layout: well-formed SVG with one
    linked node per value the printed graph names, backward nodes marked apart."""
    from llgrad.ir import svg
    if layout == "dot" and shutil.which("dot") is None:
        pytest.skip("Graphviz's dot is not installed (the built-in layout is tested)")
    if layout == "built-in":
        monkeypatch.setattr(svg.shutil, "which", lambda name: None)

    def f(x, w):
        return np.sum(np.tanh(x @ w) ** 2)

    trace = llgrad.grad(f, argnums=1).trace(np.ones((3, 4)), np.ones((4, 2)))
    drawing = trace._repr_svg_()
    ElementTree.fromstring(drawing)        # well-formed
    drawn = set(re.findall(r'<g class="node (?:fw|bw|param)" data-n="(%\d+)"', drawing))
    printed = set(re.findall(r"(%\d+): ", str(trace.backward)))   # lines and arguments
    assert drawn == printed
    assert 'class="node bw"' in drawing and 'class="node fw"' in drawing
    assert "data-adj=" in drawing
    assert trace.backward._repr_svg_() == drawing     # a bare Graph draws the same


def test_a_graph_too_large_to_draw_shows_as_text_in_a_notebook(monkeypatch):
    """A notebook falls back to the printed text when _repr_svg_ gives None."""
    from llgrad.ir import svg
    trace = llgrad.grad(lambda x: np.sum(np.tanh(x) * x)).trace(np.ones(3))
    assert trace.backward._repr_svg_().startswith("<svg")
    monkeypatch.setattr(svg, "MAX_NODES", 2)
    assert trace.backward._repr_svg_() is None and trace._repr_svg_() is None
