"""Vanishing gradients, measured: a deep tanh network against the same depth with
ReLU and residual connections, trained on the digits with llgrad.train.

    pip install -e '.[examples]' && python examples/vanishing_gradients.py

``TrainResult.grad_norms`` holds every parameter's gradient norm at every step,
recorded by the native loop.  In the plain tanh stack (small initialisation) the
norms shrink layer by layer towards the input; the residual ReLU stack keeps them
of one order of magnitude.  ``TrainResult.plot()`` draws each run's loss and gradient
norms (log axis), saved to vanishing_gradients-tanh.png and -residual.png
(matplotlib, the ``plots`` extra, optional: without it the table below is the result).
"""
import sys

import numpy as np

import llgrad
from llgrad import optim

from train_digits import load_digits

DEPTH, WIDTH = 12, 32


def plain_tanh(params, x, y):
    h = np.tanh(x @ params["inp"]["w"])
    for layer in params["hidden"]:
        h = np.tanh(h @ layer["w"] + layer["b"])
    return cross_entropy(h @ params["out"]["w"], y)


def residual_relu(params, x, y):
    h = np.maximum(x @ params["inp"]["w"], 0.0)
    for layer in params["hidden"]:
        h = h + np.maximum(h @ layer["w"] + layer["b"], 0.0)
    return cross_entropy(h @ params["out"]["w"], y)


def cross_entropy(logits, y):
    logits = logits - logits.max(axis=1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return -np.mean(np.sum(logp * y, axis=1))


def init(scale, seed=0):
    rng = np.random.default_rng(seed)
    dense = lambda n_in, n_out, s: (rng.normal(size=(n_in, n_out)) * s / np.sqrt(n_in))
    return {"inp": {"w": dense(64, WIDTH, 1.0)},
            "hidden": [{"w": dense(WIDTH, WIDTH, scale), "b": np.zeros(WIDTH)}
                       for _ in range(DEPTH)],
            "out": {"w": dense(WIDTH, 10, 1.0)}}


def layer_norms(result):
    """(steps, depth) gradient norms of the hidden layers' weights."""
    return np.stack([layer["w"] for layer in result.grad_norms["hidden"]], axis=1)


def main(epochs=10, plot="vanishing_gradients.png"):
    x, y, _, _ = load_digits()
    runs = {"tanh, plain": (plain_tanh, init(0.5)),
            "ReLU + residual": (residual_relu, init(0.5))}
    norms, results = {}, {}
    for name, (loss, params) in runs.items():
        result = llgrad.train(loss, params, (x.astype(np.float64), y.astype(np.float64)),
                              optim.sgd(0.05), batch_size=64, epochs=epochs, shuffle=0)
        norms[name], results[name] = layer_norms(result), result
        print(f"{name:>16}: loss {result.loss_history[:5].mean():.3f} -> "
              f"{result.loss_history[-5:].mean():.3f} in {result.seconds:.2f} s")
    print("\nmean gradient norm of each hidden layer's weights (layer 1 = nearest the input)")
    print("layer " + "".join(f"{name:>18}" for name in norms))
    for d in range(DEPTH):
        print(f"{d + 1:>5} " + "".join(f"{n[:, d].mean():>18.2e}" for n in norms.values()))
    try:
        import matplotlib
        matplotlib.use("Agg")
    except ImportError:
        print("matplotlib is not installed: no plot (pip install 'llgrad[plots]')",
              file=sys.stderr)
        return norms
    for name, result in results.items():
        fig = result.plot()
        fig.suptitle(f"{name}: the hidden layers' norms, layer 1 nearest the input")
        path = plot.replace(".png", "-tanh.png" if "tanh" in name else "-residual.png")
        fig.savefig(path, dpi=110)
        print(f"plot saved to {path}")
    return norms


if __name__ == "__main__":
    main()
