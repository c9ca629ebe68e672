"""The examples do what their docstrings promise."""
import os
import subprocess
import sys

import numpy as np
import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def test_quickstart_runs_and_prints_the_chain_rule_result():
    out = subprocess.run([sys.executable, os.path.join(EXAMPLES, "quickstart.py")],
                         capture_output=True, text=True, check=True, timeout=300).stdout
    assert "dc/dx at x = 1: 20.0" in out
    assert "define void" in out  # the LLVM IR is shown


def _digits_example(name):
    """Import an example that needs scikit-learn's bundled digits, or skip."""
    pytest.importorskip("sklearn", reason="scikit-learn (optional, examples extra) is not "
                                          "installed: the digits data set ships with it")
    sys.path.insert(0, EXAMPLES)
    try:
        return __import__(name)
    finally:
        sys.path.remove(EXAMPLES)


def test_digits_mlp_reaches_95_percent():
    train_digits = _digits_example("train_digits")
    accuracy, result = train_digits.main(progress=False)
    assert accuracy >= 0.95
    assert np.all(np.isfinite(result.loss_history))
    assert result.loss_history[-20:].mean() < 0.2 * result.loss_history[:20].mean()


def test_vanishing_gradients_are_measured(tmp_path):
    """The deep plain-tanh stack's first hidden layer gets a far smaller gradient than
    the residual ReLU stack's: the example's story, as numbers."""
    vanishing_gradients = _digits_example("vanishing_gradients")
    norms = vanishing_gradients.main(epochs=2, plot=str(tmp_path / "plot.png"))
    tanh, residual = norms["tanh, plain"], norms["ReLU + residual"]
    assert tanh.shape == residual.shape and tanh.shape[1] == vanishing_gradients.DEPTH
    assert tanh[:, 0].mean() < 0.01 * residual[:, 0].mean()
    assert tanh[:, 0].mean() < tanh[:, -1].mean()  # shrinking towards the input
