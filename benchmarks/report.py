"""What a run leaves behind: report.md (tables a person reads), results.json (every
figure), and PNG plots (bars per workload on a log axis; time against problem size)."""
from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import statistics
import sys

PEERS = ("torch", "jax", "jaxlib", "autograd", "micrograd", "pytensor")
BASELINE = "llgrad native"
FORWARD = "llgrad native, forward only"


# -- the machine ---------------------------------------------------------------------------

def cpuinfo() -> dict:
    """The first processor's fields in /proc/cpuinfo (empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            first = f.read().split("\n\n", 1)[0]
    except OSError:
        return {}
    return {key.strip(): value.strip() for key, value in
            (line.split(":", 1) for line in first.splitlines() if ":" in line)}


def cpu_model() -> str:
    info = cpuinfo()
    if not info:
        return platform.processor() or platform.machine()
    model = info.get("model name", platform.machine())
    flags = info.get("flags", "").split()
    simd = [f for f in ("avx512f", "avx2", "fma") if f in flags]
    return f"{model} ({', '.join(simd)})" if simd else model


def thread_counts(pinned_by: str) -> dict:
    """Threads each runtime will actually use, read back from the runtimes themselves
    where they can say."""
    counts = {"requested_by": pinned_by}
    try:
        import threadpoolctl
        counts["numpy BLAS"] = sorted({f"{p['internal_api']} ({p.get('architecture')}): "
                                       f"{p['num_threads']}"
                                       for p in threadpoolctl.threadpool_info()})
    except ImportError:
        counts["numpy BLAS"] = f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}"
    if "torch" in sys.modules:
        counts["torch"] = sys.modules["torch"].get_num_threads()
    if "jax" in sys.modules:
        counts["jax"] = f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')}"
    return counts


def versions() -> dict:
    found = {"python": platform.python_version()}
    for name in ("llgrad", "numpy", "llvmlite", "scipy") + PEERS:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


# -- numbers as text -----------------------------------------------------------------------

def duration(seconds) -> str:
    if seconds is None:
        return "—"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def check_text(row) -> str:
    check = row.get("check")
    if not check:
        return "—"
    verdict = "ok" if check["passed"] else "**MISMATCH**"
    return f"{verdict} ({check['relative_error']:.1e})"


def _by_problem(rows):
    groups = {}
    for row in rows:
        groups.setdefault((row["workload"], row["size"]), []).append(row)
    return groups


def _ratio(row, baseline):
    if "median_s" not in row or baseline is None or "median_s" not in baseline:
        return "—"
    return times(row["median_s"] / baseline["median_s"])


def times(ratio) -> str:
    return f"{ratio:.2f}×" if ratio < 10 else f"{ratio:,.0f}×"


def _table(header, lines):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(str(c) for c in line) + " |" for line in lines]


def workload_table(rows) -> list[str]:
    baseline = next((r for r in rows if r["system"] == BASELINE), None)
    training = any("final_loss" in r for r in rows)
    header = ["system", "first call", "median", "IQR", "× llgrad native", "check"]
    header += ["final loss"] if training else []
    lines = []
    for row in rows:
        if row["status"] in ("skipped", "failed"):
            continue
        line = [row["system"], duration(row.get("first_call_s")), duration(row.get("median_s")),
                duration(row.get("iqr_s")), _ratio(row, baseline), check_text(row)]
        if training:
            line.append(f"{row['final_loss']:.5f}" if "final_loss" in row else "—")
        lines.append(line)
    out = _table(header, lines)
    left_out = [f"{r['system']} ({r['status']}: {r['note']})" for r in rows
                if r["status"] in ("skipped", "failed")]
    if left_out:
        out += ["", "Not timed: " + "; ".join(left_out) + "."]
    return out


def _system_grid(rows, label, cell) -> tuple[list[str], list[list[str]]]:
    """(systems, lines): one line per problem (``label(size, group)``), one column per
    system that was timed: ``cell(row, group's rows by system)``, "—" where the system
    has no median."""
    systems = list(dict.fromkeys(r["system"] for r in rows if "median_s" in r))
    lines = []
    for (_, size), group in _by_problem(rows).items():
        by_system = {r["system"]: r for r in group}
        cells = []
        for name in systems:
            row = by_system.get(name, {})
            text = cell(row, by_system) if "median_s" in row else "—"
            cells.append(text + (" **MISMATCH**" if row.get("status") == "mismatch" else ""))
        lines.append([label(size, group)] + cells)
    return systems, lines


def scaling_table(rows) -> list[str]:
    systems, lines = _system_grid(rows, lambda size, group: size,
                                  lambda row, by_system: duration(row["median_s"]))
    out = _table(["size"] + systems, lines)
    left_out = sorted({f"{r['system']} ({r['note']})" for r in rows
                       if r["status"] in ("skipped", "failed")})
    if left_out:
        out += ["", "Not timed at some or all sizes: " + "; ".join(left_out) + "."]
    return out


def summary_table(rows) -> list[str]:
    """One line per workload, one column per system: its median and its ratio to
    llgrad native's (what the README's performance tables quote)."""
    def cell(row, by_system):
        text, baseline = duration(row["median_s"]), by_system.get(BASELINE)
        return f"**{text}**" if row is baseline else f"{text} ({_ratio(row, baseline)})"
    rows = [r for r in rows if r["workload"] != "scaling" and r["system"] != FORWARD]
    systems, lines = _system_grid(rows, lambda size, group: f"{group[0]['title']} ({size})",
                                  cell)
    return _table(["workload"] + systems, lines)


def backward_forward(rows) -> list[dict]:
    """llgrad's backward/forward cost, (gradient − forward) / forward, where both were
    timed in the same rounds."""
    ratios = []
    for (workload, size), group in _by_problem(rows).items():
        by_system = {r["system"]: r for r in group}
        grad, fwd = by_system.get(BASELINE, {}), by_system.get(FORWARD, {})
        if "median_s" in grad and "median_s" in fwd:
            g, f = grad["median_s"], fwd["median_s"]
            ratios.append({"workload": workload, "size": size, "forward_s": f, "gradient_s": g,
                           "gradient_over_forward": g / f, "backward_over_forward": (g - f) / f})
    return ratios


def ratio_table(ratios) -> list[str]:
    table = _table(["workload", "size", "forward (jit)", "gradient (grad)",
                    "gradient / forward", "backward / forward"],
                   [[r["workload"], r["size"], duration(r["forward_s"]),
                     duration(r["gradient_s"]), f"{r['gradient_over_forward']:.2f}",
                     f"{r['backward_over_forward']:.2f}" if r["backward_over_forward"] >= 0
                     else "below 0 *"] for r in ratios])
    if any(r["backward_over_forward"] < 0 for r in ratios):
        table += ["", "\\* the gradient took less time than the forward pass alone: `grad` "
                  "does not compute the value, and the forward values the gradient needs are "
                  "computed inside its own loop."]
    return table


def peak_table(peak, rows) -> list[str]:
    """Every system's median against the floor the machine's FMA peak puts under the
    workload's products, or its read bandwidth under the bytes it must read (workload
    7): median / floor is the most that any code could be faster than that system here
    (a target above it asks for more than the arithmetic units or the memory do).  The
    forward pass alone runs one of the two products, so it has no row."""
    lines = []
    for row in rows:
        flop = peak["product_flop"].get(row["workload"])
        nbytes = peak.get("read_bytes", {}).get(row["workload"])
        if ((flop is None and nbytes is None) or row["size"] != peak["sizes"][row["workload"]]
                or "median_s" not in row or row["system"] == FORWARD):
            continue
        if flop is not None:
            floor = flop / (peak["gflops"] * 1e9)
            amount = f"{flop / 1e9:.3g} Gflop" if flop >= 1e9 else f"{flop / 1e6:.3g} Mflop"
        else:   # the faster of memory's bandwidth and that over the workload's own size
            gbps = max(peak["read_gbps"], peak.get("read_gbps_at", {}).get(row["workload"], 0))
            floor = nbytes / (gbps * 1e9)
            amount = f"{nbytes / 1e6:.3g} MB read at {gbps:.1f} GB/s"
        paired = (f"{statistics.median(row['floor_ratios']):.2f}"
                  if row.get("floor_ratios") else "")
        lines.append([row["title"], row["size"], amount, duration(floor),
                      row["system"], duration(row["median_s"]), f"{row['median_s'] / floor:.2f}",
                      paired])
    return _table(["workload", "size", "work", "floor", "system", "median",
                   "median / floor", "same moment"], lines)


def all_checks_passed(results) -> bool:
    return (all(c["passed"] for c in results["reference_checks"])
            and all(r["check"]["passed"] for r in results["rows"] if r.get("check")))


def markdown(results) -> str:
    env = results["environment"]
    out = ["# llgrad benchmark report", "",
           f"`{results['command']}` — {results['mode']} mode, {results['started']}, "
           f"{results['elapsed_s']:.0f} s in all.", "",
           "## Machine", "",
           f"- CPU: {env['cpu']}, {env['cores']} logical cores",
           *([f"- {env['compiled_as']}"] if env.get("compiled_as") else []),
           "- threads: " + "; ".join(f"{k}: {v}" for k, v in env["threads"].items()),
           "- versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
           "", "## Results", ""]
    rows = results["rows"]
    out += ["### At a glance", "", "Medians; in brackets, each system's time over llgrad "
            "native's (above 1: llgrad is faster).", ""] + summary_table(rows) + [""]
    for title, group in _group_titles(rows):
        out += [f"### {title}", ""]
        out += (scaling_table(group) if group[0]["workload"] == "scaling"
                else workload_table(group))
        out.append("")
    ratios = results["llgrad_backward_forward"]
    out += (["## llgrad: backward versus forward", ""]
            + (ratio_table(ratios) if ratios else ["(not measured: run llgrad native on "
                                                   "workloads 3 or 5)"]) + [""])
    if results.get("profiles"):
        out += ["## llgrad: where the time goes", "",
                "`llgrad.profile` of each workload's first size (training: "
                "`train(profile=True)`), one line per kernel:", ""]
        for key, text in results["profiles"].items():
            out += [f"{key}:", "", "```", text, "```", ""]
    if results.get("peak"):
        peak = results["peak"]
        out += ["## Against this machine's peak", "",
                f"float32 FMA peak on {peak['threads']} thread(s), measured "
                f"(`benchmarks/bench_peak.py`): {peak['gflops']:.0f} Gflop/s; read "
                f"bandwidth {peak.get('read_gbps', 0):.1f} GB/s beyond the last-level cache "
                "(over a workload's own data, where it fits a cache, as in the table). The first "
                "layer's two products alone take at least their flops over the peak, and a "
                "memory-bound workload its bytes over the bandwidth (the floor); "
                "median / floor is the most any code could be faster than that system here. "
                "*Same moment*: the median over rounds of each slice's median against the floor "
                "at the FMA peak sampled between its calls (this machine's speed may swing "
                "between the timing and the peak measured after it).",
                ""] + peak_table(peak, rows) + [""]
    out += ["## Checks", "",
            "Every system's result is compared with the hand-written gradient in float64 "
            "(training: with float64 SGD), and that reference with central finite "
            "differences along a random direction:", ""]
    out += _table(["workload", "size", "finite-difference relative error", "passed"],
                  [[c["workload"], c["size"], f"{c['fd_relative_error']:.1e}", c["passed"]]
                   for c in results["reference_checks"]])
    verdict = ("All gradient checks passed." if all_checks_passed(results)
               else "**Some checks FAILED: see MISMATCH above.**")
    out += ["", verdict, "", "## Systems", ""]
    out += [f"- **{s['name']}**: {s['note'] or '—'}" + ("" if s["installed"] else
                                                        " — *not installed, skipped*")
            for s in results["systems"]]
    out += ["", "## Method", "", METHOD.format(**results["options"]), ""]
    return "\n".join(out)


METHOD = """\
Each system gets the workload's inputs in its own array type before timing. The first
call (with whatever preparation the system needs: tracing, graph building, compiling) is
timed alone and reported as *first call*; {caches}. Then one
untimed call, then {rounds} round-robin rounds in which every system makes about
{seconds:g} s / {rounds} of calls, each timed alone with `time.perf_counter`; before
each system's share the harness waits until the process is idle (the peers' OpenMP,
OpenBLAS and XLA worker threads spin for a while after their last call, on the cores
the next system needs). *Median*
and *IQR* (interquartile range) are over those calls, and a system's ratio to llgrad
comes from the same rounds. A system that has used {budget:g} s on a workload skips
that workload's remaining sizes. Training (workloads 4 and 9) times a whole run from the
initial parameters; *final loss* is the float64 loss of the trained parameters over all
training data. Timings on a shared machine are noisy: read ratios, not digits."""


def _group_titles(rows):
    groups = {}
    for row in rows:
        groups.setdefault(row["title"], []).append(row)
    for title, group in groups.items():
        sizes = list(dict.fromkeys(r["size"] for r in group))
        yield (f"{title} ({sizes[0]})" if len(sizes) == 1 else title), group


# -- plots -----------------------------------------------------------------------------------

def plots(results, out_dir) -> list[str]:
    """PNG files written (none, with a note in results, when matplotlib is absent)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        results["notes"].append("plots skipped: matplotlib is not installed")
        return []
    written = []
    for title, group in _group_titles(results["rows"]):
        key = group[0]["workload"]
        fig = (_scaling_plot(plt, group) if key == "scaling" else _bar_plot(plt, title, group))
        if fig is None:
            continue
        path = os.path.join(out_dir, f"{key}.png")
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written


