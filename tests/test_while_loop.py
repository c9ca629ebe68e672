"""llgrad.while_loop: values against plain Python loops, gradients (trip counts that
depend on the data) against central finite differences and the unrolled program, the
max_steps error, native against the interpreter."""
import numpy as np
import pytest

import llgrad
from llgrad.ir import interpret
from llgrad.ir.errors import DTypeError, LoopLimitError, ShapeError

X = np.array([0.3, -0.2, 0.5])
W = np.array([1.1, 0.8, -0.6])
STEPS = (40, None)   # a tape of 40 rows; a heap tape that grows


def _grow(v, w):
    return v + 0.2 * np.sin(v * w) + 0.05


def grow_loop(x, w, max_steps):
    """Steps until the sum of squares passes 4: how many depends on x and w."""
    out = llgrad.while_loop(lambda v: np.sum(v * v) < 4.0, lambda v: _grow(v, w), x,
                            max_steps=max_steps)
    return np.sum(out ** 3)


def grow_python(x, w):
    v = x
    while np.sum(v * v) < 4.0:
        v = _grow(v, w)
    return np.sum(v ** 3)


def _trips(x, w):
    v, n = x, 0
    while np.sum(v * v) < 4.0:
        v, n = _grow(v, w), n + 1
    return n


def grow_unrolled(x, w, trips):
    """The same program with the trip count fixed: Python's loop, unrolled at trace."""
    v = x
    for _ in range(trips):
        v = _grow(v, w)
    return np.sum(v ** 3)


def central(f, x, eps=1e-6):
    return np.array([(f(x + eps * e) - f(x - eps * e)) / (2 * eps) for e in np.eye(x.size)])


def test_values_match_a_python_loop_with_a_pytree_carry():
    def f(x):
        def body(c):
            return {"v": c["v"] * 1.5 + 0.1, "n": c["n"] + 1}
        out = llgrad.while_loop(lambda c: np.sum(c["v"]) < 30.0, body, {"v": x, "n": 0})
        return out["v"], out["n"]

    v, n = X.copy(), 0
    while np.sum(v) < 30.0:
        v, n = v * 1.5 + 0.1, n + 1
    got_v, got_n = llgrad.jit(f)(X)
    np.testing.assert_allclose(got_v, v, rtol=1e-14)
    assert got_n == n and n > 3


def test_a_loop_that_never_runs_returns_its_input():
    f = llgrad.jit(lambda x: llgrad.while_loop(lambda v: np.sum(v) > 100.0, lambda v: v * 2, x))
    np.testing.assert_array_equal(f(X), X)


@pytest.mark.parametrize("max_steps", STEPS)
def test_gradient_of_a_data_dependent_trip_count_matches_finite_differences(max_steps):
    g = llgrad.grad(lambda x, w: grow_loop(x, w, max_steps), argnums=(0, 1))
    gx, gw = g(X, W)
    np.testing.assert_allclose(gx, central(lambda x: grow_python(x, W), X), rtol=1e-6)
    np.testing.assert_allclose(gw, central(lambda w: grow_python(X, w), W), rtol=1e-6)


@pytest.mark.parametrize("max_steps", STEPS)
def test_gradient_equals_the_unrolled_program(max_steps):
    trips = _trips(X, W)
    assert trips > 5
    looped = llgrad.grad(lambda x, w: grow_loop(x, w, max_steps), argnums=(0, 1))(X, W)
    unrolled = llgrad.grad(lambda x, w: grow_unrolled(x, w, trips), argnums=(0, 1))(X, W)
    for a, b in zip(looped, unrolled):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_newton_iterations_until_convergence_differentiated():
    """sqrt(a) by Newton's method: the gradient through the iterations is 1/(2 sqrt a)."""
    def newton_sqrt(a):
        def body(c):
            x, _ = c
            new = 0.5 * (x + a / x)
            return new, np.abs(new - x)
        x, _ = llgrad.while_loop(lambda c: c[1] > 1e-12, body, (a, np.ones_like(a)),
                                 max_steps=100)
        return np.sum(x)

    a = np.array([2.0, 9.0, 0.3])
    for a_k in a:
        np.testing.assert_allclose(llgrad.grad(newton_sqrt)(np.array([a_k])),
                                   [0.5 / np.sqrt(a_k)], rtol=1e-9)


