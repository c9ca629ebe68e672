"""The native entry of a hot call signature (compiler/fastcall.py, codegen/pyentry.py,
runtime/pycall.py): it returns exactly what the Python path returns (values, types,
structure), falls back on every difference with the Python path's answer or error,
never hands out an output array the caller still holds, leaks no reference or
memory, and stays right from several threads."""
import gc
import sys
import tracemalloc

import numpy as np
import pytest
from helpers import assert_identical, run_threads

import llgrad
from benchmarks import workloads
from llgrad.compiler.dispatch import fastcall
from llgrad.runtime import engine, pyobjects

pytestmark = pytest.mark.skipif(pyobjects.OBJECTS is None, reason="the object layout of "
                                "this interpreter is not verified: it has no native entry")


@pytest.fixture(autouse=True)
def native_at_once(monkeypatch):
    """Every signature gets its native entry at its first call (not after a few)."""
    monkeypatch.setattr(fastcall, "NATIVE_AFTER", 0)
    monkeypatch.delenv("LLGRAD_NO_NATIVE_ENTRY", raising=False)


def is_native(f) -> bool:
    return type(f.func).__name__ == "builtin_function_or_method"


def pair(transform, fn, args, monkeypatch, **options):
    """(native, Python path) versions of ``transform(fn)``, each compiled and warm."""
    native = transform(fn, **options)
    native(*args)
    native(*args)
    assert is_native(native), f"the signature did not get a native entry: {native.func}"
    with monkeypatch.context() as m:
        m.setenv("LLGRAD_NO_NATIVE_ENTRY", "1")
        python = transform(fn, **options)
        python(*args)
        python(*args)
    assert not is_native(python)
    return native, python


def same_outcome(f, g, *args):
    """``f(*args)`` and ``g(*args)`` give identical results or the same error."""
    try:
        want = g(*args)
    except Exception as exc:  # noqa: BLE001 - compared with the native path's error
        with pytest.raises(type(exc)) as got:
            f(*args)
        assert str(got.value) == str(exc)
        return None
    got = f(*args)
    assert_identical(got, want)
    return got


# -- results identical to the Python path -------------------------------------------------

def one(x):
    return np.sin(x) * x + 1.5


def three(p):
    return np.tanh(p["x"] * p["y"]) + np.exp(-p["z"] * p["z"]) * p["x"]


def seq(p):
    return np.tanh(p[0] * p[1]) + np.exp(-p[2] * p[2]) * p[0]


TRANSFORMS = [llgrad.jit, llgrad.grad, llgrad.value_and_grad]


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_a_float_argument(transform, monkeypatch):
    native, python = pair(transform, one, (0.3,), monkeypatch)
    for x in (0.3, -2.5, 0.0):
        same_outcome(native, python, x)


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("make, fn", [(tuple, seq), (list, seq),
                                      (lambda v: dict(zip("xyz", v)), three)],
                         ids=["tuple", "list", "dict"])
def test_containers_of_floats(transform, make, fn, monkeypatch):
    native, python = pair(transform, fn, (make([0.3, 0.5, 0.7]),), monkeypatch)
    for values in ([0.3, 0.5, 0.7], [-1.0, 2.0, 0.25]):
        same_outcome(native, python, make(values))


def two(p, s):
    return p["x"] * s + np.sin(p["y"] * s)


@pytest.mark.parametrize("transform", [llgrad.grad, llgrad.value_and_grad])
@pytest.mark.parametrize("argnums", [0, 1, (0, 1), (1, 0)])
def test_argnums(transform, argnums, monkeypatch):
    args = ({"x": 0.5, "y": -1.5}, 2.0)
    native, python = pair(transform, two, args, monkeypatch, argnums=argnums)
    same_outcome(native, python, {"x": 1.25, "y": 0.5}, -3.0)


def mlp(params, x, y):
    h = np.tanh(x @ params["w1"] + params["b1"])
    return np.mean((h @ params["w2"] + params["b2"] - y) ** 2)


