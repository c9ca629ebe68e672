"""llgrad: numpy-style Python functions compiled, with their gradients, to native code."""
from . import numpy  # noqa: F401  (llgrad.numpy)
from .api import grad, jit, value_and_grad, vjp
from .check import check_grad
from .ir.errors import (DTypeError, GradientError, LlgradError, ShapeError,
                        UnsupportedError)

__version__ = "0.1.0"

__all__ = ["jit", "grad", "value_and_grad", "vjp", "check_grad", "numpy", "LlgradError", "ShapeError", "DTypeError",
           "GradientError", "UnsupportedError", "__version__"]
