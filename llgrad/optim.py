"""Optimizers as pure functions over pytrees, written in plain numpy.

    opt = optim.adam(1e-3)
    state = opt.init(params)
    params, state = opt.update(grads, state, params)

``update`` never mutates: it returns new parameters and a new state.  Because it is
ordinary numpy code over arrays and Python floats, the same function runs eagerly on
numpy arrays and traces under ``llgrad.jit`` (or inside a compiled training loop) to
the same numbers.  That is why the state is data: a dict with the step count as a 0-d
float array of the parameters' dtype (exact to 2**24 updates in float32), and one params-shaped tree per optimizer slot
(``m``, ``v``, ...); nothing in an update branches on a value.

Each optimizer is a frozen dataclass of hyperparameters whose ``rule`` is the paper's
update for one leaf; ``Optimizer`` maps it over the tree.  The rules follow PyTorch's
``torch.optim`` conventions exactly (noted per class), so results can be compared.

A learning rate is a float or a schedule: a callable of the step, the number of
updates already applied (0 on the first update, as optax and PyTorch's schedulers
count), returning the rate as a 0-d array of the step's dtype.  Schedules use only
traceable operations: ``floor`` and ``%`` are not among them, so a staircase is a
chain of ``np.where`` over its boundaries (see ``piecewise``, ``step_decay``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Union

import numpy as np

from llgrad.compiler.frontend import pytree

Schedule = Callable[[np.ndarray], np.ndarray]
LearningRate = Union[float, Schedule]

__all__ = ["sgd", "momentum", "rmsprop", "adam", "adamw", "clip_by_global_norm",
           "global_norm", "constant", "piecewise", "step_decay", "cosine", "Optimizer"]


# ----------------------------------------------------------------------------------
# learning-rate schedules

@dataclass(frozen=True)
class Constant:
    """The same rate at every step (what a plain float learning rate means)."""
    lr: float

    def __call__(self, step):
        return self.lr


@dataclass(frozen=True)
class Piecewise:
    """``values[0]`` before ``boundaries[0]``, ``values[i]`` from ``boundaries[i-1]`` on
    (as optax.piecewise_constant_schedule with the values given outright)."""
    boundaries: tuple[float, ...]
    values: tuple[float, ...]

    def __post_init__(self):
        object.__setattr__(self, "boundaries", tuple(self.boundaries))
        object.__setattr__(self, "values", tuple(self.values))
        if len(self.values) != len(self.boundaries) + 1:
            raise ValueError(f"piecewise needs one more value than boundaries, got "
                             f"{len(self.values)} values for {len(self.boundaries)} boundaries")
        if list(self.boundaries) != sorted(self.boundaries):
            raise ValueError(f"piecewise boundaries must increase, got {self.boundaries}")

    def __call__(self, step):
        lr = np.full_like(step, self.values[0])
        for boundary, value in zip(self.boundaries, self.values[1:]):
            lr = np.where(step >= boundary, value, lr)
        return lr


@dataclass(frozen=True)
class StepDecay:
    """``lr * gamma ** floor(step / step_size)``, as torch.optim.lr_scheduler.StepLR, for
    steps below ``total_steps`` and constant after: with no traceable ``floor`` the
    staircase is unrolled into a ``Piecewise`` of ``total_steps / step_size`` stairs."""
    lr: float
    step_size: int
    gamma: float = 0.1
    total_steps: int = field(kw_only=True)

    def __call__(self, step):
        decays = range(1, math.ceil(self.total_steps / self.step_size))
        return Piecewise(tuple(k * self.step_size for k in decays),
                         tuple(self.lr * self.gamma ** k for k in (0, *decays)))(step)


@dataclass(frozen=True)
class Cosine:
    """``final + (lr - final) * (1 + cos(pi * min(step, total) / total)) / 2``, as
    torch.optim.lr_scheduler.CosineAnnealingLR with ``T_max=total_steps``."""
    lr: float
    total_steps: int
    final_lr: float = 0.0

    def __call__(self, step):
        progress = np.minimum(step, self.total_steps) / self.total_steps
        return self.final_lr + 0.5 * (self.lr - self.final_lr) * (1 + np.cos(np.pi * progress))


def _rate(lr: LearningRate, step):
    return lr(step) if callable(lr) else lr


# ----------------------------------------------------------------------------------
# optimizers

def _map_unzip(fn, n_out: int, *trees):
    """``fn`` leaf by leaf over trees shaped like ``trees[0]``; ``fn`` returns
    ``n_out`` values per leaf, gathered into ``n_out`` trees of that shape."""
    leaves, treedef = pytree.flatten(trees[0])
    columns = [leaves]
    for tree in trees[1:]:
        other, other_def = pytree.flatten(tree)
        pytree.check_same(treedef, other_def, "the gradients or optimizer state (which "
                          "must have the structure of the parameters)")
        columns.append(other)
    results = [fn(*leaf) for leaf in zip(*columns)]
    return tuple(pytree.unflatten(treedef, [r[i] for r in results]) for i in range(n_out))


def _float_dtype(tree) -> np.dtype:
    """The parameters' float dtype, for the step count (float64 if they are integers)."""
    return np.result_type(np.float32, *(leaf.dtype for leaf in pytree.flatten(tree)[0]))


