"""The linear-algebra primitives: factorisations and solves of small dense matrices,
batched over leading axes (numpy's ``(..., n, n)`` convention).

Everything else of ``np.linalg`` (inv, det, norm, pinv, matrix_power...) is composed
from these in the front end (``compiler/frontend/numpy_linalg.py``).  Each record's
derivative rules are built from Builder calls, other linear-algebra primitives among
them, so a rule's result differentiates again (second derivatives).  References:
Giles 2008 ("An extended collection of matrix derivative results") for solve and the
determinant, Murray 2016 ("Differentiation of the Cholesky decomposition") for the
Cholesky factor, the standard eigenvector / singular-vector rules with
F_ij = 1/(λ_j − λ_i), and QR's rule as its forward rule transposed.

Multi-result factorisations return ONE packed array (rows of several results stacked),
which the front end slices: reverse mode then needs no tuple adjoints.

- ``cholesky(S)``: the lower factor L of S's symmetric part (S + Sᵀ)/2, which is S
  itself where the front end calls it (it builds S from the triangle numpy reads, so
  derivatives reach that triangle only).  Not positive definite: all NaN (numpy raises
  LinAlgError there; native code cannot raise, and NaN shows up under
  ``llgrad.debug_nans``).  ``eigh`` too factorises the symmetric part: so both are
  functions of every entry, with symmetric gradients.
- ``triangular_solve(A, B, lower, unit)``: A⁻¹B for triangular A, reading only A's
  triangle (and not its diagonal when ``unit``).  A zero on the diagonal gives inf/NaN.
- ``solve(A, B)``: A⁻¹B by LU with partial pivoting.  Exactly singular A (a zero pivot):
  all NaN.
- ``slogdet(A)``: ``[sign, log|det|]`` in the last axis, by LU; singular A gives
  ``[0, -inf]`` as numpy does.
- ``eigh(S)``: ``[w; V]``: row 0 the eigenvalues ascending (as numpy), rows 1..n the
  eigenvectors as columns, each with its largest-magnitude entry positive (numpy's
  signs are LAPACK's accident; this convention makes native and interpreter agree).
- ``svd(A)`` for m >= n: ``[U; s; Vᵀ]`` (m + 1 + n rows of n): U m×n, s descending,
  Vᵀ n×n; each right singular vector with its largest-magnitude entry positive.  U's
  columns always orthonormal (for exactly zero singular values: some completion, as
  numpy's, not necessarily the same).
- ``qr(A, complete)``: Householder QR with LAPACK's signs (as numpy), Q then R
  flattened into the last axis (Q m×k, R k×n; k = m when ``complete``, else min(m, n)).

Degenerate spectra: where two eigenvalues (or singular values) are equal to rounding
(``GAP_ULPS``), F's entry is taken as 0 instead of 1/gap.  Derivatives of eigenvalues
(singular values) stay exact, and so do those of functions invariant under rotations
inside the repeated eigenspace (its projector: the pair's coupling cancels in them);
eigenvectors themselves have no derivative there, and llgrad returns this finite value
rather than NaN.
"""
from __future__ import annotations

import numpy as np

from llgrad.ir import batch_rules
from llgrad.ir.errors import DTypeError, GradientError, ShapeError
from llgrad.ir.primitives import register
from llgrad.ir.types import TensorType

#: vmap's rule for every record here: each is batched over leading axes already, so the
#: batch axis is one more of them (every operand given it), as for elementwise ops
_BATCH = batch_rules.elementwise

# ----------------------------------------------------------------------------------
# type rules


def _matrices(op, t: TensorType, square=True) -> TensorType:
    if not t.is_float:
        raise DTypeError(f"{op} needs floating-point matrices, got {t.dtype}")
    if t.ndim < 2:
        raise ShapeError(f"{op}: {t.ndim}-dimensional array given; the array must be at "
                         f"least two-dimensional")
    if square and t.shape[-1] != t.shape[-2]:
        raise ShapeError(f"{op}: last 2 dimensions of the array must be square, got "
                         f"{t.shape}")
    return t


def _square(op):
    def rule(types, **attrs):
        (t,) = types
        return _matrices(op, t)
    return rule


def _solve_type(op):
    def rule(types, **attrs):
        a, rhs = types
        _matrices(op, a)
        if rhs.dtype != a.dtype or rhs.ndim != a.ndim or rhs.shape[:-1] != a.shape[:-1]:
            raise ShapeError(f"{op}: right-hand side {rhs} does not fit matrices {a}")
        return rhs
    return rule


