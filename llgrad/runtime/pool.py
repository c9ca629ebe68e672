"""A process-wide pool of worker threads for generated code: ``llgrad_parallel``.

Generated code that splits work calls ``llgrad_parallel(fn, ctx, parts)``, which runs
``fn(ctx, part)`` exactly once for every ``part`` in ``[0, parts)`` and returns when all
have run: part 0 on the calling thread, the others on workers that outlive the call.
A part no worker has started when the caller is done with part 0 runs on the
calling thread (whoever claims a part's generation first runs it), as do parts
beyond the workers, parts in increasing order, so a part may wait for what a
lower-numbered part publishes (a pipelined product does) without ever waiting for
itself, or for a part no thread has begun.

Why the caller takes parts back: on a machine with more runnable threads than cores
(other processes, OpenBLAS's threads) a worker may not get a core for milliseconds,
and a caller that waited for it turned 20-microsecond products into
10-millisecond ones; taking the part back costs at most the part's own time.
Starting a POSIX thread per call costs tens of microseconds, as much as the small
products and loops worth splitting take; a worker that is already running answers in
well under a microsecond.

Why workers spin, then sleep: between the products of one training step there are
microseconds, so a worker that has just finished polls its slot for ``SPIN`` pause
rounds (about a millisecond, see ``SPIN``) before it parks on a futex; parked workers
use no CPU, and the caller wakes only the ones that parked.  Why every part still
runs when the pool cannot help: a thread that cannot be started, or a second caller
while the pool is busy (another Python thread, or a part that splits work again),
runs its parts on the calling thread, one after the other.  Each part computes
the same thing wherever it runs, so results never depend on the pool.

Why a caller can send the workers to rest (``llgrad_pool_rest``): a module calls it
before a product it leaves to OpenBLAS on OpenBLAS's own threads.  A worker spinning
for its next part holds the core one of those threads needs, and the product waits
for whichever the scheduler runs last, slower than OpenBLAS on one thread (no script
isolates it: time float32 600x600 products at two threads, in a module that also
splits elementwise work, with and without the rest call).  Resting workers park at
once; the next ``llgrad_parallel`` call ends the rest and wakes them.

Why the pool also holds OpenBLAS to one thread (``llgrad_blas_hold`` and
``llgrad_blas_release``): a product split into single-threaded OpenBLAS calls on the
pool sets OpenBLAS's thread count to one around them and puts the old count back.
Two such products at once (two Python threads) each read and set the count, and the
one that read the other's "one" put back "one" for good: numpy's OpenBLAS stayed on
one thread.  The count is one process-wide setting, so the pool keeps one process-wide
tally of holders under a lock: the first holder saves the count and sets one, the last
puts the saved count back.

The pool is LLVM IR like every kernel: compiled once per process (or loaded from
the on-disk cache) and registered with ``llvm.add_symbol``, so generated object code
names it and is bound to it when loaded, never to an address.  After ``os.fork``
the child has no workers; an at-fork hook makes it start its own.
"""
from __future__ import annotations

import ctypes
import os
import platform
import threading

import llvmlite.binding as llvm
from llvmlite import ir

from llgrad.llvm.atomics import relax, store_atomic
from llgrad.llvm.fp_env import keep_subnormals
from llgrad.llvm.loops import counted_loop
from llgrad.runtime import cache, engine

SYMBOL = "llgrad_parallel"
#: ``void llgrad_pool_rest(void)``: spinning workers park now (see above)
REST_SYMBOL = "llgrad_pool_rest"
#: ``void llgrad_pool_reset(void)``: what a forked child runs (its parent's workers are gone)
RESET_SYMBOL = "llgrad_pool_reset"
#: ``void llgrad_blas_hold(int (*get)(void), void (*set)(int))`` and
#: ``void llgrad_blas_release(void (*set)(int))``: OpenBLAS held to one thread (above)
HOLD_SYMBOL, RELEASE_SYMBOL = "llgrad_blas_hold", "llgrad_blas_release"
#: workers at most (the caller is the 9th thread): split kernels use at most 8 parts
MAX_WORKERS = 7
#: pause rounds a worker polls before it sleeps: about a millisecond at x86's pause,
#: longer than the gaps between the kernels of a step, short enough that an idle
#: process soon stops using CPU.  Re-measure: the training workload at two threads with
#: this halved and doubled, ``python -m llgrad bench --threads 2 --workloads training
#: --systems "llgrad native"``; a pause's length varies by CPU (time a loop of them)
SPIN = 1 << 17
#: a polling worker yields its core every this many pause rounds: on an idle core that
#: returns at once (~1 us in ~50 us of polling); on a loaded one it lets a thread that
#: waits for the core run (a worker that kept polling held up its own caller)
YIELD_EVERY = 1 << 10
#: pause rounds the caller polls for a worker running its part before it yields its
#: core each round (the worker lost its core: only yielding gives it one back on a
#: loaded machine); tens of microseconds at x86's pause
YIELD_AFTER = 1 << 10

