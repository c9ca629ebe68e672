"""The loop rewrites that make a recurrent network's products large and cheap
(compiler/frontend/loop_products.py, compiler/autodiff/loops.py): a product of a scanned
row by an invariant weight hoisted before the loop, a weight read transposed made so once
before it, a weight's per-step gradient products summed by one product after the
reversed loop, and a product of the forward step kept for the reversed loop instead of
computed again; the passes that write a sum of padded pieces as one concatenation
(passes/pad_sums.py) and reverse the smaller factor of a product over reversed rows
(passes/reversed_rows.py).  Each rewritten program must give what the program without
the rewrite gives: the same loss unrolled in Python (no loop node at all), the
interpreter running the same optimised graph, and, for the summed gradients, the
reversed loop that adds them up step by step (the rewrite switched off by its size
limit)."""
import numpy as np
import pytest

import llgrad
from llgrad.compiler.autodiff import loops as loop_rules

RNG = np.random.default_rng(7)
T, B, F, H = 6, 3, 5, 4


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _cell(w, u, bias, h, c, x):
    gates = x @ w + h @ u + bias
    i, f, g, o = (gates[:, k * H:(k + 1) * H] for k in range(4))
    c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    return _sigmoid(o) * np.tanh(c), c


def lstm_scan(w, u, bias, xs, reverse=False):
    def step(state, x):
        h, c = _cell(w, u, bias, *state, x)
        return (h, c), h

    zeros = np.zeros((xs.shape[1], H), xs.dtype)
    (h, _), hs = llgrad.scan(step, (zeros, zeros), xs, reverse=reverse)
    return np.sum(hs * hs * np.arange(1, T + 1)[:, None, None]) + np.sum(np.sin(h))


def lstm_unrolled(w, u, bias, xs, reverse=False):
    h = c = np.zeros((xs.shape[1], H))
    total = 0.0
    order = range(T - 1, -1, -1) if reverse else range(T)
    for t in order:
        h, c = _cell(w, u, bias, h, c, xs[t])
        total = total + np.sum(h * h) * (t + 1)
    return total + np.sum(np.sin(h))


def _inputs():
    return (RNG.normal(size=(F, 4 * H)) * 0.5, RNG.normal(size=(H, 4 * H)) * 0.5,
            RNG.normal(size=4 * H) * 0.1, RNG.normal(size=(T, B, F)))


def _assert_same(results, expected, rtol=1e-10):
    value, grads = results
    ref_value, ref_grads = expected
    np.testing.assert_allclose(value, ref_value, rtol=rtol)
    for got, ref in zip(grads, ref_grads):
        np.testing.assert_allclose(got, ref, rtol=rtol, atol=1e-12)


def _loops(graph):
    return [n for n in graph.nodes if n.op == "loop"]


def _products(graph):
    return [n for n in graph.nodes if n.op == "dot_general"]


@pytest.mark.parametrize("reverse", [False, True])
def test_lstm_scan_equals_unrolled_and_interpreter(reverse):
    args = _inputs()
    grad = lambda f, **kw: llgrad.value_and_grad(  # noqa: E731
        lambda w, u, b, xs: f(w, u, b, xs, reverse), argnums=(0, 1, 2), **kw)
    native = grad(lstm_scan)(*args)
    _assert_same(native, grad(lstm_unrolled)(*args))
    _assert_same(native, grad(lstm_scan, backend="interpret")(*args))


def test_lstm_products_leave_the_loops():
    """The rewrites applied: the forward body keeps only h @ u (x @ w is one product over
    every row before it), and returns it per step; the reversed body reads it from
    there, keeps only the adjoint's product by u and no weight gradient (both are
    products after the loop)."""
    graph = llgrad.value_and_grad(lstm_scan, argnums=(0, 1, 2)).trace(*_inputs()).optimized
    forward, backward = _loops(graph)
    assert len(_products(forward.attrs["body"])) == 1
    assert len(_products(backward.attrs["body"])) == 1
    assert all(p.type.shape != (F, 4 * H) and p.type.shape != (H, 4 * H)
               for p in _products(backward.attrs["body"]))
    outside = [p.type.shape for p in _products(graph)]
    assert (T, B, 4 * H) in outside and (F, 4 * H) in outside and (H, 4 * H) in outside


