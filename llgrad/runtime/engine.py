"""LLVM for the host CPU: optimisation (O3, vectorisation on) and JIT compilation.

``LLGRAD_CPU`` (a CPU name LLVM knows: ``haswell``, ``znver3``, ``x86-64-v3``) makes
the JIT compile as if this machine were that CPU: its instruction set, less whatever
this machine lacks, and its scheduling model.  With an AVX2 name on an AVX-512 machine
every choice that follows the host (vector width, register count, libmvec variants,
product timings) is the AVX2 machine's, so its code can be run and timed here.  A name
whose vector features this machine lacks is refused: its code could not run.  Read once
per process, before the first compile.

One long-lived target machine optimises modules, generates their object code and
prints assembly.  A large module is compiled in parts, some of them in worker
processes at the same time (``workers``); its parts' object code loads into one
engine, as a cached module's does.  Every JIT engine gets a target machine of its
own, because MCJIT takes ownership of the one it is given (sharing one between
engines crashed, see LLVMLITE-NOTES).  All LLVM work happens under one lock, so
compiling from several threads is safe.  A process that only loads cached object
code never creates the shared target machine and asks LLVM for the host CPU once.
"""
from __future__ import annotations

import itertools
import os
import re
import threading
from dataclasses import dataclass

import llvmlite.binding as llvm

from llgrad.llvm import pipeline
from llgrad.runtime import cache, cpus, workers

_lock = threading.RLock()
_state: dict = {}


def _initialise():
    if not _state:
        pipeline.initialise()
        cpu, flat, features = target_cpu(os.environ.get("LLGRAD_CPU", "").strip(),
                                         llvm.get_host_cpu_name(),
                                         llvm.get_host_cpu_features())
        _state.update(cpu=cpu, flat=flat, features=features, libmvec=_load_libmvec())


def target_cpu(name: str, host_name: str, host):
    """(CPU name, LLVM feature string, features as name -> bool) that code is compiled
    for on a host called ``host_name`` with LLVM's features ``host``: the host's, or
    those of the CPU ``name`` (see above); LLVM's native target must be initialised."""
    if name in ("", "host", host_name):
        return host_name, host.flatten(), host
    try:
        named = cpus.vector_features(cpus.target_machine(name))
    except cpus.UnknownCPU:
        raise ValueError(f"LLGRAD_CPU={name!r}: LLVM knows no CPU of that name (try "
                         f"'haswell', 'znver3', 'x86-64-v3' or 'host')") from None
    lacking = [f for f, on in named.items() if on and not host.get(f)]
    if lacking:
        raise ValueError(f"LLGRAD_CPU={name!r} has {', '.join(lacking)}, which this CPU "
                         f"({host_name}) lacks: its code could not run here")
    # whatever this machine lacks stays off, so no instruction of the named CPU faults
    return name, ",".join(f"-{f}" for f, on in sorted(host.items()) if not on), named


def _shared_target_machine():
    """The target machine that optimises and prints assembly (not handed to engines)."""
    if "tm" not in _state:
        _state["tm"] = new_target_machine()
    return _state["tm"]


def new_target_machine():
    _initialise()
    return pipeline.target_machine(_state["cpu"], _state["flat"])


def _load_libmvec() -> bool:
    try:
        llvm.load_library_permanently("libmvec.so.1")
        return True
    except Exception:  # noqa: BLE001 - absent library means scalar libm
        return False


def vector_isas() -> tuple[str, ...]:
    """libmvec ISA letters this host can run ("b" SSE, "d" AVX2, "e" AVX-512), or ()."""
    with _lock:
        _initialise()
        if not _state["libmvec"]:
            return ()
        return isas_for(_state["features"])


def isas_for(features) -> tuple[str, ...]:
    """The libmvec ISA letters a CPU with ``features`` (name -> bool) can run."""
    needs = {"b": "sse4.1", "d": "avx2", "e": "avx512f"}
    return tuple(isa for isa, feature in needs.items() if features.get(feature))


