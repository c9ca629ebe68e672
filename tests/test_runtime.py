"""Calling compiled graphs: argument checks, outputs, fusion, inspection, threads."""
from __future__ import annotations

import functools
import re

import numpy as np
import pytest
from helpers import run_threads

from llgrad.compiler.codegen.build import compile_graph
from llgrad.ir import Builder, Graph, TensorType, interpret
from llgrad.ir.errors import DTypeError, ShapeError


def _params(b, *specs):
    return [b.parameter(index=i, type=TensorType(shape, dt), name=name)
            for i, (name, shape, dt) in enumerate(specs)]


@functools.lru_cache(maxsize=None)
def _mlp(fuse_ops=True, fastmath=False):
    """tanh MLP loss and a hand-written gradient of its last layer: a realistic mix."""
    b = Builder()
    x, w1, b1, w2, y = _params(b, ("x", (16, 8), "float64"), ("w1", (8, 32), "float64"),
                               ("b1", (32,), "float64"), ("w2", (32, 1), "float64"),
                               ("y", (16, 1), "float64"))
    mm = lambda a, c: b.dot_general(a, c, dims=(((1,), (0,)), ((), ())))  # noqa: E731
    h = b.tanh(b.add(mm(x, w1), b.broadcast_in_dim(b1, shape=(16, 32), dims=(1,))))
    r = b.sub(mm(h, w2), y)
    loss = b.div(b.reduce_sum(b.mul(r, r), axes=(0, 1)), b.const(16.0, "float64"))
    g_w2 = b.dot_general(h, b.mul(r, b.full(2 / 16, r.type)), dims=(((0,), (0,)), ((), ())))
    g = Graph([x, w1, b1, w2, y], [loss, g_w2, h], name="mlp")
    return g, compile_graph(g, fuse_ops=fuse_ops, fastmath=fastmath)


def _mlp_args(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) for s in [(16, 8), (8, 32), (32,), (32, 1), (16, 1)]]


@pytest.mark.parametrize("fuse_ops", [True, False], ids=["fused", "unfused"])
def test_mlp_graph_matches_interpreter(fuse_ops):
    g, exe = _mlp(fuse_ops)
    args = _mlp_args()
    for got, want in zip(exe(*args), interpret(g, *args)):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)


def test_fusion_puts_the_elementwise_chain_in_one_kernel():
    g, exe = _mlp(True)
    fusion, _ = exe.plan
    ops = [k.node.op for k in fusion.kernels]
    assert ops.count("add") == 0 and "broadcast_in_dim" not in ops  # fused into tanh
    assert len(fusion.kernels) < len(g.nodes) - len(g.inputs)


