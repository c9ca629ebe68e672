"""The llgrad benchmark suite: six fixed workloads on every installed system, checked
against a reference, timed, and written to a report.

    python -m llgrad bench [--quick] [--out bench-results] [--threads 1]
    python benchmarks/run.py  (the same options)

Peers are optional (``pip install -e ".[bench]"``); each absent one is skipped with a
note.  The exit status is 1 when any system's result disagrees with the reference.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the checkout's `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="smallest configuration of every workload: seconds, for tests")
    parser.add_argument("--out", default="bench-results", help="directory of the report")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads for numpy's BLAS, torch and XLA (default 1)")
    parser.add_argument("--systems", default="",
                        help="comma-separated parts of system names to run (default all)")
    parser.add_argument("--workloads", default="",
                        help="comma-separated workload keys: scalar, tiny_mlp, mlp_step, "
                             "training, elementwise, scaling (default all)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="timed seconds per system and size (default 1, quick 0.05)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="round-robin rounds (default 5, quick 3)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds a system may spend on one workload before its remaining "
                             "sizes are skipped (default 40, quick 20)")


def pin_threads(n: int) -> str:
    """Every runtime to ``n`` threads, before any peer is imported; how it was done."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_cpu_multi_thread_eigen={str(n > 1).lower()}"
                               f" intra_op_parallelism_threads={n}").strip()
    from benchmarks.systems import torch_systems
    torch_systems.THREADS["n"] = n
    try:
        import threadpoolctl
    except ImportError:
        return "environment variables (numpy's BLAS obeys them only when set before numpy loads)"
    threadpoolctl.threadpool_limits(n)
    return "threadpoolctl and environment variables"


def _chosen(items, wanted, name):
    parts = [w.strip().lower() for w in wanted.split(",") if w.strip()]
    return [item for item in items if not parts or any(p in name(item).lower() for p in parts)]


def run(args, command="python -m llgrad bench") -> int:
    quick = args.quick
    options = argparse.Namespace(
        quick=quick, seconds=args.seconds or (0.05 if quick else 1.0),
        rounds=args.rounds or (3 if quick else 5), budget=args.budget or (20.0 if quick else 40.0))
    pinned_by = pin_threads(args.threads)
    from benchmarks import measure, report, workloads
    from benchmarks.systems import registry

    systems = _chosen(registry(), args.systems, lambda s: s.name)
    chosen = _chosen(workloads.WORKLOADS, args.workloads, lambda w: w.key)
    if not systems or not chosen:
        raise SystemExit(f"nothing to run: --systems {args.systems!r} / --workloads "
                         f"{args.workloads!r} match no system or workload")
    for system in systems:  # import peers now, so that no first call pays for it
        if system.requires and system.installed():
            importlib.import_module(system.requires)
    started = time.perf_counter()
    results = {"command": command, "mode": "quick" if quick else "full",
               "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
               "options": vars(options) | {"threads": args.threads},
               "systems": [{"name": s.name, "note": s.note, "installed": s.installed()}
                           for s in systems],
               "rows": [], "reference_checks": [], "notes": []}
    for workload in chosen:
        print(f"{workload.title}", flush=True)
        rows, checks = measure.run_workload(workload, systems, options, spent={},
                                            log=lambda line: print(line, flush=True))
        results["rows"] += rows
        results["reference_checks"] += checks
    results["elapsed_s"] = time.perf_counter() - started
    results["environment"] = {"cpu": report.cpu_model(), "cores": os.cpu_count(),
                              "threads": report.thread_counts(pinned_by),
                              "versions": report.versions()}
    paths = report.write(results, args.out)
    print()
    print(report.markdown(results))
    print(f"\nwritten: {paths['report']}, {paths['json']}"
          + "".join(f", {os.path.join(args.out, p)}" for p in results["plots"]))
    return 0 if report.all_checks_passed(results) else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run(args, "python benchmarks/run.py " + " ".join(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
