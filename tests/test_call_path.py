"""The fast call paths: they must return exactly what the general path returns, reuse
their memory from call to call, and stay correct across threads."""
import tracemalloc

import numpy as np
import pytest
from helpers import run_threads

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
    assert f._fast_calls, "an all-float signature must get a scalar call"
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
    assert len(f._fast_calls) == 1


def test_scalar_path_is_correct_from_several_threads():
    f = llgrad.grad(scalar_fn, argnums=(0, 1, 2))
    f(*POINTS[0])
    rng = np.random.default_rng(0)
    points = [tuple(map(float, rng.normal(size=3))) for _ in range(400)]
    for p, got in zip(points, from_four_threads(f, points)):
        np.testing.assert_allclose(got, scalar_reference(*p)[1], rtol=1e-12, atol=1e-14)


def from_four_threads(f, arg_sets):
    """``[f(*args) for args in arg_sets]``, computed by four threads at once."""
    results = [None] * len(arg_sets)

    def work(k):
        for i in range(k, len(arg_sets), 4):
            results[i] = f(*arg_sets[i])

    run_threads(work, n=4)
    return results


def elementwise_loss(x):
    return np.sum(np.log(1 + np.exp(np.sin(x) * x)) + np.sqrt(x * x + 1) * np.cos(x))


def centred_loss(x):
    """sin(x) is read by a sum and by the gradient's loop: it needs a buffer."""
    s = np.sin(x)
    return np.sum(np.exp(s) * np.mean(np.cos(x) * s))


def test_a_call_allocates_no_intermediates():
    """The arena (intermediates) is allocated once per thread and the outputs come from
    the pool once the caller has dropped them: a steady-state call allocates far less
    than one intermediate array."""
    x = np.random.default_rng(1).normal(size=20_000)
    f = llgrad.grad(centred_loss)
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


def mixed(w, b, x, s):
    return np.sum(np.tanh(x @ w + b) * s)


def _mixed_args(seed):
    rng = np.random.default_rng(seed)
    w = np.asfortranarray(rng.normal(size=(3, 4)))        # converted: not C-contiguous
    b = rng.normal(size=4)
    b.setflags(write=False)                               # read-only
    return w, b, rng.normal(size=(5, 3)), 0.5             # and a Python scalar


def test_native_argument_marshalling_equals_the_python_path():
    """With the layout measured (CPython), the generated code reads the arrays' data
    pointers itself; the result must be bit-identical to packing them in Python, and
    to numpy's own gradient of the same expression."""
    from llgrad.runtime import pyobjects
    import sys
    if sys.implementation.name == "cpython":
        assert pyobjects.LAYOUT is not None
    f = llgrad.value_and_grad(mixed, argnums=(0, 1))
    args = _mixed_args(0)
    exe = f.trace(*args).executable
    if exe._list_entry is None:
        pytest.skip("no native marshalling on this interpreter")
    fast = f(*args)
    list_entry, exe._list_entry = exe._list_entry, None
    try:
        slow = f(*args)
    finally:
        exe._list_entry = list_entry
    assert fast[0] == slow[0]
    for g_fast, g_slow in zip(fast[1], slow[1]):
        np.testing.assert_array_equal(g_fast, g_slow)
    w, b, x, s = args
    h = np.tanh(x @ w + b)
    np.testing.assert_allclose(fast[0], np.sum(h * s), rtol=1e-13)
    np.testing.assert_allclose(fast[1][1], ((1 - h * h) * s).sum(axis=0), rtol=1e-12)


def test_results_held_across_calls_stay_valid():
    """Outputs come from a pool of two generations; a result the caller still holds is
    never overwritten by the next call."""
    f = llgrad.value_and_grad(mixed, argnums=(0, 1))
    results = [f(*_mixed_args(seed)) for seed in range(4)]
    for seed, (value, _) in enumerate(results):
        w, b, x, s = _mixed_args(seed)
        np.testing.assert_allclose(value, np.sum(np.tanh(x @ w + b) * s), rtol=1e-13)


def test_grad_runs_nothing_that_only_the_value_needs():
    """grad never returns the value, so its native code leaves out the work only the
    value needs (here the whole forward sum of log(1 + exp(...)))."""
    x = np.random.default_rng(2).normal(size=1000)
    g = llgrad.grad(elementwise_loss)
    vg = llgrad.value_and_grad(elementwise_loss)
    assert len(g.trace(x).executable.graph.outputs) == 1
    assert len(vg.trace(x).executable.graph.outputs) == 2
    assert "log" not in g.trace(x).kernels and "log" in vg.trace(x).kernels
    value, grad = vg(x)
    np.testing.assert_array_equal(g(x), grad)
    np.testing.assert_allclose(value, elementwise_loss(x), rtol=1e-13)
    assert len(g.trace(x).backward.outputs) == 2   # inspection still shows the joint graph