@pytest.mark.parametrize("max_steps", STEPS)
def test_native_equals_the_interpreter(max_steps):
    g = llgrad.grad(lambda x, w: grow_loop(x, w, max_steps), argnums=(0, 1))
    trace = g.trace(X, W)
    native = g(X, W)
    interpreted = interpret(trace.backward, X, W)[1:]
    for a, b in zip(native, interpreted):
        np.testing.assert_allclose(a, b, rtol=1e-13)


def test_exceeding_max_steps_is_a_clear_error_naming_the_line():
    def f(x):
        return llgrad.while_loop(lambda v: np.sum(v) < 1e6, lambda v: v * 1.1, x,
                                 max_steps=10)   # the line the error names
    line = f.__code__.co_firstlineno + 1
    for run in (llgrad.jit(f), llgrad.grad(lambda x: np.sum(f(x)))):
        with pytest.raises(LoopLimitError, match=rf"test_while_loop.py:{line}.*max_steps=10"):
            run(X)
        # the executable stays usable: a call that fits runs afterwards
        run(X * 1e6)
    with pytest.raises(LoopLimitError, match="max_steps=10"):
        interpret(llgrad.jit(f).trace(X).ir, X)


def test_second_order_through_the_loop_matches_finite_differences_of_the_gradient():
    v = np.array([1.0, -0.5, 0.25])
    for max_steps in STEPS:
        g = llgrad.grad(lambda x: grow_loop(x, W, max_steps))
        hv = llgrad.grad(lambda x: g(x) @ v)(X)
        np.testing.assert_allclose(hv, central(lambda x: g(x) @ v, X, 1e-5), rtol=1e-5)


def test_forward_mode_matches_finite_differences():
    v = np.array([1.0, -0.5, 0.25])
    for max_steps in STEPS:
        _, tangent = llgrad.jvp(lambda x: grow_loop(x, W, max_steps), (X,), (v,))
        fd = (grow_python(X + 1e-6 * v, W) - grow_python(X - 1e-6 * v, W)) / 2e-6
        np.testing.assert_allclose(tangent, fd, rtol=1e-6)


def test_a_carry_that_changes_type_is_a_clear_error():
    f = llgrad.jit(lambda x: llgrad.while_loop(lambda v: np.sum(v) < 9.0,
                                               lambda v: v.astype(np.float32), x))
    with pytest.raises(DTypeError, match=r"f64\[3\].*f32\[3\]"):
        f(X)
    g = llgrad.jit(lambda x: llgrad.while_loop(lambda v: np.sum(v) < 9.0, lambda v: v[:2], x))
    with pytest.raises(ShapeError, match="lambda"):
        g(X)


def test_a_condition_that_is_not_one_bool_is_a_clear_error():
    f = llgrad.jit(lambda x: llgrad.while_loop(lambda v: v < 9.0, lambda v: v + 1, x))
    with pytest.raises(ShapeError, match="must return one bool"):
        f(X)


def test_outside_a_trace_it_is_a_python_loop():
    assert llgrad.while_loop(lambda n: n < 10, lambda n: n + 3, 0) == 12


XS = np.array([[0.3, -0.2, 0.5], [1.0, 0.9, 0.2], [0.1, 0.1, 0.1]])


@pytest.mark.parametrize("max_steps", STEPS)
def test_vmap_runs_each_example_for_its_own_trip_count(max_steps):
    assert len({_trips(x, W) for x in XS}) == 3
    got = llgrad.vmap(lambda x: grow_loop(x, W, max_steps))(XS)
    np.testing.assert_allclose(got, [grow_python(x, W) for x in XS], rtol=1e-13)


