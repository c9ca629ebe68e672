"""Whole training loops as one native call.

``train`` compiles one function per (loss, optimizer, shapes, chunk length) that runs
many optimisation steps in a ``loop`` node: each step slices its minibatch indices
out of an order array (``dynamic_slice``), gathers the rows (``take``; unshuffled
data are sliced instead, by address, so a batch costs no copy), runs the
loss's joint forward+backward graph inlined into the body, records the loss and (unless
``grad_norms=False``) the per-parameter gradient norms, and applies the optimizer's
update, itself traced from plain numpy.  Python runs only between chunks of whole
epochs (at least ``MIN_CHUNK_STEPS`` steps, or one epoch with progress and callbacks).
The number of steps a call runs is an argument of the compiled function (a ``loop``
with a runtime trip count), bounded by the chunk length it was compiled for: its order
argument and its per-step records (losses, gradient norms) are sized to that bound and
the caller keeps the rows of the steps run.  So training for another number of epochs,
or in shorter chunks, reuses the compiled loop (``compiled_loops()`` counts them).

Minibatches: each epoch takes ``len(data) // batch_size`` full batches; the last
partial batch is dropped (with shuffling, different rows are dropped each epoch).
"""
from __future__ import annotations

import functools
import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from llgrad import distributed, profiling, saving
from llgrad.compiler.dispatch.staging import compile_trace, differentiate
from llgrad.compiler.frontend import pytree
from llgrad.compiler.frontend.trace import TraceContext, Tracer, input_type, lift, trace
from llgrad.compiler.passes.pipeline import optimize
from llgrad.compiler.passes.rewrite import inline
from llgrad.ir.errors import DTypeError, ShapeError
from llgrad.ir.graph import Builder, Graph
from llgrad.ir.types import TensorType


@dataclass
class TrainResult:
    params: object                 # trained pytree, same structure as the initial params
    opt_state: object              # final optimizer state (resume with train(opt_state=...))
    loss_history: np.ndarray       # loss of every step, recorded by the native loop
    grad_norms: object             # per-parameter L2 gradient norm per step, params' structure
                                   # (None with train(grad_norms=False))
    steps: int
    epochs: int
    seconds: float                 # wall time of the native calls (compilation excluded)
    compile_seconds: float
    graph: Graph = field(repr=False, default=None)  # the compiled training function's IR
    profile: object = field(repr=False, default=None)  # llgrad.profiling.Profile (profile=True)

    @property
    def seconds_per_epoch(self) -> float:
        return self.seconds / max(self.epochs, 1)

    def plot(self):
        """The loss of every step and, on a log axis, every parameter's gradient norm:
        a matplotlib Figure (matplotlib: the ``plots`` extra)."""
        plt = profiling.pyplot("TrainResult.plot()")
        panels = 1 + (self.grad_norms is not None)
        fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 3.8), squeeze=False)
        axes[0][0].plot(self.loss_history, lw=1)
        axes[0][0].set(title="loss", xlabel="step")
        if self.grad_norms is not None:
            norms, treedef = pytree.flatten(self.grad_norms)
            ax = axes[0][1]
            for name, norm in zip(pytree.leaf_names(treedef, "params"), norms):
                ax.semilogy(norm, lw=1, label=name)
            ax.set(title="gradient norm per parameter", xlabel="step")
            if len(norms) <= 12:
                ax.legend(fontsize="small")
        fig.tight_layout()
        return fig

    def _repr_html_(self):
        return (f"<p>llgrad.train: {self.steps} steps, {self.epochs} epochs in "
                f"{self.seconds:.2f} s (compiled in {self.compile_seconds:.2f} s); loss "
                f"{self.loss_history[0]:.4g} &rarr; {self.loss_history[-1]:.4g}</p>")


