"""A large module compiled in parts, some in worker processes (``llvm/split.py``,
``runtime/workers.py``).  Oracles: the same module compiled whole in this process (bit
for bit), numpy, and LLVM's verifier on every part."""
from __future__ import annotations

import re

import numpy as np
import pytest
import llvmlite.binding as llvm
from llvmlite import ir

import llgrad
from llgrad.llvm import pipeline, split
from llgrad.runtime import engine, workers
from tests.models import mlp_loss

F64 = ir.DoubleType()
PTR = ir.PointerType()


def _kernel(module, name, scale, callee=None):
    """``void name(ptr out, ptr in)``: out[i] = in[i] * scale (+ callee's value) over
    8 elements, a loop as llgrad's loops are named."""
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR, PTR]), name)
    fn.linkage = "internal"
    fn.attributes.add("noinline")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    head, body, done = (fn.append_basic_block(f"e.{s}") for s in ("head", "body", "done"))
    b.branch(head)
    b.position_at_end(head)
    i = b.phi(ir.IntType(64))
    i.add_incoming(ir.Constant(ir.IntType(64), 0), fn.blocks[0])
    b.cbranch(b.icmp_signed("<", i, ir.Constant(ir.IntType(64), 8)), body, done)
    b.position_at_end(body)
    value = b.fmul(b.load(b.gep(fn.args[1], [i], source_etype=F64), typ=F64),
                   ir.Constant(F64, scale))
    if callee is not None:
        value = b.fadd(value, b.call(callee, [value]))
    b.store(value, b.gep(fn.args[0], [i], source_etype=F64))
    i.add_incoming(b.add(i, ir.Constant(ir.IntType(64), 1)), body)
    b.branch(head)
    b.position_at_end(done)
    b.ret_void()
    return fn


def _module():
    """An entry calling a loop's body (a driver too) and a function to be inlined; the
    body calls three kernels: two share a helper that reads a mutable global (counted
    calls) and a constant global; the third stands alone."""
    m = ir.Module(name="parts")
    table = ir.GlobalVariable(m, F64, "table")
    table.global_constant, table.linkage = True, "internal"
    table.initializer = ir.Constant(F64, 0.5)
    calls = ir.GlobalVariable(m, ir.IntType(64), "calls")
    calls.linkage, calls.initializer = "internal", ir.Constant(ir.IntType(64), 0)
    helper = ir.Function(m, ir.FunctionType(F64, [F64]), "helper")
    helper.linkage = "internal"
    helper.attributes.add("noinline")
    b = ir.IRBuilder(helper.append_basic_block("entry"))
    b.store(b.add(b.load(calls, typ=ir.IntType(64)), ir.Constant(ir.IntType(64), 1)), calls)
    b.ret(b.fmul(helper.args[0], b.load(table, typ=F64)))
    kernels = [_kernel(m, "k0", 2.0, helper), _kernel(m, "k1", 3.0, helper),
               _kernel(m, "k2", 5.0)]
    body = ir.Function(m, ir.FunctionType(ir.VoidType(), [PTR, PTR]), "body")
    body.linkage = "internal"
    body.attributes.add("noinline")
    set.add(body.attributes, split.DRIVER)
    b = ir.IRBuilder(body.append_basic_block("entry"))
    for k, fn in enumerate(kernels):
        b.call(fn, [b.gep(body.args[0], [ir.Constant(ir.IntType(64), 8 * k)],
                          source_etype=F64), body.args[1]])
    b.ret_void()
    inlined = ir.Function(m, ir.FunctionType(ir.VoidType(), [PTR, PTR]), "inlined")
    inlined.linkage = "internal"
    b = ir.IRBuilder(inlined.append_basic_block("entry"))
    b.call(body, inlined.args)
    b.ret_void()
    entry = ir.Function(m, ir.FunctionType(ir.VoidType(), [PTR, PTR]), "entry")
    b = ir.IRBuilder(entry.append_basic_block("entry"))
    b.call(inlined, entry.args)
    counter = ir.Function(m, ir.FunctionType(ir.IntType(64), []), "calls_so_far")
    b.ret_void()
    b = ir.IRBuilder(counter.append_basic_block("entry"))
    b.ret(b.load(calls, typ=ir.IntType(64)))
    return str(m)


