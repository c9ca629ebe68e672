"""Robustness: threads, long runs and a damaged or unwritable cache.

Compiled functions are called from several threads at once and compiled from several
threads at once; a long run of calls keeps resident memory flat; the on-disk cache
never hands LLVM an entry that does not verify, and a cache that cannot be written
costs one warning, not a failure."""
import os
import warnings

import numpy as np
import pytest
from helpers import run_threads

import llgrad
from llgrad.compiler.codegen.build import compile_graph
from llgrad.ir import Builder, Graph, TensorType
from llgrad.runtime import cache, engine


def loss(p, x):
    return np.sum(np.tanh(x @ p["w"] + p["b"]) ** 2)


def loss_reference(p, x):
    """Value and gradient of ``loss`` by hand, in numpy."""
    h = np.tanh(x @ p["w"] + p["b"])
    dz = 2 * h * (1 - h ** 2)
    return np.sum(h ** 2), {"w": x.T @ dz, "b": dz.sum(axis=0)}


def problem(seed, rows=6):
    rng = np.random.default_rng(seed)
    return {"w": rng.normal(size=(4, 3)), "b": rng.normal(size=3)}, rng.normal(size=(rows, 4))


def assert_matches_reference(got, params, x):
    value, grads = got
    want_value, want_grads = loss_reference(params, x)
    np.testing.assert_allclose(value, want_value, rtol=1e-12)
    for name in ("w", "b"):
        np.testing.assert_allclose(grads[name], want_grads[name], rtol=1e-12, atol=1e-14)


def test_one_compiled_function_called_from_four_threads():
    f = llgrad.value_and_grad(loss)
    problems = [problem(k) for k in range(4)]
    f(*problems[0])                                     # compiled once, before the threads

    def worker(k):
        for _ in range(300):
            got = f(*problems[k])
            assert_matches_reference(got, *problems[k])

    run_threads(worker)


def test_compiling_from_four_threads_at_once():
    """Four threads trace and compile at the same moment: the same function for one
    signature, and new signatures (other shapes) of it."""
    f = llgrad.value_and_grad(loss)

    def worker(k):
        for rows in (5 + k, 5, 9 + k):
            params, x = problem(k, rows)
            assert_matches_reference(f(params, x), params, x)

    run_threads(worker)


FRESH_PROCESS_SCRIPT = """
import sys, threading, numpy as np, llgrad
fns = [np.tanh, np.sin, np.expm1, np.cos, np.sqrt, np.log1p, np.exp, np.cosh]
derivatives = [lambda v: 1 - np.tanh(v) ** 2, np.cos, np.exp, lambda v: -np.sin(v),
               lambda v: 0.5 / np.sqrt(v), lambda v: 1 / (1 + v), np.exp, np.sinh]
barrier, failures = threading.Barrier(len(fns)), []
def work(k):
    try:
        barrier.wait()
        x = np.linspace(0.1, 1.0, 5)
        g = llgrad.grad(lambda v: fns[k](v).sum())(x)
        np.testing.assert_allclose(g, derivatives[k](x), rtol=1e-13)
    except BaseException as exc:
        failures.append(repr(exc))
threads = [threading.Thread(target=work, args=(k,)) for k in range(len(fns))]
[t.start() for t in threads]
[t.join() for t in threads]
sys.exit("\\n".join(failures) or None)
"""


