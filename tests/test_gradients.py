"""Gradients agree with central finite differences of the original numpy code
(``llgrad.check_grad``), including broadcasting and reductions over every axis
combination."""
import itertools

import numpy as np
import pytest

from models import mlp_loss

import llgrad
import llgrad.numpy as lnp

R = np.random.default_rng(7)
A = R.normal(size=(3, 4))
V = R.normal(size=4)
T3 = R.normal(size=(2, 3, 4))
POS = R.uniform(0.5, 2.0, size=(3, 4))


def mlp_data(dtype=np.float64):
    params = {"w1": R.normal(size=(5, 7)), "b1": R.normal(size=7) * 0.1,
              "w2": R.normal(size=(7, 3)), "b2": R.normal(size=3) * 0.1}
    x = R.normal(size=(6, 5))
    y = np.eye(3)[R.integers(0, 3, 6)]
    return {k: v.astype(dtype) for k, v in params.items()}, x.astype(dtype), y.astype(dtype)


SCALAR_FUNCTIONS = {
    "poly": (lambda x: ((2 * x + 3) ** 2 * x - x / (x * x + 1)).sum(), [A]),
    "exp_log": (lambda x: (np.exp(x) * np.log(x) + np.log1p(x) - np.expm1(-x)).sum(), [POS]),
    "trig": (lambda x: (np.sin(x) * np.cos(2 * x) + np.tanh(x)).sum(), [A]),
    "sqrt_abs": (lambda x: (np.sqrt(x) + np.abs(x - 1.1) * np.sign(x - 0.9)).sum(), [POS]),
    "pow": (lambda x, y: (x ** y).sum() + (x ** 3.5).sum(), [POS, A]),
    "divide_both": (lambda x, y: (x / y).sum(), [A, POS]),
    "max_min": (lambda x, y: (np.maximum(x, y) * np.minimum(x, 0.3)).sum(), [A, A[::-1] * 1.1]),
    "where": (lambda x: np.where(x > 0, x * x, np.sin(x)).sum(), [A]),
    "relu_sigmoid": (lambda x: (lnp.relu(x) + lnp.sigmoid(3 * x)).sum(), [A]),
    "broadcast": (lambda x, v: ((x * v + v) ** 2).sum(), [A, V]),
    "broadcast_col": (lambda x, c: (x / c).sum(), [A, POS[:, :1]]),
    "broadcast_scalar": (lambda s, x: (s * x + s ** 2).sum(), [np.float64(1.3), A]),
    "matmul": (lambda x, w: np.tanh(x @ w).sum(), [A, R.normal(size=(4, 2))]),
    "matmul_vec": (lambda x, v: (x @ v) @ (x @ v), [A, V]),
    "matmul_batch": (lambda t, w: (t @ w).sum() + ((t @ w) ** 2).sum(), [T3, R.normal(size=(4, 2))]),
    "matmul_batch_bcast": (lambda t, m: (np.matmul(m, t) ** 2).sum(), [T3, R.normal(size=(3, 3))]),
    "dot_nd": (lambda t, w: (np.dot(t, w) ** 2).sum(), [T3, R.normal(size=(4, 2))]),
    "tensordot": (lambda t, u: (np.tensordot(t, u, axes=([0, 2], [1, 0])) ** 2).sum(),
                  [T3, R.normal(size=(4, 2, 5))]),
    "reshape_transpose": (lambda t: (t.reshape(4, 6).T @ t.reshape(4, 6)).sum(), [T3]),
    "index_slice": (lambda t: (t[1, ::2, 1:] ** 2).sum() + t[0, -1, 2] * t[..., 0].sum(), [T3]),
    "concatenate": (lambda x, y: (np.concatenate([x, y * y, x], axis=1) ** 2).sum(), [A, A[:, :2]]),
    "stack": (lambda x: (np.stack([x, x * x]) ** 3).sum(), [A]),
    "mean_var_std": (lambda t: t.mean() * np.var(t, axis=1).sum() + t.std(axis=(0, 2)).sum(), [T3]),
    "max_reduce": (lambda t: (t.max(axis=1) ** 2).sum() + t.max(), [T3]),
    "max_reduce_ties": (lambda x: np.maximum(x, 0.5).max(axis=1).sum(), [np.full((2, 3), 0.5) + np.eye(2, 3)]),
    "min_reduce": (lambda t: np.min(t, axis=(0, 2)).sum(), [T3]),
    "softmax_xent": (lambda x: -(lnp.log_softmax(x, axis=1) * np.eye(3, 4)).sum(), [A]),
    "logsumexp": (lambda x: lnp.logsumexp(x, axis=0).sum(), [A]),
    "clip": (lambda x: (np.clip(x, -0.5, 0.5) ** 2).sum(), [A]),
    "rank0": (lambda x: np.tanh(x) * x, [np.float64(0.7)]),
    "gather_with_repeats": (lambda e: (np.tanh(e[np.array([1, 1, 2, 0, 1])]) ** 2).sum()
                            + e[np.arange(3), np.array([1, 0, 1])].sum(), [R.normal(size=(3, 2))]),
    "integer_label_xent": (lambda z: -(z - lnp.logsumexp(z, axis=1, keepdims=True))[
        np.arange(3), np.array([3, 0, 3])].mean(), [A]),
    "einsum": (lambda t, w: (np.einsum("bij,jk->bki", t, w) ** 2).sum()
               + np.einsum("bij,bij->", t, t), [T3, R.normal(size=(4, 2))]),
    "norm_and_math": (lambda x: np.linalg.norm(x, axis=0).sum() + (np.log2(x) * np.sinh(x)
                      + np.tan(x) / np.cosh(x) + np.hypot(x, 1.5)).sum(), [POS]),
    "python_float": (lambda x: x * x * 3.0, [1.5]),
    "float32": (lambda x: (np.tanh(x) * x).sum(), [A.astype(np.float32)]),
}


