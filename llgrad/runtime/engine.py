"""LLVM for the host CPU: optimisation (O3, vectorisation on) and JIT compilation.

One long-lived target machine optimises modules and prints assembly; every JIT
engine gets a target machine of its own, because MCJIT takes ownership of the one
it is given (sharing one between engines crashed, see LLVMLITE-NOTES).  All LLVM
work happens under one lock, so compiling from several threads is safe.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import llvmlite.binding as llvm

from . import cache

_lock = threading.RLock()
_state: dict = {}


def _initialise():
    if not _state:
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        llvm.initialize_native_asmparser()
        _state["tm"] = new_target_machine()
        _state["libmvec"] = _load_libmvec()


def new_target_machine():
    target = llvm.Target.from_default_triple()
    return target.create_target_machine(cpu=llvm.get_host_cpu_name(),
                                        features=llvm.get_host_cpu_features().flatten(),
                                        opt=3, codemodel="jitdefault")


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
        features = llvm.get_host_cpu_features()
        needs = {"b": "sse4.1", "d": "avx2", "e": "avx512f"}
        return tuple(isa for isa, feature in needs.items() if features.get(feature))


def host_cpu() -> str:
    return f"{llvm.get_host_cpu_name()} {llvm.get_host_cpu_features().flatten()}"


def llvm_version() -> str:
    return ".".join(map(str, llvm.llvm_version_info))


@dataclass
class Compiled:
    """A JIT-compiled module; holding it keeps the machine code alive."""
    engine: object
    address: int
    llvm_ir_optimized: str

    def asm(self) -> str:
        with _lock:
            mod = llvm.parse_assembly(self.llvm_ir_optimized)
            return _state["tm"].emit_assembly(mod)


def optimize(llvm_ir: str, *, speed_level: int = 3) -> "llvm.ModuleRef":
    with _lock:
        _initialise()
        tm = _state["tm"]
        mod = llvm.parse_assembly(llvm_ir)
        mod.triple = tm.triple
        mod.data_layout = str(tm.target_data)
        mod.verify()
        pto = llvm.create_pipeline_tuning_options(speed_level=speed_level)
        pto.loop_vectorization = True
        pto.slp_vectorization = True
        pto.loop_unrolling = True
        pb = llvm.create_pass_builder(tm, pto)
        pb.getModulePassManager().run(mod, pb)
        return mod


def jit(llvm_ir: str, entry: str) -> Compiled:
    """Optimise ``llvm_ir`` and compile it (or load its object code from the on-disk
    cache); returns the address of ``entry``."""
    with _lock:
        _initialise()
        from llgrad import __version__
        entry_key = cache.key(llvm_ir, __version__, llvm_version(), host_cpu())
        hit = cache.load(entry_key)
        if hit is not None:
            obj, optimized = hit
            engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), new_target_machine())
            engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
        else:
            mod = optimize(llvm_ir)
            optimized = str(mod)
            engine = llvm.create_mcjit_compiler(mod, new_target_machine())
            emitted = []
            engine.set_object_cache(notify_func=lambda module, buffer: emitted.append(buffer))
        engine.finalize_object()
        address = engine.get_function_address(entry)
        if hit is None and emitted:
            cache.store(entry_key, bytes(emitted[0]), optimized)
        return Compiled(engine, address, optimized)
