"""Loop-free code runs independent math calls as libmvec vector calls (issue 6).

The gradient of an expression of a few scalars is straight-line code; codegen/
region.py emits each run of scalar kernels as one block and codegen/vector_calls.py
turns the calls of one function that do not depend on each other into vector calls.
Oracles: numpy (values), central finite differences (gradients) and the same graph
compiled with ``batch_calls=False`` (one scalar libm call each); special values
(±0, ±inf, NaN, huge arguments) must come out as numpy's, sign of zero included.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

import llgrad
from benchmarks import workloads
from llgrad.compiler.codegen.build import compile_graph
from llgrad.runtime import engine

pytestmark = pytest.mark.skipif(not engine.vector_isas(),
                                reason="libmvec or a vector ISA it supports is absent")

#: within this many ulp of numpy (libm and libmvec each stay within a few)
MAX_ULP = 8


def _scalar_calls(ir_text: str, name: str) -> int:
    return len(re.findall(rf"call (?:\w+ )*double @{name}\(", ir_text))


def _vector_calls(ir_text: str, name: str) -> int:
    return len(re.findall(rf"call (?:\w+ )*<\d+ x double> @_ZGV\w+_{name}\(", ir_text))


def _ulps(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    with np.errstate(invalid="ignore"):
        return np.where(same, 0.0, np.abs(got - want) / np.spacing(np.abs(want)))


def _assert_same_specials(got, want):
    """NaN where numpy has NaN, the same infinities, the same sign of every zero."""
    got, want = np.asarray(got), np.asarray(want)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.array_equal(got[np.isinf(want)], want[np.isinf(want)])
    zero = want == 0
    assert np.array_equal(np.signbit(got[zero]), np.signbit(want[zero]))


def _both(trace, args):
    """Outputs of the traced graph compiled with and without batched calls."""
    graph = trace.executable.graph
    arrays = [np.asarray(a, np.float64) for a in args]
    batched, unbatched = compile_graph(graph), compile_graph(graph, batch_calls=False)
    return ([float(o) for o in batched(*arrays)], [float(o) for o in unbatched(*arrays)],
            batched.llvm_ir_optimized)


# -- workload 1 ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def workload_1():
    (problem,) = workloads.scalar_problems(quick=True)
    grad = llgrad.grad(lambda p: workloads.scalar_loss(np, p))
    return grad, problem.params, grad.trace(problem.params).llvm_ir_optimized


def test_workload_1_gradient_runs_its_exp_and_tanh_as_vector_calls(workload_1):
    _, _, ir_text = workload_1
    assert _scalar_calls(ir_text, "exp") == 0 and _scalar_calls(ir_text, "tanh") == 0
    assert _vector_calls(ir_text, "exp") >= 2 and _vector_calls(ir_text, "tanh") >= 2


def test_workload_1_gradient_matches_the_hand_written_one(workload_1):
    grad, params, _ = workload_1
    got, want = grad(params), workloads.scalar_backprop(params)
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-13, abs=1e-15)


# -- random expressions of many terms --------------------------------------------------

#: unary functions with arguments kept where numpy and the derivative are finite
UNARY = {
    "exp": np.exp, "sin": np.sin, "cos": np.cos, "tanh": np.tanh, "expm1": np.expm1,
    "atan": np.arctan, "asinh": np.arcsinh,
    "log": lambda u: np.log(1.5 + u * u), "log1p": lambda u: np.log1p(u * u),
    "pow": lambda u: np.power(1.25 + u * u, 1.3),
}


def _random_expression(seed: int, terms: int):
    rng = np.random.default_rng(seed)
    names = sorted(UNARY)
    chosen = [(names[rng.integers(len(names))], *rng.uniform(-1, 1, 4)) for _ in range(terms)]

    def f(p):
        x, y, z = p["x"], p["y"], p["z"]
        total = np.arctan2(x + 2.0, y * y + 1.0)
        for name, a, b, c, w in chosen:
            total = total + w * UNARY[name](a * x + b * y + c * z)
        return total
    return f


POINT = {"x": 0.37, "y": -0.81, "z": 0.55}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_expression_value_and_gradient_match_numpy_and_finite_differences(seed):
    f = _random_expression(seed, terms=40)
    value, grads = llgrad.value_and_grad(f)(POINT)
    assert value == pytest.approx(f(POINT), rel=1e-13, abs=1e-13)
    h = 1e-6
    for k in POINT:
        up, down = dict(POINT), dict(POINT)
        up[k] += h
        down[k] -= h
        assert grads[k] == pytest.approx((f(up) - f(down)) / (2 * h), rel=1e-7, abs=1e-7)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_expression_batched_matches_unbatched_lowering(seed):
    f = _random_expression(seed, terms=40)
    trace = llgrad.value_and_grad(f).trace(POINT)
    batched, unbatched, ir_text = _both(trace, list(POINT.values()))
    assert "_ZGV" in ir_text
    assert max(_ulps(batched, unbatched)) <= MAX_ULP


# -- special values, partial groups, dependent calls -----------------------------------

SPECIAL = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e300, -1e300, 5e-324, -2.5, 0.75, 710.0]
#: every function of math.LIBMVEC as numpy spells it
FUNCTIONS = {"exp": np.exp, "log": np.log, "sin": np.sin, "cos": np.cos, "tanh": np.tanh,
             "expm1": np.expm1, "log1p": np.log1p, "asin": np.arcsin, "acos": np.arccos,
             "atan": np.arctan, "asinh": np.arcsinh, "acosh": np.arccosh,
             "atanh": np.arctanh}


@pytest.fixture(scope="module")
def specials():
    """Every function applied to every special value, batched and unbatched."""
    def f(xs):
        out = [fn(x) for fn in FUNCTIONS.values() for x in xs]
        out += [np.power(x, y) for x in xs for y in (0.5, -1.0)]
        out += [np.arctan2(x, y) for x in xs for y in (-0.0, 1.0)]
        return out
    xs = [np.float64(v) for v in SPECIAL]
    with np.errstate(all="ignore"):
        want = [float(v) for v in f(xs)]
    return (*_both(llgrad.jit(f).trace(xs), xs), want)


def test_special_values_come_out_as_numpy_s(specials):
    batched, _, ir_text, want = specials
    for name in (*FUNCTIONS, "pow", "atan2"):
        assert _scalar_calls(ir_text, name) == 0, name
    assert len(re.findall(r"call [^\n]*@_ZGV", ir_text)) >= len(FUNCTIONS) + 1
    _assert_same_specials(batched, want)
    assert max(_ulps(batched, want)) <= MAX_ULP


def test_special_values_agree_with_the_unbatched_lowering(specials):
    batched, unbatched, _, _ = specials
    _assert_same_specials(batched, unbatched)
    assert max(_ulps(batched, unbatched)) <= MAX_ULP


@pytest.mark.parametrize("n, scalar_left", [(1, 1), (3, 0), (9, 1)])
def test_groups_that_do_not_fill_a_vector(n, scalar_left):
    xs = [np.float64(v) for v in np.linspace(-3.0, 2.0, n)]
    batched, unbatched, ir_text = _both(llgrad.jit(lambda v: [np.exp(x) for x in v]).trace(xs),
                                        xs)
    entries = ir_text.count("define ")     # each entry point inlines the code once
    assert _scalar_calls(ir_text, "exp") == scalar_left * entries
    assert (_vector_calls(ir_text, "exp") > 0) == (n > 1)
    assert max(_ulps(batched, np.exp(xs))) <= MAX_ULP
    assert max(_ulps(batched, unbatched)) <= MAX_ULP


def test_dependent_calls_are_batched_level_by_level():
    xs = [np.float64(v) for v in np.linspace(-1.5, 1.0, 8)]
    f = lambda v: [np.exp(np.sin(np.exp(x))) for x in v]  # noqa: E731
    batched, unbatched, ir_text = _both(llgrad.jit(f).trace(xs), xs)
    assert _scalar_calls(ir_text, "exp") == 0 and _vector_calls(ir_text, "exp") >= 2
    assert _scalar_calls(ir_text, "sin") == 0
    # a composition amplifies each call's last-place error: a relative bound
    assert np.allclose(batched, np.exp(np.sin(np.exp(xs))), rtol=1e-14, atol=0)
    assert np.allclose(batched, unbatched, rtol=1e-14, atol=0)


def test_float32_calls_are_batched_too():
    xs = [np.float32(v) for v in np.linspace(-2.0, 2.0, 6)]
    trace = llgrad.jit(lambda v: [np.log1p(np.exp(x)) for x in v]).trace(xs)
    got = [float(o) for o in trace.executable(*[np.asarray(x) for x in xs])]
    assert re.search(r"@_ZGV\w+_expf\(", trace.llvm_ir_optimized)
    want = np.log1p(np.exp(np.asarray(xs, np.float32)))
    assert np.allclose(got, want, rtol=4 * np.finfo(np.float32).eps)
