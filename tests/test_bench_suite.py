"""The benchmark suite (benchmarks/): its quick mode writes a report, every figure as
JSON and the plots, with every system checked against the reference; peers that are
absent are skipped with a note, and a wrong gradient is reported, never hidden."""
import json
import os
import threading

import numpy as np
import pytest

from benchmarks import measure, report, workloads
from benchmarks.systems import System, numpy_system
from llgrad import __main__ as cli

CORE = "llgrad,numpy"   # the systems that need no optional package


def run_cli(out, *extra):
    cli.main(["bench", "--quick", "--out", str(out), *extra])
    with open(out / "results.json") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    return out, run_cli(out, "--systems", CORE)


def test_quick_run_times_every_workload_on_llgrad_its_interpreter_and_numpy(quick):
    _, results = quick
    for workload in workloads.WORKLOADS:
        for size in {p.size for p in workload.problems(True)}:
            timed = {r["system"] for r in results["rows"]
                     if r["workload"] == workload.key and r["size"] == size and r["status"] == "ok"}
            assert {"llgrad native", "llgrad interpreter",
                    "numpy, hand-written backprop"} <= timed, (workload.key, size)


def test_quick_run_checks_every_result_and_every_check_passed(quick):
    _, results = quick
    checked = [r for r in results["rows"] if r["status"] != "skipped"]
    assert checked and all(r["check"]["passed"] for r in checked)
    assert all(r["median_s"] > 0 and r["q3_s"] >= r["median_s"] >= r["q1_s"] for r in checked)
    assert all(c["passed"] for c in results["reference_checks"])
    assert len(results["reference_checks"]) == sum(len(w.problems(True)) for w in workloads.WORKLOADS)


def test_quick_run_measures_llgrad_backward_over_forward(quick):
    out, results = quick
    forward = {r["workload"] for r in results["rows"] if r["system"] == report.FORWARD
               and r["status"] == "ok"}
    assert forward == {"mlp_step", "elementwise"}
    assert "backward / forward" in (out / "report.md").read_text()


def test_quick_run_writes_a_readable_report(quick):
    out, results = quick
    text = (out / "report.md").read_text()
    assert "All gradient checks passed." in text
    for workload in workloads.WORKLOADS:
        assert workload.title in text
    assert results["environment"]["cpu"] in text and "threads:" in text


def test_profile_adds_where_llgrads_time_goes(tmp_path):
    results = run_cli(tmp_path, "--systems", "llgrad native", "--workloads",
                      "tiny_mlp,training", "--profile")
    assert set(results["profiles"]) == {"tiny_mlp", "training"}
    assert "dot_general" in results["profiles"]["tiny_mlp"]
    # the loop is compiled for a whole chunk of steps and told how many to run
    assert "loop up to 260 steps" in results["profiles"]["training"]
    text = (tmp_path / "report.md").read_text()
    assert "where the time goes" in text and "profile of train(training_loss)" in text


def test_the_summary_has_a_line_per_workload_with_every_ratio_from_the_same_rows(quick):
    _, results = quick
    rows = [r for r in results["rows"] if r["workload"] != "scaling"]
    table = report.summary_table(rows)
    header, lines = table[0], table[2:]
    assert header.split(" | ")[1] == report.BASELINE
    assert len(lines) == len({(r["workload"], r["size"]) for r in rows})
    for line in lines:
        cells = line.strip("| ").split(" | ")
        llgrad_row = next(r for r in rows if line.startswith(f"| {r['title']} ({r['size']})")
                          and r["system"] == report.BASELINE)
        numpy_row = next(r for r in rows if r["workload"] == llgrad_row["workload"]
                         and r["size"] == llgrad_row["size"] and r["system"].startswith("numpy"))
        assert cells[1] == f"**{report.duration(llgrad_row['median_s'])}**"
        ratio = report.times(numpy_row["median_s"] / llgrad_row["median_s"])
        assert f"{report.duration(numpy_row['median_s'])} ({ratio})" in cells