def mlp_args(rng, scale=1.0):
    params = {"w1": scale * rng.normal(size=(2, 8)), "b1": rng.normal(size=8),
              "w2": rng.normal(size=(8, 1)), "b2": np.array(0.5 * scale)}
    return params, rng.uniform(-2, 2, size=(20, 2)), rng.normal(size=(20, 1))


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_a_dict_of_arrays_and_arrays(transform, rng, monkeypatch):
    native, python = pair(transform, mlp, mlp_args(rng), monkeypatch)
    result = same_outcome(native, python, *mlp_args(rng, 0.5))
    if transform is not llgrad.jit:   # a 0-d parameter's gradient is a numpy scalar
        grad = result if transform is llgrad.grad else result[1]
        assert type(grad["b2"]) is np.float64 and type(grad["w1"]) is np.ndarray


def structured(x):
    return {"b": [x * 2.0, (np.sin(x), None)], "a": x.sum()}


def test_jit_outputs_keep_their_structure(rng, monkeypatch):
    native, python = pair(llgrad.jit, structured, (rng.normal(size=3),), monkeypatch)
    result = same_outcome(native, python, rng.normal(size=3))
    assert list(result) == ["a", "b"] and result["b"][1][1] is None


def test_a_list_of_arrays_argument(rng, monkeypatch):
    def f(ws):
        return np.sum(ws[0] * ws[1]) + np.sum(np.tanh(ws[2]))
    args = ([rng.normal(size=4), rng.normal(size=4), rng.normal(size=(2, 2))],)
    native, python = pair(llgrad.value_and_grad, f, args, monkeypatch)
    same_outcome(native, python, [rng.normal(size=4), rng.normal(size=4),
                                  rng.normal(size=(2, 2))])


# -- every difference falls back --------------------------------------------------------

class Float(float):
    pass


class Array(np.ndarray):
    pass


FLOAT_VARIANTS = {
    "other key": {"x": 0.3, "y": 0.5, "w": 0.7},
    "extra key": {"x": 0.3, "y": 0.5, "z": 0.7, "w": 0.1},
    "missing key": {"x": 0.3, "y": 0.5},
    "int": {"x": 0.3, "y": 2, "z": 0.7},
    "float subclass": {"x": Float(0.3), "y": 0.5, "z": 0.7},
    "numpy scalar": {"x": np.float64(0.3), "y": 0.5, "z": 0.7},
    "nested": {"x": 0.3, "y": {"a": 0.5}, "z": 0.7},
    "a list": [0.3, 0.5, 0.7],
}


@pytest.mark.parametrize("variant", FLOAT_VARIANTS)
@pytest.mark.parametrize("transform", [llgrad.grad, llgrad.value_and_grad])
def test_every_float_mismatch_falls_back(transform, variant, monkeypatch):
    native, python = pair(transform, three, ({"x": 0.3, "y": 0.5, "z": 0.7},), monkeypatch)
    same_outcome(native, python, FLOAT_VARIANTS[variant])
    same_outcome(native, python, {"x": 0.1, "y": 0.2, "z": 0.3})
    assert is_native(native)


def array_variants(rng):
    params, x, y = mlp_args(rng)

    def with_param(name, value):
        return dict(params, **{name: value}), x, y
    misaligned = np.frombuffer(b"\0" + params["w1"].tobytes(), np.float64, 16, 1).reshape(2, 8)
    return {
        "other shape": (params, x[:10], y[:10]),
        "other dtype": with_param("w1", params["w1"].astype(np.float32)),
        "fortran order": with_param("w2", np.asfortranarray(rng.normal(size=(8, 2)))[:, :1]),
        "transposed": with_param("w1", np.ascontiguousarray(params["w1"].T).T),
        "strided": (params, x[::2], y[::2]),
        "misaligned": with_param("w1", misaligned),
        "byte-swapped": with_param("w1", params["w1"].astype(">f8")),
        "ndarray subclass": with_param("b1", params["b1"].view(Array)),
        "a list": (params, x.tolist(), y),
        "float for 0-d": with_param("b2", 0.5),
        "other key": ({**{k: v for k, v in params.items() if k != "b1"}, "c1": params["b1"]},
                      x, y),
        "nested": with_param("b1", {"a": params["b1"]}),
    }


@pytest.mark.parametrize("variant", list(array_variants(np.random.default_rng(0))))
def test_every_array_mismatch_falls_back(variant, rng, monkeypatch):
    native, python = pair(llgrad.grad, mlp, mlp_args(rng), monkeypatch)
    same_outcome(native, python, *array_variants(rng)[variant])
    same_outcome(native, python, *mlp_args(rng, 2.0))
    assert is_native(native)


