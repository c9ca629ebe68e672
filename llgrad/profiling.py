"""Where the time of a compiled function goes, kernel by kernel: ``llgrad.profile``.

    prof = llgrad.profile(llgrad.grad(loss), params, x, y)
    print(prof)                  # one line per kernel call site, in program order
    prof.rows                    # the same as dicts (label, calls, seconds, ...)

The function is compiled once more with time counters around every kernel call
(``compiler/codegen/profile.py``) from the very graph its native code runs, and
called for about ``seconds``.  A line is a fused loop nest (or a run of loop-free
scalar kernels, or a whole loop with its body's kernels indented under it): its share
of the native time, time per call, and the Gflop/s and GB/s it reached, which say
whether it is bound by arithmetic or by memory.  The native code is called through
its bare entry point, so "outside kernels" is what the native call costs around them;
the first line also gives the plain function's call from Python (argument checks,
result arrays).  The counters cost two cycle-counter reads and two atomic adds per
kernel call, small beside any kernel that loops (re-measure: time the bare entry of
``compile_graph(graph, profile=True)`` against ``compile_graph(graph)``'s, as
``measure`` calls it, on the tiny MLP of ``benchmarks/workloads.py``).
"""
from __future__ import annotations

import ctypes
import time
from collections import Counter
import html
from dataclasses import dataclass

import numpy as np

from llgrad.ir.errors import LlgradError


@dataclass
class Profile:
    """Per-kernel times of ``calls`` calls of ``name``: ``seconds_per_call`` is the
    native code's whole call, ``python_seconds_per_call`` (when measured) the call of
    the jit'd function from Python, argument checks and result arrays included."""
    name: str
    calls: int
    seconds_per_call: float
    rows: list
    python_seconds_per_call: float | None = None
    bare: bool = True            # seconds_per_call times the bare native entry

    @property
    def kernel_seconds_per_call(self) -> float:
        return sum(r["seconds"] for r in self.rows if r["depth"] == 0) / self.calls

    def __str__(self):
        per_call = self.seconds_per_call
        python = ("" if self.python_seconds_per_call is None else
                  f"; from Python {_time(self.python_seconds_per_call)}")
        what = "native code " if self.bare else ""
        lines = [f"profile of {self.name}: {self.calls} calls, {what}{_time(per_call)} a call"
                 f"{python}",
                 f"{'share':>6} {'per call':>10} {'calls':>7} {'Gflop/s':>8} {'GB/s':>7}  kernel"]
        for r in self.rows:
            share = r["seconds"] / self.calls / per_call
            indent = "  " * r["depth"]
            where = f"  {r['source']}" if r["source"] else ""
            lines.append(f"{share:6.1%} {_time(r['seconds'] / self.calls):>10} "
                         f"{r['calls'] // self.calls:>7} {_rate(r['flops_per_s']):>8} "
                         f"{_rate(r['bytes_per_s']):>7}  {indent}k{r['label']['kernels'][0]} "
                         f"{r['label']['op']} {r['label']['type']}{_fused(r['fused'])}{where}")
        outside = max(per_call - self.kernel_seconds_per_call, 0.0)
        around = ("the native call itself" if self.bare else
                  "the call from Python: argument checks, result arrays")
        lines.append(f"{outside / per_call:6.1%} {_time(outside):>10} {'':>7} {'':>8} {'':>7}"
                     f"  outside kernels ({around})")
        return "\n".join(lines)

    def _repr_html_(self):
        return f"<pre>{html.escape(str(self))}</pre>"

    def plot(self, top: int = 20):
        """The time per call of the ``top`` slowest kernels as horizontal bars, labelled
        by op and source line: a matplotlib Figure (matplotlib: the ``plots`` extra)."""
        plt = pyplot("Profile.plot()")
        rows = sorted((r for r in self.rows if r["depth"] == 0),
                      key=lambda r: r["seconds"])[-top:]
        fig, ax = plt.subplots(figsize=(8, 0.3 * len(rows) + 1.2))
        ax.barh([f"k{r['label']['kernels'][0]} {r['label']['op']}  {r['source'] or ''}"
                 for r in rows], [r["seconds"] / self.calls * 1e6 for r in rows])
        ax.set_xlabel("µs per call")
        ax.set_title(f"{self.name}: {self.seconds_per_call * 1e6:.1f} µs a call")
        fig.tight_layout()
        return fig