@pytest.mark.parametrize("max_steps", STEPS)
def test_per_example_gradients_match_a_loop_of_grad(max_steps):
    g = llgrad.grad(lambda x, w: grow_loop(x, w, max_steps), argnums=1)
    batched = llgrad.vmap(g, in_axes=(0, None))(XS, W)
    np.testing.assert_allclose(batched, np.stack([g(x, W) for x in XS]), rtol=1e-12)


def test_hessian_through_the_loop_matches_finite_differences_of_the_gradient():
    f = lambda x: grow_loop(x, W, 40)   # noqa: E731
    g = llgrad.grad(f)
    fd = np.array([(g(X + 1e-5 * e) - g(X - 1e-5 * e)) / 2e-5 for e in np.eye(3)])
    np.testing.assert_allclose(llgrad.hessian(f)(X), fd, rtol=1e-6, atol=1e-6)


def test_a_while_loop_inside_a_scan_body_differentiated():
    xs = np.random.default_rng(1).standard_normal((5, 3)) * 0.3

    def f(w, xs):
        def step(h, x):
            v = llgrad.while_loop(lambda v: np.sum(v * v) < 10.0, lambda v: v * 1.3 + w,
                                  h + x, max_steps=50)
            return np.tanh(v * 0.1), np.sum(v)
        h, ys = llgrad.scan(step, np.zeros(3), xs)
        return np.sum(ys) + np.sum(h)

    def python(w):
        h, total = np.zeros(3), 0.0
        for x in xs:
            v = h + x
            while np.sum(v * v) < 10.0:
                v = v * 1.3 + w
            total, h = total + np.sum(v), np.tanh(v * 0.1)
        return total + np.sum(h)

    w = np.array([0.1, 0.2, 0.05])
    np.testing.assert_allclose(llgrad.jit(f)(w, xs), python(w), rtol=1e-13)
    np.testing.assert_allclose(llgrad.grad(f)(w, xs), central(python, w), rtol=1e-6)


def test_a_scan_inside_a_while_body_differentiated():
    def f(w):
        def body(c):
            h, n = c
            h, _ = llgrad.scan(lambda h, _: (np.tanh(h @ w) + 0.1, None), h, None, length=3)
            return h, n + 1
        h, _ = llgrad.while_loop(lambda c: c[1] < 4, body, (np.ones(2), 0), max_steps=10)
        return np.sum(h ** 2)

    def unrolled(w):
        h = np.ones(2)
        for _ in range(12):
            h = np.tanh(h @ w) + 0.1
        return np.sum(h ** 2)

    w = np.array([[0.5, -0.3], [0.2, 0.8]])
    fd = central(lambda flat: unrolled(flat.reshape(2, 2)), w.ravel()).reshape(2, 2)
    np.testing.assert_allclose(llgrad.grad(f)(w), fd, rtol=1e-6)


@pytest.mark.parametrize("max_steps", STEPS)
def test_hessian_vector_product_forward_over_reverse(max_steps):
    v = np.array([1.0, -0.5, 0.25])
    f = lambda x: grow_loop(x, W, max_steps)   # noqa: E731
    g = llgrad.grad(f)
    np.testing.assert_allclose(llgrad.hvp(f)(X, v), central(lambda x: g(x) @ v, X, 1e-5),
                               rtol=1e-5)


def _after_the_loop(x):
    halved = llgrad.while_loop(lambda c: c.sum() > 1.0, lambda c: c / 2, x)
    return np.sqrt(halved - 10.0).sum()   # its own line, not the loop's


def test_nodes_traced_after_the_loop_name_their_own_line():
    import inspect
    first = inspect.getsourcelines(_after_the_loop)[1]
    nodes = llgrad.jit(_after_the_loop).trace(np.full(3, 4.0)).ir.nodes
    assert {n.source for n in nodes if n.op == "while"} == {f"test_while_loop.py:{first + 1}"}
    assert {n.source for n in nodes if n.op == "sqrt"} == {f"test_while_loop.py:{first + 2}"}
