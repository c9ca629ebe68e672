"""The digits MLP of train_digits.py, data-parallel over the ranks of an MPI job.

    pip install -e '.[examples,mpi]'
    LLGRAD_THREADS=1 mpiexec -n 2 python examples/train_digits_mpi.py [epochs, default 30]

Every rank loads the same data and trains on its own shard (``llgrad.distributed.shard``),
with the same global batch of 64 examples whatever the number of ranks: 64 / ranks per
rank and step.  The gradients are averaged by an ``MPI_Allreduce`` inside each rank's
native training loop; every rank ends with the same parameters.  Rank 0 prints the
test accuracy and the throughput (training examples per second, compilation excluded),
to compare with a run on 1 rank (``mpiexec -n 1``; see docs/distributed.md).
"""
import sys

import numpy as np
from mpi4py import MPI

import llgrad
from llgrad import optim

from train_digits import init_params, load_digits, loss, predict

GLOBAL_BATCH = 64


def main(epochs=30, hidden=128, comm=MPI.COMM_WORLD):
    x_train, y_train, x_test, labels_test = load_digits()
    if GLOBAL_BATCH % comm.Get_size():
        sys.exit(f"run on a number of ranks that divides {GLOBAL_BATCH}")
    shard = llgrad.distributed.shard((x_train, y_train), comm)
    result = llgrad.train(loss, init_params(hidden), shard, optim.adam(3e-3),
                          batch_size=GLOBAL_BATCH // comm.Get_size(), epochs=epochs, shuffle=0,
                          comm=comm)
    accuracy = float(np.mean(predict(result.params, x_test) == labels_test))
    throughput = result.steps * GLOBAL_BATCH / result.seconds
    if comm.Get_rank() == 0:
        print(f"{comm.Get_size()} rank(s): {result.steps} steps of {GLOBAL_BATCH} examples, "
              f"{throughput:,.0f} examples/s ({result.seconds / result.steps * 1e6:.1f} µs "
              f"per step), compiled in {result.compile_seconds:.2f} s")
        print(f"final training loss {result.loss_history[-10:].mean():.4f}, "
              f"test accuracy {accuracy:.2%}")
    return accuracy, throughput


if __name__ == "__main__":
    main(epochs=int(sys.argv[1]) if len(sys.argv) > 1 else 30)
