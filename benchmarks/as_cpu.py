"""Every system run as if this machine were another CPU (``run.py --cpu NAME``).

An AVX-512 machine can run AVX2 code, so an AVX2 machine's picture can be measured on
it: llgrad compiles for the named CPU (``LLGRAD_CPU``), and each peer is held to the
same vector ISA through its own switch, set before it loads:

- numpy's OpenBLAS: ``OPENBLAS_CORETYPE`` (its kernels for that core);
- XLA: ``--xla_cpu_max_isa``;
- PyTorch: ``ATEN_CPU_CAPABILITY`` (ATen's and Inductor's vector code),
  ``MKL_ENABLE_INSTRUCTIONS`` and ``ONEDNN_MAX_CPU_ISA`` (its products);
- PyTensor: ``-mno-avx512f`` after its ``-march=native`` C flags.

The caches, core count and clock stay this machine's, so such a run shows what the
instruction set changes, not all that another machine would.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys

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
    switches = {"LLGRAD_CPU": cpu} | PEER_SWITCHES[isa]
    switches["XLA_FLAGS"] = ((os.environ.get("XLA_FLAGS") or "") + XLA_ISA[isa]).strip()
    switches["PYTENSOR_FLAGS"] = ",".join(
        filter(None, [os.environ.get("PYTENSOR_FLAGS"), PYTENSOR_FLAGS[isa]]))
    saved = {name: os.environ.get(name) for name in switches}
    os.environ.update({k: v for k, v in switches.items() if v})
    try:
        yield (f"every system compiled as {cpu} ({isa}): "
               + ", ".join(f"{k}={v}" for k, v in switches.items() if v))
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
