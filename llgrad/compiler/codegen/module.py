"""The LLVM module of one executable: one function per kernel and one entry point.

The entry point ``void <name>(ptr args)`` takes a single pointer to a packed array
``[inputs..., outputs..., arena]`` of ``void*``.  It derives every buffer's address
once and calls the kernels in order.  Each kernel is its own function whose pointer
arguments are ``noalias`` (the memory plan guarantees it), so LLVM vectorises its
loops without runtime overlap checks.  Kernels are ``noinline``: optimising one huge
function costs LLVM far more than linear time (a 100-layer network took 65 s to
compile with the kernels inlined into the entry point), while a call per kernel costs
nanoseconds.  A run of loop-free (scalar) kernels is one function instead, inlined
since its code is smaller than the call (``region``: values pass in registers and
independent math calls run as vector calls).  ``<name>.list`` is a second entry for
calls from Python (``list_entry``) and large elementwise kernels may run split across
threads (``parallel``).  Kernels
whose code is identical (the same layer repeated in a deep network, forward or
backward) are emitted once and called with other buffers.
"""
from __future__ import annotations

import functools
import re

import numpy as np
from llvmlite import ir

from llgrad.compiler.codegen import math, parallel, profile, region
from llgrad.compiler.codegen.epilogue import Epilogue
from llgrad.llvm.indexing import Index
from llgrad.compiler.codegen.kernels import clamped_start
from llgrad.llvm.loops import counted_loop, loop_nest
from llgrad.compiler.codegen.lowering import Elementwise, IndexMap, Kernel, Leaf, View, row
from llgrad.llvm.scalar import I8, I64, PTR, const, i64, linearise, load, store


class KernelContext:
    """What a lowering rule sees while it emits one kernel."""

    def __init__(self, b: ir.IRBuilder, pointers: dict, scratch, flags, values=None):
        self.b = b
        self.pointers = pointers      # id(node) -> pointer value, for materialised nodes
        self.scratch = scratch        # pointers to this kernel's scratch buffers
        self.flags = flags            # fast-math flags for float arithmetic
        self.values = values or {}    # id(node) -> a scalar already in a register
        self.epilogue = None          # a product's: runs the next kernel on its rows
        self._computed = {}           # (id(node), id(index)) -> (index, value)

    def pointer(self, node):
        return self.pointers[id(node)]

    def by_rows(self, out, rows: int, elements: int, emit_rows) -> None:
        """``emit_rows(ctx, out, first, count)`` writes rows ``[first, first + count)``
        of this kernel's output, each independently of the others: on one thread for
        the whole output, or cut into bands of rows the pool runs at once when the
        output has at least ``parallel.MIN_ELEMENTS`` ``elements`` and the module may
        use threads.  The bands run in functions of their own, which see this kernel's
        stored inputs through a context of their own."""
        b = self.b
        parts = min(rows, getattr(b.module, "llgrad_threads", 1))
        if parts < 2 or elements < parallel.MIN_ELEMENTS or self.values:
            emit_rows(self, out, i64(0), i64(rows))
            return
        ids = list(self.pointers)

        def emit_part(pb, pointers, part):
            first = pb.udiv(pb.mul(part, i64(rows)), i64(parts))
            end = pb.udiv(pb.mul(pb.add(part, i64(1)), i64(rows)), i64(parts))
            inner = KernelContext(pb, dict(zip(ids, pointers)), [], self.flags)
            emit_rows(inner, pointers[-1], first, pb.sub(end, first))

        parallel.run_parts(b, f"{b.function.name}.rows", parts,
                           [self.pointers[k] for k in ids] + [out], emit_part)

    def read(self, node, index: Index):
        """The value of ``node`` at ``index``: loaded if it has a buffer, else computed."""
        if id(node) in self.values:
            return self.values[id(node)]
        ptr = self.pointers.get(id(node))
        if ptr is not None:
            return load(self.b, ptr, index.linear(self.b, node.shape), node.dtype)
        return self.compute(node, index)

    def compute(self, node, index: Index):
        """The value of an inlined ``node`` at ``index``.  An elementwise value read by
        several nodes of one loop at the same ``Index`` is computed once: the first
        computation dominates the later reads, as a loop body is emitted in order."""
        r = row(node)
        if isinstance(r, Elementwise):
            known = self._computed.get((id(node), id(index)))
            if known is not None:
                return known[1]
            args = [self.read(x, index) for x in node.inputs]
            value = r.scalar(self.b, args, node.inputs[-1].dtype, self.flags, node.attrs)
            self._computed[id(node), id(index)] = (index, value)
            return value
        if isinstance(r, (IndexMap, View)):
            return r.read(self, node, index)
        if isinstance(r, Leaf) and node.op == "constant" and node.type.ndim == 0:
            return const(node.dtype, node.attrs["value"].item())
        raise AssertionError(f"{node.op} cannot be computed inline")


