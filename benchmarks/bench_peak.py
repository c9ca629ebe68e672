"""This machine's multiply-add peak and read bandwidth, measured, and what they bound: the
least time the matrix products of workloads 3 and 4, and the matrix reads of workload 7,
can take here, however they are computed.

    python benchmarks/bench_peak.py [--threads 1,2]

The peak is a loop of independent vector FMAs (``llvm.fma`` on as many lanes as the host's
widest vectors hold, ACCUMULATORS chains so that no FMA waits for the one before), compiled
by LLVM for the host CPU and run on each thread at once: no loads, no stores, only the
arithmetic units.  A product of M x K by K x N is 2·M·K·N flop, so a run of products can
not take less than its flops over this peak; the issue's ratios against peers are read
against that floor (a target that needs more than the peak cannot be met by any code).

The read bandwidth is a STREAM-like sum (``read_loop``: READ_ACCUMULATORS vector adds of
float64 loaded in order, each thread over its own slice) over an array LLC_MULTIPLE
times the last-level cache: a workload that must read B bytes takes at least B over it.
Where the workload's data fits a large last-level cache, its floor is also given at the
bandwidth measured over an array of its own size.
"""
import argparse
import ctypes
import functools
import statistics
import sys
import threading
import time
from pathlib import Path

import llvmlite.binding as llvm
from llvmlite import ir

if __package__ in (None, ""):  # run as a script: make the checkout's `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import workloads  # noqa: E402

ACCUMULATORS = 12        # > FMA latency (4 cycles) x 2 pipes on every x86-64 core since Haswell
ITERATIONS = 20_000_000
SCALE, SHIFT = 0.999999, 1e-7   # each chain: x <- x * SCALE + SHIFT


def product_flops(quick: bool = False) -> dict:
    """{workload key: flop}: the first layer's two products (x @ w1 and x^T @ dh,
    2·batch·in·hidden flop each) of one step of workload 3 and of workloads 4's and 9's
    whole runs (their first sizes); the output layer's small products are left out, so
    that the floor they give is a true lower bound (workload 9 also reads its rows from
    memory, 40 MB, which at the bandwidth takes a tenth of the products' time)."""
    return {key: (p.steps or 1) * 2 * 2 * p.batch * p.params["w1"].size
            for key, p in (("mlp_step", workloads.mlp_step_problems(quick)[0]),
                           ("training", workloads.training_problems(quick)[0]),
                           ("streaming", workloads.streaming_problems(quick)[0]))}


def _vector_bits() -> int:
    """The widest vectors of the CPU llgrad compiles for (``LLGRAD_CPU`` may name another
    than this one: run.py --cpu)."""
    from llgrad.runtime import engine
    features = engine.host_features()
    return 512 if features.get("avx512f") else 256 if features.get("avx") else 128


def _compiled(module):
    """``module`` compiled by MCJIT for the CPU llgrad compiles for; holding the engine
    keeps its code alive."""
    from llgrad.runtime import engine
    compiled = llvm.create_mcjit_compiler(llvm.parse_assembly(str(module)),
                                          engine.new_target_machine())
    compiled.finalize_object()
    return compiled


@functools.cache
def fma_loop():
    """A native ``f(n)`` running n rounds of ACCUMULATORS float32 vector FMAs (the
    workloads' dtype); returns (f, flop per round).  The sum of the chains is returned so
    that LLVM cannot drop them.  Compiled once per process: every thread count runs it."""
    vector_bits = _vector_bits()
    element = ir.FloatType()
    lanes = vector_bits // 32
    vector = ir.VectorType(element, lanes)
    module = ir.Module("peak")
    fma = ir.Function(module, ir.FunctionType(vector, [vector] * 3), f"llvm.fma.v{lanes}f32")
    fn = ir.Function(module, ir.FunctionType(element, [ir.IntType(64)]), "peak")
    entry, loop, done = (fn.append_basic_block(n) for n in ("entry", "loop", "done"))
    b = ir.IRBuilder(entry)
    b.branch(loop)
    b.position_at_end(loop)
    i = b.phi(ir.IntType(64))
    chains = [b.phi(vector) for _ in range(ACCUMULATORS)]
    scale = ir.Constant(vector, [SCALE] * lanes)
    shift = ir.Constant(vector, [SHIFT] * lanes)
    nexts = [b.call(fma, [c, scale, shift]) for c in chains]
    i_next = b.add(i, ir.Constant(ir.IntType(64), 1))
    b.cbranch(b.icmp_unsigned("<", i_next, fn.args[0]), loop, done)
    i.add_incoming(ir.Constant(ir.IntType(64), 0), entry)
    i.add_incoming(i_next, loop)
    for k, (chain, nxt) in enumerate(zip(chains, nexts)):
        chain.add_incoming(ir.Constant(vector, [1.0 + k] * lanes), entry)
        chain.add_incoming(nxt, loop)
    b.position_at_end(done)
    total = nexts[0]
    for nxt in nexts[1:]:
        total = b.fadd(total, nxt)
    b.ret(b.extract_element(total, ir.Constant(ir.IntType(32), 0)))
    engine = _compiled(module)
    f = ctypes.CFUNCTYPE(ctypes.c_float, ctypes.c_int64)(engine.get_function_address("peak"))
    f._engine = engine     # the code lives as long as the engine
    return f, ACCUMULATORS * lanes * 2


