"""200 SGD steps of a tanh MLP (784-128-10 by default; --inputs, --hidden), batch 64,
float32: llgrad.train against every way of doing the same elsewhere.

    pip install -e . && python benchmarks/bench_train_mlp.py [--threads N] [--repeats R]
    (peers, each optional: pip install torch==2.13.0 jax autograd)

Every contender runs the same 200 steps from the same initial parameters on the same
batches; the final losses are printed side by side as a sanity check.  Timings are
medians over --repeats runs after one warm-up (compilation excluded everywhere; the
compile times are reported separately).  Thread pools are pinned to --threads for all
contenders (OpenBLAS, torch, XLA) before anything is imported.
"""
import argparse
import os
import sys
import time

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--threads", type=int, default=1)
parser.add_argument("--repeats", type=int, default=7)
parser.add_argument("--steps", type=int, default=200)
parser.add_argument("--inputs", type=int, default=784, help="input width (784: MNIST-sized)")
parser.add_argument("--hidden", type=int, default=128)
args = parser.parse_args()
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(args.threads)
os.environ["XLA_FLAGS"] = (f"--xla_cpu_multi_thread_eigen={'true' if args.threads > 1 else 'false'} "
                           f"intra_op_parallelism_threads={args.threads}")

import numpy as np  # noqa: E402

import llgrad  # noqa: E402
from llgrad import optim  # noqa: E402

BATCH, LR, N_IN, N_HID, N_OUT = 64, 0.1, args.inputs, args.hidden, 10
STEPS = args.steps


def loss(params, x, y):
    h = np.tanh(x @ params["w1"] + params["b1"])
    logits = h @ params["w2"] + params["b2"]
    logits = logits - logits.max(axis=1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return -np.mean(np.sum(logp * y, axis=1))


def problem():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(STEPS * BATCH, N_IN)).astype(np.float32)
    y = np.eye(N_OUT, dtype=np.float32)[rng.integers(0, N_OUT, STEPS * BATCH)]
    params = {"w1": (rng.normal(size=(N_IN, N_HID)) / np.sqrt(N_IN)).astype(np.float32),
              "b1": np.zeros(N_HID, np.float32),
              "w2": (rng.normal(size=(N_HID, N_OUT)) / np.sqrt(N_HID)).astype(np.float32),
              "b2": np.zeros(N_OUT, np.float32)}
    return params, x, y


def batches(x, y):
    return [(x[i * BATCH:(i + 1) * BATCH], y[i * BATCH:(i + 1) * BATCH]) for i in range(STEPS)]


# ----------------------------------------------------------------------------------
# contenders: each make_*(params, x, y) returns run() -> final params as numpy arrays

def make_llgrad_train(params, x, y):
    def run():
        return llgrad.train(loss, params, (x, y), optim.sgd(LR), batch_size=BATCH,
                            epochs=1).params
    return run


def python_sgd_loop(grad, params, x, y):
    """One gradient call and one numpy SGD update per minibatch, from Python."""
    data = batches(x, y)

    def run():
        p = dict(params)
        for xb, yb in data:
            g = grad(p, xb, yb)
            p = {k: (p[k] - LR * g[k]).astype(np.float32) for k in p}
        return p
    return run


def make_llgrad_grad_loop(params, x, y):
    return python_sgd_loop(llgrad.grad(loss), params, x, y)


def make_numpy_backprop(params, x, y):
    data = batches(x, y)
    lr = np.float32(LR)

    def run():
        w1, b1, w2, b2 = (params[k].copy() for k in ("w1", "b1", "w2", "b2"))
        for xb, yb in data:
            h = np.tanh(xb @ w1 + b1)
            logits = h @ w2 + b2
            logits -= logits.max(axis=1, keepdims=True)
            e = np.exp(logits)
            dlogits = (e / e.sum(axis=1, keepdims=True) - yb) / np.float32(BATCH)
            dh = (dlogits @ w2.T) * (1 - h * h)
            w2 -= lr * (h.T @ dlogits)
            b2 -= lr * dlogits.sum(axis=0)
            w1 -= lr * (xb.T @ dh)
            b1 -= lr * dh.sum(axis=0)
        return {"w1": w1, "b1": b1, "w2": w2, "b2": b2}
    return run


def make_torch_eager(params, x, y):
    import torch
    torch.set_num_threads(args.threads)
    data = [(torch.from_numpy(xb), torch.from_numpy(yb)) for xb, yb in batches(x, y)]

    def run():
        p = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
        for xb, yb in data:
            h = torch.tanh(xb @ p["w1"] + p["b1"])
            logp = torch.log_softmax(h @ p["w2"] + p["b2"], dim=1)
            value = -(logp * yb).sum(dim=1).mean()
            value.backward()
            with torch.no_grad():
                for t in p.values():
                    t -= LR * t.grad
                    t.grad = None
        return {k: v.detach().numpy() for k, v in p.items()}
    return run


