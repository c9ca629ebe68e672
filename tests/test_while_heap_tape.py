"""Reverse mode of a while_loop without max_steps: the heap tape native code grows.

Oracles: central finite differences of the same loop in plain Python, the gradient
through a tape bounded by max_steps (the other design), a hand-written reversed loop
in numpy, and the interpreter (whose ``tape_row`` replays the steps instead of reading
a tape).  Trip counts depend on the data and go past the old 1024-row tape.  A process
whose address space is capped shows that a tape that cannot grow raises MemoryError
naming the loop's line, and RSS over 1000 calls shows every tape is freed.
"""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import llgrad
from llgrad.compiler.codegen.build import compile_graph
from llgrad.ir import interpret
from llgrad.ir.errors import UnsupportedError
from llgrad.ir.graph import Graph
from llgrad.ir.primitives_while import handle_index

W = np.array([0.9, -0.4, 1.3, 0.2])
X = np.array([0.3, -0.2, 0.5, 0.1])
LOOP_LINE = next(n for n, text in enumerate(Path(__file__).read_text().splitlines(), 1)
                 if text.strip().startswith("v, _ = llgrad.while_loop("))


def _step(v, w):
    return v + 1e-3 * np.sin(v * w) + 1e-4


def drift(x, w, n, max_steps=None):
    """``n`` steps (a traced count: the trip count is data) of a nonlinear map."""
    v, _ = llgrad.while_loop(lambda c: c[1] < n, lambda c: (_step(c[0], w), c[1] + 1.0),
                             (x, 0.0), max_steps=max_steps)
    return np.sum(v ** 3)


def drift_python(x, w, n):
    v = x
    for _ in range(int(np.ceil(n))):
        v = _step(v, w)
    return np.sum(v ** 3)


def drift_adjoint(x, w, n):
    """d drift / d(x, w) by a reversed loop written by hand (the carries kept in a list)."""
    vs = [x]
    for _ in range(int(np.ceil(n))):
        vs.append(_step(vs[-1], w))
    a, aw = 3 * vs[-1] ** 2, np.zeros_like(w)
    for v in reversed(vs[:-1]):
        c = 1e-3 * np.cos(v * w)
        a, aw = a * (1 + c * w), aw + a * c * v
    return a, aw


def central(f, x, eps=1e-6):
    return np.array([(f(x + eps * e) - f(x - eps * e)) / (2 * eps) for e in np.eye(x.size)])


GRAD = llgrad.grad(drift, argnums=(0, 1))
BOUNDED = llgrad.grad(lambda x, w, n: drift(x, w, n, max_steps=6000), argnums=(0, 1))


@pytest.mark.parametrize("trips", [0, 1, 1000, 5000])
def test_gradient_matches_a_hand_reversed_loop_and_a_bounded_tape(trips):
    gx, gw = GRAD(X, W, float(trips))
    ax, aw = drift_adjoint(X, W, trips)
    np.testing.assert_allclose(gx, ax, rtol=1e-12)
    np.testing.assert_allclose(gw, aw, rtol=1e-10, atol=1e-14)
    bx, bw = BOUNDED(X, W, float(trips))
    np.testing.assert_allclose(gx, bx, rtol=1e-13)
    np.testing.assert_allclose(gw, bw, rtol=1e-13, atol=1e-16)


