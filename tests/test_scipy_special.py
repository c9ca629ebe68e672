"""llgrad.scipy.special against scipy.special: values at awkward shapes (native and
interpreted), gradients against central differences, a second derivative, scipy's own
ufuncs on traced arrays, and the advice where scipy's Python functions meet one."""
import numpy as np
import pytest

sc = pytest.importorskip("scipy.special")

import llgrad  # noqa: E402
from llgrad.ir.errors import GradientError, UnsupportedError  # noqa: E402
from llgrad.scipy import special as ls  # noqa: E402

BACKENDS = ["native", "interpret"]
SHAPES = [(), (1,), (7,), (3, 4), (2, 1, 5), (0, 3)]


def _x(shape, low=None, seed=0):
    x = np.random.default_rng(seed).standard_normal(shape) * 2
    return np.abs(x) + low if low is not None else x


UNARY = [("expit", None), ("logit", "unit"), ("erf", None), ("erfc", None),
         ("gammaln", 0.05)]


def _input(domain, shape):
    if domain == "unit":
        return 1 / (1 + np.exp(-_x(shape)))
    return _x(shape, domain)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name,domain", UNARY)
def test_unary_matches_scipy(name, domain, shape, backend):
    x = _input(domain, shape)
    got = llgrad.jit(getattr(ls, name), backend=backend)(x)
    np.testing.assert_allclose(got, getattr(sc, name)(x), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("name,domain", UNARY)
def test_unary_float32_and_outside_a_trace(name, domain):
    x = _input(domain, (37,)).astype(np.float32)
    got = llgrad.jit(getattr(ls, name))(x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, getattr(sc, name)(x), rtol=2e-6, atol=1e-6)
    np.testing.assert_array_equal(getattr(ls, name)(x), getattr(sc, name)(x))


def test_gammaln_at_negative_arguments_and_poles():
    x = np.array([-2.5, -0.5, -1.3, 0.0, -1.0, 3.0, 171.5, 1e300])
    np.testing.assert_allclose(llgrad.jit(ls.gammaln)(x), sc.gammaln(x), rtol=1e-13)


@pytest.mark.parametrize("backend", BACKENDS)
def test_xlogy_is_zero_where_x_is_zero_gradient_too(backend):
    x = np.array([0.0, 0.0, 2.0, 0.0, 1.5, 0.0])
    y = np.array([0.0, 3.0, 0.5, np.nan, 2.0, np.inf])
    got = llgrad.jit(ls.xlogy, backend=backend)(x, y)
    np.testing.assert_array_equal(got, sc.xlogy(x, y))
    gx, gy = llgrad.grad(lambda x, y: ls.xlogy(x, y).sum(), argnums=(0, 1),
                         backend=backend)(x[[0, 1, 2, 4]], y[[0, 1, 2, 4]])
    np.testing.assert_allclose(gy, [0.0, 0.0, 4.0, 0.75])
    assert np.isfinite(gx[1:]).all()


REDUCING = [("logsumexp", {}), ("logsumexp", {"axis": 1}), ("logsumexp", {"axis": (0, 2)}),
            ("logsumexp", {"axis": -1, "keepdims": True}),
            ("logsumexp", {"axis": 1, "b": np.array([[0.5], [2.0], [1.0]])}),
            ("logsumexp", {"b": 3.0, "keepdims": True}),
            ("softmax", {}), ("softmax", {"axis": 0}), ("softmax", {"axis": (1, 2)}),
            ("log_softmax", {}), ("log_softmax", {"axis": -1})]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,kw", REDUCING, ids=lambda v: str(v))
def test_reductions_match_scipy(name, kw, backend):
    x = _x((2, 3, 4)) * 10   # exp would overflow unshifted at 700
    x[0, 0, 0] = 400.0
    got = llgrad.jit(lambda x: getattr(ls, name)(x, **kw), backend=backend)(x)
    want = getattr(sc, name)(x, **kw)
    assert np.shape(got) == np.shape(want)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(getattr(ls, name)(x, **kw), want)   # outside a trace


def _central(f, x, eps=1e-6):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = eps
        g[i] = (f(x + e) - f(x - e)) / (2 * eps)
    return g


GRADIENTS = {
    "expit": lambda x: ls.expit(x), "logit": lambda x: ls.logit(ls.expit(x)),
    "erf": lambda x: ls.erf(x), "erfc": lambda x: ls.erfc(x),
    "gammaln": lambda x: ls.gammaln(x * x + 0.1),
    "gammaln_negative": lambda x: ls.gammaln(-0.5 + 0.1 * np.tanh(x)),
    "xlogy": lambda x: ls.xlogy(x, x * x + 0.5),
    "logsumexp": lambda x: ls.logsumexp(x, axis=1),
    "logsumexp_b": lambda x: ls.logsumexp(x, b=np.array([1.0, 0.0, 2.0, 0.5])),
    "softmax": lambda x: ls.softmax(x, axis=0)[0],
    "log_softmax": lambda x: ls.log_softmax(x)[1],
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(GRADIENTS))
def test_gradient_matches_central_differences(name, backend):
    f = GRADIENTS[name]
    x = _x((3, 4), seed=1)
    w = np.random.default_rng(2).standard_normal(np.shape(f(x)))

    def loss(x):
        return (f(x) * w).sum()
    got = llgrad.grad(loss, backend=backend)(x)
    np.testing.assert_allclose(got, _central(loss, x), rtol=1e-5, atol=1e-6)


def test_second_order_of_erf_and_logsumexp():
    x = _x((5,), seed=3)

    def f(x):
        return ls.erf(x).sum() + ls.logsumexp(x)
    h = llgrad.hessian(f)(x)
    g = llgrad.grad(f)
    want = np.stack([_central(lambda v: g(v)[i], x) for i in range(5)])
    np.testing.assert_allclose(h, want, rtol=1e-5, atol=1e-6)


def test_gammaln_second_derivative_is_refused_clearly():
    with pytest.raises(GradientError, match="trigamma"):
        llgrad.hessian(lambda x: ls.gammaln(x).sum())(np.array([1.5, 2.5]))


def test_digamma_series_matches_scipy():
    from llgrad.ir.primitives import digamma_reference
    x = np.concatenate([np.geomspace(1e-6, 1e6, 200), -np.linspace(0.01, 8.9, 50)])
    np.testing.assert_allclose(digamma_reference(x), sc.digamma(x), rtol=2e-13, atol=1e-13)
    # the native series: gammaln's gradient
    pos = x[x > 0]
    got = llgrad.grad(lambda v: ls.gammaln(v).sum())(pos)
    np.testing.assert_allclose(got, sc.digamma(pos), rtol=1e-13, atol=1e-14)


def test_scipys_own_ufuncs_on_traced_arrays_come_here():
    x = np.array([0.3, 1.7, 2.5])

    def f(x):
        return (sc.expit(x) + sc.erf(x) + sc.gammaln(x) + sc.xlogy(x, x) + sc.logit(x / 3)
                + sc.erfc(x)).sum()
    np.testing.assert_allclose(llgrad.jit(f)(x), f(x), rtol=1e-13)
    np.testing.assert_allclose(llgrad.grad(f)(x), _central(f, x), rtol=1e-6)


@pytest.mark.parametrize("name", ["logsumexp", "softmax", "log_softmax"])
def test_scipys_python_functions_name_the_llgrad_one(name):
    with pytest.raises(UnsupportedError, match=f"llgrad.scipy.special.{name}"):
        llgrad.jit(lambda x: getattr(sc, name)(x))(np.ones(3))


def test_return_sign_is_refused_on_traced_arrays():
    with pytest.raises(UnsupportedError, match="return_sign"):
        llgrad.jit(lambda x: ls.logsumexp(x, return_sign=True))(np.ones(3))
