"""Inspection: every stage of the compiler readable, drawable and comparable.

Oracles: golden printer text (read and checked by hand once), sympy.diff, the numpy
interpreter, native results, a DOT grammar check, and arithmetic counted by hand."""
import html.parser
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
import sympy as sp

import llgrad
from llgrad.compiler.frontend import pytree
from llgrad.compiler.inspection.page import html_report
from llgrad.compiler.dispatch.staging import compile_trace
from llgrad.compiler.passes.pipeline import PASSES
from llgrad.ir import Builder, Graph, TensorType, interpret
from llgrad.ir.errors import LlgradError
from llgrad.ir.printer import format_graph

CHAIN = """
def chain(x):
    a = 2 * x
    b = a + 3
    return b ** 2
"""
MLP = """
def mlp(params, x, y):
    h = np.tanh(x @ params["w1"] + params["b1"])
    out = h @ params["w2"] + params["b2"]
    return np.mean((out - y) ** 2)
"""


def _define(source, name):
    """The function in ``source``, compiled as file ``name``.py, so that the source
    lines the printer shows do not move when this test file is edited."""
    namespace = {"np": np}
    exec(compile(source, f"{name}.py", "exec"), namespace)
    return namespace[name]


def _mlp_args(seed=0):
    rng = np.random.default_rng(seed)
    params = {"w1": rng.normal(size=(3, 4)), "b1": rng.normal(size=4),
              "w2": rng.normal(size=(4, 2)), "b2": rng.normal(size=2)}
    return params, rng.normal(size=(5, 3)), rng.normal(size=(5, 2))


@pytest.fixture(scope="module")
def mlp_trace():
    return llgrad.grad(_define(MLP, "mlp")).trace(*_mlp_args())


CHAIN_FORWARD = """\
def chain(%0: f64[] x) -> (f64[]):
  %1: f64[] = mul 2.0, %0                                                 # chain.py:3
  %2: f64[] = add %1, 3.0                                                 # chain.py:4
  %3: f64[] = mul %2, %2                                                  # chain.py:5
  return %3
"""

CHAIN_BACKWARD = """\
def chain_vjp(%0: f64[] x) -> (f64[], f64[]):
  %1: f64[] = mul 2.0, %0                                                 # chain.py:3
  %2: f64[] = add %1, 3.0                                                 # chain.py:4
  %3: f64[] = mul %2, %2                                                  # chain.py:5
  %4: f64[] = mul 1.0, %2                                                 # chain.py:5  backward
  %5: f64[] = add %4, %4                                                  # chain.py:5  backward: adjoint of %1, %2
  %6: f64[] = mul %5, 2.0                                                 # chain.py:3  backward: adjoint of %0
  return %3, %6
"""

MLP_FORWARD = """\
def mlp(%0: f64[4] params['b1'], %1: f64[2] params['b2'], %2: f64[3,4] params['w1'], %3: f64[4,2] params['w2'], %4: f64[5,3] x, %5: f64[5,2] y) -> (f64[]):
  %6: f64[5,4] = dot_general %4, %2  dims=(((1,),(0,)),((),()))           # mlp.py:3
  %7: f64[5,4] = broadcast_in_dim %0  shape=(5,4) dims=(1,)               # mlp.py:3
  %8: f64[5,4] = add %6, %7                                               # mlp.py:3
  %9: f64[5,4] = tanh %8                                                  # mlp.py:3
  %10: f64[5,2] = dot_general %9, %3  dims=(((1,),(0,)),((),()))          # mlp.py:4
  %11: f64[5,2] = broadcast_in_dim %1  shape=(5,2) dims=(1,)              # mlp.py:4
  %12: f64[5,2] = add %10, %11                                            # mlp.py:4
  %13: f64[5,2] = sub %12, %5                                             # mlp.py:5
  %14: f64[5,2] = mul %13, %13                                            # mlp.py:5
  %15: f64[] = reduce_sum %14  axes=(0,1)                                 # mlp.py:5
  %16: f64[] = div %15, 10.0                                              # mlp.py:5
  return %16
"""

