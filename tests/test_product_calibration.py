"""Products choose between the tiles and BLAS from this machine's measured table
(``runtime.calibration``), kept per CPU and llgrad version next to the compile cache:
each product timed the first time it is compiled (``codegen.product_timing``), others
interpolated from a calibrated grid."""
from __future__ import annotations

import math

import numpy as np
import pytest

import llgrad
from llgrad import calibrate
from llgrad.compiler.codegen import build, matmul, product_timing
from llgrad.ir import Builder, Graph, TensorType
from llgrad.runtime import blas, calibration, engine
from llgrad.runtime.calibration import Timing

needs_blas = pytest.mark.skipif(not blas.available(), reason="no BLAS found")
PRODUCT = (((1,), (0,)), ((), ()))


@pytest.fixture(autouse=True)
def measuring(tmp_path, monkeypatch):
    """A table of this test's own, and measurement on (the suite turns it off)."""
    monkeypatch.setenv("LLGRAD_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("LLGRAD_CALIBRATION", raising=False)


def _table(ratio_small, ratio_large, threads=1, dtype="float32"):
    """BLAS time / tiles time ``ratio_small`` at 16**3 and ``ratio_large`` at 256**3."""
    return (Timing(dtype, threads, 16, 16, 16, 1.0, ratio_small),
            Timing(dtype, threads, 256, 256, 256, 1.0, ratio_large))


def test_the_ratio_is_interpolated_in_the_logarithm_of_the_shape():
    table = _table(2.0, 0.5)           # log ratio crosses zero at 64**3, halfway in log
    assert calibration.prefers_blas(table, "float32", 1, 16, 16, 16) is False
    assert calibration.prefers_blas(table, "float32", 1, 60, 64, 64) is False
    assert calibration.prefers_blas(table, "float32", 1, 100, 64, 64) is True
    assert calibration.prefers_blas(table, "float32", 1, 1024, 1024, 1024) is True   # held
    assert calibration.prefers_blas(table, "float32", 1, 1, 1, 1) is False
    assert calibration.prefers_blas(table, "float64", 1, 256, 256, 256) is None


def test_a_near_tie_stays_with_the_tiles_and_thread_counts_are_kept_apart():
    tie = 1 / (1 + calibration.TIE / 2)
    assert not calibration.prefers_blas(_table(tie, tie), "float32", 1, 64, 64, 64)
    table = _table(2.0, 2.0, threads=1) + _table(0.5, 0.5, threads=2)
    assert calibration.prefers_blas(table, "float32", 1, 64, 64, 64) is False
    assert calibration.prefers_blas(table, "float32", 2, 64, 64, 64) is True
    assert calibration.prefers_blas(table, "float32", 4, 64, 64, 64) is True   # nearest below
    points = [((1, 1, 1), 1.0), ((4, 4, 4), 3.0)]
    assert calibration.weighted(points, (4, 4, 4)) == 3.0
    assert math.isclose(calibration.weighted(points, (2, 2, 2)), 2.0)     # halfway in log
    assert math.isclose(calibration.weighted(points, (8, 8, 8)), (1 / 9 + 3) / (1 / 9 + 1))


def test_the_table_is_kept_per_cpu_and_can_be_ignored(tmp_path, monkeypatch):
    assert calibration.load() == ()
    where = calibration.store(_table(2.0, 0.5))
    assert where.startswith(str(tmp_path)) and calibration.load() == _table(2.0, 0.5)
    monkeypatch.setenv("LLGRAD_CALIBRATION", "0")
    assert calibration.load() == () and not calibration.enabled()
    monkeypatch.delenv("LLGRAD_CALIBRATION")
    real = engine.context()
    monkeypatch.setattr(engine, "context", lambda: real[:2] + ("othercpu", real[3]))
    assert calibration.path() != where and calibration.load() == ()


def test_a_later_timing_replaces_the_same_products_row():
    calibration.store(_table(2.0, 0.5))
    again = Timing("float32", 1, 16, 16, 16, 1.0, 0.25)
    calibration.add([again])
    assert calibration.load() == (_table(2.0, 0.5)[1], again)


def _compiled(M, K, N, threads=1, dtype="float32"):
    b = Builder()
    x = b.parameter(index=0, type=TensorType((M, K), dtype), name="a")
    y = b.parameter(index=1, type=TensorType((K, N), dtype), name="b")
    exe = build.compile_graph(Graph([x, y], [b.dot_general(x, y, dims=PRODUCT)]),
                              threads=threads)
    a = np.random.default_rng(3).standard_normal((M, K)).astype(dtype)
    w = np.random.default_rng(4).standard_normal((K, N)).astype(dtype)
    np.testing.assert_allclose(exe(a, w)[0], a.astype(np.float64) @ w, rtol=1e-4, atol=1e-4)
    return exe


def _uses_blas(table, monkeypatch, M, K, N, threads=1):
    """Whether the product goes to BLAS under ``table`` (small enough that numpy's
    reference product starts no OpenBLAS threads, which would spin beside later tests)."""
    monkeypatch.setattr(calibration, "load", lambda: table)
    exe = _compiled(M, K, N, threads)
    return "gemm" in exe.llvm_ir, exe._lowering.options.cache_key()


@needs_blas
def test_a_product_not_timed_follows_the_grid(monkeypatch):
    assert 40 * 64 * 48 < matmul.BLAS_MIN_FLOPS      # too small to be timed by itself
    slow_blas, key_a = _uses_blas(_table(3.0, 3.0), monkeypatch, 40, 64, 48)
    fast_blas, key_b = _uses_blas(_table(0.3, 0.3), monkeypatch, 40, 64, 48)
    assert (slow_blas, fast_blas) == (False, True) and key_a != key_b
    assert _uses_blas(_table(0.3, 0.3), monkeypatch, 8, 8, 8)[0]   # the rules: tiles


def _fake_timer(blas_over_tiles, calls):
    """time_product, answering ``blas_over_tiles`` without timing anything."""
    def fake(lhs, rhs, dims, threads, blas_threads, compile_graph, blas_spins=True):
        calls.append((lhs.shape, rhs.shape, threads))
        timed = Timing(lhs.dtype, threads, lhs.shape[0], lhs.shape[1], rhs.shape[1],
                       1.0, blas_over_tiles, "", blas_threads)
        b = Builder()
        x, y = b.parameter(index=0, type=lhs, name="a"), b.parameter(index=1, type=rhs, name="b")
        return timed._replace(signature=matmul.signature(b.dot_general(x, y, dims=dims)))
    return fake


@needs_blas
def test_each_product_is_timed_once_and_its_timing_decides_both_ways(monkeypatch):
    calls = []
    monkeypatch.setattr(product_timing, "time_product", _fake_timer(0.25, calls))
    # the grid says tiles everywhere; the product's own timing overrules it
    calibration.store(_table(4.0, 4.0))
    exe = _compiled(60, 64, 64)
    assert "gemm" in exe.llvm_ir and calls == [((60, 64), (64, 64), 1)]
    assert "gemm" in _compiled(60, 64, 64).llvm_ir and len(calls) == 1    # stored: not again
    assert _compiled(60, 64, 64, threads=2) and len(calls) == 2           # another count
    rows = [t for t in calibration.load() if t.signature]
    assert [(t.threads, t.signature) for t in rows] == [
        (1, "(60, 64)@(64, 64)" + str(PRODUCT)), (2, "(60, 64)@(64, 64)" + str(PRODUCT))]
    # the rules would send this one to BLAS; its timing keeps it as tiles
    monkeypatch.setattr(product_timing, "time_product", _fake_timer(4.0, calls))
    assert 64 * 64 * 64 >= matmul.BLAS_MIN_FLOPS
    exe = _compiled(64, 64, 64)
    assert "gemm" not in exe.llvm_ir and len(calls) == 3
    # a module's key names its own products' rows, not the whole table
    assert exe._lowering.options.product_timings == _table(4.0, 4.0) + (calibration.load()[-1],)


@needs_blas
def test_products_inside_a_loop_are_timed(monkeypatch):
    calls = []
    monkeypatch.setattr(product_timing, "time_product", _fake_timer(0.25, calls))

    def f(w, xs):
        def step(h, x):
            h = np.tanh(h @ w + x)
            return h, h
        return llgrad.scan(step, xs[0], xs)[1].sum()

    w = np.eye(64, dtype=np.float32) * 0.5
    xs = np.random.default_rng(0).standard_normal((3, 60, 64)).astype(np.float32)
    value = llgrad.jit(f)(w, xs)
    h, total = xs[0], 0.0
    for x in xs:
        h = np.tanh(h @ w + x)
        total += h.sum()
    np.testing.assert_allclose(value, total, rtol=1e-4)
    assert ((60, 64), (64, 64), llgrad_threads()) in calls


def llgrad_threads():
    from llgrad.compiler.codegen.parallel import default_parts
    return default_parts()


def test_nothing_is_timed_when_turned_off(monkeypatch):
    calls = []
    monkeypatch.setattr(product_timing, "time_product", _fake_timer(0.25, calls))
    monkeypatch.setenv("LLGRAD_CALIBRATION", "0")
    _compiled(64, 64, 64, threads=1)
    assert calls == [] and calibration.load() == ()


@needs_blas
def test_a_product_is_timed_both_ways():
    t = product_timing.time_product(TensorType((64, 64), "float64"),
                                    TensorType((64, 64), "float64"), PRODUCT, 1, 1,
                                    build.compile_graph)
    assert (t.dtype, t.threads, t.M, t.K, t.N, t.blas_threads) == ("float64", 1, 64, 64, 64, 1)
    assert t.signature == "(64, 64)@(64, 64)" + str(PRODUCT)
    assert 0 < t.tiles_s < 1 and 0 < t.blas_s < 1
    grid = calibrate.time_shape(8, 8, 8, "float64", 1)
    assert (grid.M, grid.K, grid.N, grid.signature) == (8, 8, 8, "")
    before = blas.set_threads(1)
    if before is not None:
        assert blas.threads() == 1 and blas.set_threads(before) == 1


def test_forget_drops_the_timed_products_and_keeps_the_grid(capsys):
    timed = Timing("float32", 1, 60, 64, 64, 1.0, 0.5, "(60, 64)@(64, 64)" + str(PRODUCT), 1)
    calibration.store(_table(2.0, 0.5) + (timed,))
    calibrate.main(["--forget"])
    assert calibration.load() == _table(2.0, 0.5) and "kept the grid" in capsys.readouterr().out


def test_the_table_can_be_copied_into_an_empty_cache(tmp_path, monkeypatch):
    calibration.store(_table(2.0, 0.5))
    calibration.copy_into(str(tmp_path / "fresh"))
    monkeypatch.setenv("LLGRAD_CACHE_DIR", str(tmp_path / "fresh"))
    assert calibration.load() == _table(2.0, 0.5)
    monkeypatch.setenv("LLGRAD_CACHE_DIR", str(tmp_path / "empty"))
    calibration.copy_into(str(tmp_path / "nothing"))       # no table: nothing to copy
    assert not (tmp_path / "nothing").exists()


@needs_blas
def test_a_table_that_cannot_be_written_does_not_stop_a_compile(monkeypatch):
    calls = []
    monkeypatch.setattr(product_timing, "time_product", _fake_timer(0.25, calls))

    def refuse(timings):
        raise PermissionError("read-only cache")
    monkeypatch.setattr(calibration, "add", refuse)
    assert "gemm" in _compiled(60, 64, 64).llvm_ir and len(calls) == 1


@needs_blas
def test_a_program_with_collectives_times_nothing(monkeypatch):
    """Every rank of an MPI job compiles at once: no rank times products against the
    others, so all follow the same stored rows."""
    from llgrad.runtime import mpi
    calls = []
    monkeypatch.setattr(product_timing, "time_product", _fake_timer(0.25, calls))
    monkeypatch.setattr(mpi, "uses_collectives", lambda graph: True)
    _compiled(64, 64, 64)
    assert calls == [] and calibration.load() == ()
