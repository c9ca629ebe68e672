"""Time counters around every kernel call, for ``llgrad.profile``.

A module built with ``profile=True`` reads the CPU's cycle counter
(``llvm.readcyclecounter``: ``rdtsc`` on x86-64, the virtual counter on AArch64)
before and after each kernel call of its graphs, loop bodies included, and adds the
difference and one call to that call site's pair of 64-bit counters (atomically:
Python threads may call one executable at once).  A split kernel is timed as its
whole ``llgrad_parallel`` call, so its time is wall time, not the sum of its threads'.
The counters are one global array; ``<entry>.profile`` returns its address and
``<entry>.ticks`` reads the counter (to measure its rate), and the call sites' labels
travel in the module's metadata, so an executable loaded from the
cache can be profiled like a fresh one.  Modules built without ``profile`` are
unchanged: none of this is emitted.
"""
from __future__ import annotations

from contextlib import contextmanager

from llvmlite import ir

from llgrad.ir.primitives import flops
from llgrad.llvm.scalar import I64, PTR, declare, i64, nbytes


@contextmanager
def timed(state, b: ir.IRBuilder, describe):
    """Counts the time of the calls emitted inside the block (with ``b``) under the
    label ``describe()`` makes; nothing when the module is not profiled
    (``state.profile``: one label per call site, in counter order)."""
    if state.profile is None:
        yield
        return
    module = state.module
    slot = len(state.profile)   # taken first: a loop's body comes after the loop
    state.profile.append(describe())
    clock = declare(module, "llvm.readcyclecounter", I64, [])
    start = b.call(clock, [])
    yield
    elapsed = b.sub(b.call(clock, []), start)
    for k, amount in ((2 * slot, elapsed), (2 * slot + 1, i64(1))):
        b.atomic_rmw("add", b.gep(_counters(module), [i64(k)], inbounds=True, source_etype=I64),
                     amount, "monotonic")


def kernel_label(graph_name: str, first: int, kernels, epilogue: bool = False) -> dict:
    """What a call site runs, for the report: kernels ``first``.. of graph
    ``graph_name`` (several for a run of loop-free scalar kernels; a product and the
    kernels it runs inside its call, an ``epilogue`` or the rest of a stream, shown as
    fused into it), their op, result type, what is fused in, arithmetic and bytes read
    and written, and the user's line."""
    node = kernels[0].node
    fused = [n.op for k in kernels for n in k.inlined]
    if epilogue:
        fused = [k.node.op for k in kernels[1:]] + fused
    if len(kernels) > 1 and not epilogue:
        what = f"{len(kernels)} kernels"
    elif node.op == "loop":
        bound = "up to " if node.attrs.get("runtime_count") else ""
        what = f"{bound}{node.attrs['trip_count']} steps"
    else:
        what = str(node.type)
    whole_loop = node.op == "loop"      # its body's kernels have rows of their own
    return {"graph": graph_name, "kernels": [first, first + len(kernels) - 1],
            "op": "copy" if kernels[0].copy else node.op if len(kernels) == 1 or epilogue
            else "scalars",
            "type": what, "fused": fused,
            "flops": 0 if whole_loop else sum(flops(n) for k in kernels
                                              for n in [k.node, *k.inlined]),
            "bytes": 0 if whole_loop else _bytes(kernels, fused_call=epilogue),
            "source": node.source}


#: ops that read only part of their first operand, and which operand holds indices
_GATHERS = {"take": 1, "dynamic_slice": 1, "slice": None}


def _bytes(kernels, fused_call: bool = False) -> int:
    """What kernels read and write, each value once (a gather, the rows it takes, also
    where a product reads them in place: ``codegen.gathered``); kernels run in one
    call (``fused_call``) read what an earlier one of them wrote from cache, not memory."""
    made = {id(k.node) for k in kernels} if fused_call else set()
    read, total = {}, 0
    for kernel in kernels:
        node, written = kernel.node, nbytes(kernel.node.type)
        total += written
        if node.op in _GATHERS:
            index = _GATHERS[node.op]
            total += written + (nbytes(node.inputs[index].type) if index is not None else 0)
            continue
        rows = {id(n.inputs[0]): nbytes(n.type) for n in kernel.inlined if n.op == "take"}
        for r in kernel.reads:
            if id(r) not in made:
                read[id(r)] = rows.get(id(r), nbytes(r.type))
    return total + sum(read.values())


def finish(state, entry_name: str) -> list:
    """Sizes the counters to the call sites emitted and adds ``ptr <entry>.profile()``
    and ``i64 <entry>.ticks()``; returns the labels (none when not profiled)."""
    if state.profile is None:
        return []
    module = state.module
    counters = _counters(module)
    counters.value_type = ir.ArrayType(I64, max(1, 2 * len(state.profile)))
    counters.initializer = ir.Constant(counters.value_type, None)
    fn = ir.Function(module, ir.FunctionType(PTR, []), entry_name + ".profile")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    b.ret(b.bitcast(counters, PTR))
    ticks = ir.Function(module, ir.FunctionType(I64, []), entry_name + ".ticks")
    b = ir.IRBuilder(ticks.append_basic_block("entry"))
    b.ret(b.call(declare(module, "llvm.readcyclecounter", I64, []), []))
    return state.profile


def _counters(module: ir.Module) -> ir.GlobalVariable:
    """The module's counter array, sized by ``finish`` once every call site is known
    (the GEPs into it name their element type, not the array's)."""
    name = "llgrad.profile.counters"
    if name not in module.globals:
        g = ir.GlobalVariable(module, ir.ArrayType(I64, 1), name)
        g.linkage = "internal"
        g.align = 64
    return module.globals[name]
