"""llgrad.train: the native loop does exactly what a Python loop over llgrad.grad and
the same optimizer does, step for step."""
import numpy as np
import pytest

from models import mlp_loss

import llgrad
from llgrad import optim


def problem(n=96, seed=0, dtype=np.float64):
    """A separable 3-class problem: the class is decided by the signs of two features."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    y = np.eye(3)[(x[:, 0] > 0).astype(int) + (x[:, 1] > 0)]
    params = {"w1": rng.normal(size=(4, 8)) * 0.5, "b1": np.zeros(8),
              "w2": rng.normal(size=(8, 3)) * 0.5, "b2": np.zeros(3)}
    return {k: v.astype(dtype) for k, v in params.items()}, x.astype(dtype), y.astype(dtype)


def python_loop(opt, params, x, y, batch_size, steps, backend):
    """The oracle: one llgrad.grad call and one numpy optimizer update per step."""
    grad = llgrad.value_and_grad(mlp_loss, backend=backend)
    state, per_epoch = opt.init(params), len(x) // batch_size
    losses, norms = [], []
    for s in range(steps):
        rows = slice((s % per_epoch) * batch_size, (s % per_epoch + 1) * batch_size)
        value, g = grad(params, x[rows], y[rows])
        losses.append(value)
        norms.append({k: np.sqrt(np.sum(v * v)) for k, v in g.items()})
        params, state = opt.update(g, state, params)
    return params, losses, norms


@pytest.mark.parametrize("make_opt", [lambda: optim.sgd(0.1), lambda: optim.adam(1e-2),
                                      lambda: optim.momentum(0.05, nesterov=True)],
                         ids=["sgd", "adam", "nesterov"])
def test_fifty_native_steps_equal_a_python_loop(make_opt, backend):
    params, x, y = problem()
    opt = make_opt()
    result = llgrad.train(mlp_loss, params, (x, y), opt, batch_size=16, epochs=50 * 16 // 96 + 1,
                          backend=backend)
    steps = result.steps
    expected, losses, norms = python_loop(opt, params, x, y, 16, steps, backend)
    for k in params:
        np.testing.assert_allclose(result.params[k], expected[k], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(result.loss_history, losses, rtol=1e-12)
    for k in params:
        np.testing.assert_allclose(result.grad_norms[k], [n[k] for n in norms], rtol=1e-11)
    assert steps >= 50


def test_without_grad_norms_the_loop_trains_the_same_and_computes_no_norm(backend):
    """grad_norms=False: the same parameters and losses as the Python loop, no norms in
    the result, and no square root left in the compiled step (the norms' only one)."""
    params, x, y = problem()
    opt = optim.momentum(0.05)
    result = llgrad.train(mlp_loss, params, (x, y), opt, batch_size=16, epochs=2,
                          grad_norms=False, backend=backend)
    expected, losses, _ = python_loop(opt, params, x, y, 16, result.steps, backend)
    for k in params:
        np.testing.assert_allclose(result.params[k], expected[k], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(result.loss_history, losses, rtol=1e-12)
    assert result.grad_norms is None
    with_norms = llgrad.train(mlp_loss, params, (x, y), opt, batch_size=16, backend=backend)
    assert "sqrt" in step_ops(with_norms) and "sqrt" not in step_ops(result)


def step_ops(result):
    """The ops of the compiled step: the body of the loop every output comes from."""
    loop = result.graph.outputs[0].inputs[0]
    return [n.op for n in loop.attrs["body"].nodes]


def test_grad_norms_of_parameters_of_every_rank_match_numpy(backend):
    """Norms of long rows sum each row first (a different order from one flat sum):
    checked against numpy on a scalar, a vector, matrices with short and long rows and
    a rank-3 parameter."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(24, 3))
    params = {"s": np.array(0.7), "v": rng.normal(size=3), "m": rng.normal(size=(3, 5)),
              "t": rng.normal(size=(2, 5, 4)), "long": rng.normal(size=(3, 70))}

    def loss(p, xb):
        h = np.tanh(p["s"] * xb + p["v"]) @ p["m"]
        return np.sum(np.tanh(h @ p["t"][0]) * (h @ p["t"][1])) + np.sum(np.tanh(xb @ p["long"]))

    result = llgrad.train(loss, params, (x,), optim.sgd(1e-3), batch_size=8, backend=backend)
    grad, p = llgrad.grad(loss, backend=backend), params
    for step in range(3):
        g = grad(p, x[8 * step:8 * step + 8])
        for k in params:
            assert result.grad_norms[k][step] == pytest.approx(np.linalg.norm(g[k]), rel=1e-12)
        p = {k: p[k] - 1e-3 * g[k] for k in p}


def test_loss_decreases_on_a_separable_problem(backend):
    params, x, y = problem(n=192)
    result = llgrad.train(mlp_loss, params, (x, y), optim.adam(3e-2), batch_size=32, epochs=30,
                          shuffle=0, backend=backend)
    first, last = result.loss_history[:6].mean(), result.loss_history[-6:].mean()
    assert last < 0.3 * first, (first, last)
    accuracy = np.mean(np.argmax(np.tanh(x @ result.params["w1"] + result.params["b1"])
                                 @ result.params["w2"] + result.params["b2"], axis=1)
                       == np.argmax(y, axis=1))
    assert accuracy > 0.9


def test_shuffle_is_deterministic_per_seed(backend):
    params, x, y = problem()
    run = lambda seed: llgrad.train(mlp_loss, params, (x, y), optim.sgd(0.1), batch_size=16,
                                    epochs=2, shuffle=seed, backend=backend)
    a, b, c = run(3), run(3), run(4)
    np.testing.assert_array_equal(a.loss_history, b.loss_history)
    assert not np.array_equal(a.loss_history, c.loss_history)


def test_shuffled_epochs_visit_a_permutation(backend):
    """With batch_size 1 and plain SGD on the loss 'sum of the batch', each epoch's
    steps see every row exactly once."""
    x = np.arange(12.0).reshape(12, 1)
    result = llgrad.train(lambda p, xb: (p["w"] * xb).sum(), {"w": np.zeros(1)}, (x,),
                          optim.sgd(1.0), batch_size=1, epochs=3, shuffle=7, backend=backend)
    history = result.loss_history.reshape(3, 12)
    order = np.random.default_rng(7)
    seen = [order.permutation(12) for _ in range(3)]
    # loss at step t is w_t * x_row with w_t = -(sum of rows seen so far)
    w = 0.0
    for epoch in range(3):
        for t, row in enumerate(seen[epoch]):
            assert history[epoch, t] == pytest.approx(w * row)
            w -= row


def test_progress_chunks_and_callbacks_do_not_change_results(backend, capsys):
    params, x, y = problem()
    whole = llgrad.train(mlp_loss, params, (x, y), optim.adam(1e-2), batch_size=16, epochs=3,
                         shuffle=1, backend=backend)
    seen = []
    chunked = llgrad.train(mlp_loss, params, (x, y), optim.adam(1e-2), batch_size=16, epochs=3,
                           shuffle=1, progress=True, callback=lambda info: seen.append(info["step"]),
                           backend=backend)
    assert seen == [6, 12, 18]
    assert "18/18" in capsys.readouterr().err     # tqdm's bar, or the plain one
    np.testing.assert_array_equal(chunked.loss_history, whole.loss_history)
    for k in params:
        np.testing.assert_array_equal(chunked.params[k], whole.params[k])


def test_callback_can_stop_training(backend):
    params, x, y = problem()
    result = llgrad.train(mlp_loss, params, (x, y), optim.sgd(0.1), batch_size=16, epochs=5,
                          callback=lambda info: info["epoch"] < 2, backend=backend)
    assert result.steps == 12 and len(result.loss_history) == 12


def test_last_partial_batch_is_dropped(backend):
    params, x, y = problem(n=100)
    result = llgrad.train(mlp_loss, params, (x, y), optim.sgd(0.1), batch_size=16, epochs=2,
                          backend=backend)
    assert result.steps == 2 * (100 // 16)


def test_float32_parameters_stay_float32(backend):
    params, x, y = problem(dtype=np.float32)
    result = llgrad.train(mlp_loss, params, (x, y), optim.adam(1e-2), batch_size=16, epochs=2,
                          backend=backend)
    assert all(v.dtype == np.float32 for v in result.params.values())
    assert np.all(np.isfinite(result.loss_history))


def test_training_loop_ir_shows_the_body_once():
    params, x, y = problem()
    result = llgrad.train(mlp_loss, params, (x, y), optim.sgd(0.1), batch_size=16, epochs=4,
                          backend="interpret")
    text = str(result.graph)
    assert text.count("def train_step(") == 1
    # bounded by a whole chunk (43 epochs of 6 steps: MIN_CHUNK_STEPS), run for 24 steps
    assert text.count("= loop ") == 1 and "trip_count=258" in text


def test_data_of_different_lengths_is_a_clear_error():
    params, x, y = problem()
    with pytest.raises(llgrad.ShapeError, match=r"data\[0\] has 96 rows, data\[1\] has 95"):
        llgrad.train(mlp_loss, params, (x, y[:-1]), optim.sgd(0.1), batch_size=16)


def test_batch_larger_than_data_is_a_clear_error():
    params, x, y = problem()
    with pytest.raises(llgrad.ShapeError, match=r"batch_size=200.*\(96\)"):
        llgrad.train(mlp_loss, params, (x, y), optim.sgd(0.1), batch_size=200)


def test_integer_parameters_are_a_clear_error():
    with pytest.raises(llgrad.DTypeError, match=r"params\['n'\].*float"):
        llgrad.train(lambda p, x: (p["n"] * x).sum(), {"n": np.arange(2)}, (np.ones((4, 2)),),
                     optim.sgd(0.1), batch_size=2)


def test_integer_labels_train_through_a_gather(backend):
    """Cross-entropy indexed by integer labels (logp[arange, y]): the gather's
    scatter-add gradient inside the native loop, against a Python loop of grad."""
    import llgrad.numpy as lnp

    def labelled_loss(p, x, y):
        z = np.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
        return -(z - lnp.logsumexp(z, axis=1, keepdims=True))[np.arange(len(x)), y].mean()

    params, x, onehot = problem()
    labels = np.argmax(onehot, axis=1).astype(np.int64)
    opt = optim.sgd(0.2)
    result = llgrad.train(labelled_loss, params, (x, labels), opt, batch_size=16, epochs=2,
                          backend=backend)
    grad, state, p = llgrad.grad(labelled_loss, backend=backend), opt.init(params), params
    for s in range(result.steps):
        rows = slice((s % 6) * 16, (s % 6 + 1) * 16)
        p, state = opt.update(grad(p, x[rows], labels[rows]), state, p)
    for k in params:
        np.testing.assert_allclose(result.params[k], p[k], rtol=1e-12, atol=1e-14)
    assert result.loss_history[-6:].mean() < result.loss_history[:6].mean()


@pytest.mark.parametrize("make_opt", [
    lambda: optim.clip_by_global_norm(optim.adamw(optim.cosine(0.05, 40)), 1.0),
    lambda: optim.momentum(optim.step_decay(0.1, 10, 0.5, total_steps=60), nesterov=True),
    lambda: optim.rmsprop(optim.piecewise([20], [0.01, 0.001]))],
    ids=["clipped-adamw-cosine", "nesterov-step-decay", "rmsprop-piecewise"])
def test_schedules_and_clipping_trace_into_the_shuffled_loop(make_opt):
    """Learning-rate schedules and gradient clipping run inside the native loop, with
    shuffled batches, exactly as the same optimizer does from Python."""
    params, x, y = problem()
    opt = make_opt()
    result = llgrad.train(mlp_loss, params, (x, y), opt, batch_size=16, epochs=8, shuffle=2)
    rng = np.random.default_rng(2)
    order = np.concatenate([rng.permutation(len(x)) for _ in range(8)])
    grad, state, p = llgrad.grad(mlp_loss), opt.init(params), params
    for s in range(result.steps):
        rows = order[s * 16:(s + 1) * 16]
        p, state = opt.update(grad(p, x[rows], y[rows]), state, p)
    for k in params:
        np.testing.assert_allclose(result.params[k], p[k], rtol=1e-12, atol=1e-14)
