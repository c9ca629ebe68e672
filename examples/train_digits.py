"""Train an MLP on scikit-learn's bundled 8x8 digits (no download) with llgrad.train.

    pip install -e '.[examples]' && python examples/train_digits.py

The whole loop (forward, loss, backward, Adam update, over every minibatch of every
epoch) runs as native code; Python only draws the progress bar between epochs.
"""
import numpy as np

import llgrad
from llgrad import optim


def loss(params, x, y):
    h = np.tanh(x @ params["w1"] + params["b1"])
    logits = h @ params["w2"] + params["b2"]
    logits = logits - logits.max(axis=1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return -np.mean(np.sum(logp * y, axis=1))


def predict(params, x):
    return np.argmax(np.tanh(x @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"],
                     axis=1)


def load_digits(seed=0):
    """Standardised features, one-hot labels, a fixed 80/20 split."""
    from sklearn.datasets import load_digits as sklearn_digits
    digits = sklearn_digits()
    x = digits.data.astype(np.float32) / 16.0
    x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-3)
    y = np.eye(10, dtype=np.float32)[digits.target]
    order = np.random.default_rng(seed).permutation(len(x))
    cut = int(0.8 * len(x))
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], digits.target[order[cut:]]


def init_params(hidden=128, seed=0):
    """float32 weights scaled by 1/sqrt(fan-in) (the inputs are standardised), zero biases."""
    rng = np.random.default_rng(seed)
    return {"w1": (rng.normal(size=(64, hidden)) / 8).astype(np.float32),
            "b1": np.zeros(hidden, np.float32),
            "w2": (rng.normal(size=(hidden, 10)) / np.sqrt(hidden)).astype(np.float32),
            "b2": np.zeros(10, np.float32)}


def main(epochs=30, hidden=128, progress=True):
    x_train, y_train, x_test, labels_test = load_digits()
    params = init_params(hidden)
    result = llgrad.train(loss, params, (x_train, y_train), optim.adam(3e-3), batch_size=64,
                          epochs=epochs, shuffle=0, progress=progress)
    accuracy = float(np.mean(predict(result.params, x_test) == labels_test))
    if progress:
        print(f"{result.steps} steps, compiled in {result.compile_seconds:.2f} s, "
              f"{result.seconds_per_epoch * 1e3:.2f} ms per epoch "
              f"({result.seconds / result.steps * 1e6:.1f} µs per step)")
        print(f"final training loss {result.loss_history[-10:].mean():.4f}, "
              f"test accuracy {accuracy:.2%}")
    return accuracy, result


if __name__ == "__main__":
    main()
