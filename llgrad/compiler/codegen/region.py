"""Loop-free regions: runs of kernels that each compute one scalar from scalars.

On its own each such kernel is a function with a one-trip loop around a few
instructions, storing its value for the next kernel to load.  A run of them becomes
one straight-line function instead: a value computed earlier in the run reaches its
readers in a register, only values read after the run (or graph outputs) are stored,
and, where libmvec is loaded, independent calls of one math function run as vector
calls (``vector_calls``), which needs exactly this: every call of the run in one
block, reading no memory the block writes.
"""
from __future__ import annotations

from llvmlite import ir

from .indexing import Index
from .lowering import Kernel, row
from .scalar import PTR, i64, store
from .vector_calls import batch_calls


def is_scalar(node) -> bool:
    return getattr(node.type, "size", None) == 1   # a loop's type is a tuple of types


def loop_free(kernel) -> bool:
    """Whether ``kernel`` computes one scalar from scalars without a loop of its own."""
    return ((kernel.copy or not isinstance(row(kernel.node), Kernel))
            and all(is_scalar(n) for n in (kernel.node, *kernel.reads)))


def key(buf):
    """Buffers with one key share their bytes (views, reused arena offsets)."""
    return buf.kind, buf.index


def _buffers(kernels, memory, live_after):
    """The buffers the region's function takes (one per key, in first-use order) and
    which of them it stores to: graph outputs and buffers read after the region."""
    params, written, stores = {}, set(), set()
    for t, kernel in kernels:
        for n in kernel.reads:
            buf = memory.buffers[id(n)]
            if key(buf) not in written and buf.kind != "constant":
                params.setdefault(key(buf), buf)
        out = memory.outputs[t]
        written.add(key(out))
        if out.kind == "output" or key(out) in live_after:
            params.setdefault(key(out), out)
            stores.add(key(out))
    return list(params.values()), stores


def emit(module, name: str, kernels, memory, globals_, last_read: dict, flags):
    """``void name(ptr...)``: computes ``kernels`` (consecutive pairs of kernel number
    and loop-free kernel); returns it and the buffers its arguments point to.

    ``last_read``: buffer key -> the last kernel reading it; a value no kernel after
    the region reads is not stored (unless it is a graph output).
    """
    from .module import KernelContext   # module imports this one
    stop = kernels[-1][0]
    live_after = {k for k, t in last_read.items() if t > stop}
    params, stores = _buffers(kernels, memory, live_after)
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR] * len(params)), name)
    fn.linkage = "internal"
    arg = {}
    for buf, a in zip(params, fn.args):
        arg[key(buf)] = a
        a.add_attribute("noalias")        # one argument per key: distinct bytes
        a.add_attribute("captures(none)")
        if key(buf) not in stores:
            set.add(a.attributes, "readonly")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    written = {}    # key -> (value, dtype) last computed for that buffer
    for t, kernel in kernels:
        node, values, pointers = kernel.node, {}, {}
        for n in kernel.reads:
            buf = memory.buffers[id(n)]
            if key(buf) in written:
                values[id(n)] = written[key(buf)][0]
            else:
                pointers[id(n)] = (globals_[buf.index] if buf.kind == "constant"
                                   else arg[key(buf)])
        ctx = KernelContext(b, pointers, (), flags, values)
        index = Index(tuple(i64(0) for _ in node.shape), i64(0))
        value = (ctx.read if kernel.copy else ctx.compute)(node, index)
        written[key(memory.outputs[t])] = (value, node.dtype)
    for out, (value, dtype) in written.items():
        if out in stores:
            store(b, value, arg[out], i64(0), dtype)
    if getattr(module, "llgrad_batch_calls", True):
        batch_calls(b.block)
    b.position_at_end(b.block)
    b.ret_void()
    return fn, params
