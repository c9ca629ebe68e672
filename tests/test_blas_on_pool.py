"""Products OpenBLAS would run on its own threads run, in a module that splits work on
llgrad's pool, as bands of C's rows on that pool, one single-threaded gemm a band
(``matmul._emit_gemm_on_pool``); the oracle is numpy's product in float64."""
from __future__ import annotations

import ctypes
import threading

import numpy as np
import pytest

from llgrad.compiler.codegen import build, matmul
from llgrad.ir import Builder, Graph, TensorType
from llgrad.runtime import blas

pytestmark = pytest.mark.skipif(
    not blas.available() or blas.threads() is None, reason="needs numpy's OpenBLAS")

SET = blas.OPENBLAS_THREAD_COUNT[1]


def _product(M, K, N, dtype, layouts, threads):
    """op(A) @ op(B) with each operand stored as ``layouts`` says ('T': transposed)."""
    b = Builder()
    a_shape = (M, K) if layouts[0] == "N" else (K, M)
    b_shape = (K, N) if layouts[1] == "N" else (N, K)
    x = b.parameter(index=0, type=TensorType(a_shape, dtype), name="a")
    y = b.parameter(index=1, type=TensorType(b_shape, dtype), name="b")
    dims = (((1 if layouts[0] == "N" else 0,), (0 if layouts[1] == "N" else 1,)), ((), ()))
    exe = build.compile_graph(Graph([x, y], [b.dot_general(x, y, dims=dims)]),
                              blas_min_flops=1, threads=threads)
    rng = np.random.default_rng(M + K + N)
    a, w = rng.standard_normal(a_shape).astype(dtype), rng.standard_normal(b_shape).astype(dtype)
    expected = (a.T if layouts[0] == "T" else a).astype(np.float64) @ (
        w.T if layouts[1] == "T" else w)
    return exe, exe(a, w)[0], expected


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layouts", ["NN", "TN", "NT", "TT"])
@pytest.mark.parametrize("M", [16, 17, 100])
def test_bands_of_rows_equal_numpy(M, layouts, dtype):
    K, N = 128, 160
    assert M * K * N >= matmul.BLAS_THREADS_MIN_FLOPS
    before = blas.threads()
    exe, got, expected = _product(M, K, N, dtype, layouts, threads=2)
    assert SET in exe.llvm_ir and ".gemm" in exe.llvm_ir
    tol = 1e-4 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol * K)
    assert blas.threads() == before          # OpenBLAS's own count is put back


def test_one_thread_or_few_rows_call_blas_once():
    for M, threads in ((100, 1), (15, 2)):
        exe, got, expected = _product(M, 128, 160, "float64", "NN", threads)
        assert SET not in exe.llvm_ir
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-10)


def test_the_first_holder_saves_the_count_and_the_last_puts_it_back():
    """``llgrad_blas_hold`` and ``llgrad_blas_release`` (``runtime.pool``), called as
    two products at once would: one thread count saved, set to one once, put back once
    the second product is done too."""
    from llgrad.runtime import pool
    pool.install()
    count, calls = [4], []
    getter = ctypes.CFUNCTYPE(ctypes.c_int32)
    setter = ctypes.CFUNCTYPE(None, ctypes.c_int32)
    get = getter(lambda: count[0])
    put = setter(lambda n: (calls.append(n), count.__setitem__(0, n)) and None)
    compiled = pool._state["compiled"]
    hold = ctypes.CFUNCTYPE(None, getter, setter)(compiled.address_of(pool.HOLD_SYMBOL))
    release = ctypes.CFUNCTYPE(None, setter)(compiled.address_of(pool.RELEASE_SYMBOL))
    hold(get, put)
    hold(get, put)                 # a second product begins while the first runs
    assert calls == [1]
    release(put)                   # the first ends: the second still holds OpenBLAS
    assert calls == [1] and count[0] == 1
    release(put)
    assert calls == [1, 4] and count[0] == 4


def test_products_from_two_python_threads_leave_openblas_its_count():
    """Each product used to save and restore OpenBLAS's count itself: one that began
    while another held the count at one put back one for good."""
    exe, _, expected = _product(100, 128, 160, "float64", "NN", threads=2)
    rng = np.random.default_rng(3)
    a, w = rng.standard_normal((100, 128)), rng.standard_normal((128, 160))
    before = blas.threads()
    errors = []

    def run():
        try:
            for _ in range(200):
                np.testing.assert_allclose(exe(a, w)[0], a @ w, rtol=1e-12, atol=1e-10)
        except AssertionError as error:
            errors.append(error)

    workers = [threading.Thread(target=run) for _ in range(2)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert not errors
    assert blas.threads() == before
