"""An MPI job that goes wrong on one rank, for tests/test_distributed.py:

    mpiexec -n 2 python tests/distributed/faults.py raise|nan|stall

``raise``: rank 1's callback raises after the first epoch, while rank 0 goes on into
the next all-reduce; ``nan``: rank 1's data hold a NaN and ``llgrad.debug_nans`` is
on; ``stall``: rank 1 stops (SIGSTOP, as a hung or swapped-out process) a second into
training, mostly inside a native chunk, so rank 0 waits in ``MPI_Allreduce`` (run with
LLGRAD_MPI_TIMEOUT set: rank 0 aborts).  The job must end (not hang) with the error.
"""
import os
import signal
import sys
import threading

import numpy as np
from mpi4py import MPI

import llgrad
from llgrad import distributed, optim

from mpi_models import BATCH, loss, problem

COMM = MPI.COMM_WORLD
STOPPING = []      # rank 1's timer that stops it


def on_rank_1(info):
    if COMM.Get_rank() == 1:
        if MODE == "raise":
            raise RuntimeError("a bad batch on rank 1")
        if not STOPPING:   # once, at the first callback
            STOPPING.append(threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGSTOP)))
            STOPPING[0].start()


MODE = sys.argv[1]
params, x, y = problem(COMM.Get_size())
x, y = distributed.shard((x, y), COMM)
if MODE == "nan":
    llgrad.debug_nans(True)
    if COMM.Get_rank() == 1:
        x[3, 2] = np.nan
llgrad.train(loss, params, (x, y), optim.sgd(0.1), batch_size=BATCH, epochs=2000, comm=COMM,
             steps_per_call=10, callback=None if MODE == "nan" else on_rank_1)
print("the job finished", flush=True)
