"""Data-parallel training on MPI: the MPI tests run as real jobs, launched from here.

``mpiexec -n 2`` (and ``-n 3``, more ranks than this machine's cores where it has
2: oversubscribed, which MPICH allows and Open MPI needs ``--oversubscribe`` for)
runs ``python -m pytest tests/distributed``, one pytest per rank.  Faults run
``tests/distributed/faults.py``: the job must end by itself, with the error, well
within the timeout, which is what shows there is no hang.  Skipped without mpi4py
or mpiexec (``pip install -e '.[mpi]'``).  The rest checks the collective's record
and code without MPI.
"""
import importlib.util
import os
import shutil
import signal
import subprocess
import sys

import pytest

from llgrad import distributed
from llgrad.compiler.autodiff.reverse import vjp
from llgrad.compiler.codegen.build import Lowering, codegen_options, compile_graph
from llgrad.ir.errors import DTypeError, GradientError, ShapeError, UnsupportedError
from llgrad.ir.graph import Builder, Graph
from llgrad.ir.types import TensorType
from llgrad.runtime import mpi

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPIEXEC = shutil.which("mpiexec")
needs_mpi = pytest.mark.skipif(
    importlib.util.find_spec("mpi4py") is None or MPIEXEC is None,
    reason="mpi4py or mpiexec is not installed (pip install -e '.[mpi]')")
#: seconds a job may take before the test calls it a hang (each takes a few)
HANG = 120


def _oversubscribe() -> list:
    version = subprocess.run([MPIEXEC, "--version"], capture_output=True, text=True).stdout
    return ["--oversubscribe"] if "Open MPI" in version or "OpenRTE" in version else []


