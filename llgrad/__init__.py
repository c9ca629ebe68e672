"""llgrad: numpy-style Python functions compiled, with their gradients, to native code."""
from .api import grad, jit, value_and_grad, vjp
from .ir.errors import (DTypeError, GradientError, LlgradError, ShapeError,
                        UnsupportedError)

__version__ = "0.1.0"

__all__ = ["jit", "grad", "value_and_grad", "vjp", "LlgradError", "ShapeError", "DTypeError",
           "GradientError", "UnsupportedError", "__version__"]
