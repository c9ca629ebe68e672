"""From a Graph to native code: the ordered passes, each a plain function.

    graph ──fusion──▶ kernels ──memplan──▶ buffers ──codegen──▶ LLVM IR ──JIT──▶ Executable
"""
from __future__ import annotations

from llgrad.compiler.codegen import parallel
from llgrad.compiler.codegen.module import build_module
from llgrad.compiler.passes.fusion import fuse
from llgrad.compiler.passes.memplan import plan_memory
from llgrad.ir.graph import Graph
from llgrad.runtime import engine, pyobjects
from llgrad.runtime.blas import available as blas_symbols
from llgrad.runtime.executable import Executable


def compile_graph(graph: Graph, *, fastmath: bool = False, fuse_ops: bool = True,
                  libmvec: bool = True, blas: bool = True,
                  blas_min_flops: int | None = None, threads: int | None = None) -> Executable:
    """Compile ``graph`` for the host CPU.

    ``fastmath`` lets LLVM reassociate float arithmetic (vectorised sums, FMA);
    ``fuse_ops=False`` gives every node its own loop (for testing and debugging);
    ``libmvec=False`` keeps transcendental functions scalar; ``blas=False`` (or no
    BLAS found, or LLGRAD_NO_BLAS=1) keeps every dot_general a generated loop nest;
    ``threads``: pieces a large elementwise kernel is split into (default: the usable
    cores, or ``LLGRAD_THREADS``; 1: never split).
    """
    fusion = fuse(graph, enabled=fuse_ops)
    memory = plan_memory(fusion)
    module, entry = build_module(fusion, memory, fastmath=fastmath,
                                 vector_isas=engine.vector_isas() if libmvec else (),
                                 blas=blas_symbols() if blas else None,
                                 blas_min_flops=blas_min_flops,
                                 object_layout=pyobjects.LAYOUT,
                                 threads=parallel.default_parts() if threads is None
                                 else threads)
    llvm_ir = str(module)
    compiled = engine.jit(llvm_ir, entry)
    list_address = compiled.address_of(entry + ".list") if pyobjects.LAYOUT else 0
    return Executable(graph, compiled, arena_bytes=memory.arena_bytes, llvm_ir=llvm_ir,
                      list_address=list_address,
                      plan=(fusion, memory))
