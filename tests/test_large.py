"""Large work: index arithmetic is 64-bit everywhere, and memory that cannot be had is
a MemoryError naming the function and the bytes before any native code runs.

The default tests compile (never run) a function whose intermediate has 2**40
elements and read the index types off its LLVM IR; ``pytest -m large`` runs arrays of
10**8 elements and reads past element 2**31 of a real array (needs ~6 GB of memory)."""
import re

import numpy as np
import pytest

import llgrad

SIDE = 2 ** 20          # SIDE x SIDE elements: 2**40, flat indices far beyond 2**32


def corner_of_grid(r, c):
    grid = r * float(SIDE) + c              # (SIDE, SIDE), materialised: 8 TiB
    return grid.reshape(-1)[-5:]            # its last five elements, by flat index


def grid_args():
    return np.arange(float(SIDE)).reshape(-1, 1), np.arange(float(SIDE)).reshape(1, -1)


def test_index_arithmetic_of_every_kernel_is_64_bit():
    """Loop counters, flat offsets and addresses are i64: a 32-bit counter could not
    count to SIDE * SIDE, and a 32-bit offset would wrap long before it."""
    trace = llgrad.jit(corner_of_grid).trace(*grid_args())
    ir_text = trace.llvm_ir
    phis = re.findall(r"= phi\s+(\w+)", ir_text)
    geps = re.findall(r"getelementptr(?: inbounds)? [\w ]+?, ptr [^,]+, (\w+) ", ir_text)
    assert phis and set(phis) == {"i64"}
    assert geps and set(geps) == {"i64"}
    # (pthread_create's int result, when a kernel is split across threads, is no index;
    # nor are the debug-info metadata's flags, lines starting with "!")
    assert not re.search(r"\bi32\b", "\n".join(
        line for line in ir_text.splitlines()
        if "pthread" not in line and not line.startswith("!")))
    assert re.search(rf"mul nuw nsw i64 %\S+, {SIDE}\b", ir_text)       # row * SIDE
    assert trace.executable.arena_bytes >= 8 * SIDE * SIDE             # no 32-bit wrap


def test_memory_that_cannot_be_had_is_a_memory_error_before_native_code_runs():
    r, c = grid_args()
    with pytest.raises(MemoryError, match=r"corner_of_grid\(\): cannot allocate") as info:
        llgrad.jit(corner_of_grid)(r, c)
    requested = int(re.search(r"allocate (\d+) bytes", str(info.value)).group(1))
    assert requested >= 8 * SIDE * SIDE and "GiB" in str(info.value)
    with pytest.raises(MemoryError, match=rf"<lambda>\(\): cannot allocate {8 * SIDE * SIDE} "
                                          rf"bytes .* output of shape \({SIDE}, {SIDE}\)"):
        llgrad.jit(lambda r, c: r + c)(r, c)


@pytest.mark.large
def test_hundred_million_elements_value_and_gradient():
    n = 10 ** 8
    x = np.linspace(-3.0, 3.0, n)
    value, grad = llgrad.value_and_grad(lambda v: np.sum(np.tanh(2.0 * v + 0.5)))(x)
    t = np.tanh(2.0 * x + 0.5)
    np.testing.assert_allclose(value, t.sum(), rtol=1e-9)
    np.testing.assert_allclose(grad[::9_999_991], (2 * (1 - t * t))[::9_999_991], rtol=1e-13,
                               atol=1e-15)
    assert grad.shape == (n,)


@pytest.mark.large
def test_reads_beyond_element_two_to_the_31():
    n = 2 ** 31 + 48
    flags = np.zeros(n, dtype=bool)
    flags[[0, 2 ** 31 - 1, 2 ** 31, 2 ** 31 + 7, n - 1]] = True
    count, tail = llgrad.jit(lambda f: (f.astype(np.int64).sum(), f[-48:]))(flags)
    assert count == 5
    np.testing.assert_array_equal(tail, flags[-48:])