def needs_axes(node, inlined: set) -> bool:
    """Whether computing ``node`` inline needs per-axis indices (else a flat loop will do)."""
    stack, seen = [node], set()
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        r = row(n)
        if isinstance(r, (IndexMap, View)) and r.needs_axes(n):
            return True
        stack.extend(x for x in n.inputs if id(x) in inlined)
    return False


def _emit_elementwise_kernel(ctx, node, out, inlined, copy, element_range=None,
                             by_rows=False):
    """A loop over the output that stores the (possibly fused) value at each element
    (of ``element_range``, a pair of i64 values, when the kernel is split: a range of
    elements, or ``by_rows`` of rows)."""
    b = ctx.b
    value = ctx.read if copy else ctx.compute

    def store_at(axes):
        flat = linearise(b, axes, node.shape)
        store(b, value(node, Index(tuple(axes), flat)), out, flat, node.dtype)

    if element_range is not None and by_rows:
        with parallel.range_loop(b, *element_range) as row:
            with loop_nest(b, node.shape[1:], "e") as rest:
                store_at([row] + rest)
        return
    if element_range is not None:
        with parallel.range_loop(b, *element_range) as i:
            store(b, value(node, Index(None, i)), out, i, node.dtype)
        return
    if copy or not needs_axes(node, inlined):
        with loop_nest(b, (node.type.size,), "e") as (i,):
            store(b, value(node, Index(None, i)), out, i, node.dtype)
        return
    with loop_nest(b, node.shape, "e") as axes:
        store_at(axes)


def _symbol(name: str) -> str:
    return "llgrad_" + re.sub(r"\W", "_", name)


def _constant_global(module, node, name):
    data = np.ascontiguousarray(node.attrs["value"], dtype=node.type.np_dtype).tobytes()
    typ = ir.ArrayType(I8, len(data))
    g = ir.GlobalVariable(module, typ, name)
    g.global_constant = True
    g.linkage = "internal"
    g.align = 64
    g.initializer = ir.Constant(typ, bytearray(data))
    return g


def build_module(fusion, memory, *, fastmath: bool = False, vector_isas=(), blas=None,
                 blas_min_flops=None, vector_bits: int = 256, object_layout=None,
                 threads: int = 1, batch_calls: bool = True,
                 tile_panel_bytes: int = 0, profiled: bool = False) -> tuple[ir.Module, str]:
    """Lower a fused, memory-planned graph; returns the module and its entry symbol.

    ``vector_isas``: libmvec ISA letters usable on the target ("b", "d", "e");
    ``blas``: dtype -> runtime.blas.Gemm the JIT resolves, used for products
    of at least ``blas_min_flops`` multiply-adds; ``vector_bits``: the target's vector
    register width (sizes matmul tiles); ``object_layout``: see
    ``list_entry`` (None: no such entry); ``threads``: how many threads a large
    elementwise kernel or product is split into (see ``parallel``); ``tile_panel_bytes``:
    the largest right operand a product runs as tiles rather than BLAS (see
    ``matmul``); ``batch_calls``: whether
    loop-free code runs independent calls of one math function as libmvec vector
    calls (see ``vector_calls``; only where ``vector_isas`` has some); ``profiled``:
    time counters around every kernel call (see ``profile``; the labels are the
    module's ``llgrad_profile``).
    """
    module = ir.Module(name=fusion.graph.name)
    math.configure(module, vector_isas)
    module.llgrad_blas = dict(blas or {})
    module.llgrad_threads = threads
    module.llgrad_vector_bits = vector_bits
    module.llgrad_tile_panel_bytes = tile_panel_bytes
    module.llgrad_batch_calls = batch_calls
    if blas_min_flops is not None:
        module.llgrad_blas_min_flops = blas_min_flops
    if profiled:
        profile.enable(module)
    entry_name = _symbol(fusion.graph.name)
    entry = lower_graph(module, fusion, memory, entry_name, ("fast",) if fastmath else ())
    profile.finish(module, entry_name)
    if object_layout is not None:
        list_entry(module, entry, len(fusion.graph.inputs), object_layout)
    math.finish(module)
    return module, entry_name


