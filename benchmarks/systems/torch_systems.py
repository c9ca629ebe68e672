"""PyTorch: eager autograd, and torch.compile (Dynamo + Inductor, which also compiles
the backward graph through AOTAutograd)."""
import types

import numpy as np

from . import System, minibatches

THREADS = {"n": 1}


def _torch():
    import torch
    torch.set_num_threads(THREADS["n"])
    return torch


def namespace(torch):
    """The workloads' array functions over tensors (numpy's ``axis``/``keepdims``)."""
    def reduction(f):
        return lambda a, axis=None, keepdims=False: (
            f(a) if axis is None else f(a, dim=axis, keepdim=keepdims))
    return types.SimpleNamespace(tanh=torch.tanh, exp=torch.exp, log=torch.log,
                                 sin=torch.sin, cos=torch.cos, sqrt=torch.sqrt, stack=torch.stack,
                                 sum=reduction(torch.sum), max=reduction(torch.amax),
                                 mean=reduction(torch.mean))


def _leaves(torch, params):
    """Fresh tensors that require gradients (Python floats become float64 scalars)."""
    return {k: torch.from_numpy(np.array(v)).requires_grad_() for k, v in params.items()}


def _loss(torch, workload, compiled):
    """The workload's loss over tensors; compiled afresh (Dynamo caches compiled code by
    the Python code object, which every workload's ``loss`` shares)."""
    xp = namespace(torch)

    def loss(params, *data):
        return workload.loss(xp, params, *data)
    if not compiled:
        return loss
    torch._dynamo.reset()
    return torch.compile(loss)


def gradient(compiled):
    def prepare(workload, problem):
        torch = _torch()
        loss = _loss(torch, workload, compiled)
        leaves = _leaves(torch, problem.params)
        data = [torch.from_numpy(np.asarray(d)) for d in problem.data]

        def call():
            grads = torch.autograd.grad(loss(leaves, *data), list(leaves.values()))
            return dict(zip(leaves, grads))
        return call
    return prepare


def train(compiled):
    def prepare(workload, problem):
        torch = _torch()
        loss = _loss(torch, workload, compiled)
        batches = [tuple(torch.from_numpy(d) for d in batch) for batch in minibatches(problem)]

        def run():
            params = _leaves(torch, problem.params)
            for batch in batches:
                grads = torch.autograd.grad(loss(params, *batch), list(params.values()))
                with torch.no_grad():
                    for p, g in zip(params.values(), grads):
                        p -= problem.lr * g
            return {k: v.detach() for k, v in params.items()}
        return run
    return prepare


def lstm_module(workload, problem):
    """torch.nn.LSTM (its fused CPU kernel) holding the workload's weights: ``w`` and
    ``u`` transposed into ``weight_ih``/``weight_hh`` (gates in the same i, f, g, o
    order), the bias as ``bias_ih``, ``bias_hh`` zero."""
    torch = _torch()
    w, u, bias = (problem.params[k] for k in ("w", "u", "bias"))
    layer = torch.nn.LSTM(w.shape[0], u.shape[0])
    with torch.no_grad():
        for param, value in ((layer.weight_ih_l0, w.T), (layer.weight_hh_l0, u.T),
                             (layer.bias_ih_l0, bias), (layer.bias_hh_l0, 0 * bias)):
            param.copy_(torch.from_numpy(np.ascontiguousarray(value)))
    xs = torch.from_numpy(problem.data[0])
    weights = [layer.weight_ih_l0, layer.weight_hh_l0, layer.bias_ih_l0]

    def call():
        hs, _ = layer(xs)
        dw, du, db = torch.autograd.grad((hs * hs).sum(), weights)
        return {"w": dw.T, "u": du.T, "bias": db}
    return call


SYSTEMS = [
    System("PyTorch eager", gradient(False), train(False), requires="torch",
           note="torch.autograd.grad; training: a Python loop, in-place updates"),
    System("torch.compile", gradient(True), train(True), requires="torch",
           note="torch.compile of the loss (inductor, forward and backward); "
                "training: the compiled loss in a Python loop"),
    System("PyTorch nn.LSTM", lstm_module, requires="torch", workloads=("lstm",),
           note="torch.nn.LSTM forward and torch.autograd.grad (workload 10 only; eager "
                "PyTorch runs the same loss as a Python loop of cells)"),
]
