"""``llgrad.scan``: values against plain Python loops, derivatives (reverse, forward,
second order) against central differences and against the same program unrolled by a
Python ``for`` loop, nesting, ``train``, the interpreter, constant IR size, errors."""
import numpy as np
import pytest

import llgrad
from llgrad.check import numerical_grad

RNG = np.random.default_rng(18)
W = RNG.normal(size=(3, 3)) * 0.6
XS = RNG.normal(size=(7, 3))
H0 = RNG.normal(size=3) * 0.3


def rnn_step(w):
    def step(carry, x):
        h, total = carry["h"], carry["total"]
        h = np.tanh(h @ w + x)
        return {"h": h, "total": total + np.sum(h * h)}, (h[0], np.sin(h) * x)
    return step


def rnn_scan(h0, xs, w, reverse=False):
    carry, (firsts, mixed) = llgrad.scan(rnn_step(w), {"h": h0, "total": 0.0}, xs,
                                         reverse=reverse)
    return carry["total"] + np.sum(firsts ** 2) + np.sum(mixed) + np.sum(carry["h"] ** 3)


def rnn_unrolled(h0, xs, w, reverse=False):
    """The same program as a Python loop: traced, it unrolls; run on arrays, it is the
    oracle of values and of finite differences."""
    step, carry = rnn_step(w), {"h": h0, "total": 0.0}
    firsts, mixed = [None] * len(xs), [None] * len(xs)
    for i in (reversed(range(len(xs))) if reverse else range(len(xs))):
        carry, (firsts[i], mixed[i]) = step(carry, xs[i])
    return (carry["total"] + np.sum(np.stack(firsts) ** 2) + np.sum(np.stack(mixed))
            + np.sum(carry["h"] ** 3))


