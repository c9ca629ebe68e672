"""llgrad: numpy-style Python functions compiled, with their gradients, to native code."""
from llgrad import distributed, numpy, optim  # noqa: F401  (llgrad.distributed: MPI, optional)
from llgrad.api import grad, hessian, hvp, jacfwd, jacobian, jacrev, jit, jvp, value_and_grad, vjp
from llgrad.batching import vmap
from llgrad.branching import cond, switch
from llgrad.check import check_grad
from llgrad.custom_rules import custom_jvp, custom_vjp, stop_gradient
from llgrad.debugging import debug_nans
from llgrad.export import export, export_train
from llgrad.ir.errors import DTypeError, GradientError, LlgradError, ShapeError, UnsupportedError
from llgrad.library import load_library
from llgrad.loops import fori_loop, scan
from llgrad.profiling import Profile, profile
from llgrad.saving import load, save
from llgrad.symbolic import from_sympy
from llgrad.tape import checkpoint, while_loop
from llgrad.train import TrainResult, train

__version__ = "0.1.0"

__all__ = [
    # transformations
    "jit", "grad", "value_and_grad", "vjp", "jvp", "hessian", "hvp", "jacfwd", "jacrev",
    "jacobian", "vmap",
    # control flow and custom rules
    "scan", "fori_loop", "while_loop", "cond", "switch", "checkpoint",
    "custom_vjp", "custom_jvp", "stop_gradient",
    # training, export, inspection
    "train", "TrainResult", "save", "load", "distributed", "export", "export_train",
    "load_library", "profile", "Profile", "check_grad", "debug_nans", "from_sympy",
    "numpy", "optim",
    "LlgradError", "ShapeError", "DTypeError", "GradientError", "UnsupportedError",
    "__version__",
]
