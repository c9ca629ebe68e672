"""The worker pool behind split work runs every part exactly once, from any caller."""
import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from llvmlite import ir

from llgrad.compiler.codegen import parallel
from llgrad.llvm.atomics import relax
from llgrad.llvm.loops import counted_loop
from llgrad.llvm.scalar import I64, PTR, i64
from llgrad.runtime import cache, engine, pool

CELLS = 16


def _counting_entry(parts: int):
    """``void entry(i64* counts)``: every part adds 1 to counts[part], atomically (a
    part run twice, or on two threads at once, shows up as a count)."""
    module = ir.Module(f"pool_test_{parts}")
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR]), "entry")
    b = ir.IRBuilder(fn.append_basic_block("entry"))

    def emit_part(pb, pointers, part):
        cell = pb.gep(pointers[0], [pb.urem(part, i64(CELLS))], inbounds=True,
                      source_etype=I64)
        pb.atomic_rmw("add", cell, i64(1), "monotonic")

    parallel.run_parts(b, "entry.part", parts, [fn.args[0]], emit_part)
    b.ret_void()
    pool.install()
    text = str(module)
    compiled = engine.jit(text, cache.key("pool-test", text, *engine.context()),
                          {"entry": "entry"})
    call = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(compiled.address)
    return compiled, call


def _expected(parts, calls):
    want = np.zeros(CELLS, np.int64)
    for part in range(parts):
        want[part % CELLS] += calls
    return want


@pytest.mark.parametrize("parts", [1, 2, 3, pool.MAX_WORKERS + 1, 12])
def test_every_part_runs_exactly_once(parts):
    compiled, call = _counting_entry(parts)
    counts = np.zeros(CELLS, np.int64)
    for _ in range(500):
        call(counts.ctypes.data)
    np.testing.assert_array_equal(counts, _expected(parts, 500))


def test_callers_on_several_threads_each_get_all_their_parts():
    """A second caller while the pool is busy runs its parts itself; none is lost."""
    compiled, call = _counting_entry(3)
    counts = [np.zeros(CELLS, np.int64) for _ in range(4)]

    def work(k):
        for _ in range(300):
            call(counts[k].ctypes.data)    # ctypes releases the GIL: calls overlap

    with ThreadPoolExecutor(4) as callers:
        list(callers.map(work, range(4)))
    for c in counts:
        np.testing.assert_array_equal(c, _expected(3, 300))


def test_workers_that_parked_are_woken():
    """Long enough between calls for every worker to give up polling and sleep."""
    compiled, call = _counting_entry(2)
    counts = np.zeros(CELLS, np.int64)
    for _ in range(5):
        call(counts.ctypes.data)
        threading.Event().wait(0.02)
    np.testing.assert_array_equal(counts, _expected(2, 5))


def test_parts_run_on_worker_threads():
    """Parts 1.. run on threads other than the caller's, each on its own (after a
    one-part call, which must not keep the pool to itself).  The caller runs a part
    itself when its worker has not started it by the time part 0 is done (a worker
    just started or woken can be slower than part 0), so it calls until they have."""
    module = ir.Module("pool_threads")
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR]), "entry")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    self_id = ir.Function(module, ir.FunctionType(I64, []), "pthread_self")

    def emit_part(pb, pointers, part):
        with counted_loop(pb, i64(1 << 12), "busy"):   # long enough for a worker to start
            relax(pb)
        pb.store(pb.call(self_id, []), pb.gep(pointers[0], [part], source_etype=I64))

    parallel.run_parts(b, "entry.part", 3, [fn.args[0]], emit_part)
    b.ret_void()
    _, one = _counting_entry(1)
    one(np.zeros(CELLS, np.int64).ctypes.data)
    text = str(module)
    compiled = engine.jit(text, cache.key("pool-test", text, *engine.context()),
                          {"entry": "entry"})
    ids = np.zeros(3, np.int64)
    seen = set()
    for _ in range(2000):
        ctypes.CFUNCTYPE(None, ctypes.c_void_p)(compiled.address)(ids.ctypes.data)
        assert ids[0] == threading.get_ident()     # CPython's ident is pthread_self()
        seen.update(ids[1:].tolist())
        if len(set(ids.tolist())) == 3:
            break
    assert len(set(ids.tolist())) == 3
    assert len(seen - {threading.get_ident()}) == 2    # never more workers than parts


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_starts_its_own_workers():
    compiled, call = _counting_entry(2)
    counts = np.zeros(CELLS, np.int64)
    call(counts.ctypes.data)                  # the parent's workers exist now
    pid = os.fork()
    if pid == 0:                              # the child: none of them does
        ok = False
        try:
            child = np.zeros(CELLS, np.int64)
            for _ in range(100):
                call(child.ctypes.data)
            ok = bool((child == _expected(2, 100)).all())
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def _running_threads_but_this_one():
    """Thread ids of this process in state R (running or runnable), the caller's apart."""
    me, found = threading.get_native_id(), []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:               # a thread that has just ended
            continue
        if state == "R" and int(task) != me:
            found.append(int(task))
    return found


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads thread states in /proc")
def test_resting_workers_park_at_once_and_the_next_call_wakes_them():
    """A worker polls for ``SPIN`` pause rounds (~1 ms) after each part before it parks;
    ``llgrad_pool_rest`` (what a module calls before a product OpenBLAS threads) parks
    it within microseconds, and the next call still runs every part."""
    import time
    compiled, call = _counting_entry(2)
    rest = ctypes.CFUNCTYPE(None)(pool._state["compiled"].address_of(pool.REST_SYMBOL))
    counts = np.zeros(CELLS, np.int64)
    parked_at_once = spinning_after_a_call = False
    # a busy machine may deschedule anything, often: several rounds, and this thread
    # yields while it polls, so that a worker waiting for a core can have this one
    rounds = 20
    for _ in range(rounds):
        call(counts.ctypes.data)      # wakes the worker, which may start after it returns
        deadline = time.perf_counter() + 2e-3
        while not _running_threads_but_this_one() and time.perf_counter() < deadline:
            os.sched_yield()
        spinning_after_a_call |= bool(_running_threads_but_this_one())
        call(counts.ctypes.data)
        rest()
        deadline = time.perf_counter() + 2e-4
        while _running_threads_but_this_one() and time.perf_counter() < deadline:
            os.sched_yield()
        parked_at_once |= not _running_threads_but_this_one()
    call(counts.ctypes.data)
    np.testing.assert_array_equal(counts, _expected(2, 2 * rounds + 1))
    assert spinning_after_a_call      # what rest ends: a worker polling for its next part
    assert parked_at_once
