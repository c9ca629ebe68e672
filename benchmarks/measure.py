"""Running one workload on every system: prepare and first call (reported as compile
time), check against the reference, then steady-state timing.

Timing is round-robin: every system ready for a problem gets a slice of calls in each
of several rounds, so a change in machine load during the run hits all of them alike,
and every ratio in a report comes from one run.  Each call is timed on its own with
``time.perf_counter``; the report gives the median and the interquartile range.

Before each slice the process is let go quiet (``settle``): the thread pools of the
peers (OpenMP in PyTorch, OpenBLAS under numpy and PyTensor, XLA's) keep spinning on
the cores for a while after their last call, and a multi-threaded system timed next
would share its cores with them.  Measured here, two threads: llgrad's workload 4 took
36 ms after a pause but 44 ms right after PyTorch's products (medians of 30).
"""
from __future__ import annotations

import dataclasses
import time
import traceback
from typing import Callable

import numpy as np

from . import workloads

# the largest relative difference from the float64 reference a system may show
TOLERANCE = {"float64": 1e-9, "float32": 1e-4, "float32 training": 1e-3}
FINITE_DIFFERENCE_TOLERANCE = 1e-6
MAX_CALLS_PER_ROUND = 20_000
#: ``settle``: a slice of this long with at most QUIET_SHARE of one core busy is quiet
QUIET_SLICE_S = 0.005
QUIET_SHARE = 0.1
SETTLE_MAX_S = 1.0
#: seconds of a slice's calls between two samples of the FMA peak beside them (a
#: sample takes ~6 ms: bench_peak.peak_sampler)
BESIDE_EVERY_S = 0.02


def relative_error(result: dict, reference: dict) -> float:
    """max over arrays of max |result - reference| / max |reference|; infinite when an
    array is missing, has the wrong shape, or holds a NaN."""
    worst = 0.0
    for name, ref in reference.items():
        got = np.asarray(result.get(name, np.nan), np.float64)
        if got.shape != ref.shape:
            return float("inf")
        scale = max(float(np.max(np.abs(ref), initial=0.0)), 1e-300)
        error = float(np.max(np.abs(got - ref), initial=0.0)) / scale
        if not np.isfinite(error):
            return float("inf")
        worst = max(worst, error)
    return worst


def tolerance(workload, problem) -> float:
    dtype = np.asarray(next(iter(problem.params.values()))).dtype.name
    return TOLERANCE[f"{dtype} training" if workload.training and dtype == "float32" else dtype]


def reference(workload, problem) -> dict:
    """What each system's result is checked against, and the check of the reference
    itself by central finite differences."""
    fd_error = workloads.finite_difference_error(workload, problem)
    expected = {
        "gradient": (workloads.reference_training if workload.training
                     else workloads.reference_gradient)(workload, problem),
        "value": {"value": np.asarray(float(workload.loss(
            np, workloads.as_float64(problem.params),
            *(np.asarray(d, np.float64) for d in problem.data))))},
    }
    return {"expected": expected, "fd_error": fd_error,
            "fd_passed": fd_error <= FINITE_DIFFERENCE_TOLERANCE}


def final_loss(workload, problem, params) -> float:
    """The loss of trained parameters over all of the training data, in float64."""
    return float(workload.loss(np, workloads.as_float64(params),
                               *(np.asarray(d, np.float64) for d in problem.data)))


def _failure(error: BaseException) -> str:
    where = traceback.extract_tb(error.__traceback__)[-1]
    first_line = (str(error).strip().splitlines() or [""])[0][:240]
    return f"{type(error).__name__}: {first_line} ({where.filename.rsplit('/', 1)[-1]}:{where.lineno})"


def prepare(system, workload, problem, ref, row) -> object:
    """Build the system's call, run it once (compile time), check its result; the call,
    or None when the system failed (the row says why)."""
    factory = system.train if workload.training else system.gradient
    t0 = time.perf_counter()
    try:
        call = factory(workload, problem)
        result = call()
    except Exception as error:  # a peer failing is a result to report, not a crash
        row.update(status="failed", note=_failure(error))
        return None
    row["first_call_s"] = time.perf_counter() - t0
    what = "value" if system.forward_only else "gradient"
    result = {k: np.asarray(v) for k, v in result.items()}
    error = relative_error(result, ref["expected"][what])
    limit = tolerance(workload, problem)
    row["check"] = {"compared": "final parameters" if workload.training else what,
                    "relative_error": error, "tolerance": limit, "passed": error <= limit}
    if workload.training:
        row["final_loss"] = final_loss(workload, problem, result)
    row["status"] = "ok" if error <= limit else "mismatch"
    return call


def settle(max_seconds: float = SETTLE_MAX_S) -> bool:
    """Sleep until the process's threads, together, use at most ``QUIET_SHARE`` of a
    core over a ``QUIET_SLICE_S`` slice (their CPU time, not the wall clock's, says
    when the spinning stopped); False if they were still busy after ``max_seconds``."""
    deadline = time.perf_counter() + max_seconds
    while True:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        time.sleep(QUIET_SLICE_S)
        busy = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
        if busy <= QUIET_SHARE:
            return True
        if time.perf_counter() >= deadline:
            return False


