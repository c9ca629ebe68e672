"""LLGRAD_LOG_COMPILES=1 says why a call compiled; a function that keeps recompiling
warns once."""
import warnings

import numpy as np
import pytest

import llgrad
from llgrad.compiler.dispatch import recompiles


def model(p, x, power=2):
    return np.sum(np.tanh(x @ p["w"]) ** power)


@pytest.fixture
def log(monkeypatch, capsys):
    monkeypatch.setenv("LLGRAD_LOG_COMPILES", "1")
    capsys.readouterr()
    return lambda: [line for line in capsys.readouterr().err.splitlines()
                    if line.startswith("llgrad: compiled")]


def test_each_reason_is_named(log):
    g = llgrad.grad(model, static_argnums=2)
    p = {"w": np.ones((3, 2))}
    calls = [((p, np.ones((4, 3)), 2), "first call"),
             ((p, np.ones((4, 3)), 2), None),                       # cached: no line
             ((p, np.ones((5, 3)), 2), "x: shape float64[4, 3] -> float64[5, 3]"),
             ((p, np.ones((5, 3), np.float32), 2), "x: dtype float64[5, 3] -> float32[5, 3]"),
             ((p, np.ones((5, 3)), 3), "static power: 2 -> 3"),
             (({"w": np.ones((3, 2)), "b": 1.0}, np.ones((5, 3)), 3),
              "pytree structure of p changed")]
    for args, reason in calls:
        g(*args)
        lines = log()
        if reason is None:
            assert lines == []
        else:
            assert len(lines) == 1 and lines[0].endswith(reason), lines
            assert "model() [grad]" in lines[0]


def test_nothing_is_printed_without_the_variable(monkeypatch, capsys):
    monkeypatch.delenv("LLGRAD_LOG_COMPILES", raising=False)
    llgrad.grad(model)({"w": np.ones((3, 2))}, np.ones((2, 3)))
    assert "llgrad: compiled" not in capsys.readouterr().err


def test_a_function_that_keeps_recompiling_warns_once():
    h = llgrad.grad(lambda x: np.sum(x * x))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for n in range(1, recompiles.WARN_AFTER + 4):
            np.testing.assert_allclose(h(np.arange(float(n))), 2 * np.arange(float(n)))
    ours = [w for w in caught if "has been compiled for" in str(w.message)]
    assert len(ours) == 1
    assert f"shape float64[{recompiles.WARN_AFTER}] -> float64[{recompiles.WARN_AFTER + 1}]" \
        in str(ours[0].message)
    assert ours[0].filename == __file__
