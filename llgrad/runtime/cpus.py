"""What LLVM knows of a CPU named by the user: whether it knows the name, and which of
the features code generation asks about (sse4.1, avx, avx2, avx512f, fma) it has.

llvmlite lists the host's features but not a named CPU's, so ``vector_features`` asks
LLVM itself: it compiles four one-line functions for that CPU and reads the
instructions LLVM chose.  ``llgrad.export`` uses this to compile a library for another
machine, and ``LLGRAD_CPU`` to compile the JIT's code as if this machine were another.
"""
from __future__ import annotations

import os
import tempfile

import llvmlite.binding as llvm

#: the features code generation asks about, each probed by one function below
FEATURES = ("sse4.1", "avx", "avx2", "avx512f", "fma")

_PROBE = """
define <16 x float> @wide(<16 x float> %a, <16 x float> %b) #0 {
  %c = fadd <16 x float> %a, %b
  ret <16 x float> %c
}
define <8 x i32> @ints(<8 x i32> %a, <8 x i32> %b) {
  %c = add <8 x i32> %a, %b
  ret <8 x i32> %c
}
declare <2 x double> @llvm.floor.v2f64(<2 x double>)
define <2 x double> @rounding(<2 x double> %a) {
  %c = call <2 x double> @llvm.floor.v2f64(<2 x double> %a)
  ret <2 x double> %c
}
declare <4 x double> @llvm.fma.v4f64(<4 x double>, <4 x double>, <4 x double>)
define <4 x double> @fused(<4 x double> %a, <4 x double> %b, <4 x double> %c) {
  %d = call <4 x double> @llvm.fma.v4f64(<4 x double> %a, <4 x double> %b, <4 x double> %c)
  ret <4 x double> %d
}
attributes #0 = { "prefer-vector-width"="512" "min-legal-vector-width"="512" }
"""


class UnknownCPU(ValueError):
    """LLVM does not know the CPU name asked for."""


def target_machine(cpu: str, features: str = "", **options):
    """LLVM's target machine for the CPU named ``cpu`` (LLVM's native target initialised
    by the caller); UnknownCPU for a name LLVM does not recognise (LLVM itself would
    only print a warning and compile for a generic x86-64)."""
    target = llvm.Target.from_default_triple()
    warned = _stderr_of(lambda: target.create_target_machine(
        cpu=cpu, features=features, **options).emit_assembly(llvm.parse_assembly("")))
    if "not a recognized processor" in warned:
        raise UnknownCPU(cpu)
    return target.create_target_machine(cpu=cpu, features=features, **options)


def vector_features(tm) -> dict:
    """name -> bool for each of ``FEATURES``, read from the instructions that target
    machine ``tm`` picks."""
    asm = tm.emit_assembly(llvm.parse_assembly(_PROBE))
    body = {name: asm.split(f"{name}:", 1)[1].split(".Lfunc_end", 1)[0]
            for name in ("wide", "ints", "rounding", "fused")}
    return {"sse4.1": "round" in body["rounding"],
            "avx": "ymm" in body["wide"] or "zmm" in body["wide"],
            "avx2": "ymm" in body["ints"],
            "avx512f": "zmm" in body["wide"],
            "fma": "vfmadd" in body["fused"]}


def _stderr_of(run) -> str:
    """What ``run()`` writes to file descriptor 2 (where LLVM prints its warnings)."""
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            run()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        sink.seek(0)
        return sink.read().decode(errors="replace")