_I32, _I64, _PTR = ir.IntType(32), ir.IntType(64), ir.PointerType()
# one slot per worker, 128 bytes (two cache lines): what the caller writes (the
# generation number, then the task) on the first line, what the worker writes on
# the second, so polling one never steals the other's line
_SLOT = 16
_GEN, _FN, _CTX, _PART, _CLAIM = 0, 1, 2, 3, 4
_DONE, _SLEEPING = 8, 9
_FUTEX_WAIT, _FUTEX_WAKE = 128, 129          # the _PRIVATE variants
_SYS_FUTEX = {"x86_64": 202, "amd64": 202, "aarch64": 98, "arm64": 98}

_SUFFIX = ".runtime"
_state: dict = {}
_lock = threading.Lock()


def _c(value, typ=_I64):
    return ir.Constant(typ, value)


class _Emitter:
    """The pool's IR: globals, the worker loop, the caller, the fork reset."""

    def __init__(self):
        self.module = m = ir.Module("llgrad.pool")
        self.lock = self._global("llgrad.pool.lock", _I32)
        self.started = self._global("llgrad.pool.started", _I64)
        self.rest = self._global("llgrad.pool.rest", _I64)
        self.blas_lock = self._global("llgrad.blas.lock", _I32)
        self.blas_holders = self._global("llgrad.blas.holders", _I64)
        self.blas_saved = self._global("llgrad.blas.saved", _I32)
        self.slots = self._global("llgrad.pool.slots",
                                  ir.ArrayType(_I64, MAX_WORKERS * _SLOT), align=128)
        self.task_type = ir.FunctionType(ir.VoidType(), [_PTR, _I64])   # fn(ctx, part)
        self.syscall = ir.Function(m, ir.FunctionType(_I64, [_I64], var_arg=True), "syscall")
        self.sched_yield = ir.Function(m, ir.FunctionType(_I32, []), "sched_yield")
        self.create = ir.Function(m, ir.FunctionType(_I32, [_PTR, _PTR, _PTR, _PTR]),
                                  "pthread_create")
        self.detach = ir.Function(m, ir.FunctionType(_I32, [_I64]), "pthread_detach")
        self.futex = _SYS_FUTEX.get(platform.machine().lower())
        self.worker = self._worker()
        self._caller()
        self._rest()
        self._reset()
        self._blas_holding()

    def _global(self, name, typ, align=8):
        g = ir.GlobalVariable(self.module, typ, name)
        g.initializer = ir.Constant(typ, None)
        g.linkage = "internal"
        g.align = align
        return g

    # -- small pieces -------------------------------------------------------------------
    def field(self, b, slot, index):
        return b.gep(slot, [_c(index)], inbounds=True, source_etype=_I64)

    def slot(self, b, k):
        return b.gep(self.slots, [_c(0), b.mul(k, _c(_SLOT))], inbounds=True)

    def futex_call(self, b, slot, op, value):
        if self.futex is None:        # no futex here: parked workers poll, yielding
            b.call(self.sched_yield, [])
            return
        b.call(self.syscall, [_c(self.futex), self.field(b, slot, _GEN), _c(op), value,
                              _c(None, _PTR), _c(None, _PTR), _c(0)])

    def runs(self, b, fn, ctx, lo, hi):
        """fn(ctx, part) for part in [lo, hi), here."""
        with counted_loop(b, b.sub(hi, lo), "here") as k:
            b.call(fn, [ctx, b.add(lo, k)])

    # -- the worker ---------------------------------------------------------------------
    def _worker(self):
        """Poll the slot's generation; a new one means a task: run it, publish DONE."""
        fn = ir.Function(self.module, ir.FunctionType(_PTR, [_PTR]), "llgrad.pool.worker")
        fn.linkage = "internal"
        slot = fn.args[0]
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        keep_subnormals(b)   # a fastmath task flushes them itself, for its own run
        first_seen = b.load_atomic(self.field(b, slot, _DONE), "acquire", 8, typ=_I64)
        entry = b.block
        poll, idle, sleep, wait, woke, claim, run, taken = (fn.append_basic_block(n) for n in (
            "poll", "idle", "sleep", "wait", "woke", "claim", "run", "taken"))
        b.branch(poll)

        b.position_at_end(poll)
        seen, spins = b.phi(_I64, "seen"), b.phi(_I64, "spins")
        seen.add_incoming(first_seen, entry)
        spins.add_incoming(_c(0), entry)
        gen = b.load_atomic(self.field(b, slot, _GEN), "acquire", 8, typ=_I64)
        b.cbranch(b.icmp_unsigned("!=", gen, seen), claim, idle)

        b.position_at_end(idle)
        relax(b)
        more = b.add(spins, _c(1))
        # another thread waiting for this core (the caller, on a loaded machine) gets it
        with b.if_then(b.icmp_unsigned("==", b.and_(more, _c(YIELD_EVERY - 1)), _c(0))):
            b.call(self.sched_yield, [])
        seen.add_incoming(seen, b.block)
        spins.add_incoming(more, b.block)
        resting = b.load_atomic(self.rest, "monotonic", 8, typ=_I64)
        b.cbranch(b.and_(b.icmp_unsigned("<", more, _c(SPIN)),
                         b.icmp_unsigned("==", resting, _c(0))), poll, sleep)

        # park: announce it, then look once more (the caller looks at SLEEPING after
        # publishing, both seq_cst, so one of the two sees the other), then wait
        # while the generation's low word is still the one seen
        b.position_at_end(sleep)
        store_atomic(b, _c(1), self.field(b, slot, _SLEEPING), "seq_cst", 8)
        again = b.load_atomic(self.field(b, slot, _GEN), "seq_cst", 8, typ=_I64)
        b.cbranch(b.icmp_unsigned("==", again, seen), wait, woke)
        b.position_at_end(wait)
        self.futex_call(b, slot, _FUTEX_WAIT, b.zext(b.trunc(seen, _I32), _I64))
        b.branch(woke)
        b.position_at_end(woke)
        store_atomic(b, _c(0), self.field(b, slot, _SLEEPING), "seq_cst", 8)
        seen.add_incoming(seen, woke)
        spins.add_incoming(_c(0), woke)
        b.branch(poll)

        # a task is run by whoever claims its generation first: this worker, or the
        # caller, which takes back a part no worker has started (see ``_join``)
        b.position_at_end(claim)
        won = b.cmpxchg(self.field(b, slot, _CLAIM), b.sub(gen, _c(1)), gen,
                        "acq_rel", "monotonic")
        b.cbranch(b.extract_value(won, 1), run, taken)
        b.position_at_end(taken)
        seen.add_incoming(gen, taken)
        spins.add_incoming(_c(0), taken)
        b.branch(poll)

        b.position_at_end(run)
        # typed as a pointer to the task's function type, so llvmlite emits an
        # indirect call (it prints as a plain ``ptr``)
        task = b.load(self.field(b, slot, _FN), typ=ir.PointerType(self.task_type))
        b.call(task, [b.load(self.field(b, slot, _CTX), typ=_PTR),
                      b.load(self.field(b, slot, _PART), typ=_I64)])
        store_atomic(b, gen, self.field(b, slot, _DONE), "release", 8)
        seen.add_incoming(gen, run)
        spins.add_incoming(_c(0), run)
        b.branch(poll)
        return fn

    # -- the caller ---------------------------------------------------------------------
    def _caller(self):
        fn = ir.Function(self.module, ir.FunctionType(
            ir.VoidType(), [ir.PointerType(self.task_type), _PTR, _I64]), SYMBOL)
        task, ctx, parts = fn.args
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        tid = b.alloca(_I64)
        serial, lock, locked = (fn.append_basic_block(n) for n in ("alone", "lock", "locked"))
        b.cbranch(b.icmp_signed(">", parts, _c(1)), lock, serial)
        b.position_at_end(lock)
        taken = b.cmpxchg(self.lock, _c(0, _I32), _c(1, _I32), "acquire", "monotonic")
        b.cbranch(b.extract_value(taken, 1), locked, serial)

        b.position_at_end(serial)
        self.runs(b, task, ctx, _c(0), parts)
        b.ret_void()

        # start the workers this call wants and the pool lacks (under the lock)
        b.position_at_end(locked)
        want = b.select(b.icmp_signed("<", parts, _c(MAX_WORKERS + 1)),
                        b.sub(parts, _c(1)), _c(MAX_WORKERS))
        start_head, start, started_one, go = (fn.append_basic_block(n) for n in (
            "start.head", "start", "start.ok", "go"))
        b.branch(start_head)
        b.position_at_end(start_head)
        have = b.load(self.started, typ=_I64)
        b.cbranch(b.icmp_signed("<", have, want), start, go)
        b.position_at_end(start)
        slot = self.slot(b, have)
        # the new worker takes DONE as the generation it has seen
        store_atomic(b, b.load(self.field(b, slot, _GEN), typ=_I64),
                       self.field(b, slot, _DONE), "release", 8)
        rc = b.call(self.create, [tid, _c(None, _PTR), self.worker, slot])
        b.cbranch(b.icmp_signed("==", rc, _c(0, _I32)), started_one, go)
        b.position_at_end(started_one)
        b.call(self.detach, [b.load(tid, typ=_I64)])
        b.store(b.add(have, _c(1)), self.started)
        b.branch(start_head)

        b.position_at_end(go)
        resting = b.load_atomic(self.rest, "monotonic", 8, typ=_I64)
        with b.if_then(b.icmp_unsigned("!=", resting, _c(0)), likely=False):
            store_atomic(b, _c(0), self.rest, "monotonic", 8)   # ends the rest
        have = b.load(self.started, typ=_I64)
        workers = b.select(b.icmp_signed("<", have, want), have, want)
        with counted_loop(b, workers, "publish") as k:
            slot = self.slot(b, k)
            b.store(b.ptrtoint(task, _I64), self.field(b, slot, _FN))
            b.store(b.ptrtoint(ctx, _I64), self.field(b, slot, _CTX))
            b.store(b.add(k, _c(1)), self.field(b, slot, _PART))
            gen = b.add(b.load(self.field(b, slot, _GEN), typ=_I64), _c(1))
            store_atomic(b, gen, self.field(b, slot, _GEN), "seq_cst", 8)
            parked = b.load_atomic(self.field(b, slot, _SLEEPING), "seq_cst", 8, typ=_I64)
            with b.if_then(b.icmp_unsigned("!=", parked, _c(0)), likely=False):
                self.futex_call(b, slot, _FUTEX_WAKE, _c(1))
        b.call(task, [ctx, _c(0)])
        with counted_loop(b, workers, "join") as k:
            self._join(b, fn, self.slot(b, k), task, ctx, b.add(k, _c(1)))
        self.runs(b, task, ctx, b.add(workers, _c(1)), parts)   # parts no worker had
        store_atomic(b, _c(0, _I32), self.lock, "release", 4)
        b.ret_void()

    def _join(self, b, fn, slot, task, ctx, part):
        """Run ``part`` here if the worker of ``slot`` has not claimed it yet (it is
        parked, waking, or has no core: on a loaded machine waiting for it took
        milliseconds), else poll until it has published DONE; after YIELD_AFTER
        rounds (it lost its core), yield this one each round."""
        head, wait, done, steal = (fn.append_basic_block(n) for n in (
            "join.head", "join.wait", "join.done", "join.steal"))
        gen = b.load(self.field(b, slot, _GEN), typ=_I64)
        won = b.cmpxchg(self.field(b, slot, _CLAIM), b.sub(gen, _c(1)), gen,
                        "acq_rel", "monotonic")
        pre = b.block
        b.cbranch(b.extract_value(won, 1), steal, head)
        b.position_at_end(steal)
        b.call(task, [ctx, part])
        b.branch(done)
        b.position_at_end(head)
        rounds = b.phi(_I64)
        rounds.add_incoming(_c(0), pre)
        finished = b.load_atomic(self.field(b, slot, _DONE), "acquire", 8, typ=_I64)
        b.cbranch(b.icmp_unsigned("==", finished, gen), done, wait)
        b.position_at_end(wait)
        relax(b)
        with b.if_then(b.icmp_unsigned(">", rounds, _c(YIELD_AFTER)), likely=False):
            b.call(self.sched_yield, [])
        rounds.add_incoming(b.add(rounds, _c(1)), b.block)
        b.branch(head)
        b.position_at_end(done)

    def _rest(self):
        fn = ir.Function(self.module, ir.FunctionType(ir.VoidType(), []), REST_SYMBOL)
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        store_atomic(b, _c(1), self.rest, "monotonic", 8)
        b.ret_void()

    def _reset(self):
        """What a forked child runs: its parent's workers do not exist in it."""
        fn = ir.Function(self.module, ir.FunctionType(ir.VoidType(), []), RESET_SYMBOL)
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        b.store(_c(0), self.started)
        b.store(_c(0, _I32), self.lock)
        b.store(_c(0, _I32), self.blas_lock)    # no holder of the parent's runs here
        b.store(_c(0), self.blas_holders)
        b.ret_void()

    def _blas_holding(self):
        """``llgrad_blas_hold`` and ``llgrad_blas_release``: the tally of holders of
        OpenBLAS's thread count, under a spin lock (held for two calls at most)."""
        get_type = ir.FunctionType(_I32, [])
        set_type = ir.FunctionType(ir.VoidType(), [_I32])
        get_ptr, set_ptr = ir.PointerType(get_type), ir.PointerType(set_type)
        hold = ir.Function(self.module, ir.FunctionType(ir.VoidType(), [get_ptr, set_ptr]),
                           HOLD_SYMBOL)
        b = ir.IRBuilder(hold.append_basic_block("entry"))
        self._blas_lock(b)
        holders = b.load(self.blas_holders, typ=_I64)
        with b.if_then(b.icmp_signed("==", holders, _c(0))):
            b.store(b.call(hold.args[0], []), self.blas_saved)
            b.call(hold.args[1], [_c(1, _I32)])
        b.store(b.add(holders, _c(1)), self.blas_holders)
        store_atomic(b, _c(0, _I32), self.blas_lock, "release", 4)
        b.ret_void()
        release = ir.Function(self.module, ir.FunctionType(ir.VoidType(), [set_ptr]),
                              RELEASE_SYMBOL)
        b = ir.IRBuilder(release.append_basic_block("entry"))
        self._blas_lock(b)
        holders = b.sub(b.load(self.blas_holders, typ=_I64), _c(1))
        b.store(holders, self.blas_holders)
        with b.if_then(b.icmp_signed("==", holders, _c(0))):
            b.call(release.args[0], [b.load(self.blas_saved, typ=_I32)])
        store_atomic(b, _c(0, _I32), self.blas_lock, "release", 4)
        b.ret_void()

    def _blas_lock(self, b):
        head, wait, done = (b.append_basic_block(n) for n in ("lock", "lock.wait", "locked"))
        b.branch(head)
        b.position_at_end(head)
        taken = b.cmpxchg(self.blas_lock, _c(0, _I32), _c(1, _I32), "acquire", "monotonic")
        b.cbranch(b.extract_value(taken, 1), done, wait)
        b.position_at_end(wait)
        relax(b)
        b.branch(head)
        b.position_at_end(done)