def _run(texts, compiled=False):
    """Compile ``texts`` (object code already, if ``compiled``) into one engine:
    (entry's output, the counter's value)."""
    import ctypes
    objects = texts if compiled else [
        pipeline.compile_object(t, engine.new_target_machine())[0] for t in texts]
    compiled = engine._loaded(objects, "", {"entry": "entry"})
    x = np.arange(1.0, 9.0)
    out = np.zeros(24)
    ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)(compiled.address)(
        out.ctypes.data, x.ctypes.data)
    counted = ctypes.CFUNCTYPE(ctypes.c_int64)(compiled.address_of("calls_so_far"))()
    return out, counted


def test_parts_keep_helpers_and_mutable_globals_with_their_callers():
    text = _module()
    parts = split.split(text, 3, min_lines=1)
    assert len(parts) == 3
    homes = {}
    for k, part in enumerate(parts):
        llvm.parse_assembly(part).verify()
        for name in ("k0", "k1", "k2", "helper", "calls", "entry", "inlined", "body"):
            if re.search(rf'^(define [^@]*|)@"{name}"(\(| = internal global)', part, re.M):
                homes[name] = k
    assert homes["k0"] == homes["k1"] == homes["helper"] == homes["calls"]
    assert homes["entry"] == homes["inlined"]       # to be inlined: kept with its caller
    assert len({homes["k0"], homes["k2"], homes["body"]}) == 3
    # the constant is copied where it is read; what another part calls is declared there
    assert sum('@"table" = internal constant' in p for p in parts) == 1
    assert sum('declare void @"k2"' in p for p in parts) == 1


def test_parts_compute_what_the_whole_module_computes():
    text = _module()
    whole, whole_calls = _run([text])
    parted, parted_calls = _run(split.split(text, 3, min_lines=1))
    np.testing.assert_array_equal(parted, whole)
    assert whole_calls == parted_calls == 16       # one counter, not one per part
    x = np.arange(1.0, 9.0)
    np.testing.assert_allclose(whole, np.concatenate([2 * x * 1.5, 3 * x * 1.5, 5 * x]))


@pytest.mark.parametrize("parts, min_lines, expected", [(1, 1, 1), (3, 10 ** 6, 1), (9, 1, 3)])
def test_a_part_is_never_smaller_than_asked_nor_more_than_the_groups(parts, min_lines, expected):
    assert len(split.split(_module(), parts, min_lines=min_lines)) == expected


@pytest.mark.parametrize("extra", ['!0 = !{ptr @"k2"}', "module asm \"nop\""])
def test_ir_of_an_unknown_shape_stays_whole(extra):
    text = _module() + extra + "\n"
    assert split.split(text, 3, min_lines=1) == [text]


@pytest.fixture
def one_worker(monkeypatch):
    """A worker even on a machine of one CPU, parts of any size; ended afterwards."""
    monkeypatch.setenv("LLGRAD_COMPILE_WORKERS", "1")
    monkeypatch.setattr(workers, "MIN_PART_LINES", 50)
    workers.stop()
    workers.start()
    yield
    workers.stop()


def _problem():
    rng = np.random.default_rng(0)
    params = {"w1": rng.standard_normal((12, 16)), "b1": rng.standard_normal(16),
              "w2": rng.standard_normal((16, 3)), "b2": rng.standard_normal(3)}
    x = rng.standard_normal((8, 12))
    y = np.eye(3)[rng.integers(0, 3, 8)]
    return params, x, y


def _compiled(tmp_path, monkeypatch, name):
    """The MLP's value and gradient compiled into the cache ``name``: (staged, value,
    gradient, the compiled module's metadata)."""
    monkeypatch.setenv("LLGRAD_CACHE_DIR", str(tmp_path / name))
    params, x, y = _problem()
    staged = llgrad.value_and_grad(mlp_loss)
    value, grad = staged(params, x, y)
    meta = staged.trace(params, x, y).executable._compiled.meta
    return staged, value, grad, meta


