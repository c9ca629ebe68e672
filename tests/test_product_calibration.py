"""Products choose between the tiles and BLAS from this machine's measured table
(``runtime.calibration``), kept per CPU and llgrad version next to the compile cache."""
from __future__ import annotations

import math

import numpy as np
import pytest

from llgrad import calibrate
from llgrad.compiler.codegen import build
from llgrad.runtime import blas, calibration, engine
from llgrad.runtime.calibration import Timing

needs_blas = pytest.mark.skipif(not blas.available(), reason="no BLAS found")


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
    monkeypatch.setenv("LLGRAD_CACHE_DIR", str(tmp_path))
    assert calibration.load() == ()
    where = calibration.store(_table(2.0, 0.5))
    assert where.startswith(str(tmp_path)) and calibration.load() == _table(2.0, 0.5)
    monkeypatch.setenv("LLGRAD_CALIBRATION", "0")
    assert calibration.load() == ()
    monkeypatch.delenv("LLGRAD_CALIBRATION")
    real = engine.context()
    monkeypatch.setattr(engine, "context", lambda: real[:2] + ("othercpu", real[3]))
    assert calibration.path() != where and calibration.load() == ()


def _uses_blas(table, monkeypatch, M=60, K=64, N=64, threads=1):
    """Whether the product goes to BLAS under ``table`` (small enough that numpy's
    reference product starts no OpenBLAS threads, which would spin beside later tests)."""
    monkeypatch.setattr(calibration, "load", lambda: table)
    options = build.codegen_options(fastmath=False, fuse_ops=True, libmvec=True, blas=True,
                                    blas_min_flops=None, threads=threads)
    assert options.product_timings == table
    exe = calibrate._product(M, K, N, "float32", threads, None)
    a = np.random.default_rng(3).standard_normal((M, K)).astype(np.float32)
    b = np.random.default_rng(4).standard_normal((K, N)).astype(np.float32)
    np.testing.assert_allclose(exe(a, b)[0], a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4)
    return "gemm" in exe.llvm_ir, options.cache_key()


@needs_blas
def test_code_generation_follows_the_measured_table(monkeypatch):
    slow_blas, key_a = _uses_blas(_table(3.0, 3.0), monkeypatch)
    fast_blas, key_b = _uses_blas(_table(0.3, 0.3), monkeypatch)
    assert (slow_blas, fast_blas) == (False, True) and key_a != key_b
    # the thresholds' choices are overruled both ways: 60x64x64 would be BLAS, 8**3 tiles
    from llgrad.compiler.codegen import matmul
    assert matmul.BLAS_MIN_FLOPS <= 60 * 64 * 64 < matmul.LARGE_TILES_MIN_FLOPS
    assert _uses_blas(_table(0.3, 0.3), monkeypatch, 8, 8, 8)[0]


@needs_blas
def test_a_calibration_times_both_ways():
    t = calibrate.time_shape(8, 8, 8, "float64", 1)
    assert (t.dtype, t.threads, t.M, t.K, t.N) == ("float64", 1, 8, 8, 8)
    assert 0 < t.tiles_s < 1 and 0 < t.blas_s < 1
    before = blas.set_threads(1)
    if before is not None:
        assert blas.set_threads(before) == 1
