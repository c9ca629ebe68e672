"""The first call of workload 3's gradient (trace, compile, run), in fresh processes.

    python benchmarks/bench_first_call.py [--rounds 5] [--threads 2] [--workers 0,1] [--jax]
    python benchmarks/bench_first_call.py --parts 2

Each round starts one process per setting of ``LLGRAD_COMPILE_WORKERS`` (and one for
JAX with ``--jax``), in turn, so that a slow spell of a shared machine falls on all of
them.  A process is held to ``--threads`` CPUs, compiles the tiny MLP first (imports,
thread pool and compile workers started, as in the suite by workload 3), then times the
first call of the 784-128-10 MLP's gradient at batch 64 into an empty compile cache
(the machine's product timings kept).  The medians and every round's figures are
printed.

``--parts N`` instead cuts that gradient's LLVM module into N parts as the workers would
(``llvm/split.py``) and prints each part's CPU time to compile in this process, the
whole module's beside them: how well the split's cost estimate balances the parts.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import os, sys, time
sys.path.insert(0, {root!r})
os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:{threads}]))
import numpy as np
from benchmarks import workloads as W
small, problem = W.mlp_problem(2, 16, 1, 100), W.mlp_problem(784, 128, 10, 64)
if {jax!r}:
    import jax
    loss = lambda p, x, y: W.mlp_loss(jax.numpy, p, x, y)
    jax.jit(jax.grad(loss))(small.params, *small.data)
    grad = jax.jit(jax.grad(loss))
    start = time.perf_counter()
    jax.block_until_ready(grad(problem.params, *problem.data))
else:
    import llgrad
    loss = lambda p, x, y: W.mlp_loss(np, p, x, y)
    llgrad.grad(loss)(small.params, *small.data)
    grad = llgrad.grad(loss)
    start = time.perf_counter()
    grad(problem.params, *problem.data)
print((time.perf_counter() - start) * 1e3)
"""


def first_call(threads: int, workers: str | None, jax: bool = False) -> float:
    """Milliseconds of the first call in a fresh process (``workers``: the setting of
    LLGRAD_COMPILE_WORKERS, None for JAX)."""
    sys.path.insert(0, ROOT)
    from llgrad.runtime import calibration
    with tempfile.TemporaryDirectory() as cache:
        calibration.copy_into(cache)
        env = dict(os.environ, LLGRAD_CACHE_DIR=cache, LLGRAD_THREADS=str(threads),
                   OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
        if workers is not None:
            env["LLGRAD_COMPILE_WORKERS"] = workers
        code = CHILD.format(root=ROOT, threads=threads, jax=jax)
        out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                             capture_output=True, text=True).stdout
    return float(out.split()[-1])


def parts(count: int) -> None:
    """Each part's CPU time to compile here, and the whole module's."""
    sys.path.insert(0, ROOT)
    os.environ["LLGRAD_NO_CACHE"] = "1"
    import numpy as np

    from benchmarks import workloads as W
    from llgrad.llvm import pipeline, split
    from llgrad.runtime import engine
    problem = W.mlp_problem(784, 128, 10, 64)
    import llgrad
    trace = llgrad.grad(lambda p, x, y: W.mlp_loss(np, p, x, y)).trace(
        problem.params, *problem.data)
    text = trace.llvm_ir
    tm = engine.new_target_machine()
    pieces = split.split(text, count, min_lines=1)
    for label, texts in (("whole", [text]), (f"{len(pieces)} parts", pieces)):
        seconds = []
        for piece in texts:
            runs = []
            for _ in range(3):
                start = time.process_time()
                pipeline.compile_object(piece, tm)
                runs.append(time.process_time() - start)
            seconds.append(min(runs))
        print(f"{label}: " + ", ".join(f"{s * 1e3:.0f} ms" for s in seconds)
              + f" of CPU time ({sum(s.count(chr(10)) for s in texts)} lines)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", default="0,1",
                        help="settings of LLGRAD_COMPILE_WORKERS to compare")
    parser.add_argument("--jax", action="store_true", help="JAX's first call beside them")
    parser.add_argument("--parts", type=int, default=0,
                        help="print the parts' compile times instead")
    args = parser.parse_args()
    if args.parts:
        parts(args.parts)
        return
    settings = [(f"llgrad, LLGRAD_COMPILE_WORKERS={w}", w, False)
                for w in args.workers.split(",")]
    if args.jax:
        settings.append(("JAX jit(grad)", None, True))
    times = {label: [] for label, _, _ in settings}
    for _ in range(args.rounds):
        for label, workers, jax in settings:
            times[label].append(first_call(args.threads, workers, jax))
    print(f"first call of the 784-128-10 MLP's gradient, batch 64, {args.threads} thread(s), "
          f"median of {args.rounds} fresh processes:")
    for label, values in times.items():
        print(f"  {label}: {statistics.median(values):.0f} ms  "
              f"({', '.join(f'{v:.0f}' for v in values)})")


if __name__ == "__main__":
    main()