MLP_BACKWARD = """\
def mlp_vjp(%0: f64[4] params['b1'], %1: f64[2] params['b2'], %2: f64[3,4] params['w1'], %3: f64[4,2] params['w2'], %4: f64[5,3] x, %5: f64[5,2] y) -> (f64[], f64[4], f64[2], f64[3,4], f64[4,2]):
  %6: f64[5,4] = dot_general %4, %2  dims=(((1,),(0,)),((),()))           # mlp.py:3
  %7: f64[5,4] = broadcast_in_dim %0  shape=(5,4) dims=(1,)               # mlp.py:3
  %8: f64[5,4] = add %6, %7                                               # mlp.py:3
  %9: f64[5,4] = tanh %8                                                  # mlp.py:3
  %10: f64[5,2] = dot_general %9, %3  dims=(((1,),(0,)),((),()))          # mlp.py:4
  %11: f64[5,2] = broadcast_in_dim %1  shape=(5,2) dims=(1,)              # mlp.py:4
  %12: f64[5,2] = add %10, %11                                            # mlp.py:4
  %13: f64[5,2] = sub %12, %5                                             # mlp.py:5
  %14: f64[5,2] = mul %13, %13                                            # mlp.py:5
  %15: f64[] = reduce_sum %14  axes=(0,1)                                 # mlp.py:5
  %16: f64[] = div %15, 10.0                                              # mlp.py:5
  %17: f64[] = div 1.0, 10.0                                              # mlp.py:5  backward
  %18: f64[] = mul 1.0, %17                                               # mlp.py:5  backward: adjoint of %15
  %19: f64[1,1] = reshape %18  shape=(1,1)                                # mlp.py:5  backward
  %20: f64[] = reshape %19  shape=()                                      # mlp.py:5  backward
  %21: f64[5,2] = broadcast_in_dim %20  shape=(5,2) dims=()               # mlp.py:5  backward: adjoint of %14
  %22: f64[5,2] = mul %21, %13                                            # mlp.py:5  backward
  %23: f64[5,2] = add %22, %22                                            # mlp.py:5  backward: adjoint of %10, %11, %12, %13
  %24: f64[5,4] = dot_general %23, %3  dims=(((1,),(1,)),((),()))         # mlp.py:4  backward: adjoint of %9
  %25: f64[5,4] = mul %9, %9                                              # mlp.py:3  backward
  %26: f64[5,4] = sub 1.0, %25                                            # mlp.py:3  backward
  %27: f64[5,4] = mul %24, %26                                            # mlp.py:3  backward: adjoint of %6, %7, %8
  %28: f64[4] = reduce_sum %27  axes=(0,)                                 # mlp.py:3  backward: adjoint of %0
  %29: f64[2] = reduce_sum %23  axes=(0,)                                 # mlp.py:4  backward: adjoint of %1
  %30: f64[3,4] = dot_general %4, %27  dims=(((0,),(0,)),((),()))         # mlp.py:3  backward: adjoint of %2
  %31: f64[4,2] = dot_general %9, %23  dims=(((0,),(0,)),((),()))         # mlp.py:4  backward: adjoint of %3
  return %16, %28, %29, %30, %31
"""


def test_chain_rule_forward_and_backward_print_as_golden_text():
    t = llgrad.grad(_define(CHAIN, "chain"), backend="interpret").trace(1.0)
    assert str(t.ir) + "\n" == CHAIN_FORWARD
    assert str(t.backward) + "\n" == CHAIN_BACKWARD


def test_mlp_forward_and_backward_print_as_golden_text(mlp_trace):
    assert str(mlp_trace.ir) + "\n" == MLP_FORWARD
    assert str(mlp_trace.backward) + "\n" == MLP_BACKWARD


def test_every_gradient_is_annotated_as_the_adjoint_of_its_argument(mlp_trace):
    joint = mlp_trace.backward
    names: dict = {}
    lines = format_graph(joint, names=names).splitlines()
    for param, grad in zip(joint.inputs, joint.outputs[1:]):
        line = next(x for x in lines if x.startswith(f"  {names[id(grad)]}:"))
        assert re.search(rf"backward: adjoint of (%\d+, )*{names[id(param)]}\b", line), line