def test_weight_read_transposed_is_transposed_once():
    """``h @ v.T`` in a forward body (and the reversed loop's ``g @ u.T``) reads a
    transpose made before the loop; values and gradients as unrolled."""
    w, v, xs = _inputs()[0], RNG.normal(size=(H, H)) * 0.5, _inputs()[3]

    def rnn(w, v, xs):
        def step(h, x):
            h = np.tanh(x @ w[:, :H] + h @ v.T)
            return h, np.sum(h * h)
        h, ys = llgrad.scan(step, np.zeros((B, H)), xs)
        return np.sum(ys) + np.sum(h)

    def unrolled(w, v, xs):
        h, total = np.zeros((B, H)), 0.0
        for x in xs:
            h = np.tanh(x @ w[:, :H] + h @ v.T)
            total = total + np.sum(h * h)
        return total + np.sum(h)

    graph = llgrad.value_and_grad(rnn, argnums=(0, 1)).trace(w, v, xs).optimized
    for loop in _loops(graph):
        assert all(p.attrs["dims"][0][1] == (0,) for p in _products(loop.attrs["body"]))
    assert any(n.op == "transpose" and n.type.shape == (H, H) for n in graph.nodes)
    native = llgrad.value_and_grad(rnn, argnums=(0, 1))(w, v, xs)
    _assert_same(native, llgrad.value_and_grad(unrolled, argnums=(0, 1))(w, v, xs))
    _assert_same(native, llgrad.value_and_grad(rnn, argnums=(0, 1), backend="interpret")(
        w, v, xs))


def test_summed_gradients_equal_the_step_by_step_sum(monkeypatch):
    """With the size limit at zero the reversed loop adds each weight gradient per step
    and computes h @ u again, as before the rewrites: the same gradients, up to
    rounding."""
    args = _inputs()
    summed = llgrad.value_and_grad(lstm_scan, argnums=(0, 1, 2))(*args)
    monkeypatch.setattr(loop_rules, "STACKS_MAX_BYTES", 0)

    def lstm_stepwise(w, u, bias, xs):   # a new function: nothing cached from above
        return lstm_scan(w, u, bias, xs)
    stepwise = llgrad.value_and_grad(lstm_stepwise, argnums=(0, 1, 2))
    graph = stepwise.trace(*args).optimized
    assert len(_products(_loops(graph)[1].attrs["body"])) == 3
    _assert_same(stepwise(*args), summed)


def test_nested_scans_equal_unrolled():
    """An inner scan over the columns of each outer row, its own row product hoisted
    inside the outer body."""
    w, xs = RNG.normal(size=(F, H)) * 0.5, RNG.normal(size=(T, 2, B, F))

    def nested(w, xs):
        def outer(total, block):
            def inner(h, x):
                h = np.tanh(x @ w + h)
                return h, np.sum(h * h)
            h, ys = llgrad.scan(inner, np.zeros((B, H)), block)
            return total + np.sum(ys) + np.sum(h), np.sum(h)
        total, ys = llgrad.scan(outer, 0.0, xs)
        return total + np.sum(ys * ys)

    def unrolled(w, xs):
        total, last = 0.0, []
        for block in xs:
            h, part = np.zeros((B, H)), 0.0
            for x in block:
                h = np.tanh(x @ w + h)
                part = part + np.sum(h * h)
            total = total + part + np.sum(h)
            last.append(np.sum(h))
        return total + sum(v * v for v in last)

    native = llgrad.value_and_grad(nested)(w, xs)
    expected = llgrad.value_and_grad(unrolled)(w, xs)
    np.testing.assert_allclose(native[0], expected[0], rtol=1e-10)
    np.testing.assert_allclose(native[1], expected[1], rtol=1e-10)
    np.testing.assert_allclose(native[1], llgrad.grad(nested, backend="interpret")(w, xs),
                               rtol=1e-10)


def test_products_that_stay_in_the_loop():
    """Not rewritten, and still right: the row on the right of the product (w @ x) and
    a weight the loop changes (a carried value)."""
    w, v, xs = RNG.normal(size=(B, B)) * 0.5, RNG.normal(size=(B, F)) * 0.3, RNG.normal(
        size=(T, B, F))

    def kept(w, v, xs):
        def step(state, x):
            m, h = state
            h = np.tanh(w @ x + h @ m)            # row on the right, carried weight
            return (m * 0.9, h), np.sum(h * h)
        _, ys = llgrad.scan(step, (np.eye(F) * 0.5, v), xs)
        return np.sum(ys)

    def unrolled(w, v, xs):
        m, h, total = np.eye(F) * 0.5, v, 0.0
        for x in xs:
            h = np.tanh(w @ x + h @ m)
            m = m * 0.9
            total = total + np.sum(h * h)
        return total

    graph = llgrad.grad(kept, argnums=(0, 1)).trace(w, v, xs).optimized
    assert len(_products(_loops(graph)[0].attrs["body"])) == 2
    native = llgrad.value_and_grad(kept, argnums=(0, 1))(w, v, xs)
    _assert_same(native, llgrad.value_and_grad(unrolled, argnums=(0, 1))(w, v, xs))


