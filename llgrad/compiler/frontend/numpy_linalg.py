"""numpy.linalg (and the scipy.linalg functions models use), rebuilt from the
linear-algebra primitives of ``ir/primitives_linalg.py``: ``llgrad.numpy.linalg`` and
``llgrad.scipy.linalg``.

Rows of the numpy table (``op``), so ``np.linalg.solve(a, b)`` on traced arrays comes
here through numpy's dispatch.  Each function has numpy's (or scipy's) signature,
shapes (batched over leading axes), dtypes (float32 stays float32, integers become
float64) and shape errors (``LinAlgShapeError``, both llgrad's ShapeError and numpy's
LinAlgError).  The factorisations are primitives; inv, det, matrix_power, norm and
pinv are composed from them, so their derivatives are those of the parts.

Where numpy raises LinAlgError for a value (a singular matrix, one not positive
definite), traced code cannot raise: the result is NaN there (slogdet gives numpy's
``(0, -inf)``), which ``llgrad.debug_nans(True)`` turns into an error naming the op.
"""
from __future__ import annotations

import collections
import operator

import numpy as np

from llgrad.compiler.frontend import numpy_ops as _np
from llgrad.compiler.frontend import trace as _trace
from llgrad.compiler.frontend.numpy_ops import op
from llgrad.compiler.frontend.numpy_support import (
    as_node,
    broadcast_shapes,
    builder,
    float_dtype,
    normalize_axes,
    traced,
    wrap,
)
from llgrad.ir import primitives_linalg as la
from llgrad.ir.errors import ShapeError, UnsupportedError
from llgrad.ir.primitives import PRIMITIVES

__all__ = ["cholesky", "solve", "inv", "det", "slogdet", "matrix_power", "norm", "qr",
           "eigh", "eigvalsh", "svd", "pinv", "solve_triangular"]
SCIPY_ALL = ["solve_triangular", "cho_factor", "cho_solve", "cholesky"]


class LinAlgShapeError(ShapeError, np.linalg.LinAlgError):
    """Shapes numpy's linalg refuses (not square, fewer than two dimensions): llgrad's
    ShapeError, and numpy's LinAlgError for code that catches that."""


SlogdetResult = collections.namedtuple("SlogdetResult", "sign logabsdet")
EighResult = collections.namedtuple("EighResult", "eigenvalues eigenvectors")
SVDResult = collections.namedtuple("SVDResult", "U S Vh")
QRResult = collections.namedtuple("QRResult", "Q R")


def _matrices(a, square=True):
    """``a`` as a float node of at least two dimensions (square ones by default)."""
    t = traced(a)
    node = as_node(t, float_dtype(t))
    if node.type.ndim < 2:
        raise LinAlgShapeError(f"{node.type.ndim}-dimensional array given. Array must "
                               f"be at least two-dimensional")
    if square and node.shape[-1] != node.shape[-2]:
        raise LinAlgShapeError("Last 2 dimensions of the array must be square")
    return node


def _lead(node, shape):
    """``node``'s matrices broadcast over the leading axes ``shape``."""
    return builder().broadcast_to(node, tuple(shape) + node.shape[-2:])


def _common_lead(a, rhs):
    lead = broadcast_shapes(a.shape[:-2], rhs.shape[:-2])
    return _lead(a, lead), _lead(rhs, lead)


def _symmetric_from(b, a, lower: bool):
    """The symmetric matrix whose ``lower`` (else upper) triangle is ``a``'s: what
    LAPACK reads, so derivatives reach that triangle only."""
    return b.add(la.masked(b, a, lower), la.mT(b, la.masked(b, a, lower, strict=True)))


def _scipy_or(name, fallback):
    """Outside a trace: scipy.linalg's function where scipy is installed, else
    ``fallback`` (numpy)."""
    def run(*args, **kwargs):
        try:
            import scipy.linalg
        except ImportError:
            return fallback(*args, **kwargs)
        return getattr(scipy.linalg, name)(*args, **kwargs)
    return run


# ----------------------------------------------------------------------------------
# factorisations and solves


@op("linalg.cholesky", numpy=(np.linalg.cholesky,), exported=False)
def cholesky(a, /, *, upper=False):
    """L with a = L Lᵀ (Lᵀ with ``upper``), reading a's lower (upper) triangle."""
    return _factor(a, not upper)