def module_ir() -> str:
    """The pool's LLVM IR (what ``install`` compiles; ``llgrad.export`` links it into a
    library built for several threads)."""
    return str(_Emitter().module)


def install() -> None:
    """Compile (or load) the pool once per process and register ``llgrad_parallel``,
    ``llgrad_pool_rest`` and the BLAS holders."""
    if "compiled" in _state:
        return
    with _lock:
        if "compiled" in _state:
            return
        text = module_ir()
        key = cache.key("llgrad.pool", text, *engine.context())
        # speed level 0: the pool is atomics and polling loops, nothing the optimiser
        # improves, and level 3 compiles it more slowly (re-measure: time ``install()``
        # in a fresh process under ``LLGRAD_NO_CACHE=1`` at each level)
        compiled = (engine.load(key, _SUFFIX)
                    or engine.jit(text, key, {"entry": SYMBOL}, speed_level=0, suffix=_SUFFIX))
        # never freed, not even at interpreter exit: a parked worker still runs its code
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(compiled))
        llvm.add_symbol(SYMBOL, compiled.address)
        for symbol in (REST_SYMBOL, HOLD_SYMBOL, RELEASE_SYMBOL):
            llvm.add_symbol(symbol, compiled.address_of(symbol))
        reset = ctypes.CFUNCTYPE(None)(compiled.address_of(RESET_SYMBOL))
        os.register_at_fork(after_in_child=reset)
        _state["compiled"], _state["reset"] = compiled, reset
