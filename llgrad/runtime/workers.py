"""Processes that compile parts of a large module while this one compiles the rest.

llvmlite runs all of LLVM under one process-wide lock, so threads cannot compile in
parallel; processes can.  A module big enough (``llvm/split.py``) is cut into parts:
this process compiles the first, each worker one other, and the parts' object code
loads into one engine (``engine.jit``).  Workers start when a compile begins (their
start, ~70 ms, overlaps the building of the IR), live as long as this process and
exit when their stdin closes.  There is one worker per CPU this process may run on,
less one (``os.sched_getaffinity``; at most ``MAX_WORKERS``), none on one CPU;
none in a process that has loaded MPI (its ranks already share out the cores);
``LLGRAD_COMPILE_WORKERS=N`` sets the count (0: compile everything here).

A worker that fails, for any reason, costs only time: its part is compiled here,
where an error in the IR is raised as it would be without workers.
"""
from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import threading

from llgrad.llvm.split import split

#: more workers than this gain little: parts below ``MIN_PART_LINES`` cost their
#: fixed overhead, and a graph's kernels are seldom balanced across many parts
MAX_WORKERS = 4
#: lines of IR (about 20 ms of LLVM here) below which a part is not worth a process,
#: whose request, answer and module header cost 2-3 ms (re-measure: ``python
#: benchmarks/bench_first_call.py --workers 0,1``, on this and on smaller models)
MIN_PART_LINES = 500
_SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "llvm", "worker.py")
_workers: list[subprocess.Popen] = []
#: set when a worker died or garbled an answer: this process then starts no more (a
#: worker that cannot run here, say without llvmlite on its path, would die each time)
_retired = [False]
_lock = threading.Lock()


def _forget_in_child() -> None:
    """A process forked from this one (``multiprocessing``'s default on Linux) would
    share the workers' pipes with it, and read answers meant for the other: the child
    starts workers of its own if it compiles.  The lock is new too: another thread
    may have held it at the fork."""
    global _lock
    _workers.clear()
    _retired[0] = False
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_in_child)


def count() -> int:
    """How many workers this process uses."""
    setting = os.environ.get("LLGRAD_COMPILE_WORKERS", "").strip()
    if setting:
        try:
            return max(0, int(setting))
        except ValueError:
            raise ValueError(f"LLGRAD_COMPILE_WORKERS={setting!r}: expected a whole "
                             f"number of processes (0: none)") from None
    if "mpi4py.MPI" in sys.modules:
        return 0                # an MPI job's ranks already share out the cores
    if "python" not in os.path.basename(sys.executable or "").lower():
        return 0                # embedded in a program that is not Python's interpreter
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:      # not Linux
        cpus = os.cpu_count() or 1
    return min(MAX_WORKERS, cpus - 1)


def start() -> None:
    """Start the workers not yet running (without waiting for them to be ready)."""
    with _lock:
        _workers[:] = _running()
        for _ in range(0 if _retired[0] else count() - len(_workers)):
            try:
                _workers.append(subprocess.Popen(
                    [sys.executable, _SCRIPT], stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL))
            except OSError:
                return


@atexit.register
def stop() -> None:
    """End every worker (each exits when its stdin closes); a later ``start`` starts
    them again, even after a failure."""
    with _lock:
        for w in _workers:
            try:
                w.stdin.close()
            except OSError:     # one that died with a request unread
                pass
        for w in _workers:
            try:
                w.wait(timeout=5)
            except subprocess.TimeoutExpired:
                _end(w)
        _workers.clear()
        _retired[0] = False


def compile_module(llvm_ir: str, compile_here, target: tuple[str, str],
                   speed_level: int) -> list[tuple[bytes, str]]:
    """(object code, optimised IR) of each part ``llvm_ir`` is cut into, one part per
    running worker and one for this process (one part: no worker running, or a module
    too small).  ``compile_here(text)`` compiles a part in this process; ``target``
    (CPU name, feature string) is what the workers compile for.  A part whose worker
    fails is compiled here too."""
    with _lock:
        live = _running()[:count()]
        parts = split(llvm_ir, 1 + len(live), min_lines=MIN_PART_LINES) if live else [llvm_ir]
        busy = list(zip(parts[1:], live))
        writers = [_send(w, text, target, speed_level) for text, w in busy]
        try:
            first = compile_here(parts[0])
        except BaseException:
            for _, w in busy:       # their answers would meet the next request
                _end(w)
            raise
        answers = []
        for (_, worker), writer in zip(busy, writers):
            writer.join()
            answers.append(_receive(worker))
    return [first, *(a if a is not None else compile_here(text)
                     for (text, _), a in zip(busy, answers))]


def _send(worker, text: str, target, speed_level: int) -> threading.Thread:
    """Write the request from a thread: a large one fills the pipe before the worker
    reads it, and this process has its own part to compile meanwhile."""
    data = text.encode()
    head = json.dumps({"cpu": target[0], "features": target[1],
                       "speed_level": speed_level, "ir_bytes": len(data)}).encode()

    def write():
        try:
            worker.stdin.write(head + b"\n" + data)
            worker.stdin.flush()
        except OSError:         # a worker that died: _receive finds no answer
            pass
    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    return writer


def _receive(worker) -> tuple[bytes, str] | None:
    """The worker's answer, or None: an error in the IR (compiled here, it raises
    here), or a worker that died or garbled its answer (it is ended, and no other
    started: see ``_retired``)."""
    try:
        answer = json.loads(worker.stdout.readline())
        if "error" in answer:
            return None
        obj = worker.stdout.read(answer["object_bytes"])
        optimized = worker.stdout.read(answer["ir_bytes"]).decode()
        if len(obj) == answer["object_bytes"]:
            return obj, optimized
    except (OSError, ValueError, KeyError, TypeError):
        pass
    _end(worker)
    _retired[0] = True
    return None


def _running() -> list[subprocess.Popen]:
    return [w for w in _workers if w.poll() is None]


def _end(worker) -> None:
    worker.kill()
    worker.wait()
