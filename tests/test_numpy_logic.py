"""numpy's tests of values, logical reductions, NaN-ignoring reductions, ptp and
average on traced arrays (``compiler/frontend/numpy_logic.py``).

numpy running the same plain function is the oracle: values (NaN included), dtypes
and shapes, at awkward shapes, native code and the interpreter alike; gradients
against central differences, first and second order, reverse and forward mode."""
import warnings
import zlib

import numpy as np
import pytest
from helpers import central_jacobian

import llgrad
from llgrad.check import check_grad, numerical_grad
from llgrad.ir.errors import LlgradError

BACKENDS = ("native", "interpret")


def _data(shape, dtype):
    """NaN, infinities, zeros and ties among the values, the same for each case
    whichever tests ran before."""
    rng = np.random.default_rng(zlib.crc32(f"{shape}{dtype}".encode()))
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if dtype == "int64":
        return rng.integers(-2, 3, shape)
    pool = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.5, -2.0])
    x = np.where(rng.random(shape) < 0.4, rng.choice(pool, shape), rng.standard_normal(shape))
    return x.astype(dtype)


FUNCTIONS = {
    "isnan": np.isnan, "isinf": np.isinf, "isfinite": np.isfinite,
    "isposinf": np.isposinf, "isneginf": np.isneginf,
    "any": np.any, "all": np.all, "any_axis": lambda a: np.any(a, axis=-1),
    "all_keepdims": lambda a: np.all(a, axis=0, keepdims=True),
    "any_method": lambda a: a.any(), "all_method": lambda a: (a > 0).all(axis=-1),
    "count_nonzero": np.count_nonzero,
    "count_nonzero_axis": lambda a: np.count_nonzero(a, axis=0, keepdims=True),
    "nansum": np.nansum, "nansum_axis": lambda a: np.nansum(a, axis=-1),
    "nanmean": np.nanmean, "nanmean_axis": lambda a: np.nanmean(a, axis=0, keepdims=True),
    "nanmax": np.nanmax, "nanmin_axis": lambda a: np.nanmin(a, axis=-1),
    "ptp": np.ptp, "ptp_axis": lambda a: np.ptp(a, axis=0),
    "average": np.average, "average_returned": lambda a: np.average(a, axis=-1, returned=True),
    "average_weights": lambda a: np.average(a, axis=-1, weights=np.arange(1.0, a.shape[-1] + 1)),
}
SHAPES = [(), (1,), (3, 4), (0, 3), (2, 1, 5)]
#: numpy takes axis 0 or -1 of a 0-d array in its ufunc reductions; llgrad's reductions
#: refuse it (as np.mean does), so the functions with an axis start at rank 1
WITH_AXIS = {n for n in FUNCTIONS if "axis" in n or n in ("all_keepdims", "all_method",
                                                          "average_returned",
                                                          "average_weights")}


def _numpy(fn, x):
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return fn(x)


def _assert_same(got, want):
    """Same dtypes and shapes; values to a few ulp of each sum's terms (NaN as NaN)."""
    for g, w in zip(got if isinstance(want, tuple) else (got,),
                    want if isinstance(want, tuple) else (want,)):
        g, w = np.asarray(g), np.asarray(w)
        assert (g.dtype, g.shape) == (w.dtype, w.shape)
        eps = np.finfo(w.dtype).eps if w.dtype.kind == "f" else 0
        np.testing.assert_allclose(g, w, rtol=32 * eps, atol=32 * eps, equal_nan=True)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", ["float64", "float32", "int64", "bool"])
@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_matches_numpy(name, dtype, shape):
    if shape == () and name in WITH_AXIS:
        pytest.skip("an axis of a 0-d array")
    fn, x = FUNCTIONS[name], _data(shape, dtype)
    try:
        want = _numpy(fn, x)
    except (ValueError, TypeError, ZeroDivisionError):
        with pytest.raises(LlgradError):
            llgrad.jit(fn)(x)
        return
    for backend in BACKENDS if dtype == "float64" else ("native",):
        _assert_same(llgrad.jit(fn, backend=backend)(x), want)


def test_average_refuses_weights_of_the_wrong_shape_as_numpy():
    with pytest.raises(LlgradError, match="axis must be specified"):
        llgrad.jit(lambda a: np.average(a, weights=np.ones(3)))(np.ones((2, 3)))
    with pytest.raises(LlgradError, match="shape of weights"):
        llgrad.jit(lambda a: np.average(a, axis=0, weights=np.ones(3)))(np.ones((2, 3)))


X = np.array([[0.3, np.nan, 2.5, 0.7], [1.9, -0.6, np.nan, -2.2], [0.4, 1.2, -1.7, 0.9]])
Y = np.where(np.isnan(X), 0.5, X)
W = np.array([0.5, 2.0, 1.0, 3.0])
GRADIENTS = {
    # a NaN element's adjoint is 0; multiplied by a partial taken at NaN, it would be
    # NaN again (the double-where pattern of docs/debugging.md), so nansum comes first
    "nansum": (lambda a: np.sum(np.nansum(a, axis=1) ** 2), X),
    "nanmean": (lambda a: np.sum(np.sin(np.nanmean(a, axis=0))), X),
    "nanmax_nanmin": (lambda a: np.sum(np.nanmax(a, axis=1) * np.nanmin(a, axis=0)[:3]), X),
    "ptp": (lambda a: np.sum(np.ptp(a, axis=1) ** 2), Y),
    "average": (lambda a: np.sum(np.average(a * a, axis=1, weights=W) ** 2), Y),
    "average_traced_weights": (lambda a: np.average(np.sin(a), weights=np.exp(a)), Y),
}


@pytest.mark.parametrize("name", sorted(GRADIENTS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_reverse_gradient_matches_central_differences(name, backend):
    fn, x = GRADIENTS[name]
    check_grad(fn, x, backend=backend, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", sorted(GRADIENTS))
def test_forward_gradient_matches_central_differences(name):
    fn, x = GRADIENTS[name]
    np.testing.assert_allclose(llgrad.jacfwd(fn)(x), numerical_grad(fn, (x,), 0, 1e-6),
                               rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", ["nansum", "nanmean", "average_traced_weights"])
def test_second_derivatives_match_central_differences_of_the_gradient(name):
    fn, x = GRADIENTS[name]
    np.testing.assert_allclose(llgrad.hessian(fn)(x), central_jacobian(llgrad.grad(fn), x),
                               rtol=1e-6, atol=1e-7)


def test_nan_elements_get_a_zero_gradient():
    got = llgrad.grad(lambda a: np.nansum(a) * 3.0)(X)
    np.testing.assert_array_equal(got, np.where(np.isnan(X), 0.0, 3.0))
