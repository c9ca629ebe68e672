"""The six workloads of the benchmark suite, each defined once.

A loss is written against an array namespace ``xp`` (``tanh exp log sin cos sqrt sum max
mean`` and the operators), so that every system runs the same source: llgrad traces it
with ``xp = numpy``, HIPS autograd gets ``autograd.numpy``, JAX ``jax.numpy``, PyTensor
``pytensor.tensor``, PyTorch a thin adapter, and micrograd numpy itself over object
arrays of its ``Value``s.  Beside each loss sits its gradient by hand in numpy: run in
float64 it is the reference every system is checked against, and the suite checks it
against central finite differences before trusting it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

SEED = 0


@dataclass(frozen=True)
class Problem:
    """One configuration of a workload: the differentiable ``params`` (a dict, in the
    order gradients are compared) and the remaining arguments ``data``."""
    params: dict
    data: tuple
    size: str                 # how the configuration is shown in tables
    scale: dict               # the numbers behind ``size`` (plot axes, JSON)
    steps: int = 0            # training only: SGD steps, each on the next ``batch`` rows
    batch: int = 0
    lr: float = 0.0


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    loss: Callable            # loss(xp, params, *data) -> scalar
    backprop: Callable        # backprop(params, *data) -> {name: gradient}, numpy by hand
    problems: Callable        # problems(quick) -> [Problem, ...]
    training: bool = False    # time a whole SGD run instead of one gradient


# -- 1. scalar expression ------------------------------------------------------------

TERMS = 50


def scalar_loss(xp, params):
    x, y, z = params["x"], params["y"], params["z"]
    total = 0.0
    for i in range(TERMS):
        total = total + xp.tanh(0.01 * i * x + y) * xp.exp(-0.001 * i * z * z)
    return total + xp.log(1 + x * x) * xp.sin(y * z)


def scalar_backprop(params):
    x, y, z = (float(params[k]) for k in "xyz")
    i = np.arange(TERMS)
    t, e = np.tanh(0.01 * i * x + y), np.exp(-0.001 * i * z * z)
    dt = (1 - t * t) * e
    log_term, s, c = np.log(1 + x * x), np.sin(y * z), np.cos(y * z)
    return {"x": float(np.sum(dt * 0.01 * i) + 2 * x / (1 + x * x) * s),
            "y": float(np.sum(dt) + log_term * c * z),
            "z": float(np.sum(t * e * (-0.002 * i * z)) + log_term * c * y)}


def scalar_problems(quick):
    return [Problem({"x": 0.7, "y": -0.3, "z": 1.2}, (), "3 floats, 50 terms", {"terms": TERMS})]


# -- 2. tiny MLP (micrograd scale) -------------------------------------------------------

def tiny_mlp_loss(xp, params, x, y):
    h = xp.tanh(x @ params["w1"] + params["b1"])
    h = xp.tanh(h @ params["w2"] + params["b2"])
    return xp.mean((h @ params["w3"] + params["b3"] - y) ** 2)


def tiny_mlp_backprop(params, x, y):
    h1 = np.tanh(x @ params["w1"] + params["b1"])
    h2 = np.tanh(h1 @ params["w2"] + params["b2"])
    dout = 2 * (h2 @ params["w3"] + params["b3"] - y) / y.size
    dh2 = (dout @ params["w3"].T) * (1 - h2 * h2)
    dh1 = (dh2 @ params["w2"].T) * (1 - h1 * h1)
    return {"w1": x.T @ dh1, "b1": dh1.sum(0), "w2": h1.T @ dh2, "b2": dh2.sum(0),
            "w3": h2.T @ dout, "b3": dout.sum(0)}


def _layers(rng, widths, dtype):
    params = {}
    for k, (n_in, n_out) in enumerate(zip(widths, widths[1:]), start=1):
        params[f"w{k}"] = (rng.normal(size=(n_in, n_out)) / np.sqrt(n_in)).astype(dtype)
        params[f"b{k}"] = (0.1 * rng.normal(size=n_out)).astype(dtype)
    return params


def tiny_mlp_problems(quick):
    rng = np.random.default_rng(SEED)
    x = rng.uniform(-2, 2, size=(100, 2))
    y = np.sin(x[:, :1]) * np.cos(x[:, 1:])
    return [Problem(_layers(rng, (2, 16, 16, 1), np.float64), (x, y), "2-16-16-1, 100 points",
                    {"points": 100})]


# -- 3, 4, 6. the MLP step, its training loop and its scaling ---------------------------

def mlp_loss(xp, params, x, y):
    h = xp.tanh(x @ params["w1"] + params["b1"])
    logits = h @ params["w2"] + params["b2"]
    logits = logits - xp.max(logits, axis=1, keepdims=True)
    logp = logits - xp.log(xp.sum(xp.exp(logits), axis=1, keepdims=True))
    return -xp.mean(xp.sum(logp * y, axis=1))


def mlp_backprop(params, x, y):
    """Softmax cross-entropy with one-hot targets: d loss / d logits = (softmax - y) / batch."""
    h = np.tanh(x @ params["w1"] + params["b1"])
    logits = h @ params["w2"] + params["b2"]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    dlogits = (e / e.sum(axis=1, keepdims=True) - y) / x.shape[0]
    dh = (dlogits @ params["w2"].T) * (1 - h * h)
    return {"w1": x.T @ dh, "b1": dh.sum(0), "w2": h.T @ dlogits, "b2": dlogits.sum(0)}


def mlp_problem(n_in, hidden, n_out, batch, steps=1, lr=0.0, sweeps=()):
    """float32 data for ``steps`` minibatches of ``batch`` rows, and initial parameters;
    ``sweeps`` names the scaling curves (hidden, batch) this point lies on."""
    rng = np.random.default_rng(SEED)
    params = _layers(rng, (n_in, hidden, n_out), np.float32)
    x = rng.normal(size=(steps * batch, n_in)).astype(np.float32)
    y = np.eye(n_out, dtype=np.float32)[rng.integers(0, n_out, steps * batch)]
    size = f"{n_in}-{hidden}-{n_out}, batch {batch}" + (f", {steps} steps" if steps > 1 else "")
    return Problem(params, (x, y), size, {"hidden": hidden, "batch": batch, "sweeps": sweeps},
                   steps=steps if lr else 0, batch=batch, lr=lr)


def mlp_step_problems(quick):
    return [mlp_problem(64, 32, 10, 16) if quick else mlp_problem(784, 128, 10, 64)]


def training_problems(quick):
    if quick:
        return [mlp_problem(64, 32, 10, 16, steps=10, lr=0.1)]
    return [mlp_problem(784, 128, 10, 64, steps=200, lr=0.1)]


SCALING_WIDTHS = (32, 64, 128, 256, 512, 1024)
SCALING_BATCHES = (16, 32, 64, 128, 256, 512, 1024)


def scaling_problems(quick):
    """Hidden width swept at batch 64, then batch swept at width 128 (the point both
    sweeps share is measured once)."""
    n_in, widths, batches, at_width, at_batch = (
        (64, (16, 32), (16, 32), 32, 16) if quick
        else (784, SCALING_WIDTHS, SCALING_BATCHES, 128, 64))
    points = {(h, at_batch): ("hidden",) for h in widths}
    for b in batches:
        points[at_width, b] = points.get((at_width, b), ()) + ("batch",)
    return [mlp_problem(n_in, h, 10, b, sweeps=sweeps) for (h, b), sweeps in points.items()]


# -- 5. elementwise vector ---------------------------------------------------------------

def elementwise_loss(xp, params):
    x = params["x"]
    return xp.sum(xp.log(1 + xp.exp(xp.sin(x) * x)) + xp.sqrt(x * x + 1) * xp.cos(x))


def elementwise_backprop(params):
    x = params["x"]
    s, c, r = np.sin(x), np.cos(x), np.sqrt(x * x + 1)
    u = s * x
    return {"x": (c * x + s) / (1 + np.exp(-u)) + x / r * c - r * s}


def elementwise_problems(quick):
    n = 10_000 if quick else 1_000_000
    x = np.random.default_rng(SEED).uniform(-5, 5, size=n)
    return [Problem({"x": x}, (), f"n = {n:,}", {"n": n})]


WORKLOADS = [
    Workload("scalar", "1. scalar expression", scalar_loss, scalar_backprop, scalar_problems),
    Workload("tiny_mlp", "2. tiny MLP 2-16-16-1, tanh, MSE", tiny_mlp_loss, tiny_mlp_backprop,
             tiny_mlp_problems),
    Workload("mlp_step", "3. MLP step, tanh, softmax cross-entropy, float32", mlp_loss,
             mlp_backprop, mlp_step_problems),
    Workload("training", "4. training loop, SGD over fixed minibatches, float32", mlp_loss,
             mlp_backprop, training_problems, training=True),
    Workload("elementwise", "5. elementwise vector", elementwise_loss, elementwise_backprop,
             elementwise_problems),
    Workload("scaling", "6. scaling of the MLP step", mlp_loss, mlp_backprop, scaling_problems),
]


# -- what the checks compare against ------------------------------------------------------

def as_float64(tree):
    return {k: np.asarray(v, np.float64) for k, v in tree.items()}


def reference_gradient(workload, problem):
    """The hand-written gradient in float64 (inputs widened, never narrowed)."""
    return as_float64(workload.backprop(as_float64(problem.params),
                                        *(np.asarray(d, np.float64) for d in problem.data)))


def reference_training(workload, problem):
    """SGD in float64 with the hand-written gradient: the parameters every system's
    training run must reproduce."""
    params = as_float64(problem.params)
    data = [np.asarray(d, np.float64) for d in problem.data]
    for step in range(problem.steps):
        rows = slice(step * problem.batch, (step + 1) * problem.batch)
        grads = workload.backprop(params, *(d[rows] for d in data))
        params = {k: params[k] - problem.lr * grads[k] for k in params}
    return params


def finite_difference_error(workload, problem, eps=1e-6):
    """Relative disagreement between the reference gradient and a central difference of
    the float64 loss along a random direction (for training, of the first minibatch)."""
    params = as_float64(problem.params)
    data = [np.asarray(d, np.float64) for d in problem.data]
    if workload.training:
        data = [d[:problem.batch] for d in data]
    rng = np.random.default_rng(SEED + 1)
    direction = {k: rng.normal(size=np.shape(v)) for k, v in params.items()}

    def loss_along(t):
        return float(workload.loss(np, {k: params[k] + t * direction[k] for k in params}, *data))

    numeric = (loss_along(eps) - loss_along(-eps)) / (2 * eps)
    grads = workload.backprop(params, *data)
    analytic = float(sum(np.sum(np.asarray(grads[k]) * direction[k]) for k in params))
    return abs(numeric - analytic) / max(abs(analytic), 1e-12)
