"""numpy's indexing on traced arrays computes what numpy computes, natively and in the
interpreter, with gradients that match central differences: basic and advanced keys
(negative steps, integer arrays on any axis, constant boolean masks, None and ...),
np.take, np.take_along_axis, and functional updates through llgrad.numpy.at."""
import numpy as np
import pytest

import llgrad
import llgrad.numpy as lnp

R = np.random.default_rng(7)
T, F = True, False
M34 = np.array([[T, F, T, T], [F, F, F, F], [T, T, F, T]])

#: name -> (shape of x, key): every form of key numpy reads, at awkward shapes
KEYS = {
    "integer": ((5,), 3),
    "negative_integer": ((2, 5), (-1, -2)),
    "rank0_array_empty_key": ((), ()),
    "rank0_array_none": ((), None),
    "reversed": ((7,), slice(None, None, -1)),
    "step_minus_two": ((7,), slice(5, 1, -2)),
    "reversed_inner_axis": ((3, 5), (slice(None), slice(None, None, -2))),
    "reversed_on_every_axis": ((3, 4, 5), (slice(None, None, -1), slice(1, None),
                                           slice(4, 0, -3))),
    "reversed_after_integer": ((3, 4), (1, slice(None, None, -1))),
    "reversed_with_none_and_ellipsis": ((3, 4), (slice(None, None, -1), None, ...)),
    "reversed_to_nothing": ((3, 4), slice(0, 2, -1)),
    "reversed_size0": ((0, 3), slice(None, None, -1)),
    "reversed_size1": ((1, 3), (slice(None, None, -1), slice(None, None, -1))),
    "array_on_axis1": ((3, 4), (slice(None), [3, 0, -1])),
    "array_after_a_slice": ((3, 4), (slice(1, None), np.array([0, 1]))),
    "array_after_ellipsis": ((2, 3, 4), (..., [1, 1, 0])),
    "arrays_adjacent_stay": ((2, 3, 4), (slice(None), [0, 2], [1, 3])),
    "arrays_separated_go_first": ((2, 3, 4), ([0, 1], slice(None), [1, 3])),
    "integer_separates_too": ((2, 3, 4), (0, slice(None), [1, 3])),
    "integer_adjacent_to_array": ((2, 3, 4), (slice(None), 1, [1, -3])),
    "arrays_broadcast": ((3, 4), (np.array([[0], [2]]), np.array([1, 3, 0]))),
    "none_separates": ((3, 4, 5), ([0, 1], None, [1, 2])),
    "empty_ellipsis_separates": ((2, 3, 4), (slice(None), [0, 1], ..., [1, 2])),
    "array_and_reversed_slice": ((3, 4, 5), ([2, 0], slice(None, None, -1), slice(1, 4))),
    "array_2d": ((4, 3), np.array([[0, 3], [-1, 1]])),
    "repeated_indices": ((3,), [0, 0, 2, 0]),
    "nested_list": ((4,), [[0, 1], [2, 3]]),
    "empty_list": ((3, 4), (slice(None), [])),
    "empty_index_of_size0_axis": ((0, 4), np.array([], dtype=np.int64)),
    "size1_axis_repeated": ((1, 3), [0, 0, 0]),
    "mask": ((5,), np.array([T, F, T, T, F])),
    "mask_2d": ((3, 4), M34),
    "mask_leading_axes": ((3, 4, 2), M34),
    "mask_inner_axis": ((2, 3, 4), (slice(None), np.array([T, F, T]))),
    "mask_with_array": ((3, 4), (np.array([T, F, T]), [1, 3])),
    "mask_all_false": ((3, 4), np.zeros(3, bool)),
    "mask_list": ((3,), [T, F, T]),
    "bool_scalar_true": ((3,), True),
    "bool_scalar_false": ((3,), False),
    "bool_scalar_with_array": ((3, 4), ([0, 2], True)),
}


def _x(shape):
    return R.normal(size=shape)


