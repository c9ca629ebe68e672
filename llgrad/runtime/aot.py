"""Ahead-of-time object code: a module compiled for a named CPU, position-independent,
to be linked into a shared library or a static archive (``llgrad.export``).

The JIT compiles for the host it runs on; an exported library may run elsewhere, so
the CPU is a parameter here.  Which vector instructions a CPU has decides the tile
shapes and the libmvec variants code generation may use; LLVM knows every CPU name's
features but llvmlite does not list them, so ``features`` asks LLVM itself: it compiles
three one-line functions for that CPU and reads the instructions it chose.
"""
from __future__ import annotations

import functools
import os
import tempfile

import llvmlite.binding as llvm

from llgrad.runtime import engine

#: the x86-64 micro-architecture levels, what each guarantees
LEVELS = ("x86-64", "x86-64-v2", "x86-64-v3", "x86-64-v4")

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
attributes #0 = { "prefer-vector-width"="512" "min-legal-vector-width"="512" }
"""


class UnknownCPU(ValueError):
    """LLVM does not know the CPU name asked for."""


def target_machine(cpu: str):
    """A target machine for ``cpu`` ("host" is this machine) emitting position-independent
    code; UnknownCPU for a name LLVM does not recognise (it would only warn and ignore it)."""
    engine.new_target_machine()   # initialises LLVM's native target
    target = llvm.Target.from_default_triple()
    if cpu == "host":
        return target.create_target_machine(cpu=llvm.get_host_cpu_name(),
                                            features=llvm.get_host_cpu_features().flatten(),
                                            opt=3, reloc="pic", codemodel="default")
    warned = _stderr_of(lambda: target.create_target_machine(
        cpu=cpu, features="", opt=3, reloc="pic", codemodel="default").emit_assembly(
            llvm.parse_assembly("")))
    if "not a recognized processor" in warned:
        raise UnknownCPU(cpu)
    return target.create_target_machine(cpu=cpu, features="", opt=3, reloc="pic",
                                        codemodel="default")


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


@functools.lru_cache(maxsize=None)
def features(cpu: str) -> dict:
    """The features code generation asks about (sse4.1, avx, avx2, avx512f) of ``cpu``,
    read from the instructions LLVM picks for it."""
    if cpu == "host":
        host = llvm.get_host_cpu_features()
        return {name: bool(host.get(name)) for name in ("sse4.1", "avx", "avx2", "avx512f")}
    asm = target_machine(cpu).emit_assembly(llvm.parse_assembly(_PROBE))
    body = {name: asm.split(f"{name}:", 1)[1].split(".Lfunc_end", 1)[0]
            for name in ("wide", "ints", "rounding")}
    return {"sse4.1": "round" in body["rounding"],
            "avx": "ymm" in body["wide"] or "zmm" in body["wide"],
            "avx2": "ymm" in body["ints"],
            "avx512f": "zmm" in body["wide"]}


def object_code(llvm_ir: str, cpu: str, hidden: tuple[str, ...] = ()) -> tuple[bytes, str]:
    """``llvm_ir`` optimised and compiled for ``cpu``: (ELF object bytes, optimised IR).
    The functions named in ``hidden`` get hidden visibility: a shared library built from
    the object does not export them, so two libraries never clash on them."""
    tm = target_machine(cpu)
    mod = engine.optimize(llvm_ir, tm=tm)
    for name in hidden:
        mod.get_function(name).visibility = "hidden"
    return tm.emit_object(mod), str(mod)
