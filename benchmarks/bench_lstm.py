"""LSTMs through ``llgrad.scan``: compile time and the time of a forward+backward pass.

    python benchmarks/bench_lstm.py [--repeats 5]

1. Compile time of GradBench's smallest lstm input (2 layers, 14 wide, 1,024
   characters; the ADBench model: elementwise gate weights, log-softmax prediction):
   the objective and its gradient, each from trace to native code with the on-disk
   cache off (``LLGRAD_NO_CACHE=1``).  Unrolled, every character is a copy of the cell
   in the IR; through ``scan`` the cell is traced once, so the time does not depend on
   the sequence length.
2. One LSTM layer (hidden 256, batch 32, 100 steps, float32, matrix gates): the median
   time of ``value_and_grad`` of a squared-output loss, forward and reversed scan in
   one native call, wall and CPU time (the CPU time is the steadier figure on a busy
   machine).  Against JAX ``lax.scan`` and PyTorch ``nn.LSTM``: the suite's workload 10,
   ``python benchmarks/run.py --workloads lstm --threads 1`` (and ``--threads 2``).
"""
import argparse
import os
import statistics
import time

os.environ.setdefault("LLGRAD_NO_CACHE", "1")

import numpy as np  # noqa: E402

import llgrad  # noqa: E402


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def gradbench_objective(main_params, extra_params, state, sequence):
    """ADBench/GradBench's lstm objective, its time loop a scan (its layer loop unrolled)."""
    layers, b = main_params.shape[0] // 2, sequence.shape[1]

    def step(state, pair):
        x, gold = pair
        x2 = x * extra_params[0]
        new_state = []
        for k in range(layers):
            weight, bias = main_params[2 * k], main_params[2 * k + 1]
            hidden, cell = state[2 * k], state[2 * k + 1]
            gates = np.concatenate([x2, hidden, x2, hidden]) * weight + bias
            forget, ingate = _sigmoid(gates[:b]), _sigmoid(gates[b:2 * b])
            outgate, change = _sigmoid(gates[2 * b:3 * b]), np.tanh(gates[3 * b:])
            cell = cell * forget + ingate * change
            hidden = outgate * np.tanh(cell)
            new_state += [hidden, cell]
            x2 = hidden
        ypred = x2 * extra_params[1] + extra_params[2]
        ynorm = ypred - np.log(np.sum(np.exp(ypred)))
        return np.stack(new_state), np.sum(gold * ynorm)

    _, totals = llgrad.scan(step, state, (sequence[:-1], sequence[1:]))
    return -np.sum(totals) / ((sequence.shape[0] - 1) * b)


def compile_seconds(fn, args) -> float:
    """Wall time of the first call: trace, autodiff, passes, code generation, LLVM."""
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def lstm_layer_loss(w, u, bias, xs):
    hidden = u.shape[0]

    def step(state, x):
        h, c = state
        gates = x @ w + h @ u + bias
        i, f, g, o = (gates[:, k * hidden:(k + 1) * hidden] for k in range(4))
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        return (h, c), h

    zeros = np.zeros((xs.shape[1], hidden), np.float32)
    _, hs = llgrad.scan(step, (zeros, zeros), xs)
    return np.sum(hs * hs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    layers, b, c = 2, 14, 1024
    inputs = (rng.normal(size=(2 * layers, 4 * b)) * 0.5, rng.normal(size=(3, b)) * 0.5,
              rng.normal(size=(2 * layers, b)) * 0.5, rng.normal(size=(c, b)))
    objective = compile_seconds(llgrad.jit(gradbench_objective), inputs)
    gradient = compile_seconds(llgrad.grad(gradbench_objective, argnums=(0, 1)), inputs)
    print(f"GradBench lstm l={layers} b={b} c={c}: first call of the objective "
          f"{objective:.2f} s, of its gradient {gradient:.2f} s (cache off)")

    hidden, batch, steps, features = 256, 32, 100, 256
    f32 = np.float32
    w = (rng.normal(size=(features, 4 * hidden)) / np.sqrt(features)).astype(f32)
    u = (rng.normal(size=(hidden, 4 * hidden)) / np.sqrt(hidden)).astype(f32)
    bias = np.zeros(4 * hidden, f32)
    xs = rng.normal(size=(steps, batch, features)).astype(f32)
    step = llgrad.value_and_grad(lstm_layer_loss, argnums=(0, 1, 2))
    first = compile_seconds(step, (w, u, bias, xs))
    wall, cpu = [], []
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        step(w, u, bias, xs)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    print(f"LSTM layer hidden={hidden} batch={batch} steps={steps} float32, forward+backward: "
          f"median {statistics.median(wall) * 1e3:.1f} ms wall, "
          f"{statistics.median(cpu) * 1e3:.1f} ms CPU over {args.repeats} "
          f"(first call {first:.2f} s)")


if __name__ == "__main__":
    main()
