"""The LLVM module of one executable: one function per kernel and one entry point.

The entry point ``void <name>(ptr args)`` takes a single pointer to a packed array
``[inputs..., outputs..., arena]`` of ``void*``.  It derives every buffer's address
once and calls the kernels in order.  Each kernel is its own function whose pointer
arguments are ``noalias`` (the memory plan guarantees it), so LLVM vectorises its
loops without runtime overlap checks.  Kernels are ``noinline``: optimising one huge
function costs LLVM far more than linear time (re-measure: the first call of a
100-layer network's gradient with the kernels inlined into the entry point), while a
call per kernel costs nanoseconds.  A run of loop-free (scalar) kernels is one function
instead, inlined since its code is smaller than the call (``region``: values pass in
registers and independent math calls run as vector calls).  ``<name>.list`` is a second
entry for calls from Python (``list_entry``) and large elementwise kernels may run split
across threads (``parallel``).  Kernels whose code is identical (the same layer repeated
in a deep network, forward or backward) are emitted once and called with other buffers:
a repeat is known by its ``kernel_key`` before any of its code is written.  A graph of
more than ``CALLS_PER_PART`` kernels calls them from several functions, one per part,
so that no one function grows with the program.
"""
from __future__ import annotations

import functools
import re

import numpy as np
from llvmlite import ir

from llgrad.compiler.codegen import debuginfo, finite, math, matmul, matvec, parallel, profile
from llgrad.compiler.codegen import heap_tape, region
from llgrad.compiler.codegen.context import KernelContext
from llgrad.compiler.codegen.epilogue import Epilogue
from llgrad.compiler.codegen.kernel_key import kernel_key
from llgrad.compiler.codegen.kernels import clamped_start
from llgrad.compiler.codegen.lowering import row
from llgrad.compiler.codegen.options import CodegenOptions, ModuleState
from llgrad.compiler.codegen.plan import IndexMap, Kernel, View
from llgrad.llvm import fp_env
from llgrad.llvm.indexing import Index
from llgrad.llvm.loops import counted_loop, loop_nest
from llgrad.llvm.scalar import I8, I64, PTR, i64, linearise, load, store
from llgrad.llvm.split import DRIVER


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


def build_module(fusion, memory, options: CodegenOptions,
                 origins: dict | None = None) -> tuple[ir.Module, str, list, list]:
    """Lower a fused, memory-planned graph: the module, its entry symbol, the
    profile's labels, one per timed call site (empty unless ``options.profile``), and
    the NaN/Inf checks' labels (empty unless ``options.check_finite``; ``origins``:
    what each node's pass is, see ``finite.label``)."""
    module = ir.Module(name=fusion.graph.name)
    state = ModuleState(module, options, profile=[] if options.profile else None,
                        checks=[] if options.check_finite else None, origins=origins)
    state.lower_graph = functools.partial(lower_graph, state)
    entry_name = _symbol(fusion.graph.name)
    entry = lower_graph(state, fusion, memory, entry_name)
    labels = profile.finish(state, entry_name)
    checks = finite.finish(state, entry_name)
    if options.object_layout is not None:
        list_entry(module, entry, len(fusion.graph.inputs), options.object_layout)
    math.finish(state)
    if options.fastmath:   # what Python, the native entry, C and pool workers enter
        fp_env.flush_subnormals(module, [entry, *parallel.tasks(module)])
    debuginfo.attach(module, state.lines)
    return module, entry_name, labels, checks


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
                at = i64(buf.offset)
                if buf.start is not None:
                    start = load(b, address(buf.start), i64(0), "int64")
                    row = clamped_start(b, start, 0, buf.last_start)
                    at = b.mul(row, i64(buf.row_bytes))
                addresses[id(buf)] = b.gep(address(buf.source), [at], inbounds=True,
                                           source_etype=I8)
            else:
                addresses[id(buf)] = globals_[buf.index]
        return addresses[id(buf)]
    return address


