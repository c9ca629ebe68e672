"""Data-parallel training inside an MPI job (run by tests/test_distributed.py).

Oracle: one process training on the global batches (each the union of the ranks'
batches of that step), which data parallelism must reproduce to float64 rounding.
"""
import tempfile

import numpy as np
import pytest

import llgrad
from llgrad import distributed, optim

from mpi_models import BATCH, STEPS, global_order, loss, one_process, problem

MPI = pytest.importorskip("mpi4py.MPI")
COMM = MPI.COMM_WORLD
SIZE, RANK = COMM.Get_size(), COMM.Get_rank()


def _shards_and_oracle(optimizer, shuffle=None):
    params, x, y = problem(SIZE)
    shard_x, shard_y = distributed.shard((x, y), COMM)
    rows = len(x) // SIZE
    orders = [np.arange(rows) if shuffle is None
              else np.random.default_rng([shuffle, r]).permutation(rows) for r in range(SIZE)]
    oracle = one_process(params, x, y, optimizer, global_order(SIZE, rows, orders), SIZE)
    return params, (shard_x, shard_y), oracle


def _assert_close(result, oracle):
    for name in result.params:
        np.testing.assert_allclose(result.params[name], oracle.params[name], rtol=1e-12,
                                   atol=1e-14, err_msg=name)
        np.testing.assert_allclose(result.grad_norms[name], oracle.grad_norms[name],
                                   rtol=1e-12, err_msg=name)
    np.testing.assert_allclose(result.loss_history, oracle.loss_history, rtol=1e-12)


def _same_on_every_rank(*arrays):
    for a in arrays:
        gathered = COMM.allgather(np.asarray(a))
        assert all(g.tobytes() == gathered[0].tobytes() for g in gathered)


@pytest.mark.parametrize("optimizer", [optim.sgd(0.1), optim.adam(1e-2)], ids=["sgd", "adam"])
def test_params_after_50_steps_equal_one_process_on_the_global_batch(optimizer):
    params, shard, oracle = _shards_and_oracle(optimizer)
    result = llgrad.train(loss, params, shard, optimizer, batch_size=BATCH, comm=COMM)
    assert result.steps == oracle.steps == STEPS
    _assert_close(result, oracle)


def test_a_shuffled_run_takes_each_ranks_own_permutation_of_its_shard():
    optimizer = optim.adam(1e-2)
    params, shard, oracle = _shards_and_oracle(optimizer, shuffle=7)
    result = llgrad.train(loss, params, shard, optimizer, batch_size=BATCH, shuffle=7,
                          comm=COMM)
    _assert_close(result, oracle)


def test_the_result_is_the_same_on_every_rank_and_repeats_bit_for_bit():
    params, x, y = problem(SIZE)
    shard = distributed.shard((x, y), COMM)
    runs = [llgrad.train(loss, params, shard, optim.adam(1e-2), batch_size=BATCH, shuffle=3,
                         comm=COMM) for _ in range(2)]
    for name in params:
        assert runs[0].params[name].tobytes() == runs[1].params[name].tobytes()
        _same_on_every_rank(runs[0].params[name], runs[0].grad_norms[name])
    assert runs[0].loss_history.tobytes() == runs[1].loss_history.tobytes()
    _same_on_every_rank(runs[0].loss_history, runs[0].seconds, runs[0].compile_seconds)


def test_every_rank_starts_from_rank_0s_parameters():
    params, x, y = problem(SIZE)
    mine = {k: v + RANK for k, v in params.items()}   # only rank 0's are the problem's
    shard = distributed.shard((x, y), COMM)
    result = llgrad.train(loss, mine, shard, optim.sgd(0.1), batch_size=BATCH, comm=COMM)
    expected = llgrad.train(loss, params, shard, optim.sgd(0.1), batch_size=BATCH, comm=COMM)
    for name in params:
        assert result.params[name].tobytes() == expected.params[name].tobytes()


def test_mismatched_shapes_on_one_rank_raise_a_clear_error_on_every_rank():
    params, x, y = problem(SIZE)
    if RANK == 1:
        params["w1"] = np.zeros((5, 17))
    with pytest.raises(llgrad.ShapeError, match=r"params\['w1'\]: rank 0 has float64\[5, 16\], "
                                                r"rank 1 has float64\[5, 17\]"):
        llgrad.train(loss, params, distributed.shard((x, y), COMM), optim.sgd(0.1),
                     batch_size=BATCH, comm=COMM)


