"""Tracing: running the user's plain numpy function on Tracer values to record a Graph.

A Tracer stands for an array during a trace.  numpy hands every operation on it to
the front end through ``__array_ufunc__`` / ``__array_function__`` (and Python
operators), which ``numpy_ops`` turns into IR through the trace's Builder, stamping
the user's file:line on the nodes.  Those protocols, operators and array methods come
from the numpy table: ``numpy_ops.attach(Tracer)``, which importing the front end
package does, so this module needs nothing of numpy_ops.  Errors raised while tracing
name the user's function, the op, the shapes and that line.
"""
from __future__ import annotations

import os
import sys
import threading

import numpy as np

from llgrad.ir.errors import DTypeError, LlgradError, UnsupportedError
from llgrad.ir.graph import Builder, Graph, Node
from llgrad.ir.types import TensorType, dtype_name

# the package (llgrad/), whose API modules (llgrad.cond...) are not the user's code either
_LLGRAD_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_NUMPY_DIR = os.path.dirname(os.path.abspath(np.__file__))
_state = threading.local()


class TraceContext:
    def __init__(self, fn_name: str):
        self.fn_name = fn_name
        self.builder = Builder()

    def __enter__(self):
        stack = _contexts()
        stack.append(self)
        return self

    def __exit__(self, *exc):
        _contexts().pop()
        return False


def _contexts() -> list:
    if not hasattr(_state, "stack"):
        _state.stack = []
    return _state.stack


def current() -> TraceContext:
    stack = _contexts()
    if not stack:
        raise UnsupportedError("llgrad operations on tracers are only valid while tracing")
    return stack[-1]


def _is_user_code(filename: str) -> bool:
    return not (filename.startswith(_LLGRAD_DIR) or filename.startswith(_NUMPY_DIR)
                or filename.startswith("<__array_function__"))


def user_source() -> str | None:
    """file:line of the innermost frame that belongs to neither llgrad nor numpy."""
    frame = sys._getframe(1)
    while frame is not None:
        if _is_user_code(frame.f_code.co_filename):
            return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"
        frame = frame.f_back
    return None


def raised_at(exc: BaseException) -> str | None:
    """file:line of the innermost user frame an exception passed through."""
    where, tb = None, exc.__traceback__
    while tb is not None:
        if _is_user_code(tb.tb_frame.f_code.co_filename):
            where = f"{os.path.basename(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno}"
        tb = tb.tb_next
    return where


def located(exc: LlgradError, op: str | None = None) -> LlgradError:
    """The same error, with the user's function, the op and the source line prefixed."""
    if getattr(exc, "llgrad_located", False):
        return exc
    ctx = _contexts()[-1] if _contexts() else None
    where = user_source()
    parts = []
    if ctx is not None:
        parts.append(f"in {ctx.fn_name}()")
    if where:
        parts.append(f"at {where}")
    prefix = " ".join(parts)
    message = str(exc)
    if op and not message.startswith(op):
        message = f"{op}: {message}"
    new = type(exc)(f"{prefix}: {message}" if prefix else message)
    new.llgrad_located = True
    return new


class Tracer:
    """An array being traced.  Behaves like a numpy array of known shape and dtype
    once ``numpy_ops.attach`` has given it numpy's protocols, operators and methods."""

    __array_priority__ = 1000
    __slots__ = ("node",)
    __hash__ = object.__hash__   # by identity: == builds a comparison node

    def __init__(self, node: Node):
        self.node = node

    # array attributes -------------------------------------------------------------
    shape = property(lambda self: self.node.shape)
    ndim = property(lambda self: len(self.node.shape))
    size = property(lambda self: self.node.type.size)
    dtype = property(lambda self: self.node.type.np_dtype)
    T = property(lambda self: self.transpose())
    real = property(lambda self: np.real(self))   # a real array's parts, from the
    imag = property(lambda self: np.imag(self))   # numpy table like np.real(x)

    def __len__(self):
        if not self.shape:
            raise TypeError("len() of unsized traced array")
        return self.shape[0]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __repr__(self):
        return f"Tracer({self.node.type})"

    def __bool__(self):
        raise located(UnsupportedError(
            f"Python control flow (if/while/and/or) on a traced {self.node.type}: its "
            "truth value is not known at trace time (shapes are static, values are "
            "not); branch with llgrad.cond(pred, true_fn, false_fn, *operands) (only the "
            "chosen branch runs), compute both and choose with np.where(cond, a, b), loop "
            "with llgrad.while_loop / llgrad.fori_loop, or pass the deciding value as a "
            "static argument (static_argnums)"))

    def __float__(self):
        raise located(UnsupportedError(
            f"float()/int() of a traced {self.node.type} (or a math-module function, or "
            "range() on it): its value is not known at trace time; use numpy functions, "
            "and np.where instead of branching on it"))

    __int__ = __index__ = __float__

    def __getattr__(self, name):
        """An ndarray attribute llgrad lacks is a clear error, not an AttributeError."""
        if name.startswith("_") or not hasattr(np.ndarray, name):
            raise AttributeError(f"'Tracer' object has no attribute {name!r}")
        raise located(UnsupportedError(f"the array attribute .{name} is not supported by "
                                       f"llgrad"))

    def __array__(self, dtype=None, copy=None):
        raise located(UnsupportedError(
            f"{_scipy_caller()}a traced {self.node.type} was converted to a concrete numpy array (np.asarray, "
            "a non-numpy library, an unsupported numpy function, or numpy given a Python "
            "list of traced arrays: np.array([a, b]), np.mean([a, b]), np.r_[a, b], which "
            "convert each element without asking llgrad; np.stack or np.concatenate them "
            "first, or call llgrad.numpy's functions, which take such lists); its value "
            "is not known at trace time"))


