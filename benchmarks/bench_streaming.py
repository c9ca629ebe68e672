"""Workload 9 alone: one epoch of ``llgrad.train`` over 12,800 rows of 784 float32 (200
steps of a 784-128-10 MLP at batch 64), with and without prefetching the next minibatch
(``train(prefetch=...)``), against JAX's ``lax.scan`` loop, one thread.  Shuffled rows
(a gather per step) and rows in order; before every timed run a buffer twice the
last-level cache is written, so the data come from memory, not from a cache that
happens to hold 40 MB.  Runs of the variants alternate; medians over the repeats of
the wall time and of the process's CPU time (which a busy machine inflates less: time
spent waiting for a core is not counted).

    python benchmarks/bench_streaming.py [--repeats 7] [--no-evict]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from benchmarks.run import pinned_threads
from benchmarks.workloads import mlp_loss, row_order, streaming_problems, training_problems


def last_level_cache_bytes() -> int:
    """The largest cache sysfs lists for CPU 0 (64 MiB if it lists none)."""
    sizes = []
    root = "/sys/devices/system/cpu/cpu0/cache"
    for entry in os.listdir(root) if os.path.isdir(root) else []:
        try:
            with open(os.path.join(root, entry, "size")) as f:
                text = f.read().strip()
        except OSError:
            continue
        scale = {"K": 1 << 10, "M": 1 << 20}.get(text[-1:], 1)
        sizes.append(int(text.rstrip("KM")) * scale)
    return max(sizes, default=64 << 20)


def llgrad_run(problem, prefetch):
    import llgrad
    from llgrad import optim

    def loss(params, x, y):     # plain numpy, traced by llgrad
        return mlp_loss(np, params, x, y)

    sgd = optim.sgd(problem.lr)
    return lambda: llgrad.train(loss, problem.params, problem.data, sgd,
                                batch_size=problem.batch, grad_norms=False,
                                shuffle=problem.shuffle, prefetch=prefetch).params


def jax_scan_run(problem):
    """The peer: one jit of ``lax.scan`` over the steps, each taking its rows."""
    import jax
    import jax.numpy as jnp
    steps, batch, lr = problem.steps, problem.batch, problem.lr
    order = jnp.asarray(row_order(problem).reshape(steps, batch))

    @jax.jit
    def run(params, x, y, order):
        def step(params, rows):
            grads = jax.grad(lambda p: mlp_loss(jnp, p, jnp.take(x, rows, axis=0),
                                                jnp.take(y, rows, axis=0)))(params)
            return jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads), None
        return jax.lax.scan(step, params, order)[0]

    params, data = jax.device_put(problem.params), jax.device_put(problem.data)
    return lambda: jax.block_until_ready(run(params, *data, order))


def measure(runs: dict, repeats: int, evict) -> dict:
    """{name: (median wall seconds, median CPU seconds)}."""
    times = {name: [] for name in runs}
    for run in runs.values():   # compile and warm up
        run()
    for _ in range(repeats):
        for name, run in runs.items():
            evict()
            wall, cpu = time.perf_counter(), time.process_time()
            run()
            times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    return {name: tuple(statistics.median(column) for column in zip(*t))
            for name, t in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-evict", action="store_true")
    args = parser.parse_args()
    llc = last_level_cache_bytes()
    buffer = np.zeros(0 if args.no_evict else 2 * llc // 8)

    def evict():
        buffer[:] += 1.0

    with pinned_threads(1):
        print(f"load average before: {os.getloadavg()}; last-level cache {llc >> 20} MiB; "
              f"evicted before each run: {not args.no_evict}")
        for label, problem in (("", streaming_problems(False)[0]),
                               (", rows in order", training_problems(False)[0])):
            runs = {"llgrad prefetch": llgrad_run(problem, True),
                    "llgrad no prefetch": llgrad_run(problem, False)}
            try:
                runs["JAX lax.scan"] = jax_scan_run(problem)
            except ImportError:
                print("JAX not installed: no peer")
            medians = measure(runs, args.repeats, evict)
            base = medians["llgrad prefetch"]
            print(f"{problem.size}{label}: wall, CPU (each also / llgrad prefetch's)")
            for name, (wall, cpu) in medians.items():
                print(f"  {name:20s} {wall * 1e3:8.2f} ms ({wall / base[0]:.2f}x)  "
                      f"{cpu * 1e3:8.2f} ms ({cpu / base[1]:.2f}x)")
        print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
