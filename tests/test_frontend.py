"""Plain numpy code traced by llgrad computes what numpy computes (the oracle is
the same function run by numpy itself)."""
import numpy as np
import pytest

import llgrad
import llgrad.numpy as lnp

R = np.random.default_rng(0)
A = R.normal(size=(3, 4))
B = R.normal(size=(4, 5))
V = R.normal(size=4)
T3 = R.normal(size=(2, 3, 4))
POS = R.uniform(0.5, 2.0, size=(3, 4))

CASES = {
    "arith_scalars": (lambda x: 2 * x + 3 - x / 4 - 1.5 / (x * x + 1), [A]),
    "neg_pos_abs": (lambda x: -x + (+x) * abs(x), [A]),
    "broadcast_row": (lambda x, v: x * v + v, [A, V]),
    "broadcast_col": (lambda x: x - x.mean(axis=1, keepdims=True), [A]),
    "broadcast_3d": (lambda t, x: t * x[None] + x, [T3, R.normal(size=(3, 1))]),
    "pow_const": (lambda x: x ** 2 + x ** 3 + x ** 0.5 + x ** -1 + x ** 1.7, [POS]),
    "pow_traced": (lambda x, y: x ** y, [POS, A]),
    "unary_math": (lambda x: np.exp(x) + np.sin(x) * np.cos(x) + np.tanh(x) + np.sign(x)
                   + np.expm1(x) - np.square(x), [A]),
    "log_family": (lambda x: np.log(x) + np.log1p(x) + np.sqrt(x) + np.reciprocal(x), [POS]),
    "max_min": (lambda x, y: np.maximum(x, y) - np.minimum(x, 0.0), [A, A.T.reshape(3, 4)]),
    "where_compare": (lambda x: np.where(x > 0, x, 0.1 * x) + (x <= 0.5) * 1.0
                      + np.where(x == x, 1.0, 0.0), [A]),
    "clip": (lambda x: np.clip(x, -0.5, 0.7) + x.clip(None, 0.2), [A]),
    "sum_all": (lambda t: t.sum() + np.sum(t) * 2, [T3]),
    "mean_max_min": (lambda t: t.mean(axis=0) + t.max(axis=0) - np.min(t, axis=0), [T3]),
    "var_std": (lambda t: np.var(t, axis=(0, 2)) + t.std(axis=1).sum(), [T3]),
    "negative_axes": (lambda t: t.sum(axis=-1) + t.max(axis=(-2, -1), keepdims=True)[..., 0], [T3]),
    "matmul_2d": (lambda x, w: x @ w, [A, B]),
    "matmul_vec": (lambda x, v: x @ v + v @ x.T @ x @ v, [A, V]),
    "matmul_batch": (lambda t, w: t @ w, [T3, B]),
    "matmul_batch_bcast": (lambda t, w: np.matmul(w[None, :3, :2], t[:, :2, :]), [T3, B]),
    "dot_nd": (lambda t, w: np.dot(t, w), [T3, B]),
    "dot_vec": (lambda v: np.dot(v, v) + v.dot(v), [V]),
    "tensordot": (lambda t, w: np.tensordot(t, w, axes=([2], [0])), [T3, B]),
    "outer": (lambda v: np.outer(v, v), [V]),
    "reshape": (lambda t: t.reshape(6, -1) + np.reshape(t, (6, 4)) + t.reshape((-1, 4)), [T3]),
    "transpose": (lambda t: t.transpose(2, 0, 1) + np.transpose(t, (2, 0, 1)) + t.T.transpose((0, 2, 1)), [T3]),
    "swapaxes": (lambda t: np.swapaxes(t, 0, 2), [T3]),
    "broadcast_to": (lambda v: np.broadcast_to(v, (3, 4)) * 2, [V]),
    "concatenate": (lambda x, y: np.concatenate([x, y, x], axis=1)
                    + np.concatenate([x, y, x], axis=-1), [A, R.normal(size=(3, 2))]),
    "concat_axis0": (lambda x: np.concatenate((x, x * 2)), [A]),
    "stack": (lambda x: np.stack([x, 2 * x], axis=1), [A]),
    "expand_squeeze": (lambda x: np.squeeze(np.expand_dims(x, 1), axis=1) + x[:, None, :].squeeze(), [A]),
    "index_int": (lambda t: t[1] + t[-1, 2][None, :].sum() + t[0, 1, 2], [T3]),
    "index_slices": (lambda t: t[:, 1:, ::2] * t[..., 1:3][:, :2, ::1].sum(), [T3]),
    "index_newaxis": (lambda x: x[None, :, None, 1:3], [A]),
    "iterate": (lambda x: sum(row * i for i, row in enumerate(x)), [A]),
    "ravel": (lambda t: t.ravel() + t.flatten() + np.ravel(t), [T3]),
    "zeros_ones_like": (lambda x: np.zeros_like(x) + np.ones_like(x) * x + np.full_like(x, 2.5), [A]),
    "astype": (lambda x: x.astype(np.float32).astype(np.float64), [A]),
    "softmax": (lambda x: lnp.softmax(x, axis=1) + lnp.log_softmax(x) + lnp.relu(x), [A]),
    "logsumexp": (lambda x: lnp.logsumexp(x * 100, axis=1) + lnp.sigmoid(x).sum(), [A]),
    "int_inputs": (lambda x, i: x * i + i, [A, np.arange(4)]),
    "bool_sum": (lambda x: (x > 0).sum(axis=0) + np.sum(x > 0), [A]),
    "numpy_constant": (lambda x: x * np.arange(4.0) + np.float64(2.0), [A]),
    "rank0": (lambda s: s * s + 1.0, [np.float64(3.0)]),
    "size0": (lambda z, x: z.sum() + x, [np.zeros((0, 3)), A[0, :3]]),
    "nan_inf": (lambda x: np.maximum(x, np.nan) + np.minimum(x, np.inf), [A]),
    "einsum_matmul": (lambda x, w: np.einsum("ij,jk->ik", x, w) + np.einsum("ij,jk", x, w), [A, B]),
    "einsum_batch": (lambda t, w: np.einsum("bij,jk->bki", t, w) * 2, [T3, B]),
    "einsum_reduce": (lambda t, x: np.einsum("bij,ij->b", t, x) + np.einsum("bij->j", t).sum()
                      + np.einsum("ij->ji", x).sum(), [T3, R.normal(size=(3, 4))]),
    "argmax_argmin": (lambda x: np.argmax(x, axis=1)[:, None] + x.argmin(axis=0) + np.argmax(x)
                      + np.argmax(x, axis=0, keepdims=True), [np.round(A, 1)]),
    "norm": (lambda t: np.linalg.norm(t) + np.linalg.norm(t, axis=1) + np.linalg.norm(t[0], "fro"),
             [T3]),
    "more_math": (lambda x: np.log2(x) + np.log10(x) + np.exp2(x) + np.sinh(x) * np.cosh(x)
                  + np.tan(x) + np.hypot(x, 2.0), [POS]),
    "gather_rows": (lambda t: t[np.array([1, 0, -1, 1])] + t[[0, 0, 1, 1]], [T3]),
    "gather_pairs": (lambda x, i: x[np.arange(3), i] + x[i[1:], :][:, 1].sum(), [A, np.array([3, 0, 2])]),
    "gather_2d_index": (lambda x: x[np.array([[0, 2], [1, 1]])], [A]),
    "np_take": (lambda t: np.take(t, [3, 0], axis=2) + np.take(t, [[1], [0]], axis=1).sum()
                + np.take(t, [5, 23]).sum(), [T3]),
    "bool_logic": (lambda x: np.where((x > 0) & (x < 1) | ~(x > -0.5) ^ (x > 0.3), x, -x)
                   + np.logical_and(x > 0, True) * 1.0 + np.logical_not(x > 0)
                   + ((x > 0) + (x < 0.5)) * 2.0 + ((x > 0) * (x < 0.5)), [A]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_jit_matches_numpy(name, backend):
    fn, args = CASES[name]
    expected = fn(*args)
    got = llgrad.jit(fn, backend=backend)(*args)
    assert np.asarray(got).dtype == np.asarray(expected).dtype
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_float32_stays_float32_with_python_scalars(backend):
    x = A.astype(np.float32)
    got = llgrad.jit(lambda x: 2.0 * x + 1, backend=backend)(x)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, 2.0 * x + 1)


def test_numpy_scalars_promote_like_numpy(backend):
    x = A.astype(np.float32)
    got = llgrad.jit(lambda x: x * np.float64(2.0), backend=backend)(x)
    assert got.dtype == (x * np.float64(2.0)).dtype


def test_pytree_outputs_keep_structure(backend):
    f = llgrad.jit(lambda p: {"a": p["x"] * 2, "b": [p["y"], (p["x"].sum(),)]}, backend=backend)
    out = f({"x": A, "y": V})
    np.testing.assert_array_equal(out["a"], A * 2)
    np.testing.assert_array_equal(out["b"][0], V)
    assert isinstance(out["b"][1], tuple)
    np.testing.assert_allclose(out["b"][1][0], A.sum(), rtol=1e-13)


def test_new_shape_retraces_and_caches(backend):
    calls = []

    def f(x):
        calls.append(x.shape)
        return (x * x).sum()

    jf = llgrad.jit(f, backend=backend)
    assert np.isclose(jf(A), (A * A).sum())
    assert np.isclose(jf(B), (B * B).sum())
    assert np.isclose(jf(A + 1), ((A + 1) ** 2).sum())
    assert calls == [A.shape, B.shape]


def test_static_argnums_specialise(backend):
    f = llgrad.jit(lambda x, axis: x.sum(axis=axis), static_argnums=1, backend=backend)
    np.testing.assert_allclose(f(A, 0), A.sum(0), rtol=1e-13)
    np.testing.assert_allclose(f(A, 1), A.sum(1), rtol=1e-13)


def test_llgrad_numpy_runs_numpy_outside_a_trace():
    np.testing.assert_allclose(lnp.softmax(A, axis=1).sum(axis=1), np.ones(3))
    np.testing.assert_array_equal(lnp.tanh(A), np.tanh(A))


def test_keyword_arguments_are_static(backend):
    f = llgrad.jit(lambda x, axis=0, scale=1.0: x.sum(axis=axis) * scale, backend=backend)
    np.testing.assert_allclose(f(A, axis=1, scale=2.0), A.sum(axis=1) * 2.0, rtol=1e-13)
    np.testing.assert_allclose(f(A), A.sum(axis=0), rtol=1e-13)
    with pytest.raises(llgrad.LlgradError, match="hashable"):
        f(A, scale=np.ones(3))


def test_jit_inside_another_trace_is_inlined(backend):
    inner = llgrad.jit(lambda x: np.tanh(x) * 2, backend=backend)
    g = llgrad.grad(lambda x: inner(x).sum(), backend=backend)(A)
    np.testing.assert_allclose(g, 2 * (1 - np.tanh(A) ** 2), rtol=1e-12)