def _step_body(loss_joint, optimizer, param_tree, state_tree, types, n_params, n_state,
               n_data, batch_size, in_order, grad_norms, reduce=None, prefetch=False):
    """The loop body: (i, params..., state..., data..., order) -> (params'..., state'...,
    loss[, grad_norms]).  ``in_order``: the data are not shuffled, so every batch is the
    rows from its first index on.  ``reduce(b, loss, grads)``: the loss and gradients
    the step goes on with (``distributed.GradientMean``: their means over MPI ranks).
    ``prefetch``: the step first asks the cache for the next step's rows."""
    with TraceContext("train_step") as ctx:
        b = ctx.builder
        step = b.parameter(index=0, type=TensorType((), "int64"), name="step")
        leaves = [b.parameter(index=k + 1, type=t, name=name) for k, (t, name) in enumerate(types)]
        params = leaves[:n_params]
        state = leaves[n_params:n_params + n_state]
        data = leaves[n_params + n_state:n_params + n_state + n_data]
        order = leaves[-1]
        start = b.mul(step, b.const(batch_size, "int64"))
        if prefetch:
            start = b.add(start, _prefetch_next_batch(b, data, order, start, batch_size))
        if in_order:    # each batch is consecutive rows: sliced by address, never copied
            first = b.reshape(b.dynamic_slice(order, start, size=1), shape=())
            batch = [b.dynamic_slice(x, first, size=batch_size) for x in data]
        else:
            rows = b.dynamic_slice(order, start, size=batch_size)
            batch = [b.take(x, rows) for x in data]
        value, *grads = inline(b, loss_joint, params + batch)
        if reduce is not None:
            value, grads = reduce(b, value, grads)
        new_params, new_state = optimizer.update(
            pytree.unflatten(param_tree, [Tracer(g) for g in grads]),
            pytree.unflatten(state_tree, [Tracer(s) for s in state]),
            pytree.unflatten(param_tree, [Tracer(p) for p in params]))
        carried = []
        for new, old in zip(pytree.flatten(new_params)[0] + pytree.flatten(new_state)[0],
                            params + state):
            node = lift(new)
            node = node if node.dtype == old.dtype else b.convert(node, dtype=old.dtype)
            carried.append(b.broadcast_to(node, old.shape))
        outputs = carried + [b.convert(value, dtype="float64")]
        if grad_norms:
            norms = [b.reshape(b.sqrt(_sum_of_squares(b, g)), shape=(1,)) for g in grads]
            outputs.append(b.convert(b.concatenate(*norms, axis=0), dtype="float64"))
    return optimize(Graph([step] + leaves, outputs, name="train_step"))


def _prefetch_next_batch(b, data, order, start, batch_size):
    """0, once the next step's rows of every data array are requested from memory
    (``prefetch_rows``): the step adds it to its first index, so the requests go out
    before its arithmetic, whose time their latency can overlap."""
    following = b.add(start, b.const(batch_size, "int64"))
    tokens = [b.prefetch_rows(x, order, following, rows=batch_size) for x in data]
    return functools.reduce(b.add, tokens)


#: gradients with rows at least this long are summed per row first
LONG_ROW = 64


def _sum_of_squares(b, g):
    """Summed per row first, then over the rows: the row sums of a large gradient are
    computed by several threads at once (each on its own), where a single sum over
    every element would run on one.  Short rows (a 128x10 layer's) are one sum over
    every element instead: a run shorter than the sum's vector lanes is added an
    element at a time (``train(..., profile=True)`` shows each norm's kernel)."""
    squares = b.mul(g, g)
    if g.type.ndim < 2:
        return b.reduce_sum(squares, axes=tuple(range(g.type.ndim)))
    cols = g.type.size // g.shape[0] if g.shape[0] else 0
    if cols < LONG_ROW:
        return b.reduce_sum(b.reshape(squares, shape=(g.type.size,)), axes=(0,))
    rows = b.reshape(squares, shape=(g.shape[0], cols))
    return b.reduce_sum(b.reduce_sum(rows, axes=(1,)), axes=(0,))


def _compile_chunk(loss, optimizer, params, state, data, batch_size, steps, backend, profile,
                   in_order, grad_norms, reduce=None, prefetch=False):
    outer = training_graph(loss, optimizer, params, state, data, batch_size, steps, in_order,
                           grad_norms, reduce, prefetch)
    return compile_trace(outer, None, backend, profile=profile).executable, outer