def _solve_matrices(a, rhs, name, vectors=lambda a_ndim, rhs_ndim: rhs_ndim == 1):
    """``a`` and ``rhs`` as float nodes, their leading axes broadcast, and whether
    ``rhs`` is (a batch of) vector(s), which ``vectors(a.ndim, rhs.ndim)`` says: by
    numpy's rule for solve, only a one-dimensional ``rhs``; else it is (..., n, k)."""
    a = _matrices(a)
    t = traced(rhs)
    dtype = float_dtype(wrap(a), t)
    a, rhs = as_node(wrap(a), dtype), as_node(t, dtype)
    vector = vectors(a.type.ndim, rhs.type.ndim)
    if vector:
        rhs = builder().reshape(rhs, shape=rhs.shape + (1,))
    if rhs.type.ndim < 2 or rhs.shape[-2] != a.shape[-1]:
        raise ShapeError(f"{name}: right-hand side of shape {t.shape} does not fit "
                         f"matrices of shape {a.shape}")
    a, rhs = _common_lead(a, rhs)
    return a, rhs, vector


def _vector_back(node, vector):
    return builder().reshape(node, shape=node.shape[:-1]) if vector else node


@op("linalg.solve", numpy=(np.linalg.solve,), exported=False)
def solve(a, b):
    a, rhs, vector = _solve_matrices(a, b, "solve")
    return wrap(_vector_back(builder().solve(a, rhs), vector))


@op("linalg.inv", numpy=(np.linalg.inv,), exported=False)
def inv(a):
    return wrap(la.inverse(builder(), _matrices(a)))


@op("linalg.slogdet", numpy=(np.linalg.slogdet,), exported=False)
def slogdet(a):
    b = builder()
    packed = b.slogdet(_matrices(a))
    nd = packed.type.ndim
    part = lambda k: b.reshape(b.slice(  # noqa: E731
        packed, starts=(0,) * (nd - 1) + (k,), limits=packed.shape[:-1] + (k + 1,),
        strides=(1,) * nd), shape=packed.shape[:-1])
    return SlogdetResult(wrap(part(0)), wrap(part(1)))


@op("linalg.det", numpy=(np.linalg.det,), exported=False)
def det(a):
    """sign · exp(log|det|): 0 for singular matrices (whose gradient is then NaN: the
    adjugate is not computed)."""
    sign, logabs = slogdet(a)
    return _np.multiply(sign, _np.exp(logabs))


@op("linalg.matrix_power", numpy=(np.linalg.matrix_power,), exported=False)
def matrix_power(a, n):
    """By repeated squaring, as numpy (the same products, so the same rounding)."""
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError("exponent must be an integer") from None
    t = traced(a)
    if t.ndim < 2 or t.shape[-1] != t.shape[-2]:
        _matrices(t)   # numpy's error
    if n == 0:
        b = builder()
        return wrap(b.broadcast_to(b.const(np.eye(t.shape[-1]), t.node.dtype), t.shape))
    if n < 0:
        t, n = inv(t), -n
    if n == 1:
        return t
    if n == 2:
        return _np.matmul(t, t)
    if n == 3:
        return _np.matmul(_np.matmul(t, t), t)
    result, z = None, None
    while n > 0:
        z = t if z is None else _np.matmul(z, z)
        n, bit = divmod(n, 2)
        if bit:
            result = z if result is None else _np.matmul(result, z)
    return result


# ----------------------------------------------------------------------------------
# spectral: eigh, svd, qr


@op("linalg.eigh", numpy=(np.linalg.eigh,), exported=False)
def eigh(a, UPLO="L"):
    """Eigenvalues ascending; each eigenvector's largest-magnitude entry positive
    (numpy's signs are LAPACK's; compare eigenvectors up to sign)."""
    b = builder()
    packed = b.eigh(_symmetric_from(b, _matrices(a), _uplo(UPLO)))
    n = packed.shape[-1]
    w = b.reshape(la.rows(b, packed, 0, 1), shape=packed.shape[:-2] + (n,))
    return EighResult(wrap(w), wrap(la.rows(b, packed, 1, n + 1)))


def _uplo(uplo):
    if uplo not in ("L", "U"):
        raise ValueError("UPLO argument must be 'L' or 'U'")
    return uplo == "L"


