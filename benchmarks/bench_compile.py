"""Compile time against program size: does the compiler's own time grow linearly?

    python benchmarks/bench_compile.py [--programs rnn,lstm,mlp,jacjac] [--max-nodes 50000]
                                       [--repeats 1] [--save after.json]
                                       [--plot docs/images/compile_time.png --before before.json]

Each program is built by a Python ``for`` loop, so its graph grows with one size
parameter: an unrolled tanh RNN and an unrolled LSTM cell (T steps), an MLP (depth
L), all differentiated by reverse mode, and forward mode over ``jacfwd(jacfwd(f))``
of a chain of L layers.  Sizes double until the compiled graph passes ``--max-nodes``
or one compile takes longer than ``--max-seconds``.

Every stage is timed on its own, the on-disk cache off:

- trace, autodiff and the IR passes (cse, merge_loops, simplify, dce): the times
  ``Trace.stats`` reports (traced with the interpreter backend, so nothing is compiled
  there);
- fusion, memory plan, LLVM IR emission (llvmlite objects), printing the IR text,
  LLVM optimisation (parse, verify, O3) and machine code (MCJIT): the steps of
  ``codegen.build.compile_graph``, called one by one on the graph the trace compiles.

Times are this process's CPU time unless ``--clock wall``: LLVM and the passes run on
one thread, and on a machine shared with other work wall time measures the
neighbours too.  ``--parallel`` adds a column apart, ``llvm_parts``: the wall time of
LLVM's two stages as a compile runs them, the module cut into parts compiled at once
by this process and its workers (``runtime/workers.py``; it is not in the total).  The table gives, per size, the compiled graph's node count, the kernels and LLVM
functions made of it and every stage's seconds (the median of ``--repeats``); the
closing lines give the slope of log(time) against log(nodes), least squares over the
sizes of at least ``--fit-from`` nodes (the fixed cost of a compile hides the growth
below that), for the whole compile and for each stage.  A slope of 1 is linear.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

os.environ["LLGRAD_NO_CACHE"] = "1"

import numpy as np  # noqa: E402

import llgrad  # noqa: E402

STAGES = ("trace", "autodiff", "cse", "merge_loops", "simplify", "dce", "fusion", "memplan",
          "llvm_emit", "llvm_print", "llvm_opt", "machine_code")


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def rnn(steps: int):
    """A tanh RNN over ``steps`` inputs, unrolled; its gradient by weights."""
    def loss(w, u, h, xs):
        for t in range(steps):
            h = np.tanh(xs[t] @ w + h @ u)
        return np.sum(h * h)
    rng = np.random.default_rng(0)
    hidden, batch = 16, 4
    args = (rng.normal(size=(hidden, hidden)) * 0.3, rng.normal(size=(hidden, hidden)) * 0.3,
            rng.normal(size=(batch, hidden)), rng.normal(size=(steps, batch, hidden)))
    return llgrad.grad(loss, argnums=(0, 1), backend="interpret"), args


def lstm(steps: int):
    """One LSTM layer (matrix gates) over ``steps`` inputs, unrolled; its gradient."""
    def loss(w, u, bias, xs):
        hidden = u.shape[0]
        h = c = np.zeros((xs.shape[1], hidden))
        for t in range(steps):
            gates = xs[t] @ w + h @ u + bias
            i, f = _sigmoid(gates[:, :hidden]), _sigmoid(gates[:, hidden:2 * hidden])
            g, o = np.tanh(gates[:, 2 * hidden:3 * hidden]), _sigmoid(gates[:, 3 * hidden:])
            c = f * c + i * g
            h = o * np.tanh(c)
        return np.sum(h * h)
    rng = np.random.default_rng(0)
    hidden, batch, features = 8, 4, 8
    args = (rng.normal(size=(features, 4 * hidden)) * 0.3,
            rng.normal(size=(hidden, 4 * hidden)) * 0.3, np.zeros(4 * hidden),
            rng.normal(size=(steps, batch, features)))
    return llgrad.grad(loss, argnums=(0, 1, 2), backend="interpret"), args


def mlp(depth: int):
    """An MLP of ``depth`` tanh layers, each with its own weights; its gradient."""
    def loss(ws, bs, x):
        for w, b in zip(ws, bs):
            x = np.tanh(x @ w + b)
        return np.mean(x * x)
    rng = np.random.default_rng(0)
    width = 16
    args = ([rng.normal(size=(width, width)) * 0.3 for _ in range(depth)],
            [rng.normal(size=width) * 0.1 for _ in range(depth)], rng.normal(size=(8, width)))
    return llgrad.grad(loss, argnums=(0, 1), backend="interpret"), args


def jacjac(depth: int):
    """``jacfwd(jacfwd(f))`` of a chain of ``depth`` layers over a vector of 4: forward
    mode over forward mode, every jvp batched over the basis."""
    def f(x, w):
        for _ in range(depth):
            x = np.sin(w @ x) + 0.5 * np.tanh(x)
        return x
    rng = np.random.default_rng(0)
    inner = llgrad.jacfwd(f)
    return (llgrad.jacfwd(lambda x, w: inner(x, w), backend="interpret"),
            (rng.normal(size=4), rng.normal(size=(4, 4)) * 0.5))


PROGRAMS = {"rnn": rnn, "lstm": lstm, "mlp": mlp, "jacjac": jacjac}
FIRST_SIZE = {"rnn": 8, "lstm": 8, "mlp": 8, "jacjac": 2}


def measure(program: str, size: int, parallel: bool = False) -> dict:
    """Every stage's seconds for one compile of ``program`` at ``size``, and the counts."""
    from llvmlite import binding as llvm

    from llgrad.compiler.codegen.build import codegen_options
    from llgrad.compiler.codegen.fusion import fuse
    from llgrad.compiler.codegen.memplan import plan_memory
    from llgrad.compiler.codegen.module import build_module
    from llgrad.runtime import engine

    staged, args = PROGRAMS[program](size)
    trace = staged.trace(*args)
    stats = trace.stats
    seconds = {stage: stats.get(f"{stage}_s") or 0.0 for stage in STAGES[:6]}
    graph = trace._compiled
    options = codegen_options(fastmath=False, fuse_ops=True, libmvec=True, blas=True,
                              blas_min_flops=None, threads=None)
    clock = time.perf_counter     # see --clock
    t0 = clock()
    fusion = fuse(graph)
    t1 = clock()
    memory = plan_memory(fusion)
    t2 = clock()
    module, entry = build_module(fusion, memory, options)[:2]
    t3 = clock()
    text = str(module)
    t4 = clock()
    optimised = engine.optimize(text)
    t5 = clock()
    with engine._lock:
        machine = llvm.create_mcjit_compiler(optimised, engine.new_target_machine())
        machine.finalize_object()
    t6 = clock()
    seconds.update(fusion=t1 - t0, memplan=t2 - t1, llvm_emit=t3 - t2, llvm_print=t4 - t3,
                   llvm_opt=t5 - t4, machine_code=t6 - t5)
    if parallel:
        from llgrad.runtime import workers
        workers.start()
        start = time.monotonic()
        engine.jit(text, f"bench-{program}-{size}", {"entry": entry})
        seconds["llvm_parts"] = time.monotonic() - start
    functions = sum(1 for f in module.functions if not f.is_declaration)
    return {"nodes": len(graph.nodes), "joint_nodes": stats["joint_nodes"] or len(graph.nodes),
            "kernels": len(fusion.kernels), "functions": functions,
            "ir_lines": text.count("\n"), "seconds": seconds}