def test_different_batch_sizes_or_optimizers_raise_on_every_rank():
    params, x, y = problem(SIZE)
    shard = distributed.shard((x, y), COMM)
    with pytest.raises(llgrad.ShapeError, match="batch_size: rank 0 has 8, rank 1 has 4"):
        llgrad.train(loss, params, shard, optim.sgd(0.1), batch_size=BATCH // (1 + (RANK == 1)),
                     comm=COMM)
    with pytest.raises(llgrad.ShapeError, match=r"optimizer: rank 0 has SGD\(lr=0.1"):
        llgrad.train(loss, params, shard, optim.sgd(0.1 if RANK == 0 else 0.2),
                     batch_size=BATCH, comm=COMM)


def test_bad_data_on_one_rank_raises_its_error_on_every_rank():
    params, x, y = problem(SIZE)
    shard_x, shard_y = distributed.shard((x, y), COMM)
    if RANK == SIZE - 1:
        shard_y = shard_y[:-3]
    with pytest.raises(llgrad.ShapeError, match=f"rank {SIZE - 1} of {SIZE}: train\\(\\): data "
                                                f"arrays have different lengths"):
        llgrad.train(loss, params, (shard_x, shard_y), optim.sgd(0.1), batch_size=BATCH,
                     comm=COMM)


def test_a_checkpoint_written_mid_run_resumes_to_the_uninterrupted_result():
    params, x, y = problem(SIZE)
    shard = distributed.shard((x, y), COMM)
    path = COMM.bcast(tempfile.mkdtemp(prefix="llgrad-ckpt-") if RANK == 0 else None) + "/run.npz"
    run = dict(batch_size=BATCH, epochs=2, shuffle=5, comm=COMM)
    whole = llgrad.train(loss, params, shard, optim.adam(1e-2), **run)
    crashed = llgrad.train(loss, params, shard, optim.adam(1e-2), checkpoint_every=20,
                           checkpoint_path=path, callback=lambda info: info["step"] < 40, **run)
    assert crashed.steps == 40
    resumed = llgrad.train(loss, params, shard, optim.adam(1e-2), checkpoint_every=20,
                           checkpoint_path=path, **run)
    assert resumed.steps == whole.steps == 2 * STEPS
    for name in params:
        assert resumed.params[name].tobytes() == whole.params[name].tobytes()
    assert resumed.loss_history.tobytes() == whole.loss_history.tobytes()


def test_the_allreduce_is_one_kernel_of_its_own_in_the_profile():
    params, x, y = problem(SIZE)
    result = llgrad.train(loss, params, distributed.shard((x, y), COMM), optim.sgd(0.1),
                          batch_size=BATCH, comm=COMM, profile=True)
    rows = [r for r in result.profile.rows if r["label"]["op"] == "allreduce_sum"]
    assert len(rows) == 1                      # one flat buffer: loss and every gradient
    assert rows[0]["calls"] == STEPS
    assert rows[0]["label"]["type"] == f"f64[{1 + sum(p.size for p in params.values())}]"


def test_allreduce_mean_is_the_mean_over_the_ranks():
    tree = {"a": np.arange(6.0).reshape(2, 3) * (RANK + 1), "b": [np.float32(RANK)]}
    mean = distributed.allreduce_mean(tree, COMM)
    np.testing.assert_allclose(mean["a"], np.arange(6.0).reshape(2, 3) * (SIZE + 1) / 2)
    assert mean["b"][0].shape == () and mean["b"][0] == np.float32((SIZE - 1) / 2)


def test_shard_cuts_contiguous_blocks_that_cover_the_data():
    x = np.arange(23 * 2).reshape(23, 2)
    pieces = COMM.allgather(distributed.shard(x, COMM))
    np.testing.assert_array_equal(np.concatenate(pieces), x)


def test_the_interpreter_runs_the_collective_as_the_native_code_does():
    params, x, y = problem(SIZE)
    shard = distributed.shard((x, y), COMM)
    runs = [llgrad.train(loss, params, shard, optim.adam(1e-2), batch_size=BATCH, epochs=1,
                         comm=COMM, backend=backend) for backend in ("native", "interpret")]
    for name in params:
        np.testing.assert_allclose(runs[0].params[name], runs[1].params[name], rtol=1e-12)
    np.testing.assert_allclose(runs[0].loss_history, runs[1].loss_history, rtol=1e-12)
