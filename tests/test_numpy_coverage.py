"""docs/numpy-support.md says what the numpy table holds (``numpy_coverage``), and the
refusals it lists refuse with their own message.

The page is generated (``python -m llgrad.compiler.frontend.numpy_coverage >
docs/numpy-support.md``): a row added to or removed from the table without the page
regenerated fails here."""
import pathlib
import re

import numpy as np
import pytest

import llgrad
from llgrad.compiler.frontend import numpy_ops
from llgrad.compiler.frontend.numpy_coverage import coverage, render
from llgrad.ir.errors import UnsupportedError

PAGE = pathlib.Path(__file__).resolve().parent.parent / "docs" / "numpy-support.md"


def _listed(namespace: str) -> list[str]:
    text = PAGE.read_text()
    block = re.search(rf"<!-- supported {re.escape(namespace)} -->\n(.*?)<!-- end -->", text,
                      re.S)
    assert block, f"docs/numpy-support.md has no supported list for {namespace}"
    return re.findall(r"`([^`]+)`", block.group(1))


@pytest.mark.parametrize("namespace", ["np", "np.linalg", "np.ndarray", "scipy"])
def test_the_pages_supported_names_are_the_tables(namespace):
    assert _listed(namespace) == coverage()[namespace]["supported"], (
        "regenerate: python -m llgrad.compiler.frontend.numpy_coverage > docs/numpy-support.md")


def test_the_page_is_the_generators_output_for_its_numpy_version():
    version = re.search(r"numpy's own API \(numpy ([^)]+)\)", PAGE.read_text()).group(1)
    if version != np.__version__:
        pytest.skip(f"the page was generated with numpy {version}, this is {np.__version__}")
    assert PAGE.read_text() == render()


def test_every_supported_numpy_function_is_in_the_table():
    """The supported lists come from the table's rows, never from a list of names."""
    answered = {**numpy_ops.UFUNCS, **numpy_ops.FUNCTIONS}
    for name in coverage()["np"]["supported"]:
        assert getattr(np, name) in answered


@pytest.mark.parametrize("name", sorted(n for n in numpy_ops.REFUSED if "." not in n))
def test_each_refused_function_refuses_with_its_reason(name):
    with pytest.raises(UnsupportedError, match=re.escape(numpy_ops.REFUSED[name][:40])):
        llgrad.jit(lambda a: getattr(np, name)(a))(np.ones(3))