def training_graph(loss, optimizer, params, state, data, batch_size: int, steps: int,
                   in_order: bool, grad_norms: bool, reduce=None, prefetch=False,
                   runtime_count=True) -> Graph:
    """Up to ``steps`` optimiser steps as one ``loop`` node: (params..., opt_state...,
    data..., order, count) -> (params'..., opt_state'..., losses[, grad_norms]), where
    step ``i < count`` trains on the rows ``order[i * batch_size:(i + 1) * batch_size]``
    of the data (``in_order``: the rows from ``order[i * batch_size]`` on, sliced by
    address); the per-step records have ``steps`` rows, zero from ``count`` on.
    ``runtime_count=False``: no ``count`` input, exactly ``steps`` steps (export)."""
    p_leaves, p_tree = pytree.flatten(params)
    s_leaves, s_tree = pytree.flatten(state)
    p_names = pytree.leaf_names(p_tree, "params")
    p_types = [input_type(x, name) for x, name in zip(p_leaves, p_names)]
    for t, name in zip(p_types, p_names):
        if not t.is_float:
            raise DTypeError(f"train(): parameter {name} is {t}; parameters must be float")
    d_types = [input_type(x, f"data[{k}]") for k, x in enumerate(data)]
    batch_types = [t.with_shape((batch_size,) + t.shape[1:]) for t in d_types]
    loss_name = getattr(loss, "__name__", "loss")
    names = p_names + [f"batch[{k}]" for k in range(len(data))]
    graph, _ = trace(loss, p_types + batch_types,
                     ("tuple", 1 + len(data), (p_tree,) + (pytree.LEAF,) * len(data)),
                     loss_name, names)
    joint = optimize(differentiate(graph, "value_and_grad", list(range(len(p_leaves)))))
    s_types = [input_type(x, "opt_state") for x in s_leaves]
    order_type = TensorType((steps * batch_size,), "int64")
    types = p_types + s_types + d_types + [order_type]
    type_names = (p_names + pytree.leaf_names(s_tree, "opt_state")
                  + [f"data[{k}]" for k in range(len(data))] + ["order"])
    body = _step_body(joint, optimizer, p_tree, s_tree, list(zip(types, type_names)),
                      len(p_leaves), len(s_leaves), len(data), batch_size, in_order, grad_norms,
                      reduce, prefetch)

    b = Builder()
    inputs = [b.parameter(index=k, type=t, name=n) for k, (t, n) in enumerate(zip(types, type_names))]
    n_carried = len(p_leaves) + len(s_leaves)
    count = [b.parameter(index=len(inputs), type=TensorType((), "int64"), name="count")
             ] if runtime_count else []
    looped = b.loop(*inputs, *count, body=body, trip_count=steps, n_carried=n_carried,
                    **({"runtime_count": True} if runtime_count else {}))
    outputs = [b.tuple_get(looped, index=k) for k in range(n_carried + 1 + grad_norms)]
    return Graph(inputs + count, outputs, name=f"train_{loss_name}")


_CACHE: dict = {}    # {training key: {step bound: (executable, graph)}}
MIN_CHUNK_STEPS = 256


def compiled_loops() -> int:
    """How many training loops ``train`` has compiled in this process."""
    return sum(len(bounds) for bounds in _CACHE.values())


def _bounded_order(order, start: int, bound: int):
    """``order[start:start + bound]``, padded with row 0 to ``bound`` rows past its end
    (those steps do not run: the count stops the loop before them)."""
    part = order[start:start + bound]
    return part if len(part) == bound else np.concatenate(
        [part, np.zeros(bound - len(part), np.int64)])


def _signature(p_tree, s_tree, leaves, data):
    """Pytree structures, shapes and dtypes: what the compiled loop is specialised to."""
    return (p_tree, s_tree, tuple((x.shape, x.dtype.str) for x in list(leaves) + list(data)))


def check_data(data, batch_size):
    data = tuple(np.ascontiguousarray(x) for x in (data if isinstance(data, (tuple, list)) else (data,)))
    if not data:
        raise ShapeError("train(): data is empty; pass (X, Y) arrays split along axis 0")
    lengths = [x.shape[0] if x.ndim else None for x in data]
    if None in lengths:
        raise ShapeError("train(): every data array needs a leading example axis")
    if len(set(lengths)) != 1:
        described = ", ".join(f"data[{k}] has {n} rows" for k, n in enumerate(lengths))
        raise ShapeError(f"train(): data arrays have different lengths: {described}")
    if not 1 <= batch_size <= lengths[0]:
        raise ShapeError(f"train(): batch_size={batch_size} must be between 1 and the number "
                         f"of examples ({lengths[0]})")
    return data, lengths[0]


