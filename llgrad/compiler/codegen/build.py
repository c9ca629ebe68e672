"""From a Graph to native code: the ordered passes, each a plain function.

    graph ──fusion──▶ kernels ──memplan──▶ buffers ──codegen──▶ LLVM IR ──JIT──▶ Executable

The on-disk cache is consulted first, keyed by the graph's fingerprint and the
codegen options: on a hit none of the arrows before JIT runs (fusion, the memory plan
and the code generator proper are not even imported; only the options and
codegen/parallel.py are, for the key); the IR and the kernel plan are made again only if someone
asks for them (``Trace.llvm_ir``, ``Trace.kernels``).
"""
from __future__ import annotations

import ctypes
import os
from functools import cached_property

from llgrad.compiler.codegen import product_timing
from llgrad.compiler.codegen.debuginfo import sources_key
from llgrad.compiler.codegen.options import CodegenOptions
from llgrad.compiler.codegen.parallel import default_parts
from llgrad.compiler.codegen.while_loop import ACCESSOR as LIMITS_ACCESSOR
from llgrad.ir.fingerprint import fingerprint
from llgrad.ir.graph import Graph
from llgrad.runtime import cache, engine, host, mpi, pool, pyobjects, workers
from llgrad.runtime.blas import available as blas_symbols
from llgrad.runtime.executable import Executable


class Lowering:
    """What code generation makes of ``graph`` under ``options``, each part computed
    when first asked for: the fusion and memory plan, the LLVM IR, the metadata the
    runtime needs (entry symbol, arena size).  Deterministic, so an executable
    loaded from the cache shows the same IR and plan as the one that was stored."""

    def __init__(self, graph: Graph, options: CodegenOptions, origins=None):
        self.graph = graph
        self.options = options
        self._origins = origins   # () -> id(node) -> (pass, adjoint of), for NaN checks

    @cached_property
    def plan(self):
        from llgrad.compiler.codegen.fusion import fuse
        from llgrad.compiler.codegen.memplan import plan_memory
        fusion = fuse(self.graph, enabled=self.options.fuse_ops, options=self.options)
        return fusion, plan_memory(fusion)

    @cached_property
    def _module(self):
        from llgrad.compiler.codegen.module import build_module
        origins = self._origins() if self.options.check_finite and self._origins else None
        module, entry, labels, checks = build_module(*self.plan, self.options, origins)
        meta = {"entry": entry, "arena_bytes": self.plan[1].arena_bytes}
        if self.options.profile:
            meta["profile"] = labels
        if self.options.check_finite:
            meta["nan_checks"] = checks
        return str(module), meta

    @property
    def llvm_ir(self) -> str:
        return self._module[0]

    @property
    def meta(self) -> dict:
        return self._module[1]


#: ``llgrad.debug_nans``: None follows LLGRAD_DEBUG_NANS=1, else what was set
_debug_nans: list = [None]


def set_debug_nans(on) -> None:
    """Whether graphs compiled from now on check for NaN/Inf (None: the env variable)."""
    _debug_nans[0] = on


def debug_nans() -> bool:
    """Whether graphs compiled now check every kernel's output for NaN/Inf."""
    if _debug_nans[0] is None:
        return os.environ.get("LLGRAD_DEBUG_NANS") == "1"
    return bool(_debug_nans[0])


def codegen_options(*, fastmath: bool, fuse_ops: bool, libmvec: bool, blas: bool,
                    blas_min_flops: int | None, threads: int | None,
                    batch_calls: bool = True, profile: bool = False) -> CodegenOptions:
    """The options as the caller asked for them, resolved for this process: the vector
    ISAs and BLAS symbols found, the thread count, this CPU's vector width and cache,
    and ``debug_nans()`` (which also turns fusion off: each op its own kernel, so a
    check names the op that made the NaN)."""
    check_finite = debug_nans()
    fuse_ops = fuse_ops and not check_finite
    threads = default_parts() if threads is None else threads
    if threads > 1:
        pool.install()       # before any code that calls it is loaded
    cpu = host.current()
    return CodegenOptions(
        fastmath=fastmath, fuse_ops=fuse_ops,
        vector_isas=tuple(engine.vector_isas()) if libmvec else (),
        blas=tuple((dtype, g.symbol, g.convention)
                   for dtype, g in sorted((blas_symbols() if blas else {}).items())),
        blas_min_flops=blas_min_flops, vector_bits=cpu.vector_bits,
        vector_registers=cpu.vector_registers, fma_units=cpu.fma_units,
        tile_panel_bytes=cpu.tile_panel_bytes, l1d_span=cpu.l1d_span,
        object_layout=tuple(pyobjects.LAYOUT) if pyobjects.LAYOUT else None,
        threads=threads, batch_calls=batch_calls, profile=profile, check_finite=check_finite)


def compile_graph(graph: Graph, *, fastmath: bool = False, fuse_ops: bool = True,
                  libmvec: bool = True, blas: bool = True,
                  blas_min_flops: int | None = None, threads: int | None = None,
                  batch_calls: bool = True, profile: bool = False,
                  origins=None) -> Executable:
    """Compile ``graph`` for the host CPU.

    ``fastmath`` lets LLVM reassociate float arithmetic (vectorised sums, FMA) and runs
    the code with subnormal floats flushed to zero (FTZ and DAZ, see llvm/fp_env.py);
    ``fuse_ops=False`` gives every node its own loop (for testing and debugging);
    ``libmvec=False`` keeps transcendental functions scalar; ``blas=False`` (or no
    BLAS found, or LLGRAD_NO_BLAS=1) runs every dot_general as generated register tiles;
    ``threads``: pieces a large elementwise kernel is split into (default: the usable
    cores, or ``LLGRAD_THREADS``; 1: never split); ``batch_calls=False`` keeps the
    math calls of loop-free code one scalar libm call each (see codegen/vector_calls.py);
    ``profile=True`` counts the time of every kernel call (``llgrad.profile``);
    ``origins()``, asked only when ``llgrad.debug_nans`` is on, says each node's pass
    and whose adjoint it is (``dispatch.staging.origins``), for the NaN reports.
    """
    options = codegen_options(fastmath=fastmath, fuse_ops=fuse_ops, libmvec=libmvec,
                              blas=blas, blas_min_flops=blas_min_flops, threads=threads,
                              batch_calls=batch_calls, profile=profile)
    options = product_timing.with_timed_products(graph, options, compile_graph)
    lowering = Lowering(graph, options, origins)
    # the source lines too: the object code's line table names them
    entry_key = cache.key(fingerprint(graph), options.cache_key(), sources_key(graph),
                          *engine.context())
    mpi.resolve_for(graph)   # before any code calling MPI is loaded
    compiled = engine.load(entry_key)
    if compiled is None:
        workers.start()     # they start while the IR is built
        compiled = engine.jit(lowering.llvm_ir, entry_key, lowering.meta)
    entry = compiled.meta["entry"]
    list_address = compiled.address_of(entry + ".list") if pyobjects.LAYOUT else 0
    nan_checks = None
    if options.check_finite:
        status = ctypes.CFUNCTYPE(ctypes.c_void_p)(compiled.address_of(entry + ".nan_status"))
        nan_checks = (status(), compiled.meta["nan_checks"])
    limits = compiled.address_of(entry + LIMITS_ACCESSOR)   # a while_loop's max_steps
    loop_status = ctypes.CFUNCTYPE(ctypes.c_void_p)(limits)() if limits else None
    return Executable(graph, compiled, arena_bytes=compiled.meta["arena_bytes"],
                      lowering=lowering, list_address=list_address, nan_checks=nan_checks,
                      loop_status=loop_status)
