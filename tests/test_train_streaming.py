"""A ``loop`` whose trip count is a runtime value, ``train`` reusing one compiled loop
for every chunk length, and prefetching the next minibatch (results unchanged)."""
from __future__ import annotations

import numpy as np
import pytest

from models import mlp_loss

import llgrad
from llgrad import optim
from llgrad.compiler.autodiff.batching import vmap
from llgrad.compiler.autodiff.forward import jvp
from llgrad.compiler.autodiff.reverse import vjp
from llgrad.compiler.codegen.build import compile_graph
from llgrad.ir import Builder, Graph, TensorType, interpret
from llgrad.ir.errors import GradientError, ShapeError, UnsupportedError
from llgrad.train import compiled_loops

F64 = "float64"
BOUND = 6


def _param(b, i, shape, dtype, name):
    return b.parameter(index=i, type=TensorType(shape, dtype), name=name)


def _params(b, *specs):
    """Parameters 0, 1, ... from (shape, dtype, name) triples."""
    return [_param(b, k, *spec) for k, spec in enumerate(specs)]


def _body():
    """(i, w[3], data[8,3]) -> (w * 0.9 + row i of data, sin(w) * i per step)."""
    b = Builder()
    i, w, data = _params(b, ((), "int64", "i"), ((3,), F64, "w"), ((8, 3), F64, "data"))
    r = b.reshape(b.dynamic_slice(data, i, size=1), shape=(3,))
    step = b.broadcast_to(b.convert(i, dtype=F64), (3,))
    return Graph([i, w, data], [b.add(b.mul(w, b.full(0.9, w.type)), r),
                                b.mul(b.sin(w), step)], name="body")


def _counted_graph():
    b = Builder()
    w0, data, count = _params(b, ((3,), F64, "w0"), ((8, 3), F64, "data"),
                              ((), "int64", "count"))
    loop = b.loop(w0, data, count, body=_body(), trip_count=BOUND, n_carried=1,
                  runtime_count=True)
    return Graph([w0, data, count], [b.tuple_get(loop, index=0),
                                     b.tuple_get(loop, index=1)], name="counted")


def _python_loop(w, data, count):
    """The oracle: the body's arithmetic in a plain Python loop."""
    history = np.zeros((BOUND, 3))
    for i in range(min(max(count, 0), BOUND)):
        history[i] = np.sin(w) * i
        w = w * 0.9 + data[i]
    return w, history


def test_one_compiled_loop_runs_every_count():
    g = _counted_graph()
    exe = compile_graph(g)
    rng = np.random.default_rng(0)
    w0, data = rng.standard_normal(3), rng.standard_normal((8, 3))
    for count in [0, 1, 2, 5, 6, 9, -3, 3]:    # past the bound or below 0: clamped
        got = exe(w0, data, np.int64(count))
        want = _python_loop(w0, data, count)
        for a, b, c in zip(got, want, interpret(g, w0, data, np.int64(count))):
            np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)
            np.testing.assert_allclose(a, c, rtol=1e-14, atol=1e-15)


def test_runtime_count_must_be_an_int64_scalar():
    b = Builder()
    w0 = _param(b, 0, (3,), F64, "w0")
    data = _param(b, 1, (8, 3), F64, "data")
    with pytest.raises(ShapeError, match="runtime trip count"):
        b.loop(w0, data, b.const(2.0, F64), body=_body(), trip_count=BOUND, n_carried=1,
               runtime_count=True)


def test_forward_mode_keeps_the_runtime_count_and_reverse_mode_refuses_it():
    g = _counted_graph()
    tangent = jvp(g, [0])
    exe = compile_graph(tangent)
    rng = np.random.default_rng(1)
    w0, data, dw = rng.standard_normal(3), rng.standard_normal((8, 3)), rng.standard_normal(3)
    eps = 1e-6
    for count in [2, 5]:
        got = exe(w0, data, np.int64(count), dw)
        plus = _python_loop(w0 + eps * dw, data, count)
        minus = _python_loop(w0 - eps * dw, data, count)
        for t, p, m in zip(got[len(g.outputs):], plus, minus):
            np.testing.assert_allclose(t, (p - m) / (2 * eps), rtol=1e-6, atol=1e-7)
    with pytest.raises(GradientError, match="runtime value"):
        vjp(g, [0], cotangents=True)