def _epoch_orders(n, batch_size, epochs, shuffle):
    """Row indices for every step of every epoch, concatenated."""
    used = (n // batch_size) * batch_size
    rng = None if shuffle is None else np.random.default_rng(shuffle)
    orders = [(np.arange(n) if rng is None else rng.permutation(n))[:used] for _ in range(epochs)]
    return np.concatenate(orders).astype(np.int64)


class _Progress:
    """``train(progress=True)``: tqdm's bar (``tqdm.auto``: a widget in a notebook) with
    its rate, ETA and the current loss when tqdm is installed (the ``progress`` extra),
    else a plain bar on stderr.  Updated between native chunks."""

    def __init__(self, total: int):
        try:
            from tqdm.auto import tqdm
        except ImportError:
            tqdm = None
        self.total = total
        self.bar = None if tqdm is None else tqdm(total=total, unit="step", desc="train")

    def update(self, done: int, loss: float, elapsed: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
            self.bar.update(done - self.bar.n)
        else:
            width = 30
            filled = int(width * done / self.total)
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] step {done}/"
                             f"{self.total} loss {loss:.4g} {elapsed:.2f}s"
                             + ("\n" if done == self.total else ""))
            sys.stderr.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _agree_across_ranks(comm, loss, params, opt_state, data, optimizer, batch_size,
                        **settings):
    """Every rank checks its own arguments, then all compare them (``distributed.agree``):
    parameters, optimiser and its state, batch size and steps per epoch, ``settings``."""
    def describe():
        checked, n = check_data(data, batch_size)
        state = optimizer.init(params) if opt_state is None else opt_state
        return distributed.describe_training(loss, params, state, checked, optimizer,
                                             batch_size=batch_size,
                                             steps_per_epoch=n // batch_size, **settings)
    distributed.agree(comm, describe)


def train(loss, params, data, optimizer, *, batch_size: int, epochs: int = 1, shuffle=None,
          progress: bool = False, callback=None, steps_per_call: int | None = None,
          opt_state=None, grad_norms: bool = True, backend: str = "native",
          profile: bool = False, comm=None, checkpoint_every: int | None = None,
          checkpoint_path=None, prefetch: bool = False) -> TrainResult:
    """Train ``params`` to minimise ``loss(params, *batch)`` over minibatches of ``data``.

    ``shuffle=None`` keeps the data order; an int seeds a deterministic permutation per
    epoch.  ``progress`` and ``callback(info)`` run between native chunks (one epoch
    each unless ``steps_per_call`` says otherwise); a callback returning False stops
    training after its chunk.  ``grad_norms=False`` leaves the per-step gradient norms
    out (the result's ``grad_norms`` is None): they are the step's only reductions over
    whole gradients, ~3% of a 784-128-10 MLP's step.  ``profile=True`` times every
    kernel of the step (the result's ``profile``, see ``llgrad.profile``).

    ``comm`` (an ``mpi4py.MPI.Comm``): data-parallel training, each rank on its own
    shard of ``data``, the gradients averaged over the ranks in every step by an
    ``MPI_Allreduce`` inside the native loop (see ``llgrad.distributed`` and
    docs/distributed.md).  ``checkpoint_every=k`` writes ``llgrad.save``'s checkpoint
    to ``checkpoint_path`` every k steps; a ``checkpoint_path`` that exists is resumed
    from, with the results of an uninterrupted run (see ``llgrad.saving``).
    ``prefetch=True``: each step first asks the cache for the next minibatch's rows
    (``prefetch_rows``; the results are the same bit for bit).  Off by default: on a
    data set read from memory it measured no faster (docs/performance.md, "Training
    that streams its data")."""
    if profile and backend != "native":
        raise ValueError(f"train(): profile=True needs backend='native', not {backend!r}")
    if checkpoint_every is not None and (checkpoint_path is None or checkpoint_every < 1):
        raise ValueError(f"train(): checkpoint_every={checkpoint_every} needs a count of at "
                         f"least 1 and a checkpoint_path")
    resumed = saving.resume(checkpoint_path, comm)
    if resumed is not None:
        params, opt_state = resumed.params, resumed.opt_state
    if comm is not None:   # one collective: every rank goes on, or every rank raises
        _agree_across_ranks(comm, loss, params, opt_state, data, optimizer, batch_size,
                            epochs=epochs, shuffled=shuffle is not None,
                            steps_per_call=steps_per_call, grad_norms=grad_norms,
                            checkpoint_every=checkpoint_every,
                            resumed_at=None if resumed is None else resumed.step)
        callback = None if callback is None else distributed.agreed_callback(callback, comm)
    data, n = check_data(data, batch_size)
    if epochs < 1:
        raise ValueError(f"train(): epochs must be at least 1, got {epochs}")
    steps_per_epoch = n // batch_size
    total = steps_per_epoch * epochs
    if steps_per_call is None:
        epochs_per_call = 1 if (progress or callback) else -(-MIN_CHUNK_STEPS // steps_per_epoch)
        steps_per_call = steps_per_epoch * epochs_per_call
    else:   # an explicit chunk longer than the whole training is the whole training
        steps_per_call = min(steps_per_call, total)
    # the compiled loop's bound: a whole chunk, not capped by this call's epochs, so
    # training for another number of epochs runs the same loop
    chunk = max(1, min(steps_per_call, checkpoint_every or steps_per_call))
    state = optimizer.init(params) if opt_state is None else opt_state
    if comm is not None:
        params, state = distributed.broadcast(comm, (params, state))
        shuffle = distributed.rank_seed(shuffle, comm)
    reduce = None if comm is None else distributed.GradientMean.of(comm)
    order = _epoch_orders(n, batch_size, epochs, shuffle)
    in_order = shuffle is None

    p_leaves, p_tree = pytree.flatten(params)
    s_leaves, s_tree = pytree.flatten(state)
    losses, norms = [], []
    compile_seconds = run_seconds = 0.0
    done, graph = 0, None
    if resumed is not None:
        done = resumed.step
        losses = [np.zeros(0) if resumed.loss_history is None else resumed.loss_history]
        norms = [resumed.grad_norms] if grad_norms and resumed.grad_norms is not None else []
    runs = profiling.Runs(f"train({getattr(loss, '__name__', 'loss')})") if profile else None
    leaves = [np.asarray(x) for x in p_leaves + s_leaves]
    signature = _signature(p_tree, s_tree, leaves, data)
    # with comm, rank 0's bar only (the others still cut their chunks by epochs, as it does)
    bar = _Progress(total) if progress and (comm is None or comm.Get_rank() == 0) else None
    while done < total:
        steps = min(chunk, total - done)
        bounds = _CACHE.setdefault((loss, optimizer, batch_size, backend, signature, profile,
                                    in_order, grad_norms, reduce, prefetch), {})
        bound = min((m for m in bounds if m >= steps), default=None)
        if bound is None:   # compiled for a whole chunk, whatever this call's steps
            bound = chunk
            t0 = time.perf_counter()
            bounds[bound] = _compile_chunk(loss, optimizer, params, state, data, batch_size,
                                           bound, backend, profile, in_order, grad_norms,
                                           reduce, prefetch)
            compile_seconds += time.perf_counter() - t0
        executable, graph = bounds[bound]
        if runs is not None:
            runs.before(executable)
        native = executable if comm is None else distributed.guarded(
            executable, comm, f"training steps {done} to {done + steps - 1}")
        t0 = time.perf_counter()
        outputs = native(*leaves, *data,
                         _bounded_order(order, done * batch_size, bound * batch_size),
                         np.int64(steps))
        elapsed = time.perf_counter() - t0
        run_seconds += elapsed
        if runs is not None:
            runs.after(executable, elapsed)
        step_losses, *step_norms = (x[:steps] for x in outputs[len(leaves):])
        leaves = outputs[:len(leaves)]
        losses.append(step_losses)
        norms += step_norms
        done += steps
        if checkpoint_every and done // checkpoint_every > (done - steps) // checkpoint_every:
            saving.save_from_root(
                checkpoint_path, comm, pytree.unflatten(p_tree, leaves[:len(p_leaves)]),
                pytree.unflatten(s_tree, leaves[len(p_leaves):]), done,
                loss_history=np.concatenate(losses),
                grad_norms=np.concatenate(norms) if norms else None)
        if bar is not None:
            bar.update(done, float(step_losses[-1]), run_seconds)
        if callback is not None:
            info = {"step": done, "epoch": done / steps_per_epoch, "loss": step_losses,
                    "params": pytree.unflatten(p_tree, leaves[:len(p_leaves)])}
            if callback(info) is False:
                break
    if comm is not None:   # the slowest rank's times, so the result is the same on all
        run_seconds, compile_seconds = distributed.slowest(comm, run_seconds, compile_seconds)
    if bar is not None:
        bar.close()
    return TrainResult(
        params=pytree.unflatten(p_tree, leaves[:len(p_leaves)]),
        opt_state=pytree.unflatten(s_tree, leaves[len(p_leaves):]),
        loss_history=np.concatenate(losses),
        grad_norms=pytree.unflatten(p_tree, list(np.concatenate(norms).T.copy()))
        if grad_norms else None,
        steps=done, epochs=math.ceil(done / steps_per_epoch), seconds=run_seconds,
        compile_seconds=compile_seconds, graph=graph,
        profile=None if runs is None else runs.profile())
