"""The code generator's choices follow the host description (``runtime.host``), and a
forced host (``LLGRAD_HOST``) makes each ISA's tile shapes on any x86 machine: the
native products at every tile shape either selection produces equal numpy's."""
from __future__ import annotations

import re

import numpy as np
import pytest

from llgrad.compiler.codegen import build, tiles
from llgrad.compiler.codegen.build import compile_graph
from llgrad.ir import Builder, Graph, TensorType
from llgrad.runtime import host

RNG = np.random.default_rng(20)
K = 5


def _options():
    return build.codegen_options(fastmath=False, fuse_ops=True, libmvec=True, blas=False,
                                 blas_min_flops=None, threads=1)


#: the tallest tile for 1, 2 and 3 vectors a row: accumulators, B's vectors and, without
#: AVX-512's embedded broadcast, one broadcast in 16 registers (AVX2) or 32 (AVX-512)
TALLEST = {"avx2": (12, 6, 4), "avx512": (12, 12, 9)}


def _most_rows(isa, vectors):
    """The tallest tile ``tiles.emit_product`` takes for ``vectors`` vectors a row."""
    return TALLEST[isa][vectors - 1]


def _shapes(isa, dtype):
    """(M, N) of one product per tile shape: every row count up to the tallest, for
    1..MAX_VECTORS whole vectors a row and for a last vector that is partial."""
    lanes = host.ISAS[isa][0] // (8 * np.dtype(dtype).itemsize)
    return [(rows, n) for vectors in range(1, tiles.MAX_VECTORS + 1)
            for rows in range(1, _most_rows(isa, vectors) + 1)
            for n in (vectors * lanes, vectors * lanes - 1)]


def test_caches_come_from_sysfs_with_fallbacks(tmp_path):
    for index, (level, kind, size) in enumerate([(1, "Data", "48K"), (1, "Instruction", "32K"),
                                                  (2, "Unified", "2048K")]):
        d = tmp_path / f"index{index}"
        d.mkdir()
        for name, value in (("level", level), ("type", kind), ("size", size)):
            (d / name).write_text(f"{value}\n")
    sizes = host.cache_sizes(str(tmp_path))
    assert sizes == {1: 48 << 10, 2: 2 << 20, 3: host.FALLBACK_CACHES[3]}
    assert host.cache_sizes(str(tmp_path / "absent")) == host.FALLBACK_CACHES
    # the L1 data cache's span: sets times line (a 32 KiB 8-way cache of 64-byte lines
    # has 64 sets, 4 KiB; one with 32 sets spans 2 KiB)
    assert host.l1d_span(str(tmp_path)) == host.FALLBACK_L1D_SPAN    # sysfs says nothing
    for name, value in (("number_of_sets", 32), ("coherency_line_size", 64)):
        (tmp_path / "index0" / name).write_text(f"{value}\n")
    assert host.l1d_span(str(tmp_path)) == 2048
    assert host.l1d_span(str(tmp_path / "absent")) == host.FALLBACK_L1D_SPAN


def test_the_isa_sizes_the_registers():
    caches = {1: 1, 2: 2, 3: 3}
    avx2 = host.for_features({"avx": True, "avx2": True, "fma": True}, caches)
    assert (avx2.isa, avx2.vector_bits, avx2.vector_registers, avx2.fma_units) == \
        ("avx2", 256, 16, 2)
    avx512 = host.for_features({"avx2": True, "avx512f": True, "fma": True}, caches)
    assert (avx512.vector_bits, avx512.vector_registers, avx512.tile_panel_bytes) == (512, 32, 1)
    assert host.for_features({}, caches).isa == "sse"


