"""Loop-free regions: runs of kernels that each compute one scalar from scalars.

On its own each such kernel is a function with a one-trip loop around a few
instructions, storing its value for the next kernel to load.  A run of them becomes
one straight-line function instead: a value computed earlier in the run reaches its
readers in a register, only values read after the run (or graph outputs) are stored,
and, where libmvec is loaded, independent calls of one math function run as vector
calls (``vector_calls``), which needs exactly this: every call of the run in one
block, where no load reads what a store wrote.
"""
from __future__ import annotations

from llvmlite import ir

from llgrad.compiler.codegen.context import KernelContext
from llgrad.compiler.codegen.lowering import row
from llgrad.compiler.codegen.plan import Kernel
from llgrad.compiler.codegen.vector_calls import batch_calls
from llgrad.llvm.indexing import Index
from llgrad.llvm.scalar import PTR, i64, store


def is_scalar(node) -> bool:
    return getattr(node.type, "size", None) == 1   # a loop's type is a tuple of types


def loop_free(kernel) -> bool:
    """Whether ``kernel`` computes one scalar from scalars without a loop of its own."""
    return ((kernel.copy or not isinstance(row(kernel.node), Kernel))
            and all(is_scalar(n) for n in (kernel.node, *kernel.reads)))


def key(buf):
    """Buffers with one key share their bytes (views, reused arena offsets)."""
    return buf.kind, buf.index


def emit(state, name: str, kernels, memory, address_in, last_read: dict):
    """``void name(ptr args)``, computing ``kernels`` (consecutive pairs of kernel
    number and loop-free kernel) on the packed argument array of the graph.

    ``address_in(builder, args)``: ``buf -> address`` for that array.  ``last_read``:
    buffer key -> the last kernel reading it; a value no kernel after the region reads
    is not stored (unless it is a graph output).  No load reads what the region stores
    (values computed in it are passed on in registers), so no pointer needs ``noalias``;
    one pointer argument (not one per buffer) keeps the call cheap when LLVM does not
    inline a large region.
    """
    stop = kernels[-1][0]
    fn = ir.Function(state.module, ir.FunctionType(ir.VoidType(), [PTR]), name)
    fn.linkage = "internal"
    fn.args[0].add_attribute("captures(none)")
    set.add(fn.args[0].attributes, "readonly")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    address = address_in(b, fn.args[0])
    last_write = {key(memory.outputs[t]): t for t, _ in kernels}
    written = {}    # key -> the value last computed for that buffer
    for t, kernel in kernels:
        node, values, pointers = kernel.node, {}, {}
        for n in kernel.reads:
            buf = memory.buffers[id(n)]
            if key(buf) in written:
                values[id(n)] = written[key(buf)]
            else:
                pointers[id(n)] = address(buf)
        ctx = KernelContext(b, pointers, (), state, values)
        index = Index(tuple(i64(0) for _ in node.shape), i64(0))
        value = (ctx.read if kernel.copy else ctx.compute)(node, index)
        out = memory.outputs[t]
        written[key(out)] = value
        # stored at once: a value held in a register to the end of a long region spills
        if last_write[key(out)] == t and (out.kind == "output"
                                          or last_read.get(key(out), -1) > stop):
            store(b, value, address(out), i64(0), node.dtype)
    if state.options.batch_calls:
        batch_calls(state, b.block)
    b.position_at_end(b.block)
    b.ret_void()
    return fn
