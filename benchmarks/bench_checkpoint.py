"""Memory and time of a long scan's gradient, with and without checkpointing.

    python benchmarks/bench_checkpoint.py [--steps 10000] [--width 256] [--repeats 3]

A tanh RNN ``h = tanh(h @ W + x_t)`` over T steps (float64, one sequence), the loss
the sum of the final state's squares; its gradient with respect to W (the inputs' would
add T x width floats to every mode's arena), by ``llgrad.scan`` with
``checkpoint=None``, ``100`` and ``"sqrt"`` (k = ceil(sqrt T)).
Each mode runs in a fresh subprocess (so ``ru_maxrss`` is that mode's peak alone),
which prints:

- ``Trace.stats["residual_bytes"]``: the forward values the backward pass keeps, and
  that in carries (bytes / (width · 8));
- ``Trace.stats["recomputed_flops"]``: what checkpointing pays to run again;
- the median time of one gradient call over ``--repeats`` calls (after a first call
  that compiles), wall-clock and CPU (every thread's: steadier than the wall clock on a
  shared machine), and the CPU time's ratio to no checkpointing;
- the arena the compiled gradient runs in (``Trace.stats["arena_bytes"]``: every
  intermediate, the kept carries among them), and the peak resident set size of the
  process (``resource.getrusage``), which also counts the inputs (T x width floats),
  the interpreter and the compiler (LLVM's peak while compiling may hide the arena).

Everything runs on one thread (``LLGRAD_THREADS=1``, one BLAS thread).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("LLGRAD_THREADS", "1")          # one thread: a pool's waiting
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")    # would count as CPU time

if __package__ in (None, ""):  # run as a script: the checkout's llgrad, in the child too
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MODES = ("none", "100", "sqrt")


def run_mode(mode: str, steps: int, width: int, repeats: int) -> dict:
    import resource

    import numpy as np

    import llgrad
    rng = np.random.default_rng(0)
    w = rng.standard_normal((width, width)) / np.sqrt(width)
    xs = rng.standard_normal((steps, width)) * 0.1
    checkpoint = None if mode == "none" else (mode if mode == "sqrt" else int(mode))

    def loss(w, xs):
        def step(h, x):
            return np.tanh(h @ w + x), None
        h, _ = llgrad.scan(step, np.zeros(width), xs, checkpoint=checkpoint)
        return np.sum(h ** 2)

    grad = llgrad.grad(loss)
    stats = grad.trace(w, xs).stats
    grad(w, xs)
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        grad(w, xs)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"mode": mode, "residual_bytes": stats["residual_bytes"],
            "carries": stats["residual_bytes"] / (width * 8),
            "recomputed_flops": stats["recomputed_flops"], "arena_bytes": stats["arena_bytes"],
            "seconds": statistics.median(times), "cpu_seconds": statistics.median(cpu),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # the child
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args.mode, args.steps, args.width, args.repeats)))
        return
    rows = []
    for mode in MODES:
        out = subprocess.run([sys.executable, __file__, "--mode", mode, "--steps",
                              str(args.steps), "--width", str(args.width), "--repeats",
                              str(args.repeats)], check=True, capture_output=True, text=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = rows[0]["cpu_seconds"]
    print(f"T = {args.steps}, width {args.width}, sqrt(T) = {args.steps ** 0.5:.0f}")
    print(f"{'checkpoint':<11} {'residual bytes':>15} {'carries':>8} {'recomputed flops':>17} "
          f"{'wall':>9} {'CPU':>9} {'ratio':>6} {'arena':>9} {'peak RSS':>10}")
    for r in rows:
        print(f"{r['mode']:<11} {r['residual_bytes']:>15,} {r['carries']:>8.0f} "
              f"{r['recomputed_flops']:>17,} {r['seconds']:>8.2f}s {r['cpu_seconds']:>8.2f}s "
              f"{r['cpu_seconds'] / base:>6.2f} {r['arena_bytes'] / 2**20:>7.1f}MB "
              f"{r['peak_rss_mb']:>8.0f}MB")


if __name__ == "__main__":
    main()