def _job(ranks: int, *args, **env):
    """Run ``python *args`` on ``ranks`` ranks: (return code, stdout + stderr); a job
    still running after ``HANG`` seconds is killed, with every rank, and fails."""
    command = [MPIEXEC, "-n", str(ranks), *_oversubscribe(), sys.executable, *args]
    environment = {**os.environ, "LLGRAD_THREADS": "1", **env,
                   "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    if "LLGRAD_MPI_TIMEOUT" not in env:
        environment.pop("LLGRAD_MPI_TIMEOUT", None)
    job = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = job.communicate(timeout=HANG)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        output, _ = job.communicate()
        pytest.fail(f"the MPI job hung (killed after {HANG} s): {' '.join(command)}\n{output}")
    return job.returncode, output


@needs_mpi
@pytest.mark.parametrize("ranks, which", [
    (2, "*"),
    (3, "global_batch or every_rank or shuffled or bad_data"),   # the order assumptions
])
def test_the_mpi_tests_pass_as_a_job_of(ranks, which):
    code, output = _job(ranks, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "tests/distributed", *(["-k", which] if which != "*" else []))
    assert code == 0, output


@needs_mpi
@pytest.mark.parametrize("fault, message", [
    ("raise", "rank 1 of 2: the callback raised; aborting the MPI job"),
    ("nan", "rank 1 of 2: training steps 0 to 9 raised"),   # llgrad.debug_nans on rank 1
])
def test_an_exception_on_one_rank_aborts_the_job(fault, message):
    code, output = _job(2, "tests/distributed/faults.py", fault)
    assert code != 0 and message in output, output
    assert "the job finished" not in output


@needs_mpi
def test_a_stalled_rank_ends_the_job_after_the_timeout():
    code, output = _job(2, "tests/distributed/faults.py", "stall", LLGRAD_MPI_TIMEOUT="2")
    assert code != 0, output     # rank 1 is stopped: rank 0, waiting for it, aborts
    assert "rank 0 of 2: " in output and "did not finish within LLGRAD_MPI_TIMEOUT=2 s" in output, output


@needs_mpi
@pytest.mark.slow    # ~10 s: opt in with -m slow (the MPI jobs above stay under a minute)
def test_the_digits_example_on_2_ranks_reaches_the_one_process_accuracy():
    pytest.importorskip("sklearn", reason="scikit-learn (examples extra) holds the digits")
    code, output = _job(2, "examples/train_digits_mpi.py", "10")    # 10 epochs of 30
    assert code == 0, output
    accuracy = float(output.split("test accuracy ")[1].split("%")[0])
    assert accuracy >= 95.0, output     # as tests/test_examples.py asks of one process


# ----------------------------------------------------------------------------------
# the collective without MPI: its record and its code

MPICH = dict(comm=0x44000000, datatype=0x4C00080B, reduce_op=0x58000003, handle_bits=32)


def _allreduce_graph(shape=(5,), dtype="float64", **handles):
    b = Builder()
    x = b.parameter(index=0, type=TensorType(shape, dtype), name="x")
    return Graph([x], [b.allreduce_sum(b.mul(x, x), **(handles or MPICH))], name="summed")


def test_allreduce_takes_a_flat_float_buffer():
    with pytest.raises(ShapeError, match="flat"):
        _allreduce_graph((2, 3))
    with pytest.raises(DTypeError, match="float32 or float64"):
        _allreduce_graph(dtype="int64")


def test_allreduce_is_not_differentiable():
    with pytest.raises(GradientError, match="allreduce_sum is not differentiable"):
        vjp(_allreduce_graph(), [0], cotangents=True)


@pytest.mark.parametrize("bits, handle", [
    (32, "i32 1275070475"),                                   # MPICH: an int
    (64, "ptr inttoptr (i64 1275070475 to ptr)"),             # Open MPI: a pointer
])
def test_the_allreduce_calls_MPI_Allreduce_with_handles_of_their_C_type(bits, handle):
    graph = _allreduce_graph(**{**MPICH, "handle_bits": bits})
    options = codegen_options(fastmath=False, fuse_ops=True, libmvec=True, blas=False,
                              blas_min_flops=None, threads=1)
    code = Lowering(graph, options).llvm_ir
    assert 'call i32 @"MPI_Allreduce"(ptr' in code and f"i32 5, {handle}" in code


def test_a_collective_inside_a_loop_body_is_found():
    b = Builder()
    step = b.parameter(index=0, type=TensorType((), "int64"), name="i")
    x = b.parameter(index=1, type=TensorType((5,), "float64"), name="x")
    inner = Graph([step, x], [b.allreduce_sum(x, **MPICH)], name="body")
    outer = Builder()
    start = outer.parameter(index=0, type=TensorType((5,), "float64"), name="x0")
    looped = outer.loop(start, body=inner, trip_count=3, n_carried=1)
    graph = Graph([start], [outer.tuple_get(looped, index=0)], name="looped")
    assert mpi.uses_collectives(inner) and mpi.uses_collectives(graph)
    assert not mpi.uses_collectives(Graph([start], [outer.neg(start)], name="plain"))


def test_compiling_a_collective_without_mpi4py_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)     # as if not installed
    monkeypatch.setattr(mpi, "_registered", [])
    with pytest.raises(UnsupportedError, match=r"needs mpi4py \(pip install -e '.\[mpi\]'\)"):
        compile_graph(_allreduce_graph())


@pytest.mark.parametrize("value, seconds", [("", None), ("2.5", 2.5), (" 30 ", 30.0)])
def test_LLGRAD_MPI_TIMEOUT_is_seconds_or_unset(monkeypatch, value, seconds):
    monkeypatch.setenv("LLGRAD_MPI_TIMEOUT", value)
    assert distributed.timeout_seconds() == seconds


@pytest.mark.parametrize("value", ["soon", "0", "-1"])
def test_a_bad_LLGRAD_MPI_TIMEOUT_is_refused_by_name(monkeypatch, value):
    monkeypatch.setenv("LLGRAD_MPI_TIMEOUT", value)
    with pytest.raises(ValueError, match=f"LLGRAD_MPI_TIMEOUT='{value}': give a positive"):
        distributed.timeout_seconds()
