"""benchmarks/hide_avx512.c, which an AVX2 benchmark run (``run.py --cpu haswell``)
preloads: the process's CPUID stops showing AVX-512, and nothing else changes.

The oracle is the same probe run without the library: LLVM's host features and
OpenBLAS's choice of kernels, read from an unmasked process."""
import json
import os
import subprocess
import sys

import pytest

from benchmarks import as_cpu

FLAGS = as_cpu._cpuinfo_flags()
pytestmark = [
    pytest.mark.skipif("avx512f" not in FLAGS, reason="this CPU has no AVX-512 to hide"),
    pytest.mark.skipif("cpuid_fault" not in FLAGS,
                       reason="this kernel or CPU has no CPUID faulting"),
    pytest.mark.skipif(as_cpu._c_compiler() is None,
                       reason="no C compiler to build the library"),
]

PROBE = """
import json, llvmlite.binding as llvm
features = llvm.get_host_cpu_features()
import numpy, threadpoolctl
blas = [p.get("architecture") for p in threadpoolctl.threadpool_info()
        if p["internal_api"] == "openblas"]
print(json.dumps({"avx512f": features["avx512f"], "avx512bw": features["avx512bw"],
                  "avx2": features["avx2"], "fma": features["fma"], "openblas": blas}))
"""


def run_python(code, preload, **kwargs):
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "OPENBLAS_CORETYPE")}
    if preload:
        env["LD_PRELOAD"] = as_cpu._built_hide_avx512()
    return subprocess.run([sys.executable, *kwargs.pop("flags", []), "-c", code], env=env,
                          capture_output=True, text=True, timeout=120, **kwargs)


def test_cpuid_shows_avx2_but_no_avx512():
    pytest.importorskip("threadpoolctl")
    plain = json.loads(run_python(PROBE, preload=False).stdout)
    masked = run_python(PROBE, preload=True)
    assert masked.returncode == 0, masked.stderr
    hidden = json.loads(masked.stdout)
    assert plain["avx512f"] and plain["avx512bw"]
    assert not hidden["avx512f"] and not hidden["avx512bw"]
    assert hidden["avx2"] == plain["avx2"] and hidden["fma"] == plain["fma"]
    # OpenBLAS picks its kernels from CPUID itself, with no OPENBLAS_CORETYPE
    if plain["openblas"]:
        assert hidden["openblas"] != plain["openblas"]


def test_a_real_segfault_still_kills_the_process():
    crashed = run_python("import ctypes; ctypes.string_at(0)", preload=True)
    assert crashed.returncode == -11


def test_the_process_own_handler_still_sees_its_segfaults():
    """Python's faulthandler installs a SIGSEGV handler after the library: it is passed
    the fault (its traceback is printed) and CPUID keeps being masked after it."""
    code = ("import llvmlite.binding as llvm, ctypes; "
            "print('avx512f', llvm.get_host_cpu_features()['avx512f'], flush=True); "
            "ctypes.string_at(0)")
    crashed = run_python(code, preload=True, flags=["-X", "faulthandler"])
    assert crashed.returncode == -11
    assert "avx512f False" in crashed.stdout
    assert "Fatal Python error: Segmentation fault" in crashed.stderr


def test_a_compiler_started_from_the_process_targets_avx2():
    """gcc's -march=native asks CPUID in a child process, which inherits LD_PRELOAD;
    its cc1 installs its own SIGSEGV handler, which must not receive the CPUID faults."""
    native = subprocess.run([as_cpu._c_compiler(), "-march=native", "-Q", "--help=target"],
                            env=dict(os.environ, LD_PRELOAD=as_cpu._built_hide_avx512()),
                            capture_output=True, text=True, timeout=60)
    if "-mavx512f" not in native.stdout:
        pytest.skip("this C compiler does not print its target options")
    flags = dict(line.split(None, 1) for line in native.stdout.splitlines()
                 if line.strip().startswith("-mavx") and len(line.split()) == 2)
    assert flags["-mavx512f"].strip() == "[disabled]"
    assert flags["-mavx2"].strip() == "[enabled]"


def test_the_restarted_run_says_whether_avx512_was_hidden():
    """What ``run.py --cpu haswell`` puts in its report after restarting itself: read
    from CPUID, not from the environment it set (a loader that cannot preload the
    library goes on without it)."""
    code = "from benchmarks import as_cpu; print(as_cpu.hide_avx512())"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    env.update(PYTHONPATH=root, **{as_cpu.HIDDEN_BY: as_cpu._built_hide_avx512()})
    held = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(env, LD_PRELOAD=env[as_cpu.HIDDEN_BY]), timeout=120)
    not_loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                env=env, timeout=120)
    assert held.stdout.startswith("CPUID shows no AVX-512"), held.stderr
    assert not_loaded.stdout.startswith("JAX's products not held to AVX2"), not_loaded.stderr
    assert "did not hide AVX-512" in not_loaded.stderr
