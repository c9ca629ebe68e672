"""Large elementwise kernels split across threads compute exactly what one thread does."""
import numpy as np
import pytest

import llgrad
from llgrad.compiler.codegen import parallel
from llgrad.compiler.pipeline import compile_graph


def loss(x):
    return np.sum(np.log(1 + np.exp(np.sin(x) * x)) + np.sqrt(x * x + 1) * np.cos(x))


def _graph(n):
    x = np.random.default_rng(n).normal(size=n)
    return llgrad.value_and_grad(loss).trace(x).optimized, x


@pytest.mark.parametrize("parts", [2, 3])
def test_split_kernels_equal_one_thread_bit_for_bit(parts):
    graph, x = _graph(parallel.MIN_ELEMENTS + 1001)   # pieces of unequal length
    one = compile_graph(graph, threads=1)
    split = compile_graph(graph, threads=parts)
    assert "llgrad_parallel" in split.llvm_ir and "llgrad_parallel" not in one.llvm_ir
    value, grad = split(x)
    want_value, want_grad = one(x)
    assert value == want_value
    np.testing.assert_array_equal(grad, want_grad)
    s, c = np.sin(x), np.cos(x)
    e = np.exp(s * x)
    np.testing.assert_allclose(grad, e / (1 + e) * (c * x + s) + x / np.sqrt(x * x + 1) * c
                               - np.sqrt(x * x + 1) * s, rtol=1e-12, atol=1e-12)


def test_small_kernels_are_never_split():
    graph, _ = _graph(parallel.MIN_ELEMENTS - 1)
    assert "llgrad_parallel" not in compile_graph(graph, threads=4).llvm_ir


def test_llgrad_threads_sets_the_default(monkeypatch):
    monkeypatch.setenv("LLGRAD_THREADS", "1")
    assert parallel.default_parts() == 1
    monkeypatch.setenv("LLGRAD_THREADS", "3")
    assert parallel.default_parts() == 3