def _eigh_type(types):
    (t,) = types
    _matrices("eigh", t)
    n = t.shape[-1]
    return t.with_shape(t.shape[:-2] + (n + 1, n))


def _svd_type(types):
    (t,) = types
    _matrices("svd", t, square=False)
    m, n = t.shape[-2:]
    if m < n:
        raise ShapeError(f"svd primitive needs rows >= columns, got {t.shape}")
    return t.with_shape(t.shape[:-2] + (m + 1 + n, n))


def qr_sizes(m: int, n: int, complete: bool) -> int:
    """k: Q is m×k and R k×n."""
    return m if complete else min(m, n)


def _qr_type(types, complete):
    (t,) = types
    _matrices("qr", t, square=False)
    m, n = t.shape[-2:]
    k = qr_sizes(m, n, complete)
    return t.with_shape(t.shape[:-2] + (m * k + k * n,))


# ----------------------------------------------------------------------------------
# numpy meaning (the interpreter's, and the tests' reference): NaN where numpy raises


def _per_matrix(fn, *arrays):
    """``fn`` on each matrix of a batch, NaN where numpy raises LinAlgError (the whole
    batch at once unless it does)."""
    try:
        with np.errstate(all="ignore"):
            return np.asarray(fn(*arrays), arrays[0].dtype)
    except np.linalg.LinAlgError:
        pass
    batch = arrays[0].shape[:-2]
    shape = np.asarray(fn(*(np.eye(*a.shape[-2:], dtype=a.dtype) for a in arrays))).shape
    out = np.full(batch + shape, np.nan, arrays[0].dtype)
    for idx in np.ndindex(batch):
        try:
            with np.errstate(all="ignore"):
                out[idx] = fn(*(a[idx] for a in arrays))
        except np.linalg.LinAlgError:
            pass
    return out


def symmetrised(s):
    return (s + np.swapaxes(s, -1, -2)) / s.dtype.type(2)


def _cholesky_eval(s):
    if s.size == 0:
        return s.copy()
    return _per_matrix(np.linalg.cholesky, symmetrised(s))


def _triangular_eval(a, rhs, lower, unit):
    tri = np.tril(a) if lower else np.triu(a)
    if unit:
        tri = tri - tri * np.eye(a.shape[-1], dtype=a.dtype) + np.eye(a.shape[-1], dtype=a.dtype)
    with np.errstate(all="ignore"):
        if a.shape[-1] == 0:
            return rhs.copy()
        out = np.empty_like(rhs)
        for idx in np.ndindex(a.shape[:-2]):
            out[idx] = _substitute(tri[idx], rhs[idx], lower)
    return out


def _substitute(t, rhs, lower):
    """Forward or back substitution (numpy has no triangular solve; scipy may be absent)."""
    n = t.shape[0]
    x = np.zeros_like(rhs)
    for i in (range(n) if lower else reversed(range(n))):
        x[i] = (rhs[i] - t[i] @ x) / t[i, i]
    return x


def _solve_eval(a, rhs):
    if a.shape[-1] == 0:
        return rhs.copy()
    return _per_matrix(np.linalg.solve, a, rhs).astype(a.dtype)


def _slogdet_eval(a):
    sign, logabs = np.linalg.slogdet(a)
    return np.stack([sign, logabs], axis=-1).astype(a.dtype)


def largest_entry_positive(v):
    """Signs (±1) that make each column of ``v`` have its largest-magnitude entry
    (the first of equals) positive."""
    if v.shape[-2] == 0:
        return np.ones(v.shape[:-2] + v.shape[-1:], v.dtype)
    rows = np.argmax(np.abs(v), axis=-2)
    picked = np.take_along_axis(v, rows[..., None, :], axis=-2)[..., 0, :]
    return np.where(picked < 0, -1, 1).astype(v.dtype)


def _eigh_eval(s):
    w, v = np.linalg.eigh(symmetrised(s))
    v = v * largest_entry_positive(v)[..., None, :]
    return np.concatenate([w[..., None, :], v], axis=-2).astype(s.dtype)


def _svd_eval(a):
    u, s, vt = np.linalg.svd(a, full_matrices=False)
    flip = largest_entry_positive(np.swapaxes(vt, -1, -2))
    u, vt = u * flip[..., None, :], vt * flip[..., :, None]
    return np.concatenate([u, s[..., None, :], vt], axis=-2).astype(a.dtype)


