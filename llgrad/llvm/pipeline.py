"""LLVM IR to object code: the pass pipeline every module of llgrad goes through.

Used in the process (``runtime.engine``) and in the processes that compile parts of a
large module beside it (``llvm/worker.py``, run as a script): both must make the same
code.  Imports only llvmlite; ``initialise`` first.
"""
from __future__ import annotations

import llvmlite.binding as llvm


def initialise() -> None:
    """LLVM's native target, its assembly printer and parser: what every process that
    compiles needs once, before its first target machine."""
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    llvm.initialize_native_asmparser()


def target_machine(cpu: str, features: str):
    """A target machine for the host's triple, compiling for ``cpu`` with ``features``
    (LLVM's comma-separated +/- list)."""
    target = llvm.Target.from_default_triple()
    return target.create_target_machine(cpu=cpu, features=features, opt=3,
                                        codemodel="jitdefault")


def optimize(llvm_ir: str, tm, *, speed_level: int = 3) -> "llvm.ModuleRef":
    """``llvm_ir`` parsed, verified and optimised for the target machine ``tm``."""
    mod = llvm.parse_assembly(llvm_ir)
    mod.triple = tm.triple
    mod.data_layout = str(tm.target_data)
    mod.verify()
    pto = llvm.create_pipeline_tuning_options(speed_level=speed_level)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    # unrolling triples the optimised IR of a small MLP's gradient and adds much of
    # its compile time for no speed: the vectoriser still interleaves, and every hot
    # loop here is a vector loop or a library call (re-measure with unrolling on: the
    # cold line of ``python benchmarks/bench_cache_hit.py --workload tiny_mlp``, and
    # ``python -m llgrad bench --workloads tiny_mlp --systems "llgrad native"``)
    pto.loop_unrolling = False
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)
    return mod


def compile_object(llvm_ir: str, tm, *, speed_level: int = 3) -> tuple[bytes, str]:
    """(object code, optimised IR) of ``llvm_ir`` for ``tm``."""
    return emit(optimize(llvm_ir, tm, speed_level=speed_level), tm)


def emit(mod, tm) -> tuple[bytes, str]:
    """(object code, optimised IR) of the optimised module ``mod``."""
    return bytes(tm.emit_object(mod)), str(mod)
