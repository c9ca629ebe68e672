"""The systems the suite compares, one module per family.

A system turns a workload and one of its problems into a ready-to-time call:
``gradient(workload, problem)`` returns ``call() -> {name: gradient}`` and
``train(workload, problem)`` returns ``call() -> {name: final parameter}``, both in the
system's own array type, computation finished when the call returns.  Everything a
system may do once (building a graph, moving data into its arrays, compiling) happens in
these factories or in the first call, which the suite reports as the compile time.
Peers are imported inside the factories, so an absent one costs nothing but a note.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Callable

import numpy as np

from benchmarks.workloads import row_order


@dataclass(frozen=True)
class System:
    name: str
    gradient: Callable | None           # gradient(workload, problem) -> call
    train: Callable | None = None       # train(workload, problem) -> call
    requires: str | None = None         # the module whose absence skips this system
    note: str = ""                      # how the system was run, printed in the report
    limit: Callable | None = None       # limit(workload, problem) -> reason to skip, or None
    forward_only: bool = False          # times the loss alone: checked against its value
    workloads: tuple | None = None      # run only on these workload keys

    def installed(self) -> bool:
        return self.requires is None or importlib.util.find_spec(self.requires) is not None

    def skip_reason(self, workload, problem) -> str | None:
        if self.workloads is not None and workload.key not in self.workloads:
            return "not run on this workload"
        if (self.train if workload.training else self.gradient) is None:
            return "no training loop" if workload.training else "training only"
        return self.limit(workload, problem) if self.limit else None


def minibatches(problem):
    """The fixed minibatches of a training problem, in step order (gathered here, before
    timing, when the problem shuffles its rows)."""
    b, order = problem.batch, row_order(problem)
    if problem.shuffle is None:
        return [tuple(d[s * b:(s + 1) * b] for d in problem.data) for s in range(problem.steps)]
    return [tuple(d[order[s * b:(s + 1) * b]] for d in problem.data)
            for s in range(problem.steps)]


def sgd_in_python(gradient, problem):
    """A Python loop of SGD steps: one ``gradient(params, *batch)`` call and one numpy
    update per minibatch (how a system without compiled loops trains)."""
    batches = minibatches(problem)

    def run():
        params = {k: np.array(v) for k, v in problem.params.items()}
        for batch in batches:
            grads = gradient(params, *batch)
            for k in params:
                params[k] -= problem.lr * np.asarray(grads[k])
        return params
    return run


def registry():
    """Every system, in the order of the report's tables (llgrad native first: the
    baseline of every ratio)."""
    from . import autograd_system, jax_system, llgrad_systems, micrograd_system, numpy_system
    from . import pytensor_system, torch_systems
    return [*llgrad_systems.SYSTEMS, numpy_system.SYSTEM, micrograd_system.SYSTEM,
            autograd_system.SYSTEM, *torch_systems.SYSTEMS, jax_system.SYSTEM,
            pytensor_system.SYSTEM]
