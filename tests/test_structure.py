"""The backward graph is short, readable and shares work with the forward graph; the
test files share helpers through tests/helpers.py, never by importing one another."""
import ast
from pathlib import Path

import numpy as np

import llgrad
from llgrad.compiler.autodiff.reverse import vjp
from llgrad.compiler.passes.cse import cse
from llgrad.compiler.passes.simplify import simplify
from llgrad.ir import Builder, Graph, TensorType, interpret, verify

A = np.random.default_rng(3).normal(size=(3, 4))


def chain(x):
    a = 2 * x
    b = a + 3
    return b ** 2


def test_chain_rule_example_is_twenty(backend):
    assert llgrad.grad(chain, backend=backend)(1.0) == 20.0


def test_chain_rule_backward_graph_is_short_and_readable():
    text = str(llgrad.grad(chain, backend="interpret").trace(1.0).optimized)
    body = [line for line in text.splitlines()[1:] if "return" not in line]
    assert len(body) == 4, text  # a, b; db = b + b; dx = db * 2 (grad never computes c = b²)
    assert "add %2, %2" in text and "mul %3, 2.0" in text
    assert "test_structure.py" in text  # every line says where it came from


def test_tanh_backward_reuses_forward_tanh():
    t = llgrad.grad(lambda x: np.tanh(x).sum(), backend="interpret").trace(A)
    assert t.ir.count("tanh") == 1
    assert t.backward.count("tanh") == 1
    # forward: param, tanh, sum; backward: tanh*tanh, 1 - that (the seed 1.0 folds away)
    assert t.optimized.count("mul") == 1 and t.optimized.count("sub") == 1


def test_sin_and_cos_computed_once_each():
    t = llgrad.grad(lambda x: (np.sin(x) * np.sin(x) + np.sin(x)).sum(),
                    backend="interpret").trace(A)
    assert t.backward.count("sin") == 1
    assert t.backward.count("cos") == 1


def test_cse_merges_graphs_built_apart():
    ty = TensorType((3,), "float64")
    b1, b2 = Builder(), Builder()
    x = b1.parameter(index=0, type=ty, name="x")
    left = b1.exp(x)
    right = b2.exp(x)  # same expression, other builder: a different node
    g = Graph([x], [b1.add(left, b1.mul(right, right))])
    assert g.count("exp") == 2
    merged = cse(g)
    verify(merged)
    assert merged.count("exp") == 1
    np.testing.assert_array_equal(interpret(merged, A[0, :3])[0], interpret(g, A[0, :3])[0])


def test_simplify_removes_exact_identities_only():
    ty = TensorType((4,), "float64")
    b = Builder()
    x = b.parameter(index=0, type=ty, name="x")
    one, zero = b.full(1.0, ty), b.full(0.0, ty)
    kept = b.add(x, zero)                      # x + 0 is not x for x = -0.0: must stay
    y = b.sub(b.mul(b.neg(b.neg(x)), one), zero)   # all exact identities: y is x
    z = b.mul(x, zero)                         # x * 0 is NaN for inf: must stay
    g = simplify(Graph([x], [y, kept, z]))
    verify(g)
    assert g.outputs[0] is x
    assert g.outputs[1].op == "add" and g.outputs[2].op == "mul"
    value = np.array([-0.0, np.inf, 1.5, np.nan])
    with np.errstate(invalid="ignore"):
        wanted = [value, value + 0.0, value * 0.0]
    for got, want in zip(interpret(g, value), wanted):
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(np.signbit(got), np.signbit(want))


def test_simplify_folds_scalar_constants():
    b = Builder()
    x = b.parameter(index=0, type=TensorType((), "float64"), name="x")
    two = b.add(b.const(1.0, "float64"), b.const(1.0, "float64"))
    g = simplify(Graph([x], [b.mul(x, b.mul(two, b.const(3.0, "float64")))]))
    assert "6.0" in str(g) and g.count("add") == 0


def test_joint_graph_differentiates_only_what_depends_on_wrt():
    ty = TensorType((3,), "float64")
    b = Builder()
    x = b.parameter(index=0, type=ty, name="x")
    c = b.parameter(index=1, type=ty, name="c")
    out = b.reduce_sum(b.mul(b.exp(c), x), axes=(0,))
    joint = vjp(Graph([x, c], [out]), [0])
    assert joint.count("exp") == 1  # d/dx needs exp(c) but never d exp(c)/dc


def test_dot_export_colours_forward_and_backward_apart():
    t = llgrad.grad(lambda x: np.tanh(x).sum(), backend="interpret").trace(A)
    dot = t.to_dot()
    assert dot.startswith('digraph "<lambda>_vjp"') and dot.rstrip().endswith("}")
    tanh_line = next(line for line in dot.splitlines() if ' tanh\\n' in line)
    assert "#dbe9f6" in tanh_line  # the forward tanh, reused by the backward pass
    assert any("#fde0c5" in line and ' mul\\n' in line for line in dot.splitlines())
    assert dot.count("->") >= len(t.backward.nodes) - 3


def test_debug_switch_reports_every_pass(monkeypatch, capsys):
    monkeypatch.setenv("LLGRAD_DEBUG", "1")
    llgrad.grad(lambda x: np.tanh(x).sum(), backend="interpret")(A)
    err = capsys.readouterr().err
    for name in ("simplify", "cse", "dce"):
        assert f"llgrad: {name}" in err


TESTS = Path(__file__).resolve().parent


def _is_test_module(dotted):
    return any(part.startswith("test_") for part in dotted.split("."))


def imports_of_test_modules(source):
    """(line, module, statement) for each import of a test_* module in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names if _is_test_module(a.name)]
        elif isinstance(node, ast.ImportFrom):
            package = node.module or ""
            if _is_test_module(package):
                modules = [package]
            elif node.module is None or package.split(".")[-1] == "tests":
                # from . import test_x, from tests import test_x
                modules = [".".join(filter(None, (package, a.name)))
                           for a in node.names if a.name.startswith("test_")]
            else:
                modules = []
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and ast.unparse(node.func) in ("__import__", "import_module",
                                             "importlib.import_module")):
            modules = [node.args[0].value] if _is_test_module(node.args[0].value) else []
        else:
            continue
        found += [(node.lineno, m, ast.get_source_segment(source, node)) for m in modules]
    return sorted(found)


def test_the_import_check_sees_every_way_of_importing_a_test_module():
    source = ("import test_a\nimport tests.test_b as b\nfrom test_c import helper\n"
              "from tests.test_d import x\nfrom tests import test_e, helpers\n"
              "from . import test_f\nimportlib.import_module('test_g')\n"
              "from helpers import arguments\nimport models\n")
    assert [(line, m) for line, m, _ in imports_of_test_modules(source)] == [
        (1, "test_a"), (2, "tests.test_b"), (3, "test_c"), (4, "tests.test_d"),
        (5, "tests.test_e"), (6, "test_f"), (7, "test_g")]


def test_no_test_file_imports_another():
    """What two test files share lives in tests/helpers.py (models in tests/models.py):
    no module of tests/ imports a test_* module, so each test file's names are its own."""
    files = sorted(TESTS.rglob("*.py"))
    assert Path(__file__).resolve() in files and len(files) > 10
    offences = [f"{path.relative_to(TESTS.parent)}:{line} imports {module}: {statement}"
                for path in files
                for line, module, statement in imports_of_test_modules(
                    path.read_text(encoding="utf-8"))]
    assert not offences, "test files import other test files (share through " \
        "tests/helpers.py instead):\n" + "\n".join(offences)
