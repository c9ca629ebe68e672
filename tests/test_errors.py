"""Bad input gets a clear llgrad error naming the function, the op, the shapes and
the user's source line: never a crash, a verifier dump or a silent wrong answer."""
import inspect

import numpy as np
import pytest

import llgrad

A = np.ones((3, 4))


def _line_of(fn, text):
    lines, start = inspect.getsourcelines(fn)
    return start + next(i for i, line in enumerate(lines) if text in line)


def mismatched(x, w):
    h = x @ w
    return h.sum()


def test_matmul_shape_mismatch_names_op_shapes_function_and_line(backend):
    with pytest.raises(llgrad.ShapeError) as info:
        llgrad.grad(mismatched, backend=backend)(np.ones((3, 4)), np.ones((5, 6)))
    message = str(info.value)
    assert "matmul" in message and "(3, 4)" in message and "(5, 6)" in message
    assert "mismatched()" in message
    assert f"test_errors.py:{_line_of(mismatched, 'x @ w')}" in message


def test_broadcast_mismatch_names_shapes(backend):
    with pytest.raises(llgrad.ShapeError, match=r"add.*\(3, 4\).*\(5,\)"):
        llgrad.jit(lambda x, y: x + y, backend=backend)(A, np.ones(5))


def test_grad_of_non_scalar_output(backend):
    def vector_valued(x):
        return np.tanh(x)

    with pytest.raises(llgrad.GradientError, match=r"vector_valued\(\).*f64\[3,4\]"):
        llgrad.grad(vector_valued, backend=backend)(A)


def test_grad_with_respect_to_integers(backend):
    with pytest.raises(llgrad.GradientError, match=r"i64\[4\].*float"):
        llgrad.grad(lambda n: (n * 2.0).sum(), backend=backend)(np.arange(4))


@pytest.mark.parametrize("value", [np.ones(3, dtype=complex), np.array(["a", "b"]),
                                   np.array([object(), object()]), 1j])
def test_unsupported_dtypes(value, backend):
    with pytest.raises(llgrad.DTypeError, match="not supported"):
        llgrad.jit(lambda x: x, backend=backend)(value)


def test_complex_constant_inside_trace(backend):
    with pytest.raises(llgrad.DTypeError, match="complex"):
        llgrad.jit(lambda x: x * 1j, backend=backend)(A)


def uses_cbrt(x):
    return np.cbrt(x).sum()


def uses_eig(x):
    return np.linalg.eig(x)


@pytest.mark.parametrize("fn,name,text", [(uses_cbrt, "np.cbrt", "np.cbrt"),
                                          (uses_eig, "np.linalg.eig", "np.linalg.eig")])
def test_unsupported_numpy_function_is_named_with_line(fn, name, text, backend):
    with pytest.raises(llgrad.UnsupportedError) as info:
        llgrad.grad(fn, backend=backend)(np.eye(3))
    message = str(info.value)
    assert name in message
    assert f"test_errors.py:{_line_of(fn, text)}" in message


def test_python_control_flow_on_values_is_explained(backend):
    def branchy(x):
        if x.sum() > 0:
            return x.sum()
        return -x.sum()

    with pytest.raises(llgrad.UnsupportedError, match="np.where"):
        llgrad.grad(branchy, backend=backend)(A)


def test_converting_a_tracer_to_numpy_is_explained(backend):
    with pytest.raises(llgrad.UnsupportedError, match="trace time"):
        llgrad.jit(lambda x: np.asarray(x) * 2, backend=backend)(A)


def test_index_out_of_bounds(backend):
    with pytest.raises(llgrad.ShapeError, match="out of bounds"):
        llgrad.jit(lambda x: x[3], backend=backend)(A)


def test_boolean_masks_are_unsupported_not_wrong(backend):
    with pytest.raises(llgrad.UnsupportedError, match="boolean masks"):
        llgrad.jit(lambda x: x[x > 0], backend=backend)(A)


def test_constant_index_arrays_are_bounds_checked(backend):
    with pytest.raises(llgrad.ShapeError, match="index 3 is out of bounds for axis 0 with size 3"):
        llgrad.jit(lambda x: x[np.array([0, 3])], backend=backend)(A)


def test_traced_index_arrays_are_clamped_never_out_of_bounds(backend):
    got = llgrad.jit(lambda x, i: x[i], backend=backend)(np.arange(4.0), np.array([-1, 7, -9]))
    np.testing.assert_array_equal(got, [3.0, 3.0, 0.0])  # -1 wraps as in numpy; 7, -9 clamp


def test_errors_are_llgrad_errors():
    assert issubclass(llgrad.ShapeError, llgrad.LlgradError)
    assert issubclass(llgrad.ShapeError, ValueError)
    assert issubclass(llgrad.DTypeError, TypeError)


def test_item_assignment_explains_immutability(backend):
    def assign(x):
        x[0] = 1.0
        return x

    with pytest.raises(llgrad.UnsupportedError, match="immutable.*np.where"):
        llgrad.jit(assign, backend=backend)(A)


@pytest.mark.parametrize("fn", [lambda x: divmod(x, 2), lambda x: x.astype(np.int64) << 1,
                                lambda x: x.astype(np.int64) & 3])
def test_unsupported_operators_are_llgrad_errors(fn, backend):
    with pytest.raises(llgrad.UnsupportedError):
        llgrad.jit(fn, backend=backend)(A)


def test_indices_from_nan_and_inf_stay_in_bounds(backend):
    """float -> int conversion saturates (NaN gives 0), so computed indices are defined
    integers, and the gather clamps them: never a read outside the array."""
    values = np.array([1.7, np.nan, np.inf, -np.inf, 1e30, -1e30])
    got = llgrad.jit(lambda v, y: v[y.astype(np.int64)], backend=backend)(np.arange(5.0), values)
    assert got.shape == (6,) and np.all((got >= 0) & (got <= 4))
    assert got[0] == 1.0
