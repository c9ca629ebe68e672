"""The on-disk cache hit path: keyed by the optimised graph and the codegen options,
a hit loads object code without generating any, and anything that changes the code
misses.  Oracles: numpy for the values, the first compile for the bits and the IR."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from llgrad.compiler.codegen import build as pipeline
from llgrad.compiler.codegen import module as codegen_module
from llgrad.compiler.codegen.build import compile_graph
from llgrad.ir import Builder, Graph, TensorType
from llgrad.ir.fingerprint import fingerprint
from llgrad.runtime import cache, engine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _graph(scale=3.0, shape=(5,), name="cached", op="exp", swap=False):
    b = Builder()
    x = b.parameter(index=0, type=TensorType(shape, "float64"), name="x")
    y = b.parameter(index=1, type=TensorType(shape, "float64"), name="y")
    value = b.emit(op, b.mul(x, b.full(scale, x.type)))
    outputs = [value, b.sub(value, y)]
    return Graph([x, y], outputs[::-1] if swap else outputs, name=name)


def _oracle(x, y, scale=3.0, op="exp", swap=False):
    value = getattr(np, op)(x * scale)
    outputs = [value, value - y]
    return outputs[::-1] if swap else outputs


def _entries(path):
    return sorted(path.glob("*.obj"))


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LLGRAD_CACHE_DIR", str(tmp_path))
    return tmp_path


def refuse_codegen(monkeypatch):
    """Code generation and LLVM's optimiser raise: only a cache hit can compile."""
    def refuse(*args, **kwargs):
        raise AssertionError("code was generated for a cached graph")
    monkeypatch.setattr(codegen_module, "build_module", refuse)
    monkeypatch.setattr(engine, "optimize", refuse)


def test_a_hit_generates_no_code_and_gives_identical_results(cache_dir, monkeypatch):
    first = compile_graph(_graph())
    assert len(_entries(cache_dir)) == 1
    refuse_codegen(monkeypatch)
    second = compile_graph(_graph())
    x, y = np.linspace(-1, 1, 5), np.arange(5.0)
    for got, same, want in zip(second(x, y), first(x, y), _oracle(x, y)):
        np.testing.assert_array_equal(got, same)
        np.testing.assert_allclose(got, want, rtol=1e-15)
    assert second.arena_bytes == first.arena_bytes
    assert second.llvm_ir_optimized == first.llvm_ir_optimized
    monkeypatch.undo()
    assert second.llvm_ir == first.llvm_ir          # regenerated on demand, the same
    assert second.plan[0].summary() == first.plan[0].summary()


def test_a_graph_rebuilt_apart_has_the_same_fingerprint():
    assert fingerprint(_graph()) == fingerprint(_graph())


GRAPH_CHANGES = {
    "constant": dict(scale=3.0000000000000004),
    "negative zero": dict(scale=-0.0),
    "shape": dict(shape=(6,)),
    "primitive": dict(op="sin"),
    "output order": dict(swap=True),
    "name (the entry symbol)": dict(name="other"),
}


@pytest.mark.parametrize("change", sorted(GRAPH_CHANGES))
def test_a_changed_graph_has_another_fingerprint(change):
    base = dict(scale=0.0) if change == "negative zero" else {}
    assert fingerprint(_graph(**base)) != fingerprint(_graph(**GRAPH_CHANGES[change]))


def test_input_order_is_part_of_the_fingerprint():
    def graph(swap):
        b = Builder()
        x = b.parameter(index=0, type=TensorType((2,), "float64"), name="x")
        y = b.parameter(index=1, type=TensorType((2,), "float64"), name="y")
        return Graph([y, x] if swap else [x, y], [b.sub(x, y)], name="g")
    assert fingerprint(graph(False)) != fingerprint(graph(True))


def test_constants_differ_by_dtype_and_by_bits():
    def graph(value):
        return Graph([], [Builder().emit("constant", value=np.asarray(value))], name="g")
    prints = [fingerprint(graph(v)) for v in (2, 2.0, True, 0.0, -0.0, np.float32(2.0))]
    assert len(set(prints)) == len(prints)
    assert fingerprint(graph(float("nan"))) == fingerprint(graph(float("nan")))


def _loop_graph(body_scale):
    body = Builder()
    i = body.parameter(index=0, type=TensorType((), "int64"), name="i")
    w = body.parameter(index=1, type=TensorType((3,), "float64"), name="w")
    body_graph = Graph([i, w], [body.mul(w, body.full(body_scale, w.type))], name="body")
    b = Builder()
    w0 = b.parameter(index=0, type=TensorType((3,), "float64"), name="w0")
    loop = b.loop(w0, body=body_graph, trip_count=4, n_carried=1)
    return Graph([w0], [b.tuple_get(loop, index=0)], name="looped")