# Random scalar expressions in x and y whose constants are leaves with exact binary
# floats: every operation has x or y in an operand, so no constant is computed in
# floating point and llgrad's graph holds exactly sympy's numbers.
UNARY = ["F.sin({})", "F.cos({})", "F.exp({})", "F.tanh({})", "F.log(1 + ({})**2)",
         "F.sqrt(1 + ({})**2)", "({})**3", "-({})"]
BINARY = ["({}) + ({})", "({}) - ({})", "({}) * ({})", "({}) / (2 + ({})**2)"]


def _random_expression(rng, depth):
    """(source text over ``F`` = numpy or sympy, whether it contains x or y)."""
    if depth == 0 or rng.random() < 0.2:
        leaf = str(rng.choice(["x", "y", "x", "y", "0.5", "2.5"]))
        return leaf, leaf in "xy"
    if rng.random() < 0.5:
        text, has_var = _random_expression(rng, depth - 1)
        if not has_var:
            text, has_var = str(rng.choice(["x", "y"])), True
        return str(rng.choice(UNARY)).format(text), True
    (a, va), (b, vb) = _random_expression(rng, depth - 1), _random_expression(rng, depth - 1)
    if not (va or vb):
        b = str(rng.choice(["x", "y"]))
    return str(rng.choice(BINARY)).format(a, b), True


@pytest.mark.parametrize("seed", range(20))
def test_to_sympy_of_the_backward_graph_is_sympys_derivative(seed):
    rng = np.random.default_rng(seed)
    text, has_var = _random_expression(rng, 3)
    while not has_var:
        text, has_var = _random_expression(rng, 3)
    x, y = sp.symbols("x y", real=True)
    expected = sp.nsimplify(eval(text, {"F": sp, "x": x, "y": y}), rational=True)
    fn = eval(f"lambda x, y: {text}", {"F": np})
    trace = llgrad.grad(fn, argnums=(0, 1), backend="interpret").trace(0.3, 0.7)
    value, dx, dy = (sp.nsimplify(e, rational=True)
                     for e in (trace.to_sympy(0), *trace.to_sympy()))   # grad: the gradients
    assert sp.simplify(value - expected) == 0, text
    assert sp.simplify(dx - sp.diff(expected, x)) == 0, text
    assert sp.simplify(dy - sp.diff(expected, y)) == 0, text


def test_stats_count_the_duplicates_cse_merges():
    ty = TensorType((3,), "float64")
    b1, b2 = Builder(), Builder()
    x = b1.parameter(index=0, type=ty, name="x")
    left = b1.mul(b1.exp(x), b1.sin(x))
    right = b2.mul(b2.exp(x), b2.sin(x))   # built apart: 3 duplicate nodes (exp, sin, mul)
    forward = Graph([x], [b1.reduce_sum(b1.add(left, right), axes=(0,))], name="dup")
    assert forward.count("exp") == 2
    trace = compile_trace(forward, None, backend="interpret")
    assert trace.stats["cse_merges"] == 3
    assert trace.stats["cse_nodes"] == trace.stats["forward_nodes"] - 3
    assert trace.optimized.count("exp") == 1


def test_stats_flops_and_bytes_of_a_matmul_are_counted_by_hand():
    a, b = np.ones((5, 3)), np.ones((3, 4))
    stats = llgrad.jit(lambda u, v: u @ v).trace(a, b).stats
    assert stats["flops"] == 2 * 5 * 4 * 3
    assert stats["bytes_moved"] == (5 * 3 + 3 * 4 + 5 * 4) * 8
    assert stats["joint_nodes"] is None and stats["kernels"] == 1


def test_stats_print_as_a_table_of_every_stage(mlp_trace):
    text = str(mlp_trace.stats)
    for row in ["trace", "autodiff", *(name for name, _ in PASSES), "compile",
                "fused kernels", "CSE merges", "DCE removals", "flops", "bytes moved", "arena bytes"]:
        assert re.search(rf"^{row}\s+\d", text, re.M), (row, text)
    assert mlp_trace.stats["arena_bytes"] == mlp_trace.executable.arena_bytes
    assert mlp_trace.stats["kernels"] == len(mlp_trace.kernels.splitlines())


