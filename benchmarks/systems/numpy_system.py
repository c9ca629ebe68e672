"""numpy with the gradient written by hand (the workloads' own backprop)."""
from . import System, sgd_in_python


def gradient(workload, problem):
    return lambda: workload.backprop(problem.params, *problem.data)


def train(workload, problem):
    return sgd_in_python(workload.backprop, problem)


SYSTEM = System("numpy, hand-written backprop", gradient, train,
                note="the gradient derived by hand; training: a Python loop of numpy steps")
