"""llgrad compiled to native code, and the numpy interpreter running the very same
optimised graph (what compilation alone buys)."""
import functools

import numpy as np

import llgrad
from llgrad import optim

from benchmarks.workloads import WithScan

from . import System


@functools.cache
def traced_loss(workload):
    """The workload's loss as plain numpy code, ``scan`` being ``llgrad.scan`` (one
    object per workload, so llgrad's caches see the same function every time)."""
    xp = WithScan(np, llgrad.scan)

    def loss(params, *data):
        return workload.loss(xp, params, *data)
    loss.__name__ = f"{workload.key}_loss"
    return loss


def gradient(backend):
    def prepare(workload, problem):
        staged = llgrad.grad(traced_loss(workload), backend=backend)
        return lambda: staged(problem.params, *problem.data)
    return prepare


def forward(workload, problem):
    staged = llgrad.jit(traced_loss(workload))
    return lambda: {"value": staged(problem.params, *problem.data)}


def train(backend):
    def prepare(workload, problem):
        sgd = optim.sgd(problem.lr)
        return lambda: llgrad.train(traced_loss(workload), problem.params, problem.data, sgd,
                                    batch_size=problem.batch, grad_norms=False,
                                    shuffle=problem.shuffle, backend=backend).params
    return prepare


def profile(workload, problem) -> str:
    """llgrad's time per kernel on one size of a workload, as ``llgrad.profile`` prints it."""
    if workload.training:     # the third run: the first ones compile and warm up
        sgd = optim.sgd(problem.lr)
        runs = [llgrad.train(traced_loss(workload), problem.params, problem.data, sgd,
                             batch_size=problem.batch, grad_norms=False,
                             shuffle=problem.shuffle, profile=True)
                for _ in range(3)]
        return str(runs[-1].profile)
    return str(llgrad.profile(llgrad.grad(traced_loss(workload)), problem.params, *problem.data))


SYSTEMS = [
    System("llgrad native", gradient("native"), train("native"),
           note="llgrad.grad; training: llgrad.train, all steps in one native call, "
                "per-step losses recorded, gradient norms off (no peer computes them)"),
    System("llgrad interpreter", gradient("interpret"), train("interpret"),
           note='the same optimised graph run by numpy (backend="interpret")'),
    System("llgrad native, forward only", forward, forward_only=True,
           workloads=("mlp_step", "elementwise"),
           note="llgrad.jit of the loss: the denominator of the backward/forward ratio"),
]