def test_dce_removals_count_what_reverse_mode_and_simplify_left_dead():
    # d/dx (x * c) builds the adjoints of both operands, and the one of c is dropped;
    # simplify turns the adjoint 1.0 * c into c, and the literal 1.0 is left dead
    trace = llgrad.grad(lambda x, c: x * c, backend="interpret").trace(2.0, 3.0)
    assert trace.backward.pruned == 1
    assert trace.stats["dce_removals"] == 2
    assert trace.optimized.outputs == (trace.optimized.inputs[1],)   # grad runs d/dx = c only


def test_passes_run_in_order_and_each_keeps_the_function(mlp_trace):
    assert [p.name for p in mlp_trace.passes] == [name for name, _ in PASSES]
    last = mlp_trace.passes[-1].graph   # what runs: its outputs from the first one grad returns
    assert mlp_trace.optimized.outputs == last.outputs[len(last.outputs) - len(
        mlp_trace.optimized.outputs):]
    leaves = pytree.flatten(_mlp_args())[0]
    want = interpret(mlp_trace.backward, *leaves)
    for p in mlp_trace.passes:
        for got, expected in zip(interpret(p.graph, *leaves), want):
            np.testing.assert_allclose(got, expected, rtol=1e-12, err_msg=p.name)


def test_optimized_graph_shows_its_fusion_kernels(mlp_trace):
    text = str(mlp_trace.optimized)
    kernels = mlp_trace.kernels.splitlines()
    for k in range(len(kernels)):
        if not kernels[k].startswith("copy"):
            assert re.search(rf"  kernel {k}$", text, re.M), k
    assert "fused into kernel" in text


def test_residuals_are_the_forward_values_the_backward_pass_reads(mlp_trace):
    residuals = {r.op: r for r in mlp_trace.residuals}
    assert sorted(residuals) == ["sub", "tanh"]   # h (for dW2 and tanh') and out - y
    assert residuals["tanh"].type.shape == (5, 4) and residuals["tanh"].nbytes == 5 * 4 * 8
    assert residuals["sub"].source == "mlp.py:5"
    assert f"{residuals['tanh'].name}: f64[5,4] = tanh" in str(mlp_trace.optimized)


DOT_LINE = re.compile(
    r'\s*(rankdir=\w+;|node \[.*\];|\w+ \[label=".*", (fillcolor="#[0-9a-f]{6}"'
    r'|shape=plaintext, style="")\];|\w+ -> \w+;)')


def _check_dot(text):
    """A grammar check of the DOT subset to_dot writes: the graph statement, then node,
    edge and attribute statements, edges only between declared nodes."""
    lines = text.splitlines()
    assert re.fullmatch(r'digraph "[^"]*" \{', lines[0]) and lines[-1] == "}"
    declared = set()
    for line in lines[1:-1]:
        assert DOT_LINE.fullmatch(line), line
        if "->" in line:
            a, b = re.findall(r"\w+", line)
            assert a in declared and b in declared, line
        elif "[label=" in line:
            declared.add(line.split()[0])


def test_dot_output_parses_and_names_every_node(mlp_trace, tmp_path):
    path = tmp_path / "mlp.dot"
    text = mlp_trace.to_dot(path)
    assert path.read_text() == text
    _check_dot(text)
    names: dict = {}
    format_graph(mlp_trace.backward, names=names)
    labels = re.findall(r'label="(%\d+) ', text)
    assert sorted(labels) == sorted(names.values())


def test_dot_output_parses_with_the_graphviz_package(mlp_trace):
    graphviz = pytest.importorskip("graphviz", reason="the graphviz Python package "
                                                      "(optional) is not installed")
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot program is not installed")
    svg = graphviz.Source(mlp_trace.to_dot()).pipe(format="svg").decode()
    assert svg.count('class="node"') == mlp_trace.to_dot().count("[label=")


def test_render_draws_with_dot_or_says_it_is_missing(mlp_trace, tmp_path):
    path = tmp_path / "mlp.svg"
    if shutil.which("dot"):
        mlp_trace.render(path)
        assert "<svg" in path.read_text()
    else:
        with pytest.raises(LlgradError, match="Graphviz's `dot` program"):
            mlp_trace.render(path)
        assert not path.exists()


