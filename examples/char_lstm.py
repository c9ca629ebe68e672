"""A character-level LSTM language model, trained by ``llgrad.train``, its loss a
``llgrad.scan`` over time.

    python examples/char_lstm.py [epochs]

The model reads a text one character at a time and predicts the next.  The loss
runs the LSTM cell over the 32 positions of each sequence with ``llgrad.scan``: the
cell is traced once, whatever the sequence length, and the whole training run (many
Adam steps, each a forward and a reversed scan) is one native call per epoch.  The
script prints the loss falling, then text sampled from the model, also by a scan:
the carry holds the LSTM state and the last character (an integer), and each step
draws the next character with the Gumbel-max trick from noise given as the scan's xs.
"""
import sys
import time

import numpy as np

import llgrad
from llgrad import optim

TEXT = (
    "Alice was beginning to get very tired of sitting by her sister on the bank, and "
    "of having nothing to do: once or twice she had peeped into the book her sister "
    "was reading, but it had no pictures or conversations in it, and what is the use "
    "of a book, thought Alice, without pictures or conversations? So she was "
    "considering in her own mind (as well as she could, for the hot day made her feel "
    "very sleepy and stupid), whether the pleasure of making a daisy-chain would be "
    "worth the trouble of getting up and picking the daisies, when suddenly a White "
    "Rabbit with pink eyes ran close by her. There was nothing so very remarkable in "
    "that; nor did Alice think it so very much out of the way to hear the Rabbit say "
    "to itself, Oh dear! Oh dear! I shall be late! ")
SEQ, HIDDEN, BATCH = 32, 64, 32
VOCAB = sorted(set(TEXT))
INDEX = {ch: k for k, ch in enumerate(VOCAB)}


def sequences():
    """Every window of SEQ + 1 characters: inputs, and the next character of each."""
    codes = np.array([INDEX[ch] for ch in TEXT], dtype=np.int64)
    starts = np.arange(len(codes) - SEQ - 1)
    windows = codes[starts[:, None] + np.arange(SEQ + 1)]
    return windows[:, :-1], windows[:, 1:]


def init_params(seed=0):
    rng = np.random.default_rng(seed)
    v, h = len(VOCAB), HIDDEN
    return {"embed": rng.normal(size=(v, 4 * h)) * 0.1,
            "recur": rng.normal(size=(h, 4 * h)) / np.sqrt(h),
            "bias": np.concatenate([np.zeros(h), np.ones(h), np.zeros(2 * h)]),  # forget gate 1
            "out": rng.normal(size=(h, v)) / np.sqrt(h),
            "out_bias": np.zeros(v)}


def cell(params, state, chars):
    """One LSTM step for a batch of characters (int indices): the new (h, c)."""
    h, c = state
    gates = params["embed"][chars] + h @ params["recur"] + params["bias"]
    i, f, g, o = np.split(gates, 4, axis=-1)
    c = 1 / (1 + np.exp(-f)) * c + 1 / (1 + np.exp(-i)) * np.tanh(g)
    h = 1 / (1 + np.exp(-o)) * np.tanh(c)
    return h, c


def logits_of(params, h):
    return h @ params["out"] + params["out_bias"]


def loss(params, inputs, targets):
    """Mean cross-entropy of the next character, over the batch and the positions."""
    batch = inputs.shape[0]

    def step(state, chars_and_targets):
        chars, target = chars_and_targets
        state = cell(params, state, chars)
        logits = logits_of(params, state[0])
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
        picked = np.take_along_axis(log_probs, target[:, None], axis=1)
        return state, -np.mean(picked)

    zeros = np.zeros((batch, HIDDEN))
    _, per_step = llgrad.scan(step, (zeros, zeros), (inputs.T, targets.T))
    return np.mean(per_step)


def sample(params, first, noise, temperature=0.6):
    """Characters drawn one after another by a scan: the carry is the LSTM state and
    the last character; each step's ``x`` is Gumbel noise, argmax(logits/T + noise)."""
    def step(carry, gumbel):
        h, c, char = carry
        h, c = cell(params, (h, c), char)
        nxt = np.argmax(logits_of(params, h) / temperature + gumbel, axis=1)
        return (h, c, nxt), nxt[0]

    zeros = np.zeros((1, HIDDEN))
    _, chars = llgrad.scan(step, (zeros, zeros, first), noise)
    return chars


def main(epochs=10, seed=0, show=True):
    inputs, targets = sequences()
    params = init_params(seed)
    t0 = time.perf_counter()
    result = llgrad.train(loss, params, (inputs, targets), optim.adam(0.01),
                          batch_size=BATCH, epochs=epochs, shuffle=seed)
    seconds = time.perf_counter() - t0
    steps_per_epoch = len(inputs) // BATCH
    per_epoch = result.loss_history.reshape(epochs, steps_per_epoch).mean(axis=1)
    rng = np.random.default_rng(seed)
    noise = rng.gumbel(size=(200, 1, len(VOCAB)))
    chars = llgrad.jit(sample)(result.params, np.array([INDEX["A"]]), noise)
    text = "A" + "".join(VOCAB[k] for k in chars)
    if show:
        shown = sorted(set(range(0, epochs, max(1, epochs // 10))) | {epochs - 1})
        for e in shown:
            print(f"epoch {e + 1:3d}  loss {per_epoch[e]:.3f}")
        print(f"{result.steps} Adam steps in {seconds:.1f} s "
              f"(compiling {result.compile_seconds:.1f} s)")
        print(f"sampled: {text}")
    return per_epoch, text


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