def test_an_error_in_a_dict_lookup_is_the_python_paths(monkeypatch):
    class Key:
        """Hashes like "y" and fails to compare: the lookup of "y" raises."""
        def __hash__(self):
            return hash("y")

        def __eq__(self, other):
            raise ValueError("no comparison")
    native, python = pair(llgrad.grad, three, ({"x": 0.3, "y": 0.5, "z": 0.7},), monkeypatch)
    same_outcome(native, python, {"x": 0.3, Key(): 0.5, "z": 0.7})


# -- output arrays, references, memory --------------------------------------------------

def test_a_held_result_is_never_overwritten(rng, monkeypatch):
    native, python = pair(llgrad.grad, mlp, mlp_args(rng), monkeypatch)
    inputs = [mlp_args(rng, s) for s in (0.5, 1.0, 1.5, 2.0)]
    general = native._entry
    native._entry = None   # the native entry answers every call, with new arrays if need be
    held = [native(*args) for args in inputs]    # more results than pool generations
    native._entry = general
    view = held[0]["w1"][0]                      # a view keeps its array in use too
    for args, got in zip(inputs, held):
        assert_identical(got, python(*args))
    for args in inputs:
        native(*args)
    for args, got in zip(inputs, held):
        assert_identical(got, python(*args))
    np.testing.assert_array_equal(view, held[0]["w1"][0])
    assert len({id(g["w1"]) for g in held}) == len(held)


def test_no_memory_for_new_outputs_is_a_memory_error(rng, monkeypatch):
    native, python = pair(llgrad.grad, mlp, mlp_args(rng), monkeypatch)
    executable = next(iter(native._cache.values())).executable
    args = mlp_args(rng)
    held = [native(*args), native(*args)]   # both pool generations

    def no_memory(k):
        raise MemoryError("no memory for an output")
    with monkeypatch.context() as m:
        m.setattr(executable, "allocate_output", no_memory)
        with pytest.raises(MemoryError, match="no memory for an output"):
            native(*args)
    for got in held + [native(*args)]:
        assert_identical(got, python(*args))


def test_a_dropped_result_gives_its_arrays_back(rng, monkeypatch):
    native, _ = pair(llgrad.grad, mlp, mlp_args(rng), monkeypatch)
    args = mlp_args(rng)
    addresses = set()
    for _ in range(6):
        addresses.add(native(*args)["w1"].ctypes.data)
    assert len(addresses) <= 2, "each call allocated new outputs"


def test_no_reference_leaks(rng, monkeypatch):
    native, _ = pair(llgrad.value_and_grad, mlp, mlp_args(rng), monkeypatch)
    params, x, y = mlp_args(rng)
    scalars, _ = pair(llgrad.grad, three, ({"x": 0.3, "y": 0.5, "z": 0.7},), monkeypatch)
    floats = {"x": 0.3, "y": 0.5, "z": 0.7}
    other = {"x": 0.3, "y": np.float64(0.5), "z": 0.7}
    watched = [params, x, y, *params.values(), *params, floats, *floats, *floats.values(),
               fastcall.MISS]

    def counts():
        gc.collect()
        return [sys.getrefcount(obj) for obj in watched]

    def calls(n):
        for _ in range(n):
            native(params, x, y)
            scalars(floats)
            scalars(other)   # a MISS
    calls(100)   # compiles the MISS's signature, whose caches refer to the keys
    before = counts()
    calls(10_000)
    assert counts() == before


def test_memory_stays_flat(rng, monkeypatch):
    arrays, _ = pair(llgrad.grad, mlp, mlp_args(rng), monkeypatch)
    scalars, _ = pair(llgrad.value_and_grad, three, ({"x": 0.3, "y": 0.5, "z": 0.7},),
                      monkeypatch)
    params, x, y = mlp_args(rng)
    floats = {"x": 0.3, "y": 0.5, "z": 0.7}
    for _ in range(1000):
        arrays(params, x, y)
        scalars(floats)
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        for _ in range(100_000):
            scalars(floats)
        for _ in range(10_000):
            arrays(params, x, y)
        grown = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, f"{grown} bytes more after 110,000 calls"


