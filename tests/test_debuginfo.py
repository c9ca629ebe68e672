"""Debug locations in the generated code (compiler/codegen/debuginfo.py): the user's
lines reach the LLVM IR and the assembly's line table, and nothing else changes.

Oracles: the source lines of the quickstart's own statements (read with ast), and
the machine code of the same module with every debug location removed."""
import ast
import re
from pathlib import Path

import numpy as np
import pytest

import llgrad
from llgrad.compiler.codegen.debuginfo import sources_key
from llgrad.runtime import engine

QUICKSTART = Path(__file__).resolve().parent.parent / "examples" / "quickstart.py"


def _quickstart_loss():
    """The quickstart's ``loss``, compiled from its file (so its lines are the file's),
    without running the rest of the script; and the lines of its statements."""
    tree = ast.parse(QUICKSTART.read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "loss")
    namespace = {"np": np}
    exec(compile(ast.Module([fn], []), str(QUICKSTART), "exec"), namespace)
    return namespace["loss"], {s.lineno for s in fn.body}


@pytest.fixture(scope="module")
def quickstart():
    loss, lines = _quickstart_loss()
    rng = np.random.default_rng(0)
    params = {"w1": rng.normal(size=(64, 128)) * 0.1, "b1": np.zeros(128),
              "w2": rng.normal(size=(128, 10)) * 0.1, "b2": np.zeros(10)}
    x, y = rng.normal(size=(256, 64)), np.eye(10)[rng.integers(0, 10, 256)]
    return llgrad.value_and_grad(loss).trace(params, x, y), lines


def test_the_llvm_ir_carries_every_user_line(quickstart):
    trace, lines = quickstart
    located = {int(m) for m in re.findall(r"!DILocation\(.*?line: (\d+)", trace.llvm_ir)}
    assert lines <= located
    assert 'filename: "quickstart.py"' in trace.llvm_ir


def test_the_assembly_line_table_names_quickstart_py(quickstart):
    trace, lines = quickstart
    files = dict(re.findall(r'\.file\s+(\d+)\s+(?:"[^"]*"\s+)?"([^"]+)"', trace.asm))
    number = next(k for k, name in files.items() if name == "quickstart.py")
    loc_lines = {int(m) for m in re.findall(rf"\.loc\s+{number}\s+(\d+)", trace.asm)}
    assert lines <= loc_lines


def _instructions(llvm_ir: str) -> list[str]:
    """The machine instructions of ``llvm_ir`` optimised for this host, labels and
    directives left out (debug information adds only those)."""
    tm = engine.new_target_machine()
    asm = tm.emit_assembly(engine.optimize(llvm_ir, tm=tm))
    return [line for line in asm.splitlines()
            if line.startswith("\t") and not line.lstrip().startswith(".")]


def test_debug_locations_change_no_instruction(quickstart):
    trace, _ = quickstart
    stripped = re.sub(r",? !dbg !\d+", "", trace.llvm_ir)
    stripped = "\n".join(line for line in stripped.splitlines() if not line.startswith("!"))
    assert "!dbg" not in stripped
    assert _instructions(trace.llvm_ir) == _instructions(stripped)


def test_graphs_differing_only_in_their_lines_have_other_cache_keys():
    def f(x):
        return np.sin(x) * 2.0

    def g(x):

        return np.sin(x) * 2.0

    one = llgrad.jit(f).trace(np.ones(3)).executable.graph
    other = llgrad.jit(g).trace(np.ones(3)).executable.graph
    assert sources_key(one) != sources_key(other)
    assert sources_key(one) == sources_key(llgrad.jit(f).trace(np.ones(3)).executable.graph)