def pyplot(what: str):
    """matplotlib.pyplot, or an ImportError saying which extra brings it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(f"{what} draws with matplotlib, which is not installed: "
                          f"pip install 'llgrad[plots]' (or matplotlib)") from None
    return plt


def _fused(ops: list) -> str:
    """What a kernel computes in its loop besides its own op: each op, or for a long
    run of scalar code, how many of each."""
    if len(ops) <= 6:
        return f" + {', '.join(ops)}" if ops else ""
    counts = Counter(ops).most_common()
    shown = ", ".join(f"{op} ×{n}" for op, n in counts[:4])
    return f" + {len(ops)} ops ({shown}{', ...' if len(counts) > 4 else ''})"


def profile(fn, *args, seconds: float = 0.5, **kwargs) -> Profile:
    """Profile ``fn`` (an ``llgrad.jit``/``grad``/``value_and_grad`` function, or a
    plain one, taken as ``jit``) on these arguments: see the module docstring."""
    from llgrad.api import jit
    from llgrad.compiler.codegen.build import compile_graph
    from llgrad.compiler.dispatch.staging import Staged
    staged = fn if isinstance(fn, Staged) else jit(fn)
    if staged.backend != "native":
        raise LlgradError(f"llgrad.profile({staged.name}): backend={staged.backend!r} runs no "
                          f"native code to profile; use backend='native'")
    trace, leaves = staged._entry(args, kwargs)
    if trace is None or trace.executable is None:
        raise LlgradError(f"llgrad.profile({staged.name}) needs concrete arguments, not tracers")
    executable = compile_graph(trace.executable.graph, fastmath=staged.fastmath, profile=True)
    return measure(executable, leaves, staged.name, seconds,
                   python_call=lambda: staged(*args, **kwargs))


def measure(executable, leaves, name: str, seconds: float, python_call=None) -> Profile:
    """Call a profiled ``executable`` on ``leaves`` for about ``seconds`` (at least
    three times) through its bare native entry, and read its counters; time
    ``python_call()`` too when given (the plain function as a user calls it)."""
    counters = Counters(executable)
    # fills this thread's argument slots with these arrays' addresses: they are kept
    # alive while the entry runs (a Python scalar's converted array would be freed)
    arrays = executable.check(leaves)
    kept = executable.run(list(arrays))
    entry, slots = executable._entry, executable._thread_state()[1]
    counters.start()
    calls, t0 = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - t0 < seconds:
        entry(slots)
        calls += 1
    prof = counters.read(name, calls, time.perf_counter() - t0)
    del kept, arrays
    if python_call is not None:    # the best of three runs: the first may be warming up
        n, best = max(1, calls // 8), float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(n):
                python_call()
            best = min(best, (time.perf_counter() - t0) / n)
        prof.python_seconds_per_call = best
    return prof


class Counters:
    """The time counters of an executable compiled with ``profile=True``."""

    def __init__(self, executable):
        compiled = executable._compiled
        self.labels = compiled.meta["profile"]
        self.entry = compiled.meta["entry"]
        at = ctypes.CFUNCTYPE(ctypes.c_void_p)(compiled.address_of(self.entry + ".profile"))()
        self.counts = np.ctypeslib.as_array(
            (ctypes.c_int64 * (2 * len(self.labels))).from_address(at))
        self.ticks = ctypes.CFUNCTYPE(ctypes.c_int64)(compiled.address_of(self.entry + ".ticks"))
        self._executable = executable                 # keeps the counters' memory alive

    def start(self) -> None:
        """Zero the counters; what ``read`` reports counts from here."""
        self.counts[:] = 0
        self._started = self.ticks(), time.perf_counter()

    def read(self, name: str, calls: int, seconds: float) -> Profile:
        """The profile of ``calls`` calls since ``start`` that took ``seconds`` in all
        (the cycle counter's rate is measured over the time since ``start``)."""
        ticks0, t0 = self._started
        elapsed = self.ticks() - ticks0
        if elapsed <= 0:
            raise LlgradError("llgrad.profile: this CPU's cycle counter does not advance "
                              "(llvm.readcyclecounter reads 0 here)")
        per_tick = (time.perf_counter() - t0) / elapsed
        depth = {self.entry: 0}
        rows = []
        for k, label in enumerate(self.labels):
            graph = label["graph"]
            depth.setdefault(graph, depth.get(graph.rsplit(".body", 1)[0], 0) + 1)
            rows.append(_row(label, depth[graph], int(self.counts[2 * k + 1]),
                             float(self.counts[2 * k]) * per_tick))
        return Profile(name, calls, seconds / calls, rows)


class Runs:
    """The calls of one or more profiled executables (a training run's chunks, whose
    lengths may differ), read as one profile."""

    def __init__(self, name: str):
        self.name = name
        self._runs = {}      # id(executable) -> [Counters, calls, seconds]

    def before(self, executable) -> None:
        if id(executable) not in self._runs:
            counters = Counters(executable)
            counters.start()
            self._runs[id(executable)] = [counters, 0, 0.0]

    def after(self, executable, seconds: float) -> None:
        run = self._runs[id(executable)]
        run[1] += 1
        run[2] += seconds

    def profile(self) -> Profile:
        prof = combined([c.read(self.name, calls, seconds)
                         for c, calls, seconds in self._runs.values()])
        prof.bare = False            # each call timed from Python (``train``'s chunks)
        return prof


def combined(profiles: list) -> Profile:
    """One profile of several executables' runs of the same graph (``train``'s chunks
    of different lengths): rows of the same kernel add up."""
    first, rows = profiles[0], {}
    for prof in profiles:
        for r in prof.rows:
            key = (r["label"]["graph"], tuple(r["label"]["kernels"]), r["label"]["op"])
            if key in rows:
                seen = rows[key]
                rows[key] = _row(seen["label"], seen["depth"], seen["calls"] + r["calls"],
                                 seen["seconds"] + r["seconds"])
            else:
                rows[key] = r
    calls = sum(p.calls for p in profiles)
    return Profile(first.name, calls, sum(p.seconds_per_call * p.calls for p in profiles) / calls,
                   list(rows.values()))


def _row(label: dict, depth: int, calls: int, seconds: float) -> dict:
    return {"label": label, "depth": depth, "calls": calls, "seconds": seconds,
            "flops_per_s": label["flops"] * calls / seconds if seconds else 0.0,
            "bytes_per_s": label["bytes"] * calls / seconds if seconds else 0.0,
            "fused": label["fused"], "source": label["source"]}


def _time(seconds: float) -> str:
    for unit, scale in (("s", 1), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds * 1e9:.3g} ns"


def _rate(per_second: float) -> str:
    giga = per_second / 1e9
    return "-" if not per_second else f"{giga:.0f}" if giga >= 100 else f"{giga:.3g}"
