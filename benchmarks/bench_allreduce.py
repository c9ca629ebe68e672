"""The all-reduce of data-parallel training: its time per step and share of the step.

    LLGRAD_THREADS=1 mpiexec -n 2 python benchmarks/bench_allreduce.py [--steps 2000]

Two MLPs trained with ``llgrad.train(..., comm=MPI.COMM_WORLD, profile=True)``, float32,
a global batch of 64 split over the ranks: the digits MLP (64-128-10, 9,610 weights)
and a 784-1024-10 MLP (814,090 weights, 3.3 MB of gradient per step).  From the
profile (rank 0's): the ``allreduce_sum`` kernel's time per step, the whole step's
(the training loop's time over its steps) and the share; the median of ``--repeats``
runs.  The profiled time includes waiting for the slower rank; ``bare`` is one
``MPI_Allreduce`` of the same buffer called from mpi4py right after a barrier (the
median of 200), what the communication alone costs.  Synthetic data: only the sizes
matter here.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the checkout's llgrad
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from mpi4py import MPI  # noqa: E402

import llgrad  # noqa: E402
from llgrad import optim  # noqa: E402

MODELS = {"digits MLP 64-128-10": (64, 128, 10), "MLP 784-1024-10": (784, 1024, 10)}
GLOBAL_BATCH = 64


def loss(params, x, y):
    h = np.tanh(x @ params["w1"] + params["b1"])
    logits = h @ params["w2"] + params["b2"]
    logits = logits - logits.max(axis=1, keepdims=True)
    return -np.mean(np.sum((logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))) * y,
                           axis=1))


def problem(sizes, steps, ranks, seed=0):
    n_in, hidden, n_out = sizes
    rng = np.random.default_rng(seed)
    rows = steps * GLOBAL_BATCH // ranks
    x = rng.normal(size=(rows, n_in)).astype(np.float32)
    y = np.eye(n_out, dtype=np.float32)[rng.integers(0, n_out, rows)]
    params = {"w1": (rng.normal(size=(n_in, hidden)) / np.sqrt(n_in)).astype(np.float32),
              "b1": np.zeros(hidden, np.float32),
              "w2": (rng.normal(size=(hidden, n_out)) / np.sqrt(hidden)).astype(np.float32),
              "b2": np.zeros(n_out, np.float32)}
    return params, (x, y)


def measure(sizes, steps, comm):
    """(all-reduce seconds per step, step seconds) of one profiled run."""
    params, data = problem(sizes, steps, comm.Get_size())
    result = llgrad.train(loss, params, data, optim.adam(1e-3),
                          batch_size=GLOBAL_BATCH // comm.Get_size(), comm=comm,
                          steps_per_call=steps, profile=True)
    rows = result.profile.rows
    allreduce = sum(r["seconds"] for r in rows if r["label"]["op"] == "allreduce_sum")
    loop = sum(r["seconds"] for r in rows if r["label"]["op"] == "loop")
    return allreduce / result.steps, loop / result.steps


def bare_allreduce(n, comm, calls=200):
    """Median seconds of one all-reduce of ``n`` float32 values, the ranks started together."""
    send, receive, times = np.ones(n, np.float32), np.empty(n, np.float32), []
    for _ in range(calls):
        comm.Barrier()
        t0 = time.perf_counter()
        comm.Allreduce(send, receive, op=MPI.SUM)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    for name, sizes in MODELS.items():
        runs = [measure(sizes, args.steps, comm) for _ in range(args.repeats)]
        allreduce = statistics.median(r[0] for r in runs)
        step = statistics.median(r[1] for r in runs)
        weights = sizes[0] * sizes[1] + sizes[1] + sizes[1] * sizes[2] + sizes[2]
        bare = bare_allreduce(weights + 1, comm)     # the gradients and the loss
        if comm.Get_rank() == 0:
            print(f"{name} ({weights:,} weights) on {comm.Get_size()} rank(s): all-reduce "
                  f"{allreduce * 1e6:.1f} µs per step of {step * 1e6:.1f} µs "
                  f"({allreduce / step:.0%}); bare {bare * 1e6:.1f} µs", flush=True)


if __name__ == "__main__":
    main()