def test_a_changed_loop_body_misses(cache_dir):
    assert fingerprint(_loop_graph(0.5)) == fingerprint(_loop_graph(0.5))
    assert fingerprint(_loop_graph(0.5)) != fingerprint(_loop_graph(0.25))
    w = np.array([1.0, -2.0, 3.0])
    for scale in (0.5, 0.25):
        np.testing.assert_allclose(compile_graph(_loop_graph(scale))(w)[0], w * scale ** 4,
                                   rtol=1e-15)
    assert len(_entries(cache_dir)) == 2


def test_an_attribute_of_an_unknown_kind_is_an_error_not_a_guess():
    b = Builder()
    x = b.parameter(index=0, type=object(), name="x")
    with pytest.raises(TypeError, match="fingerprint"):
        fingerprint(Graph([x], [x]))


OPTION_CHANGES = {
    "fastmath": dict(fastmath=True),
    "unfused": dict(fuse_ops=False),
    "scalar libm": dict(libmvec=False),
    "no BLAS": dict(blas=False),
    "BLAS threshold": dict(blas_min_flops=1),
    "threads": dict(threads=3),
    "profiled": dict(profile=True),
}


@pytest.mark.parametrize("change", sorted(OPTION_CHANGES))
def test_a_changed_codegen_option_misses(change, cache_dir):
    x, y = np.linspace(-1, 1, 5), np.arange(5.0)
    compile_graph(_graph())
    exe = compile_graph(_graph(), **OPTION_CHANGES[change])
    for got, want in zip(exe(x, y), _oracle(x, y)):
        np.testing.assert_allclose(got, want, rtol=1e-14)
    assert len(_entries(cache_dir)) == 2


def test_other_llgrad_source_misses(cache_dir, monkeypatch):
    compile_graph(_graph())
    monkeypatch.setitem(cache._state, "source", "an edited code generator")
    compile_graph(_graph())
    assert len(_entries(cache_dir)) == 2


def test_the_key_holds_the_resolved_options():
    """What the process found (vector ISAs, BLAS symbols, threads) is in the key, not
    just what the caller asked for: a key is valid wherever it is looked up."""
    options = pipeline.codegen_options(fastmath=False, fuse_ops=True, libmvec=True,
                                       blas=True, blas_min_flops=None, threads=None)
    key = json.loads(options.cache_key())
    assert key["vector_isas"] == list(engine.vector_isas())
    assert key["threads"] == options.threads >= 1


SECOND_PROCESS = textwrap.dedent("""
    import hashlib, sys
    import numpy as np, llgrad

    def loss(p, x, y):
        h = np.tanh(x @ p["w1"] + p["b1"])
        return np.mean((h @ p["w2"] - y) ** 2)

    rng = np.random.default_rng(0)
    p = {"w1": rng.standard_normal((8, 16)), "b1": rng.standard_normal(16),
         "w2": rng.standard_normal((16, 1))}
    x, y = rng.standard_normal((32, 8)), rng.standard_normal((32, 1))
    if sys.argv[1] == "hit":
        from llgrad.runtime import engine
        def refuse(*args, **kwargs):
            raise AssertionError("LLVM optimised a cached module")
        engine.optimize = refuse
    g = llgrad.grad(loss)(p, x, y)
    generated = "llgrad.compiler.codegen.module" in sys.modules
    ir = llgrad.grad(loss).trace(p, x, y).llvm_ir      # another Staged: a hit as well
    print(generated, *(g[k].tobytes().hex() for k in sorted(g)),
          hashlib.sha256(ir.encode()).hexdigest())
""")


def test_a_second_process_loads_the_gradient_without_generating_code(tmp_path):
    env = dict(os.environ, LLGRAD_CACHE_DIR=str(tmp_path), PYTHONPATH=ROOT)
    runs = [subprocess.run([sys.executable, "-c", SECOND_PROCESS, role], env=env,
                           capture_output=True, text=True, timeout=120)
            for role in ("miss", "hit")]
    for run in runs:
        assert run.returncode == 0, run.stderr
    (generated, *first), (not_generated, *second) = (r.stdout.split() for r in runs)
    assert generated == "True" and not_generated == "False"
    assert second == first         # gradients bit for bit, and the regenerated IR
    assert len(_entries(tmp_path)) == 1
