"""``LLGRAD_CPU``: the JIT compiles as if this machine were another CPU (its vector
features at most this machine's), and every choice that follows the host follows it."""
import os
import subprocess
import sys
import textwrap

import llvmlite.binding as llvm
import pytest

from llgrad.runtime import aot, cpus, engine

HOST = aot.features("host")
needs_avx2 = pytest.mark.skipif(not (HOST["avx2"] and HOST["fma"]),
                                reason="this CPU has no AVX2 and FMA to compile for")


def _initialised():
    engine.host_features()   # LLVM's native target, as engine.target_cpu needs it


@pytest.mark.parametrize("cpu, expected", [
    ("haswell", {"sse4.1": True, "avx": True, "avx2": True, "avx512f": False, "fma": True}),
    ("x86-64", {"sse4.1": False, "avx": False, "avx2": False, "avx512f": False, "fma": False}),
    ("skylake-avx512", {"sse4.1": True, "avx": True, "avx2": True, "avx512f": True,
                        "fma": True}),
])
def test_vector_features_read_from_the_instructions_llvm_picks(cpu, expected):
    _initialised()
    assert cpus.vector_features(cpus.target_machine(cpu)) == expected


def test_an_unknown_name_is_refused_with_what_to_try():
    _initialised()
    with pytest.raises(ValueError, match="LLGRAD_CPU='pentium-9000': LLVM knows no CPU"):
        engine.target_cpu("pentium-9000", "somecpu", llvm.get_host_cpu_features())


def test_a_cpu_with_features_this_machine_lacks_is_refused():
    _initialised()
    avx2_host = llvm.get_host_cpu_features()
    for feature in list(avx2_host):
        if feature.startswith("avx512"):
            avx2_host[feature] = False
    with pytest.raises(ValueError, match=r"'skylake-avx512' has avx512f, which this CPU "
                                         r"\(znver3\) lacks"):
        engine.target_cpu("skylake-avx512", "znver3", avx2_host)


def test_the_host_is_compiled_for_as_it_is():
    _initialised()
    host = llvm.get_host_cpu_features()
    name = llvm.get_host_cpu_name()
    for asked in ("", "host", name):
        assert engine.target_cpu(asked, name, host) == (name, host.flatten(), host)


@needs_avx2
def test_a_named_cpu_turns_off_what_this_machine_lacks():
    _initialised()
    host = llvm.get_host_cpu_features()
    cpu, flat, features = engine.target_cpu("znver3", llvm.get_host_cpu_name(), host)
    assert cpu == "znver3" and features["avx2"] and not features["avx512f"]
    assert set(flat.split(",")) == {f"-{f}" for f, on in host.items() if not on}


PROGRAM = textwrap.dedent("""
    import numpy as np, llgrad
    from llgrad.runtime import engine, host

    def loss(w1, w2, x):
        return np.sum(np.tanh(np.exp(x @ w1 * 0.1) @ w2) ** 2)

    rng = np.random.default_rng(0)
    for dtype, (m, k, n) in [("float32", (64, 784, 128)), ("float64", (33, 70, 19)),
                             ("float32", (7, 300, 45)), ("float64", (128, 256, 64))]:
        x = rng.standard_normal((m, k)).astype(dtype)
        w1 = (rng.standard_normal((k, n)) / k).astype(dtype)
        w2 = (rng.standard_normal((n, 3)) / n).astype(dtype)
        g = llgrad.grad(loss, argnums=(0, 1))
        got = g(w1, w2, x)
        # numpy's own reverse mode of the same program, the oracle
        h = x @ w1 * 0.1
        e = np.exp(h)
        y = np.tanh(e @ w2)
        dy = 2 * y * (1 - y ** 2)
        dw2 = e.T @ dy
        dw1 = x.T @ ((dy @ w2.T) * e * 0.1)
        tol = 2e-3 if dtype == "float32" else 1e-9
        for a, b in zip(got, (dw1, dw2)):
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol * np.abs(b).max())
    t = llgrad.grad(loss).trace(w1, w2, x)
    print(host.current().isa, host.current().vector_registers, engine.context()[2],
          "zmm" in t.asm, "ymm" in t.asm)
""")


@needs_avx2
@pytest.mark.parametrize("cpu", ["haswell", "x86-64-v3"])
def test_code_for_an_avx2_cpu_runs_here_and_agrees_with_numpy(cpu, tmp_path):
    """Forced on an AVX-512 machine, AVX2's tiles run as AVX2 code: 16 registers, no
    zmm, libmvec's AVX2 variants; their gradients equal numpy's."""
    env = dict(os.environ, LLGRAD_CPU=cpu, LLGRAD_CACHE_DIR=str(tmp_path), LLGRAD_HOST="")
    out = subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["avx2", "16", cpu, "False", "True"]