def test_the_environment_forces_a_host():
    native = host.for_features({"avx512f": True, "fma": True}, {1: 1, 2: 2, 3: 3})
    assert host.forced(native, {}) == native
    assert host.forced(native, {"LLGRAD_HOST": "AVX2"}).vector_registers == 16
    assert host.forced(native, {"LLGRAD_VECTOR_BITS": "256"}).isa == "avx2"
    assert host.forced(native, {"LLGRAD_VECTOR_BITS": "512"}).vector_registers == 32
    assert host.forced(native, {"LLGRAD_HOST": "sse"}).l2 == native.l2
    for bad in ({"LLGRAD_HOST": "neon"}, {"LLGRAD_VECTOR_BITS": "300"}):
        with pytest.raises(ValueError, match="LLGRAD_"):
            host.forced(native, bad)


def test_the_cache_key_changes_with_the_forced_host(monkeypatch):
    keys = set()
    for isa in ("avx2", "avx512"):
        monkeypatch.setenv("LLGRAD_HOST", isa)
        options = _options()
        assert (options.vector_bits, options.vector_registers) == host.ISAS[isa]
        keys.add(options.cache_key())
    assert len(keys) == 2


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("isa", ["avx2", "avx512"])
def test_every_tile_shape_of_a_forced_host_equals_numpy(monkeypatch, isa, dtype):
    monkeypatch.setenv("LLGRAD_HOST", isa)
    shapes = _shapes(isa, dtype)
    builder, params, outs, values = Builder(), [], [], []
    for M, N in shapes:
        a = RNG.standard_normal((M, K)).astype(dtype)
        b = RNG.standard_normal((K, N)).astype(dtype)
        x, y = (builder.parameter(index=len(params) + i, type=TensorType(v.shape, dtype),
                                  name=f"v{len(params) + i}") for i, v in enumerate((a, b)))
        params += [x, y]
        values += [a, b]
        outs.append(builder.dot_general(x, y, dims=(((1,), (0,)), ((), ()))))
    exe = compile_graph(Graph(params, outs), blas=False, threads=1)
    made = set(re.findall(r"llgrad\.tile\.%s\.(\d+)x([\d+]+)\." % dtype, exe.llvm_ir))
    lanes = host.ISAS[isa][0] // (8 * np.dtype(dtype).itemsize)
    for vectors in range(1, tiles.MAX_VECTORS + 1):
        for rows in range(1, _most_rows(isa, vectors) + 1):
            assert (str(rows), "+".join([str(lanes)] * vectors)) in made, (rows, vectors)
    _no_tile_spills(exe.llvm_ir, {"avx2": "haswell", "avx512": "skylake-avx512"}[isa])
    got = exe(*values)
    tol = {"float32": 1e-5, "float64": 1e-12}[dtype]
    for (M, N), out, a, b in zip(shapes, got, values[::2], values[1::2]):
        np.testing.assert_allclose(out, a.astype(np.float64) @ b, rtol=tol, atol=tol,
                                   err_msg=f"{isa} {dtype} {M}x{K}x{N}")


def _no_tile_spills(llvm_ir, cpu):
    """Compiled for ``cpu`` (an ISA's CPU), no tile function touches the stack in its
    loop: accumulators, B's vectors and the broadcast all stay in registers."""
    from llgrad.runtime import aot, engine
    tm = aot.target_machine(cpu)
    asm = tm.emit_assembly(engine.optimize(llvm_ir, tm=tm))
    names = re.findall(r"^(\"?llgrad\.tile\.[^:\s]+):", asm, re.M)
    assert names
    for name in names:
        body = asm.split(name + ":", 1)[1].split(".Lfunc_end", 1)[0]
        assert "(%rsp)" not in body, f"{name} spills when compiled for {cpu}"


def test_the_split_threshold_is_a_time_at_the_hosts_peak(monkeypatch):
    from llgrad.compiler.codegen import matmul
    cycles = matmul.PARALLEL_MIN_CYCLES
    for isa, dtype, lanes in (("avx512", "float32", 16), ("avx2", "float64", 4)):
        monkeypatch.setenv("LLGRAD_HOST", isa)
        options = _options()
        assert matmul._split_min_flops(options, dtype) == cycles * options.fma_units * lanes
