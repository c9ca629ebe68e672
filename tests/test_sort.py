"""np.sort, np.argsort, np.partition, np.argpartition on traced arrays
(``compiler/frontend/numpy_sort.py``, the ``argsort`` primitive and its native merge
sort in ``compiler/codegen/sort.py``).

numpy is the oracle: values bit for bit (signed zeros and NaN included) against
``kind='stable'``, the order llgrad documents, at awkward shapes, every axis, every
dtype, native code and the interpreter alike.  Gradients (through the permutation)
are checked against central differences at points without ties, first and second
order, reverse and forward mode."""
import numpy as np
import pytest
from helpers import central_jacobian

import llgrad
from llgrad.check import check_grad, numerical_grad
from llgrad.ir.errors import LlgradError, UnsupportedError

BACKENDS = ("native", "interpret")
RNG = np.random.default_rng(19)


def _data(shape, dtype, rng=RNG):
    """Values with ties, and for floats NaN, infinities and both zeros among them."""
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if dtype == "int64":
        return rng.integers(-3, 4, shape)
    pool = np.array([np.nan, 0.0, -0.0, 1.5, -2.0, np.inf, -np.inf, 3.25, 1.5, 7.0])
    x = np.where(rng.random(shape) < 0.5, rng.choice(pool, shape), rng.standard_normal(shape))
    return x.astype(dtype)


def assert_same(got, want):
    """Same dtype and shape, same values bit for bit (the sign of a zero too)."""
    got, want = np.asarray(got), np.asarray(want)
    assert (got.dtype, got.shape) == (want.dtype, want.shape)
    np.testing.assert_array_equal(got, want)
    if want.dtype.kind == "f":
        numbers = ~np.isnan(want)
        np.testing.assert_array_equal(np.signbit(got[numbers]), np.signbit(want[numbers]))


SHAPES_AXES = [((0,), -1), ((1,), 0), ((5,), -1), ((3, 4), -1), ((3, 4), 0), ((3, 4), -2),
               ((2, 3, 17), 1), ((2, 0, 3), 1), ((2, 40), -1), ((3, 4), None), ((), None),
               ((1, 1), 0), ((300,), 0)]


