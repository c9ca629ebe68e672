"""llgrad.export's build options: threads (llgrad's pool linked into the library) and
blas="cblas" (the system's CBLAS).  Oracles: the single-threaded export (a split kernel
computes every element as one thread does) and the Python function."""
import ctypes
import ctypes.util
import os
import shutil
import subprocess
import textwrap

import numpy as np
import pytest

import llgrad

pytestmark = pytest.mark.skipif(shutil.which("cc") is None,
                                reason="exporting links with a C compiler (cc), not found")


def loss(params, x, y):
    h = np.tanh(x @ params["w1"] + params["b1"])
    return np.mean((h @ params["w2"] - y) ** 2)


@pytest.fixture(scope="module")
def problem():
    """A product large enough to be split across threads and to go to BLAS."""
    rng = np.random.default_rng(0)
    params = {"w1": rng.normal(size=(784, 256)) * 0.05, "b1": np.zeros(256),
              "w2": rng.normal(size=(256, 10)) * 0.1}
    return params, rng.normal(size=(512, 784)), rng.normal(size=(512, 10))


@pytest.fixture(scope="module")
def libraries(problem, tmp_path_factory):
    folder = tmp_path_factory.mktemp("options")
    f = llgrad.value_and_grad(loss)
    return {threads: llgrad.export(f, *problem, path=folder, name=f"mlp{threads}",
                                   threads=threads) for threads in (1, 2)}, folder


def test_a_threaded_library_computes_what_one_thread_does(problem, libraries):
    exported, _ = libraries
    one = llgrad.load_library(exported[1].shared)(*problem)
    lib = llgrad.load_library(exported[2].shared)
    assert lib.cdll.mlp2_init() == 0
    for _ in range(3):
        value, grads = lib(*problem)
        assert value == one[0]
        for k in grads:
            np.testing.assert_array_equal(grads[k], one[1][k])
    lib.cdll.mlp2_shutdown()
    value, grads = lib(*problem)          # parked workers wake for the next call
    np.testing.assert_array_equal(grads["w1"], one[1]["w1"])


def test_a_threaded_library_declares_its_pool_and_a_plain_one_has_none(libraries):
    exported, _ = libraries
    threaded, plain = open(exported[2].header).read(), open(exported[1].header).read()
    assert "int mlp2_init(void);" in threaded and "-lpthread" in threaded
    assert "_init" not in plain and "pthread" not in plain
    symbols = subprocess.run(["nm", "-D", "--defined-only", exported[2].shared],
                             capture_output=True, text=True, check=True).stdout
    assert "parallel" not in symbols and "pool" not in symbols   # the pool stays inside


def test_two_threaded_libraries_link_into_one_program(problem, libraries, tmp_path):
    """Each library has its own pool under its own names: no duplicate symbols."""
    _, folder = libraries
    other = llgrad.export(llgrad.grad(loss), *problem, path=folder, name="other", threads=2)
    program = tmp_path / "both.c"
    program.write_text(textwrap.dedent("""
        #include "mlp2.h"
        #include "other.h"
        int main(void) { return mlp2_init() + other_init(); }
    """))
    subprocess.run(["cc", str(program), f"-I{folder}", os.path.join(folder, "mlp2.a"),
                    other.static, "-lm", "-lpthread", "-o", str(tmp_path / "both")],
                   check=True, capture_output=True)
    assert subprocess.run([str(tmp_path / "both")]).returncode == 0


def test_threads_out_of_range_is_refused_before_anything_is_written(problem, tmp_path):
    with pytest.raises(llgrad.LlgradError, match="threads=9"):
        llgrad.export(llgrad.grad(loss), *problem, path=tmp_path, name="nine", threads=9)
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(ctypes.util.find_library("blas") is None,
                    reason="no system BLAS (Debian: apt-get install libblas-dev)")
def test_blas_cblas_links_the_system_cblas(problem, tmp_path):
    f = llgrad.value_and_grad(loss)
    exported = llgrad.export(f, *problem, path=tmp_path, name="viablas", blas="cblas")
    assert "libblas" in subprocess.run(["ldd", exported.shared], capture_output=True,
                                       text=True, check=True).stdout
    assert "system's CBLAS" in open(exported.header).read()
    value, grads = llgrad.load_library(exported.shared)(*problem)
    expected_value, expected = f(*problem)
    np.testing.assert_allclose(value, expected_value, rtol=1e-13)
    for k in grads:   # another BLAS sums in another order
        np.testing.assert_allclose(grads[k], expected[k], rtol=1e-10, atol=1e-14)


def test_an_unknown_blas_is_refused(problem, tmp_path):
    with pytest.raises(llgrad.LlgradError, match="blas='mkl'"):
        llgrad.export(llgrad.grad(loss), *problem, path=tmp_path, blas="mkl")
    assert os.listdir(tmp_path) == []