def test_a_gradient_compiled_in_parts_equals_one_compiled_whole(tmp_path, monkeypatch,
                                                                one_worker):
    _, value, parted, meta = _compiled(tmp_path, monkeypatch, "parts")
    assert len(meta.get("objects", [])) == 2
    monkeypatch.setenv("LLGRAD_COMPILE_WORKERS", "0")
    workers.stop()
    _, whole_value, whole, meta = _compiled(tmp_path, monkeypatch, "whole")
    assert "objects" not in meta
    assert value == whole_value
    for key in whole:
        np.testing.assert_array_equal(parted[key], whole[key])
    params, x, y = _problem()
    np.testing.assert_allclose(value, mlp_loss(params, x, y), rtol=1e-14)
    step = 1e-6                 # a central difference along w1[2, 3]
    plus, minus = ({**params, "w1": params["w1"].copy()} for _ in range(2))
    plus["w1"][2, 3] += step
    minus["w1"][2, 3] -= step
    slope = (mlp_loss(plus, x, y) - mlp_loss(minus, x, y)) / (2 * step)
    np.testing.assert_allclose(parted["w1"][2, 3], slope, rtol=1e-6)


def test_a_cached_module_of_parts_loads_whole_with_its_assembly(tmp_path, monkeypatch,
                                                                one_worker):
    _, _, first, _ = _compiled(tmp_path, monkeypatch, "cache")
    monkeypatch.setattr(engine, "optimize", lambda *a, **k: pytest.fail("compiled again"))
    staged, _, second, meta = _compiled(tmp_path, monkeypatch, "cache")
    assert len(meta["objects"]) == 2
    for key in first:
        np.testing.assert_array_equal(second[key], first[key])
    asm = staged.trace(*_problem()).asm
    assert asm.count(".note.GNU-stack") == 2     # one module each
    assert "dot_general" in asm and "reduce_max" in asm


