"""Data-parallel training on MPI (mpi4py, an optional extra: ``pip install -e '.[mpi]'``).

Each process of an MPI job holds a copy of the parameters and a shard of the data.
``llgrad.train(..., comm=MPI.COMM_WORLD)`` compiles the usual native training loop
with one more node per step: the step's loss and gradients, flattened into one
buffer (one per float dtype), summed over the ranks by ``MPI_Allreduce`` called from
the generated code, then divided by the number of ranks.  So every rank applies the
same update, from the mean of the ranks' minibatch gradients, which is the gradient
of the global batch (the union of the ranks' batches of that step) when the loss is a
mean over its batch and the ranks' batches have the same size.

What ``train`` adds around the loop lives here: the check that every rank is about to
run the same training (a collective: every rank raises the same clear error, no rank
waits forever), the broadcast of rank 0's parameters, a per-rank shuffle seed, and
the guard that turns an exception on one rank into ``comm.Abort`` (the other ranks
are blocked in the all-reduce and would wait forever) and a stall into an abort after
``LLGRAD_MPI_TIMEOUT`` seconds.  ``shard`` and ``allreduce_mean`` are for users who
split data or write their own loops around ``llgrad.grad``.

Summation order: MPI chooses it.  With 2 ranks every element is ``g0 + g1``, the same
on both ranks and in every run whichever rank adds (IEEE addition commutes).  With
more ranks, MPICH picks its algorithm by the number of ranks and the buffer size
(recursive doubling, reduce-scatter then allgather, or within one node a tree in
shared memory): each gives every rank the same bits and adds along a fixed tree for a
given number of ranks and buffer size, so a run repeats bit for bit, but 3 ranks and 4
ranks round differently.
"""
from __future__ import annotations

import builtins
import os
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from llgrad.compiler.frontend import pytree
from llgrad.ir import errors

#: seconds a rank may wait in one collective step of training (see ``watched``)
TIMEOUT_VARIABLE = "LLGRAD_MPI_TIMEOUT"


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise errors.UnsupportedError("llgrad.distributed needs mpi4py and an MPI library: "
                                      "pip install -e '.[mpi]'") from exc
    return MPI


def shard(data, comm):
    """This rank's part of arrays every rank holds whole: contiguous blocks of rows
    (axis 0), in rank order, sizes differing by at most one (``np.array_split``).
    ``data``: one array or a tuple/list of arrays with the same number of rows."""
    arrays = data if isinstance(data, (tuple, list)) else (data,)
    parts = tuple(np.array_split(np.asarray(x), comm.Get_size())[comm.Get_rank()]
                  for x in arrays)
    return parts if isinstance(data, (tuple, list)) else parts[0]


def allreduce_mean(tree, comm):
    """The element-wise mean over the ranks of a pytree of arrays (each rank's tree of
    the same structure, shapes and dtypes), e.g. gradients from ``llgrad.grad``; every
    rank gets the same tree.  One ``MPI_Allreduce`` per leaf, summed in MPI's order
    (see the module docstring), then divided by the number of ranks."""
    MPI = _mpi()
    size = comm.Get_size()

    def mean(leaf):
        leaf = np.array(leaf, order="C")     # a copy; 0-d stays 0-d
        if leaf.dtype.kind != "f":
            raise errors.DTypeError(f"allreduce_mean: a leaf is {leaf.dtype}; only float "
                                    f"arrays can be averaged")
        total = np.empty_like(leaf)
        comm.Allreduce(leaf, total, op=MPI.SUM)
        return total / leaf.dtype.type(size)

    return pytree.map_leaves(mean, tree)


# ----------------------------------------------------------------------------------
# inside the compiled step

