"""What code generation is told, and what it keeps while it writes one module.

``CodegenOptions`` holds every choice the generated code depends on besides the
graph.  It is resolved for this process (the vector ISAs and BLAS symbols found, the
thread count) before anything is generated, and it is part of the on-disk cache key,
so a key is valid wherever it is looked up.  ``ModuleState`` is the one mutable object
of a module being written; the kernel context carries both to every emitter.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

from llvmlite import ir

from llgrad.compiler.codegen.debuginfo import Lines
from llgrad.runtime.blas import Gemm


@dataclass(frozen=True)
class CodegenOptions:
    """``fastmath``: LLVM may reassociate float arithmetic (vectorised sums, FMA), and
    the code runs with subnormal floats flushed to zero (``llvm.fp_env``).
    ``fuse_ops``: fusion inlines what it can (False: every node its own loop).
    ``vector_isas``: libmvec ISA letters usable here ("b", "d", "e"; none: scalar math).
    ``blas``: (dtype, symbol, calling convention) of each BLAS gemm found.
    ``blas_min_flops``: products of at least this many multiply-adds go to BLAS
    whatever the tiles could do (None: the thresholds in ``matmul``).
    ``vector_bits``, ``vector_registers``: the target's vector register width and
    count (``runtime.host``: they size the matmul tiles); ``fma_units``: its FMAs a
    cycle (with them, when a product is worth splitting across threads).
    ``tile_panel_bytes``: the largest right operand a large product keeps as tiles.
    ``l1d_span``: the L1 data cache's sets times its line size (``runtime.host``).
    ``product_timings``: this machine's measured products, tiles against BLAS
    (``runtime.calibration``; empty: the thresholds in ``matmul`` decide).
    ``object_layout``: offsets of a list's items and an array's data in this Python
    (None: no entry taking a Python list, see ``module.list_entry``).
    ``threads``: how many pieces a large kernel or product is split into.
    ``batch_calls``: loop-free code runs independent math calls as libmvec vector calls.
    ``profile``: time counters around every kernel call.
    ``check_finite``: a NaN/Inf scan of every kernel's float output (``finite``)."""
    fastmath: bool = False
    fuse_ops: bool = True
    vector_isas: tuple[str, ...] = ()
    blas: tuple[tuple[str, str, str], ...] = ()
    blas_min_flops: Optional[int] = None
    vector_bits: int = 256
    vector_registers: int = 16
    fma_units: int = 2
    tile_panel_bytes: int = 0
    l1d_span: int = 4096
    product_timings: tuple = ()
    object_layout: Optional[tuple[int, int]] = None
    threads: int = 1
    batch_calls: bool = True
    profile: bool = False
    check_finite: bool = False

    @property
    def flags(self) -> tuple[str, ...]:
        """The fast-math flags of float arithmetic."""
        return ("fast",) if self.fastmath else ()

    def gemm(self, dtype: str) -> Optional[Gemm]:
        """The BLAS product for ``dtype``, if one was found."""
        for found, symbol, convention in self.blas:
            if found == dtype:
                return Gemm(symbol, convention)
        return None

    def cache_key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass
class ModuleState:
    """What code generation accumulates while it writes one module."""
    module: ir.Module
    options: CodegenOptions
    #: how ``module.py`` lowers a whole planned graph into this module: loop bodies
    #: (``control``) are lowered by it, and ``module.py`` reaches ``control`` through
    #: the lowering table, so ``control`` is handed the function instead of importing it
    lower_graph: Callable = None
    vector_fns: list = field(default_factory=list)        # libmvec declarations (math)
    vector_variants: dict = field(default_factory=dict)   # scalar symbol -> {lanes: fn}
    kernels: dict = field(default_factory=dict)           # kernel text -> its function
    kernel_keys: dict = field(default_factory=dict)       # kernel_key -> its function
    split_parts: dict = field(default_factory=dict)       # (kernel, size, parts, unit) -> fn
    loop_bodies: int = 0                                  # body functions emitted so far
    carried: set = field(default_factory=set)  # ids of loop-carried body parameters
    taped: set = field(default_factory=set)    # ids of whiles recording a heap tape
    profile: Optional[list] = None             # one label per timed call site
    checks: Optional[list] = None              # one label per NaN/Inf check (finite)
    origins: Optional[dict] = None             # id(node) -> (pass, adjoint of)
    lines: Lines = field(default_factory=Lines)  # source lines seen (debuginfo)
