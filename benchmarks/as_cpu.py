"""Every system run as if this machine were another CPU (``run.py --cpu NAME``).

An AVX-512 machine can run AVX2 code, so an AVX2 machine's picture can be measured on
it: llgrad compiles for the named CPU (``LLGRAD_CPU``), and each peer is held to the
same vector ISA through its own switch, set before it loads:

- numpy's OpenBLAS: ``OPENBLAS_CORETYPE`` (its kernels for that core);
- XLA: ``--xla_cpu_max_isa``;
- PyTorch: ``ATEN_CPU_CAPABILITY`` (ATen's and Inductor's vector code),
  ``MKL_ENABLE_INSTRUCTIONS`` and ``ONEDNN_MAX_CPU_ISA`` (its products);
- PyTensor: ``-mno-avx512f`` after its ``-march=native`` C flags.

JAX has no switch that works: with ``--xla_cpu_max_isa=AVX2`` its products still run
YNNPACK's ``dot_fp32_*_avx512`` kernels and XLA code on zmm registers (gdb on a
running product), at speeds above this machine's AVX2 FMA peak.  So for an AVX2 CPU
the run restarts itself with ``hide_avx512.c`` preloaded, which hides AVX-512 from
every CPUID the process executes: the libraries then pick their AVX2 kernels
themselves (JAX's products became YNNPACK's ``dot_fp32_*_fma3``).

The caches, core count and clock stay this machine's, so such a run shows what the
instruction set changes, not all that another machine would.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks import report     # loads no numpy: --cpu must be set before numpy is

#: per vector ISA: the environment that holds each peer to it
PEER_SWITCHES = {
    "avx2": {"OPENBLAS_CORETYPE": "Haswell", "ATEN_CPU_CAPABILITY": "avx2",
             "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "avx512": {},
}
XLA_ISA = {"avx2": " --xla_cpu_max_isa=AVX2", "avx512": ""}
PYTENSOR_FLAGS = {"avx2": "gcc__cxxflags=-mno-avx512f", "avx512": ""}


def vector_isa(cpu: str) -> str:
    """``avx512`` or ``avx2``: the widest vector ISA of the CPU LLVM knows as ``cpu``;
    SystemExit for a name LLVM does not know or a narrower CPU (no peer switch here).
    Asked in a process of its own: importing llgrad here would load numpy too soon."""
    probe = subprocess.run(
        [sys.executable, "-c", "import json, sys; from llgrad.runtime import aot; "
                               "print(json.dumps(aot.features(sys.argv[1])))", cpu],
        capture_output=True, text=True, env=dict(os.environ, LLGRAD_CPU=""))
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"--cpu {cpu}: {last} (try haswell, znver3, x86-64-v3)")
    features = json.loads(probe.stdout)
    if features["avx512f"]:
        return "avx512"
    if features["avx2"] and features["fma"]:
        return "avx2"
    raise SystemExit(f"--cpu {cpu}: a CPU without AVX2 and FMA; the peers are held to "
                     f"AVX2 or AVX-512 only")


@contextlib.contextmanager
def compiled_as(cpu: str | None):
    """Every system compiling for ``cpu`` (None: this machine) while inside; yields a
    line for the report, None for this machine.  Must be entered before numpy loads
    (OpenBLAS reads its core type once)."""
    if not cpu:
        yield None
        return
    if "numpy" in sys.modules:
        raise SystemExit("--cpu must be set before numpy loads: run "
                         "`python benchmarks/run.py --cpu ...`, not `python -m llgrad bench`")
    isa = vector_isa(cpu)
    hidden = hide_avx512() if isa == "avx2" else None
    switches = {"LLGRAD_CPU": cpu} | PEER_SWITCHES[isa]
    switches["XLA_FLAGS"] = ((os.environ.get("XLA_FLAGS") or "") + XLA_ISA[isa]).strip()
    switches["PYTENSOR_FLAGS"] = ",".join(
        filter(None, [os.environ.get("PYTENSOR_FLAGS"), PYTENSOR_FLAGS[isa]]))
    saved = {name: os.environ.get(name) for name in switches}
    os.environ.update({k: v for k, v in switches.items() if v})
    try:
        yield (f"every system compiled as {cpu} ({isa}): "
               + ", ".join(f"{k}={v}" for k, v in switches.items() if v)
               + (f"; {hidden}" if hidden else ""))
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


HIDE_AVX512_SOURCE = Path(__file__).with_name("hide_avx512.c")
#: set in the restarted process: the library it preloads
HIDDEN_BY = "LLGRAD_BENCH_HIDE_AVX512"


def hide_avx512() -> str | None:
    """Hold every library of this process to AVX2 by restarting it with
    ``hide_avx512.c`` preloaded (does not return); in the restarted process, or where
    that cannot be done, say so in a line for the report (None: no AVX-512 to hide)."""
    flags = _cpuinfo_flags()
    if os.environ.get(HIDDEN_BY):          # the restarted process: did the library load?
        import llvmlite.binding as llvm    # (a loader that cannot preload it goes on without)
        if not llvm.get_host_cpu_features().get("avx512f"):
            return ("CPUID shows no AVX-512 to any library in the process "
                    "(benchmarks/hide_avx512.c preloaded)")
        print(f"--cpu: {os.environ[HIDDEN_BY]} did not hide AVX-512, so JAX's products "
              f"still run AVX-512 code", file=sys.stderr)
        return "JAX's products not held to AVX2: the preloaded library did not hide AVX-512"
    if "avx512f" not in flags:
        return None
    why_not = ("this kernel or CPU has no CPUID faulting (no cpuid_fault in /proc/cpuinfo)"
               if "cpuid_fault" not in flags else
               "no C compiler to build benchmarks/hide_avx512.c" if not _c_compiler() else None)
    if why_not:
        print(f"--cpu: {why_not}, so JAX's products still run AVX-512 code", file=sys.stderr)
        return f"JAX's products not held to AVX2: {why_not}"
    library = _built_hide_avx512()
    preload = " ".join(filter(None, [library, os.environ.get("LD_PRELOAD")]))
    env = dict(os.environ, **{HIDDEN_BY: library, "LD_PRELOAD": preload})
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def _cpuinfo_flags() -> set:
    return set(report.cpuinfo().get("flags", "").split())


def _c_compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")


def _built_hide_avx512() -> str:
    """The preload library, built once per source text into the temporary directory."""
    source = HIDE_AVX512_SOURCE.read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:12]
    library = Path(tempfile.gettempdir()) / f"llgrad-hide-avx512-{digest}.so"
    if not library.exists():
        partial = library.with_suffix(f".{os.getpid()}.tmp")
        subprocess.run([_c_compiler(), "-O2", "-shared", "-fPIC", "-o", str(partial),
                        str(HIDE_AVX512_SOURCE), "-ldl"], check=True)
        os.replace(partial, library)
    return str(library)
