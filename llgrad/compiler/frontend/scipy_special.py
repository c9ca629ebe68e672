"""scipy.special's functions that models use, traceable and differentiable (the
front end of ``llgrad.scipy.special``).

Each has scipy.special's signature and semantics.  Outside a trace they run scipy's
own function (scipy is imported on first use), or numpy where scipy is absent.  The
scipy ufuncs among them (expit, logit, xlogy, erf, erfc, gammaln) are also entered in
the numpy table, so plain ``scipy.special.expit(x)`` on a traced array comes here;
logsumexp, softmax and log_softmax are Python functions in scipy, which convert their
argument to a numpy array: on traced arrays call these instead.

Derivatives: erf, erfc and gammaln are primitives (libm's erf, erfc, lgamma).
gammaln's derivative is digamma, a primitive computed by a series (libm has none);
digamma's own derivative, trigamma, is refused with a GradientError, so gammaln has
first derivatives (reverse and forward mode) but not second.
"""
from __future__ import annotations

import numpy as np

from llgrad.compiler.frontend import numpy_ops as _np
from llgrad.compiler.frontend import numpy_support as _support
from llgrad.compiler.frontend import trace as _trace
from llgrad.compiler.frontend.numpy_ops import op
from llgrad.ir.errors import UnsupportedError
from llgrad.ir.primitives import PRIMITIVES

__all__ = ["logsumexp", "expit", "logit", "softmax", "log_softmax", "xlogy", "erf",
           "erfc", "gammaln"]


def _scipy():
    """scipy.special, imported on first use outside a trace (None: not installed)."""
    try:
        import scipy.special
    except ImportError:
        return None
    return scipy.special


def _reference(name, fallback):
    """Outside a trace: scipy's function, else ``fallback`` (numpy)."""
    def run(*args, **kwargs):
        sc = _scipy()
        if sc is not None:
            return getattr(sc, name)(*args, **kwargs)
        if fallback is None:
            raise UnsupportedError(f"scipy.special.{name} outside a trace needs scipy "
                                   f"(pip install scipy)")
        return fallback(*args, **kwargs)
    return run


def _float(x):
    x = np.asarray(x)
    return x if x.dtype.kind == "f" else x.astype(np.float64)


def _primitive_numpy(prim):
    return lambda x: PRIMITIVES[prim].evaluate(_float(x))


@op("scipy.special.expit", _reference("expit", _primitive_numpy("logistic")),
    numpy=(), exported=False)
def expit(x):
    return _support.unary_float("logistic")(x)


def _logit_numpy(x):
    x = _float(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(x) - np.log1p(-x)


@op("scipy.special.logit", _reference("logit", _logit_numpy), numpy=(),
    exported=False)
def logit(x):
    return _np.subtract(_np.log(x), _np.log1p(_np.negative(x)))


def _xlogy_numpy(x, y):
    x, y = np.asarray(x), np.asarray(y)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((x == 0) & ~np.isnan(y), 0.0, x * np.log(np.where(x == 0, 1.0, y)))


@op("scipy.special.xlogy", _reference("xlogy", _xlogy_numpy), numpy=(),
    exported=False)
def xlogy(x, y):
    """x·log(y), 0 where x is 0 (and y is not NaN), its gradient too: log sees 1 there."""
    zero = _np.logical_and(_np.equal(x, 0), _np.equal(y, y))
    return _np.where(zero, 0.0, _np.multiply(x, _np.log(_np.where(zero, 1.0, y))))


@op("scipy.special.erf", _reference("erf", _primitive_numpy("erf")), numpy=(),
    exported=False)
def erf(z):
    return _support.unary_float("erf")(z)


@op("scipy.special.erfc", _reference("erfc", _primitive_numpy("erfc")),
    numpy=(), exported=False)
def erfc(x):
    return _support.unary_float("erfc")(x)


@op("scipy.special.gammaln", _reference("gammaln", _primitive_numpy("lgamma")),
    numpy=(), exported=False)
def gammaln(x):
    """log|gamma(x)|; its derivative is digamma, whose own derivative is refused."""
    return _support.unary_float("lgamma")(x)


def _logsumexp_numpy(a, axis=None, b=None, keepdims=False, return_sign=False):
    if return_sign:
        raise UnsupportedError("logsumexp(return_sign=True) needs scipy")
    a = _float(a)
    if b is not None:
        with np.errstate(divide="ignore"):
            a = a + np.log(np.asarray(b, dtype=a.dtype))
    return _np.logsumexp_reference(a, axis=axis, keepdims=keepdims)


@op("scipy.special.logsumexp", _reference("logsumexp", _logsumexp_numpy), numpy=(),
    exported=False)
def logsumexp(a, axis=None, b=None, keepdims=False, return_sign=False):
    """log(sum(b·exp(a))), max-shifted; ``b`` (broadcast against ``a``) must be >= 0
    (``return_sign`` is refused: the sign of a traced sum is not known)."""
    if return_sign:
        raise UnsupportedError("scipy.special.logsumexp(return_sign=True) is not "
                               "supported on traced arrays")
    if b is None:
        return _np.logsumexp(a, axis=axis, keepdims=keepdims)
    a = _support.traced(a)
    m = _np.max(a, axis=axis, keepdims=True)
    s = _np.sum(_np.multiply(b, _np.exp(_np.subtract(a, m))), axis=axis, keepdims=True)
    out = _np.add(_np.log(s), m)
    return out if keepdims else _np.squeeze(out, axis=_support.normalize_axes(axis, out.ndim))


@op("scipy.special.softmax", _reference("softmax", lambda x, axis=None:
                                         _np.softmax_reference(_float(x), axis=axis)),
    numpy=(), exported=False)
def softmax(x, axis=None):
    return _np.softmax(x, axis=axis)


@op("scipy.special.log_softmax", _reference("log_softmax", lambda x, axis=None:
                                             _np.log_softmax_reference(_float(x), axis=axis)),
    numpy=(), exported=False)
def log_softmax(x, axis=None):
    return _np.log_softmax(x, axis=axis)


#: scipy.special's ufuncs, by name: ``np``'s ufunc protocol brings scipy's ``expit(x)``
#: on a Tracer to numpy_ops.array_ufunc, which looks here (without importing scipy)
_np.SCIPY_UFUNCS.update(expit=expit, logit=logit, xlogy=xlogy, erf=erf, erfc=erfc,
                        gammaln=gammaln)
#: for Tracer.__array__'s advice where scipy's Python functions meet a traced array
_trace.LLGRAD_SCIPY.update(__all__)