def _qr_eval(a, complete):
    q, r = np.linalg.qr(a, mode="complete" if complete else "reduced")
    flat = lambda x: x.reshape(x.shape[:-2] + (-1,))  # noqa: E731
    return np.concatenate([flat(q), flat(r)], axis=-1).astype(a.dtype)


# ----------------------------------------------------------------------------------
# Builder helpers the rules share (batched over leading axes)


def _batch(x) -> int:
    return x.type.ndim - 2


def mT(b, x):
    """Each matrix transposed."""
    nd = x.type.ndim
    return b.transpose(x, perm=tuple(range(nd - 2)) + (nd - 1, nd - 2))


def mm(b, x, y):
    """Batched matrix product x @ y (same leading axes)."""
    nb = _batch(x)
    lead = tuple(range(nb))
    return b.dot_general(x, y, dims=(((nb + 1,), (nb,)), (lead, lead)))


def _const_like(b, array, like):
    """A constant matrix (n×n) broadcast over ``like``'s leading axes."""
    return b.broadcast_to(b.const(array, like.dtype), like.shape)


def masked(b, x, lower: bool, strict: bool = False):
    """The lower (or upper) triangle of each matrix, the rest 0."""
    n, m = x.shape[-2:]
    mask = np.tril(np.ones((n, m)), -1 if strict else 0) if lower else np.triu(
        np.ones((n, m)), 1 if strict else 0)
    return b.mul(x, _const_like(b, mask, x))


def eye_like(b, x):
    return _const_like(b, np.eye(x.shape[-2], x.shape[-1]), x)


def diagonal(b, x):
    """(..., n, n) -> (..., n)."""
    return b.reduce_sum(b.mul(x, eye_like(b, x)), axes=(x.type.ndim - 1,))


def diag_matrix(b, v):
    """(..., n) -> (..., n, n) with v on the diagonal."""
    n = v.shape[-1]
    shape = v.shape + (n,)
    full = b.broadcast_in_dim(v, shape=shape, dims=tuple(range(v.type.ndim - 1)) + (
        v.type.ndim,))
    return b.mul(full, _const_like(b, np.eye(n), full))


def rows(b, x, start, stop):
    """Rows [start, stop) of each matrix."""
    starts = (0,) * (x.type.ndim - 2) + (start, 0)
    limits = x.shape[:-2] + (stop, x.shape[-1])
    return b.slice(x, starts=starts, limits=limits, strides=(1,) * x.type.ndim)


def symmetric_part(b, x):
    return b.mul(b.add(x, mT(b, x)), b.full(0.5, x.type))


def _add(b, *terms):
    """The sum of the terms that are not None (tangents of constant operands)."""
    total = None
    for t in terms:
        if t is not None:
            total = t if total is None else b.add(total, t)
    return total


def _as_row(b, v):
    """(..., n) as (..., 1, n)."""
    return b.reshape(v, shape=v.shape[:-1] + (1, v.shape[-1]))


#: eigenvalues closer than GAP_ULPS · n · eps · max|λ| count as equal: the factorisations
#: compute them only to about n·eps·‖A‖, so a smaller gap is rounding, and 1/gap noise
GAP_ULPS = 16


def _gaps(b, values, squared=False):
    """F_ij = 1/(λ_j − λ_i), 0 where λ_j and λ_i are equal to rounding (the diagonal and
    repeated values), guarded so that no branch divides by zero (the unused branch's
    derivative stays finite too)."""
    lam = b.mul(values, values) if squared else values
    n = lam.shape[-1]
    shape = lam.shape + (n,)
    nd = len(shape)
    lam_j = b.broadcast_in_dim(lam, shape=shape, dims=tuple(range(nd - 2)) + (nd - 1,))
    lam_i = b.broadcast_in_dim(lam, shape=shape, dims=tuple(range(nd - 1)))
    d = b.sub(lam_j, lam_i)
    eps = float(np.finfo(d.type.np_dtype).eps)
    largest = b.reduce_max(b.abs(lam), axes=(lam.type.ndim - 1,))
    tol = b.mul(b.broadcast_in_dim(largest, shape=shape, dims=tuple(range(nd - 2))),
                b.full(GAP_ULPS * n * eps, d.type))
    zero = b.full(0.0, d.type)
    equal = b.le(b.abs(d), tol)
    safe = b.select(equal, b.full(1.0, d.type), d)
    return b.select(equal, zero, b.div(b.full(1.0, d.type), safe))


