"""``allreduce_sum``: one call of ``MPI_Allreduce`` from the generated code.

The kernel is the call: ``MPI_Allreduce(x, out, count, datatype, MPI_SUM, comm)``
(the memory plan never lets a kernel's output overlap its inputs, as MPI requires
without ``MPI_IN_PLACE``).  The handles are the node's attributes, emitted as
constants of their C type: ``int`` for MPICH, a pointer for Open MPI.  The symbol is
declared here and resolved by name when the code is loaded (``runtime/mpi.py``
registers the address from the MPI library that mpi4py loaded), so nothing links
against MPI and a module without collectives never mentions it.  The return code is
not read: MPI's default error handler on a communicator aborts the job.
"""
from __future__ import annotations

from llvmlite import ir

from llgrad.llvm.scalar import PTR, declare
from llgrad.runtime.mpi import ALLREDUCE

I32 = ir.IntType(32)


def _handle(bits: int, value: int):
    if bits == 32:
        return ir.Constant(I32, value)
    return ir.Constant(ir.IntType(64), value).inttoptr(PTR)


def emit_allreduce_sum(ctx, node, out):
    (x,) = node.inputs
    a = node.attrs
    bits = a["handle_bits"]
    handle_type = I32 if bits == 32 else PTR
    fn = declare(ctx.b.module, ALLREDUCE, I32, [PTR, PTR, I32] + [handle_type] * 3)
    ctx.b.call(fn, [ctx.pointer(x), out, ir.Constant(I32, x.type.size),
                    _handle(bits, a["datatype"]), _handle(bits, a["reduce_op"]),
                    _handle(bits, a["comm"])])