@pytest.mark.parametrize("name", KEYS)
def test_getitem_is_numpys(name, backend):
    shape, key = KEYS[name]
    x = _x(shape)
    got = llgrad.jit(lambda a: a[key], backend=backend)(x)
    want = x[key]
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name", [n for n, (shape, key) in KEYS.items()
                                  if shape and np.empty(shape)[key].size])
def test_getitem_gradient_is_central_differences(name):
    shape, key = KEYS[name]
    x = _x(shape)
    w = _x(x[key].shape)
    llgrad.check_grad(lambda a: np.sum(a[key] * w), x)


def test_an_empty_result_has_gradient_zero(backend):
    g = llgrad.grad(lambda a: np.sum(a[:, []]) + np.sum(a[0:2:-1, None]) + a.sum(),
                    backend=backend)(_x((3, 4)))
    np.testing.assert_array_equal(g, np.ones((3, 4)))


@pytest.mark.parametrize("dtype", [np.int64, np.bool_, np.float32])
def test_every_dtype_is_indexed(dtype, backend):
    x = (R.normal(size=(3, 4)) * 4).astype(dtype)
    key = (slice(None, None, -1), [0, 3, 3])
    got = llgrad.jit(lambda a: a[key], backend=backend)(x)
    assert got.dtype == x.dtype
    np.testing.assert_array_equal(got, x[key])


# ----------------------------------------------------------------------------------
# traced index arrays

TRACED = {   # name -> (shape of x, key with the index arrays as arguments, indices)
    "rows": ((4, 3), lambda i: i, [np.array([3, -1, 0, 0])]),
    "columns": ((3, 4), lambda i: (slice(None), i), [np.array([[1, -4], [3, 3]])]),
    "two_axes_separated": ((3, 4, 5), lambda i, j: (i, slice(1, None), j),
                           [np.array([2, 0]), np.array([[4], [-1]])]),
    "with_constant_array": ((3, 4), lambda i: ([2, 0, 1], i), [np.array([0, 3, -2])]),
    "rank0_result": ((3, 4), lambda i, j: (i, j), [np.array(-2), np.array(3)]),
    "scalar_with_reversed_slice": ((3, 4), lambda i: (slice(None, None, -1), i),
                                   [np.array(1)]),
}


@pytest.mark.parametrize("name", TRACED)
def test_traced_integer_indices_are_numpys(name, backend):
    shape, key, indices = TRACED[name]
    x = _x(shape)
    got = llgrad.jit(lambda a, *i: a[key(*i)], backend=backend)(x, *indices)
    np.testing.assert_array_equal(got, x[key(*indices)])


@pytest.mark.parametrize("name", TRACED)
def test_traced_integer_indices_differentiate(name):
    shape, key, indices = TRACED[name]
    x = _x(shape)
    w = _x(x[key(*indices)].shape)
    llgrad.check_grad(lambda a, *i: np.sum(a[key(*i)] * w), x, *indices)


def test_traced_indices_are_clamped_on_their_own_axis(backend):
    """Out of range, a traced index has the size added once if negative, then is clipped
    into [0, size - 1] on its axis (never spilling into the next row)."""
    x = _x((3, 4))
    i, j = np.array([5, -1, -7, 1]), np.array([9, -9, 2, -5])
    got = llgrad.jit(lambda a, p, q: a[p, q], backend=backend)(x, i, j)
    def clamp(k, n):
        return np.clip(np.where(k < 0, k + n, k), 0, n - 1)
    np.testing.assert_array_equal(got, x[clamp(i, 3), clamp(j, 4)])


def test_a_constant_table_takes_traced_indices(backend):
    """numpy hands np.take to llgrad only for a traced array (its dispatch looks at
    ``a``, not the indices), so a constant table is indexed through llgrad.numpy."""
    table = _x((5, 2))
    got = llgrad.jit(lambda i: lnp.take(table, i, axis=0), backend=backend)(np.array([4, 0]))
    np.testing.assert_array_equal(got, table[[4, 0]])


# ----------------------------------------------------------------------------------
# np.take and np.take_along_axis