# ----------------------------------------------------------------------------------
# cholesky (Murray 2016): Φ(X) is the lower triangle of X with its diagonal halved


def _phi(b, x):
    return b.sub(masked(b, x, True), b.mul(diag_matrix(b, diagonal(b, x)),
                                           b.full(0.5, x.type)))


def _right_inverse_t(b, x, l_factor):
    """x L⁻ᵀ for lower L: (L⁻¹ xᵀ)ᵀ."""
    return mT(b, b.triangular_solve(l_factor, mT(b, x), lower=True, unit=False))


def _cholesky_vjp(b, node, g):
    """Ā = sym(L⁻ᵀ Φ(Lᵀ L̄) L⁻¹) (L̄'s strict upper part is ignored: L is 0 there)."""
    lf = node
    p = _phi(b, mm(b, mT(b, lf), masked(b, g, True)))
    left = b.triangular_solve(mT(b, lf), p, lower=False, unit=False)   # L⁻ᵀ P
    whole = mT(b, b.triangular_solve(mT(b, lf), mT(b, left), lower=False, unit=False))
    return (symmetric_part(b, whole),)


def _cholesky_jvp(b, node, tangents):
    """dL = L Φ(L⁻¹ dS L⁻ᵀ), dS symmetrised."""
    (ds,) = tangents
    lf = node
    inner = b.triangular_solve(lf, symmetric_part(b, ds), lower=True, unit=False)
    return mm(b, lf, _phi(b, _right_inverse_t(b, inner, lf)))


def _cubic_flops(scale):
    def count(node):
        n = node.inputs[0].shape[-1]
        k = node.inputs[-1].shape[-1]
        batch = int(np.prod(node.inputs[0].shape[:-2], dtype=np.int64))
        return int(batch * scale * n * n * max(n, k))
    return count


register("cholesky", _square("cholesky"), _cholesky_eval, "structural",
         flops=_cubic_flops(1 / 3), vjp=_cholesky_vjp, jvp=_cholesky_jvp,
         batch=_BATCH)


# ----------------------------------------------------------------------------------
# triangular_solve and solve (Giles 2008): X = A⁻¹B, B̄ = A⁻ᵀX̄, Ā = −B̄Xᵀ


def _triangular_vjp(b, node, g):
    a, _ = node.inputs
    lower, unit = node.attrs["lower"], node.attrs["unit"]
    g_rhs = b.triangular_solve(mT(b, a), g, lower=not lower, unit=unit)
    g_a = b.neg(masked(b, mm(b, g_rhs, mT(b, node)), lower, strict=unit))
    return g_a, g_rhs


def _triangular_jvp(b, node, tangents):
    a, _ = node.inputs
    da, drhs = tangents
    lower, unit = node.attrs["lower"], node.attrs["unit"]
    change = None if da is None else b.neg(mm(b, masked(b, da, lower, strict=unit), node))
    return b.triangular_solve(a, _add(b, drhs, change), lower=lower, unit=unit)


register("triangular_solve", _solve_type("triangular_solve"), _triangular_eval,
         "structural", flops=_cubic_flops(1), vjp=_triangular_vjp, jvp=_triangular_jvp,
         batch=_BATCH)


def _solve_vjp(b, node, g):
    a, _ = node.inputs
    g_rhs = b.solve(mT(b, a), g)
    return b.neg(mm(b, g_rhs, mT(b, node))), g_rhs


def _solve_jvp(b, node, tangents):
    a, _ = node.inputs
    da, drhs = tangents
    change = None if da is None else b.neg(mm(b, da, node))
    return b.solve(a, _add(b, drhs, change))


register("solve", _solve_type("solve"), _solve_eval, "structural",
         flops=_cubic_flops(2 / 3), vjp=_solve_vjp, jvp=_solve_jvp,
         batch=_BATCH)


# ----------------------------------------------------------------------------------
# slogdet: d log|det A| = tr(A⁻¹ dA); the sign is locally constant


def inverse(b, a):
    return b.solve(a, eye_like(b, a))