@pytest.mark.parametrize("trips", [1, 5000])
def test_gradient_matches_finite_differences_of_the_python_loop(trips):
    gx, gw = GRAD(X, W, float(trips))
    np.testing.assert_allclose(gx, central(lambda x: drift_python(x, W, trips), X),
                               rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(gw, central(lambda w: drift_python(X, w, trips), W),
                               rtol=1e-6, atol=1e-9)


def _in_a_scan_body(x):
    def step(total, n):
        return total + drift(x, W, n), 0.0
    return llgrad.scan(step, 0.0, np.array([10.0, 200.0, 3.0]))[0]


@pytest.mark.parametrize("f, trips", [
    (_in_a_scan_body, (10, 200, 3)),   # a tape per run of the body, freed in it
    (lambda x: llgrad.cond(np.sum(x) > 0, lambda y: drift(y, W, 100.0), np.sum, x), (100,)),
    (lambda x: llgrad.checkpoint(lambda y: drift(y, W, 300.0))(x), (300,)),
], ids=["scan", "cond", "checkpoint"])
def test_loops_inside_bodies_keep_their_tapes(f, trips):
    want = sum(drift_adjoint(X, W, n)[0] for n in trips)
    np.testing.assert_allclose(llgrad.grad(f)(X), want, rtol=1e-13)


def test_native_tape_equals_the_interpreters_replay():
    traced = GRAD.trace(X, W, 30.0)
    for native, replayed in zip(GRAD(X, W, 30.0), interpret(traced.backward, X, W, 30.0)[1:]):
        np.testing.assert_allclose(native, replayed, rtol=1e-14)


def test_only_a_loop_whose_tape_is_read_allocates():
    def ir_of(f):
        return f.trace(X, W, 10.0).executable.llvm_ir
    taped = ir_of(GRAD)
    assert 'call ptr @"realloc"' in taped and 'call void @"free"' in taped
    assert "realloc" not in ir_of(llgrad.jit(drift))


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux's /proc")
def test_a_thousand_calls_free_every_tape():
    """Each call grows a tape of 8192 rows of 40 bytes (320 KiB): kept, 1000 calls would
    hold 320 MiB."""
    for _ in range(50):
        GRAD(X, W, 5000.0)
    before = _resident_bytes()
    for _ in range(1000):
        GRAD(X, W, 5000.0)
    assert _resident_bytes() - before < 32 << 20


def test_a_tape_that_cannot_grow_raises_memory_error_naming_the_line(tmp_path):
    """In a process whose address space is capped just above what it uses, a loop of
    100,000 steps of 8 KiB needs 800 MiB of tape: MemoryError; the process goes on."""
    script = tmp_path / "capped.py"
    script.write_text(textwrap.dedent(f"""
        import resource, sys
        import numpy as np
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_while_heap_tape import GRAD
        x, w = np.full(1000, 0.1), np.full(1000, 0.5)
        small = GRAD(x, w, 10.0)
        with open("/proc/self/statm") as f:
            used = int(f.read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (used + (256 << 20),) * 2)
        try:
            GRAD(x, w, 100000.0)
        except MemoryError as e:
            print("MemoryError:", e)
        again = GRAD(x, w, 10.0)
        print("same", all(np.array_equal(a, b) for a, b in zip(small, again)))
    """))
    ran = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert f"MemoryError: out of memory: while_loop at test_while_heap_tape.py:{LOOP_LINE} " \
           in ran.stdout
    assert "same True" in ran.stdout


def test_a_handle_that_leaves_its_graph_is_refused():
    graph = GRAD.trace(X, W, 10.0).backward
    loop = next(n for n in graph.nodes if n.op == "while" and n.attrs.get("heap_tape"))
    handle = next(n for n in graph.nodes if n.op == "tuple_get" and n.inputs[0] is loop
                  and n.attrs["index"] == handle_index(loop))
    with pytest.raises(UnsupportedError, match=f"test_while_heap_tape.py:{LOOP_LINE}.*max_steps"):
        compile_graph(Graph(graph.inputs, [*graph.outputs, handle]))


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux's /proc")
def test_a_call_stopped_by_a_nan_check_frees_its_tape_too():
    """With debug_nans a NaN after the loop ends the call before the reversed loop reads
    the tape: it is freed on that way out as well."""
    with llgrad.debug_nans():
        grad = llgrad.grad(lambda x, w, n: np.sqrt(-drift(x, w, n) ** 2 - 1.0), argnums=(0, 1))
        for _ in range(20):
            with pytest.raises(FloatingPointError, match="sqrt"):
                grad(X, W, 5000.0)
        before = _resident_bytes()
        for _ in range(300):
            with pytest.raises(FloatingPointError):
                grad(X, W, 5000.0)
    assert _resident_bytes() - before < 32 << 20
