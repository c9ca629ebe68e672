"""A two-layer MLP's loss, to look at every stage llgrad makes of it.

    python -m llgrad inspect examples/mlp.py:loss --stage backward
    python -m llgrad inspect examples/mlp.py:loss --html mlp.html

``EXAMPLE_ARGS`` gives the command line example inputs for each function here.
"""
import numpy as np


def loss(params, x, y):
    """Mean squared error of a tanh hidden layer and a linear output layer."""
    h = np.tanh(x @ params["w1"] + params["b1"])
    out = h @ params["w2"] + params["b2"]
    return np.mean((out - y) ** 2)


_rng = np.random.default_rng(0)
EXAMPLE_ARGS = {
    "loss": ({"w1": _rng.normal(size=(3, 4)) * 0.5, "b1": np.zeros(4),
              "w2": _rng.normal(size=(4, 2)) * 0.5, "b2": np.zeros(2)},
             _rng.normal(size=(5, 3)), _rng.normal(size=(5, 2))),
}
