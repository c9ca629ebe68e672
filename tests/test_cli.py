"""python -m llgrad: every stage of a user's function, from the command line."""
import textwrap

import pytest

from llgrad.__main__ import main

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
    assert "define void" in out and "forward_nodes" in out


@pytest.mark.parametrize("stage,marker", [("asm", "ret"), ("dot", "digraph"), ("opt", "define"),
                                          ("kernels", "fused [")])
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


def test_unreadable_type_is_explained(model):
    with pytest.raises(SystemExit, match="cannot read the type"):
        main(["inspect", model, "params=f64(3)", "x=f64[4,3]"])


def test_missing_function_is_explained(tmp_path):
    path = tmp_path / "model.py"
    path.write_text(SOURCE)
    with pytest.raises(SystemExit, match="no function 'nope'"):
        main(["inspect", f"{path}:nope"])
