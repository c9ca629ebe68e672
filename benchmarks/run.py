"""The llgrad benchmark suite: ten fixed workloads on every installed system, checked
against a reference, timed, and written to a report.

    python -m llgrad bench [--quick] [--out bench-results] [--threads 1]
    python benchmarks/run.py  (the same options)

Peers are optional (``pip install -e ".[bench]"``); each absent one is skipped with a
note.  The exit status is 1 when any system's result disagrees with the reference.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the checkout's `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="smallest configuration of every workload: seconds, for tests")
    parser.add_argument("--out", default="bench-results", help="directory of the report")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads for numpy's BLAS, llgrad's split kernels, torch and XLA "
                             "(default 1)")
    parser.add_argument("--systems", default="",
                        help="comma-separated parts of system names to run (default all)")
    parser.add_argument("--workloads", default="",
                        help="comma-separated workload keys: scalar, tiny_mlp, mlp_step, "
                             "training, elementwise, scaling, matvec, kmeans, streaming, "
                             "lstm (default all)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="timed seconds per system and size (default 1, quick 0.05)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="round-robin rounds (default 5, quick 3)")
    parser.add_argument("--cold", action="store_true",
                        help="compile into fresh, empty on-disk caches (llgrad, Inductor, "
                             "PyTensor), so first calls show compile times from scratch")
    parser.add_argument("--cpu", default=None,
                        help="run every system as if this machine were the CPU LLVM knows "
                             "by this name, e.g. haswell for AVX2 on an AVX-512 machine "
                             "(benchmarks/as_cpu.py says how each peer is held to it)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds a system may spend on one workload before its remaining "
                             "sizes are skipped (default 40, quick 20)")


THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "LLGRAD_THREADS", "XLA_FLAGS")


@contextlib.contextmanager
def pinned_threads(n: int):
    """Every runtime at ``n`` threads, set before any peer is imported, and the whole
    process held to ``n`` CPUs; yields how it was done, and restores the environment,
    numpy's BLAS pool and the CPU mask afterwards.

    The CPU mask is what makes "n threads" true for XLA: jax 0.10's CPU client ignores
    both XLA flags below and ran a 1024x1024 product on both cores of a 2-core machine
    at "1 thread" (178 Gflop/s; 92 with the mask), so earlier one-thread reports had
    timed JAX on two cores."""
    saved = {k: os.environ.get(k) for k in THREAD_VARIABLES}
    for var in THREAD_VARIABLES[:-1]:
        os.environ[var] = str(n)
    os.environ["XLA_FLAGS"] = ((saved["XLA_FLAGS"] or "") +
                               f" --xla_cpu_multi_thread_eigen={str(n > 1).lower()}"
                               f" intra_op_parallelism_threads={n}").strip()
    from benchmarks.systems import torch_systems
    torch_systems.THREADS["n"] = n
    try:
        import threadpoolctl
    except ImportError:
        limits, how = None, "environment variables (numpy's BLAS obeys them only when set before numpy loads)"
    else:
        limits, how = threadpoolctl.threadpool_limits(n), "threadpoolctl and environment variables"
    mask = cpu_mask(n)
    try:
        with mask as held_to:
            yield how + (f"; the process held to CPUs {held_to}" if held_to else "")
    finally:
        _restore(saved)
        if limits is not None:
            limits.restore_original_limits()


@contextlib.contextmanager
def cpu_mask(n: int):
    """Every thread of this process, and so every thread it starts later (a thread
    inherits its creator's mask), on the first ``n`` CPUs it may use; yields those CPUs,
    or None where the mask is left alone (fewer CPUs than ``n``, or no
    ``sched_setaffinity``: not Linux)."""
    if not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) <= n:
        yield None
        return
    before = os.sched_getaffinity(0)
    held = set(sorted(before)[:n])
    _set_every_thread(held)
    try:
        yield sorted(held)
    finally:
        _set_every_thread(before)


def _set_every_thread(cpus) -> None:
    """``sched_setaffinity`` acts on one thread: the pools numpy, torch and XLA have
    already started are each set by their thread id."""
    for task in os.listdir("/proc/self/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that has just ended
            os.sched_setaffinity(int(task), cpus)


def _restore(saved: dict) -> None:
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@contextlib.contextmanager
def empty_caches():
    """Every on-disk compilation cache in a fresh directory (set before any peer loads),
    removed afterwards with the environment restored."""
    root = tempfile.mkdtemp(prefix="llgrad-bench-caches-")
    saved = {k: os.environ.get(k) for k in ("LLGRAD_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR",
                                            "PYTENSOR_FLAGS")}
    from llgrad.runtime import calibration
    calibration.copy_into(os.path.join(root, "llgrad"))   # the machine's, not a compile's
    os.environ["LLGRAD_CACHE_DIR"] = os.path.join(root, "llgrad")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(root, "inductor")
    os.environ["PYTENSOR_FLAGS"] = ",".join(
        filter(None, [saved["PYTENSOR_FLAGS"], f"compiledir={root}/pytensor"]))
    try:
        yield (f"everything compiled into empty on-disk caches ({root}), llgrad's "
               f"table of product timings kept")
    finally:
        _restore(saved)
        shutil.rmtree(root, ignore_errors=True)


CACHES_AS_THEY_ARE = ("on-disk caches (llgrad's, Inductor's, PyTensor's) were left as the "
                      "machine had them, so a run after another shows less (`--cold`: from scratch)")


def run(args, command="python -m llgrad bench") -> int:
    from benchmarks import as_cpu
    cache_setting = empty_caches() if args.cold else contextlib.nullcontext(CACHES_AS_THEY_ARE)
    with as_cpu.compiled_as(args.cpu) as compiled_as, pinned_threads(args.threads) as pinned_by, \
            cache_setting as caches:
        return _run(args, command, pinned_by, caches, compiled_as)


def _chosen(items, wanted, name):
    parts = [w.strip().lower() for w in wanted.split(",") if w.strip()]
    return [item for item in items if not parts or any(p in name(item).lower() for p in parts)]


def _run(args, command, pinned_by, caches, compiled_as=None) -> int:
    quick = args.quick
    options = argparse.Namespace(
        quick=quick, seconds=args.seconds or (0.05 if quick else 1.0),
        rounds=args.rounds or (3 if quick else 5), budget=args.budget or (20.0 if quick else 40.0))
    from benchmarks import bench_peak, measure, report, workloads
    from benchmarks.systems import registry

    systems = _chosen(registry(), args.systems, lambda s: s.name)
    chosen = _chosen(workloads.WORKLOADS, args.workloads, lambda w: w.key)
    if not systems or not chosen:
        raise SystemExit(f"nothing to run: --systems {args.systems!r} / --workloads "
                         f"{args.workloads!r} match no system or workload")
    notes = []
    for system in systems:  # import peers now, so that no first call pays for it
        if system.requires and system.installed():
            try:
                importlib.import_module(system.requires)
            except Exception as error:  # its rows will say "failed" with the same error
                notes.append(f"importing {system.requires} failed: {type(error).__name__}: {error}")
    flops = bench_peak.product_flops(quick)
    if any(w.key in flops for w in chosen):   # workloads 3, 4, 9: floors sampled beside them
        sample, sample_flop = bench_peak.peak_sampler(args.threads)
        options.floors = {key: measure.Floor(flop, sample, sample_flop)
                          for key, flop in flops.items()}
    started = time.perf_counter()
    results = {"command": command, "mode": "quick" if quick else "full",
               "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
               "options": {k: v for k, v in vars(options).items() if k != "floors"}
                          | {"threads": args.threads, "caches": caches},
               "systems": [{"name": s.name, "note": s.note, "installed": s.installed()}
                           for s in systems],
               "rows": [], "reference_checks": [], "notes": notes}
    for workload in chosen:
        print(f"{workload.title}", flush=True)
        rows, checks = measure.run_workload(workload, systems, options, spent={},
                                            log=lambda line: print(line, flush=True))
        results["rows"] += rows
        results["reference_checks"] += checks
    reads = bench_peak.workload_bytes(quick)
    bounded = [w for w in chosen if w.key in flops or w.key in reads]
    if bounded:   # the floors the machine's peak and bandwidth put under them (report.peak_table)
        results["peak"] = {"threads": args.threads,
                           "gflops": bench_peak.measure(args.threads, quick),
                           "read_gbps": bench_peak.measure_bandwidth(args.threads, quick),
                           "product_flop": {w.key: flops[w.key] for w in bounded
                                            if w.key in flops},
                           "read_bytes": {w.key: reads[w.key] for w in bounded if w.key in reads},
                           "read_gbps_at": {  # over the workload's own data: it may fit a cache
                               w.key: bench_peak.measure_bandwidth(args.threads, quick,
                                                                   reads[w.key])
                               for w in bounded if w.key in reads},
                           "sizes": {w.key: w.problems(quick)[0].size for w in bounded}}
    if args.profile:
        from benchmarks.systems import llgrad_systems
        results["profiles"] = {w.key: llgrad_systems.profile(w, w.problems(quick)[0])
                               for w in chosen}
    results["elapsed_s"] = time.perf_counter() - started
    results["environment"] = {"cpu": report.cpu_model(), "compiled_as": compiled_as,
                              "cores": os.cpu_count(),
                              "threads": report.thread_counts(pinned_by),
                              "versions": report.versions()}
    paths = report.write(results, args.out)
    print()
    print(report.markdown(results))
    print(f"\nwritten: {paths['report']}, {paths['json']}"
          + "".join(f", {os.path.join(args.out, p)}" for p in results["plots"]))
    return 0 if report.all_checks_passed(results) else 1


PROFILE_HELP = ("add llgrad's time per kernel for each workload's first size to the report "
                "(llgrad.profile; training: train(profile=True))")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--profile", action="store_true", help=PROFILE_HELP)
    args = parser.parse_args(argv)
    return run(args, "python benchmarks/run.py " + " ".join(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
