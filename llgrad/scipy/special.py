"""scipy.special's functions that models use, traceable and differentiable:
logsumexp, expit, logit, softmax, log_softmax, xlogy, erf, erfc, gammaln, with
scipy.special's signatures.  Outside a trace they run scipy's own (or numpy where
scipy is absent).  scipy's ufuncs among them also answer ``scipy.special.expit(x)`` on
traced arrays; scipy's Python functions (logsumexp, softmax, log_softmax) cannot take
one: call these.  gammaln has first derivatives only (its derivative, digamma, has no
derivative in llgrad).  See ``llgrad/compiler/frontend/scipy_special.py``.
"""
from llgrad.compiler.frontend.scipy_special import (__all__, erf, erfc, expit,  # noqa: F401
                                                    gammaln, log_softmax, logit,
                                                    logsumexp, softmax, xlogy)
