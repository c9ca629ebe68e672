"""``X @ w``, an elementwise kernel of it and ``X.T @ r`` streamed as one pass over
X's rows (``fusion._streams``, ``matvec._emit_stream``).

Oracles: the same graph compiled with the same kernels but nothing streamed (each of
the three its own call, one after another), bit for bit, on one, two and three
threads; numpy; the interpreter backend for gradients.  Blocks of rows are forced
small so that blocks, groups of rows and chunks never divide one another; the cases
that must not stream (the kernel reading z at another index, the second product over
another matrix or other rows of X) are checked to run apart and be right.
"""
from __future__ import annotations

import numpy as np
import pytest

import llgrad
from llgrad.compiler.codegen import fusion, matvec
from llgrad.compiler.codegen.build import compile_graph
from llgrad.compiler.codegen.fusion import fuse
from llgrad.compiler.codegen.options import CodegenOptions

RNG = np.random.default_rng(41)


def _logistic(w, X, y):
    z = X @ w
    return np.mean(np.log(1 + np.exp(z)) - y * z)


def _least_squares(w, X, y):
    return 0.5 * np.sum((X @ w - y) ** 2)


def _problem(rows, cols, dtype):
    X = RNG.standard_normal((rows, cols)).astype(dtype)
    y = (RNG.random(rows) < 0.5).astype(dtype)
    w = (RNG.standard_normal(cols) / np.sqrt(cols)).astype(dtype)
    return w, X, y


def _graph(fn, *args):
    staged = llgrad.jit(fn)
    staged(*args)
    return staged.trace(*args).executable.graph


def _streams(graph, threads=1):
    return fuse(graph, options=CodegenOptions(threads=threads)).streams


def _both(graph, args, threads, monkeypatch):
    """The graph's outputs compiled streamed and not (no cache: the key is the same)."""
    monkeypatch.setenv("LLGRAD_NO_CACHE", "1")
    fused = compile_graph(graph, threads=threads)(*args)
    with monkeypatch.context() as apart_only:
        apart_only.setattr(fusion, "_streams", lambda *a: {})
        apart = compile_graph(graph, threads=threads)(*args)
    return fused, apart


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("loss", [_logistic, _least_squares])
@pytest.mark.parametrize("rows,cols", [(5003, 37), (700, 30), (2049, 200)])
def test_a_linear_models_gradient_streams_and_equals_its_kernels_one_by_one(
        loss, dtype, threads, rows, cols, monkeypatch):
    monkeypatch.setattr(matvec, "STREAM_BLOCK_SHARE", 1 << 12)   # blocks of a few rows
    w, X, y = _problem(rows, cols, dtype)
    graph = _graph(llgrad.grad(loss), w, X, y)
    assert len(_streams(graph, threads)) == 1
    fused, apart = _both(graph, (w, X, y), threads, monkeypatch)
    np.testing.assert_array_equal(fused[0], apart[0])
    interpreted = llgrad.grad(loss, backend="interpret")(w, X, y)
    tol = 1e-12 if dtype == "float64" else 2e-4
    np.testing.assert_allclose(fused[0], interpreted, rtol=tol,
                               atol=tol * np.abs(interpreted).max())


def test_blocks_of_any_size_give_the_same_bits(monkeypatch):
    """Blocks from 4 rows to whole chunks: the same result, bit for bit."""
    w, X, y = _problem(3001, 45, "float64")
    graph = _graph(llgrad.grad(_logistic), w, X, y)
    results = []
    for share in (1 << 14, 64, 4, 1):
        monkeypatch.setattr(matvec, "STREAM_BLOCK_SHARE", share)
        results.append(compile_graph(graph, threads=2)(w, X, y)[0])
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