@pytest.mark.parametrize("name", sorted(SCALAR_FUNCTIONS))
def test_gradient_matches_finite_differences(name, backend):
    fn, args = SCALAR_FUNCTIONS[name]
    float32 = any(np.asarray(a).dtype == np.float32 for a in args)
    llgrad.check_grad(fn, *args, argnums=tuple(range(len(args))), backend=backend,
                      eps=1e-3 if float32 else 1e-6, rtol=2e-2 if float32 else 1e-5,
                      atol=1e-2 if float32 else 1e-7)


def _axis_subsets(ndim):
    return [axes for r in range(ndim + 1) for axes in itertools.combinations(range(ndim), r)]


@pytest.mark.parametrize("axes", _axis_subsets(3))
@pytest.mark.parametrize("reduction", ["sum", "mean", "max"])
@pytest.mark.parametrize("keepdims", [False, True])
def test_reduction_gradient_every_axis_combination(reduction, axes, keepdims, backend):
    weights = R.normal(size=np.sum(T3, axis=axes, keepdims=keepdims).shape)

    def f(t):
        return (getattr(np, reduction)(np.sin(t), axis=axes, keepdims=keepdims) * weights).sum()

    llgrad.check_grad(f, T3, backend=backend)


@pytest.mark.parametrize("shape", [(), (1,), (4,), (1, 4), (3, 1), (2, 1, 4), (1, 3, 1)])
def test_broadcast_gradient_every_pattern(shape, backend):
    small = R.normal(size=shape)
    llgrad.check_grad(lambda s, t: ((s * t + s) ** 2).sum(), small, T3, argnums=(0, 1),
                      backend=backend)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_mlp_loss_gradient(dtype, backend):
    params, x, y = mlp_data(dtype)
    tol = dict(eps=1e-6, rtol=1e-5, atol=1e-7) if dtype == np.float64 else dict(
        eps=1e-2, rtol=3e-2, atol=3e-3)
    llgrad.check_grad(mlp_loss, params, x, y, backend=backend, **tol)
    llgrad.check_grad(mlp_loss, params, x, y, argnums=(1,), backend=backend, **tol)


def test_grad_returns_params_structure(backend):
    params, x, y = mlp_data()
    g = llgrad.grad(mlp_loss, backend=backend)(params, x, y)
    assert set(g) == set(params)
    for k in params:
        assert g[k].shape == params[k].shape and g[k].dtype == params[k].dtype


def test_value_and_grad_argnums_tuple(backend):
    params, x, y = mlp_data()
    value, (gp, gx) = llgrad.value_and_grad(mlp_loss, argnums=(0, 1), backend=backend)(params, x, y)
    np.testing.assert_allclose(value, mlp_loss(params, x, y), rtol=1e-12)
    assert set(gp) == set(params) and gx.shape == x.shape
    np.testing.assert_allclose(gx, llgrad.grad(mlp_loss, argnums=1, backend=backend)(params, x, y),
                               rtol=1e-12)


def test_gradient_of_unused_argument_is_zero(backend):
    g = llgrad.grad(lambda x, y: (x * 2).sum(), argnums=1, backend=backend)(A, V)
    np.testing.assert_array_equal(g, np.zeros_like(V))


def test_vjp_matches_jacobian_transpose_product(backend):
    w = R.normal(size=(4, 2))
    out, pullback = llgrad.vjp(lambda x: np.tanh(x @ w), A, backend=backend)
    np.testing.assert_allclose(out, np.tanh(A @ w), rtol=1e-12)
    ct = R.normal(size=out.shape)
    (gx,) = pullback(ct)
    expected = (ct * (1 - np.tanh(A @ w) ** 2)) @ w.T
    np.testing.assert_allclose(gx, expected, rtol=1e-11)
