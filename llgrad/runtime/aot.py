"""Ahead-of-time object code: a module compiled for a named CPU, position-independent,
to be linked into a shared library or a static archive (``llgrad.export``).

The JIT compiles for the CPU it runs on; an exported library may run elsewhere, so
the CPU is a parameter here.  Which vector instructions a CPU has decides the tile
shapes and the libmvec variants code generation may use (``cpus.vector_features``).
"""
from __future__ import annotations

import functools

import llvmlite.binding as llvm

from llgrad.runtime import cpus, engine

#: the x86-64 micro-architecture levels, what each guarantees
LEVELS = ("x86-64", "x86-64-v2", "x86-64-v3", "x86-64-v4")

UnknownCPU = cpus.UnknownCPU


def target_machine(cpu: str):
    """A target machine for ``cpu`` ("host" is this machine) emitting position-independent
    code; UnknownCPU for a name LLVM does not recognise."""
    engine.new_target_machine()   # initialises LLVM's native target
    if cpu == "host":
        return llvm.Target.from_default_triple().create_target_machine(
            cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(),
            opt=3, reloc="pic", codemodel="default")
    return cpus.target_machine(cpu, opt=3, reloc="pic", codemodel="default")


@functools.lru_cache(maxsize=None)
def features(cpu: str) -> dict:
    """The features code generation asks about (``cpus.FEATURES``) of ``cpu``."""
    if cpu == "host":
        host = llvm.get_host_cpu_features()
        return {name: bool(host.get(name)) for name in cpus.FEATURES}
    return cpus.vector_features(target_machine(cpu))


def object_code(llvm_ir: str, cpu: str, hidden: tuple[str, ...] = ()) -> tuple[bytes, str]:
    """``llvm_ir`` optimised and compiled for ``cpu``: (ELF object bytes, optimised IR).
    The functions named in ``hidden`` get hidden visibility: a shared library built from
    the object does not export them, so two libraries never clash on them."""
    tm = target_machine(cpu)
    mod = engine.optimize(llvm_ir, tm=tm)
    for name in hidden:
        mod.get_function(name).visibility = "hidden"
    return tm.emit_object(mod), str(mod)