def lower_graph(state: ModuleState, fusion, memory, name: str, *,
                internal=False) -> ir.Function:
    """``void name(ptr args)``: runs every kernel of one graph on a packed argument array.

    Used for the entry point and, nested, for the body of a ``loop``.
    """
    module, graph = state.module, fusion.graph
    globals_ = [_constant_global(module, n, f"{name}.const{k}")
                for k, n in enumerate(memory.constants)]
    entry = ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR]), name)
    set.add(entry.attributes, DRIVER)    # where the module may be cut (llvm/split.py)
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
                if pinned is not None:
                    last_read[region.key(pinned)] = len(kernels)
    tapes = heap_tape.plan(state, graph, kernels, memory)   # freed after their last reader
    top, parts, next_part = eb, [], 0
    t = 0
    while t < len(kernels):
        heap_tape.release_before(eb, address, tapes, t)
        if len(kernels) > CALLS_PER_PART and t >= next_part:
            eb, address = _part(state, top, f"{name}.part{t}", address_in, graph)
            parts.append(eb)
            next_part = t + CALLS_PER_PART
        stop = t
        while stop < len(kernels) and region.loop_free(kernels[stop]):
            stop += 1
        if stop > t and state.checks is None:   # checked: each kernel its own call
            fn = region.emit(state, f"{name}.k{t}_scalars", list(enumerate(kernels[t:stop], t)),
                             memory, address_in, last_read)
            with profile.timed(state, eb, lambda: profile.kernel_label(name, t, kernels[t:stop])):
                eb.call(_shared(state, fn), [eb.function.args[0]])
            t = stop
            continue
        inside = fusion.followers(kernels[t])   # kernels t + 1.. that run inside it
        with profile.timed(state, eb, lambda: profile.kernel_label(
                name, t, kernels[t:t + 1 + inside], epilogue=inside > 0)):
            _emit_kernel(state, name, eb, address, t, kernels[t], fusion, memory, globals_)
        finite.check(state, eb, graph, [(k, kernels[k].node, memory.outputs[k])
                                        for k in range(t, t + 1 + inside)], address,
                     heap_tape.on_early_return(address, tapes, t + inside))
        t += 1 + inside
    heap_tape.release_before(eb, address, tapes, len(kernels))
    for b in parts + [top]:
        b.ret_void()
    return entry


#: kernel calls per function of a large graph: the entry calls functions that each
#: call this many kernels.  LLVM's register allocator takes far more than linear time
#: over one function of thousands of calls, each with buffer addresses that stay live
#: across the rest (re-measure: the machine code stage of ``python
#: benchmarks/bench_compile.py --programs jacjac``, with this at 10**9)
CALLS_PER_PART = 128


def _part(state, top: ir.IRBuilder, name: str, address_in, graph):
    """A function ``void name(ptr args)`` the builder ``top`` calls, to run the next
    kernels of a large graph: its builder, and its own ``buf -> address``."""
    fn = ir.Function(state.module, ir.FunctionType(ir.VoidType(), [PTR]), name)
    fn.linkage = "internal"
    fn.attributes.add("noinline")      # inlined back, it would undo the split
    set.add(fn.attributes, DRIVER)
    fn.args[0].add_attribute("captures(none)")
    top.call(fn, [top.function.args[0]])
    finite.check(state, top, graph, [], None)   # a failure inside ends the caller too
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    return b, address_in(b, fn.args[0])


def _emit_kernel(state, name, eb, address, t, kernel, fusion, memory, globals_):
    """Kernel ``t`` as its own function, and its call from the entry builder ``eb``; a
    product with an epilogue (``fusion.epilogues``) runs kernel ``t + 1`` too."""
    node = kernel.node
    r = row(node)
    threads = state.options.threads
    # an elementwise loop (what _emit_elementwise_kernel runs over a range): flat, or
    # over axes (broadcasts, transposes inside) and then split by rows
    loop = kernel.copy or not isinstance(r, Kernel)
    flat = loop and (kernel.copy or not needs_axes(node, fusion.inlined))
    unit = (parallel.split_unit(threads, node.type.size, node.shape[0] if node.shape else 1, flat)
            if loop else None)
    params, key = _keyed(kernel, t, fusion, memory, ranged=unit is not None, flat=flat)
    fn = state.kernel_keys.get(key)    # a repeat: the same code over other buffers
    if fn is None:
        fn, params = _kernel_code(state, name, t, kernel, fusion, memory, globals_, unit, flat,
                                  keyed=key is not None)
        if key is not None:
            state.kernel_keys[key] = fn
    if unit is not None:
        parallel.call_split(state, eb, fn, [address(buf) for buf in params],
                            node.type.size if flat else node.shape[0], threads, unit)
    else:
        eb.call(fn, [address(buf) for buf in params])