def _slogdet_vjp(b, node, g):
    (a,) = node.inputs
    nd = g.type.ndim
    g_log = b.slice(g, starts=(0,) * (nd - 1) + (1,), limits=g.shape,
                    strides=(1,) * nd)                       # (..., 1)
    scale = b.broadcast_in_dim(g_log, shape=a.shape, dims=tuple(range(nd - 1)) + (nd,))
    return (b.mul(scale, mT(b, inverse(b, a))),)


def _slogdet_jvp(b, node, tangents):
    (a,), (da,) = node.inputs, tangents
    trace = diagonal(b, b.solve(a, da))
    trace = b.reduce_sum(trace, axes=(trace.type.ndim - 1,))
    column = b.reshape(trace, shape=trace.shape + (1,))
    return b.concatenate(b.full(0.0, column.type), column, axis=column.type.ndim - 1)


register("slogdet", lambda types: _matrices("slogdet", types[0]).with_shape(
    types[0].shape[:-2] + (2,)), _slogdet_eval, "structural", flops=_cubic_flops(2 / 3),
         vjp=_slogdet_vjp, jvp=_slogdet_jvp,
         batch=_BATCH)


# ----------------------------------------------------------------------------------
# eigh: dw = diag(Vᵀ dS V), dV = V (F ∘ Vᵀ dS V)


def _eigh_parts(b, node):
    n = node.shape[-1]
    return b.reshape(rows(b, node, 0, 1), shape=node.shape[:-2] + (n,)), rows(b, node, 1, n + 1)


def _eigh_vjp(b, node, g):
    w, v = _eigh_parts(b, node)
    gw, gv = _eigh_parts(b, g)
    inner = b.add(diag_matrix(b, gw), b.mul(_gaps(b, w), mm(b, mT(b, v), gv)))
    return (symmetric_part(b, mm(b, mm(b, v, inner), mT(b, v))),)


def _eigh_jvp(b, node, tangents):
    (ds,) = tangents
    w, v = _eigh_parts(b, node)
    p = mm(b, mm(b, mT(b, v), symmetric_part(b, ds)), v)
    dv = mm(b, v, b.mul(_gaps(b, w), p))
    return b.concatenate(_as_row(b, diagonal(b, p)), dv, axis=dv.type.ndim - 2)


register("eigh", _eigh_type, _eigh_eval, "structural", flops=_cubic_flops(10),
         vjp=_eigh_vjp, jvp=_eigh_jvp,
         batch=_BATCH)


# ----------------------------------------------------------------------------------
# svd (m >= n): dP = Uᵀ dA V, ds = diag(dP), dU = U(F ∘ (dP S + S dPᵀ)) + (I − UUᵀ) dA V S⁻¹,
# dV = V(F ∘ (S dP + dPᵀ S)), F_ij = 1/(s_j² − s_i²)


def _svd_parts(b, node):
    n = node.shape[-1]
    m = node.shape[-2] - 1 - n
    u = rows(b, node, 0, m)
    s = b.reshape(rows(b, node, m, m + 1), shape=node.shape[:-2] + (n,))
    return u, s, mT(b, rows(b, node, m + 1, m + 1 + n))


def _reciprocal_or_zero(b, s):
    zero = b.full(0.0, s.type)
    small = b.eq(s, zero)
    return b.select(small, zero, b.div(b.full(1.0, s.type), b.select(small, b.full(
        1.0, s.type), s)))


def _outside_columns(b, u, x):
    """(I − UUᵀ) x."""
    return b.sub(x, mm(b, u, mm(b, mT(b, u), x)))


def _scale_columns(b, x, v):
    """x · diag(v)."""
    return b.mul(x, b.broadcast_to(_as_row(b, v), x.shape))


def _svd_vjp(b, node, g):
    a = node.inputs[0]
    u, s, v = _svd_parts(b, node)
    gu, gs, gv = _svd_parts(b, g)
    f = _gaps(b, s, squared=True)
    j = b.mul(f, mm(b, mT(b, u), gu))
    k = b.mul(f, mm(b, mT(b, v), gv))
    sm = diag_matrix(b, s)
    inner = _add(b, diag_matrix(b, gs), mm(b, b.add(j, mT(b, j)), sm),
                 mm(b, sm, b.add(k, mT(b, k))))
    out = mm(b, mm(b, u, inner), mT(b, v))
    if a.shape[-2] > a.shape[-1]:
        rest = _scale_columns(b, _outside_columns(b, u, gu), _reciprocal_or_zero(b, s))
        out = b.add(out, mm(b, rest, mT(b, v)))
    return (out,)