@pytest.mark.parametrize("axis", [None, 0, 1, -1])
@pytest.mark.parametrize("mode", ["raise", "clip", "wrap"])
def test_take_on_every_axis_and_mode(axis, mode, backend):
    x = _x((3, 4, 5))
    indices = np.array([[2, -1], [0, 2]]) if mode == "raise" else np.array([[7, -1], [0, -13]])
    want = np.take(x, indices, axis=axis, mode=mode)
    for given in ([indices], []):   # traced indices, then constant ones
        fn = llgrad.jit(lambda a, *i: np.take(a, i[0] if i else indices, axis=axis,
                                              mode=mode), backend=backend)
        np.testing.assert_array_equal(fn(x, *given), want)


def test_take_gradient_accumulates_repeats():
    x = _x((3, 4))
    w = _x((3, 5))
    llgrad.check_grad(lambda a: np.sum(np.take(a, [1, 1, -1, 0, 1], axis=1, mode="wrap") * w), x)


@pytest.mark.parametrize("axis", [0, 1, -1, None])
def test_take_along_axis_is_numpys(axis, backend):
    x = _x((3, 4))
    indices = R.integers(-3, 3, size=(12,) if axis is None else (2, 4) if axis == 0
                         else (3, 5))
    want = np.take_along_axis(x, indices, axis=axis)
    fn = llgrad.jit(lambda a, i: np.take_along_axis(a, i, axis=axis), backend=backend)
    np.testing.assert_array_equal(fn(x, indices), want)
    np.testing.assert_array_equal(llgrad.jit(lambda a: np.take_along_axis(
        a, indices, axis=axis), backend=backend)(x), want)


def test_take_along_axis_broadcasts_and_differentiates():
    x = _x((3, 1, 4))
    indices = np.array([[[3, 0]], [[1, 1]], [[2, 2]]]) * np.ones((1, 2, 1), np.int64)
    w = _x(np.take_along_axis(x, indices, axis=2).shape)
    np.testing.assert_array_equal(llgrad.jit(lambda a: np.take_along_axis(a, indices, 2))(x),
                                  np.take_along_axis(x, indices, 2))
    llgrad.check_grad(lambda a: np.sum(np.take_along_axis(a, indices, axis=2) * w), x)


def test_argmax_picks_through_take_along_axis(backend):
    x = _x((4, 5))
    fn = llgrad.jit(lambda a: np.take_along_axis(a, np.argmax(a, axis=1)[:, None], axis=1),
                    backend=backend)
    np.testing.assert_array_equal(fn(x), x.max(axis=1, keepdims=True))


# ----------------------------------------------------------------------------------
# functional updates: llgrad.numpy.at

UPDATES = {   # name -> (shape of x, key, shape of the values)
    "integer": ((4,), 2, ()),
    "row": ((3, 4), -1, (4,)),
    "slice_broadcast": ((3, 4), (slice(None), slice(1, 3)), (3, 1)),
    "reversed": ((5,), slice(None, None, -2), (3,)),
    "array_on_axis1": ((3, 4), (slice(None), [3, 0]), (3, 2)),
    "repeated": ((4,), [0, 2, 0, 0], (4,)),
    "repeated_rows": ((3, 2), ([1, 1, 2, 1],), (4, 2)),
    "separated_arrays": ((2, 3, 4), ([1, 1, 0], slice(None), [3, 3, 0]), (3, 3)),
    "mask": ((3, 4), M34, ()),
    "everything": ((2, 3), ..., (2, 3)),
    "nothing": ((2, 3), (slice(None), []), ()),
    "rank0": ((), (), ()),
}


def _values(name):
    shape, key, vshape = UPDATES[name]
    return _x(shape), key, _x(vshape)


@pytest.mark.parametrize("name", UPDATES)
def test_at_set_is_numpys_assignment(name, backend):
    """Where a constant index repeats, the last value stays, as in numpy."""
    x, key, v = _values(name)
    want = x.copy()
    want[key] = v
    got = llgrad.jit(lambda a, b: lnp.at(a)[key].set(b), backend=backend)(x, v)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(lnp.at(x)[key].set(v), want)   # numpy outside a trace