def _bar_plot(plt, title, rows):
    timed = [r for r in rows if "median_s" in r]
    if not timed:
        return None
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(timed) + 1.2))
    names = [r["system"] for r in timed]
    medians = [r["median_s"] for r in timed]
    spread = [[r["median_s"] - r["q1_s"] for r in timed], [r["q3_s"] - r["median_s"] for r in timed]]
    colours = ["tab:red" if r["status"] == "mismatch" else
               "tab:blue" if r["system"].startswith("llgrad") else "tab:gray" for r in timed]
    ax.barh(names, medians, xerr=spread, color=colours)
    ax.invert_yaxis()
    ax.set_xscale("log")
    # bars start at a whole decade below the fastest, so their lengths compare honestly
    ax.set_xlim(left=10 ** math.floor(math.log10(min(medians)) - 0.3),
                right=max(r["q3_s"] for r in timed) * 4)
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
    for y, row in enumerate(timed):
        ax.text(row["q3_s"] * 1.1, y, duration(row["median_s"]), va="center", fontsize=8)
    ax.set_xlabel("seconds per " + ("training run" if any("final_loss" in r for r in timed)
                                     else "gradient") + " (median, IQR bars; log scale)")
    ax.set_title(title, fontsize=10)
    return fig


def _scaling_plot(plt, rows):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, sweep, other in zip(axes, ("hidden", "batch"), ("batch", "hidden")):
        fixed = None
        for system in dict.fromkeys(r["system"] for r in rows):
            points = sorted((r["scale"][sweep], r["median_s"]) for r in rows
                            if r["system"] == system and "median_s" in r
                            and sweep in r["scale"]["sweeps"])
            fixed = fixed or next((r["scale"][other] for r in rows
                                   if sweep in r["scale"]["sweeps"]), None)
            if points:
                ax.plot(*zip(*points), marker="o", label=system,
                        linewidth=2.5 if system == BASELINE else 1.2)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(f"{'hidden width' if sweep == 'hidden' else 'batch'} ({other} {fixed})")
        ax.set_ylabel("seconds per gradient (median)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("6. scaling of the MLP step (float32)", fontsize=10)
    return fig


def write(results, out_dir) -> dict:
    """report.md, results.json and the plots; the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    results["llgrad_backward_forward"] = backward_forward(results["rows"])
    results["plots"] = [os.path.basename(p) for p in plots(results, out_dir)]
    paths = {"report": os.path.join(out_dir, "report.md"),
             "json": os.path.join(out_dir, "results.json")}
    with open(paths["json"], "w") as f:
        json.dump(results, f, indent=1, default=str)
    with open(paths["report"], "w") as f:
        f.write(markdown(results))
        if results["plots"]:
            f.write("\n## Plots\n\n" + "\n".join(f"![{p}]({p})" for p in results["plots"]) + "\n")
        if results["notes"]:
            f.write("\n## Notes\n\n" + "\n".join(f"- {n}" for n in results["notes"]) + "\n")
    return paths