@pytest.mark.parametrize("shape,axis", SHAPES_AXES, ids=str)
@pytest.mark.parametrize("dtype", ["float64", "float32", "int64", "bool"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_sort_and_argsort_match_numpys_stable_order(shape, axis, dtype, backend):
    x = _data(shape, dtype)
    sort = llgrad.jit(lambda a: np.sort(a, axis=axis), backend=backend)
    argsort = llgrad.jit(lambda a: np.argsort(a, axis=axis), backend=backend)
    assert_same(sort(x), np.sort(x, axis=axis, kind="stable"))
    assert_same(argsort(x), np.argsort(x, axis=axis, kind="stable"))


def test_native_sort_agrees_with_the_interpreter_on_long_rows_with_ties_and_nan():
    """Rows long enough for several merge passes (and a run left over at the end)."""
    x = _data((3, 1000), "float64")
    for fn in (lambda a: np.argsort(a), lambda a: np.sort(a, axis=0)):
        assert_same(llgrad.jit(fn)(x), llgrad.jit(fn, backend="interpret")(x))
    assert_same(llgrad.jit(lambda a: np.argsort(a))(x), np.argsort(x, kind="stable"))


def test_ties_keep_their_order_and_nan_comes_last():
    x = np.array([2.0, np.nan, -0.0, 1.0, 0.0, np.nan, 1.0, -np.inf])
    assert_same(llgrad.jit(lambda a: np.argsort(a))(x), np.array([7, 2, 4, 3, 6, 0, 1, 5]))
    assert_same(llgrad.jit(lambda a: np.sort(a))(x), np.sort(x, kind="stable"))


@pytest.mark.parametrize("kind", [None, "quicksort", "mergesort", "heapsort", "stable"])
def test_every_kind_is_accepted_and_gives_the_stable_order(kind):
    x = _data((4, 9), "int64")
    got = llgrad.jit(lambda a: np.argsort(a, kind=kind))(x)
    assert_same(got, np.argsort(x, kind="stable"))
    assert_same(llgrad.jit(lambda a: np.sort(a, stable=True))(x), np.sort(x))


def test_the_argsort_method_and_rank_0_as_numpy():
    x = _data((3, 5), "float64")
    assert_same(llgrad.jit(lambda a: a.argsort(axis=0))(x), np.argsort(x, axis=0, kind="stable"))
    assert_same(llgrad.jit(lambda a: np.sort(a, axis=None))(np.float64(2.5)), np.array([2.5]))
    with pytest.raises(LlgradError, match="out of bounds for an array of dimension 0"):
        llgrad.jit(lambda a: np.sort(a))(np.float64(2.5))


@pytest.mark.parametrize("kth", [0, 3, -1, [1, 4], (0, -2)])
@pytest.mark.parametrize("backend", BACKENDS)
def test_partition_puts_the_kth_elements_in_place(kth, backend):
    """A partition's defining property: the k-th elements are where a sort puts them,
    nothing after one is less, nothing before one greater (numpy's own result is one
    such arrangement; ours is the sorted one)."""
    x = _data((4, 6), "float64")
    part = llgrad.jit(lambda a: np.partition(a, kth), backend=backend)(x)
    perm = llgrad.jit(lambda a: np.argpartition(a, kth, axis=-1), backend=backend)(x)
    for k in np.ravel(kth) % 6:
        np.testing.assert_array_equal(part[:, k], np.partition(x, kth)[:, k])
        np.testing.assert_array_equal(np.take_along_axis(x, perm, -1)[:, k], part[:, k])
        for row, value in zip(part, part[:, k]):
            assert not np.any(row[:k] > value) and not np.any(row[k + 1:] < value)


def test_partition_checks_kth_as_numpy():
    with pytest.raises(LlgradError, match=r"kth\(=6\) out of bounds \(6\)"):
        llgrad.jit(lambda a: np.partition(a, 6))(np.ones(6))
    with pytest.raises(LlgradError, match="kth must be an integer"):
        llgrad.jit(lambda a: np.partition(a, 1.5))(np.ones(6))


def test_unique_and_in_place_sorts_are_refused_clearly():
    with pytest.raises(UnsupportedError, match="depends on the data"):
        llgrad.jit(lambda a: np.unique(a))(np.ones(3))
    with pytest.raises(UnsupportedError, match=r"in place.*np\.sort"):
        llgrad.jit(lambda a: a.sort())(np.ones(3))
    with pytest.raises(UnsupportedError, match="order"):
        llgrad.jit(lambda a: np.sort(a, order="x"))(np.ones(3))
    with pytest.raises(LlgradError, match="sort kind"):
        llgrad.jit(lambda a: np.sort(a, kind="bogus"))(np.ones(3))


# ----------------------------------------------------------------------------------
# derivatives: through the permutation, away from ties

X = np.array([[0.3, -1.2, 2.5, 0.7, -0.1], [1.9, -0.6, 0.05, -2.2, 1.1]])
W = np.arange(10.0).reshape(2, 5) - 3.0


def _weighted_sort(a):
    return np.sum(W * np.sort(a, axis=-1) ** 3)


def _gathered_by_argsort(a):
    return np.sum(W.T * np.take_along_axis(a, np.argsort(a, axis=0), axis=0) ** 2)


def _order_statistics(a):
    return np.median(a) + np.sum(np.percentile(a, [10, 75], axis=1) ** 2)


FUNCTIONS = {"sort": (_weighted_sort, X), "argsort": (_gathered_by_argsort, X.T),
             "median_percentile": (_order_statistics, X),
             "partition": (lambda a: np.sum(W * np.partition(a, 2) ** 2), X)}


@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_reverse_gradient_matches_central_differences(name, backend):
    fn, x = FUNCTIONS[name]
    check_grad(fn, x, backend=backend, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_forward_gradient_matches_central_differences(name):
    fn, x = FUNCTIONS[name]
    np.testing.assert_allclose(llgrad.jacfwd(fn)(x), numerical_grad(fn, (x,), 0, 1e-6),
                               rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", ["sort", "argsort", "median_percentile"])
def test_second_derivatives_match_central_differences_of_the_gradient(name):
    """Forward over reverse (hessian) and reverse over reverse, against central
    differences of the gradient itself (native code)."""
    fn, x = FUNCTIONS[name]
    want = central_jacobian(llgrad.grad(fn), x)
    np.testing.assert_allclose(llgrad.hessian(fn)(x), want, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(llgrad.jacrev(llgrad.grad(fn))(x), want, rtol=1e-6, atol=1e-7)


def test_gradient_of_sorted_values_is_the_adjoint_sent_back_through_the_permutation():
    x = np.array([3.0, -1.0, 2.0, 0.5])
    weights = np.array([10.0, 20.0, 30.0, 40.0])
    got = llgrad.grad(lambda a: np.sum(weights * np.sort(a)))(x)
    assert_same(got, np.array([40.0, 10.0, 30.0, 20.0]))


def test_vmap_of_sort_sorts_each_example():
    x = _data((4, 7), "float64")
    assert_same(llgrad.vmap(lambda a: np.sort(a))(x), np.sort(x, axis=-1, kind="stable"))