def dict_fn(params):
    return scalar_fn(params["x"], params["y"], params["z"])


def test_a_dict_of_floats_takes_the_fast_path_and_falls_back_when_it_differs():
    g = llgrad.grad(dict_fn)
    point = dict(zip("zyx", POINTS[1][::-1]))          # insertion order is not leaf order
    g(point)
    fast = g(point)
    assert g._fast_calls and set(fast) == {"x", "y", "z"}
    assert all(type(v) is float for v in fast.values())
    general = g({k: np.float64(v) for k, v in point.items()})   # not floats: general path
    assert fast == general
    np.testing.assert_allclose([fast[k] for k in "xyz"], scalar_reference(*POINTS[1])[1],
                               rtol=1e-13)
    wider = g({**point, "w": 1.0})    # another key set: the general path, a new signature
    assert wider["w"] == 0.0 and {k: wider[k] for k in "xyz"} == fast


def mlp_loss(params, x, y):
    h = np.tanh(x @ params["w"] + params["b"])
    return np.mean((h @ params["v"] - y) ** 2)


def _mlp_args(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    params = {"w": rng.normal(size=(2, 4)), "b": rng.normal(size=4), "v": rng.normal(size=(4, 1))}
    params = {k: v.astype(dtype) for k, v in params.items()}
    return params, rng.normal(size=(6, 2)).astype(dtype), rng.normal(size=(6, 1)).astype(dtype)


def _mlp_reference(params, x, y):
    """The gradient by hand, the oracle."""
    h = np.tanh(x @ params["w"] + params["b"])
    d = 2 * (h @ params["v"] - y) / y.size
    dh = (d @ params["v"].T) * (1 - h * h)
    return {"w": x.T @ dh, "b": dh.sum(0), "v": h.T @ d}


def test_a_dict_of_arrays_takes_the_fast_path_and_equals_the_general_path():
    g = llgrad.grad(mlp_loss)
    args = _mlp_args()
    g(*args)
    calls = []
    fast = g._fast_calls[tuple(map(type, args))]
    g._fast_calls[tuple(map(type, args))] = lambda a: calls.append(1) or fast(a)
    got = g(*args)
    assert calls == [1], "the fast path must answer this call"
    entry, leaves = g._entry(args)
    general = entry.package(entry.executable(*leaves))
    assert set(got) == {"w", "b", "v"}
    for k, want in _mlp_reference(*args).items():
        np.testing.assert_array_equal(got[k], general[k])
        np.testing.assert_allclose(got[k], want, rtol=1e-12, atol=1e-14)


def _variants():
    """Calls that differ from the compiled signature in one way each, and what the
    general path makes of them (an answer or an error)."""
    params, x, y = _mlp_args()
    fortran = np.asfortranarray(np.random.default_rng(3).normal(size=(6, 2)))
    unaligned = np.frombuffer(b"\0" + np.random.default_rng(4).normal(size=12).tobytes(),
                              np.float64, count=12, offset=1).reshape(6, 2)
    swapped = x.astype(x.dtype.newbyteorder())
    return {
        "strided x": (params, np.repeat(x, 2, axis=0)[::2], y),
        "fortran x": (params, fortran, y),
        "unaligned x": (params, unaligned, y),
        "byte-swapped x": (params, swapped, y),
        "list x": (params, x.tolist(), y),
        "dict subclass": (type("D", (dict,), {})(params), x, y),
        "keys reordered": (dict(reversed(list(params.items()))), x, y),
        "float32 x": (params, x.astype(np.float32), y),
        "missing key": ({k: params[k] for k in ("w", "b")}, x, y),
        "other key": ({**{k: params[k] for k in ("w", "b")}, "u": params["v"]}, x, y),
        "wrong shape": (params, x[:3], y),
        "extra argument": (params, x, y, y),
    }


@pytest.mark.parametrize("variant", sorted(_variants()))
def test_every_mismatch_behaves_as_on_the_general_path(variant):
    """A fresh function (general path only) and one whose fast path is armed must agree
    on each variant: the same gradient, or the same error."""
    args = _variants()[variant]
    armed = llgrad.grad(mlp_loss)
    armed(*_mlp_args())
    assert armed._fast_calls
    cold = llgrad.grad(mlp_loss)

    def outcome(f):
        try:
            return f(*args)
        except Exception as exc:   # noqa: BLE001 - the error is the behaviour compared
            return (type(exc), str(exc))

    got, want = outcome(armed), outcome(cold)
    if isinstance(want, tuple):
        assert got == want
    else:
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])


def test_the_array_fast_path_is_correct_from_several_threads():
    g = llgrad.grad(mlp_loss)
    g(*_mlp_args())
    sets = [_mlp_args(seed) for seed in range(40)]
    for a, got in zip(sets, from_four_threads(g, sets)):
        for name, want in _mlp_reference(*a).items():
            np.testing.assert_allclose(got[name], want, rtol=1e-12, atol=1e-14)


