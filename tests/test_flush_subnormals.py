"""``fastmath=True`` runs the generated code with subnormal floats flushed to zero (FTZ
and DAZ in x86's MXCSR, as ``-ffast-math`` and XLA do), and only while it runs.

Oracles: numpy, whose results keep IEEE subnormals (what llgrad without fastmath must
give bit for bit, and what flushing turns into zeros); the thread's own MXCSR, read by
numpy's arithmetic after a call; and, for pool workers, the MXCSR each part of a split
call reads on the thread that ran it, next to that thread's id.
"""
import ctypes
import mmap
import os
import shutil
import threading

import numpy as np
import pytest
from llvmlite import ir

import llgrad
from llgrad.compiler.codegen import parallel
from llgrad.compiler.dispatch import fastcall
from llgrad.llvm import fp_env
from llgrad.llvm.atomics import relax
from llgrad.llvm.loops import counted_loop
from llgrad.llvm.scalar import I64, PTR, i64
from llgrad.runtime import cache, engine, pool

pytestmark = pytest.mark.skipif(not fp_env.available(),
                                reason="flushing subnormals sets x86's MXCSR: not an x86-64 CPU")

#: (dtype, a normal value, a factor whose product with it is subnormal in that dtype)
UNDERFLOWS = [(np.float64, 1e-10, 1e-300), (np.float32, 1e-20, 1e-20)]
#: a split call runs its parts on the pool's threads; this many calls give a worker
#: time to take part 1 at least once (the caller takes back a part no worker started)
CALLS = 200
#: how the IR of a split call names the pool
SPLIT = f'@"{pool.SYMBOL}"('


def multiply(x, y):
    return x * y


def scale_up(x):
    return x * 2.0 ** 60


def _subnormal(values) -> bool:
    values = np.asarray(values)
    tiny = np.finfo(values.dtype).tiny
    return bool(np.all((values != 0) & (np.abs(values) < tiny)))


def _underflowing(dtype, value, factor, n=8):
    x, y = np.full(n, value, dtype), np.full(n, factor, dtype)
    assert _subnormal(x * y)       # numpy keeps IEEE subnormals: the oracle is sound
    return x, y


@pytest.mark.parametrize("dtype,value,factor", UNDERFLOWS)
def test_without_fastmath_a_result_that_underflows_stays_subnormal(dtype, value, factor):
    x, y = _underflowing(dtype, value, factor)
    got = llgrad.jit(multiply)(x, y)
    np.testing.assert_array_equal(got, x * y)
    assert got.dtype == dtype and _subnormal(got)


@pytest.mark.parametrize("dtype,value,factor", UNDERFLOWS)
def test_with_fastmath_a_result_that_underflows_is_zero(dtype, value, factor):
    x, y = _underflowing(dtype, value, factor)
    got = llgrad.jit(multiply, fastmath=True)(x, y)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, np.zeros_like(x))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_with_fastmath_a_subnormal_input_reads_as_zero(dtype):
    x = np.full(8, np.finfo(dtype).smallest_subnormal * 3, dtype)
    want = x * dtype(2.0 ** 60)
    assert np.all(want >= np.finfo(dtype).tiny)   # a normal number, unless x read as 0
    np.testing.assert_array_equal(llgrad.jit(scale_up)(x), want)
    np.testing.assert_array_equal(llgrad.jit(scale_up, fastmath=True)(x), np.zeros_like(x))


def test_the_native_entry_of_a_hot_signature_flushes_too(monkeypatch):
    """Python floats through the native entry (``pyentry``), which calls the module's
    entry: the same flushing as the Python path."""
    monkeypatch.setattr(fastcall, "NATIVE_AFTER", 0)
    f = llgrad.jit(multiply, fastmath=True)
    plain = llgrad.jit(multiply)
    for _ in range(3):
        assert f(1e-10, 1e-300) == 0.0
        assert plain(1e-10, 1e-300) == 1e-10 * 1e-300 != 0.0
    assert type(f.func).__name__ == "builtin_function_or_method"   # the native entry ran


def test_the_callers_mxcsr_is_as_before_after_a_fastmath_call():
    x, y = _underflowing(np.float64, 1e-10, 1e-300)
    llgrad.jit(multiply, fastmath=True)(x, y)
    assert np.float64(1e-310) * 0.5 != 0.0             # FTZ off again in this thread
    assert np.float64(1e-310) * 2.0 ** 60 > 1e-300      # DAZ off again
    np.testing.assert_array_equal(llgrad.jit(multiply)(x, y), x * y)


def test_a_split_kernel_flushes_in_every_part_and_the_workers_keep_subnormals_after(
        monkeypatch):
    """An elementwise kernel big enough for the pool (``parallel.MIN_ELEMENTS``) at two
    threads: flushed in both halves under fastmath; a plain threaded call afterwards
    keeps every subnormal in both halves (the workers' MXCSR was restored)."""
    monkeypatch.setenv("LLGRAD_THREADS", "2")
    x, y = _underflowing(np.float64, 1e-10, 1e-300, n=2 * parallel.MIN_ELEMENTS)
    fast, plain = llgrad.jit(multiply, fastmath=True), llgrad.jit(multiply)
    for f in (fast, plain):
        assert SPLIT in f.trace(x, y).llvm_ir   # the kernel is split
    zeros = np.zeros_like(x)
    for _ in range(CALLS):
        np.testing.assert_array_equal(fast(x, y), zeros)
    for _ in range(CALLS):
        np.testing.assert_array_equal(plain(x, y), x * y)


