"""llgrad.checkpoint and scan(..., checkpoint=k): the gradient equals the unmarked
program's, the backward pass keeps fewer bytes (Trace.residuals) and reports the
recomputation it pays (Trace.stats)."""
import numpy as np
import pytest

import llgrad
from llgrad.ir import interpret

RNG = np.random.default_rng(0)
W = RNG.standard_normal((32, 32)) * 0.3
X = RNG.standard_normal((4, 32))


def _block(h, w):
    for _ in range(3):
        h = np.tanh(h @ w)
    return h


def _deep(x, w, checkpointed):
    block = llgrad.checkpoint(_block) if checkpointed else _block
    h = x
    for _ in range(3):
        h = block(h, w)
    return np.sum(h ** 2)


def _grad(checkpointed):
    return llgrad.grad(lambda x, w: _deep(x, w, checkpointed), argnums=(0, 1))


def test_checkpointed_gradient_equals_the_unmarked_one():
    for a, b in zip(_grad(True)(X, W), _grad(False)(X, W)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_checkpoint_keeps_fewer_bytes_and_reports_what_it_recomputes():
    marked, plain = _grad(True).trace(X, W), _grad(False).trace(X, W)
    assert marked.stats["residual_bytes"] * 3 < plain.stats["residual_bytes"]
    assert plain.stats["recomputed_flops"] == 0
    # each of three regions runs its three products and tanhs again
    assert marked.stats["recomputed_flops"] >= 3 * 3 * 2 * X.shape[0] * 32 * 32


def test_checkpointed_native_equals_the_interpreter():
    g = _grad(True)
    interpreted = interpret(g.trace(X, W).backward, X, W)[1:]
    for a, b in zip(g(X, W), interpreted):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_checkpoint_in_forward_mode_and_second_order():
    v = RNG.standard_normal(X.shape)
    f = lambda x: _deep(x, W, True)   # noqa: E731
    _, tangent = llgrad.jvp(f, (X,), (v,))
    np.testing.assert_allclose(tangent, np.sum(_grad(False)(X, W)[0] * v), rtol=1e-10)
    g = llgrad.grad(f)
    hv = llgrad.grad(lambda x: np.sum(g(x) * v))(X)
    plain = llgrad.grad(lambda x: _deep(x, W, False))
    fd = (plain(X + 1e-6 * v) - plain(X - 1e-6 * v)) / 2e-6
    np.testing.assert_allclose(hv, fd, rtol=1e-5, atol=1e-7)


def test_vmap_of_a_checkpointed_gradient_matches_a_loop_of_calls():
    xs = RNG.standard_normal((3,) + X.shape)
    g = llgrad.grad(lambda x, w: _deep(x, w, True), argnums=1)
    np.testing.assert_allclose(llgrad.vmap(g, in_axes=(0, None))(xs, W),
                               np.stack([g(x, W) for x in xs]), rtol=1e-10, atol=1e-12)


def test_checkpoint_outside_a_trace_calls_the_function():
    np.testing.assert_array_equal(llgrad.checkpoint(_block)(X, W), _block(X, W))


H, T = 8, 30
WS = RNG.standard_normal((H, H)) * 0.4
XS = RNG.standard_normal((T, H)) * 0.5


def _rnn(w, xs, checkpoint, reverse=False):
    def step(h, x):
        h = np.tanh(h @ w + x)
        return h, np.sum(h)
    h, ys = llgrad.scan(step, np.zeros(H), xs, checkpoint=checkpoint, reverse=reverse)
    return np.sum(h ** 2) + np.sum(ys * np.arange(T))


def _rnn_python(w, xs, reverse=False):
    h, ys = np.zeros(H), np.zeros(T)
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        h = np.tanh(h @ w + xs[t])
        ys[t] = np.sum(h)
    return np.sum(h ** 2) + np.sum(ys * np.arange(T))


@pytest.mark.parametrize("checkpoint", [5, 7, "sqrt"])
@pytest.mark.parametrize("reverse", [False, True])
def test_checkpointed_scan_matches_the_plain_scan_and_python(checkpoint, reverse):
    f = lambda w, xs: _rnn(w, xs, checkpoint, reverse)   # noqa: E731
    np.testing.assert_allclose(llgrad.jit(f)(WS, XS), _rnn_python(WS, XS, reverse),
                               rtol=1e-12)
    plain = llgrad.grad(lambda w, xs: _rnn(w, xs, None, reverse), argnums=(0, 1))(WS, XS)
    for a, b in zip(llgrad.grad(f, argnums=(0, 1))(WS, XS), plain):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    e = np.zeros_like(WS)
    e[2, 3] = 1e-6
    fd = (_rnn_python(WS + e, XS, reverse) - _rnn_python(WS - e, XS, reverse)) / 2e-6
    np.testing.assert_allclose(plain[0][2, 3], fd, rtol=1e-6)


def test_sqrt_checkpointing_keeps_about_sqrt_t_carries():
    """T = 36, k = 6: the backward pass keeps the carry of 6 blocks instead of 36 steps."""
    xs = RNG.standard_normal((36, H))

    def loss(w, xs, checkpoint):
        h, _ = llgrad.scan(lambda h, x: (np.tanh(h @ w + x), None), np.zeros(H), xs,
                           checkpoint=checkpoint)
        return np.sum(h)

    kept = {c: llgrad.grad(lambda w: loss(w, xs, c)).trace(WS).stats["residual_bytes"]
            for c in (None, "sqrt")}
    carry = H * 8
    assert kept[None] >= 36 * carry
    assert kept["sqrt"] <= 3 * 6 * carry


def test_a_bad_checkpoint_interval_is_a_clear_error():
    with pytest.raises(llgrad.ShapeError, match="positive int or 'sqrt'"):
        llgrad.grad(lambda w: _rnn(w, XS, 0))(WS)