def test_value_and_grad_and_jit_of_arrays_on_the_fast_path_match_the_oracle():
    args = _mlp_args(1)
    vg, jit = llgrad.value_and_grad(mlp_loss), llgrad.jit(mlp_loss)
    for f in (vg, jit):
        f(*args)
        assert f._fast_calls
    value, grad = vg(*args)
    params, x, y = args
    want = np.mean((np.tanh(x @ params["w"] + params["b"]) @ params["v"] - y) ** 2)
    assert type(value) is np.float64 and type(jit(*args)) is np.float64
    np.testing.assert_allclose([value, jit(*args)], want, rtol=1e-13)
    for k, g in _mlp_reference(*args).items():
        np.testing.assert_allclose(grad[k], g, rtol=1e-12, atol=1e-14)


def test_a_list_of_arrays_takes_the_fast_path_and_keeps_its_structure():
    g = llgrad.grad(lambda p, x, y: mlp_loss(dict(zip("wbv", p)), x, y))
    params, x, y = _mlp_args(2)
    as_list = [params[k] for k in "wbv"]
    g(as_list, x, y)
    assert g._fast_calls
    got = g(as_list, x, y)
    assert type(got) is list
    for k, g_k in zip("wbv", got):
        np.testing.assert_allclose(g_k, _mlp_reference(params, x, y)[k], rtol=1e-12, atol=1e-14)
    assert type(g(tuple(as_list), x, y)) is tuple   # another container: another signature


@pytest.mark.parametrize("dtype", [np.int32, np.float16, np.dtype(">f8")])
def test_arguments_that_are_converted_never_take_the_fast_path(dtype):
    """int32, float16 and byte-swapped arrays are converted to what was compiled on
    every call, so their signature gets no fast path: passing them unconverted to
    native code would be a silent wrong answer."""
    f = llgrad.grad(lambda w, x: np.sum(np.tanh(x * w)))
    w, x = np.linspace(-1, 1, 5), np.arange(5).astype(dtype)
    f(w, x)
    assert not f._fast_calls
    got = f(w, x)
    xf = x.astype(np.float64)
    np.testing.assert_allclose(got, xf * (1 - np.tanh(xf * w) ** 2), rtol=1e-12)


def structured(p, x):
    h = np.tanh(x * p[0] + p[1])
    return {"sum": np.sum(h), "parts": (h, h * h), "first": [h[0]]}


def test_jit_outputs_keep_their_structure_on_the_fast_path():
    f = llgrad.jit(structured)
    p, x = [np.full(3, 0.5), np.linspace(0, 1, 3)], np.arange(3.0)
    first, again = f(p, x), f(p, x)
    assert f._fast_calls
    want = structured(p, x)
    for got in (first, again):
        assert set(got) == {"sum", "parts", "first"} and type(got["parts"]) is tuple
        assert type(got["sum"]) is np.float64 and type(got["first"]) is list
        np.testing.assert_allclose(got["sum"], want["sum"], rtol=1e-13)
        for g, w in zip(got["parts"] + tuple(got["first"]), want["parts"] + tuple(want["first"])):
            np.testing.assert_allclose(g, w, rtol=1e-13)


def test_value_and_grad_of_several_arguments_on_the_fast_path():
    def loss(a, b, c):
        return np.sum(a["u"] * b[0] * np.sin(c))

    f = llgrad.value_and_grad(loss, argnums=(0, 2))
    a, b, c = {"u": np.arange(1.0, 4.0)}, (np.full(3, 2.0),), np.linspace(0, 1, 3)
    f(a, b, c)
    value, (ga, gc) = f(a, b, c)
    assert f._fast_calls and set(ga) == {"u"}
    np.testing.assert_allclose(value, np.sum(a["u"] * 2 * np.sin(c)), rtol=1e-13)
    np.testing.assert_allclose(ga["u"], 2 * np.sin(c), rtol=1e-13)
    np.testing.assert_allclose(gc, a["u"] * 2 * np.cos(c), rtol=1e-13)


def test_deeply_nested_arguments_keep_their_structure():
    """Result structures are built by generated expressions down to a depth, by
    pytree.unflatten below it."""
    def nest(leaf, depth):
        return leaf if depth == 0 else [nest(leaf, depth - 1)]

    def loss(tree, x):
        while isinstance(tree, list):
            tree = tree[0]
        return np.sum(np.sin(tree * x))

    x = np.linspace(0, 1, 4)
    value, grad = llgrad.value_and_grad(loss)(nest(np.full(4, 0.5), 300), x)
    inner = grad
    for _ in range(300):
        assert type(inner) is list and len(inner) == 1
        inner = inner[0]
    np.testing.assert_allclose(value, np.sum(np.sin(0.5 * x)), rtol=1e-13)
    np.testing.assert_allclose(inner, x * np.cos(0.5 * x), rtol=1e-13)