@op("linalg.eigvalsh", numpy=(np.linalg.eigvalsh,), exported=False)
def eigvalsh(a, UPLO="L"):
    return eigh(a, UPLO).eigenvalues


def _thin_svd(a):
    """(U m×k, s, Vᵀ k×n) of each matrix, k = min(m, n): the primitive needs m >= n,
    so a wide matrix is factorised transposed."""
    b = builder()
    m, n = a.shape[-2:]
    wide = m < n
    x = la.mT(b, a) if wide else a
    packed = b.svd(x)
    rows, cols = x.shape[-2:]
    u = la.rows(b, packed, 0, rows)
    s = b.reshape(la.rows(b, packed, rows, rows + 1), shape=packed.shape[:-2] + (cols,))
    vt = la.rows(b, packed, rows + 1, rows + 1 + cols)
    return (la.mT(b, vt), s, la.mT(b, u)) if wide else (u, s, vt)


def _completed(u):
    """``u`` (m×k, orthonormal columns) extended to an orthonormal basis: the extra
    columns of a complete QR of ``u`` (values only: they have no unique derivative)."""
    b = builder()
    m, k = u.shape[-2:]
    flat = b.qr(u, complete=True)
    q, _ = la.qr_parts(b, flat, m, k, True)
    extra = b.slice(q, starts=(0,) * (q.type.ndim - 1) + (k,), limits=q.shape,
                    strides=(1,) * q.type.ndim)
    return b.concatenate(u, extra, axis=u.type.ndim - 1)


@op("linalg.svd", numpy=(np.linalg.svd,), exported=False)
def svd(a, full_matrices=True, compute_uv=True, hermitian=False):
    """Singular values descending; each right singular vector's largest-magnitude entry
    positive (U's columns follow).  ``full_matrices`` for a non-square matrix completes
    the longer factor by a complete QR: values only (its derivative is refused)."""
    b = builder()
    a = _matrices(a, square=False)
    u, s, vt = _thin_svd(a)
    if not compute_uv:
        return wrap(s)
    m, n = a.shape[-2:]
    if full_matrices and m > n:
        u = _completed(u)
    elif full_matrices and m < n:
        vt = la.mT(b, _completed(la.mT(b, vt)))
    return SVDResult(wrap(u), wrap(s), wrap(vt))


@op("linalg.pinv", numpy=(np.linalg.pinv,), exported=False)
def pinv(a, rcond=None, hermitian=False, *, rtol=np._NoValue):
    """V diag(1/s) Uᵀ over the singular values above rcond · max(s), as numpy."""
    b = builder()
    a = _matrices(a, square=False)
    if rcond is None:
        if rtol is np._NoValue:
            rcond = 1e-15
        elif rtol is None:
            rcond = max(a.shape[-2:]) * np.finfo(a.type.np_dtype).eps
        else:
            rcond = rtol
    if 0 in a.shape[-2:]:   # numpy's answer for empty matrices
        return wrap(b.full(0.0, a.type.with_shape(a.shape[:-2] + a.shape[-2:][::-1])))
    u, s, vt = _thin_svd(a)
    s_t = wrap(s)
    cutoff = _np.multiply(rcond, _np.max(s_t, axis=-1, keepdims=True))
    large = _np.greater(s_t, cutoff)
    inverse = _np.where(large, _np.divide(1.0, _np.where(large, s_t, 1.0)), 0.0)
    scaled = _np.multiply(_np.expand_dims(inverse, -1), wrap(la.mT(b, u)))
    return _np.matmul(wrap(la.mT(b, vt)), scaled)


@op("linalg.qr", numpy=(np.linalg.qr,), exported=False)
def qr(a, mode="reduced"):
    """Householder QR with LAPACK's signs (numpy's).  Wide matrices (m < n) factorise
    their first m columns and take R's rest as QᵀA."""
    if mode not in ("reduced", "complete", "r"):
        raise UnsupportedError(f"qr(mode={mode!r}) is not supported (reduced, complete "
                               f"and r are)")
    b = builder()
    a = _matrices(a, square=False)
    m, n = a.shape[-2:]
    complete = mode == "complete" and m > n
    if m < n:
        nd = a.type.ndim
        head = b.slice(a, starts=(0,) * nd, limits=a.shape[:-1] + (m,), strides=(1,) * nd)
        q, r_head = la.qr_parts(b, b.qr(head, complete=False), m, m, False)
        tail = b.slice(a, starts=(0,) * (nd - 1) + (m,), limits=a.shape, strides=(1,) * nd)
        r = b.concatenate(r_head, la.mm(b, la.mT(b, q), tail), axis=nd - 1)
    else:
        q, r = la.qr_parts(b, b.qr(a, complete=complete), m, n, complete)
    return wrap(r) if mode == "r" else QRResult(wrap(q), wrap(r))