@dataclass(frozen=True)
class GradientMean:
    """Rewrites a step's loss and gradients into their means over the ranks of a
    communicator, in the step's graph.  Hashable by its handles, so ``train`` reuses a
    compiled loop for another call on the same communicator."""
    comm: int              # MPI handles, from mpi4py.MPI._handleof
    reduce_op: int
    datatypes: tuple       # (dtype name, datatype handle) for float64 and float32
    handle_bits: int
    size: int

    @classmethod
    def of(cls, comm) -> "GradientMean":
        MPI = _mpi()
        return cls(MPI._handleof(comm), MPI._handleof(MPI.SUM),
                   (("float64", MPI._handleof(MPI.DOUBLE)), ("float32", MPI._handleof(MPI.FLOAT))),
                   8 * MPI._sizeof(MPI.Comm), comm.Get_size())

    def __call__(self, b, value, grads):
        """(value, grads) -> their means over the ranks: one flat buffer per float
        dtype (one in all, when the loss and the parameters share theirs), one
        all-reduce each, then each value sliced back out in its shape.  On one rank
        there is nothing to add: the step is the one-process step."""
        if self.size == 1:
            return value, list(grads)
        parts = [value] + list(grads)
        groups: dict = {}
        for k, x in enumerate(parts):
            groups.setdefault(x.dtype, []).append(k)
        for dtype, members in groups.items():
            flat = b.concatenate(*[b.reshape(parts[k], shape=(parts[k].type.size,))
                                   for k in members], axis=0)
            total = b.allreduce_sum(flat, comm=self.comm, datatype=dict(self.datatypes)[dtype],
                                    reduce_op=self.reduce_op, handle_bits=self.handle_bits)
            mean = b.div(total, b.full(self.size, total.type))
            start = 0
            for k in members:
                n = parts[k].type.size
                piece = b.slice(mean, starts=(start,), limits=(start + n,), strides=(1,))
                parts[k] = b.reshape(piece, shape=parts[k].shape)
                start += n
        return parts[0], parts[1:]


# ----------------------------------------------------------------------------------
# before the first step

def describe_training(loss, params, opt_state, data, optimizer, **settings) -> dict:
    """What every rank must agree on, as readable strings: the loss's name, each
    parameter's and optimiser-state leaf's path, dtype and shape, the data's row
    shapes and dtypes, the optimiser and ``settings`` (batch size, steps per epoch...)."""
    described = {"loss": getattr(loss, "__qualname__", repr(loss)), "optimizer": repr(optimizer)}
    for root, tree in (("params", params), ("opt_state", opt_state)):
        leaves, treedef = pytree.flatten(tree)
        for name, leaf in zip(pytree.leaf_names(treedef, root), leaves):
            leaf = np.asarray(leaf)
            described[name] = f"{leaf.dtype}{list(leaf.shape)}"
    for k, x in enumerate(data):
        described[f"data[{k}] rows"] = f"{x.dtype}{list(x.shape[1:])}"
    described.update({name: repr(value) for name, value in settings.items()})
    return described


def agree(comm, describe) -> None:
    """Every rank runs ``describe()`` (which checks this rank's arguments and returns
    ``describe_training``'s dict), then all exchange the outcomes in one collective:
    an error on any rank, or any difference between the ranks, is raised on every
    rank, naming the ranks and what differs; so no rank starts a step the others
    will not take."""
    try:
        outcome = ("ok", describe())
    except Exception as exc:   # noqa: BLE001 - shared with the other ranks, then raised
        outcome = ("error", (type(exc).__name__, str(exc)))
    with watched(comm, "the check before the first step"):
        outcomes = comm.allgather(outcome)
    failed = [(rank, err) for rank, (kind, err) in enumerate(outcomes) if kind == "error"]
    if failed:
        rank, (name, message) = failed[0]
        kind = getattr(errors, name, None) or getattr(builtins, name, None)
        kind = kind if isinstance(kind, type) and issubclass(kind, Exception) else RuntimeError
        raise kind(
            f"train(comm=...): rank {rank} of {len(outcomes)}: {message}")
    differences = _differences([described for _, described in outcomes])
    if differences:
        raise errors.ShapeError("train(comm=...): the ranks differ before the first step "
                                "(every rank must train the same parameters with the same "
                                "optimizer, batch size and number of steps):\n  "
                                + "\n  ".join(differences))


def _differences(described: list) -> list:
    keys = sorted(set().union(*described), key=lambda k: (k.split("[")[0], k))
    lines = []
    for key in keys:
        values = [d.get(key, "(none)") for d in described]
        if len(set(values)) > 1:
            lines.append(f"{key}: " + ", ".join(f"rank {r} has {v}" for r, v in enumerate(values)))
    return lines


