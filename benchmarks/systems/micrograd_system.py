"""micrograd, Karpathy's scalar engine, on the workloads a scalar engine can hold.

Its ``Value`` has no tanh, exp, log or sin; the suite adds them in micrograd's own style
(forward value and the closure that pushes the adjoint back, side by side) and says so
in the report.  Arrays are numpy object arrays of ``Value``s, so numpy's ``@``,
broadcasting and ufuncs (which call a method of the same name on objects) run the
workload's source unchanged.
"""
import math
import types

import numpy as np

from . import System

SCALAR_WORKLOADS = ("scalar", "tiny_mlp")


def _unary(Value, name, f, df):
    """A Value method computing ``f`` whose local derivative is ``df(x, f(x))``."""
    def method(self):
        y = f(self.data)
        out = Value(y, (self,), name)

        def _backward():
            self.grad += df(self.data, y) * out.grad
        out._backward = _backward
        return out
    method.__name__ = name
    return method


EXTENSIONS = {
    "tanh": (math.tanh, lambda x, y: 1 - y * y),
    "exp": (math.exp, lambda x, y: y),
    "log": (math.log, lambda x, y: 1 / x),
    "sin": (math.sin, lambda x, y: math.cos(x)),
}


def _extended_value():
    from micrograd.engine import Value
    for name, (f, df) in EXTENSIONS.items():
        if not hasattr(Value, name):
            setattr(Value, name, _unary(Value, name, f, df))
    return Value


def _namespace():
    """numpy, except ``mean``: numpy divides by an integer count, and micrograd's
    division raises that count to the power -1."""
    return types.SimpleNamespace(tanh=np.tanh, exp=np.exp, log=np.log, sin=np.sin,
                                 mean=lambda a: np.sum(a) * (1.0 / np.size(a)))


def gradient(workload, problem):
    Value = _extended_value()
    xp = _namespace()
    to_values = np.vectorize(Value, otypes=[object])

    def call():
        params = {k: Value(v) if isinstance(v, float) else to_values(v)
                  for k, v in problem.params.items()}
        workload.loss(xp, params, *problem.data).backward()
        return {k: v.grad if isinstance(v, Value) else np.vectorize(lambda u: u.grad)(v)
                for k, v in params.items()}
    return call


def limit(workload, problem):
    if workload.key not in SCALAR_WORKLOADS:
        return "a scalar engine: millions of Value objects per call at this size"
    return None


SYSTEM = System("micrograd", gradient, requires="micrograd", limit=limit,
                note="extended here with tanh, exp, log, sin in its own style; "
                     "numpy object arrays of Values")
