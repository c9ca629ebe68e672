"""Checkpoints: ``llgrad.save`` / ``llgrad.load``, a training run's state in a plain .npz.

The file is numpy's ``.npz`` (read it with ``np.load``, no pickles): the leaves of the
parameters as ``params/0``, ``params/1``... and of the optimiser state as
``opt_state/0``..., in pytree order, the step as ``step``, the trees' structures as
JSON in ``params/tree`` and ``opt_state/tree``, and, when ``train`` writes it, the
history so far (``loss_history``, ``grad_norms``: one row per step, one column per
parameter leaf).

Written atomically: into a temporary file in the same directory, flushed to disk, then
renamed over ``path``, so a crash (or a full disk) leaves the previous checkpoint
whole, never half of a new one.  ``train(checkpoint_every=, checkpoint_path=)``
writes one every ``checkpoint_every`` steps and resumes from ``checkpoint_path``
when it exists, with the results an uninterrupted run would have given; with
``comm``, rank 0 reads and writes it.  (Not to be confused with ``llgrad.checkpoint``,
which makes the backward pass recompute a function's forward values.)
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass

import numpy as np

from llgrad import distributed
from llgrad.compiler.frontend import pytree
from llgrad.ir.errors import LlgradError


@dataclass
class Checkpoint:
    params: object
    opt_state: object
    step: int
    loss_history: np.ndarray | None = None   # the losses of steps 0 .. step - 1
    grad_norms: np.ndarray | None = None     # (step, parameter leaves) gradient norms

    def __iter__(self):
        """``params, opt_state, step = llgrad.load(path)``."""
        return iter((self.params, self.opt_state, self.step))


def save(path, params, opt_state=None, step: int = 0, *, loss_history=None,
         grad_norms=None) -> None:
    """Write ``params``, ``opt_state`` (pytrees of arrays) and ``step`` to ``path``
    atomically (see the module docstring)."""
    arrays = {"step": np.asarray(step, np.int64)}
    for root, tree in (("params", params), ("opt_state", opt_state)):
        leaves, treedef = pytree.flatten(tree)
        arrays[f"{root}/tree"] = np.asarray(json.dumps(pytree.to_data(treedef)))
        arrays.update({f"{root}/{k}": np.asarray(leaf) for k, leaf in enumerate(leaves)})
    for name, value in (("loss_history", loss_history), ("grad_norms", grad_norms)):
        if value is not None:
            arrays[name] = np.asarray(value)
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)),
                               prefix=os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load(path) -> Checkpoint:
    """The checkpoint ``save`` wrote to ``path``."""
    try:
        with np.load(os.fspath(path), allow_pickle=False) as f:
            arrays = {name: f[name] for name in f.files}
    except (OSError, ValueError) as exc:
        raise LlgradError(f"llgrad.load({os.fspath(path)!r}): not a checkpoint ({exc})") from exc
    if "step" not in arrays or "params/tree" not in arrays:
        raise LlgradError(f"llgrad.load({os.fspath(path)!r}): not a checkpoint written by "
                          f"llgrad.save (it has {sorted(arrays)})")
    trees = {}
    for root in ("params", "opt_state"):
        treedef = pytree.from_data(json.loads(str(arrays[f"{root}/tree"])))
        count = len(pytree.leaf_names(treedef, root))
        trees[root] = pytree.unflatten(treedef, [arrays[f"{root}/{k}"] for k in range(count)])
    return Checkpoint(trees["params"], trees["opt_state"], int(arrays["step"]),
                      arrays.get("loss_history"), arrays.get("grad_norms"))


def resume(path, comm=None) -> Checkpoint | None:
    """The checkpoint at ``path`` if one is there (None for no path or no file); with
    ``comm``, rank 0's, sent to every rank."""
    if path is None:
        return None
    found = lambda: load(path) if os.path.exists(path) else None  # noqa: E731
    return found() if comm is None else distributed.from_root(comm, found)


def save_from_root(path, comm, *args, **kwargs) -> None:
    """``save`` on rank 0 only (every rank holds the same state); any rank without
    ``comm``.  A failure on rank 0 aborts the job (``distributed.guarded``)."""
    if comm is None:
        save(path, *args, **kwargs)
    elif comm.Get_rank() == 0:
        distributed.guarded(save, comm, f"writing the checkpoint {os.fspath(path)!r}")(
            path, *args, **kwargs)
