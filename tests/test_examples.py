"""The examples do what their docstrings promise."""
import os
import re
import shutil
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


def _needs_digits():
    pytest.importorskip("sklearn", reason="scikit-learn (optional, examples extra) is not "
                                          "installed: the digits data set ships with it")


def _example(name):
    """Import an example module from examples/."""
    sys.path.insert(0, EXAMPLES)
    try:
        return __import__(name)
    finally:
        sys.path.remove(EXAMPLES)


def _digits_example(name):
    """Import an example that needs scikit-learn's bundled digits, or skip."""
    _needs_digits()
    return _example(name)


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


def test_export_c_trains_the_digits_mlp_from_c(tmp_path):
    """examples/export_c: export (Python), make (C), train and test (C alone)."""
    _needs_digits()
    for tool in (os.environ.get("CC", "cc"), "make", "ar"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed: building the C example needs a C "
                        f"compiler, make and ar")
    folder = os.path.join(EXAMPLES, "export_c")

    def run(*command):
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stderr}"
        return done.stdout
    run(sys.executable, os.path.join(folder, "export.py"), str(tmp_path))
    run("make", "-C", folder, f"BUILD={tmp_path}")
    out = run(str(tmp_path / "train_digits"))
    losses = [float(x) for x in re.findall(r"loss (\d+\.\d+)", out)]
    assert len(losses) == 20 and losses[-1] < 0.2 * losses[0]
    accuracy = float(re.search(r"test accuracy (\d\.\d+)", out).group(1))
    assert accuracy > 0.9, out


def test_char_lstm_loss_falls_and_it_samples_text():
    """The scan-over-time LSTM trained by llgrad.train: the loss falls well below a
    uniform guess's, and the sample is text of the training alphabet."""
    char_lstm = _example("char_lstm")
    per_epoch, text = char_lstm.main(epochs=3, show=False)
    assert per_epoch[0] < np.log(len(char_lstm.VOCAB)) and per_epoch[-1] < 0.8 * per_epoch[0]
    assert len(text) == 201 and set(text) <= set(char_lstm.VOCAB)


def test_ode_adjoint_gradient_matches_finite_differences():
    ode_adjoint = _example("ode_adjoint")
    (d_state0, d_theta), _, error = ode_adjoint.main(steps=200, show=False)
    assert error < 1e-6 and np.all(np.isfinite(d_theta)) and np.any(d_state0 != 0)