def peak_gflops(f, flop_per_round, threads: int, repeats: int = 5,
                iterations: int = ITERATIONS) -> float:
    """The best of ``repeats`` runs of ``f`` on ``threads`` threads at once (ctypes lets
    go of the GIL during the call)."""
    best = _fastest(f, [(iterations,)] * threads, repeats)
    return threads * iterations * flop_per_round / best / 1e9


def _fastest(f, arguments, repeats: int) -> float:
    """Seconds of the fastest of ``repeats`` runs of ``f`` on one thread per argument
    tuple of ``arguments``, all at once: the first on the calling thread, so that a
    short run does not count a thread's start (a 2.5 ms run on one started thread
    gave 15% below the peak of long ones)."""
    best = float("inf")
    for _ in range(repeats):
        workers = [threading.Thread(target=f, args=args) for args in arguments[1:]]
        start = time.perf_counter()
        for w in workers:
            w.start()
        f(*arguments[0])
        for w in workers:
            w.join()
        best = min(best, time.perf_counter() - start)
    return best


def measure(threads: int, quick: bool = False) -> float:
    """The peak in Gflop/s on ``threads`` threads: the best of three bests (``quick``:
    one best of short runs, for tests).  The best, not a middle value: a peak is what
    the units do at their fastest, and on a shared machine a slow spell during the
    measurement put a floor under workload 3 that its own median beat (0.84x, one
    thread, 2026-12-07)."""
    f, flop = fma_loop()
    if quick:
        return peak_gflops(f, flop, threads, repeats=2, iterations=ITERATIONS // 10)
    return max(peak_gflops(f, flop, threads) for _ in range(3))


def peak_sampler(threads: int, iterations: int = ITERATIONS // 8):
    """(sample, flop): ``sample()`` runs the FMA loop once on ``threads`` threads at
    once (~6 ms) and returns its seconds, for ``flop`` flop.  The suite takes samples
    between the calls of a bounded workload (``measure.time_round_robin``): on a shared
    machine whose speed swings 2x within minutes, and whose second core is at times
    slowed alone, the floor at the speed the machine gave those calls says more than
    its fastest moment.  One run, not the fastest of several: the calls beside it get
    no second try either."""
    f, flop = fma_loop()
    return (lambda: _fastest(f, [(iterations,)] * threads, repeats=1)), threads * iterations * flop


# -- read bandwidth ------------------------------------------------------------------------

#: the bandwidth array is this many times the last-level cache (capped by MAX_STREAM_BYTES)
LLC_MULTIPLE = 4
MAX_STREAM_BYTES = 1 << 30
READ_ACCUMULATORS = 8     # vector sums in flight, so that no add waits for the one before


def llc_bytes() -> int:
    """The largest cache of cpu0 in sysfs (32 MiB where Linux does not say)."""
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    largest = 0
    for index in base.glob("index*"):
        try:
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        scale = {"K": 1 << 10, "M": 1 << 20}.get(size[-1:], 1)
        largest = max(largest, int(size.rstrip("KM")) * scale)
    return largest or 32 << 20


def stream_bytes() -> int:
    """Bytes read per measurement: well beyond the last-level cache."""
    return min(LLC_MULTIPLE * llc_bytes(), MAX_STREAM_BYTES)


@functools.cache
def read_loop():
    """A native ``double f(ptr, n)``: the sum of n float64 (n a multiple of READ_ACCUMULATORS
    vectors), READ_ACCUMULATORS vector sums in flight; it reads memory and adds, nothing
    else, so it runs at the read bandwidth.  Returns (f, float64 per round)."""
    lanes = _vector_bits() // 64
    vector, i64 = ir.VectorType(ir.DoubleType(), lanes), ir.IntType(64)
    module = ir.Module("stream")
    fn = ir.Function(module, ir.FunctionType(ir.DoubleType(), [ir.PointerType(), i64]), "stream")
    entry, loop, done = (fn.append_basic_block(n) for n in ("entry", "loop", "done"))
    b = ir.IRBuilder(entry)
    b.branch(loop)
    b.position_at_end(loop)
    i = b.phi(i64)
    sums = [b.phi(vector) for _ in range(READ_ACCUMULATORS)]
    step = READ_ACCUMULATORS * lanes
    nexts = [b.fadd(s, b.load(b.gep(fn.args[0], [b.add(i, ir.Constant(i64, k * lanes))],
                                    source_etype=ir.DoubleType()), typ=vector, align=8))
             for k, s in enumerate(sums)]
    i_next = b.add(i, ir.Constant(i64, step))
    b.cbranch(b.icmp_unsigned("<", i_next, fn.args[1]), loop, done)
    i.add_incoming(ir.Constant(i64, 0), entry)
    i.add_incoming(i_next, loop)
    for s, nxt in zip(sums, nexts):
        s.add_incoming(ir.Constant(vector, [0.0] * lanes), entry)
        s.add_incoming(nxt, loop)
    b.position_at_end(done)
    total = nexts[0]
    for nxt in nexts[1:]:
        total = b.fadd(total, nxt)
    lane_sum = b.extract_element(total, ir.Constant(ir.IntType(32), 0))
    for lane in range(1, lanes):   # every lane, so that no load can be narrowed away
        lane_sum = b.fadd(lane_sum, b.extract_element(total, ir.Constant(ir.IntType(32), lane)))
    b.ret(lane_sum)
    engine = _compiled(module)
    f = ctypes.CFUNCTYPE(ctypes.c_double, ctypes.c_void_p, ctypes.c_int64)(
        engine.get_function_address("stream"))
    f._engine = engine
    return f, step


def read_gbps(threads: int, nbytes: int, repeats: int = 5) -> float:
    """Read bandwidth in GB/s: ``threads`` threads at once each summing its own slice of
    one array of ``nbytes`` (best of ``repeats``, after one pass that maps the pages)."""
    import numpy as np
    f, step = read_loop()
    per_thread = max(step, nbytes // 8 // threads // step * step)
    data = np.ones(per_thread * threads)
    address = data.ctypes.data
    slices = [(address + t * per_thread * 8, per_thread) for t in range(threads)]
    return data.nbytes / _fastest(f, slices, repeats + 1) / 1e9


def measure_bandwidth(threads: int, quick: bool = False, nbytes: int | None = None) -> float:
    """Read bandwidth on ``threads`` threads over ``nbytes`` (default ``stream_bytes``):
    the median of three bests (``quick``: one best over at most 64 MiB, for tests)."""
    if quick:
        return read_gbps(threads, min(nbytes or 64 << 20, 64 << 20), repeats=2)
    nbytes = nbytes or stream_bytes()
    return statistics.median(read_gbps(threads, nbytes) for _ in range(3))


def workload_bytes(quick: bool = False) -> dict:
    """{workload key: bytes}: what the memory-bound workloads must read at least: the
    matrix-vector gradient's matrix once (``X @ w`` and ``X.T @ r`` can share its
    pass, as llgrad's stream does, ``codegen/matvec.py``)."""
    problem = workloads.matvec_problems(quick)[0]
    return {"matvec": problem.data[0].nbytes}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2")
    args = parser.parse_args()
    from llgrad.runtime import engine
    compiled_for = engine.context()[2]
    print(f"float32 FMA peak of this machine ({llvm.get_host_cpu_name()}"
          f"{'' if compiled_for == llvm.get_host_cpu_name() else ', code for ' + compiled_for}), "
          f"{ACCUMULATORS} chains of vector FMAs:")
    titles = {w.key: w.title for w in workloads.WORKLOADS}
    for threads in (int(t) for t in args.threads.split(",")):
        gflops = measure(threads)
        print(f"  {threads} thread(s): {gflops:.1f} Gflop/s")
        for key, work in product_flops().items():
            print(f"    {titles[key]}: {work / 1e9:.3g} Gflop of products, "
                  f"at least {work / gflops / 1e6:.3g} ms")
        gbps = measure_bandwidth(threads)
        print(f"  {threads} thread(s): read bandwidth {gbps:.1f} GB/s over "
              f"{stream_bytes() >> 20} MiB (last-level cache {llc_bytes() >> 20} MiB)")
        for key, nbytes in workload_bytes().items():
            at_size = measure_bandwidth(threads, nbytes=nbytes)
            print(f"    {titles[key]}: {nbytes / 1e6:.3g} MB read, at least "
                  f"{nbytes / gbps / 1e6:.3g} ms from memory, {nbytes / at_size / 1e6:.3g} ms "
                  f"at {at_size:.1f} GB/s, the read bandwidth over its matrix's size")


if __name__ == "__main__":
    main()