def test_float32_lstm_matches_float64():
    """float32, as the benchmark runs it: within float32 rounding of float64."""
    args = _inputs()
    grad = llgrad.value_and_grad(lstm_scan, argnums=(0, 1, 2))
    exact = grad(*args)
    single = grad(*[a.astype(np.float32) for a in args])
    for got, ref in zip(single[1], exact[1]):
        np.testing.assert_allclose(got, ref, rtol=2e-4, atol=2e-5)


def _rnn(w, u, xs, checkpoint=None):
    def step(h, x):
        h = np.tanh(x @ w + h @ u)
        return h, np.sum(h * h)
    h, ys = llgrad.scan(step, np.zeros((xs.shape[1], u.shape[0])), xs, checkpoint=checkpoint)
    return np.sum(ys) + np.sum(h ** 3)


def _rnn_unrolled(w, u, xs):
    h, total = np.zeros((xs.shape[1], u.shape[0])), 0.0
    for x in xs:
        h = np.tanh(x @ w + h @ u)
        total = total + np.sum(h * h)
    return total + np.sum(h ** 3)


def test_rewritten_loops_compose_with_every_transformation():
    """The rewritten loops under the other transformations, each against the unrolled
    program: the gradient in the scanned input too, checkpointing, jvp, grad of grad
    (the reversed loop's own products kept and summed again: a product the body
    already returns per step is stacked once) and vmap of grad."""
    w, u, xs = RNG.normal(size=(F, H)) * 0.5, RNG.normal(size=(H, H)) * 0.5, RNG.normal(
        size=(T, B, F))
    expected = llgrad.grad(_rnn_unrolled, argnums=(0, 1, 2))(w, u, xs)
    for got in (llgrad.grad(_rnn, argnums=(0, 1, 2))(w, u, xs),
                llgrad.grad(lambda w, u, xs: _rnn(w, u, xs, checkpoint=2),
                            argnums=(0, 1, 2))(w, u, xs)):
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12)
    tangent = RNG.normal(size=w.shape)
    np.testing.assert_allclose(
        llgrad.jvp(lambda w: _rnn(w, u, xs), (w,), (tangent,))[1],
        llgrad.jvp(lambda w: _rnn_unrolled(w, u, xs), (w,), (tangent,))[1], rtol=1e-10)
    second = llgrad.grad(lambda w: np.sum(llgrad.grad(_rnn)(w, u, xs) * tangent))(w)
    np.testing.assert_allclose(
        second, llgrad.grad(lambda w: np.sum(llgrad.grad(_rnn_unrolled)(w, u, xs) * tangent))(w),
        rtol=1e-10, atol=1e-12)
    batch = RNG.normal(size=(3, T, B, F))
    np.testing.assert_allclose(
        llgrad.vmap(llgrad.grad(_rnn), in_axes=(None, None, 0))(w, u, batch),
        np.stack([llgrad.grad(_rnn_unrolled)(w, u, x) for x in batch]), rtol=1e-10, atol=1e-12)


def _per_step(loop):
    body = loop.attrs["body"]
    return body.outputs[loop.attrs["n_carried"]:]


def test_lstm_steps_keep_no_avoidable_work():
    """The forward loop keeps the gates' sum (the product's epilogue), not h @ u alone,
    so the reversed step adds no terms again; the reversed step writes the four gates'
    adjoints as one concatenation, not four padded pieces added up; it stacks only the
    adjoint rows (the weight gradient's other factor is the forward loop's stack of h);
    and after it only the smaller factors' rows are reversed, not the adjoint rows."""
    graph = llgrad.value_and_grad(lstm_scan, argnums=(0, 1, 2)).trace(*_inputs()).optimized
    forward, backward = _loops(graph)
    saved = [x for x in _per_step(forward) if x.type.shape == (B, 4 * H)]
    assert [x.op for x in saved] == ["add"]
    body = backward.attrs["body"]
    assert not [n for n in body.nodes if n.op in ("add", "pad") and n.type.shape == (B, 4 * H)]
    assert [n.type.shape for n in body.nodes if n.op == "concatenate"] == [(B, 4 * H)]
    assert [x.type.shape for x in _per_step(backward)] == [(1, B, 4 * H)]
    reversed_rows = sorted(n.type.shape for n in graph.nodes if n.op == "take")
    assert reversed_rows == sorted([(T, B, F), (T, B, H)])


