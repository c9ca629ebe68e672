"""The fast call paths: they must return exactly what the general path returns, reuse
their memory from call to call, and stay correct across threads."""
import threading
import tracemalloc

import numpy as np
import pytest

import llgrad


def scalar_fn(x, y, z):
    return np.tanh(0.5 * x + y) * np.exp(-z * z) + np.log(1 + x * x) * np.sin(y * z)


def scalar_reference(x, y, z):
    """Value and gradient by hand, the oracle."""
    t, e = np.tanh(0.5 * x + y), np.exp(-z * z)
    l, s, c = np.log(1 + x * x), np.sin(y * z), np.cos(y * z)
    value = t * e + l * s
    dt = (1 - t * t) * e
    return value, (0.5 * dt + 2 * x / (1 + x * x) * s, dt + l * c * z, -2 * z * t * e + l * c * y)


POINTS = [(0.3, 0.5, 0.7), (-1.25, 2.0, 0.1), (0.0, 0.0, 0.0)]


@pytest.mark.parametrize("point", POINTS)
def test_all_float_grad_takes_the_scalar_path_and_matches_the_formula(point):
    f = llgrad.grad(scalar_fn, argnums=(0, 1, 2))
    first = f(*point)        # compiles
    again = f(*point)        # the scalar path
    assert f._scalar_calls, "an all-float signature must get a scalar call"
    want = scalar_reference(*point)[1]
    assert all(type(g) is float for g in again)
    np.testing.assert_allclose(again, want, rtol=1e-13, atol=1e-15)
    assert again == first


def test_value_and_grad_and_jit_on_the_scalar_path_match_the_array_path():
    point = POINTS[0]
    vg = llgrad.value_and_grad(scalar_fn, argnums=1)
    vg(*point)
    value, grad = vg(*point)
    slow_value, slow_grad = vg(*[np.float64(p) for p in point])   # array leaves: general path
    assert type(value) is np.float64 and type(grad) is float
    assert (value, grad) == (slow_value, slow_grad)
    jit = llgrad.jit(scalar_fn)
    jit(*point)
    assert jit(*point) == value and type(jit(*point)) is np.float64


def test_an_int_argument_after_floats_leaves_the_scalar_path():
    f = llgrad.grad(scalar_fn)
    f(0.3, 0.5, 0.7)
    np.testing.assert_allclose(f(0.3, 0.5, 2), scalar_reference(0.3, 0.5, 2.0)[1][0],
                               rtol=1e-13)
    assert len(f._scalar_calls) == 1


def test_scalar_path_is_correct_from_several_threads():
    f = llgrad.grad(scalar_fn, argnums=(0, 1, 2))
    f(*POINTS[0])
    rng = np.random.default_rng(0)
    points = [tuple(map(float, rng.normal(size=3))) for _ in range(400)]
    results = {}

    def work(k):
        results[k] = [f(*p) for p in points[k::4]]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(4):
        for p, got in zip(points[k::4], results[k]):
            np.testing.assert_allclose(got, scalar_reference(*p)[1], rtol=1e-12, atol=1e-14)


def elementwise_loss(x):
    return np.sum(np.log(1 + np.exp(np.sin(x) * x)) + np.sqrt(x * x + 1) * np.cos(x))


def test_a_call_allocates_no_intermediates():
    """The arena (intermediates) is allocated once per thread and the outputs come from
    the pool once the caller has dropped them: a steady-state call allocates far less
    than one intermediate array."""
    x = np.random.default_rng(1).normal(size=20_000)
    f = llgrad.grad(elementwise_loss)
    exe = f.trace(x).executable
    assert exe.arena_bytes >= x.nbytes, "this graph must have intermediates in the arena"
    for _ in range(3):
        f(x)
    arena = exe._thread_state()[2]
    tracemalloc.start()
    try:
        f(x)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert exe._thread_state()[2] is arena
    assert peak < x.nbytes // 4, f"a call allocated {peak} bytes"