def test_without_fastmath_the_code_never_touches_mxcsr(monkeypatch):
    monkeypatch.setenv("LLGRAD_THREADS", "2")
    x, y = _underflowing(np.float64, 1e-10, 1e-300, n=2 * parallel.MIN_ELEMENTS)
    text = llgrad.jit(multiply).trace(x, y).llvm_ir
    assert SPLIT in text
    assert "mxcsr" not in text and "denormal-fp-math" not in text


def test_with_fastmath_every_entry_and_pool_part_sets_mxcsr_and_tells_llvm(monkeypatch):
    monkeypatch.setenv("LLGRAD_THREADS", "2")
    x, y = _underflowing(np.float64, 1e-10, 1e-300, n=2 * parallel.MIN_ELEMENTS)
    text = llgrad.jit(multiply, fastmath=True).trace(x, y).llvm_ir
    functions = text.split("\ndefine ")[1:]
    entered = [f for f in functions if f.startswith('void @"llgrad_multiply"(')
               or '.part"(' in f.split("\n", 1)[0]]
    assert len(entered) == 2
    for f in entered:
        assert f.count('@"llvm.x86.sse.stmxcsr"(') == 1
        assert f.count('@"llvm.x86.sse.ldmxcsr"(') == 1 + f.count("\n  ret ")
    for f in functions:
        assert '"denormal-fp-math"="preserve-sign,preserve-sign"' in f.split("\n", 1)[0]


# -- the pool's threads, observed directly ---------------------------------------------

def _mxcsr_per_part(name: str, flushed: bool):
    """``void entry(i64 *cells)`` split in two parts, each writing (its thread's
    pthread_self, its MXCSR) into cells[2 * part:]; the module made as a fastmath one is
    when ``flushed``."""
    module = ir.Module(name)
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR]), "entry")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    self_id = ir.Function(module, ir.FunctionType(I64, []), "pthread_self")
    read = ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR]), "llvm.x86.sse.stmxcsr")

    def emit_part(pb, pointers, part):
        with counted_loop(pb, i64(1 << 12), "busy"):   # long enough for a worker to start
            relax(pb)
        at = pb.mul(part, i64(2))
        pb.store(pb.call(self_id, []), pb.gep(pointers[0], [at], source_etype=I64))
        cell = pb.gep(pointers[0], [pb.add(at, i64(1))], source_etype=I64)
        pb.store(i64(0), cell)
        pb.call(read, [cell])          # the low 32 bits of the cell (little-endian)

    parallel.run_parts(b, "entry.part", 2, [fn.args[0]], emit_part)
    b.ret_void()
    if flushed:
        fp_env.flush_subnormals(module, [fn, *parallel.tasks(module)])
    pool.install()
    text = str(module)
    compiled = engine.jit(text, cache.key("mxcsr-test", text, *engine.context()),
                          {"entry": "entry"})
    return compiled, ctypes.CFUNCTYPE(None, ctypes.c_void_p)(compiled.address)


def _worker_mxcsr(call, me: int):
    """The MXCSR part 1 saw on a pool worker, calling until a worker has run it."""
    cells = np.zeros(4, np.int64)
    for _ in range(20000):
        call(cells.ctypes.data)
        if cells[2] != me:
            return int(cells[3])
    raise AssertionError("no pool worker ever ran part 1")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (a pool of its own)")
def test_pool_workers_flush_only_inside_fastmath_parts():
    """In a forked child (a pool started afresh) whose first split call is a flushed
    one (its workers are created inside it, inheriting its MXCSR): a worker running a
    flushed part sees FTZ and DAZ set; one running a plain part afterwards sees them
    clear."""
    flushed = _mxcsr_per_part("mxcsr_flushed", True)
    plain = _mxcsr_per_part("mxcsr_plain", False)
    seen = np.frombuffer(mmap.mmap(-1, 16), np.int64)   # shared with the child
    seen[:] = -1
    pid = os.fork()
    if pid == 0:
        ok = False
        try:
            seen[0] = _worker_mxcsr(flushed[1], threading.get_ident())
            seen[1] = _worker_mxcsr(plain[1], threading.get_ident())
            ok = True
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "no pool worker ran part 1 in the child"
    assert seen[0] & fp_env.FLUSH_BITS == fp_env.FLUSH_BITS
    assert seen[1] & fp_env.FLUSH_BITS == 0


# -- an exported library ---------------------------------------------------------------

@pytest.mark.skipif(shutil.which("cc") is None or shutil.which("ar") is None,
                    reason="exporting links with a C compiler (cc) and ar, not found")
def test_an_exported_fastmath_library_flushes_in_its_c_entry(tmp_path):
    """Through the exported C function (threaded, so its pool's parts too); the
    caller's MXCSR is as before after it returns."""
    x, y = _underflowing(np.float64, 1e-10, 1e-300, n=2 * parallel.MIN_ELEMENTS)
    made = {fast: llgrad.export(llgrad.jit(multiply, fastmath=fast), x, y, path=tmp_path,
                                name=f"mul{int(fast)}", threads=2) for fast in (True, False)}
    fast, plain = (llgrad.load_library(made[k].shared) for k in (True, False))
    assert fast.cdll.mul1_init() == 0 and plain.cdll.mul0_init() == 0
    for _ in range(CALLS):
        np.testing.assert_array_equal(fast(x, y), np.zeros_like(x))
        np.testing.assert_array_equal(plain(x, y), x * y)
    assert np.float64(1e-310) * 0.5 != 0.0
    fast.cdll.mul1_shutdown()
    plain.cdll.mul0_shutdown()
