"""IEEE semantics as numpy's: NaN and inf propagate the same way through every
elementwise op, reduction and product, in native code (fused into one loop and one
kernel per node) and in the interpreter; integer overflow wraps and bool arithmetic is
logic, as in numpy, or the error is a clear llgrad one."""
import warnings

import numpy as np
import pytest

import llgrad
import llgrad.numpy as lnp
from llgrad.compiler.codegen.build import compile_graph

MODES = ["fused", "unfused", "interpret"]
SPECIAL = np.array([0.0, -0.0, 1.0, -1.0, 0.5, np.inf, -np.inf, np.nan, 1e308, -1e308,
                    5e-324, 88.5, 700.0, 710.0, -745.5])
# every ordered pair of special values
LEFT, RIGHT = (grid.ravel() for grid in np.meshgrid(SPECIAL, SPECIAL))
ULPS = {np.float64: 4e-16, np.float32: 2.4e-7}


def cast(x, dtype):
    """``x`` in ``dtype``; float64 values beyond float32's range become infinities."""
    with np.errstate(over="ignore"):
        return x.astype(dtype)


def run(fn, mode, *args):
    """``fn(*args)`` through llgrad in ``mode``: fused native code, one native kernel
    per node, or the numpy interpreter."""
    if mode == "interpret":
        return llgrad.jit(fn, backend="interpret")(*args)
    if mode == "fused":
        return llgrad.jit(fn)(*args)
    graph = llgrad.jit(fn).trace(*args).optimized
    outputs = compile_graph(graph, fuse_ops=False)(*args)
    return outputs[0] if len(outputs) == 1 else tuple(outputs)


def numpy_reference(fn, *args):
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return fn(*args)


