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


def test_digits_mlp_reaches_95_percent():
    pytest.importorskip("sklearn", reason="scikit-learn (optional, examples extra) is not "
                                          "installed: the digits data set ships with it")
    sys.path.insert(0, EXAMPLES)
    try:
        import train_digits
    finally:
        sys.path.remove(EXAMPLES)
    accuracy, result = train_digits.main(progress=False)
    assert accuracy >= 0.95
    assert np.all(np.isfinite(result.loss_history))
    assert result.loss_history[-20:].mean() < 0.2 * result.loss_history[:20].mean()
