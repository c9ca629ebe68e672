"""scipy.linalg's functions that models use, traceable and differentiable:
solve_triangular, cho_factor, cho_solve and cholesky, with scipy.linalg's signatures.
Outside a trace they run scipy's own (or numpy where scipy is absent).  scipy's own
functions convert their arguments to numpy arrays, so on traced arrays call these.
See ``llgrad/compiler/frontend/numpy_linalg.py``.
"""
from llgrad.compiler.frontend.numpy_linalg import (SCIPY_ALL as __all__,  # noqa: F401
                                                   cho_factor, cho_solve, solve_triangular)
from llgrad.compiler.frontend.numpy_linalg import scipy_cholesky as cholesky  # noqa: F401