def _keyed(kernel, t, fusion, memory, *, ranged: bool, flat: bool):
    """The buffers kernel ``t``'s function receives, and its ``kernel_key`` (None for a
    loop or branches, whose code depends on plans of their own, and for a stream); a
    product with an epilogue is keyed with it, and with where the epilogue's buffers
    are among its own."""
    if id(kernel.node) in fusion.streams:
        return _kernel_params(kernel, memory, t, _streamed_params(t, fusion, memory))[0], None
    after = fusion.epilogues.get(id(kernel.node))
    e_params = _kernel_params(after, memory, t + 1)[0] if after is not None else ()
    params = _kernel_params(kernel, memory, t, e_params)[0]
    if kernel.body is not None:
        return params, None
    key = kernel_key(kernel, fusion.inlined, memory, params, ranged=ranged, flat=flat)
    if after is not None:
        slots = {id(buf): k for k, buf in enumerate(params)}
        key += kernel_key(after, fusion.inlined, memory, e_params, ranged=True,
                          flat=not needs_axes(after.node, fusion.inlined))
        key += repr([slots[id(buf)] for buf in e_params]).encode()
    return params, key


def _kernel_code(state, name, t, kernel, fusion, memory, globals_, unit, flat, *, keyed):
    """Kernel ``t``'s function, emitted (or an identical one emitted before), and the
    buffers its pointer arguments receive.  A ``keyed`` kernel skips the comparison of
    its text with earlier kernels': its key found any repeat before its code was
    written, and printing each new kernel to compare it took ~16 ms of workload 3's
    60 ms of IR building (re-measure: the functions each program of ``python
    benchmarks/bench_compile.py`` makes, the same either way)."""
    node = kernel.node
    r = row(node)
    after = fusion.epilogues.get(id(node))
    streamed = fusion.streams.get(id(node))
    extra = ()
    if after is not None:
        e_fn, e_params, e_flat = _ranged_function(state, name, t + 1, after, fusion, memory,
                                                  globals_)
        extra = e_params
    if streamed is not None:
        ranged = [_ranged_function(state, name, t + 1 + k, middle, fusion, memory, globals_)
                  for k, middle in enumerate(streamed[0])]
        extra = _streamed_params(t, fusion, memory)
    fn, params, ctx = _kernel_function(state, name, t, kernel, memory, globals_,
                                       ranged=unit is not None, extra=extra)
    if kernel.body is not None:
        ctx.body = (kernel.body, memory.bodies[t])
    arg_of = {id(buf): arg for buf, arg in zip(params, fn.args)}
    if after is not None:
        ctx.epilogue = Epilogue(e_fn, tuple(arg_of[id(buf)] for buf in e_params),
                                node.shape[0], node.type.size // node.shape[0], e_flat, state)
    if streamed is not None:
        last = streamed[1].node
        plan = matmul.streamed(state.options, last)
        vector = last.inputs[1 if plan.mat_is_lhs else 0]
        ctx.stream = matvec.Stream(
            tuple((f, tuple(arg_of[id(buf)] for buf in f_params)) for f, f_params, _ in ranged),
            plan, arg_of[id(memory.buffers[id(vector)])],
            arg_of[id(memory.outputs[t + 1 + len(streamed[0])])])
    if isinstance(r, Kernel) and not kernel.copy:
        r.emit(ctx, node, fn.args[0])
    else:
        _emit_elementwise_kernel(ctx, node, fn.args[0], fusion.inlined, kernel.copy,
                                 fn.args[len(params):] if unit else None, by_rows=not flat)
    ctx.b.ret_void()
    return (fn if keyed else _shared(state, fn)), params


def _streamed_params(t, fusion, memory) -> list:
    """The buffers a streamed product (kernel ``t``) hands on besides its own: what its
    elementwise kernels and the second product read and write (``matvec.Stream``)."""
    middle, last = fusion.streams[id(fusion.kernels[t].node)]
    return [buf for k, kernel in enumerate((*middle, last), t + 1)
            for buf in _kernel_params(kernel, memory, k)[0]]


def _ranged_function(state, name, t, kernel, fusion, memory, globals_):
    """Elementwise kernel ``t`` as ``void fn(ptr..., i64 lo, i64 hi)`` over a range of
    elements or, when it needs axes, of rows: (fn, its buffers, whether flat)."""
    flat = not needs_axes(kernel.node, fusion.inlined)
    fn, params, ctx = _kernel_function(state, name, t, kernel, memory, globals_, ranged=True)
    _emit_elementwise_kernel(ctx, kernel.node, fn.args[0], fusion.inlined, False,
                             fn.args[len(params):], by_rows=not flat)
    ctx.b.ret_void()
    return _shared(state, fn), params, flat


def _kernel_function(state, name, t, kernel, memory, globals_, *, ranged, extra=()):
    """The function of kernel ``t``, its body still to emit: (fn, the buffers its pointer
    arguments are, a KernelContext).  Its arguments: the output, the stored inputs,
    scratch, the ``extra`` buffers not among those (what an epilogue it runs reads and
    writes), then ``i64 lo, hi`` when ``ranged``."""
    node = kernel.node
    params, n_reads, n_own = _kernel_params(kernel, memory, t, extra)
    signature = ir.FunctionType(ir.VoidType(), [PTR] * len(params) + [I64, I64] * ranged)
    fn = ir.Function(state.module, signature,
                     f"{name}.k{t}_{'copy' if kernel.copy else node.op}")
    fn.linkage = "internal"
    state.lines.kernel(fn, node)
    if not all(region.is_scalar(n) for n in (node, *kernel.reads)):
        fn.attributes.add("noinline")  # a loop; a scalar kernel is cheaper inlined
    # LLVM defaults to 256-bit vectors even with AVX-512; full-width libmvec
    # variants (8 doubles) run transcendental-heavy kernels faster (re-measure: the
    # elementwise workload with and without this attribute)
    set.add(fn.attributes, '"prefer-vector-width"="512"')
    for i, arg in enumerate(fn.args[:len(params)]):
        arg.add_attribute("noalias")
        arg.add_attribute("captures(none)")
        if 0 < i <= n_reads:
            set.add(arg.attributes, "readonly")
    arg_of = {id(buf): arg for buf, arg in zip(params, fn.args)}
    pointers = {}
    for n in kernel.reads:
        buf = memory.buffers[id(n)]
        pointers[id(n)] = globals_[buf.index] if buf.kind == "constant" else arg_of[id(buf)]
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    return fn, params, KernelContext(b, pointers, fn.args[1 + n_reads:n_own], state)


def _kernel_params(kernel, memory, t, extra=()):
    """The buffers kernel ``t``'s pointer arguments receive: its output, each distinct
    stored input (constants are globals, not arguments), its scratch, then the
    ``extra`` buffers not among those; with the counts of stored inputs and of all
    but the extra ones."""
    read_bufs = list({id(buf): buf for buf in (memory.buffers[id(n)] for n in kernel.reads)
                      if buf.kind != "constant"}.values())
    own = [memory.outputs[t]] + read_bufs + list(memory.scratch[t])
    mine = {id(buf) for buf in own}
    params = own + [buf for buf in extra if id(buf) not in mine]
    return params, len(read_bufs), len(own)


def _shared(state: ModuleState, fn: ir.Function) -> ir.Function:
    """An identical kernel emitted before, if any (``fn`` is then dropped), else ``fn``."""
    body = str(fn).replace(f'"{fn.name}"', "@kernel", 1)
    if body in state.kernels:
        del state.module.globals[fn.name]
        return state.kernels[body]
    state.kernels[body] = fn
    return fn
