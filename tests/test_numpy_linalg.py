"""np.linalg (and llgrad.scipy.linalg) on traced arrays: values against numpy at awkward
shapes and both float dtypes, native against the interpreter, numpy's conventions
(eigh ascending, svd descending, qr's signs), derivatives against central finite
differences of numpy's own functions (reverse, forward, second order), singular,
ill-conditioned and repeated-eigenvalue inputs, and numpy's shape errors."""
import numpy as np
import pytest

import llgrad
import llgrad.numpy as lnp
from llgrad.ir.errors import GradientError, ShapeError
from llgrad.scipy import linalg as sl

RNG = np.random.default_rng(3)
W3 = RNG.standard_normal((3, 3))


def _matrix(shape, dtype=np.float64, seed=0):
    a = np.random.default_rng(seed).standard_normal(shape)
    return a.astype(dtype)


def _spd(shape, dtype=np.float64):
    a = _matrix(shape)
    s = a @ np.swapaxes(a, -1, -2) + shape[-1] * np.eye(shape[-1])
    return ((s + np.swapaxes(s, -1, -2)) / 2).astype(dtype)


def _fd(f, x, eps=1e-6):
    """Central differences of numpy's scalar ``f`` (llgrad's functions outside a trace
    are numpy's)."""
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[i] += eps
        down[i] -= eps
        g[i] = (f(up) - f(down)) / (2 * eps)
    return g


# ----------------------------------------------------------------------------------
# values against numpy

SQUARE = [(1, 1), (3, 3), (2, 3, 4, 4)]
VALUES = {
    "cholesky": (np.linalg.cholesky, _spd),
    "inv": (np.linalg.inv, _matrix),
    "det": (np.linalg.det, _matrix),
    "slogdet": (lambda a: np.stack(np.linalg.slogdet(a), -1), _matrix),
    "matrix_power3": (lambda a: np.linalg.matrix_power(a, 3), _matrix),
    "matrix_power-5": (lambda a: np.linalg.matrix_power(a, -5), _spd),
    "matrix_power0": (lambda a: np.linalg.matrix_power(a, 0), _matrix),
    "eigvalsh": (np.linalg.eigvalsh, _matrix),
    "svdvals": (lambda a: np.linalg.svd(a, compute_uv=False), _matrix),
    "pinv": (np.linalg.pinv, _matrix),
    "solve": (lambda a: np.linalg.solve(a, a[..., :1] * 2 + 1), _matrix),
    "qr_r": (lambda a: np.linalg.qr(a, mode="r"), _matrix),
}


def _tol(dtype):
    return dict(rtol=2e-4, atol=2e-4) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", SQUARE, ids=str)
@pytest.mark.parametrize("name", sorted(VALUES))
def test_values_match_numpy(name, shape, dtype):
    fn, make = VALUES[name]
    a = make(shape, dtype) if make is _spd else _matrix(shape, dtype)
    got = llgrad.jit(fn)(a)
    want = fn(a)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, **_tol(dtype))


@pytest.mark.parametrize("name", sorted(VALUES))
def test_native_equals_interpreter(name):
    fn, make = VALUES[name]
    a = make((2, 3, 3)) if make is _spd else _matrix((2, 3, 3))
    np.testing.assert_allclose(llgrad.jit(fn)(a), llgrad.jit(fn, backend="interpret")(a),
                               rtol=1e-12, atol=1e-12)


FACTORS = {
    "eigh": lambda a: tuple(np.linalg.eigh(a)),
    "svd_tall": lambda a: tuple(np.linalg.svd(a[..., :2], full_matrices=False)),
    "svd_wide": lambda a: tuple(np.linalg.svd(a[..., :2, :], full_matrices=False)),
    "qr": lambda a: tuple(np.linalg.qr(a[..., :2])),
    "cho_factor": lambda a: sl.cho_factor(a @ np.swapaxes(a, -1, -2) + 3 * np.eye(3))[0],
}