def test_vmap_keeps_a_shared_count_and_refuses_one_per_example():
    g = _counted_graph()
    batched = vmap(g, [0, None, None], [0, 0], 4)
    rng = np.random.default_rng(2)
    w0, data = rng.standard_normal((4, 3)), rng.standard_normal((8, 3))
    got = compile_graph(batched)(w0, data, np.int64(4))
    for k in range(4):
        for a, b in zip(got, _python_loop(w0[k], data, 4)):
            np.testing.assert_allclose(a[k], b, rtol=1e-13, atol=1e-13)
    with pytest.raises(UnsupportedError, match="differs per example"):
        vmap(g, [0, None, 0], [0, 0], 4)


def _problem(n=120, seed=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5))
    y = np.eye(3)[(x[:, 0] > 0).astype(int) + (x[:, 1] > 0)]
    params = {"w1": rng.normal(size=(5, 8)) * 0.5, "b1": np.zeros(8),
              "w2": rng.normal(size=(8, 3)) * 0.5, "b2": np.zeros(3)}
    return params, x, y


def _equal(a, b):
    """Two parameter dicts (or two gradient-norm dicts) equal bit for bit."""
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.parametrize("shuffle", [None, 7], ids=["in-order", "shuffled"])
def test_prefetching_changes_no_bit_of_the_result(shuffle):
    params, x, y = _problem()
    runs = {p: llgrad.train(mlp_loss, params, (x, y), optim.adam(1e-2), batch_size=16,
                            epochs=3, shuffle=shuffle, prefetch=p) for p in (True, False)}
    on, off = runs[True], runs[False]
    assert "prefetch_rows" in str(on.graph) and "prefetch_rows" not in str(off.graph)
    np.testing.assert_array_equal(on.loss_history, off.loss_history)
    _equal(on.params, off.params)
    _equal(on.grad_norms, off.grad_norms)
    interpreted = llgrad.train(mlp_loss, params, (x, y), optim.adam(1e-2), batch_size=16,
                               epochs=3, shuffle=shuffle, backend="interpret")
    np.testing.assert_allclose(on.loss_history, interpreted.loss_history, rtol=1e-12)


def test_another_number_of_epochs_reuses_the_compiled_loop():
    params, x, y = _problem(seed=4)
    opt = optim.sgd(0.1)
    before = compiled_loops()
    one = llgrad.train(mlp_loss, params, (x, y), opt, batch_size=16, epochs=1)
    assert compiled_loops() == before + 1
    three = llgrad.train(mlp_loss, one.params, (x, y), opt, batch_size=16, epochs=3,
                         opt_state=one.opt_state)
    chunked = llgrad.train(mlp_loss, params, (x, y), opt, batch_size=16, epochs=4,
                           steps_per_call=5)        # shorter chunks: the same loop again
    assert compiled_loops() == before + 1
    assert three.compile_seconds == 0 and chunked.compile_seconds == 0
    fresh = llgrad.train(mlp_loss, params, (x, y), opt, batch_size=16, epochs=4)
    assert len(one.loss_history) == 7 and len(three.loss_history) == 21
    np.testing.assert_array_equal(np.concatenate([one.loss_history, three.loss_history]),
                                  fresh.loss_history)
    np.testing.assert_array_equal(chunked.loss_history, fresh.loss_history)
    _equal(three.params, fresh.params)
    _equal(chunked.params, fresh.params)


def test_prefetch_rows_is_a_zero_token_and_a_prefetch_in_the_code():
    b = Builder()
    x = _param(b, 0, (10, 37), "float32", "x")
    order = _param(b, 1, (12,), "int64", "order")
    start = _param(b, 2, (), "int64", "start")
    token = b.prefetch_rows(x, order, start, rows=4)
    g = Graph([x, order, start], [b.add(start, token)], name="prefetching")
    exe = compile_graph(g)
    x_value = np.ones((10, 37), np.float32)
    order_value = np.array([3, -5, 99, 0, 9, 2, 1, 1, 4, 5, 6, 7])   # clamped into range
    for first in [0, 9, 11, 40, -8]:                                   # so is the start
        assert exe(x_value, order_value, np.int64(first))[0] == first
        assert interpret(g, x_value, order_value, np.int64(first))[0] == first
    assert "prefetch" in exe.asm