def test_several_threads(rng, monkeypatch):
    arrays, python_arrays = pair(llgrad.grad, mlp, mlp_args(rng), monkeypatch)
    scalars, python_scalars = pair(llgrad.value_and_grad, three,
                                   ({"x": 0.3, "y": 0.5, "z": 0.7},), monkeypatch)
    inputs = [(mlp_args(np.random.default_rng(k)), {"x": 0.1 * k, "y": 0.5, "z": -0.2 * k})
              for k in range(4)]
    wants = [(python_arrays(*a), python_scalars(s)) for a, s in inputs]

    def body(k):
        args, floats = inputs[k]
        for _ in range(300):
            assert_identical(arrays(*args), wants[k][0])
            assert_identical(scalars(floats), wants[k][1])
    run_threads(body)


def test_threads_that_hold_their_results_never_see_them_overwritten(monkeypatch):
    """Six threads each holding their last results keep the two pooled generations
    taken, so nearly every call refills the pool while other threads' entries run
    (forced to switch often): a held result must still be its own call's."""
    f = llgrad.grad(lambda w, x: np.sum(np.tanh(x @ w)))
    rng = np.random.default_rng(0)
    w, xs = rng.normal(size=(4, 3)), [rng.normal(size=(5, 4)) for _ in range(6)]
    wants = [f(w, x).copy() for x in xs]
    assert is_native(f)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)

    def body(k):
        held = []
        for _ in range(400):
            held = held[-3:] + [f(w, xs[k])]
            for result in held:
                np.testing.assert_array_equal(result, wants[k])
    try:
        run_threads(body, n=6)
    finally:
        sys.setswitchinterval(interval)


# -- when there is a native entry -------------------------------------------------------

def test_a_signature_gets_its_native_entry_once_hot(monkeypatch):
    monkeypatch.setattr(fastcall, "NATIVE_AFTER", 3)
    f = llgrad.grad(three)
    point = {"x": 0.3, "y": 0.5, "z": 0.7}
    results = [f(point) for _ in range(3)]
    assert not is_native(f)
    results += [f(point) for _ in range(3)]
    assert is_native(f)
    for r in results[1:]:
        assert_identical(r, results[0])


def test_a_failed_promotion_is_tried_once(monkeypatch):
    """When the native entry cannot be made, the Python path answers every later call
    without trying again."""
    from llgrad.compiler.dispatch import staging
    monkeypatch.setattr(fastcall, "NATIVE_AFTER", 2)
    tries = []
    monkeypatch.setattr(staging.Staged, "_promote", lambda self, make: tries.append(make))
    f = llgrad.grad(three)
    point = {"x": 0.3, "y": 0.5, "z": 0.7}
    results = [f(point) for _ in range(20)]
    assert len(tries) == 1 and not is_native(f)
    for r in results[1:]:
        assert_identical(r, results[0])


@pytest.mark.parametrize("limit", ["NATIVE_MAX_FLOPS", "NATIVE_MAX_BYTES"])
def test_a_large_executable_keeps_the_ctypes_call(limit, rng, monkeypatch):
    monkeypatch.setattr(fastcall, limit, 10)
    f = llgrad.grad(mlp)
    args = mlp_args(rng)
    f(*args)
    want = f(*args)
    assert not is_native(f) and f._fast_calls
    np.testing.assert_allclose(want["w1"], llgrad.grad(mlp, backend="interpret")(*args)["w1"],
                               rtol=1e-12)


def test_a_second_function_of_the_same_structure_loads_its_entry_from_the_cache(monkeypatch):
    point = {"x": 0.3, "y": 0.5, "z": 0.7}
    first = llgrad.grad(three)
    first(point)
    first(point)
    assert is_native(first)

    def no_jit(*args, **kwargs):
        raise AssertionError("compiled again instead of loading the cache entry")
    monkeypatch.setattr(engine, "jit", no_jit)
    second = llgrad.grad(three)
    second(point)
    assert_identical(second(point), first(point))
    assert is_native(second)


# -- numerical oracles on the benchmark's two call-bound workloads ------------------------

