"""llgrad.debug_nans: the first NaN/Inf of a call names its op, pass and line."""
import os
import subprocess
import sys

import numpy
import pytest

import llgrad
import llgrad.numpy as np


def _line(marker):
    with open(__file__) as f:
        for k, text in enumerate(f, 1):
            if marker in text and "_line(" not in text:
                return f"{os.path.basename(__file__)}:{k}"


def forward_log(x):
    return np.sum(np.log(x) * 2.0)   # planted: forward


def single_where(x):
    return np.sum(np.where(x > 0, np.sqrt(x), 0.0))   # planted: backward


def double_where(x):
    return np.sum(np.where(x > 0, np.sqrt(np.where(x > 0, x, 1.0)), 0.0))


@pytest.fixture
def debugging():
    with llgrad.debug_nans(True):
        yield


def test_forward_nan_names_op_pass_and_line(debugging):
    with pytest.raises(FloatingPointError) as caught:
        llgrad.jit(forward_log)(numpy.array([1.0, -1.0]))
    text = str(caught.value)
    assert "log" in text and "forward" in text and _line("planted: forward") in text


def test_backward_nan_names_pass_adjoint_and_line(debugging):
    with pytest.raises(FloatingPointError) as caught:
        llgrad.grad(single_where)(numpy.array([0.0, 1.0]))
    text = str(caught.value)
    assert "backward" in text and "adjoint of parameter x" in text
    assert _line("planted: backward") in text


def test_off_returns_nan_silently():
    x = numpy.array([1.0, -1.0])
    with numpy.errstate(invalid="ignore", divide="ignore"):
        assert numpy.isnan(llgrad.jit(forward_log)(x))
        g = llgrad.grad(single_where)(numpy.array([0.0, 1.0]))
        assert numpy.isnan(g[0]) and g[1] == 0.5


def test_double_where_passes_and_matches_finite_differences(debugging):
    x = numpy.array([0.0, 1.0, 2.5, -3.0])
    g = llgrad.grad(double_where)(x)
    eps = 1e-6
    fd = []
    for k in range(len(x)):
        e = numpy.zeros_like(x)
        e[k] = eps
        fd.append((float(llgrad.jit(double_where)(x + e)) - float(llgrad.jit(double_where)(x - e)))
                  / (2 * eps) if x[k] != 0 else 0.0)
    numpy.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-6)


def test_off_compiles_no_checks():
    assert "nan_status" not in llgrad.jit(forward_log).trace(numpy.ones(2)).llvm_ir


def test_environment_variable():
    code = ("import numpy, llgrad, llgrad.numpy as np\n"
            "try:\n"
            "    llgrad.jit(lambda x: np.sum(np.log(x)))(numpy.array([-1.0]))\n"
            "except FloatingPointError as e:\n"
            "    print('raised', e)\n")
    env = dict(os.environ, LLGRAD_DEBUG_NANS="1")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)
    assert "raised" in done.stdout and "log" in done.stdout, done.stderr
