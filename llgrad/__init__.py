"""llgrad: numpy-style Python functions compiled, with their gradients, to native code."""
from . import numpy, optim  # noqa: F401  (llgrad.numpy, llgrad.optim)
from .api import (grad, hessian, hvp, jacfwd, jacobian, jacrev, jit, jvp, value_and_grad,
                  vjp)
from .check import check_grad
from .profiling import Profile, profile
from .symbolic import from_sympy
from .train import TrainResult, train
from .ir.errors import (DTypeError, GradientError, LlgradError, ShapeError,
                        UnsupportedError)

__version__ = "0.1.0"

__all__ = ["jit", "grad", "value_and_grad", "vjp", "jvp", "hessian", "hvp", "jacfwd", "jacrev",
           "jacobian", "check_grad", "from_sympy", "profile", "Profile",
           "train", "TrainResult", "numpy", "optim", "LlgradError", "ShapeError", "DTypeError",
           "GradientError", "UnsupportedError", "__version__"]
