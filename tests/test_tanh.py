"""tanh's native code is within a few ulp of numpy's over every kind of input, and so
are its derivatives and the models built on it.

tanh lowers to call-free IR (llgrad/compiler/codegen/math.py: a reduction by ln2/2, an
odd polynomial and one division) for float64 and float32, with fast-math flags or
without and whether libmvec is loaded or not; the sweep covers each, vector lanes and
scalar tail elements (the sweep's length is odd), and the inputs where a rewrite of
tanh goes wrong: ±0, tiny and subnormal numbers (cancellation), the middle range with
every reduction step k, large ones (overflow of exp), ±inf and NaN.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import sympy as sp

import llgrad
from benchmarks import workloads
from llgrad.compiler.codegen.build import compile_graph
from llgrad.ir import Builder, Graph, TensorType
from llgrad.llvm import fp_env

#: the bound tests/test_codegen.py holds every transcendental op to (8 eps relative),
#: in ulp of the result (measured: 3 ulp at most for float64 and float32)
MAX_ULP = 8
#: the compile options a sweep runs under
MODES = {"default": {}, "fastmath": {"fastmath": True}, "no-libmvec": {"libmvec": False}}


def _sweep(dtype):
    info = np.finfo(dtype)
    tiny, sub = float(info.tiny), float(info.smallest_subnormal)
    magnitudes = np.concatenate([
        np.geomspace(sub, tiny, 200),                 # subnormal
        np.geomspace(tiny, 1e-3, 2000),               # tiny: tanh(x) ~ x
        np.linspace(1e-3, 30.0, 40001),               # the whole curved range
        np.geomspace(30.0, float(info.max) / 4, 500),  # saturated
        np.log(2) / 4 * np.arange(1, 200),            # where the reduction step k changes
        [0.0, sub, tiny, 0.5, 0.6, 0.625, 1.0, 9.0, 9.01, 19.0, 22.0, 22.1, 354.0, 356.0,
         710.0, 711.0, float(info.max), np.inf],
    ]).astype(dtype)
    x = np.concatenate([magnitudes, -magnitudes, [np.nan]]).astype(dtype)
    return x if len(x) % 2 else x[:-1]   # odd, so a scalar tail runs after vector lanes


def _ulps(got, want):
    """Distance in units of the last place of the numpy result (exact where both agree)."""
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    spacing = np.spacing(np.abs(want).astype(want.dtype))
    with np.errstate(invalid="ignore"):
        return np.where(same, 0.0, np.abs(got.astype(np.float64) - want) / spacing)


def _flushed(values):
    """What fastmath's FTZ and DAZ make of ``values`` (llgrad/llvm/fp_env.py): each
    subnormal a zero of its sign."""
    zero = np.copysign(np.zeros_like(values), values)
    return np.where(np.abs(values) < np.finfo(values.dtype).tiny, zero, values)


def _compiled_tanh(x, **options):
    b = Builder()
    p = b.parameter(index=0, type=TensorType(x.shape, x.dtype.name), name="x")
    return compile_graph(Graph([p], [b.emit("tanh", p)], name="tanh"), **options)


@pytest.fixture(scope="module", params=[(d, m) for d in ("float64", "float32") for m in MODES],
                ids=lambda p: f"{p[0]}-{p[1]}")
def tanh_native(request):
    dtype, mode = request.param
    x = _sweep(dtype)
    (got,) = _compiled_tanh(x, **MODES[mode])(x)
    if mode == "fastmath" and fp_env.available():   # subnormals flushed, read and written
        return x, got, _flushed(np.tanh(_flushed(x)))
    return x, got, np.tanh(x)


def test_tanh_is_within_the_ulp_bound_of_numpy(tanh_native):
    x, got, want = tanh_native
    ulps = _ulps(got, want)
    worst = int(np.argmax(ulps))
    assert ulps[worst] <= MAX_ULP, (x[worst], got[worst], want[worst])


def test_tanh_keeps_signed_zero_nan_and_saturates(tanh_native):
    x, got, want = tanh_native
    assert np.array_equal(np.signbit(got), np.signbit(want))
    assert np.array_equal(np.isnan(got), np.isnan(x))
    big = np.abs(x) >= 30
    assert np.array_equal(got[big], np.sign(x[big]))
    small = (np.abs(x) < np.finfo(x.dtype).tiny) & (x != 0)   # subnormal: tanh(x) == x
    assert np.array_equal(got[small], want[small])             # (fastmath: a signed 0)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_tanh_loop_calls_no_library_function(dtype):
    """What makes it fast: the vectorised loop keeps every lane in registers."""
    x = np.linspace(-3, 3, 1601, dtype=dtype)
    ir_text = llgrad.jit(np.tanh).trace(x).llvm_ir_optimized
    assert not re.search(r"call .*@(tanh|expm1|_ZGV)", ir_text)
    assert re.search(r"fdiv <\d+ x (double|float)>", ir_text)   # it did vectorise


def _points():
    """Each regime of the derivative 1 - tanh²: tiny, curved, each reduction step, flat."""
    magnitudes = np.concatenate([np.geomspace(1e-8, 0.1, 20), np.linspace(0.1, 6.0, 60),
                                 np.log(2) / 4 * np.arange(1, 30) + 1e-3, [9.0, 12.0, 18.0]])
    return np.concatenate([magnitudes, -magnitudes, [0.0]])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_tanh_gradient_is_sympys_derivative(dtype):
    s = sp.Symbol("s")
    derivative = sp.lambdify(s, sp.diff(sp.tanh(s), s), "mpmath")
    x = _points().astype(dtype)
    got = llgrad.grad(lambda v: np.tanh(v).sum())(x)
    want = np.array([float(derivative(float(v))) for v in x])
    eps = float(np.finfo(dtype).eps)
    # 1 - t² inherits t's few-ulp error times 2|t|: an absolute bound of a few eps
    np.testing.assert_allclose(got, want, rtol=4 * eps, atol=2 * MAX_ULP * eps)


def test_tanh_gradient_matches_central_differences():
    x = _points()
    got = llgrad.grad(lambda v: np.tanh(v).sum())(x)
    forward = llgrad.jit(np.tanh)
    h = 1e-5 * np.maximum(1.0, np.abs(x))
    difference = (forward(x + h) - forward(x - h)) / (2 * h)
    np.testing.assert_allclose(got, difference, rtol=1e-8, atol=1e-10)


def test_tanh_second_derivative_is_sympys():
    s = sp.Symbol("s")
    second = sp.lambdify(s, sp.diff(sp.tanh(s), s, 2), "mpmath")
    x = _points()
    got = llgrad.grad(lambda v: llgrad.grad(lambda w: np.tanh(w).sum())(v).sum())(x)
    want = np.array([float(second(float(v))) for v in x])
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-14)


def test_tiny_mlp_gradient_equals_the_hand_written_backprop():
    """Workload 2 of the benchmark suite: two tanh layers, their derivatives reused."""
    workload = next(w for w in workloads.WORKLOADS if w.key == "tiny_mlp")
    (problem,) = workload.problems(True)
    got = llgrad.grad(lambda p, *data: workload.loss(np, p, *data))(problem.params,
                                                                       *problem.data)
    want = workloads.reference_gradient(workload, problem)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-12, atol=1e-15,
                                   err_msg=name)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_loop_free_code_calls_libm_tanh_batched_into_vector_calls(dtype):
    """Optimising the inline form at each of 50 scalar tanh cost more than it saved."""
    f = llgrad.jit(lambda v: [np.tanh(x) for x in v])
    xs = [np.asarray(v, dtype) for v in np.linspace(-3, 3, 8)]
    ir_text = f.trace(xs).llvm_ir_optimized
    assert "fdiv" not in ir_text   # no inline form
    if llgrad.runtime.engine.vector_isas():
        assert re.search(r"call .*@_ZGV\w+_tanhf?\(", ir_text)
    got = np.array(f(xs), dtype)
    want = np.tanh(np.array(xs))
    assert _ulps(got, want).max() <= MAX_ULP


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_scalar_tanh_keeps_signed_zero_nan_and_saturates(dtype):
    f = llgrad.jit(np.tanh)
    x = _sweep(dtype)[::97]
    got = np.array([f(v) for v in x], dtype)
    want = np.tanh(x)
    assert _ulps(got, want).max() <= MAX_ULP
    assert np.array_equal(np.signbit(got), np.signbit(want))
    assert np.array_equal(np.isnan(got), np.isnan(x))
    assert np.array_equal(got[np.abs(x) >= 30], np.sign(x[np.abs(x) >= 30]))