# ----------------------------------------------------------------------------------
# norms


def _vector_norm(x, ord, axis, keepdims):
    absx = _np.absolute(x)
    if ord == np.inf:
        return _np.max(absx, axis=axis, keepdims=keepdims)
    if ord == -np.inf:
        return _np.min(absx, axis=axis, keepdims=keepdims)
    if ord == 0:
        return _np.sum(_np.astype(_np.not_equal(x, 0), x.dtype), axis=axis,
                       keepdims=keepdims)
    if ord == 1:
        return _np.sum(absx, axis=axis, keepdims=keepdims)
    if ord is None or ord == 2:
        return _np.sqrt(_np.sum(_np.multiply(x, x), axis=axis, keepdims=keepdims))
    if isinstance(ord, str):
        raise ValueError(f"Invalid norm order '{ord}' for vectors")
    power = _np.sum(_np.power(absx, ord), axis=axis, keepdims=keepdims)
    return _np.power(power, 1.0 / ord)


def _singular_values(x, row, col):
    moved = np.moveaxis(x, (row, col), (-2, -1))   # numpy's dispatch: llgrad's moveaxis
    return wrap(_thin_svd(moved.node)[1])


def _matrix_norm(x, ord, row, col, keepdims):
    if row == col:
        raise ValueError("Duplicate axes given.")
    absx = _np.absolute(x)
    if ord in (2, -2):
        pick = _np.max if ord == 2 else _np.min
        out = pick(_singular_values(x, row, col), axis=-1)
    elif ord in (1, -1):
        pick = _np.max if ord == 1 else _np.min
        out = pick(_np.sum(absx, axis=row), axis=col - 1 if col > row else col)
    elif ord in (np.inf, -np.inf):
        pick = _np.max if ord == np.inf else _np.min
        out = pick(_np.sum(absx, axis=col), axis=row - 1 if row > col else row)
    elif ord in (None, "fro", "f"):
        out = _np.sqrt(_np.sum(_np.multiply(x, x), axis=(row, col)))
    elif ord == "nuc":
        out = _np.sum(_singular_values(x, row, col), axis=-1)
    else:
        raise ValueError("Invalid norm order for matrices.")
    if keepdims:
        shape = list(x.shape)
        shape[row] = shape[col] = 1
        out = _np.reshape(out, tuple(shape))
    return out


@op("norm", numpy=(np.linalg.norm,))   # also llgrad.numpy.norm, as before
def norm(x, ord=None, axis=None, keepdims=False):
    """numpy's vector and matrix norms, every ``ord`` numpy accepts."""
    x = traced(x)
    x = wrap(as_node(x, float_dtype(x)))
    nd = x.ndim
    if axis is None:
        if ord is None or (ord in ("f", "fro") and nd == 2) or (ord == 2 and nd == 1):
            out = _np.sqrt(_np.sum(_np.multiply(x, x)))
            return _np.reshape(out, (1,) * nd) if keepdims else out
        axis = tuple(range(nd))
    elif not isinstance(axis, tuple):
        try:
            axis = (operator.index(axis),)
        except TypeError:
            raise TypeError("'axis' must be None, an integer or a tuple of integers") \
                from None
    axis = tuple(normalize_axes(a, nd)[0] for a in axis)
    if len(axis) == 1:
        return _vector_norm(x, ord, axis, keepdims)
    if len(axis) == 2:
        return _matrix_norm(x, ord, axis[0], axis[1], keepdims)
    raise ValueError("Improper number of dimensions to norm.")


# ----------------------------------------------------------------------------------
# scipy.linalg's triangular solves and Cholesky factors