@pytest.mark.parametrize("name", sorted(FACTORS))
def test_factors_native_equals_interpreter(name):
    """The sign conventions too: llgrad's own for eigh and svd, in both backends."""
    a, fn = _matrix((2, 3, 3)), FACTORS[name]
    for got, want in zip(llgrad.jit(fn)(a), llgrad.jit(fn, backend="interpret")(a)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_vmap_batches_the_factorisations():
    a, rhs = _matrix((5, 3, 3)), _matrix((3,), seed=1)
    f = llgrad.vmap(lambda a, r: np.linalg.solve(a, r) + np.linalg.eigvalsh(a),
                    in_axes=(0, None))
    np.testing.assert_allclose(f(a, rhs), np.linalg.solve(a, rhs) + np.linalg.eigvalsh(a),
                               rtol=1e-10)


def test_scipy_linalg_on_a_traced_array_names_llgrads_function():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    with pytest.raises(Exception, match="llgrad.scipy.linalg.solve_triangular"):
        llgrad.jit(lambda a: scipy_linalg.solve_triangular(a, a[0]))(np.eye(3))


EMPTY = {"inv": np.linalg.inv, "det": np.linalg.det, "cholesky": np.linalg.cholesky,
         "eigvalsh": np.linalg.eigvalsh, "pinv": np.linalg.pinv,
         "svdvals": lambda a: np.linalg.svd(a, compute_uv=False),
         "qr_r": lambda a: np.linalg.qr(a, mode="r"),
         "solve": lambda a: np.linalg.solve(a, a)}


@pytest.mark.parametrize("name", sorted(EMPTY))
def test_empty_matrices_as_numpy(name):
    a = np.zeros((2, 0, 0))
    got, want = llgrad.jit(EMPTY[name])(a), EMPTY[name](a)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_integer_matrices_compute_in_float64():
    a = np.array([[2, 1], [1, 3]])
    assert llgrad.jit(lambda a: np.linalg.inv(a))(a.astype(float)).dtype == np.float64
    np.testing.assert_allclose(llgrad.jit(lambda x: np.linalg.solve(a, x))(np.ones(2)),
                               np.linalg.solve(a, np.ones(2)))


NORMS = [(None, None), (2, None), (np.inf, None), (-np.inf, None), (0, None), (1, None),
         (3.5, None), (-1.5, None), ("fro", (0, 1)), ("nuc", (1, 0)), (np.inf, (0, 1)),
         (-np.inf, (1, 0)), (1, (0, 1)), (-1, (1, 0)), (2, (0, 1)), (-2, (0, 1)),
         (None, (0, 1)), (2, -1), (None, 0)]


@pytest.mark.parametrize("ord,axis", NORMS, ids=str)
def test_norm_of_every_order(ord, axis):
    x = _matrix((4, 3))
    vector = axis is None and ord not in (None,)
    x = x[0] if vector else x
    f = llgrad.jit(lambda x: np.linalg.norm(x, ord, axis))
    np.testing.assert_allclose(f(x), np.linalg.norm(x, ord, axis), rtol=1e-12)
    kept = llgrad.jit(lambda x: np.linalg.norm(x, ord, axis, keepdims=True))(x)
    np.testing.assert_allclose(kept, np.linalg.norm(x, ord, axis, keepdims=True), rtol=1e-12)


def test_norm_refuses_what_numpy_refuses():
    with pytest.raises(ValueError, match="Invalid norm order"):
        llgrad.jit(lambda x: np.linalg.norm(x, "fro", 0))(np.ones((2, 2)))
    with pytest.raises(ValueError, match="Invalid norm order"):
        llgrad.jit(lambda x: np.linalg.norm(x, 3))(np.ones((2, 2)))


def test_solve_broadcasts_batches_and_takes_vectors():
    a, rhs = _matrix((2, 1, 3, 3)), _matrix((4, 3, 2), seed=1)
    f = llgrad.jit(np.linalg.solve)
    np.testing.assert_allclose(f(a, rhs), np.linalg.solve(a, rhs), rtol=1e-10)
    np.testing.assert_allclose(f(a[0, 0], rhs[0, :, 0]), np.linalg.solve(a[0, 0], rhs[0, :, 0]),
                               rtol=1e-10)


# ----------------------------------------------------------------------------------
# conventions: eigh ascending, svd descending, qr's signs as numpy's


def test_eigh_ascending_and_vectors_up_to_sign():
    a = _matrix((2, 5, 5))
    w, v = llgrad.jit(lambda a: tuple(np.linalg.eigh(a)))(a)
    nw, nv = np.linalg.eigh(a)
    np.testing.assert_allclose(w, nw, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.abs(v), np.abs(nv), atol=1e-10)
    big = np.take_along_axis(v, np.argmax(np.abs(v), axis=-2)[..., None, :], axis=-2)
    assert (big > 0).all()   # llgrad's sign convention


@pytest.mark.parametrize("shape", [(4, 3), (3, 5), (2, 3, 3), (1, 1)], ids=str)
def test_svd_descending_and_reconstructs(shape):
    a = _matrix(shape)
    u, s, vt = llgrad.jit(lambda a: tuple(np.linalg.svd(a, full_matrices=False)))(a)
    nu, ns, nvt = np.linalg.svd(a, full_matrices=False)
    np.testing.assert_allclose(s, ns, rtol=1e-12)
    np.testing.assert_allclose(np.abs(u), np.abs(nu), atol=1e-10)
    np.testing.assert_allclose(np.abs(vt), np.abs(nvt), atol=1e-10)
    np.testing.assert_allclose((u * s[..., None, :]) @ vt, a, atol=1e-12)


@pytest.mark.parametrize("backend", ["native", "interpret"])
def test_svd_of_rank_deficient_matrices_keeps_u_orthonormal(backend):
    a = np.zeros((2, 4, 3))
    a[0, :, 0] = a[0, :, 2] = [1.0, 2.0, 0.0, 1.0]   # rank 1
    a[1] = np.outer([0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 3.0])
    u, s, vt = llgrad.jit(lambda a: tuple(np.linalg.svd(a, full_matrices=False)),
                          backend=backend)(a)
    np.testing.assert_allclose(s, np.linalg.svd(a, compute_uv=False), atol=1e-15)
    np.testing.assert_allclose(np.swapaxes(u, -1, -2) @ u, np.broadcast_to(np.eye(3), (2, 3, 3)),
                               atol=1e-14)
    np.testing.assert_allclose((u * s[..., None, :]) @ vt, a, atol=1e-14)


@pytest.mark.parametrize("shape", [(5, 3), (3, 5)], ids=str)
def test_svd_full_matrices_completes_an_orthonormal_basis(shape):
    a = _matrix(shape)
    u, s, vt = llgrad.jit(lambda a: tuple(np.linalg.svd(a)))(a)
    assert u.shape == (shape[0],) * 2 and vt.shape == (shape[1],) * 2
    np.testing.assert_allclose(u @ u.T, np.eye(shape[0]), atol=1e-12)
    np.testing.assert_allclose(vt @ vt.T, np.eye(shape[1]), atol=1e-12)
    k = min(shape)
    np.testing.assert_allclose((u[:, :k] * s) @ vt[:k], a, atol=1e-12)
    with pytest.raises(GradientError, match="complete"):
        llgrad.grad(lambda a: np.linalg.svd(a)[0].sum() + np.linalg.svd(a)[2].sum())(a)


@pytest.mark.parametrize("mode", ["reduced", "complete"])
@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (2, 4, 4)], ids=str)
def test_qr_equals_numpy_signs_included(shape, mode):
    a = _matrix(shape)
    q, r = llgrad.jit(lambda a: tuple(np.linalg.qr(a, mode)))(a)
    nq, nr = np.linalg.qr(a, mode)
    np.testing.assert_allclose(q, nq, atol=1e-12)
    np.testing.assert_allclose(r, nr, atol=1e-12)


