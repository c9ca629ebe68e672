"""train(progress=True) through tqdm or the plain bar, TrainResult.plot and
Profile.plot (matplotlib), and the rich displays a notebook shows.

Oracles: the training result's own recorded numbers (the plot must draw exactly
them), the profile's rows, and the text each bar prints."""
import re
import sys

import numpy as np
import pytest

import llgrad
from llgrad import optim


def loss(params, x, y):
    h = np.tanh(x @ params["w"] + params["b"])
    return np.mean((h @ params["v"] - y) ** 2)


def _problem():
    rng = np.random.default_rng(0)
    params = {"w": rng.normal(size=(4, 8)) * 0.5, "b": np.zeros(8),
              "v": rng.normal(size=(8, 1)) * 0.5}
    return params, rng.normal(size=(48, 4)), rng.normal(size=(48, 1))


def _train(**kw):
    params, x, y = _problem()
    return llgrad.train(loss, params, (x, y), optim.sgd(0.1), batch_size=16, epochs=2, **kw)


def test_progress_uses_tqdm_with_the_current_loss(capsys):
    pytest.importorskip("tqdm", reason="tqdm is the progress extra")
    result = _train(progress=True)
    err = capsys.readouterr().err
    assert "train:" in err and "6/6" in err
    assert f"loss={result.loss_history[-1]:.4g}" in err


def test_progress_falls_back_to_the_plain_bar_without_tqdm(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)    # import tqdm.auto fails
    result = _train(progress=True)
    err = capsys.readouterr().err
    assert "step 6/6" in err and f"loss {result.loss_history[-1]:.4g}" in err


@pytest.fixture
def pyplot():
    matplotlib = pytest.importorskip("matplotlib", reason="matplotlib is the plots extra")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    yield plt
    plt.close("all")


def test_train_result_plot_draws_the_loss_and_every_gradient_norm_on_a_log_axis(pyplot):
    result = _train()
    fig = result.plot()
    loss_ax, norm_ax = fig.axes
    np.testing.assert_array_equal(loss_ax.lines[0].get_ydata(), result.loss_history)
    assert norm_ax.get_yscale() == "log"
    drawn = {line.get_label(): line.get_ydata() for line in norm_ax.lines}
    assert set(drawn) == {"params['b']", "params['v']", "params['w']"}
    np.testing.assert_array_equal(drawn["params['w']"], result.grad_norms["w"])


def test_profile_plot_has_one_bar_per_kernel_with_its_time(pyplot):
    params, x, y = _problem()
    prof = llgrad.profile(llgrad.grad(loss), params, x, y, seconds=0.05)
    fig = prof.plot(top=100)
    bars = fig.axes[0].patches
    top_level = [r for r in prof.rows if r["depth"] == 0]
    assert len(bars) == len(top_level)
    assert sum(b.get_width() for b in bars) == pytest.approx(
        prof.kernel_seconds_per_call * 1e6)


def test_the_inspector_page_shows_a_profile_linked_to_its_source_lines():
    params, x, y = _problem()
    staged = llgrad.grad(loss)
    prof = llgrad.profile(staged, params, x, y, seconds=0.05)
    page = staged.trace(params, x, y).to_html(profile=prof)
    table = page[page.index('id="profile"'):]
    linked = set(re.findall(r'<tr data-s="(\d+)"', table))
    lines = {int(r["source"].rpartition(":")[2]) for r in prof.rows if r["source"]}
    assert linked and {int(n) for n in linked} == lines
    assert prof._repr_html_().startswith("<pre>profile of")


def test_plots_without_matplotlib_say_which_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"llgrad\[plots\]"):
        _train().plot()


def test_notebook_displays_are_html():
    params, x, y = _problem()
    staged = llgrad.grad(loss)
    assert "not called yet" in staged._repr_html_()
    trace = staged.trace(params, x, y)
    page = trace._repr_html_()
    assert page.startswith("<iframe srcdoc=") and "data-s=" in page
    assert staged._repr_html_() == page
    assert trace._repr_svg_().startswith("<svg") and trace.optimized._repr_svg_()
    assert "<pre>" in trace.stats._repr_html_()
    assert "steps" in _train()._repr_html_()