def slope(points) -> float:
    """Least-squares slope of log(seconds) against log(nodes)."""
    xs = [math.log(n) for n, _ in points]
    ys = [math.log(max(s, 1e-6)) for _, s in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else float("nan")


def run_program(program: str, args) -> list[dict]:
    rows, size = [], FIRST_SIZE[program]
    stages = STAGES + ("llvm_parts",) * args.parallel
    print(f"\n## {program}")
    print(f"{'size':>6} {'nodes':>7} {'kernels':>7} {'fns':>6} {'total s':>8}  "
          + " ".join(f"{s[:8]:>8}" for s in stages))
    while True:
        runs = [measure(program, size, args.parallel) for _ in range(args.repeats)]
        row = dict(runs[0], size=size, seconds={
            s: statistics.median(r["seconds"][s] for r in runs) for s in stages})
        row["total"] = sum(row["seconds"][s] for s in STAGES)
        rows.append(row)
        print(f"{size:>6} {row['nodes']:>7} {row['kernels']:>7} {row['functions']:>6} "
              f"{row['total']:>8.3f}  "
              + " ".join(f"{row['seconds'][s]:>8.3f}" for s in stages), flush=True)
        if row["nodes"] >= args.max_nodes or row["total"] > args.max_seconds:
            break
        size *= 2
    fitted = [r for r in rows if r["nodes"] >= args.fit_from] or rows
    if len(fitted) >= 2:
        print(f"slope of log(time) vs log(nodes), {fitted[0]['nodes']}..{fitted[-1]['nodes']} "
              f"nodes: total {slope([(r['nodes'], r['total']) for r in fitted]):.2f}; "
              + ", ".join(f"{s} {slope([(r['nodes'], r['seconds'][s]) for r in fitted]):.2f}"
                          for s in STAGES))
    return rows


def plot(results: dict, path: str, before: dict | None = None) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(7, 5))
    for k, (program, rows) in enumerate(results.items()):
        color = f"C{k}"
        ax.loglog([r["nodes"] for r in rows], [r["total"] for r in rows], "o-", color=color,
                  label=program)
        if before and program in before:
            ax.loglog([r["nodes"] for r in before[program]],
                      [r["total"] for r in before[program]], "x--", color=color, alpha=0.6,
                      label=f"{program}, before")
    everything = [r for rows in results.values() for r in rows]
    lo, hi = min(r["nodes"] for r in everything), max(r["nodes"] for r in everything)
    base = min(r["total"] for r in everything)
    ax.loglog([lo, hi], [base, base * hi / lo], "k:", label="slope 1 (linear)")
    ax.set_xlabel("nodes compiled")
    ax.set_ylabel("compile time (s), trace to machine code")
    ax.set_title("llgrad compile time against graph size (log-log)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot written to {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--programs", default=",".join(PROGRAMS))
    parser.add_argument("--max-nodes", type=int, default=50_000)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--fit-from", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--plot", default=None, help="write a log-log plot (matplotlib)")
    parser.add_argument("--save", default=None, help="write the results as JSON")
    parser.add_argument("--before", default=None,
                        help="results JSON of an earlier run, drawn dashed in the plot")
    parser.add_argument("--parallel", action="store_true",
                        help="also time LLVM's stages as a compile runs them, in parts "
                             "on this process and its workers (wall time)")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                        help="cpu: this process's CPU time (steady on a shared machine)")
    args = parser.parse_args()
    if args.clock == "cpu":   # the stages' own timers (Trace.stats) read it too
        time.perf_counter = time.process_time
    import llvmlite.binding as llvm
    from llgrad.runtime import engine
    engine.host_features()
    print(f"CPU {llvm.get_host_cpu_name()}, {os.cpu_count()} cores; LLVM "
          + ".".join(map(str, llvm.llvm_version_info)))
    results = {p: run_program(p, args) for p in args.programs.split(",")}
    if args.save:
        with open(args.save, "w") as f:
            json.dump(results, f, indent=1)
    if args.plot:
        before = None
        if args.before:
            with open(args.before) as f:
                before = json.load(f)
        plot(results, args.plot, before)


if __name__ == "__main__":
    main()