# ----------------------------------------------------------------------------------
# derivatives against central differences, reverse and forward

A = _matrix((3, 3), seed=4)
SPD = _spd((3, 3))
TALL = _matrix((4, 3), seed=5)
WIDE = _matrix((3, 4), seed=6)
HILBERT = 1 / (np.arange(4)[:, None] + np.arange(4) + 1)     # condition ~1.6e4

GRADIENTS = {
    "cholesky": (lambda a: np.sum(np.linalg.cholesky(a) * W3), SPD),
    "cholesky_upper": (lambda a: np.sum(np.linalg.cholesky(a, upper=True) * W3), SPD),
    "solve": (lambda a: np.sum(np.linalg.solve(a, W3[:, :2]) ** 2), A),
    "solve_vector": (lambda a: np.sum(np.linalg.solve(a, W3[0]) * W3[1]), A),
    "inv": (lambda a: np.sum(np.linalg.inv(a) * W3), A),
    "det": (lambda a: np.linalg.det(a), A),
    "slogdet": (lambda a: np.linalg.slogdet(a)[1], A),
    "matrix_power5": (lambda a: np.sum(np.linalg.matrix_power(a, 5) * W3), A / 2),
    "matrix_power-2": (lambda a: np.sum(np.linalg.matrix_power(a, -2) * W3), A),
    "solve_triangular": (lambda a: np.sum(lnp.linalg.solve_triangular(
        a, W3, lower=True) ** 2), A + 4 * np.eye(3)),
    "solve_triangular_trans_unit": (lambda a: np.sum(sl.solve_triangular(
        a, W3, trans=1, unit_diagonal=True) * W3), A),
    "cho_solve": (lambda a: np.sum(sl.cho_solve(sl.cho_factor(a), W3) * W3), SPD),
    "cho_solve_lower": (lambda a: np.sum(sl.cho_solve(sl.cho_factor(a, lower=True),
                                                      W3[0]) ** 2), SPD),
    "eigvalsh": (lambda a: np.sum(np.linalg.eigvalsh(a) * np.array([1.0, 2.0, 3.0])), A),
    "eigh_vectors": (lambda a: np.sum(np.abs(np.linalg.eigh(a)[1]) ** 3), A),
    "eigh_upper": (lambda a: np.sum(np.linalg.eigh(a, UPLO="U")[1][:, 2] ** 2 * W3[0]), A),
    "svdvals": (lambda a: np.sum(np.linalg.svd(a, compute_uv=False) * np.array(
        [1.0, 2.0, 3.0])), TALL),
    "svd_vectors_tall": (lambda a: np.sum(np.abs(np.linalg.svd(a, full_matrices=False)[0]) ** 3)
                         + np.sum(np.abs(np.linalg.svd(a, full_matrices=False)[2]) ** 3), TALL),
    "svd_vectors_wide": (lambda a: np.sum(np.abs(np.linalg.svd(a, full_matrices=False)[0]) ** 3)
                         + np.sum(np.abs(np.linalg.svd(a, full_matrices=False)[2]) ** 3), WIDE),
    "pinv": (lambda a: np.sum(np.linalg.pinv(a) * TALL.T), TALL),
    "norm_nuc": (lambda a: np.linalg.norm(a, "nuc"), TALL),
    "norm_2": (lambda a: np.linalg.norm(a, 2), TALL),
    "norm_-2": (lambda a: np.linalg.norm(a, -2), TALL),
    "norm_1": (lambda a: np.linalg.norm(a, 1), TALL),
    "norm_inf": (lambda a: np.linalg.norm(a, np.inf), TALL),
    "norm_fro": (lambda a: np.linalg.norm(a), TALL),
    "norm_p": (lambda a: np.linalg.norm(a[0], 3), TALL),
    "qr_tall": (lambda a: np.sum(np.linalg.qr(a)[0] ** 3) + np.sum(np.linalg.qr(a)[1] ** 3),
                TALL),
    "qr_wide": (lambda a: np.sum(np.linalg.qr(a)[0] ** 3) + np.sum(np.linalg.qr(a)[1] ** 3),
                WIDE),
}