def broadcast(comm, tree):
    """``tree`` as rank 0 holds it, on every rank (same structure on all: ``agree``)."""
    leaves, treedef = pytree.flatten(tree)
    copies = [np.array(leaf, copy=True) for leaf in leaves]
    with watched(comm, "the broadcast of rank 0's parameters"):
        for leaf in copies:
            comm.Bcast(leaf, root=0)
    return pytree.unflatten(treedef, copies)


def rank_seed(shuffle, comm):
    """The shuffle seed of this rank: ``[shuffle, rank]`` (None stays None), so each
    rank draws its own permutation of its shard, the same in every run."""
    return None if shuffle is None else [shuffle, comm.Get_rank()]


def from_root(comm, load):
    """``load()`` run on rank 0 (guarded), its result sent to every rank."""
    value = guarded(load, comm, "loading on rank 0")() if comm.Get_rank() == 0 else None
    with watched(comm, "the broadcast from rank 0"):
        return comm.bcast(value, root=0)


def agreed_callback(callback, comm):
    """``callback`` run on every rank (guarded); training stops when it returns False on
    any rank, on all of them (one collective per chunk), so no rank trains on alone."""
    MPI = _mpi()
    run = guarded(callback, comm, "the callback")

    def call(info):
        stop = run(info) is False
        with watched(comm, "the callback's stop vote"):
            return False if comm.allreduce(stop, op=MPI.LOR) else None
    return call


def slowest(comm, *seconds):
    """The largest of each value over the ranks (so timings are the same on all)."""
    return tuple(comm.allreduce(s, op=_mpi().MAX) for s in seconds)


# ----------------------------------------------------------------------------------
# faults

def timeout_seconds() -> float | None:
    """``LLGRAD_MPI_TIMEOUT`` in seconds, or None (unset or empty: no timeout)."""
    text = os.environ.get(TIMEOUT_VARIABLE, "").strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ValueError(f"{TIMEOUT_VARIABLE}={text!r}: give a positive number of seconds")
    return seconds


@contextmanager
def watched(comm, what: str):
    """With ``LLGRAD_MPI_TIMEOUT`` set and more than one rank: aborts the job (from a
    watchdog thread) if the block takes longer; native calls release the GIL, so the
    thread runs while this one waits inside ``MPI_Allreduce``."""
    seconds = timeout_seconds()
    if seconds is None or comm.Get_size() == 1:
        yield
        return
    timer = threading.Timer(seconds, _stalled, (comm, what, seconds))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _stalled(comm, what, seconds):
    _say(comm, f"{what} did not finish within {TIMEOUT_VARIABLE}={seconds:g} s (a rank "
               f"stalled or died); aborting the MPI job")
    _abort(comm, 3)


def guarded(fn, comm, what: str):
    """``fn`` that, on more than one rank, aborts the whole job (``comm.Abort``) when it
    raises, after printing the error with this rank's number: the other ranks would
    otherwise wait in their next all-reduce for ever.  Watched (``LLGRAD_MPI_TIMEOUT``)."""
    if comm.Get_size() == 1:
        return fn

    def call(*args, **kwargs):
        with watched(comm, what):
            try:
                return fn(*args, **kwargs)
            except BaseException:   # noqa: BLE001 - any exception strands the other ranks
                _say(comm, f"{what} raised; aborting the MPI job (the other ranks would "
                           f"wait in the all-reduce):\n{traceback.format_exc()}")
                _abort(comm, 1)
                raise
    return call


#: seconds between a rank's last words and the abort: MPI_Abort kills the job at once,
#: and mpiexec may not yet have passed on what the rank wrote to stderr
ABORT_GRACE = 0.5


def _abort(comm, code: int) -> None:
    time.sleep(ABORT_GRACE)
    comm.Abort(code)


def _say(comm, message: str) -> None:
    sys.stderr.write(f"llgrad: rank {comm.Get_rank()} of {comm.Get_size()}: {message}\n")
    sys.stderr.flush()
