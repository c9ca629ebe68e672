"""This machine's multiply-add peak, measured, and what it bounds: the least time the
matrix products of workloads 3 and 4 can take here, however they are computed.

    python benchmarks/bench_peak.py [--threads 1,2]

The peak is a loop of independent vector FMAs (``llvm.fma`` on as many lanes as the host's
widest vectors hold, ACCUMULATORS chains so that no FMA waits for the one before), compiled
by LLVM for the host CPU and run on each thread at once: no loads, no stores, only the
arithmetic units.  A product of M x K by K x N is 2·M·K·N flop, so a run of products can
not take less than its flops over this peak; the issue's ratios against peers are read
against that floor (a target that needs more than the peak cannot be met by any code).
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
    2·batch·in·hidden flop each) of one step of workload 3 and of workload 4's whole run
    (its first size); the output layer's small products are left out, so that the floor
    they give is a true lower bound."""
    return {key: (p.steps or 1) * 2 * 2 * p.batch * p.params["w1"].size
            for key, p in (("mlp_step", workloads.mlp_step_problems(quick)[0]),
                           ("training", workloads.training_problems(quick)[0]))}


@functools.cache
def fma_loop():
    """A native ``f(n)`` running n rounds of ACCUMULATORS float32 vector FMAs (the
    workloads' dtype); returns (f, flop per round).  The sum of the chains is returned so
    that LLVM cannot drop them.  Compiled once per process: every thread count runs it."""
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    features = llvm.get_host_cpu_features()
    vector_bits = 512 if features.get("avx512f") else 256 if features.get("avx") else 128
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
    target = llvm.Target.from_default_triple().create_target_machine(
        cpu=llvm.get_host_cpu_name(), features=features.flatten(), opt=3)
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(str(module)), target)
    engine.finalize_object()
    f = ctypes.CFUNCTYPE(ctypes.c_float, ctypes.c_int64)(engine.get_function_address("peak"))
    f._engine = engine     # the code lives as long as the engine
    return f, ACCUMULATORS * lanes * 2


def peak_gflops(f, flop_per_round, threads: int, repeats: int = 5,
                iterations: int = ITERATIONS) -> float:
    """The best of ``repeats`` runs of ``f`` on ``threads`` threads at once (ctypes lets
    go of the GIL during the call)."""
    best = float("inf")
    for _ in range(repeats):
        workers = [threading.Thread(target=f, args=(iterations,)) for _ in range(threads)]
        start = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        best = min(best, time.perf_counter() - start)
    return threads * iterations * flop_per_round / best / 1e9


def measure(threads: int, quick: bool = False) -> float:
    """The peak in Gflop/s on ``threads`` threads: the median of three bests (``quick``:
    one best of short runs, for tests)."""
    f, flop = fma_loop()
    if quick:
        return peak_gflops(f, flop, threads, repeats=2, iterations=ITERATIONS // 10)
    return statistics.median(peak_gflops(f, flop, threads) for _ in range(3))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2")
    args = parser.parse_args()
    print(f"float32 FMA peak of this machine ({llvm.get_host_cpu_name()}), "
          f"{ACCUMULATORS} chains of vector FMAs:")
    titles = {w.key: w.title for w in workloads.WORKLOADS}
    for threads in (int(t) for t in args.threads.split(",")):
        gflops = measure(threads)
        print(f"  {threads} thread(s): {gflops:.1f} Gflop/s")
        for key, work in product_flops().items():
            print(f"    {titles[key]}: {work / 1e9:.3g} Gflop of products, "
                  f"at least {work / gflops / 1e6:.3g} ms")


if __name__ == "__main__":
    main()