def _close(got, want):
    scale = max(1.0, float(np.max(np.abs(want))))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * scale)


@pytest.mark.parametrize("name", sorted(GRADIENTS))
def test_reverse_and_forward_match_finite_differences(name):
    f, x = GRADIENTS[name]
    want = _fd(f, x)
    _close(llgrad.grad(f)(x), want)
    t = np.random.default_rng(9).standard_normal(x.shape)
    value, tangent = llgrad.jvp(f, (x,), (t,))
    np.testing.assert_allclose(value, f(x), rtol=1e-10)
    _close(tangent, np.sum(want * t))


def test_ill_conditioned_gradients_against_closed_forms():
    """Hilbert 4×4 (condition 1.6e4), where central differences lose digits: Giles'
    results computed by numpy, d log|det A| = A⁻ᵀ and d sum(A⁻¹1) = −A⁻ᵀ1 (A⁻¹1)ᵀ."""
    inv_t = np.linalg.inv(HILBERT).T
    np.testing.assert_allclose(llgrad.grad(lambda a: np.linalg.slogdet(a)[1])(HILBERT),
                               inv_t, rtol=1e-8)
    x = np.linalg.solve(HILBERT, np.ones(4))
    want = -np.outer(inv_t @ np.ones(4), x)
    f = lambda a: np.sum(np.linalg.solve(a, np.ones(4)))  # noqa: E731
    np.testing.assert_allclose(llgrad.grad(f)(HILBERT), want, rtol=1e-8)
    _, t = llgrad.jvp(f, (HILBERT,), (np.ones((4, 4)),))
    np.testing.assert_allclose(t, want.sum(), rtol=1e-8)