@dataclass(frozen=True)
class Optimizer:
    """An update ``rule`` for one leaf, mapped over pytrees.

    Subclasses are dataclasses of hyperparameters with an ``lr`` field, name their
    per-leaf state in ``slots`` and define ``rule(g, p, *slots, lr, t)`` returning
    ``(new_p, *new_slots)``; ``t`` counts updates from 1, as in the papers.
    """
    slots: ClassVar[tuple[str, ...]] = ()

    def init(self, params) -> dict:
        state = {"step": np.zeros((), _float_dtype(params))}
        for name in self.slots:
            state[name] = pytree.map_leaves(np.zeros_like, params)
        return state

    def update(self, grads, state, params):
        step = state["step"]
        lr = _rate(self.lr, step)
        t = step + 1
        new_params, *new_slots = _map_unzip(
            lambda p, g, *slots: self.rule(g, p, *slots, lr=lr, t=t),
            1 + len(self.slots), params, grads, *(state[name] for name in self.slots))
        return new_params, {"step": t, **dict(zip(self.slots, new_slots))}

    def rule(self, g, p, *slots, lr, t):
        raise NotImplementedError


@dataclass(frozen=True)
class SGD(Optimizer):
    """p ← p − lr·g."""
    lr: LearningRate

    def rule(self, g, p, lr, t):
        return (p - lr * g,)


@dataclass(frozen=True)
class Momentum(Optimizer):
    """torch.optim.SGD(momentum=beta): buf ← beta·buf + g; p ← p − lr·buf, or with
    Nesterov's correction p ← p − lr·(g + beta·buf)."""
    lr: LearningRate
    beta: float = 0.9
    nesterov: bool = False
    slots: ClassVar[tuple[str, ...]] = ("buf",)

    def rule(self, g, p, buf, lr, t):
        buf = self.beta * buf + g
        direction = g + self.beta * buf if self.nesterov else buf
        return p - lr * direction, buf


@dataclass(frozen=True)
class RMSprop(Optimizer):
    """torch.optim.RMSprop (Hinton's lecture 6e): v ← decay·v + (1−decay)·g²;
    p ← p − lr·g / (√v + eps)."""
    lr: LearningRate
    decay: float = 0.99
    eps: float = 1e-8
    slots: ClassVar[tuple[str, ...]] = ("v",)

    def rule(self, g, p, v, lr, t):
        v = self.decay * v + (1 - self.decay) * g ** 2
        return p - lr * g / (np.sqrt(v) + self.eps), v


@dataclass(frozen=True)
class Adam(Optimizer):
    """Kingma & Ba (2015), Algorithm 1, with eps outside the square root as in
    torch.optim.Adam: bias-corrected moments m̂ = m/(1−b1ᵗ), v̂ = v/(1−b2ᵗ);
    p ← p − lr·m̂ / (√v̂ + eps)."""
    lr: LearningRate
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    slots: ClassVar[tuple[str, ...]] = ("m", "v")

    def rule(self, g, p, m, v, lr, t):
        m = self.b1 * m + (1 - self.b1) * g
        v = self.b2 * v + (1 - self.b2) * g ** 2
        m_hat = m / (1 - self.b1 ** t)
        v_hat = v / (1 - self.b2 ** t)
        return p - lr * m_hat / (np.sqrt(v_hat) + self.eps), m, v


@dataclass(frozen=True)
class AdamW(Adam):
    """Loshchilov & Hutter (2019): decoupled weight decay, applied as torch.optim.AdamW
    does, p ← p·(1 − lr·weight_decay) before the Adam step."""
    weight_decay: float = 1e-2

    def rule(self, g, p, m, v, lr, t):
        return super().rule(g, p * (1 - lr * self.weight_decay), m, v, lr=lr, t=t)


def global_norm(tree):
    """The Euclidean norm of all leaves together, as one flat vector."""
    return np.sqrt(sum(np.sum(leaf * leaf) for leaf in pytree.flatten(tree)[0]))


@dataclass(frozen=True)
class ClipByGlobalNorm:
    """Gradients scaled by min(1, max_norm / (global_norm + eps)) before ``inner``'s
    update, as torch.nn.utils.clip_grad_norm_ (whose eps this is)."""
    inner: Optimizer | ClipByGlobalNorm
    max_norm: float
    eps: float = 1e-6

    def init(self, params):
        return self.inner.init(params)

    def update(self, grads, state, params):
        scale = np.minimum(1.0, self.max_norm / (global_norm(grads) + self.eps))
        return self.inner.update(pytree.map_leaves(lambda g: g * scale, grads), state, params)


# The constructors, lower-case as in optax: optim.adam(1e-3) is Adam(lr=0.001, ...).
sgd, momentum, rmsprop, adam, adamw = SGD, Momentum, RMSprop, Adam, AdamW
clip_by_global_norm = ClipByGlobalNorm
constant, piecewise, step_decay, cosine = Constant, Piecewise, StepDecay, Cosine
