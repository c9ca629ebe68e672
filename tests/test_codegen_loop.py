"""``loop`` and ``tuple_get`` in native code agree with the interpreter."""
from __future__ import annotations

import numpy as np
import pytest

from llgrad.compiler.codegen.build import compile_graph
from llgrad.ir import Builder, Graph, TensorType, interpret

F64 = "float64"


def _param(b, i, shape, dtype, name):
    return b.parameter(index=i, type=TensorType(shape, dtype), name=name)


def _minibatch_body():
    """(i, w[3], data[8,3]) -> (w + sum of rows 2i, 2i+1 of data, tanh(w) per step)."""
    b = Builder()
    i = _param(b, 0, (), "int64", "i")
    w = _param(b, 1, (3,), F64, "w")
    data = _param(b, 2, (8, 3), F64, "data")
    start = b.mul(i, b.const(2, "int64"))
    rows = b.dynamic_slice(data, start, size=2)
    return Graph([i, w, data], [b.add(w, b.reduce_sum(rows, axes=(0,))), b.tanh(w)],
                 name="body")


def _loop_graph(trip, body, init_constant=False):
    b = Builder()
    w0 = _param(b, 0, (3,), F64, "w0")
    data = _param(b, 1, (8, 3), F64, "data")
    init = b.full(0.5, w0.type) if init_constant else w0
    loop = b.loop(init, data, body=body, trip_count=trip, n_carried=1)
    final, history = b.tuple_get(loop, index=0), b.tuple_get(loop, index=1)
    return Graph([w0, data], [final, history, b.reshape(history, shape=(trip * 3,)),
                              b.mul(final, w0)], name="train")


@pytest.mark.parametrize("trip", [0, 1, 4, 6])
@pytest.mark.parametrize("init_constant", [False, True])
def test_loop_with_dynamic_slice_matches_interpreter(trip, init_constant):
    g = _loop_graph(trip, _minibatch_body(), init_constant)
    exe = compile_graph(g)
    rng = np.random.default_rng(trip)
    args = [rng.standard_normal(3), rng.standard_normal((8, 3))]
    for got, want in zip(exe(*args), interpret(g, *args)):
        np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-14)


def test_nested_loops():
    inner = _minibatch_body()
    b = Builder()
    i = _param(b, 0, (), "int64", "i")
    w = _param(b, 1, (3,), F64, "w")
    data = _param(b, 2, (8, 3), F64, "data")
    loop = b.loop(w, data, body=inner, trip_count=3, n_carried=1)
    outer = Graph([i, w, data], [b.tuple_get(loop, index=0)], name="outer")
    b = Builder()
    w0 = _param(b, 0, (3,), F64, "w0")
    d = _param(b, 1, (8, 3), F64, "data")
    g = Graph([w0, d], [b.tuple_get(b.loop(w0, d, body=outer, trip_count=2, n_carried=1),
                                    index=0)], name="nested")
    args = [np.ones(3), np.arange(24.0).reshape(8, 3)]
    np.testing.assert_allclose(compile_graph(g)(*args)[0], interpret(g, *args)[0],
                               rtol=1e-14)


def test_body_that_returns_its_inputs_unchanged():
    b = Builder()
    i = _param(b, 0, (), "int64", "i")
    w = _param(b, 1, (2,), F64, "w")
    body = Graph([i, w], [w, w, i], name="identity")
    b = Builder()
    w0 = _param(b, 0, (2,), F64, "w0")
    loop = b.loop(w0, body=body, trip_count=3, n_carried=1)
    g = Graph([w0], [b.tuple_get(loop, index=k) for k in range(3)], name="same")
    args = [np.array([1.0, 2.0])]
    for got, want in zip(compile_graph(g)(*args), interpret(g, *args)):
        np.testing.assert_array_equal(got, want)
