"""HIPS autograd: tracing numpy calls through boxed values, every call."""
from . import System, sgd_in_python


def _grad(workload):
    import autograd
    import autograd.numpy as anp
    return autograd.grad(lambda params, *data: workload.loss(anp, params, *data))


def gradient(workload, problem):
    g = _grad(workload)
    return lambda: g(problem.params, *problem.data)


def train(workload, problem):
    return sgd_in_python(_grad(workload), problem)


SYSTEM = System("HIPS autograd", gradient, train, requires="autograd",
                note="autograd.grad; training: a Python loop of numpy updates")