def _scipy_caller() -> str:
    """Where scipy.special's or scipy.linalg's own function (logsumexp, solve_triangular...)
    converts a traced array, the advice to call llgrad.scipy's instead ("" elsewhere)."""
    import sys
    frame = sys._getframe(2)
    found = None
    while frame is not None:   # the outermost scipy.special (linalg) frame: the user's call
        found = _scipy_function(frame) or found
        frame = frame.f_back
    if found is None:
        return ""
    module, name = found
    ours = _LLGRAD_SCIPY_BY_MODULE[module]
    if name in ours:
        return (f"scipy.{module}.{name} does not take traced arrays: call "
                f"llgrad.scipy.{module}.{name} instead. ")
    return (f"scipy.{module}.{name} does not take traced arrays (llgrad.scipy.{module} "
            f"has {', '.join(sorted(ours))}). ")


def _scipy_function(frame):
    """(submodule, name) of the scipy.special or scipy.linalg function running in
    ``frame``, also where scipy's batching decorator (scipy._lib's ``wrapper`` of ``f``)
    converts the arrays before the function itself runs; else None."""
    module, name = frame.f_globals.get("__name__", ""), frame.f_code.co_name
    if module.startswith("scipy._lib"):
        wrapped = frame.f_locals.get("f")
        module = getattr(wrapped, "__module__", None) or ""
        name = getattr(wrapped, "__name__", name)
    return next(((sub, name) for sub in _LLGRAD_SCIPY_BY_MODULE
                 if module.startswith(f"scipy.{sub}")), None)


#: llgrad.scipy.special's functions (filled by frontend/scipy_special.py)
LLGRAD_SCIPY: set = set()
#: llgrad.scipy.linalg's functions (filled by frontend/numpy_linalg.py)
LLGRAD_SCIPY_LINALG: set = set()
_LLGRAD_SCIPY_BY_MODULE = {"special": LLGRAD_SCIPY, "linalg": LLGRAD_SCIPY_LINALG}


def _unsupported_operator(name):
    def refuse(*args):
        raise located(UnsupportedError(f"the operator __{name}__ is not supported by llgrad"))
    return refuse


# said plainly, rather than as Python's TypeError about operand types
for _name in ("floordiv", "mod", "rfloordiv", "rmod", "divmod", "lshift", "rshift"):
    setattr(Tracer, f"__{_name}__", _unsupported_operator(_name))


def lift(value, ctx: TraceContext | None = None) -> Node:
    """A Node for a Tracer or a concrete constant (numpy array or Python scalar)."""
    if isinstance(value, Tracer):
        return value.node
    ctx = ctx or current()
    arr = np.asarray(value)
    return ctx.builder.const(arr, dtype_name(arr.dtype))


def trace(fn, flat_types, treedef, fn_name: str, leaf_names, static=None):
    """Trace ``fn`` on Tracers of ``flat_types``; returns (Graph, output treedef)."""
    from llgrad.compiler.frontend import pytree
    with TraceContext(fn_name) as ctx:
        params = [ctx.builder.parameter(index=i, type=t, name=n)
                  for i, (t, n) in enumerate(zip(flat_types, leaf_names))]
        args = pytree.unflatten(treedef, [Tracer(p) for p in params])
        if static:
            args = static(args)
        result = fn(*args)
        leaves, out_tree = pytree.flatten(result)
        outputs = output_nodes(leaves, ctx)
        out_names = pytree.leaf_names(out_tree, "out")
    return Graph(params, outputs, name=fn_name, output_names=out_names), out_tree


def output_nodes(leaves, ctx: TraceContext) -> list[Node]:
    """Nodes for the leaves a traced function returned; a leaf that is not an array
    (or a number) is an error at the user's line."""
    outputs = []
    for leaf in leaves:
        try:
            outputs.append(lift(leaf, ctx))
        except LlgradError as exc:
            raise located(exc) from None
    return outputs


def input_type(value, where: str) -> TensorType:
    """The TensorType of an argument leaf; unsupported dtypes are a clear error."""
    masked = sys.modules.get("numpy.ma")   # slow to import: if nobody has, nothing is masked
    if masked is not None and isinstance(value, masked.MaskedArray):
        raise DTypeError(f"{where}: masked arrays are not supported (their mask would be "
                         f"ignored); pass arr.filled(value) or arr.data")
    try:
        arr = np.asarray(value)
        return TensorType(arr.shape, dtype_name(arr.dtype))
    except (LlgradError, TypeError, ValueError) as exc:
        raise DTypeError(f"{where}: {exc}") from None
