"""python -m llgrad: every stage of a user's function, from the command line."""
import os
import subprocess
import sys
import textwrap

import pytest

from llgrad.__main__ import STAGES, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MLP = os.path.join(ROOT, "examples", "mlp.py")

SOURCE = textwrap.dedent("""
    import numpy as np

    def loss(params, x):
        return np.sum(np.tanh(x @ params["w"] + params["b"]) ** 2)
""")


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "model.py"
    path.write_text(SOURCE)
    return f"{path}:loss"


TYPES = ["params={w:f64[3,2],b:f64[2]}", "x=f64[4,3]"]


def test_inspect_prints_forward_backward_and_llvm(model, capsys):
    main(["inspect", model, *TYPES])
    out = capsys.readouterr().out
    assert "def loss(" in out and "def loss_vjp(" in out
    assert "params['w']" in out and "model.py:5" in out
    assert "define void" in out and "CSE merges" in out
    for stage in STAGES:
        assert f";; ---- {stage} ----" in out


@pytest.mark.parametrize("stage,marker", [("asm", "ret"), ("dot", "digraph"), ("opt", "define"),
                                          ("kernels", "fused ["), ("python", "np.tanh("),
                                          ("residuals", "tanh, 64 bytes"),
                                          ("passes", ";; after dce")])
def test_inspect_single_stage(model, stage, marker, capsys):
    main(["inspect", model, *TYPES, "--stage", stage])
    assert marker in capsys.readouterr().out


def test_inspect_jit_has_no_backward(model, capsys):
    main(["inspect", model, *TYPES, "--jit", "--stage", "backward"])
    assert "no backward graph" in capsys.readouterr().out


def test_bench_reports_native_and_interpreter(model, capsys):
    main(["bench", model, *TYPES, "--repeats", "3"])
    out = capsys.readouterr().out
    assert "native:" in out and "interpret:" in out


def test_bench_profile_prints_every_kernel(model, capsys):
    main(["bench", model, *TYPES, "--repeats", "3", "--profile"])
    out = capsys.readouterr().out
    assert "profile of loss" in out and "dot_general f64[4,2]" in out
    assert "outside kernels" in out


def test_unreadable_type_is_explained(model):
    with pytest.raises(SystemExit, match="cannot read the type"):
        main(["inspect", model, "params=f64(3)", "x=f64[4,3]"])


def test_missing_function_is_explained(tmp_path):
    path = tmp_path / "model.py"
    path.write_text(SOURCE)
    with pytest.raises(SystemExit, match="no function 'nope'"):
        main(["inspect", f"{path}:nope"])


def test_inspect_takes_the_example_args_of_the_file(capsys):
    main(["inspect", f"{MLP}:loss", "--stage", "backward"])
    out = capsys.readouterr().out
    assert "def loss_vjp(" in out and "f64[5,3] x" in out      # EXAMPLE_ARGS' shapes
    assert "backward: adjoint of" in out and "mlp.py:13" in out


def test_inspect_differentiates_the_chosen_arguments(capsys):
    main(["inspect", f"{MLP}:loss", "--argnums", "0", "--stage", "backward"])
    out = capsys.readouterr().out
    assert "-> (f64[], f64[4], f64[2], f64[3,4], f64[4,2]):" in out   # params only


def test_inspect_takes_shapes(tmp_path, capsys):
    path = tmp_path / "f.py"
    path.write_text("import numpy as np\n\ndef f(a, b, s):\n    return np.sum(a @ b) * s\n")
    main(["inspect", f"{path}:f", "--shapes", "3x2,2x4,()", "--stage", "ir"])
    out = capsys.readouterr().out
    assert "f64[3,2] a" in out and "f64[2,4] b" in out and "f64[] s" in out


def test_inspect_writes_one_html_page(tmp_path, capsys):
    page = tmp_path / "report.html"
    main(["inspect", f"{MLP}:loss", "--stage", "stats", "--html", str(page)])
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and "joint graph" in text
    assert f";; wrote {page}" in capsys.readouterr().out


@pytest.mark.parametrize("spec,message", [
    ("examples/nope.py:loss", "no such file: examples/nope.py"),
    ("examples/mlp.py:nope", "has no function 'nope' (it defines: loss)"),
    ("examples/mlp.py", "name the function as FILE.py:FUNCTION"),
])
def test_cli_errors_are_one_clear_line_and_a_failing_exit_code(spec, message):
    done = subprocess.run([sys.executable, "-m", "llgrad", "inspect", spec], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert message in done.stderr and "Traceback" not in done.stderr


def test_inputs_that_do_not_fit_are_explained():
    with pytest.raises(SystemExit, match=r"2 example inputs do not fit loss\(params, x, y\)"):
        main(["inspect", f"{MLP}:loss", "--shapes", "3x2,4x3"])
    with pytest.raises(SystemExit, match=r"(?s)TypeError at mlp.py:13: .*inputs: \(float64"):
        main(["inspect", f"{MLP}:loss", "--shapes", "3x2,4x3,2x2"])
    with pytest.raises(SystemExit, match="cannot read the shape '3y2'"):
        main(["inspect", f"{MLP}:loss", "--shapes", "3y2"])


def test_missing_example_inputs_are_explained(model):
    with pytest.raises(SystemExit, match="no example inputs for loss.*EXAMPLE_ARGS"):
        main(["inspect", model])


def test_inspect_never_imports_the_benchmark_suite():
    """The suite's options are added to the parser for ``bench`` alone: inspecting a
    function must not pay for importing benchmarks/ (nor depend on it)."""
    code = ("import sys; from llgrad.__main__ import main; "
            f"main(['inspect', {MLP + ':loss'!r}, '--stage', 'ir']); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'benchmarks'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