def assert_same(got, want, rtol=0.0):
    """Same dtype, same NaN and inf positions (and signs), values within ``rtol``."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want))
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=0)


BINARY = {
    "mul": lambda a, b: a * b, "div": lambda a, b: a / b, "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b, "maximum": np.maximum, "minimum": np.minimum,
    "pow": lambda a, b: a ** b, "hypot": np.hypot, "where": lambda a, b: np.where(a > b, a, b),
    "clip": lambda a, b: np.clip(a, -1.0, b),
}
EXACT_BINARY = {"mul", "div", "add", "sub", "maximum", "minimum", "where", "clip"}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_ops_on_every_pair_of_special_values(name, dtype, mode):
    fn = BINARY[name]
    a, b = cast(LEFT, dtype), cast(RIGHT, dtype)
    rtol = 0.0 if name in EXACT_BINARY else 2 * ULPS[dtype]
    assert_same(run(fn, mode, a, b), numpy_reference(fn, a, b), rtol)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["lt", "le", "gt", "ge", "eq", "ne"])
def test_comparisons_with_nan_are_false_except_not_equal(name, mode):
    fn = {"lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal,
          "eq": np.equal, "ne": np.not_equal}[name]
    got = run(fn, mode, LEFT, RIGHT)
    np.testing.assert_array_equal(got, fn(LEFT, RIGHT))
    assert got.dtype == np.bool_


UNARY = {name: getattr(np, name) for name in [
    "exp", "log", "log1p", "expm1", "sqrt", "sin", "cos", "tanh", "abs", "sign", "negative",
    "log2", "log10", "exp2", "sinh", "cosh", "square", "reciprocal"]}
UNARY.update(sigmoid=lnp.sigmoid, relu=lnp.relu)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_ops_on_special_values(name, dtype, mode):
    x = cast(SPECIAL, dtype)
    fn = UNARY[name]
    want = numpy_reference(fn if name not in ("sigmoid", "relu") else
                           {"sigmoid": lambda v: 1 / (1 + np.exp(-v)),
                            "relu": lambda v: np.maximum(v, 0)}[name], x)
    assert_same(run(fn, mode, x), want, 4 * ULPS[dtype])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", [
    ("0*inf", lambda a: a * np.inf, 0.0, np.nan),
    ("log(0)", np.log, 0.0, -np.inf),
    ("log(-1)", np.log, -1.0, np.nan),
    ("sqrt(-1)", np.sqrt, -1.0, np.nan),
    ("1/0", lambda a: 1.0 / a, 0.0, np.inf),
    ("1/-0", lambda a: 1.0 / a, -0.0, -np.inf),
    ("0/0", lambda a: a / a, 0.0, np.nan),
    ("exp overflow", np.exp, 710.0, np.inf),
    ("exp underflow", np.exp, -746.0, 0.0),
    ("inf-inf", lambda a: a - a, np.inf, np.nan),
    ("maximum(nan, 1)", lambda a: np.maximum(a, 1.0), np.nan, np.nan),
    ("minimum(1, nan)", lambda a: np.minimum(1.0, a), np.nan, np.nan),
], ids=lambda case: case[0] if isinstance(case, tuple) else case)
def test_the_classic_cases(case, mode):
    _, fn, x, want = case
    got = run(fn, mode, np.array([x]))
    assert_same(got, np.array([want]))
    assert_same(got, numpy_reference(fn, np.array([x])))


def _with_nan_and_inf(n):
    """Rows of length ``n``: clean, one NaN, all NaN, +inf and -inf, -inf only."""
    rows = np.tile(np.linspace(-2.0, 3.0, n), (6, 1))
    rows[1, n // 2] = np.nan
    rows[2, :] = np.nan
    rows[3, 1] = np.inf
    rows[3, -1] = -np.inf
    rows[4, :] = -np.inf
    rows[5, 0] = np.nan
    return rows


REDUCTIONS = {"max": np.max, "min": np.min, "sum": np.sum, "mean": np.mean,
              "argmax": np.argmax, "argmin": np.argmin}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("n", [5, 37], ids=["short-run", "long-run"])  # < and >= 2*LANES
@pytest.mark.parametrize("axis", [None, 0, 1])
@pytest.mark.parametrize("name", sorted(REDUCTIONS))
def test_reductions_propagate_nan_and_inf_as_numpy(name, axis, n, mode):
    fn = lambda x: REDUCTIONS[name](x, axis=axis)  # noqa: E731
    x = _with_nan_and_inf(n)
    assert_same(run(fn, mode, x), numpy_reference(fn, x), rtol=1e-15)


@pytest.mark.parametrize("mode", MODES)
def test_products_and_softmax_propagate_nan_and_inf(mode):
    a = np.array([[np.inf, 0.0], [1.0, 2.0], [np.nan, 1.0]])
    b = np.array([[0.0, 1.0], [1.0, 1.0]])
    assert_same(run(lambda a, b: a @ b, mode, a, b), numpy_reference(lambda a, b: a @ b, a, b))
    logits = np.array([[1e308, 1.0, -np.inf], [np.nan, 0.0, 1.0]])
    want = numpy_reference(lambda v: np.exp(v - v.max(axis=1, keepdims=True)) / np.exp(
        v - v.max(axis=1, keepdims=True)).sum(axis=1, keepdims=True), logits)
    assert_same(run(lnp.softmax, mode, logits), want, rtol=1e-15)


def test_gradients_are_finite_where_the_function_is_smooth_near_overflow():
    """Formulas that stay finite near overflow also differentiate there, as numpy
    computes the analytic derivatives."""
    x = np.array([-705.0, -3.0, -1.0, -1e-9, 0.0, 0.5, 1.0, 705.0])
    np.testing.assert_allclose(llgrad.grad(lambda v: np.sinh(v).sum())(x), np.cosh(x),
                               rtol=1e-14)
    np.testing.assert_allclose(llgrad.grad(lambda v: np.cosh(v).sum())(x), np.sinh(x),
                               rtol=1e-14, atol=1e-300)
    a, b = np.array([1e200, 3.0, -1e-200, 0.1]), np.array([1e200, 3.0, 3e-200, -4.0])
    ga, gb = llgrad.grad(lambda a, b: np.hypot(a, b).sum(), argnums=(0, 1))(a, b)
    np.testing.assert_allclose(ga, a / np.hypot(a, b), rtol=1e-15)
    np.testing.assert_allclose(gb, b / np.hypot(a, b), rtol=1e-15)


# ----------------------------------------------------------------------------------
# integers and bools

BIG = np.array([2 ** 62, 2 ** 63 - 1, -2 ** 63, 3, -7, 0])
T, F = np.array([True, True, False, False]), np.array([True, False, True, False])
INTEGER_CASES = {
    "add wraps": (lambda a: a + a, (BIG,)),
    "mul wraps": (lambda a: a * a, (BIG,)),
    "neg of min": (lambda a: -a, (BIG,)),
    "abs of min": (np.abs, (BIG,)),
    "sum wraps": (lambda a: a.sum(), (BIG,)),
    "max": (lambda a: a.max(), (BIG,)),
    "mean is float": (lambda a: a.mean(), (BIG[2:],)),
    "true division by zero": (lambda a, b: a / b, (np.array([1, -1, 0, 3]), np.array([0, 0, 0, 2]))),
    "power stays int": (lambda a: a ** 3 + a ** 0, (BIG,)),
    "int with float": (lambda a: a * 0.5, (BIG,)),
    "bool + bool is or": (lambda a, b: a + b, (T, F)),
    "bool * bool is and": (lambda a, b: a * b, (T, F)),
    "bool maximum": (np.maximum, (T, F)),
    "bool sum counts": (lambda a: a.sum(), (T,)),
    "bool mean": (lambda a: a.mean(), (T,)),
    "bool + int": (lambda a, b: a + b, (T, np.arange(4))),
    "bool * float": (lambda a: a * 1.5, (T,)),
    "bool invert": (lambda a: ~a, (T,)),
    "int to float32": (lambda a: a.astype(np.float32), (BIG,)),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(INTEGER_CASES))
def test_integer_and_bool_arithmetic_as_numpy(name, mode):
    fn, args = INTEGER_CASES[name]
    assert_same(run(fn, mode, *args), numpy_reference(fn, *args))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_float_to_int_saturates_where_numpy_is_platform_defined(dtype, mode):
    """numpy's cast of NaN, inf or an out-of-range float to int64 is undefined (INT64_MIN
    on x86, with a warning); llgrad defines it, the same in native code and interpreter:
    NaN -> 0, values beyond int64 -> its nearest end, the rest truncated toward 0."""
    big = np.iinfo(np.int64)
    x = np.array([np.nan, np.inf, -np.inf, 1e30, -1e30, 2.0 ** 63, -2.0 ** 63, 2.7, -2.7],
                 dtype)
    got = run(lambda v: v.astype(np.int64), mode, x)
    np.testing.assert_array_equal(got, [0, big.max, big.min, big.max, big.min, big.max,
                                        big.min, 2, -2])
    assert got.dtype == np.int64


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fn,error,words", [
    (lambda a: a ** -1, llgrad.DTypeError, "negative integer powers"),
    (lambda a: a - a, llgrad.DTypeError, "bool"),
    (lambda a: -a, llgrad.DTypeError, "bool"),
    (lambda a: np.sign(a), llgrad.DTypeError, "bool"),
], ids=["int ** -1", "bool - bool", "-bool", "sign(bool)"])
def test_what_numpy_refuses_is_a_clear_error(fn, error, words, mode):
    arg = np.arange(4) if "power" in words else T
    with pytest.raises(Exception):
        fn(arg)                                 # numpy refuses too
    with pytest.raises(error, match=words) as info:
        run(fn, mode, arg)
    assert "test_ieee.py:" in str(info.value) and "<lambda>()" in str(info.value)


@pytest.mark.parametrize("mode", MODES)
def test_subtracting_a_negative_zero_is_adding_zero_not_nothing(mode):
    """x - (-0.0) is +0.0 at x = -0.0, so the simplifier keeps it (x - (+0.0) is x)."""
    x = np.array([-0.0, 0.0, 1.0, -np.inf, np.nan])
    for fn in (lambda a: a - (-0.0), lambda a: a - 0.0):
        got, want = run(fn, mode, x), fn(x)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(np.signbit(got), np.signbit(want))


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_powers_of_negative_bases_keep_numpys_signs(dtype):
    """pow(|x|, y) with the sign put back (``lowering._pow_float``): odd and even
    integers, fractions, huge and infinite exponents, against numpy."""
    x = np.array([-2.0, -1.5, -1.0, -0.5, -0.0, -np.inf, -3.0, 2.0], dtype)
    y = np.array([-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 7.0, 0.5, -0.5, 2.0 ** 60,
                  -(2.0 ** 60), np.inf, -np.inf, np.nan], dtype)
    a, b = (g.ravel() for g in np.meshgrid(x, y))
    got = llgrad.jit(lambda a, b: a ** b)(a, b)
    assert_same(got, numpy_reference(lambda a, b: a ** b, a, b), rtol=ULPS[dtype] * 4)
    assert np.all(np.signbit(got[np.isfinite(got)]) ==
                  np.signbit(numpy_reference(lambda a, b: a ** b, a, b)[np.isfinite(got)]))