def test_quick_run_plots_a_bar_chart_per_workload_and_the_scaling(quick):
    pytest.importorskip("matplotlib", reason="plots need matplotlib (the test extra)")
    out, results = quick
    expected = {f"{w.key}.png" for w in workloads.WORKLOADS}
    assert set(results["plots"]) == expected
    for name in expected:
        with open(out / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_reference_gradients_agree_with_finite_differences():
    for workload in workloads.WORKLOADS:
        for problem in workload.problems(True):
            assert workloads.finite_difference_error(workload, problem) < 1e-6, workload.key


def test_a_wrong_gradient_is_reported_as_a_mismatch():
    def off_by_one_percent(workload, problem):
        return lambda: {k: 1.01 * np.asarray(g)
                        for k, g in workload.backprop(problem.params, *problem.data).items()}

    wrong = System("wrong", off_by_one_percent)
    options = type("Options", (), dict(quick=True, seconds=0.01, rounds=1, budget=10.0))
    rows, checks = measure.run_workload(workloads.WORKLOADS[1], [numpy_system.SYSTEM, wrong],
                                        options, {}, log=lambda line: None)
    by_system = {r["system"]: r for r in rows}
    assert by_system["numpy, hand-written backprop"]["status"] == "ok"
    assert by_system["wrong"]["status"] == "mismatch"
    assert by_system["wrong"]["check"]["relative_error"] == pytest.approx(0.01)
    results = {"rows": rows, "reference_checks": checks}
    assert not report.all_checks_passed(results)
    assert "**MISMATCH**" in "\n".join(report.workload_table(rows))


def test_nan_missing_or_misshapen_results_never_pass():
    reference = {"w": np.ones((2, 3)), "b": np.ones(3)}
    assert measure.relative_error({"w": np.ones((2, 3)), "b": np.ones(3)}, reference) == 0.0
    for result in ({"w": np.full((2, 3), np.nan), "b": np.ones(3)}, {"w": np.ones((2, 3))},
                   {"w": np.ones((3, 2)), "b": np.ones(3)}):
        assert measure.relative_error(result, reference) == float("inf")


def test_settle_waits_out_a_thread_that_keeps_a_core_busy():
    """A peer's pool spinning after its call is what ``settle`` waits for: it reports a
    busy process while a thread spins, a quiet one once the thread has stopped.  A
    loaded machine may leave the spinner without a core for a whole slice, which then
    looks quiet: a busy verdict in any of a few tries is what is asked."""
    stop = threading.Event()
    spinner = threading.Thread(target=lambda: [None for _ in iter(stop.is_set, True)])
    spinner.start()
    try:
        assert any(measure.settle(max_seconds=0.05) is False for _ in range(5))
    finally:
        stop.set()
        spinner.join()
    assert measure.settle() is True


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs a CPU mask to set and two CPUs to hold it below")
def test_one_thread_holds_every_thread_of_the_process_to_one_cpu():
    """XLA ignores its thread flags, so "--threads 1" holds the process to one CPU: a
    pool started before (numpy's, torch's) and a thread started inside are both held,
    and everything is given back afterwards."""
    from benchmarks import run
    before = os.sched_getaffinity(0)
    seen = {}
    started, release = threading.Event(), threading.Event()

    def pool_thread():
        started.set()
        release.wait()
        seen["earlier thread"] = os.sched_getaffinity(0)

    earlier = threading.Thread(target=pool_thread)
    earlier.start()
    started.wait()
    with run.cpu_mask(1) as held:
        release.set()
        earlier.join()
        later = threading.Thread(target=lambda: seen.setdefault("later thread", os.sched_getaffinity(0)))
        later.start()
        later.join()
        seen["main thread"] = os.sched_getaffinity(0)
    assert held == [min(before)]
    assert seen == dict.fromkeys(("earlier thread", "later thread", "main thread"), {min(before)})
    assert os.sched_getaffinity(0) == before


def test_an_absent_peer_is_skipped_with_a_note():
    absent = System("absent peer", numpy_system.gradient, requires="no_such_module_llgrad")
    options = type("Options", (), dict(quick=True, seconds=0.01, rounds=1, budget=10.0))
    rows, _ = measure.run_workload(workloads.WORKLOADS[0], [absent], options, {},
                                   log=lambda line: None)
    assert rows[0]["status"] == "skipped"
    assert "not installed (pip install no_such_module_llgrad)" in rows[0]["note"]


def test_micrograd_extended_with_tanh_exp_log_sin_agrees(tmp_path):
    pytest.importorskip("micrograd", reason="micrograd is a bench extra")
    results = run_cli(tmp_path, "--systems", "micrograd", "--workloads", "scalar")
    (row,) = results["rows"]
    assert row["status"] == "ok" and row["check"]["passed"]


def test_cold_compiles_into_empty_caches_and_restores_the_environment(tmp_path):
    before = os.environ.get("LLGRAD_CACHE_DIR")
    results = run_cli(tmp_path, "--cold", "--systems", "llgrad native", "--workloads", "scalar")
    assert "empty on-disk caches" in results["options"]["caches"]
    assert "empty on-disk caches" in (tmp_path / "report.md").read_text()
    assert os.environ.get("LLGRAD_CACHE_DIR") == before


def test_bench_without_a_function_outside_a_checkout_is_explained(monkeypatch):
    monkeypatch.setattr(cli, "benchmark_suite", lambda: None)
    with pytest.raises(SystemExit, match="benchmark suite, benchmarks/run.py of an llgrad"):
        cli.main(["bench"])


@pytest.mark.slow
def test_quick_run_with_every_installed_peer(tmp_path):
    """Opt in with `-m slow`: torch.compile and PyTensor compile for minutes."""
    results = run_cli(tmp_path)
    checked = [r for r in results["rows"] if r.get("check")]
    assert all(r["check"]["passed"] for r in checked)
    failed = [r for r in results["rows"] if r["status"] == "failed"]
    assert not failed, failed


def test_the_peak_loop_computes_every_fma_it_counts():
    """bench_peak's loop against the same recurrence in numpy: a loop that dropped or
    merged chains would return another sum (and report a peak it never reached)."""
    from benchmarks import bench_peak
    f, flop_per_round = bench_peak.fma_loop()
    lanes = flop_per_round // (2 * bench_peak.ACCUMULATORS)
    rounds = 1000
    chains = np.arange(1, bench_peak.ACCUMULATORS + 1, dtype=np.float32)
    scale, shift = np.float32(bench_peak.SCALE), np.float32(bench_peak.SHIFT)
    for _ in range(rounds):   # a fused multiply-add rounds once: exact in float64, then float32
        chains = (chains.astype(np.float64) * scale + shift).astype(np.float32)
    total = chains[0]
    for chain in chains[1:]:
        total = total + chain
    assert lanes in (4, 8, 16)
    assert f(rounds) == pytest.approx(float(total), rel=1e-6)
    assert 0 < bench_peak.peak_gflops(f, flop_per_round, threads=1, repeats=1) < 1e4


def test_the_peak_floor_counts_the_first_layers_two_products_per_step():
    from benchmarks import bench_peak
    flops = bench_peak.product_flops()
    assert flops["mlp_step"] == 2 * (2 * 64 * 784 * 128)
    assert flops["training"] == 200 * flops["mlp_step"]


def test_the_report_sets_every_median_against_the_floor_of_the_machines_peak(quick):
    """No system can beat the floor (the products' flops over the measured FMA peak): a
    median below it would mean a wrong flop count or a peak measured too low."""
    out, results = quick
    peak = results["peak"]
    assert set(peak["product_flop"]) == {"mlp_step", "training", "streaming"} and peak["gflops"] > 0
    assert set(peak["read_bytes"]) == {"matvec"} and peak["read_gbps"] > 0
    timed = [r for r in results["rows"] if r["workload"] in peak["product_flop"]
             and r["size"] == peak["sizes"][r["workload"]] and "median_s" in r
             and r["system"] != report.FORWARD]     # one of the two products
    assert timed
    for row in timed:
        assert row["median_s"] > peak["product_flop"][row["workload"]] / (peak["gflops"] * 1e9)
        # and against the peak sampled beside each round's slice of its calls
        assert len(row["floor_ratios"]) == results["options"]["rounds"]
        assert all(ratio > 1 for ratio in row["floor_ratios"])
    text = (out / "report.md").read_text()
    assert "## Against this machine's peak" in text and "median / floor" in text
    assert "same moment" in text