def test_the_intermediate_vectors_are_whole_where_they_are_outputs(monkeypatch):
    """z and r, returned beside the product, are written for every row; a vector
    computed inside the function (``2 * w``) stays alive while every block reads it."""
    def f(w, X, y):
        z = X @ (2 * w)
        r = np.tanh(z) - y
        return X.T @ r, z, r

    w, X, y = _problem(4099, 33, "float64")
    graph = _graph(f, w, X, y)
    assert len(_streams(graph)) == 1
    for threads in (1, 2):
        fused, apart = _both(graph, (w, X, y), threads, monkeypatch)
        for got, want in zip(fused, apart):
            np.testing.assert_array_equal(got, want)
    z = X @ (2 * w)
    r = np.tanh(z) - y
    # any order of a sum is within its length times eps of the sum of magnitudes
    eps = np.finfo(np.float64).eps
    z_bound = X.shape[1] * eps * (np.abs(X) @ np.abs(2 * w))
    assert np.all(np.abs(fused[1] - z) <= z_bound)
    np.testing.assert_allclose(fused[2], r, rtol=0, atol=2 * z_bound.max() + 4 * eps)
    r_error = np.full_like(r, 3 * z_bound.max())
    g_bound = X.shape[0] * eps * (np.abs(X).T @ np.abs(r)) + np.abs(X).T @ r_error
    assert np.all(np.abs(fused[0] - X.T @ r) <= g_bound)


@pytest.mark.parametrize("case", ["reversed", "other matrix", "other rows"])
def test_what_must_not_stream_runs_apart_and_is_right(case):
    """The kernel reading z at another index (z[::-1]: a block's r needs rows not yet
    computed), the second product over another matrix, or over other rows of X (two
    views of one buffer from different offsets)."""
    w, X, y = _problem(3001, 29, "float64")
    X2 = RNG.standard_normal(X.shape)

    def parts(xp_X, X2):
        first = xp_X[1:] if case == "other rows" else xp_X
        second = X2 if case == "other matrix" else xp_X[:-1] if case == "other rows" else xp_X
        return first, second

    def f(w, X, y, X2):
        first, second = parts(X, X2)
        z = first @ w
        r = (z[::-1] if case == "reversed" else z) - y[:len(z)]
        return second.T @ r

    graph = _graph(f, w, X, y, X2)
    assert not _streams(graph)
    got = compile_graph(graph, threads=2)(w, X, y, X2)[0]
    np.testing.assert_allclose(got, f(w, X, y, X2), rtol=1e-10, atol=1e-10)


def test_the_profile_shows_one_call_reading_the_matrix_once():
    w, X, y = _problem(20000, 50, "float64")
    prof = llgrad.profile(llgrad.grad(_logistic), w, X, y, seconds=0.05)
    streamed = [r for r in prof.rows if r["label"]["op"] == "dot_general"]
    assert len(streamed) == 1
    assert "dot_general" in streamed[0]["label"]["fused"]
    # X once, and w, y, z, r and the gradient: not X twice
    assert streamed[0]["label"]["bytes"] < 1.1 * X.nbytes


def test_several_elementwise_kernels_stream_between_the_products(monkeypatch):
    """``exp(z)`` kept for a loss computed after the gradient is a kernel of its own
    between ``X @ w`` and ``r``: both stream, in order, each on every block."""
    def f(w, X, y):
        z = X @ w
        e = np.exp(z)
        r = e / (1 + e) - y
        return X.T @ r, np.sum(np.log1p(e))

    w, X, y = _problem(5003, 37, "float64")
    graph = _graph(f, w, X, y)
    (middle, _), = _streams(graph).values()
    assert [k.node.op for k in middle] == ["exp", "sub"]
    for threads in (1, 2):
        fused, apart = _both(graph, (w, X, y), threads, monkeypatch)
        for got, want in zip(fused, apart):
            np.testing.assert_array_equal(got, want)
    z = X @ w
    r = 1 / (1 + np.exp(-z)) - y
    np.testing.assert_allclose(fused[0], X.T @ r, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(fused[1], np.sum(np.log1p(np.exp(z))), rtol=1e-12)


def test_a_training_loop_streams_its_minibatches_and_equals_the_interpreter():
    """``llgrad.train`` keeps ``exp(z)`` for the recorded loss: its body streams each
    minibatch through the two products and both kernels, and trains as numpy does."""
    from llgrad import optim
    w, X, y = _problem(4096, 40, "float64")
    def loss(params, X, y):
        return _logistic(params["w"], X, y)

    runs = [llgrad.train(loss, {"w": w}, (X, y), optim.sgd(0.5), batch_size=1024,
                         epochs=2, backend=backend, profile=backend == "native")
            for backend in ("native", "interpret")]
    np.testing.assert_allclose(runs[0].params["w"], runs[1].params["w"], rtol=1e-10,
                               atol=1e-13)
    streamed = [r for r in runs[0].profile.rows
                if r["label"]["op"] == "dot_general" and "dot_general" in r["label"]["fused"]]
    assert len(streamed) == 1 and "exp" in streamed[0]["label"]["fused"]