def has_libmvec() -> bool:
    """Whether glibc's libmvec could be loaded here."""
    with _lock:
        _initialise()
        return _state["libmvec"]


def host_features():
    """The features of the CPU code is compiled for (name -> bool): LLVM's of the host,
    or ``cpus.FEATURES`` of the one ``LLGRAD_CPU`` names."""
    with _lock:
        _initialise()
        return _state["features"]


def context() -> tuple[str, ...]:
    """What object code depends on besides the graph and the codegen options: llgrad's
    source (its version number included, in ``__init__.py``), LLVM's version, the CPU
    compiled for and its features."""
    with _lock:
        _initialise()
        return (cache.source_digest(), ".".join(map(str, llvm.llvm_version_info)),
                _state["cpu"], _state["flat"])


@dataclass
class Compiled:
    """A JIT-compiled module; holding it keeps the machine code alive.  ``meta`` is
    what code generation computed besides the IR (stored with the object code)."""
    engine: object
    address: int
    llvm_ir_optimized: str
    meta: dict

    def address_of(self, symbol: str) -> int:
        """Another function of the module (0 if it has none of that name)."""
        with _lock:
            return self.engine.get_function_address(symbol)

    def asm(self) -> str:
        with _lock:
            tm = _shared_target_machine()
            return "".join(tm.emit_assembly(llvm.parse_assembly(part))
                           for part in _modules(self.llvm_ir_optimized))


def _modules(optimized: str) -> list[str]:
    """The modules of optimised IR compiled in parts (``jit``), each of whose text
    begins with its ``; ModuleID`` line."""
    starts = [m.start() for m in re.finditer(r"^; ModuleID", optimized, re.M)] or [0]
    return [optimized[a:b] for a, b in zip(starts, starts[1:] + [len(optimized)])]


def optimize(llvm_ir: str, *, speed_level: int = 3, tm=None) -> "llvm.ModuleRef":
    """``llvm_ir`` parsed, verified and optimised for ``tm`` (default: the host)."""
    with _lock:
        return pipeline.optimize(llvm_ir, tm or _shared_target_machine(), speed_level=speed_level)


def load(entry_key: str, suffix: str = ".obj") -> Compiled | None:
    """The module cached under ``entry_key``, loaded without generating or optimising
    any code; None on a miss (or an entry that fails to verify: see ``cache``)."""
    with _lock:
        hit = cache.load(entry_key, suffix)
        if hit is None:
            return None
        obj, optimized, meta = hit
        bounds = [0, *itertools.accumulate(meta.get("objects", [len(obj)]))]
        if bounds[-1] != len(obj):
            return None     # not the parts it lists: compiled again, and replaced
        return _loaded([obj[a:b] for a, b in zip(bounds, bounds[1:])], optimized, meta)


def jit(llvm_ir: str, entry_key: str, meta: dict, *, speed_level: int = 3,
        suffix: str = ".obj") -> Compiled:
    """Optimise ``llvm_ir``, compile it (in parts beside ``workers`` when it is large)
    and store its object code with ``meta`` under ``entry_key``; the address is that
    of the symbol ``meta["entry"]``."""
    with _lock:
        tm = _shared_target_machine()
        parts = workers.compile_module(
            llvm_ir, lambda text: pipeline.emit(optimize(text, speed_level=speed_level), tm),
            (_state["cpu"], _state["flat"]), speed_level)
        objects = [obj for obj, _ in parts]
        optimized = "".join(text for _, text in parts)
        if len(objects) > 1:
            meta = {**meta, "objects": [len(obj) for obj in objects]}
        cache.store(entry_key, b"".join(objects), optimized, meta, suffix)
        return _loaded(objects, optimized, meta)


def _loaded(objects: list[bytes], optimized: str, meta: dict) -> Compiled:
    """An engine holding ``objects`` (calls between them resolve by name)."""
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), new_target_machine())
    for obj in objects:
        engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
    engine.finalize_object()
    return Compiled(engine, engine.get_function_address(meta["entry"]), optimized, meta)