def _triangular_numpy(a, b, trans=0, lower=False, unit_diagonal=False, **ignored):
    a, b = np.asarray(a), np.asarray(b)
    dtype = np.result_type(a, b, np.float16)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError("expected square matrix")
    transposed = _trans(trans)
    tri = a.T if transposed else a
    rhs = b[:, None] if b.ndim == 1 else b
    x = PRIMITIVES["triangular_solve"].evaluate(tri.astype(dtype), rhs.astype(dtype),
                                               lower=lower != transposed,
                                               unit=bool(unit_diagonal))
    return x[:, 0] if b.ndim == 1 else x


def _trans(trans) -> bool:
    if trans in (0, "N", "n"):
        return False
    if trans in (1, 2, "T", "C", "t", "c"):
        return True
    raise ValueError(f"invalid trans {trans!r}: use 0, 1, 2, 'N', 'T' or 'C'")


@op("scipy.linalg.solve_triangular", _scipy_or("solve_triangular", _triangular_numpy),
    numpy=(), exported=False)
def solve_triangular(a, b, trans=0, lower=False, unit_diagonal=False, overwrite_b=False,
                     check_finite=True):
    """A⁻¹b (Aᵀ⁻¹b with ``trans``) reading only A's ``lower`` (else upper) triangle, as
    scipy; ``b`` of one dimension less than ``a`` is a (batch of) vector(s)."""
    bld = builder()
    a_node, rhs, vector = _solve_matrices(a, b, "solve_triangular", lambda a_ndim, b_ndim:
                                          b_ndim in (1, a_ndim - 1))
    transposed = _trans(trans)
    if transposed:
        a_node = la.mT(bld, a_node)
    x = bld.triangular_solve(a_node, rhs, lower=bool(lower) != transposed,
                             unit=bool(unit_diagonal))
    return wrap(_vector_back(x, vector))


def _cho_factor_numpy(a, lower=False, overwrite_a=False, check_finite=True):
    a = np.asarray(a)
    sym = np.tril(a) + np.tril(a, -1).swapaxes(-1, -2) if lower else \
        np.triu(a) + np.triu(a, 1).swapaxes(-1, -2)
    factor = np.linalg.cholesky(sym)
    return (factor if lower else factor.swapaxes(-1, -2)), lower


@op("scipy.linalg.cho_factor", _scipy_or("cho_factor", _cho_factor_numpy), numpy=(),
    exported=False)
def cho_factor(a, lower=False, overwrite_a=False, check_finite=True):
    """(c, lower): c's ``lower`` (else upper) triangle is the Cholesky factor of the
    matrix whose that triangle is ``a``'s; the other triangle is 0 (scipy leaves
    ``a``'s entries there; cho_solve reads neither)."""
    return _factor(a, lower), bool(lower)


def _factor(a, lower):
    bld = builder()
    factor = bld.cholesky(_symmetric_from(bld, _matrices(a), bool(lower)))
    return wrap(factor if lower else la.mT(bld, factor))


@op("scipy.linalg.cholesky", _scipy_or("cholesky", lambda a, lower=False, **k:
                                        _cho_factor_numpy(a, lower)[0]),
    numpy=(), exported=False)
def scipy_cholesky(a, lower=False, overwrite_a=False, check_finite=True):
    """scipy's cholesky: the upper factor unless ``lower``."""
    return _factor(a, lower)


def _cho_solve_numpy(c_and_lower, b, overwrite_b=False, check_finite=True):
    c, lower = c_and_lower
    c = np.asarray(c)
    first = _triangular_numpy(c, b, trans=0 if lower else 1, lower=lower)
    return _triangular_numpy(c, first, trans=1 if lower else 0, lower=lower)


@op("scipy.linalg.cho_solve", _scipy_or("cho_solve", _cho_solve_numpy), numpy=(),
    exported=False)
def cho_solve(c_and_lower, b, overwrite_b=False, check_finite=True):
    """x with (L Lᵀ) x = b from cho_factor's (c, lower): two triangular solves."""
    c, lower = c_and_lower
    first = solve_triangular(c, b, trans=0 if lower else 1, lower=lower)
    return solve_triangular(c, first, trans=1 if lower else 0, lower=lower)


#: for Tracer.__array__'s advice where scipy.linalg's own functions meet a traced array
_trace.LLGRAD_SCIPY_LINALG.update(SCIPY_ALL)