def test_first_compiles_in_a_fresh_process_race_safely(tmp_path):
    """Eight threads of a new process, with an empty cache, differentiate eight
    functions at once: derivative rules and LLVM are set up under contention."""
    import subprocess
    import sys
    env = dict(os.environ, LLGRAD_CACHE_DIR=str(tmp_path),
               PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run([sys.executable, "-c", FRESH_PROCESS_SCRIPT], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_a_hundred_thousand_calls_keep_resident_memory_flat():
    """Each call returns fresh 2 KiB gradients: a leak of one of them per call would
    grow memory by 200 MB; the bound allows 16 MB of allocator noise."""
    f = llgrad.grad(lambda p, x: np.sum(p["w"] * x + p["b"]))
    params, x = {"w": np.ones(256), "b": np.ones(256)}, np.linspace(0, 1, 256)
    for _ in range(5000):                     # warm: pools, caches, allocator arenas
        g = f(params, x)
    before = resident_bytes()
    for _ in range(100_000):
        g = f(params, x)
    grown = resident_bytes() - before
    np.testing.assert_array_equal(g["w"], x)
    assert grown < 16 * 2 ** 20, f"resident memory grew by {grown / 2 ** 20:.1f} MiB"


# ----------------------------------------------------------------------------------
# the on-disk cache

def cached_graph():
    b = Builder()
    x = b.parameter(index=0, type=TensorType((7,), "float64"), name="x")
    return Graph([x], [b.sin(b.mul(x, b.full(2.0, x.type)))], name="robust")


def compile_and_check():
    exe = compile_graph(cached_graph())
    x = np.linspace(-1, 1, 7)
    np.testing.assert_allclose(exe(x)[0], np.sin(2 * x), rtol=1e-15)


def count_llvm_runs(monkeypatch):
    runs = []
    real = engine.optimize

    def counted(*args, **kwargs):
        runs.append(1)
        return real(*args, **kwargs)
    monkeypatch.setattr(engine, "optimize", counted)
    return runs


def _flip_middle(data):
    broken = bytearray(data)
    broken[len(broken) // 2] ^= 0x01
    return bytes(broken)


def _foreign_version(data):
    return data.replace(f'"format": {cache.FORMAT}'.encode(),
                        f'"format": {cache.FORMAT + 1}'.encode(), 1)


DAMAGE = {
    "flipped bit": _flip_middle,
    "truncated": lambda data: data[: len(data) * 2 // 3],
    "empty": lambda data: b"",
    "foreign version": _foreign_version,
    "not llgrad's": lambda data: b"\x80\x04garbage" + data[40:],
    "another key's entry": None,       # a valid entry, copied to the wrong name
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_cache_entry_is_detected_rebuilt_and_never_loaded(damage, tmp_path,
                                                                     monkeypatch):
    monkeypatch.setenv("LLGRAD_CACHE_DIR", str(tmp_path))
    compile_and_check()
    (entry,) = tmp_path.glob("*.obj")
    if DAMAGE[damage] is None:
        b = Builder()
        x = b.parameter(index=0, type=TensorType((7,), "float64"), name="x")
        compile_graph(Graph([x], [b.cos(x)], name="other"))
        other = next(p for p in tmp_path.glob("*.obj") if p != entry)
        entry.write_bytes(other.read_bytes())
    else:
        entry.write_bytes(DAMAGE[damage](entry.read_bytes()))
    loaded, load = [], engine.load
    monkeypatch.setattr(engine, "load", lambda *a, **k: loaded.append(load(*a, **k)))
    objects, from_data = [], engine.llvm.ObjectFileRef.from_data
    monkeypatch.setattr(engine.llvm.ObjectFileRef, "from_data",
                        staticmethod(lambda data: objects.append(bytes(data)) or from_data(data)))
    runs = count_llvm_runs(monkeypatch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compile_and_check()                         # detected: compiled again, correct
    assert len(caught) == 1 and str(entry) in str(caught[0].message)
    assert runs == [1] and loaded == [None]         # LLVM ran; the entry never loaded
    rebuilt = cache.decode(entry.stem, entry.read_bytes())
    assert isinstance(rebuilt, tuple)               # rebuilt
    assert objects == [rebuilt[0]]                  # the one object loaded: the fresh one


def test_a_rebuilt_entry_is_loaded_again_without_warnings(tmp_path, monkeypatch):
    monkeypatch.setenv("LLGRAD_CACHE_DIR", str(tmp_path))
    compile_and_check()
    (entry,) = tmp_path.glob("*.obj")
    entry.write_bytes(entry.read_bytes()[:100])
    with pytest.warns(RuntimeWarning, match="checksum|header"):
        compile_and_check()
    runs = count_llvm_runs(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compile_and_check()
    assert runs == []                               # a cache hit: LLVM did not run


def test_a_damaged_entry_that_cannot_be_replaced_is_reported_once(tmp_path, monkeypatch):
    monkeypatch.setenv("LLGRAD_CACHE_DIR", str(tmp_path))
    compile_and_check()
    (entry,) = tmp_path.glob("*.obj")
    entry.write_bytes(_flip_middle(entry.read_bytes()))
    monkeypatch.setattr(cache, "store", lambda *args: None)    # the damage stays on disk
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            compile_and_check()
    assert len(caught) == 1 and "checksum" in str(caught[0].message)


def test_entries_are_not_pickles_so_loading_runs_no_code(tmp_path, monkeypatch):
    import pickle
    monkeypatch.setenv("LLGRAD_CACHE_DIR", str(tmp_path))
    compile_and_check()
    (entry,) = tmp_path.glob("*.obj")
    assert entry.read_bytes().startswith(cache.MAGIC)
    with pytest.raises(Exception):
        pickle.loads(entry.read_bytes())


@pytest.mark.parametrize("how", ["under a file", "read-only"])
def test_an_unwritable_cache_directory_falls_back_to_memory_with_one_warning(
        how, tmp_path, monkeypatch):
    if how == "under a file":
        (tmp_path / "file").write_text("")
        root = tmp_path / "file" / "cache"
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only directories")
        root = tmp_path / "ro"
        root.mkdir()
        root.chmod(0o500)
    monkeypatch.setenv("LLGRAD_CACHE_DIR", str(root))
    monkeypatch.setitem(cache._state, "unwritable", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compile_and_check()
        for scale in (3.0, 4.0):                   # more compiles: no more warnings
            f = llgrad.jit(lambda x, s=scale: np.cos(x * s))
            np.testing.assert_allclose(f(np.ones(3)), np.cos(scale * np.ones(3)))
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "in memory only" in messages[0] and str(root) in messages[0]
    assert not list(tmp_path.rglob("*.tmp"))
