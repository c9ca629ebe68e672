"""numpy's functions for explicit use: ``import llgrad.numpy as lnp``.

The same functions plain ``np.*`` calls reach on traced arrays, plus the composites
numpy lacks (relu, sigmoid, softmax, log_softmax, logsumexp), all with numerically
stable forms.  Outside a trace they compute with numpy.  The names are those the
numpy table exports (``numpy_ops.EXPORTS``), each defined here from it.
"""
import types as _types

import numpy as _np

from llgrad.compiler.frontend import numpy_linalg as _numpy_linalg
from llgrad.compiler.frontend import numpy_ops as _numpy_ops

globals().update(_numpy_ops.EXPORTS)
__all__ = sorted(_numpy_ops.EXPORTS)


#: ``llgrad.numpy.linalg``: numpy.linalg on traced arrays, and scipy's solve_triangular
#: (``compiler/frontend/numpy_linalg.py``)
linalg = _types.SimpleNamespace(LinAlgError=_np.linalg.LinAlgError, **{
    name: getattr(_numpy_linalg, name) for name in _numpy_linalg.__all__})