def _jax_loss():
    import jax.numpy as jnp

    def jloss(p, xb, yb):
        h = jnp.tanh(xb @ p["w1"] + p["b1"])
        logits = h @ p["w2"] + p["b2"]
        logits = logits - logits.max(axis=1, keepdims=True)
        logp = logits - jnp.log(jnp.exp(logits).sum(axis=1, keepdims=True))
        return -jnp.mean(jnp.sum(logp * yb, axis=1))
    return jloss


def make_jax_jit_step(params, x, y):
    import jax
    jloss = _jax_loss()

    @jax.jit
    def step(p, xb, yb):
        g = jax.grad(jloss)(p, xb, yb)
        return jax.tree_util.tree_map(lambda a, b: a - LR * b, p, g)

    data = [(jax.device_put(xb), jax.device_put(yb)) for xb, yb in batches(x, y)]

    def run():
        p = jax.device_put(params)
        for xb, yb in data:
            p = step(p, xb, yb)
        return {k: np.asarray(jax.block_until_ready(v)) for k, v in p.items()}
    return run


def make_jax_fori_loop(params, x, y):
    import jax
    jloss = _jax_loss()

    @jax.jit
    def train_all(p, xs, ys):
        def body(i, p):
            xb = jax.lax.dynamic_slice_in_dim(xs, i * BATCH, BATCH)
            yb = jax.lax.dynamic_slice_in_dim(ys, i * BATCH, BATCH)
            g = jax.grad(jloss)(p, xb, yb)
            return jax.tree_util.tree_map(lambda a, b: a - LR * b, p, g)
        return jax.lax.fori_loop(0, STEPS, body, p)

    xs, ys = jax.device_put(x), jax.device_put(y)

    def run():
        p = train_all(jax.device_put(params), xs, ys)
        return {k: np.asarray(jax.block_until_ready(v)) for k, v in p.items()}
    return run


def make_autograd(params, x, y):
    import autograd
    import autograd.numpy as anp

    def aloss(p, xb, yb):
        h = anp.tanh(anp.dot(xb, p["w1"]) + p["b1"])
        logits = anp.dot(h, p["w2"]) + p["b2"]
        logits = logits - anp.max(logits, axis=1, keepdims=True)
        logp = logits - anp.log(anp.sum(anp.exp(logits), axis=1, keepdims=True))
        return -anp.mean(anp.sum(logp * yb, axis=1))

    return python_sgd_loop(autograd.grad(aloss), params, x, y)


CONTENDERS = [
    ("llgrad.train (one native call)", make_llgrad_train, None),
    ("llgrad.grad in a Python loop", make_llgrad_grad_loop, None),
    ("numpy, hand-written backprop", make_numpy_backprop, None),
    ("PyTorch eager", make_torch_eager, "torch"),
    ("JAX jit(step) in a Python loop", make_jax_jit_step, "jax"),
    ("JAX lax.fori_loop, one jit", make_jax_fori_loop, "jax"),
    ("HIPS autograd", make_autograd, "autograd"),
]


def main():
    params, x, y = problem()
    first = batches(x, y)[0]
    print(f"{STEPS} SGD steps, {N_IN}-{N_HID}-{N_OUT} tanh MLP, batch {BATCH}, float32, "
          f"{args.threads} thread(s), median of {args.repeats} interleaved rounds")
    runs, warm, finals = {}, {}, {}
    for name, make, module in CONTENDERS:
        if module is not None:
            try:
                __import__(module)
            except ImportError:
                print(f"  {name}: not installed (pip install {module})")
                continue
        runs[name] = make(params, x, y)
        t0 = time.perf_counter()
        finals[name] = runs[name]()  # warm-up: compilation and caches
        warm[name] = time.perf_counter() - t0
    times = {name: [] for name in runs}
    for _ in range(args.repeats):  # round-robin, so drift in machine load hits everyone
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
    print(f"{'contender':<34}{'ms / run':>10}{'µs / step':>11}{'× llgrad':>10}"
          f"{'warm-up s':>11}{'final loss':>12}")
    baseline = float(np.median(times[CONTENDERS[0][0]]))
    for name in runs:
        median = float(np.median(times[name]))
        final_loss = float(loss({k: np.asarray(v, np.float64) for k, v in finals[name].items()},
                                first[0].astype(np.float64), first[1].astype(np.float64)))
        print(f"{name:<34}{median * 1e3:>10.2f}{median / STEPS * 1e6:>11.1f}"
              f"{median / baseline:>10.2f}{warm[name]:>11.2f}{final_loss:>12.5f}")


if __name__ == "__main__":
    main()