def _svd_jvp(b, node, tangents):
    (da,), a = tangents, node.inputs[0]
    u, s, v = _svd_parts(b, node)
    f = _gaps(b, s, squared=True)
    sm = diag_matrix(b, s)
    dp = mm(b, mm(b, mT(b, u), da), v)
    du = mm(b, u, b.mul(f, b.add(mm(b, dp, sm), mm(b, sm, mT(b, dp)))))
    if a.shape[-2] > a.shape[-1]:
        du = b.add(du, _scale_columns(b, _outside_columns(b, u, mm(b, da, v)),
                                      _reciprocal_or_zero(b, s)))
    dv = mm(b, v, b.mul(f, b.add(mm(b, sm, dp), mm(b, mT(b, dp), sm))))
    return b.concatenate(du, _as_row(b, diagonal(b, dp)), mT(b, dv),
                         axis=du.type.ndim - 2)


register("svd", _svd_type, _svd_eval, "structural", flops=_cubic_flops(20),
         vjp=_svd_vjp, jvp=_svd_jvp,
         batch=_BATCH)


# ----------------------------------------------------------------------------------
# qr (reduced, m >= n).  Forward rule (as JAX's): X = dA R⁻¹, C = QᵀX,
# Ω = tril(C, −1) − tril(C, −1)ᵀ, dQ = Q(Ω − C) + X, dR = (C − Ω)R.  Its transpose:
# with D = QᵀQ̄ − R̄Rᵀ, C̄ = tril(D, −1) − tril(Dᵀ, −1) − D, Ā = (Q̄ + Q C̄) R⁻ᵀ.


def qr_parts(b, x, m, n, complete):
    """(Q, R) of a packed qr result ``x`` of an m×n matrix (or its adjoint)."""
    k = qr_sizes(m, n, complete)
    lead, nd = x.shape[:-1], x.type.ndim

    def part(start, stop, shape):
        flat = b.slice(x, starts=(0,) * (nd - 1) + (start,), limits=lead + (stop,),
                       strides=(1,) * nd)
        return b.reshape(flat, shape=lead + shape)
    return part(0, m * k, (m, k)), part(m * k, m * k + k * n, (k, n))


def _qr_checked(node):
    m, n = node.inputs[0].shape[-2:]
    if m < n or node.attrs["complete"] and m > n:
        raise GradientError(f"qr is differentiable for rows >= columns in reduced mode "
                            f"(got {node.inputs[0].shape}, complete="
                            f"{node.attrs['complete']}): complete Q's extra columns "
                            f"are not unique")
    return m, n


def _qr_vjp(b, node, g):
    m, n = _qr_checked(node)
    q, r = qr_parts(b, node, m, n, node.attrs["complete"])
    gq, gr = qr_parts(b, g, m, n, node.attrs["complete"])
    d = b.sub(mm(b, mT(b, q), gq), mm(b, gr, mT(b, r)))
    dc = b.sub(b.sub(masked(b, d, True, strict=True), masked(b, mT(b, d), True, strict=True)),
               d)
    whole = b.add(gq, mm(b, q, dc))
    return (mT(b, b.triangular_solve(r, mT(b, whole), lower=False, unit=False)),)


def _qr_jvp(b, node, tangents):
    m, n = _qr_checked(node)
    (da,) = tangents
    q, r = qr_parts(b, node, m, n, node.attrs["complete"])
    x = mT(b, b.triangular_solve(mT(b, r), mT(b, da), lower=True, unit=False))
    c = mm(b, mT(b, q), x)
    low = masked(b, c, True, strict=True)
    omega = b.sub(low, mT(b, low))
    dq = b.add(mm(b, q, b.sub(omega, c)), x)
    dr = mm(b, b.sub(c, omega), r)
    return b.concatenate(_flat_matrices(b, dq), _flat_matrices(b, dr), axis=dq.type.ndim - 2)


def _flat_matrices(b, x):
    """(..., m, k) -> (..., m·k)."""
    return b.reshape(x, shape=x.shape[:-2] + (x.shape[-2] * x.shape[-1],))


register("qr", _qr_type, _qr_eval, "structural", flops=_cubic_flops(4 / 3),
         vjp=_qr_vjp, jvp=_qr_jvp,
         batch=_BATCH)