def test_gradient_factor_computed_in_the_step_is_stacked_once():
    """The weight gradient's factor is tanh(h), computed by the step (not a stack of the
    forward loop), and the scan is reversed (its adjoint rows already come in the
    reversed loop's order): both factors in that order, the computed one stacked by the
    reversed loop, the other the adjoint rows it yields anyway; as unrolled."""
    w, u, xs = RNG.normal(size=(F, H)) * 0.5, RNG.normal(size=(H, H)) * 0.5, RNG.normal(
        size=(T, B, F))

    def rnn(w, u, xs):
        def step(h, x):
            h = np.tanh(x @ w + np.tanh(h) @ u)
            return h, h
        _, hs = llgrad.scan(step, np.zeros((B, H)), xs, reverse=True)
        return np.sum(hs * hs)

    def unrolled(w, u, xs):
        h, total = np.zeros((B, H)), 0.0
        for x in xs[::-1]:
            h = np.tanh(x @ w + np.tanh(h) @ u)
            total = total + np.sum(h * h)
        return total

    graph = llgrad.grad(rnn, argnums=(0, 1)).trace(w, u, xs).optimized
    backward = _loops(graph)[1]
    assert sorted(x.type.shape for x in _per_step(backward)) == sorted([(B, H), (1, B, H)])
    native = llgrad.value_and_grad(rnn, argnums=(0, 1))(w, u, xs)
    _assert_same(native, llgrad.value_and_grad(unrolled, argnums=(0, 1))(w, u, xs))
    _assert_same(native, llgrad.value_and_grad(rnn, argnums=(0, 1), backend="interpret")(
        w, u, xs))


def test_product_read_twice_is_kept_itself():
    """h @ u read by the gates' sum and by the per-step result: the product is kept for
    the reversed loop, not the sum; as unrolled."""
    w, u, xs = RNG.normal(size=(F, H)) * 0.5, RNG.normal(size=(H, H)) * 0.5, RNG.normal(
        size=(T, B, F))

    def rnn(w, u, xs):
        def step(h, x):
            hu = h @ u
            h = np.tanh(x @ w + hu)
            return h, np.sum(hu * hu)
        h, ys = llgrad.scan(step, np.ones((B, H)), xs)
        return np.sum(ys) + np.sum(h * h)

    def unrolled(w, u, xs):
        h, total = np.ones((B, H)), 0.0
        for x in xs:
            hu = h @ u
            h = np.tanh(x @ w + hu)
            total = total + np.sum(hu * hu)
        return total + np.sum(h * h)

    graph = llgrad.grad(rnn, argnums=(0, 1)).trace(w, u, xs).optimized
    assert "dot_general" in [x.op for x in _per_step(_loops(graph)[0])]
    native = llgrad.value_and_grad(rnn, argnums=(0, 1))(w, u, xs)
    _assert_same(native, llgrad.value_and_grad(unrolled, argnums=(0, 1))(w, u, xs))


@pytest.mark.parametrize("pieces, joined", [
    (((1, 3), (4, 6)), True),         # a gap between them and margins: zeros around
    (((0, 2), (2, 8)), True),         # the whole row
    (((1, 4), (3, 6)), False),        # overlapping: really added
])
def test_sum_of_padded_pieces(pieces, joined):
    """The adjoint of a value read as slices: one concatenation when the slices do not
    overlap, the sum otherwise; equal to the derivative by hand."""
    x = RNG.normal(size=(3, 8))
    (a, b), (c, d) = pieces

    def f(x):
        return np.sum(np.sin(x[:, a:b]) * x[:, a:b]) + np.sum(np.cos(x[:, c:d]))

    expected = np.zeros_like(x)
    expected[:, a:b] += np.cos(x[:, a:b]) * x[:, a:b] + np.sin(x[:, a:b])
    expected[:, c:d] -= np.sin(x[:, c:d])
    graph = llgrad.grad(f).trace(x).optimized
    assert any(n.op == "concatenate" for n in graph.nodes) == joined
    np.testing.assert_allclose(llgrad.grad(f)(x), expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(llgrad.grad(f, backend="interpret")(x), expected, rtol=1e-12)