@pytest.mark.parametrize("reverse", [False, True])
def test_scan_values_match_a_python_loop(reverse):
    f = rnn_step(W)

    def run(h0, xs):
        return llgrad.scan(f, {"h": h0, "total": 0.0}, xs, reverse=reverse)

    (carry, (firsts, mixed)) = llgrad.jit(run)(H0, XS)
    want = {"h": H0, "total": 0.0}
    order = reversed(range(len(XS))) if reverse else range(len(XS))
    want_firsts, want_mixed = np.zeros(len(XS)), np.zeros_like(XS)
    for i in order:
        want, (want_firsts[i], want_mixed[i]) = f(want, XS[i])
    np.testing.assert_allclose(carry["h"], want["h"], rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(carry["total"], want["total"], rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(firsts, want_firsts, rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(mixed, want_mixed, rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("reverse", [False, True])
def test_scan_gradient_matches_finite_differences_and_the_unrolled_program(reverse):
    args = (H0, XS, W)
    grads = llgrad.grad(rnn_scan, argnums=(0, 1, 2))(*args, reverse=reverse)
    unrolled = llgrad.grad(rnn_unrolled, argnums=(0, 1, 2))(*args, reverse=reverse)
    for k, (got, want) in enumerate(zip(grads, unrolled)):
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-13)
        fd = numerical_grad(lambda *a: rnn_unrolled(*a, reverse=reverse), args, k, 1e-6)
        np.testing.assert_allclose(got, fd, rtol=1e-5, atol=1e-7)


def test_native_matches_the_interpreter():
    native = llgrad.value_and_grad(rnn_scan, argnums=(0, 2))(H0, XS, W)
    interpreted = llgrad.value_and_grad(rnn_scan, argnums=(0, 2), backend="interpret")(
        H0, XS, W)
    np.testing.assert_allclose(native[0], interpreted[0], rtol=1e-14)
    for got, want in zip(native[1], interpreted[1]):
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-14)


def test_hessian_vector_product_through_scan_matches_the_unrolled_program():
    v = RNG.normal(size=3)
    got = llgrad.hvp(rnn_scan)(H0, v, XS, W)
    np.testing.assert_allclose(got, llgrad.hvp(rnn_unrolled)(H0, v, XS, W), rtol=1e-10,
                               atol=1e-12)
    # and central differences of the gradient in direction v
    grad = llgrad.grad(rnn_unrolled)
    eps = 1e-5
    fd = (grad(H0 + eps * v, XS, W) - grad(H0 - eps * v, XS, W)) / (2 * eps)
    np.testing.assert_allclose(got, fd, rtol=1e-5, atol=1e-7)


def test_grad_of_grad_through_scan_matches_the_unrolled_program():
    def outer(loss):
        return lambda w: np.sum(llgrad.grad(loss, argnums=2)(H0, XS, w) ** 2)
    got = llgrad.grad(outer(rnn_scan))(W)
    np.testing.assert_allclose(got, llgrad.grad(outer(rnn_unrolled))(W), rtol=1e-10,
                               atol=1e-12)


def test_hessian_through_scan_matches_the_unrolled_program():
    np.testing.assert_allclose(llgrad.hessian(rnn_scan)(H0, XS, W),
                               llgrad.hessian(rnn_unrolled)(H0, XS, W), rtol=1e-10, atol=1e-12)


def test_jvp_through_scan_matches_finite_differences():
    t_h, t_w = RNG.normal(size=3), RNG.normal(size=(3, 3))
    value, tangent = llgrad.jvp(lambda h, w: rnn_scan(h, XS, w), (H0, W), (t_h, t_w))
    eps = 1e-6
    fd = (rnn_unrolled(H0 + eps * t_h, XS, W + eps * t_w)
          - rnn_unrolled(H0 - eps * t_h, XS, W - eps * t_w)) / (2 * eps)
    np.testing.assert_allclose(value, rnn_unrolled(H0, XS, W), rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(tangent, fd, rtol=1e-6)


def nested(c0, xs, unrolled=False):
    """An outer scan whose step runs an inner scan over every row (closing over the
    outer carry)."""
    def outer(c, x):
        def inner(d, z):
            return np.sin(d * z + c), None
        if unrolled:
            d = c
            for z in xs:
                d = inner(d, z)[0]
        else:
            d, _ = llgrad.scan(inner, c, xs)
        return d * x, np.sum(d)
    if unrolled:
        c, ys = c0, []
        for x in xs:
            c, y = outer(c, x)
            ys.append(y)
        ys = np.stack(ys)
    else:
        c, ys = llgrad.scan(outer, c0, xs)
    return np.sum(ys) + np.sum(c ** 2)


def test_nested_scans_match_the_unrolled_program():
    xs = XS[:4]
    np.testing.assert_allclose(llgrad.jit(nested)(H0, xs), nested(H0, xs, unrolled=True),
                               rtol=1e-11, atol=1e-14)
    got = llgrad.grad(nested, argnums=(0, 1))(H0, xs)
    want = llgrad.grad(lambda c, x: nested(c, x, True), argnums=(0, 1))(H0, xs)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(got[0], numerical_grad(lambda c: nested(c, xs, True), (H0,),
                                                      0, 1e-6), rtol=1e-5, atol=1e-7)


def test_scan_in_a_training_loss_matches_the_python_loop():
    x = RNG.normal(size=(16, 5, 2))
    y = RNG.normal(size=16)
    params = {"w": RNG.normal(size=(2, 3)) * 0.4, "u": RNG.normal(size=(3, 3)) * 0.4,
              "v": RNG.normal(size=3) * 0.4}

    def cell(p):
        return lambda h, xt: (np.tanh(xt @ p["w"] + h @ p["u"]), None)

    def loss(p, xb, yb):
        h, _ = llgrad.scan(cell(p), np.zeros((xb.shape[0], 3)), np.transpose(xb, (1, 0, 2)))
        return np.mean((h @ p["v"] - yb) ** 2)

    def loss_unrolled(p, xb, yb):
        h = np.zeros((xb.shape[0], 3))
        for t in range(xb.shape[1]):
            h = cell(p)(h, xb[:, t])[0]
        return np.mean((h @ p["v"] - yb) ** 2)

    opt = llgrad.optim.sgd(0.2)
    got = llgrad.train(loss, params, (x, y), opt, batch_size=4, epochs=2)
    want = llgrad.train(loss_unrolled, params, (x, y), opt, batch_size=4, epochs=2)
    np.testing.assert_allclose(got.loss_history, want.loss_history, rtol=1e-12)
    # and the Python oracle of the first step: the loss before any update
    np.testing.assert_allclose(got.loss_history[0], loss_unrolled(params, x[:4], y[:4]),
                               rtol=1e-11, atol=1e-14)


def test_scan_without_xs_and_of_no_steps():
    def count(c, _):
        return c + 1.0, c * 2.0
    c, ys = llgrad.jit(lambda c0: llgrad.scan(count, c0, None, length=4))(np.zeros(2))
    np.testing.assert_array_equal(c, [4.0, 4.0])
    np.testing.assert_array_equal(ys, [[0, 0], [2, 2], [4, 4], [6, 6]])
    grad = llgrad.grad(lambda c0: np.sum(llgrad.scan(rnn_step(W), {"h": c0, "total": 0.0},
                                                     np.zeros((0, 3)))[0]["h"] ** 2))
    np.testing.assert_allclose(grad(H0), 2 * H0)


def test_integer_carry_and_eager_call():
    def step(carry, x):
        k, s = carry
        return (k + 1, s + x * k), k
    (k, s), ks = llgrad.scan(step, (0, np.zeros(3)), XS)   # outside a trace: compiled
    assert k == len(XS) and ks.dtype == np.int64
    np.testing.assert_array_equal(ks, np.arange(len(XS)))
    np.testing.assert_allclose(s, (np.arange(len(XS))[:, None] * XS).sum(0), rtol=1e-11, atol=1e-14)


def _final_state(h0, xs, w):
    return np.sum(llgrad.scan(lambda h, x: (np.tanh(h @ w + x), None), h0, xs)[0] ** 2)


def _ir_sizes(transform, length):
    """Node counts of every stage and lines of LLVM IR of ``_final_state`` over
    ``length`` steps (compiled, not run)."""
    t = transform(_final_state).trace(np.zeros(2), np.ones((length, 2)), np.eye(2) * 0.5)
    graphs = [t.ir, t.backward, t.optimized] if t.backward is not None else [t.ir, t.optimized]
    return [len(g.nodes) for g in graphs], len(t.llvm_ir.splitlines())


@pytest.mark.parametrize("transform", [llgrad.jit, llgrad.grad])
def test_ir_size_does_not_depend_on_the_trip_count(transform):
    assert _ir_sizes(transform, 10) == _ir_sizes(transform, 100_000)


def test_one_loop_in_the_ir_and_the_reversed_loop_in_the_backward_graph():
    t = llgrad.grad(rnn_scan).trace(H0, XS, W)
    assert t.ir.count("loop") == 1
    text = str(t.backward)
    assert "step_reversed(" in text and "stacked[add]" in text   # h @ w + x, kept
    assert "# carried: " in text
    assert t.optimized.count("loop") == 2   # the forward loop, merged, and the reversed


def test_carry_that_changes_dtype_is_a_clear_error():
    def widen(c, x):
        return c.astype(np.float32), x
    with pytest.raises(llgrad.DTypeError, match=r"widen\(\).*carry.*f64\[3\].*f32\[3\]"):
        llgrad.jit(lambda h: llgrad.scan(widen, h, XS))(H0)


def test_carry_that_changes_shape_or_structure_is_a_clear_error():
    with pytest.raises(llgrad.ShapeError, match=r"grow\(\).*carry\['h'\].*f64\[3\].*f64\[6\]"):
        def grow(c, x):
            return {"h": np.concatenate([c["h"], x])}, None
        llgrad.jit(lambda h: llgrad.scan(grow, {"h": h}, XS))(H0)
    with pytest.raises(llgrad.ShapeError, match=r"split\(\).*structure"):
        def split(c, x):
            return (c, c), None
        llgrad.jit(lambda h: llgrad.scan(split, h, XS))(H0)


def test_bad_scan_arguments_are_clear_errors():
    with pytest.raises(llgrad.ShapeError, match="pair"):
        llgrad.jit(lambda h: llgrad.scan(lambda c, x: c, h, XS))(H0)
    with pytest.raises(llgrad.ShapeError, match="leading length"):
        llgrad.jit(lambda h: llgrad.scan(lambda c, x: (c, None), h, (XS, XS[:3])))(H0)
    with pytest.raises(llgrad.ShapeError, match="length="):
        llgrad.jit(lambda h: llgrad.scan(lambda c, x: (c, None), h, None))(H0)


def test_python_bool_of_a_traced_value_points_to_cond_and_where():
    def branchy(h):
        return h if h.sum() > 0 else -h
    with pytest.raises(llgrad.UnsupportedError, match=r"llgrad\.cond.*np\.where"):
        llgrad.jit(branchy)(H0)