#: second derivatives natively for a few, interpreted for the rest (the rules are the
#: same graphs; native == interpreter is checked above; the interpreter compiles nothing)
SECOND = [("cholesky", "native"), ("det", "native"), ("eigvalsh", "native"),
          ("solve", "interpret"), ("inv", "interpret"), ("slogdet", "interpret"),
          ("eigh_vectors", "interpret"), ("svdvals", "interpret"),
          ("svd_vectors_tall", "interpret"), ("svd_vectors_wide", "interpret"),
          ("qr_tall", "interpret"), ("solve_triangular", "interpret"),
          ("norm_nuc", "interpret"), ("pinv", "interpret")]


@pytest.mark.parametrize("name,backend", SECOND, ids=str)
def test_second_derivatives_match_finite_differences(name, backend):
    """The Hessian (forward over reverse) row by row against central differences of
    the gradient (checked against numpy above), and reverse over forward against it."""
    f, x = GRADIENTS[name]
    g = llgrad.grad(f, backend=backend)
    h = llgrad.hessian(f, backend=backend)(x).reshape(x.size, x.size)
    eps = 1e-5
    for k in range(0, x.size, 2):
        step = np.zeros(x.size)
        step[k] = eps
        step = step.reshape(x.shape)
        row = (g(x + step) - g(x - step)) / (2 * eps)
        _close(h[k], row.ravel())
    v = np.random.default_rng(2).standard_normal(x.shape)
    _, hv = llgrad.jvp(g, (x,), (v,), backend=backend)
    _close(hv.ravel(), h @ v.ravel())


def test_second_derivative_of_det_against_numpy_differences():
    """An oracle sharing nothing with llgrad: d²det/dA² by second central differences
    of numpy's det."""
    x, eps = A[:2, :2].copy(), 1e-4
    h = llgrad.hessian(np.linalg.det)(x).reshape(4, 4)
    e = np.eye(4).reshape(4, 2, 2) * eps
    want = np.array([[(np.linalg.det(x + e[i] + e[j]) - np.linalg.det(x + e[i] - e[j])
                       - np.linalg.det(x - e[i] + e[j]) + np.linalg.det(x - e[i] - e[j]))
                      / (4 * eps * eps) for j in range(4)] for i in range(4)])
    np.testing.assert_allclose(h, want, atol=1e-6)


def test_batched_gradients_are_per_matrix():
    a = _matrix((2, 3, 3, 3), seed=8)
    f = lambda a: np.sum(np.linalg.slogdet(a)[1] * np.arange(6.0).reshape(2, 3))  # noqa: E731
    _close(llgrad.grad(f)(a), _fd(f, a))


def test_float32_gradients():
    a = A.astype(np.float32)
    g = llgrad.grad(lambda a: np.sum(np.linalg.inv(a) * W3.astype(np.float32)))(a)
    assert g.dtype == np.float32
    want = _fd(lambda a: np.sum(np.linalg.inv(a) * W3), A)
    np.testing.assert_allclose(g, want, rtol=1e-3, atol=1e-3)


def _gmm_loss(means, factors, x):
    """A Gaussian mixture's negative log-likelihood, covariances L Lᵀ + I batched over
    components: cholesky, triangular solves and log-determinants together."""
    cov = factors @ np.swapaxes(factors, -1, -2) + np.eye(x.shape[1])
    chol = np.linalg.cholesky(cov)                                   # (k, d, d)
    diff = x[None, :, :] - means[:, None, :]                         # (k, n, d)
    z = sl.solve_triangular(chol, np.swapaxes(diff, -1, -2), lower=True)   # (k, d, n)
    logdet = np.linalg.slogdet(cov)[1]                               # (k,)
    logp = -0.5 * np.sum(z * z, axis=1) - 0.5 * logdet[:, None]      # (k, n)
    top = np.max(logp, axis=0)
    return -np.sum(top + np.log(np.sum(np.exp(logp - top), axis=0)))


