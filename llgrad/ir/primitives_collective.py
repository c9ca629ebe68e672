"""Collective primitives: operations whose result depends on every process of an MPI job.

``allreduce_sum(x)`` is the element-wise sum of a flat float buffer over the processes
of a communicator, what ``MPI_Allreduce`` with ``MPI_SUM`` computes.  Its attributes
are the MPI handles, as ``mpi4py.MPI._handleof`` gives them: ``comm``,
``datatype`` and ``reduce_op``, and ``handle_bits``, their C width (32 for MPICH's
integer handles, 64 for Open MPI's pointers).  They are attributes, not operands: a
handle is a fact of the process that runs the graph, and a graph built with other
handles is another graph (Open MPI's handles are addresses, so its graphs differ per
process and per run, and so do their cache entries; MPICH's are the same everywhere).

Every process of the communicator must run the node the same number of times with
buffers of the same size, or the job blocks: ``llgrad.train(comm=...)`` checks that
before its first step.  Not differentiable: it is applied to gradients, after
differentiation.  Its numpy meaning calls mpi4py (imported on first use), so the
interpreter runs a graph with collectives as one process of an MPI job too.
"""
from __future__ import annotations

import numpy as np

from llgrad.ir.errors import DTypeError, ShapeError
from llgrad.ir.primitives import register

#: the C widths of MPI handles: an int (MPICH), a pointer (Open MPI)
HANDLE_BITS = (32, 64)


def _allreduce_type(types, comm, datatype, reduce_op, handle_bits):
    (x,) = types
    if x.ndim != 1:
        raise ShapeError(f"allreduce_sum: needs a flat (1-d) buffer, got shape {x.shape}")
    if x.dtype not in ("float32", "float64"):
        raise DTypeError(f"allreduce_sum: needs float32 or float64, got {x.dtype}")
    if x.size >= 2 ** 31:
        raise ShapeError(f"allreduce_sum: {x.size} elements; MPI counts are C ints (< 2**31)")
    if handle_bits not in HANDLE_BITS:
        raise ValueError(f"allreduce_sum: handle_bits must be one of {HANDLE_BITS}, "
                         f"got {handle_bits}")
    return x


def _allreduce_eval(x, comm, datatype, reduce_op, handle_bits):
    from mpi4py import MPI
    total = np.empty_like(x)
    MPI.Comm.fromhandle(comm).Allreduce([x, MPI.Datatype.fromhandle(datatype)],
                                        [total, MPI.Datatype.fromhandle(datatype)],
                                        op=MPI.Op.fromhandle(reduce_op))
    return total


register("allreduce_sum", _allreduce_type, _allreduce_eval, "structural",
         flops=lambda node: node.type.size, differentiable=False, pure=False)
