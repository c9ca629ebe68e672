"""llgrad: numpy-style Python functions compiled, with their gradients, to native code."""
from llgrad import numpy, optim  # noqa: F401  (llgrad.numpy, llgrad.optim)
from llgrad import distributed  # noqa: F401  (llgrad.distributed: MPI, optional)
from llgrad.api import grad, hessian, hvp, jacfwd, jacobian, jacrev, jit, jvp, value_and_grad, vjp
from llgrad.batching import vmap
from llgrad.branching import cond, switch
from llgrad.check import check_grad
from llgrad.saving import load, save
from llgrad.custom_rules import custom_jvp, custom_vjp, stop_gradient
from llgrad.debugging import debug_nans
from llgrad.export import export, export_train
from llgrad.ir.errors import DTypeError, GradientError, LlgradError, ShapeError, UnsupportedError
from llgrad.library import load_library
from llgrad.loops import fori_loop, scan
from llgrad.profiling import Profile, profile
from llgrad.symbolic import from_sympy
from llgrad.train import TrainResult, train
from llgrad.tape import checkpoint, while_loop

__version__ = "0.1.0"

__all__ = ["jit", "grad", "value_and_grad", "vjp", "jvp", "hessian", "hvp", "jacfwd", "jacrev",
           "vmap",
           "cond", "switch", "custom_vjp", "custom_jvp", "stop_gradient",
           "while_loop", "checkpoint",
           "jacobian", "scan", "fori_loop", "check_grad", "debug_nans", "export", "export_train", "load_library", "from_sympy", "profile", "Profile",
           "train", "TrainResult", "save", "load", "distributed", "numpy", "optim", "LlgradError", "ShapeError", "DTypeError",
           "GradientError", "UnsupportedError", "__version__"]