def test_gaussian_mixture_gradient():
    rng = np.random.default_rng(13)
    means, factors, x = rng.standard_normal((3, 2)), rng.standard_normal((3, 2, 2)), \
        rng.standard_normal((5, 2))
    g_means, g_factors = llgrad.grad(_gmm_loss, argnums=(0, 1))(means, factors, x)
    _close(g_means, _fd(lambda m: _gmm_loss(m, factors, x), means))
    _close(g_factors, _fd(lambda f: _gmm_loss(means, f, x), factors))


# ----------------------------------------------------------------------------------
# repeated eigenvalues: defined derivatives exact, the undefined one finite


REPEATED = np.diag([1.0, 1.0, 3.0])
ROTATION = np.linalg.qr(_matrix((3, 3), seed=11))[0]
REPEATED_ROTATED = ROTATION @ REPEATED @ ROTATION.T


@pytest.mark.parametrize("a", [REPEATED, REPEATED_ROTATED], ids=["diagonal", "rotated"])
def test_eigenvalue_gradients_at_repeated_eigenvalues(a):
    """sum(w²) = ‖A‖²_F is smooth there: its gradient is 2A."""
    f = lambda a: np.sum(np.linalg.eigvalsh(a) ** 2)  # noqa: E731
    np.testing.assert_allclose(llgrad.grad(f)(a), 2 * np.tril(a) + 2 * np.tril(a, -1),
                               atol=1e-9)
    _, t = llgrad.jvp(f, (a,), (W3,))
    np.testing.assert_allclose(t, np.sum(_fd(f, a) * W3), atol=1e-6)


def test_distinct_eigenvector_next_to_a_repeated_pair_has_its_true_gradient():
    f = lambda a: np.sum(np.linalg.eigh(a)[1][:, 2] ** 2 * np.array([1.0, 2.0, 3.0]))  # noqa: E731
    _close(llgrad.grad(f)(REPEATED_ROTATED), _fd(f, REPEATED_ROTATED))


@pytest.mark.parametrize("a", [REPEATED, REPEATED_ROTATED], ids=["diagonal", "rotated"])
def test_projector_onto_a_repeated_eigenspace_has_its_true_gradient(a):
    """P = V₀V₀ᵀ + V₁V₁ᵀ (the eigenspace of the repeated pair) is smooth there, though
    V₀ and V₁ are not: the guarded coupling of the pair cancels in it."""
    def f(a):
        v = np.linalg.eigh(a)[1][:, :2]
        return np.sum((v @ v.T) * W3)
    _close(llgrad.grad(f)(a), _fd(f, a))
    _, t = llgrad.jvp(f, (a,), (W3.T,))
    _close(t, np.sum(_fd(f, a) * W3.T))


def test_eigenvectors_of_a_repeated_eigenvalue_get_a_finite_gradient():
    """Undefined there: llgrad drops the coupling of equal eigenvalues (F = 0) and returns
    a finite value, documented in ir/primitives_linalg.py, rather than NaN."""
    g = llgrad.grad(lambda a: np.sum(np.linalg.eigh(a)[1][:, 0] * W3[0]))(REPEATED)
    assert np.isfinite(g).all()
    g = llgrad.grad(lambda a: np.sum(np.linalg.svd(a)[0] * W3))(np.eye(3))
    assert np.isfinite(g).all()


# ----------------------------------------------------------------------------------
# singular input: NaN where numpy raises, never a crash


SINGULAR = np.array([[1.0, 2.0], [2.0, 4.0]])