@pytest.mark.parametrize("behaviour", [
    "sys.stdin.buffer.readline()",                                 # dies on a request
    "sys.stdin.buffer.readline(); print('not an answer', flush=True)",
    "sys.stdin.buffer.readline(); print('{\"object_bytes\": 99, \"ir_bytes\": 0}', flush=True)",
])
def test_a_worker_that_fails_costs_only_time(tmp_path, monkeypatch, one_worker, behaviour):
    import subprocess
    import sys
    workers.stop()
    workers._workers.append(subprocess.Popen(
        [sys.executable, "-c", f"import sys; {behaviour}"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE))
    monkeypatch.setattr(workers, "start", lambda: None)
    _, _, parted, meta = _compiled(tmp_path, monkeypatch, "failed")
    assert workers._retired[0] and workers._workers[0].poll() is not None
    assert len(meta["objects"]) == 2            # both parts, the second compiled here
    monkeypatch.setenv("LLGRAD_COMPILE_WORKERS", "0")
    _, _, whole, _ = _compiled(tmp_path, monkeypatch, "whole")
    for key in whole:
        np.testing.assert_array_equal(parted[key], whole[key])


def test_bad_ir_raises_here_and_leaves_the_worker_in_step(one_worker):
    text = _module()
    good = split.split(text, 2, min_lines=1)
    assert len(good) == 2
    broken = text.replace('define void @"entry"', 'define void @"entry" garbage', 1)
    compile_here = lambda t: pipeline.compile_object(t, engine.new_target_machine())  # noqa: E731
    with pytest.raises(RuntimeError):
        workers.compile_module(broken, compile_here, engine.context()[2:], 3)
    parts = workers.compile_module(text, compile_here, engine.context()[2:], 3)
    assert len(parts) == 2
    np.testing.assert_array_equal(_run([obj for obj, _ in parts], compiled=True)[0],
                                  _run([text])[0])


@pytest.mark.parametrize("setting, expected", [("0", 0), ("3", 3)])
def test_the_worker_count_follows_the_setting(monkeypatch, setting, expected):
    monkeypatch.setenv("LLGRAD_COMPILE_WORKERS", setting)
    assert workers.count() == expected


def test_a_bad_worker_count_is_named(monkeypatch):
    monkeypatch.setenv("LLGRAD_COMPILE_WORKERS", "two")
    with pytest.raises(ValueError, match="LLGRAD_COMPILE_WORKERS='two'"):
        workers.count()


def test_no_workers_by_default_on_one_cpu_or_beside_mpi(monkeypatch):
    import sys
    monkeypatch.delenv("LLGRAD_COMPILE_WORKERS", raising=False)
    monkeypatch.setattr(workers.os, "sched_getaffinity", lambda pid: {0})
    assert workers.count() == 0
    monkeypatch.setattr(workers.os, "sched_getaffinity", lambda pid: set(range(64)))
    assert workers.count() == workers.MAX_WORKERS
    monkeypatch.setitem(sys.modules, "mpi4py.MPI", object())
    assert workers.count() == 0


def _rnn_loss(w, xs):
    """A tanh RNN through ``llgrad.scan``: its gradient's loops have bodies of their own."""
    def step(h, x):
        h = np.tanh(h @ w + x)
        return h, np.sum(h * h)
    _, ys = llgrad.scan(step, np.zeros((4, 6)), xs)
    return np.sum(ys) + np.sum(np.exp(-(w * w)))


def _wide_loss(w, x):
    """Elementwise kernels large enough to run split across the pool's threads."""
    h = np.tanh(x @ w)
    return np.mean(np.log1p(h * h)) + np.sum(np.sin(x) * np.cos(x))


PROGRAMS = {
    "scan": (_rnn_loss, lambda rng: (0.3 * rng.standard_normal((6, 6)),
                                     rng.standard_normal((5, 4, 6)))),
    "pool": (_wide_loss, lambda rng: (0.1 * rng.standard_normal((64, 64)),
                                      rng.standard_normal((4096, 64)))),
}


@pytest.mark.parametrize("checked", [False, True], ids=["plain", "debug_nans"])
@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_programs_of_every_shape_compile_in_parts_to_the_same_bits(
        program, checked, tmp_path, monkeypatch, one_worker):
    """Loops, pool tasks called through pointers, NaN checks (state the entry and the
    kernels share): the parts compute what the whole module computes."""
    loss, make = PROGRAMS[program]
    args = make(np.random.default_rng(0))
    monkeypatch.setenv("LLGRAD_THREADS", "2")
    results = {}
    for workers_setting in ("1", "0"):
        monkeypatch.setenv("LLGRAD_COMPILE_WORKERS", workers_setting)
        monkeypatch.setenv("LLGRAD_CACHE_DIR", str(tmp_path / workers_setting))
        workers.start()
        with llgrad.debug_nans(checked):
            staged = llgrad.value_and_grad(loss)
            results[workers_setting] = staged(*args)
            meta = staged.trace(*args).executable._compiled.meta
        assert ("objects" in meta) == (workers_setting == "1")
    (value, grad), (whole_value, whole_grad) = results["1"], results["0"]
    assert value == whole_value
    np.testing.assert_array_equal(grad, whole_grad)
    step = 1e-6
    direction = np.random.default_rng(1).standard_normal(args[0].shape)
    slope = (loss(args[0] + step * direction, *args[1:])
             - loss(args[0] - step * direction, *args[1:])) / (2 * step)
    np.testing.assert_allclose(np.sum(grad * direction), slope, rtol=1e-6)


def test_a_forked_child_compiles_with_workers_of_its_own(tmp_path, monkeypatch, one_worker):
    """A child forked after the parent started its worker must not share its pipes: it
    compiles alone (or with a worker it starts), and the parent's worker stays in step."""
    import os
    parent_worker = workers._workers[0]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:                                    # the child: report, never return
        ok = False
        try:
            shared = any(w is parent_worker for w in workers._workers)
            _, _, grad, _ = _compiled(tmp_path, monkeypatch, "child")
            ok = not shared and bool(np.isfinite(grad["w1"]).all())
        finally:
            os.write(write, b"ok" if ok else b"no")
            os._exit(0)
    os.close(write)
    answer = os.read(read, 2)
    os.waitpid(pid, 0)
    assert answer == b"ok"
    assert workers._workers == [parent_worker] and parent_worker.poll() is None
    _, _, parted, meta = _compiled(tmp_path, monkeypatch, "parent")
    assert len(meta["objects"]) == 2
    monkeypatch.setenv("LLGRAD_COMPILE_WORKERS", "0")
    _, _, whole, _ = _compiled(tmp_path, monkeypatch, "whole")
    for key in whole:
        np.testing.assert_array_equal(parted[key], whole[key])