def list_entry(module, entry: ir.Function, n_inputs: int, layout) -> ir.Function:
    """``void <entry>.list(ptr list, ptr args)``: fills the input slots of the packed
    array from a Python list of numpy arrays, then runs the entry point.  ``layout`` is
    (offset of a list's item vector, offset of an array's data pointer), measured in
    this process by ``runtime.pyobjects``; the caller has checked every array."""
    items_at, data_at = layout
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR, PTR]), entry.name + ".list")
    objects, packed = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    items = b.load(b.gep(objects, [i64(items_at)], inbounds=True, source_etype=I8), typ=PTR)
    with counted_loop(b, n_inputs, "arg") as i:
        array = b.load(b.gep(items, [i], inbounds=True, source_etype=PTR), typ=PTR)
        data = b.load(b.gep(array, [i64(data_at)], inbounds=True, source_etype=I8), typ=PTR)
        b.store(data, b.gep(packed, [i], inbounds=True, source_etype=PTR))
    b.call(entry, [packed])
    b.ret_void()
    return fn


def buffer_addresses(b: ir.IRBuilder, packed, *, n_in: int, n_out: int, globals_):
    """``buf -> its address``, each derived once (with ``b``) from the packed argument
    array ``packed`` of a graph with ``n_in`` inputs and ``n_out`` outputs."""
    slot = lambda i: b.load(b.gep(packed, [i64(i)], inbounds=True,  # noqa: E731
                                  source_etype=PTR), typ=PTR)
    arena = slot(n_in + n_out)
    addresses = {}

    def address(buf):
        if id(buf) not in addresses:
            if buf.kind == "input":
                addresses[id(buf)] = slot(buf.index)
            elif buf.kind == "output":
                addresses[id(buf)] = slot(n_in + buf.index)
            elif buf.kind == "arena":
                addresses[id(buf)] = b.gep(arena, [i64(buf.index)], inbounds=True,
                                           source_etype=I8)
            elif buf.kind == "slice":   # first needed after its start is stored
                start = load(b, address(buf.start), i64(0), "int64")
                row = clamped_start(b, start, 0, buf.last_start)
                addresses[id(buf)] = b.gep(address(buf.source), [b.mul(row, i64(buf.row_bytes))],
                                           inbounds=True, source_etype=I8)
            else:
                addresses[id(buf)] = globals_[buf.index]
        return addresses[id(buf)]
    return address


def lower_graph(module, fusion, memory, name: str, flags, *, internal=False) -> ir.Function:
    """``void name(ptr args)``: runs every kernel of one graph on a packed argument array.

    Used for the entry point and, nested, for the body of a ``loop``.
    """
    graph = fusion.graph
    globals_ = [_constant_global(module, n, f"{name}.const{k}")
                for k, n in enumerate(memory.constants)]
    entry = ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR]), name)
    if internal:
        entry.linkage = "internal"
    eb = ir.IRBuilder(entry.append_basic_block("entry"))
    address_in = functools.partial(buffer_addresses, n_in=len(graph.inputs),
                                   n_out=len(graph.outputs), globals_=globals_)
    address = address_in(eb, entry.args[0])

    kernels, last_read = fusion.kernels, {}
    for t, kernel in enumerate(kernels):
        for n in kernel.reads:
            last_read[region.key(memory.buffers[id(n)])] = t
    for buf in memory.buffers.values():   # a slice reads its operand and start from
        if buf.kind == "slice":           # memory: a region must store them
            for pinned in (buf.source, buf.start):
                last_read[region.key(pinned)] = len(kernels)
    t = 0
    while t < len(kernels):
        stop = t
        while stop < len(kernels) and region.loop_free(kernels[stop]):
            stop += 1
        if stop > t:
            fn = region.emit(module, f"{name}.k{t}_scalars", list(enumerate(kernels))[t:stop],
                             memory, address_in, last_read, flags)
            with profile.timed(module, eb, lambda: profile.kernel_label(name, t, kernels[t:stop])):
                eb.call(_shared(module, fn), [entry.args[0]])
            t = stop
            continue
        paired = id(kernels[t].node) in fusion.epilogues   # kernel t + 1 runs inside it
        with profile.timed(module, eb, lambda: profile.kernel_label(
                name, t, kernels[t:t + 1 + paired], epilogue=paired)):
            _emit_kernel(module, name, eb, address, t, kernels[t], fusion, memory, globals_,
                         flags)
        t += 1 + paired
    eb.ret_void()
    return entry