def time_round_robin(calls: dict, seconds: float, rounds: int, beside=None):
    """({name: [[seconds per call] of each round]}, {name: [seconds of ``beside()``
    during each round's slice of that call]}): ``rounds`` rounds in which every call
    gets about ``seconds / rounds`` of calls (at least one), after one untimed warm-up
    call; every slice of calls starts on a quiet process (``settle``).
    ``beside`` (the FMA peak's sample, bench_peak.peak_sampler): what the machine gave
    while the slice ran, sampled before its first call and after every
    ``BESIDE_EVERY_S`` of calls, the median of them per slice; without it the second
    dict is empty."""
    estimate = {}
    for name, call in calls.items():
        settle()
        t0 = time.perf_counter()
        call()
        estimate[name] = max(time.perf_counter() - t0, 1e-7)
    times = {name: [] for name in calls}
    beside_times = {name: [] for name in calls} if beside else {}
    for _ in range(rounds):
        for name, call in calls.items():
            n = int(min(max(seconds / rounds / estimate[name], 1), MAX_CALLS_PER_ROUND))
            settle()
            slice_times, samples, since_sample = [], [], float("inf")
            for _ in range(n):
                if beside and since_sample >= BESIDE_EVERY_S:
                    settle()    # the call's spinning threads would share the sample's cores
                    samples.append(beside())
                    since_sample = 0.0
                t0 = time.perf_counter()
                call()
                slice_times.append(time.perf_counter() - t0)
                since_sample += slice_times[-1]
            times[name].append(slice_times)
            if beside:
                beside_times[name].append(float(np.median(samples)))
    return times, beside_times


def summarize(times) -> dict:
    q1, median, q3 = np.percentile(times, [25, 50, 75])
    return {"median_s": float(median), "q1_s": float(q1), "q3_s": float(q3),
            "iqr_s": float(q3 - q1), "repeats": len(times)}


@dataclasses.dataclass(frozen=True)
class Floor:
    """A workload's floor, sampled beside its calls: ``flop`` of products, and the FMA
    peak's ``sample()`` (seconds for ``sample_flop`` flop, bench_peak.peak_sampler)."""
    flop: float
    sample: Callable[[], float]
    sample_flop: float

    def ratios(self, slices, sample_seconds) -> list:
        """Each slice's median call over the floor at the peak sampled during it (the
        median of its samples)."""
        return [float(np.median(s)) / (self.flop * peak_s / self.sample_flop)
                for s, peak_s in zip(slices, sample_seconds)]


def run_workload(workload, systems, options, spent: dict, log=print):
    """Rows (one per system and problem) and the reference checks of one workload.
    ``spent[system name]`` accumulates seconds per system across this workload's
    problems; past ``options.budget`` a system's remaining problems are skipped."""
    rows, checks = [], []
    for index, problem in enumerate(workload.problems(options.quick)):
        ref = reference(workload, problem)
        checks.append({"workload": workload.key, "size": problem.size,
                       "fd_relative_error": ref["fd_error"], "passed": ref["fd_passed"]})
        ready, problem_rows = {}, []
        for system in systems:
            row = {"workload": workload.key, "title": workload.title, "size": problem.size,
                   "scale": problem.scale, "system": system.name, "status": "skipped",
                   "note": ""}
            problem_rows.append(row)
            reason = (system.skip_reason(workload, problem)
                      or (None if system.installed() else f"not installed (pip install {system.requires})"))
            if reason is None and spent.get(system.name, 0.0) > options.budget:
                reason = f"over its {options.budget:g} s budget for this workload"
            if reason:
                row["note"] = reason
                continue
            log(f"  {workload.key} [{problem.size}] {system.name}: compiling and checking")
            t0 = time.perf_counter()
            call = prepare(system, workload, problem, ref, row)
            spent[system.name] = spent.get(system.name, 0.0) + time.perf_counter() - t0
            if call is not None:
                ready[system.name] = call
        if ready:
            log(f"  {workload.key} [{problem.size}] timing {len(ready)} systems")
            # the floor of a workload's first size (bench_peak.product_flops), if sampled
            floor = getattr(options, "floors", {}).get(workload.key) if index == 0 else None
            times, peak_times = time_round_robin(ready, options.seconds, options.rounds,
                                                 beside=floor.sample if floor else None)
            for row in problem_rows:
                if row["system"] in times:
                    slices = times[row["system"]]
                    row.update(summarize([t for s in slices for t in s]))
                    spent[row["system"]] += sum(map(sum, slices))
                    if floor:
                        row["floor_ratios"] = floor.ratios(slices, peak_times[row["system"]])
        rows += [r for r in problem_rows if r["note"] != "not run on this workload"]
    return rows, checks