@pytest.mark.parametrize("name", UPDATES)
def test_at_add_is_np_add_at(name, backend):
    x, key, v = _values(name)
    want = x.copy()
    np.add.at(want, key, v)
    got = llgrad.jit(lambda a, b: lnp.at(a)[key].add(b), backend=backend)(x, v)
    np.testing.assert_allclose(got, want, rtol=1e-15)


@pytest.mark.parametrize("name", ["row", "reversed", "repeated", "separated_arrays", "mask"])
@pytest.mark.parametrize("method", ["set", "add"])
def test_at_updates_differentiate_in_the_array_and_the_values(name, method):
    x, key, v = _values(name)
    w = _x(x.shape)
    llgrad.check_grad(lambda a, b: np.sum(getattr(lnp.at(a)[key], method)(b * b) * w), x, v,
                      argnums=(0, 1))


def test_at_add_with_traced_repeated_indices_accumulates(backend):
    x, v = _x((4, 3)), _x((5, 3))
    i, j = np.array([1, 3, 1, -1, 1]), np.array([0, 2, 0, 2, 0])
    want = x.copy()
    np.add.at(want, (i, j), v[:, 0])
    np.add.at(want, i, v)
    fn = llgrad.jit(lambda a, b, p, q: lnp.at(lnp.at(a)[p, q].add(b[:, 0]))[p].add(b),
                    backend=backend)
    np.testing.assert_allclose(fn(x, v, i, j), want, rtol=1e-15)


def test_at_set_with_distinct_traced_indices(backend):
    x, v, i = _x((5, 2)), _x((3, 2)), np.array([4, 0, -4])
    want = x.copy()
    want[i] = v
    got = llgrad.jit(lambda a, b, p: lnp.at(a)[p].set(b), backend=backend)(x, v, i)
    np.testing.assert_array_equal(got, want)
    llgrad.check_grad(lambda a, b: np.sum(lnp.at(a)[i].set(b) ** 2), x, v, argnums=(0, 1))


def test_at_with_a_traced_mask_is_where(backend):
    x = _x((3, 4))
    row = _x(4)
    got = llgrad.jit(lambda a, r: (lnp.at(a)[a[:, 0] > 0].set(r), lnp.at(a)[a > 0].add(1.5)),
                     backend=backend)(x, row)
    want_set, want_add = x.copy(), x.copy()
    want_set[x[:, 0] > 0] = row
    want_add[x > 0] += 1.5
    np.testing.assert_array_equal(got[0], want_set)
    np.testing.assert_array_equal(got[1], want_add)


@pytest.mark.parametrize("dtype", [np.int64, np.bool_])
def test_at_updates_integer_and_bool_arrays(dtype, backend):
    x = (R.normal(size=(3, 4)) * 4).astype(dtype)
    v = np.array([1, 0, 1]).astype(dtype)
    key = ([2, 0, 2], [1, 1, 1])
    want_set, want_add = x.copy(), x.copy()
    want_set[key] = v
    np.add.at(want_add, key, v)
    got = llgrad.jit(lambda a, b: (lnp.at(a)[key].set(b), lnp.at(a)[key].add(b)),
                     backend=backend)(x, v)
    assert got[0].dtype == got[1].dtype == x.dtype
    np.testing.assert_array_equal(got[0], want_set)
    np.testing.assert_array_equal(got[1], want_add)


def test_at_get_is_getitem(backend):
    x = _x((3, 4))
    got = llgrad.jit(lambda a: lnp.at(a)[::-1, [0, 0]].get(), backend=backend)(x)
    np.testing.assert_array_equal(got, x[::-1, [0, 0]])