def central_differences(loss, params, eps=1e-6):
    grads = {}
    for name, value in params.items():
        value = np.asarray(value, dtype=np.float64)
        grad = np.zeros_like(value)
        for i in np.ndindex(value.shape):
            bumped = []
            for sign in (1, -1):
                v = value.copy()
                v[i] += sign * eps
                bumped.append(loss({**params, name: v if v.ndim else float(v)}))
            grad[i] = (bumped[0] - bumped[1]) / (2 * eps)
        grads[name] = grad
    return grads


@pytest.mark.parametrize("key", ["scalar", "tiny_mlp"])
def test_benchmark_workloads_against_numpy_and_finite_differences(key):
    w = next(w for w in workloads.WORKLOADS if w.key == key)
    p = w.problems(True)[0]
    f = llgrad.grad(lambda params, *data: w.loss(np, params, *data))
    f(p.params, *p.data)
    got = f(p.params, *p.data)
    assert is_native(f)
    want = w.backprop(p.params, *p.data)
    fd = central_differences(lambda params: float(w.loss(np, params, *p.data)), p.params)
    for name in p.params:
        assert type(got[name]) is type(want[name] if key == "tiny_mlp" else 0.0)
        np.testing.assert_allclose(got[name], want[name], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(got[name], fd[name], rtol=1e-6, atol=1e-8)


def test_keywords_take_the_python_path(monkeypatch):
    native, python = pair(llgrad.jit, one, (0.3,), monkeypatch)
    assert_identical(native(x=0.25), python(x=0.25))
    assert_identical(native(0.25), python(0.25))


def weighted(p):
    return sum(np.tanh(v) * (k + 1) for k, v in enumerate(p))


def test_hot_signatures_chain_their_native_entries(monkeypatch):
    f = llgrad.value_and_grad(weighted)
    calls = [(make([0.1 * k for k in range(n)]),) for make in (list, tuple) for n in (2, 3, 4)]
    for args in calls * 2:
        f(*args)
    from llgrad.compiler.dispatch.staging import _MAX_NATIVE
    assert f._natives == _MAX_NATIVE < len(calls)
    with monkeypatch.context() as m:
        m.setenv("LLGRAD_NO_NATIVE_ENTRY", "1")
        python = llgrad.value_and_grad(weighted)
        for args in calls * 2:
            python(*args)
    for args in calls[::-1] + calls:
        assert_identical(f(*args), python(*args))


def test_a_staged_function_still_looks_like_one():
    f = llgrad.grad(three)
    assert f.__name__ == "three" and f.__wrapped__ is three
    assert "three" in repr(f) and "grad" in repr(f)
    import inspect
    assert list(inspect.signature(f).parameters) == ["p"]

    class Model:
        loss_grad = f
    assert_identical(Model().loss_grad({"x": 0.3, "y": 0.5, "z": 0.7}),
                     f({"x": 0.3, "y": 0.5, "z": 0.7}))


@pytest.mark.parametrize("how", ["copy", "deepcopy", "pickle"])
def test_a_copied_staged_function_is_the_same_transformation(how):
    """A copy is a Staged of the same function and options with caches of its own (it
    was a shallow copy before Staged became a partial, and then a TypeError)."""
    import copy
    import pickle
    f = llgrad.value_and_grad(three, fastmath=True)
    p = {"x": 0.3, "y": 0.5, "z": 0.7}
    want = f(p)
    g = {"copy": copy.copy, "deepcopy": copy.deepcopy,
         "pickle": lambda f: pickle.loads(pickle.dumps(f))}[how](f)
    assert type(g) is type(f) and g is not f and g.fn is three
    assert (g.kind, g.argnums, g.fastmath) == ("value_and_grad", 0, True)
    assert_identical(g(p), want)
    del f
    assert_identical(g(p), want)


@pytest.mark.parametrize("after", [0, 1000])
def test_a_dropped_staged_function_is_freed_at_once(after, monkeypatch):
    import weakref
    monkeypatch.setattr(fastcall, "NATIVE_AFTER", after)
    f = llgrad.grad(mlp)
    args = mlp_args(np.random.default_rng(0))
    f(*args)
    f(*args)
    assert is_native(f) == (after == 0)
    alive = weakref.ref(f)
    gc.disable()
    try:
        del f
        assert alive() is None, "a reference cycle keeps it (and its code) alive"
    finally:
        gc.enable()