@pytest.mark.parametrize("backend", ["native", "interpret"])
def test_singular_and_indefinite_matrices_give_nan(backend):
    jit = lambda f: llgrad.jit(f, backend=backend)  # noqa: E731
    assert np.isnan(jit(np.linalg.inv)(SINGULAR)).all()
    assert np.isnan(jit(np.linalg.solve)(SINGULAR, np.ones(2))).all()
    assert np.isnan(jit(np.linalg.cholesky)(-np.eye(2))).all()
    sign, logdet = jit(lambda a: tuple(np.linalg.slogdet(a)))(SINGULAR)
    assert (sign, logdet) == (0.0, -np.inf) == tuple(np.linalg.slogdet(SINGULAR))
    assert jit(np.linalg.det)(SINGULAR) == 0.0
    batch = np.stack([SINGULAR, np.eye(2)])   # only the singular matrix is NaN
    out = jit(np.linalg.inv)(batch)
    assert np.isnan(out[0]).all() and (out[1] == np.eye(2)).all()


def test_debug_nans_names_the_singular_solve():
    with llgrad.debug_nans(True):
        with pytest.raises(FloatingPointError, match="solve"):
            llgrad.jit(lambda a: np.linalg.inv(a) * 2.0)(SINGULAR)


def test_large_and_nan_inputs_terminate():
    big = _matrix((40, 40), seed=12)
    w = llgrad.jit(np.linalg.eigvalsh)(big)
    np.testing.assert_allclose(w, np.linalg.eigvalsh(big), rtol=1e-10, atol=1e-10)
    s = llgrad.jit(lambda a: np.linalg.svd(a, compute_uv=False))(big)
    np.testing.assert_allclose(s, np.linalg.svd(big, compute_uv=False), rtol=1e-10)
    nan = np.full((3, 3), np.nan)
    assert np.isnan(llgrad.jit(np.linalg.eigvalsh)(nan)).all()


# ----------------------------------------------------------------------------------
# shape errors, as numpy's


@pytest.mark.parametrize("fn", [np.linalg.inv, np.linalg.det, np.linalg.cholesky,
                                np.linalg.eigh, np.linalg.slogdet])
def test_non_square_and_vectors_are_numpy_errors(fn):
    for bad in (np.ones((2, 3)), np.ones(3)):
        with pytest.raises(np.linalg.LinAlgError) as info:
            llgrad.jit(fn)(bad)
        assert isinstance(info.value, ShapeError)
        assert "test_numpy_linalg.py" in str(info.value)


def test_solve_shape_mismatch_is_a_shape_error():
    with pytest.raises(ShapeError, match="right-hand side"):
        llgrad.jit(np.linalg.solve)(np.eye(3), np.ones(4))


# ----------------------------------------------------------------------------------
# scipy.linalg


scipy_linalg = pytest.importorskip("scipy.linalg")


@pytest.mark.parametrize("lower", [True, False])
@pytest.mark.parametrize("trans", [0, 1, "T"])
@pytest.mark.parametrize("unit", [False, True])
def test_solve_triangular_matches_scipy(lower, trans, unit):
    a, rhs = _matrix((4, 4)) + 4 * np.eye(4), _matrix((4, 2), seed=1)
    kw = dict(lower=lower, trans=trans, unit_diagonal=unit)
    got = llgrad.jit(lambda a, b: sl.solve_triangular(a, b, **kw))(a, rhs)
    np.testing.assert_allclose(got, scipy_linalg.solve_triangular(a, rhs, **kw), rtol=1e-12)
    np.testing.assert_allclose(sl.solve_triangular(a, rhs[:, 0], **kw),
                               scipy_linalg.solve_triangular(a, rhs[:, 0], **kw))


@pytest.mark.parametrize("lower", [True, False])
def test_cho_factor_and_cho_solve_match_scipy(lower):
    rhs = _matrix((3, 2), seed=1)
    got = llgrad.jit(lambda a, b: sl.cho_solve(sl.cho_factor(a, lower=lower), b))(SPD, rhs)
    want = scipy_linalg.cho_solve(scipy_linalg.cho_factor(SPD, lower=lower), rhs)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    c, flag = llgrad.jit(lambda a: sl.cho_factor(a, lower=lower))(SPD)
    ref = scipy_linalg.cholesky(SPD, lower=lower)
    np.testing.assert_allclose(c, ref, atol=1e-12)
    assert flag == lower
    np.testing.assert_allclose(llgrad.jit(lambda a: sl.cholesky(a, lower=lower))(SPD), ref,
                               atol=1e-12)