FAKE_DOT = """#!/bin/sh
# stands in for Graphviz: an SVG that says which format was asked for and how many
# DOT lines came in on stdin
lines=$(wc -l)
printf '<?xml version="1.0"?>\\n<!DOCTYPE svg>\\n<svg><text>%s %s</text></svg>\\n' "$1" "$lines"
"""


@pytest.fixture
def fake_dot(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dot").write_text(FAKE_DOT)
    (bin_dir / "dot").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


def test_render_and_the_html_page_pipe_the_dot_text_through_dot(mlp_trace, tmp_path,
                                                                 fake_dot):
    n_lines = mlp_trace.to_dot().count("\n")
    path = mlp_trace.render(tmp_path / "mlp.svg")
    assert f"<text>-Tsvg {n_lines}</text>" in open(path).read()
    page = html_report(mlp_trace, "mlp")
    assert page.count("<svg><text>-Tsvg") == 2 and "<?xml" not in page  # inline, twice


def test_as_python_runs_and_equals_the_native_result(mlp_trace):
    source = mlp_trace.as_python()
    namespace: dict = {}
    exec(compile(source, "mlp_vjp.py", "exec"), namespace)
    leaves = pytree.flatten(_mlp_args())[0]
    got = namespace["mlp_vjp"](*leaves)
    want = mlp_trace.executable(*leaves)
    assert len(got) == 5 and len(want) == 4   # grad's native code leaves out the value
    for g, w in zip(got[1:], want):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-14)
    body = [line for line in source.splitlines() if re.match(r"    v\d+ = ", line)]
    assert len(body) == len(MLP_BACKWARD.splitlines()) - 2  # the def and return lines
    assert all("mlp.py:" in line for line in body)


def test_as_python_keeps_dtypes_and_array_constants():
    big = np.arange(40.0, dtype=np.float32).reshape(5, 8)
    trace = llgrad.jit(lambda v: (v * np.float32(2.0) + big).sum(axis=0)).trace(
        np.ones((5, 8), np.float32))
    namespace: dict = {}
    exec(trace.as_python(), namespace)
    got = namespace["lambda_"](np.ones((5, 8), np.float32))[0]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, (2.0 + big).sum(axis=0))


def test_llvm_ir_before_and_after_optimisation_and_asm(mlp_trace):
    assert "define void" in mlp_trace.llvm_ir
    assert "define void" in mlp_trace.llvm_ir_optimized
    assert mlp_trace.llvm_ir != mlp_trace.llvm_ir_optimized
    assert mlp_trace.asm.strip()


def test_native_code_of_an_interpreted_trace_is_a_clear_error():
    trace = llgrad.grad(_define(CHAIN, "chain"), backend="interpret").trace(1.0)
    with pytest.raises(LlgradError, match="backend='interpret'.*llvm_ir"):
        trace.llvm_ir


class _PageCheck(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.sections, self.external = [], []
        self._in_tab = False

    def handle_starttag(self, tag, attrs):
        self._in_tab = tag == "button"
        self.external += [v for k, v in attrs if k in ("src", "href")]

    def handle_data(self, data):
        if self._in_tab:
            self.sections.append(data)
            self._in_tab = False


def test_html_report_has_every_stage_and_nothing_external(mlp_trace):
    page = html_report(mlp_trace, "mlp")
    check = _PageCheck()
    check.feed(page)
    assert check.external == []
    for stage in ["forward IR", "joint graph", "optimised + kernels", "graph drawings",
                  "stats", "as numpy", "LLVM IR", "LLVM IR after O3", "assembly",
                  *(f"after {name}" for name, _ in PASSES)]:
        assert stage in check.sections, stage
    assert "backward: adjoint of" in page


def _chromium():
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(n)), None)


def test_html_report_opens_in_headless_chromium(mlp_trace, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium (chromium, chromium-browser, google-chrome) on PATH")
    path = tmp_path / "report.html"
    path.write_text(html_report(mlp_trace, "mlp"))
    done = subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox",
                           "--dump-dom", path.as_uri()], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "joint graph" in done.stdout