def _emit_kernel(module, name, eb, address, t, kernel, fusion, memory, globals_, flags):
    """Kernel ``t`` as its own function, and its call from the entry builder ``eb``; a
    product with an epilogue (``fusion.epilogues``) runs kernel ``t + 1`` too."""
    node = kernel.node
    r = row(node)
    threads = getattr(module, "llgrad_threads", 1)
    # an elementwise loop (what _emit_elementwise_kernel runs over a range): flat, or
    # over axes (broadcasts, transposes inside) and then split by rows
    loop = kernel.copy or not isinstance(r, Kernel)
    flat = loop and (kernel.copy or not needs_axes(node, fusion.inlined))
    unit = (parallel.split_unit(threads, node.type.size, node.shape[0] if node.shape else 1, flat)
            if loop else None)
    after = fusion.epilogues.get(id(node))
    if after is not None:
        e_fn, e_params, e_flat = _ranged_function(module, name, t + 1, after, fusion, memory,
                                                  globals_, flags)
    fn, params, ctx = _kernel_function(module, name, t, kernel, memory, globals_, flags,
                                       ranged=unit is not None,
                                       extra=e_params if after is not None else ())
    if after is not None:
        arg_of = {id(buf): arg for buf, arg in zip(params, fn.args)}
        ctx.epilogue = Epilogue(e_fn, tuple(arg_of[id(buf)] for buf in e_params),
                                node.shape[0], node.type.size // node.shape[0], e_flat)
    if isinstance(r, Kernel) and not kernel.copy:
        r.emit(ctx, node, fn.args[0])
    else:
        _emit_elementwise_kernel(ctx, node, fn.args[0], fusion.inlined, kernel.copy,
                                 fn.args[len(params):] if unit else None, by_rows=not flat)
    ctx.b.ret_void()
    if unit is not None:
        parallel.call_split(eb, _shared(module, fn), [address(buf) for buf in params],
                            node.type.size if flat else node.shape[0], threads, unit)
    else:
        eb.call(_shared(module, fn), [address(buf) for buf in params])


def _ranged_function(module, name, t, kernel, fusion, memory, globals_, flags):
    """Elementwise kernel ``t`` as ``void fn(ptr..., i64 lo, i64 hi)`` over a range of
    elements or, when it needs axes, of rows: (fn, its buffers, whether flat)."""
    flat = not needs_axes(kernel.node, fusion.inlined)
    fn, params, ctx = _kernel_function(module, name, t, kernel, memory, globals_, flags,
                                       ranged=True)
    _emit_elementwise_kernel(ctx, kernel.node, fn.args[0], fusion.inlined, False,
                             fn.args[len(params):], by_rows=not flat)
    ctx.b.ret_void()
    return _shared(module, fn), params, flat


def _kernel_function(module, name, t, kernel, memory, globals_, flags, *, ranged, extra=()):
    """The function of kernel ``t``, its body still to emit: (fn, the buffers its pointer
    arguments are, a KernelContext).  Its arguments: the output, the stored inputs,
    scratch, the ``extra`` buffers not among those (what an epilogue it runs reads and
    writes), then ``i64 lo, hi`` when ``ranged``."""
    node = kernel.node
    read_bufs = []
    for n in kernel.reads:
        buf = memory.buffers[id(n)]
        if buf.kind != "constant" and all(buf is not r for r in read_bufs):
            read_bufs.append(buf)
    own = [memory.outputs[t]] + read_bufs + list(memory.scratch[t])
    params = own + [buf for buf in extra if all(buf is not p for p in own)]
    signature = ir.FunctionType(ir.VoidType(), [PTR] * len(params) + [I64, I64] * ranged)
    fn = ir.Function(module, signature, f"{name}.k{t}_{'copy' if kernel.copy else node.op}")
    fn.linkage = "internal"
    if not all(region.is_scalar(n) for n in (node, *kernel.reads)):
        fn.attributes.add("noinline")  # a loop; a scalar kernel is cheaper inlined
    # LLVM defaults to 256-bit vectors even with AVX-512; full-width libmvec
    # variants (8 doubles) were 1.2x-1.5x faster on transcendental-heavy kernels
    set.add(fn.attributes, '"prefer-vector-width"="512"')
    for i, arg in enumerate(fn.args[:len(params)]):
        arg.add_attribute("noalias")
        arg.add_attribute("captures(none)")
        if 0 < i <= len(read_bufs):
            set.add(arg.attributes, "readonly")
    arg_of = {id(buf): arg for buf, arg in zip(params, fn.args)}
    pointers = {}
    for n in kernel.reads:
        buf = memory.buffers[id(n)]
        pointers[id(n)] = globals_[buf.index] if buf.kind == "constant" else arg_of[id(buf)]
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    return fn, params, KernelContext(b, pointers, fn.args[1 + len(read_bufs):len(own)], flags)


def _shared(module, fn: ir.Function) -> ir.Function:
    """An identical kernel emitted before, if any (``fn`` is then dropped), else ``fn``."""
    seen = module.__dict__.setdefault("llgrad_kernels", {})
    body = str(fn).replace(f'"{fn.name}"', "@kernel", 1)
    if body in seen:
        del module.globals[fn.name]
        return seen[body]
    seen[body] = fn
    return fn
