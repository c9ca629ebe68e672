"""examples/inspect.ipynb runs from top to bottom in a fresh kernel (nbclient, the
``notebook`` extra), and the displays it makes are the inspector page and SVG."""
import os
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_the_inspect_notebook_runs_without_errors(monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="the notebook extra (nbclient)")
    nbclient = pytest.importorskip("nbclient", reason="the notebook extra (nbclient)")
    pytest.importorskip("ipykernel", reason="the notebook extra (ipykernel)")
    # the kernel imports this checkout's llgrad, installed or not
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(EXAMPLES.parent)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    notebook = nbformat.read(EXAMPLES / "inspect.ipynb", as_version=4)
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(EXAMPLES)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    shown = [o.get("data", {}) for o in outputs]
    pages = [d["text/html"] for d in shown if "<iframe srcdoc=" in d.get("text/html", "")]
    assert len(pages) >= 2 and all("data-s=" in p for p in pages)
    assert any(d.get("image/svg+xml", "").startswith("<svg") for d in shown)