@pytest.mark.parametrize("axis", [0, 1, None])
def test_put_along_axis_not_in_place(axis, backend):
    x = _x((3, 4))
    indices = np.array([[0], [3], [1]]) if axis == 1 else np.array([[2, 0, 1, 2]]) \
        if axis == 0 else np.array([11, 0])
    v = _x(indices.shape)
    want = x.copy()
    np.put_along_axis(want, indices, v, axis)
    got = llgrad.jit(lambda a, b, i: lnp.put_along_axis(a, i, b, axis, inplace=False),
                     backend=backend)(x, v, indices)
    np.testing.assert_array_equal(got, want)


# ----------------------------------------------------------------------------------
# second derivatives

def _reindexed(x):
    return np.sum(x[::-1] ** 2 * x[[0, 2, 2]] + np.take_along_axis(x, np.array([1, 1, 0]), 0)
                  * lnp.at(x)[[0, 0]].add(x[1:]) ** 2)


def test_hessian_through_indexing_matches_differences_of_the_gradient(backend):
    x = _x(3)
    h = llgrad.hessian(_reindexed, backend=backend)(x)
    grad = llgrad.grad(_reindexed, backend="interpret")
    eps = 1e-6
    columns = [(grad(x + eps * e) - grad(x - eps * e)) / (2 * eps) for e in np.eye(3)]
    np.testing.assert_allclose(h, np.stack(columns, axis=1), rtol=1e-6, atol=1e-8)


def test_gradient_of_a_gradient_through_a_gather(backend):
    """f's gradient is 3x² times how often each column is gathered; the gradient of its
    product with u is 6xu times that count."""
    def f(x):
        return np.sum(x[:, [2, 0, 2]] ** 3)

    x, u = _x((2, 3)), _x((2, 3))
    got = llgrad.grad(lambda a: np.sum(llgrad.grad(f)(a) * u), backend=backend)(x)
    np.testing.assert_allclose(got, 6 * np.array([1, 0, 2]) * x * u, rtol=1e-12)


# ----------------------------------------------------------------------------------
# what is refused, and why

def test_a_traced_boolean_mask_is_refused_naming_np_where(backend):
    with pytest.raises(llgrad.UnsupportedError, match="boolean mask.*np.where"):
        llgrad.jit(lambda x: x[x > 0], backend=backend)(_x(3))


def test_item_assignment_names_the_functional_update(backend):
    def assign(x):
        x[0] = 1.0
        return x

    with pytest.raises(llgrad.UnsupportedError,
                       match=r"immutable.*llgrad\.numpy\.at\(x\)\[key\]\.set\(v\).*np\.where"):
        llgrad.jit(assign, backend=backend)(_x(3))


def test_np_put_along_axis_in_place_is_refused(backend):
    with pytest.raises(llgrad.UnsupportedError, match="inplace=False"):
        llgrad.jit(lambda x: np.put_along_axis(x, np.array([0]), 1.0, 0), backend=backend)(_x(3))


@pytest.mark.parametrize("key,words", [
    (np.array([0, 3]), "index 3 is out of bounds for axis 0 with size 3"),
    ((slice(None), [-5]), "index -5 is out of bounds for axis 1 with size 4"),
    (np.array([T, F]), "boolean index did not match indexed array along axis 0"),
    ((0, 0, 0), "too many indices"),
    ((..., ...), "single ellipsis"),
    (slice(None, None, 0), "slice step cannot be zero"),
], ids=["array", "negative", "mask", "too_many", "ellipses", "step0"])
def test_bad_constant_keys_are_numpys_errors(key, words, backend):
    with pytest.raises(llgrad.ShapeError, match=words):
        llgrad.jit(lambda x: x[key], backend=backend)(_x((3, 4)))


def test_index_arrays_must_be_integers(backend):
    with pytest.raises(llgrad.UnsupportedError, match="integer"):
        llgrad.jit(lambda x: x[np.array([0.0, 1.0])], backend=backend)(_x(3))


def test_values_must_broadcast_to_the_updated_part(backend):
    with pytest.raises(llgrad.ShapeError, match=r"could not broadcast .* \(3,\) .* \(2,\)"):
        llgrad.jit(lambda x: lnp.at(x)[[0, 1]].set(np.ones(3)), backend=backend)(_x(3))