def test_fastmath_results_stay_close():
    g, exe = _mlp(True, True)
    args = _mlp_args(1)
    for got, want in zip(exe(*args), interpret(g, *args)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_memory_plan_reuses_arena_bytes():
    b = Builder()
    (x,) = _params(b, ("x", (256,), "float64"))
    v = x
    for _ in range(6):   # each step materialised (two readers), each dead two steps later
        v = b.tanh(b.add(b.exp(v), b.sin(v)))
    g = Graph([x], [b.reduce_sum(v, axes=(0,))], name="chain")
    exe = compile_graph(g, fuse_ops=False)
    assert 0 < exe.arena_bytes <= 3 * 256 * 8
    arg = np.linspace(-1, 1, 256)
    np.testing.assert_allclose(exe(arg)[0], interpret(g, arg)[0], rtol=1e-12)


# ----------------------------------------------------------------------------------
# argument checking

@functools.lru_cache(maxsize=None)
def _two_args():
    b = Builder()
    x, n = _params(b, ("x", (2, 3), "float64"), ("n", (), "int64"))
    g = Graph([x, n], [b.mul(x, b.broadcast_in_dim(b.convert(n, dtype="float64"),
                                                   shape=(2, 3), dims=()))], name="scale")
    return compile_graph(g)


def test_wrong_argument_count_names_the_function():
    with pytest.raises(ShapeError, match=r"scale\(\) takes 2 arguments \(x, n\), got 1"):
        _two_args()(np.ones((2, 3)))


def test_wrong_shape_names_argument_and_shapes():
    with pytest.raises(ShapeError, match=r"scale\(\): argument 'x' has shape \(3, 2\), "
                                         r"expected \(2, 3\)"):
        _two_args()(np.ones((3, 2)), 2)


def test_wrong_dtype_names_argument_and_dtypes():
    with pytest.raises(DTypeError, match=r"scale\(\): argument 'x' has dtype float32, "
                                         r"expected float64"):
        _two_args()(np.ones((2, 3), np.float32), 2)
    with pytest.raises(DTypeError, match=r"argument 'n' has dtype float64, expected int64"):
        _two_args()(np.ones((2, 3)), 2.5)


def test_python_scalars_lists_and_strided_arrays_are_converted():
    x = np.arange(12.0).reshape(3, 4)[:, ::2].T   # non-contiguous view
    (out,) = _two_args()(x, 3)
    np.testing.assert_array_equal(out, 3 * x)
    (out,) = _two_args()([[1, 2, 3], [4, 5, 6]], np.int32(2))
    np.testing.assert_array_equal(out, [[2, 4, 6], [8, 10, 12]])


# ----------------------------------------------------------------------------------
# outputs

def test_multiple_outputs_duplicates_inputs_and_constants_are_fresh_arrays():
    b = Builder()
    (x,) = _params(b, ("x", (3,), "float64"))
    c = b.const(np.array([1.0, 2.0, 3.0]), "float64")
    s = b.const(7, "int64")
    y = b.exp(x)
    g = Graph([x], [x, y, y, c, s, b.reshape(y, shape=(3, 1)), b.reshape(x, shape=(1, 3))],
              name="outs")
    exe = compile_graph(g)
    arg = np.array([0.0, 1.0, 2.0])
    outs = exe(arg)
    want = interpret(g, arg)
    for got, w in zip(outs, want):
        np.testing.assert_allclose(got, w, rtol=1e-15)
        assert got.dtype == w.dtype and got.shape == w.shape
    assert outs[0] is not arg and not np.shares_memory(outs[0], arg)
    assert len({id(o) for o in outs}) == len(outs)
    outs[3][0] = 99.0        # mutating a result never changes the next call's results
    assert exe(arg)[3][0] == 1.0


def test_outputs_are_fresh_on_every_call():
    _, exe = _mlp()
    args = _mlp_args()
    first, second = exe(*args), exe(*args)
    for a, b in zip(first, second):
        assert a is not b and not np.shares_memory(a, b)
        np.testing.assert_array_equal(a, b)


def test_graph_without_inputs():
    b = Builder()
    g = Graph([], [b.iota(shape=(2, 3), dtype="float32", axis=1)], name="iota")
    (out,) = compile_graph(g)()
    np.testing.assert_array_equal(out, np.tile(np.arange(3, dtype=np.float32), (2, 1)))


# ----------------------------------------------------------------------------------
# inspection and threads

def test_llvm_ir_optimised_ir_and_assembly_are_inspectable():
    _, exe = _mlp()
    assert 'define void @"llgrad_mlp"(ptr' in exe.llvm_ir
    assert "noalias" in exe.llvm_ir
    assert "llgrad_mlp" in exe.llvm_ir_optimized
    assert "llgrad_mlp" in exe.asm and exe.graph.name == "mlp"


def test_elementwise_loop_is_vectorised():
    b = Builder()
    x, y = _params(b, ("x", (1024,), "float64"), ("y", (1024,), "float64"))
    g = Graph([x, y], [b.add(b.mul(x, y), x)], name="axpy")
    optimized = compile_graph(g).llvm_ir_optimized
    assert "<4 x double>" in optimized or "<8 x double>" in optimized


def test_concurrent_calls_use_separate_arenas():
    g, exe = _mlp(False)
    args = [_mlp_args(seed) for seed in range(4)]
    want = [interpret(g, *a) for a in args]
    errors = []

    def worker(k):
        for _ in range(50):
            for got, w in zip(exe(*args[k]), want[k]):
                if not np.allclose(got, w, rtol=1e-12, atol=1e-12):
                    errors.append(k)

    run_threads(worker, n=4)
    assert not errors


def test_outputs_still_held_are_never_overwritten():
    """Output memory is recycled only when the caller dropped every output array."""
    b = Builder()
    x = b.parameter(index=0, type=TensorType((4,), "float64"), name="x")
    exe = compile_graph(Graph([x], [b.mul(x, x), b.neg(x)], name="held"))
    first = exe(np.arange(4.0))
    view = exe(np.ones(4))[0][:2]            # the list is dropped, a view survives
    second = exe(np.full(4, 3.0))
    np.testing.assert_array_equal(first[0], np.arange(4.0) ** 2)
    np.testing.assert_array_equal(view, [1.0, 1.0])
    np.testing.assert_array_equal(second[1], np.full(4, -3.0))
    addresses = {o.ctypes.data for o in second}
    del second
    third = exe(np.full(4, 5.0))              # nothing held: the memory is reused
    assert {o.ctypes.data for o in third} == addresses
    np.testing.assert_array_equal(third[0], np.full(4, 25.0))
    np.testing.assert_array_equal(first[1], -np.arange(4.0))
    np.testing.assert_array_equal(view, [1.0, 1.0])


def _cached_graph():
    b = Builder()
    x = b.parameter(index=0, type=TensorType((5,), "float64"), name="x")
    return Graph([x], [b.exp(b.mul(x, b.full(3.0, x.type)))], name="cached")


def test_object_cache_skips_llvm_on_a_second_compile(tmp_path, monkeypatch):
    from llgrad.runtime import engine
    monkeypatch.setenv("LLGRAD_CACHE_DIR", str(tmp_path))
    first = compile_graph(_cached_graph())
    assert len(list(tmp_path.glob("*.obj"))) == 1

    def no_llvm(*args, **kwargs):
        raise AssertionError("a cached module was optimised again")

    monkeypatch.setattr(engine, "optimize", no_llvm)
    second = compile_graph(_cached_graph())
    x = np.linspace(-1, 1, 5)
    np.testing.assert_array_equal(second(x)[0], first(x)[0])
    np.testing.assert_allclose(second(x)[0], np.exp(3 * x), rtol=1e-15)
    assert "fmul" in second.llvm_ir_optimized or "fmul" in first.llvm_ir_optimized


@pytest.mark.parametrize("damage", ["garbage", "flipped byte"])
def test_corrupt_cache_entry_is_a_miss(damage, tmp_path, monkeypatch):
    monkeypatch.setenv("LLGRAD_CACHE_DIR", str(tmp_path))
    compile_graph(_cached_graph())
    (entry,) = tmp_path.glob("*.obj")
    if damage == "garbage":
        entry.write_bytes(b"not an object file")
    else:
        broken = bytearray(entry.read_bytes())
        broken[len(broken) // 2] ^= 0xFF
        entry.write_bytes(bytes(broken))
    with pytest.warns(RuntimeWarning, match="ignoring the cache entry"):
        exe = compile_graph(_cached_graph())
    np.testing.assert_allclose(exe(np.ones(5))[0], np.exp(3 * np.ones(5)), rtol=1e-15)


def test_cache_can_be_turned_off(tmp_path, monkeypatch):
    monkeypatch.setenv("LLGRAD_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("LLGRAD_NO_CACHE", "1")
    compile_graph(_cached_graph())
    assert list(tmp_path.glob("*.obj")) == []


def test_staged_calls_do_not_keep_arrays_alive():
    """No reference cycles around arguments or results: memory is freed at once, not
    whenever the garbage collector runs."""
    import gc
    import weakref

    import llgrad
    f = llgrad.grad(lambda p: (p["w"] * p["w"]).sum())
    f({"w": np.ones(3)})
    gc.disable()
    try:
        params = {"w": np.ones(3)}
        ref = weakref.ref(params["w"])
        first = f(params)["w"]
        del params
        assert ref() is None
        second = f({"w": np.ones(3)})["w"]     # `first` still held: a new array
        assert second is not first and not np.shares_memory(first, second)
        address = second.ctypes.data
        del second
        assert f({"w": np.ones(3)})["w"].ctypes.data == address  # freed at once, reused
    finally:
        gc.enable()


def test_read_only_and_empty_inputs_are_passed_correctly():
    b = Builder()
    x = b.parameter(index=0, type=TensorType((3,), "float64"), name="x")
    e = b.parameter(index=1, type=TensorType((0,), "float64"), name="e")
    exe = compile_graph(Graph([x, e], [b.add(x, x), b.reduce_sum(e, axes=(0,))]))
    frozen = np.arange(3.0)
    frozen.setflags(write=False)
    doubled, total = exe(frozen, np.zeros(0))
    np.testing.assert_array_equal(doubled, [0.0, 2.0, 4.0])
    assert total == 0.0


def test_repeated_layers_share_their_kernels():
    """A deep network emits each distinct kernel once, so LLVM's work does not grow
    with depth; the shared kernels still compute every layer right."""
    import llgrad
    rng = np.random.default_rng(8)

    def loss(layers, x):
        for layer in layers:
            x = np.tanh(x @ layer["w"] + layer["b"])
        return (x * x).mean()

    def kernel_count(depth):
        layers = [{"w": rng.normal(size=(6, 6)) / 3, "b": rng.normal(size=6)}
                  for _ in range(depth)]
        x = rng.normal(size=(4, 6))
        trace = llgrad.grad(loss).trace(layers, x)
        native = llgrad.grad(loss)(layers, x)
        reference = llgrad.grad(loss, backend="interpret")(layers, x)
        for got, want in zip(native, reference):
            for k in got:
                np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=1e-15)
        # (a graph of more than CALLS_PER_PART kernels also gets functions that only
        # call kernels, ``.partN``: not kernels, and not shared)
        defined = re.findall(r'define [^@]*@"?([^"(]+)', trace.llvm_ir)
        return sum(1 for name in defined if not re.search(r"\.part\d+$", name))

    shallow, deep = kernel_count(5), kernel_count(30)
    assert shallow == deep and 5 < deep < 30
