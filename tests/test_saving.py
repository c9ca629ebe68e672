"""llgrad.save / llgrad.load (llgrad/saving.py) and train(checkpoint_every=,
checkpoint_path=), on one process.

Oracles: the arrays saved (exact round trip), the previous file (atomic writes), and
the uninterrupted run (a resumed run must give it bit for bit).
"""
import os

import numpy as np
import pytest

import llgrad
from llgrad import optim


def _tree():
    return {"w": np.arange(6.0).reshape(2, 3), "layers": [np.float32([1.5, -2.0]), (np.int64(7),)]}


def test_save_then_load_gives_back_every_leaf_structure_and_step(tmp_path):
    path = tmp_path / "run.npz"
    state = {"step": np.float64(3.0), "m": {"w": np.ones((2, 3))}}
    llgrad.save(path, _tree(), state, 42)
    params, opt_state, step = llgrad.load(path)
    expected = _tree()
    assert step == 42 and set(params) == {"w", "layers"}
    np.testing.assert_array_equal(params["w"], expected["w"])
    assert params["layers"][0].dtype == np.float32 and isinstance(params["layers"][1], tuple)
    assert params["layers"][1][0] == 7
    np.testing.assert_array_equal(opt_state["m"]["w"], np.ones((2, 3)))


def test_the_file_is_a_plain_npz_without_pickles(tmp_path):
    llgrad.save(tmp_path / "run.npz", {"w": np.ones(3)}, None, 5)
    with np.load(tmp_path / "run.npz", allow_pickle=False) as f:
        assert sorted(f.files) == ["opt_state/tree", "params/0", "params/tree", "step"]
        assert int(f["step"]) == 5


def test_a_failed_write_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    path = tmp_path / "run.npz"
    llgrad.save(path, {"w": np.zeros(3)}, None, 1)

    def write_half_then_fail(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("No space left on device")

    monkeypatch.setattr(np, "savez", write_half_then_fail)
    with pytest.raises(OSError, match="No space"):
        llgrad.save(path, {"w": np.ones(3)}, None, 2)
    monkeypatch.undo()
    assert llgrad.load(path).step == 1
    assert os.listdir(tmp_path) == ["run.npz"]     # no temporary file left behind


def test_loading_something_else_says_so(tmp_path):
    np.savez(tmp_path / "other.npz", x=np.ones(2))
    with pytest.raises(llgrad.LlgradError, match="not a checkpoint written by llgrad.save"):
        llgrad.load(tmp_path / "other.npz")


def _loss(params, x, y):
    return np.mean((np.tanh(x @ params["w"]) - y) ** 2)


def _problem():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(96, 4)), rng.normal(size=(96, 3))
    return {"w": rng.normal(size=(4, 3))}, (x, y)


def test_a_run_resumed_from_its_checkpoint_ends_as_the_uninterrupted_run(tmp_path):
    params, data = _problem()
    run = dict(batch_size=8, epochs=3, shuffle=1)
    whole = llgrad.train(_loss, params, data, optim.adam(1e-2), **run)
    path = tmp_path / "run.npz"
    crashed = llgrad.train(_loss, params, data, optim.adam(1e-2), checkpoint_every=5,
                           checkpoint_path=path, callback=lambda info: info["step"] < 15, **run)
    assert crashed.steps == 15 and llgrad.load(path).step == 15
    resumed = llgrad.train(_loss, params, data, optim.adam(1e-2), checkpoint_every=5,
                           checkpoint_path=path, **run)
    assert resumed.steps == whole.steps == 36
    assert resumed.params["w"].tobytes() == whole.params["w"].tobytes()
    assert resumed.opt_state["v"]["w"].tobytes() == whole.opt_state["v"]["w"].tobytes()
    assert resumed.loss_history.tobytes() == whole.loss_history.tobytes()
    assert resumed.grad_norms["w"].tobytes() == whole.grad_norms["w"].tobytes()
    assert llgrad.load(path).step == 35    # the last multiple of 5


def test_checkpoint_every_needs_a_path():
    params, data = _problem()
    with pytest.raises(ValueError, match="checkpoint_every=5 needs"):
        llgrad.train(_loss, params, data, optim.sgd(0.1), batch_size=8, checkpoint_every=5)
