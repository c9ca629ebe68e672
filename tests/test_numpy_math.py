"""numpy's rounding, remainders, products, cumulative sums, order statistics and the
small elementwise functions around them on traced arrays
(``compiler/frontend/numpy_math.py``), and grad of a one-element array.

numpy running the same plain function is the oracle: values bit for bit where numpy's
are exact (signed zeros, NaN and infinities included), dtypes and shapes, native code
and the interpreter alike.  Gradients are checked against central differences of numpy
(``llgrad.check.check_grad``) away from the steps, and the products' against the
product of the other factors where some are zero."""
import warnings

import numpy as np
import pytest
import sympy as sp

import llgrad
from llgrad.check import check_grad

SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 0.5, -0.5, 1.5, -2.5, 2.5, 3.0,
                    -3.0, 6.0, -6.0, 7.25, 1e300, -1e-300])
DIVISORS = np.array([1.0, 2.0, -2.0, 0.0, -0.0, 3.0, -3.0, 1.5, np.inf, -np.inf, np.nan])
INT64_MIN = np.iinfo(np.int64).min


def _run(fn, *args, backend="native"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return llgrad.jit(fn, backend=backend)(*args), fn(*args)


def assert_same(got, want, exact=True, ulps=8):
    """The same dtype and shape; exactly the same values (the sign of a zero too), or
    within ``ulps`` units in the last place."""
    got, want = np.asarray(got), np.asarray(want)
    assert (got.dtype, got.shape) == (want.dtype, want.shape)
    if not exact:
        np.testing.assert_allclose(got, want, rtol=ulps * np.finfo(want.dtype).eps
                                   if want.dtype.kind == "f" else 0, atol=0)
        return
    np.testing.assert_array_equal(got, want)
    if want.dtype.kind == "f":
        numbers = ~np.isnan(want)
        np.testing.assert_array_equal(np.signbit(got[numbers]), np.signbit(want[numbers]))


def _grid():
    return np.meshgrid(SPECIAL, DIVISORS, indexing="ij")


# ----------------------------------------------------------------------------------
# elementwise functions: values, dtypes, special values

UNARY = {  # name: (plain numpy function, bit-exact)
    "floor": (np.floor, True), "ceil": (np.ceil, True), "rint": (np.rint, True),
    "trunc": (np.trunc, True), "round": (np.round, True), "around": (np.around, True),
    "round_decimals_2": (lambda a: np.round(a, 2), True),
    "round_decimals_-1": (lambda a: np.round(a, decimals=-1), True),
    "round_method": (lambda a: a.round(1), True),
    "fabs": (np.fabs, True), "sinc": (np.sinc, False),
    "deg2rad": (np.deg2rad, True), "radians": (np.radians, True),
    "rad2deg": (np.rad2deg, True), "degrees": (np.degrees, True),
    "real": (np.real, True), "imag": (np.imag, True), "conj": (np.conj, True),
    "real_attribute": (lambda a: a.real, True), "imag_attribute": (lambda a: a.imag, True),
    "conjugate_method": (lambda a: a.conjugate(), True), "angle": (np.angle, True),
    "angle_deg": (lambda a: np.angle(a, deg=True), True),
    "nan_to_num": (np.nan_to_num, True),
    "nan_to_num_keywords": (lambda a: np.nan_to_num(a, nan=-1.0, posinf=9.0, neginf=-9), True),
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_functions_match_numpy_on_special_values(name, backend):
    fn, exact = UNARY[name]
    assert_same(*_run(fn, SPECIAL, backend=backend), exact=exact)


@pytest.mark.parametrize("name", sorted(UNARY))
@pytest.mark.parametrize("dtype", ["float32", "int64"])
def test_unary_functions_keep_numpys_dtype(name, dtype):
    fn, exact = UNARY[name]
    x = np.array([-7, -2, -1, 0, 1, 3, 15, 25], dtype=dtype) * (1.25 if dtype == "float32" else 1)
    assert_same(*_run(fn, x.astype(dtype)), exact=exact and dtype == "int64")


BINARY = {  # name: (plain numpy function, bit-exact)
    "fmod": (np.fmod, True), "mod": (np.mod, True), "remainder": (np.remainder, True),
    "%": (lambda a, b: a % b, True), "% reflected": (lambda a, b: 5.5 % b, True),
    "floor_divide": (np.floor_divide, True), "//": (lambda a, b: a // b, True),
    "// reflected": (lambda a, b: -7.0 // b, True),
    # numpy's own sign of a zero from fmax(0.0, -0.0) depends on its loop (SIMD or not)
    "fmax": (np.fmax, False), "fmin": (np.fmin, False),
    "logaddexp": (np.logaddexp, False), "logaddexp2": (np.logaddexp2, False),
}


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_functions_match_numpy_on_special_values(name, backend):
    fn, exact = BINARY[name]
    assert_same(*_run(fn, *_grid(), backend=backend), exact=exact)


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_functions_keep_float32(name):
    fn, exact = BINARY[name]
    with np.errstate(over="ignore"):   # 1e300 is inf in float32
        x, y = (g.astype(np.float32) for g in _grid())
    assert_same(*_run(fn, x, y), exact=exact)


@pytest.mark.parametrize("name", ["fmod", "mod", "%", "floor_divide", "//", "fmax", "fmin"])
def test_integer_remainders_follow_numpy_with_zero_and_minus_one_divisors(name):
    x = np.array([-7, -6, -1, 0, 1, 5, 6, 7, INT64_MIN, np.iinfo(np.int64).max])[:, None]
    y = np.array([-3, -1, 0, 1, 2, 3, INT64_MIN])
    assert_same(*_run(BINARY[name][0], x, y))


def _elementwise(a, b):
    return (np.floor(a), np.round(a, 1), np.fmod(a, b), a % b, a // b, np.fmax(a, b),
            np.logaddexp(a, b), np.sinc(a), np.nan_to_num(a / b), np.angle(a), np.rint(b))


@pytest.mark.parametrize("shapes", [((), ()), ((0,), (0,)), ((1,), ()), ((0, 3), (3,)),
                                    ((2, 1, 3), (4, 1))], ids=str)
def test_elementwise_functions_at_awkward_shapes(shapes, backend):
    rng = np.random.default_rng(8)
    x, y = (rng.normal(size=s) * 3 for s in shapes)
    got, want = _run(_elementwise, x, y, backend=backend)
    for g, w in zip(got, want):
        assert_same(g, w, exact=False)


def test_remainder_has_the_divisors_sign_and_fmod_the_dividends():
    x, y = np.array([5.0, -5.0, 5.0, -5.0, 6.0, -6.0]), np.array([3.0, 3.0, -3.0, -3.0, -3.0, 3.0])
    mod, fmod = llgrad.jit(lambda a, b: (np.mod(a, b), np.fmod(a, b)))(x, y)
    assert_same(mod, np.array([2.0, 1.0, -1.0, -2.0, -0.0, 0.0]))
    assert_same(fmod, np.array([2.0, -2.0, 2.0, -2.0, 0.0, -0.0]))


def test_round_is_half_to_even_for_floats_and_integers():
    halves = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 0.25, 0.35])
    assert_same(*_run(lambda a: (np.round(a), np.rint(a), np.round(a, 1)), halves))
    tens = np.array([1250, 1350, -1250, -1350, 1251, 15, 25, -15, 4])
    assert_same(*_run(lambda a: np.round(a, -1), tens))
    assert_same(*_run(lambda a: np.round(a, -2), tens))


def test_from_sympy_reads_floor_and_ceiling_as_the_rounding_primitives():
    t = sp.symbols("t", real=True)
    f = llgrad.from_sympy(sp.floor(t) + sp.ceiling(2 * t) * t, [t])
    v = np.array([0.3, -1.7, 2.5])
    assert_same(f(v), np.floor(v) + np.ceil(2 * v) * v)
    assert_same(f.grad(v)[:, 0], np.ceil(2 * v))


def test_floor_of_integers_is_integers_as_in_numpy_2():
    got, want = _run(lambda a: (np.floor(a), np.ceil(a), np.trunc(a)), np.arange(-3, 3))
    for g, w in zip(got, want):
        assert_same(g, w)


def test_select_takes_the_first_true_condition_and_promotes():
    x = np.linspace(-3, 3, 13)

    def chosen(a):
        return np.select([a > 1, a < -1, a > 0], [a, 2 * a, np.ones(13, np.int64)], default=-7)
    assert_same(*_run(chosen, x))
    assert_same(*_run(lambda a: np.select([a > 0], [np.float32(1)], np.float32(0)),
                      x.astype(np.float32)))


def test_linspace_between_traced_endpoints():
    start, stop = np.array([0.0, -1.0, 2.0]), np.array([1.0, 1.0, 2.0])
    cases = [lambda a, b: np.linspace(a, b, 5),
             lambda a, b: np.linspace(a[0], b[0], 7, endpoint=False),
             lambda a, b: np.linspace(a, b, 4, axis=-1),
             lambda a, b: np.linspace(a[1], 3, 1),
             lambda a, b: np.linspace(a, b, 0),
             lambda a, b: np.linspace(a * 10, b * 10, 6, dtype=np.int64),
             lambda a, b: np.linspace(a.astype(np.float32), b[0], 3),
             lambda a, b: np.linspace(a, b, 5, retstep=True)[0] + np.linspace(a, b, 5,
                                                                               retstep=True)[1]]
    for fn in cases:
        got, want = _run(fn, start, stop)
        assert_same(got, want, exact=False)


# ----------------------------------------------------------------------------------
# products and cumulative sums: axes, keepdims, dtypes, awkward shapes

REDUCTIONS = {
    "prod": lambda a: np.prod(a), "prod_axis0": lambda a: np.prod(a, axis=0),
    "prod_neg_axis_keepdims": lambda a: a.prod(axis=-1, keepdims=True),
    "prod_axes_tuple": lambda a: np.prod(a, axis=(0, -1)),
    "prod_initial": lambda a: np.prod(a, axis=-1, initial=2.0),
    "cumsum": np.cumsum, "cumsum_axis0": lambda a: np.cumsum(a, axis=0),
    "cumsum_neg_axis": lambda a: a.cumsum(axis=-1),
    "cumprod": np.cumprod, "cumprod_axis0": lambda a: np.cumprod(a, axis=0),
    "cumprod_neg_axis": lambda a: a.cumprod(-1),
}
SHAPES = [(2, 3, 4), (0, 3), (3, 0), (1, 1), (1,), (9,), (37, 2)]


@pytest.mark.parametrize("name,shape", [pytest.param(n, s, id=f"{n}{list(s)}")
                                        for n in sorted(REDUCTIONS) for s in SHAPES
                                        if len(s) > 1 or "tuple" not in n])
def test_products_and_scans_match_numpy(name, shape):
    fn = REDUCTIONS[name]
    x = np.random.default_rng(3).uniform(0.5, 1.5, shape)
    assert_same(*_run(fn, x), exact=False, ulps=64)   # products rounded in another order


def test_products_and_scans_of_rank_0_arrays_match_numpy(backend):
    def fn(a):
        return np.prod(a), np.cumsum(a), np.cumprod(a), np.prod(a, keepdims=True)
    got, want = _run(fn, np.float64(1.5), backend=backend)
    for g, w in zip(got, want):
        assert_same(g, w)


@pytest.mark.parametrize("dtype", ["bool", "int64", "float32"])
def test_products_and_scans_keep_numpys_dtypes(dtype, backend):
    x = (np.arange(12).reshape(3, 4) % 3).astype(dtype)
    def fn(a):
        return (np.prod(a, axis=0), np.cumsum(a, axis=1), np.cumprod(a),
                np.prod(a, dtype=np.float64), np.cumsum(a, dtype=np.float32))
    got, want = _run(fn, x, backend=backend)
    for g, w in zip(got, want):
        assert_same(g, w, exact=dtype != "float32")


def test_integer_products_wrap_as_numpy():
    x = np.full(70, 3, dtype=np.int64)
    assert_same(*_run(np.prod, x))
    assert_same(*_run(np.cumprod, x))


def test_long_scans_stay_accurate():
    x = np.random.default_rng(4).normal(size=3000)
    got, want = _run(lambda a: np.cumsum(a), x)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-11)


# ----------------------------------------------------------------------------------
# order statistics


ORDER = {
    "median": lambda a: np.median(a), "median_axis0": lambda a: np.median(a, axis=0),
    "median_neg_axis_keepdims": lambda a: np.median(a, axis=-1, keepdims=True),
    "median_axes": lambda a: np.median(a, axis=(0, 1)),
    "percentile": lambda a: np.percentile(a, 37.5),
    "percentile_list_axis": lambda a: np.percentile(a, [0, 10, 50, 90, 100], axis=1),
    "percentile_keepdims": lambda a: np.percentile(a, [25, 75], axis=0, keepdims=True),
    "quantile": lambda a: np.quantile(a, 0.5), "quantile_array": lambda a: np.quantile(
        a, np.array([[0.1, 0.9], [0.33, 0.66]]), axis=-1),
}


@pytest.mark.parametrize("shape", [(5, 4), (4, 7), (1, 1), (3, 1, 6)], ids=str)
@pytest.mark.parametrize("name", sorted(ORDER))
def test_order_statistics_match_numpy(name, shape):
    x = np.random.default_rng(5).normal(size=shape)
    x.flat[::3] = x.flat[0]   # ties
    assert_same(*_run(ORDER[name], x), exact=False)


@pytest.mark.parametrize("dtype", ["float32", "int64"])
def test_order_statistics_keep_numpys_dtype(dtype, backend):
    x = np.arange(10, dtype=dtype)[::-1].reshape(2, 5)
    def fn(a):
        return np.median(a, axis=1), np.percentile(a, 40), np.quantile(a, [0.25])
    got, want = _run(fn, x, backend=backend)
    for g, w in zip(got, want):
        assert_same(g, w, exact=False)


def test_order_statistics_are_nan_where_a_slice_holds_nan(backend):
    x = np.array([[1.0, np.nan, 3.0], [3.0, 2.0, 1.0]])
    def fn(a):
        return np.median(a, axis=1), np.percentile(a, [10, 90], axis=1)
    got, want = _run(fn, x, backend=backend)
    for g, w in zip(got, want):
        assert_same(g, w)


def test_median_of_nothing_is_nan():
    assert_same(*_run(lambda a: np.median(a, axis=0), np.zeros((0, 3))))


# ----------------------------------------------------------------------------------
# gradients: central differences of numpy, away from the steps

RNG = np.random.default_rng(7)
X = RNG.uniform(-3, 3, (3, 4))
Y = np.where(RNG.random((3, 4)) < 0.5, -1, 1) * RNG.uniform(0.7, 2.0, (3, 4))
W = RNG.normal(size=(3, 4))

GRADIENTS = {  # name: a plain numpy function of two (3, 4) arrays
    "mod": lambda a, b: np.mod(a, b), "fmod": lambda a, b: np.fmod(a, b),
    "%": lambda a, b: (a % b) * (a % 1.5),
    "logaddexp": np.logaddexp, "logaddexp2": np.logaddexp2,
    "fmax": np.fmax, "fmin": np.fmin,
    "sinc": lambda a, b: np.sinc(a * b), "deg2rad": lambda a, b: np.deg2rad(a) * b,
    "rad2deg": lambda a, b: np.rad2deg(a * b),
    "nan_to_num": lambda a, b: np.nan_to_num(np.where(a > 0, a * b, np.nan), nan=2.0),
    "prod": lambda a, b: np.prod(a * b, axis=1) + np.prod(a, axis=0, keepdims=True).sum(),
    "prod_all": lambda a, b: np.prod(b) * a,
    "cumsum": lambda a, b: np.cumsum(a * b, axis=0),
    "cumprod": lambda a, b: np.cumprod(a) * np.cumprod(b, axis=1).ravel(),
    "median": lambda a, b: np.median(a * b, axis=1) + np.median(a),
    "percentile": lambda a, b: np.percentile(a + b, [10, 50, 95], axis=0),
    "quantile": lambda a, b: np.quantile(a * b, 0.3, axis=-1, keepdims=True),
    "linspace": lambda a, b: np.linspace(a, b, 4, axis=-1),
    "select": lambda a, b: np.select([a > 1, b < 0], [a * b, np.exp(b)], default=a),
    "real_imag_conj_angle": lambda a, b: np.real(a) * np.conj(b) + np.imag(a) + np.angle(b),
    "round_floor_ceil_trunc": lambda a, b: a * np.round(b, 1) + np.floor(a) + np.ceil(b)
                                           + np.trunc(a * b) + np.rint(b) + a // b,
}


@pytest.mark.parametrize("name", sorted(GRADIENTS))
def test_gradients_match_central_differences(name):
    fn = GRADIENTS[name]

    def scalar(a, b):
        out = fn(a, b)
        return np.sum(out * np.resize(W.ravel(), np.shape(out)))
    check_grad(scalar, X, Y, argnums=(0, 1), rtol=1e-6, atol=1e-8)


def test_rounding_floor_division_and_angle_have_zero_gradient(backend):
    g = llgrad.grad(lambda a: (np.floor(a) + np.ceil(a) + np.rint(a) + np.trunc(a)
                               + np.round(a, 2) + a // 0.7 + np.angle(a)).sum(),
                    backend=backend)(X)
    assert_same(g, np.zeros_like(X))


def test_remainder_gradient_is_one_and_minus_floor_of_the_quotient(backend):
    dx, dy = llgrad.grad(lambda a, b: np.sum(a % b), argnums=(0, 1), backend=backend)(X, Y)
    assert_same(dx, np.ones_like(X))
    np.testing.assert_array_equal(dy, -np.floor(X / Y))
    dx, dy = llgrad.grad(lambda a, b: np.sum(np.fmod(a, b)), argnums=(0, 1),
                         backend=backend)(X, Y)
    np.testing.assert_array_equal(dy, -np.trunc(X / Y))


def _others(x, axis):
    """The product of the other elements along ``axis``, by explicit products."""
    x = np.moveaxis(x, axis, -1)
    out = np.empty_like(x)
    for i in range(x.shape[-1]):
        out[..., i] = np.prod(np.delete(x, i, axis=-1), axis=-1)
    return np.moveaxis(out, -1, axis)


@pytest.mark.parametrize("zeros", [[], [1], [1, 3], [0, 1, 2]], ids=lambda z: f"{len(z)}zeros")
def test_prod_gradient_is_the_product_of_the_others_with_zeros(zeros, backend):
    x = np.array([[1.5, -2.0, 0.5, 3.0, 1.25], [2.0, 0.5, -1.0, 4.0, 0.75]])
    x[:, zeros] = 0.0
    g = llgrad.grad(lambda a: np.sum(np.prod(a, axis=1) * np.array([1.0, -2.0])),
                    backend=backend)(x)
    np.testing.assert_allclose(g, _others(x, 1) * np.array([[1.0], [-2.0]]), rtol=1e-15)
    assert_same(llgrad.grad(lambda a: np.prod(a), backend=backend)(x),
                _others(x.reshape(1, -1), 1).reshape(x.shape), exact=False)


@pytest.mark.parametrize("zeros", [[], [2], [1, 4]], ids=lambda z: f"{len(z)}zeros")
def test_cumprod_gradient_is_sums_of_products_of_the_others_with_zeros(zeros, backend):
    x = np.array([1.5, -2.0, 0.5, 3.0, 1.25, 0.8])
    x[zeros] = 0.0
    w = np.array([0.3, -1.0, 2.0, 0.5, 1.5, -0.7])
    g = llgrad.grad(lambda a: np.sum(np.cumprod(a) * w), backend=backend)(x)
    # d/dx_i sum_k w_k prod(x[:k+1]) = sum_{k >= i} w_k prod(x[:k+1] without x_i)
    want = [sum(w[k] * np.prod(np.delete(x[:k + 1], i)) for k in range(i, len(x)))
            for i in range(len(x))]
    np.testing.assert_allclose(g, want, rtol=1e-14, atol=1e-15)


def test_median_gradient_goes_to_the_middle_elements():
    odd = llgrad.grad(lambda a: np.median(a))(np.array([3.0, 1.0, 2.0]))
    even = llgrad.grad(lambda a: np.median(a))(np.array([4.0, 1.0, 3.0, 2.0]))
    assert_same(odd, np.array([0.0, 0.0, 1.0]))
    assert_same(even, np.array([0.0, 0.0, 0.5, 0.5]))


def test_second_derivatives_of_prod_sinc_and_logaddexp():
    x = np.array([1.5, 0.0, -2.0, 0.5])
    hessian = llgrad.hessian(lambda a: np.prod(a))(x)
    want = np.array([[0.0 if i == j else np.prod(np.delete(x, [i, j])) for j in range(4)]
                     for i in range(4)])
    np.testing.assert_allclose(hessian, want, rtol=1e-15)
    d2 = llgrad.grad(llgrad.grad(lambda a: np.sinc(a)))
    assert d2(0.0) == pytest.approx(-np.pi ** 2 / 3, rel=1e-12)
    assert d2(0.3) == pytest.approx(
        (np.sinc(0.3 + 1e-4) - 2 * np.sinc(0.3) + np.sinc(0.3 - 1e-4)) / 1e-8, rel=1e-5)
    both = llgrad.grad(llgrad.grad(lambda a: np.logaddexp(a, 0.5)))(0.2)
    sig = 1 / (1 + np.exp(0.5 - 0.2))
    assert both == pytest.approx(sig * (1 - sig), rel=1e-12)


def test_logaddexp_of_equal_operands_gives_each_half(backend):
    dx, dy = llgrad.grad(lambda a, b: np.logaddexp(a, b), argnums=(0, 1), backend=backend)(
        1.0, 1.0)
    assert (dx, dy) == (0.5, 0.5)


def test_sinc_gradient_is_zero_at_zero():
    assert llgrad.grad(lambda a: np.sinc(a))(0.0) == 0.0


# ----------------------------------------------------------------------------------
# grad of a one-element array, as autograd

@pytest.mark.parametrize("shape", [(1,), (1, 1)], ids=str)
def test_grad_of_a_one_element_array_is_as_of_a_scalar(shape, backend):
    def loss(a):
        return np.sum(a ** 2, keepdims=True).reshape(shape)
    x = np.array([1.0, -2.0, 3.0])
    assert_same(llgrad.grad(loss, backend=backend)(x), 2 * x)
    value, gradient = llgrad.value_and_grad(loss, backend=backend)(x)
    assert_same(value, np.full(shape, 14.0))
    assert_same(gradient, 2 * x)
    assert_same(llgrad.hessian(loss, backend=backend)(x), 2 * np.eye(3))


def test_grad_of_an_integer_or_larger_output_stays_an_error():
    with pytest.raises(llgrad.GradientError, match=r"one element.*i64\[1\]"):
        llgrad.grad(lambda a: np.sum(a, keepdims=True).astype(np.int64))(np.ones(2))
    with pytest.raises(llgrad.GradientError, match=r"one float scalar.*f64\[2\]"):
        llgrad.grad(lambda a: a * 2)(np.ones(2))


# ----------------------------------------------------------------------------------
# what is refused, by name

@pytest.mark.parametrize("fn,match", [
    (lambda a: (a > 0) // (a > 1), "floor_divide.*bool"),
    (lambda a: np.percentile(a, a[0]), "percentile needs constant q"),
    (lambda a: np.quantile(a, 0.5, method="nearest"), "linear method"),
    (lambda a: np.round(a > 0), "round.*bool"),
    (lambda a: np.prod(a, where=a > 0), "where"),
    (lambda a: np.cumsum(a, out=a), "out"),
])
def test_refusals_name_the_function(fn, match):
    with pytest.raises(llgrad.LlgradError, match=match):
        llgrad.jit(fn)(np.array([1.0, 2.0]))


def test_percentiles_out_of_range_are_numpys_error():
    with pytest.raises(llgrad.ShapeError, match="Percentiles must be in the range"):
        llgrad.jit(lambda a: np.percentile(a, 101))(np.ones(3))
