"""One value-and-gradient call, from Python, for models from tiny to medium:
llgrad.value_and_grad against the numpy interpreter of the same graph, JAX's
jit(value_and_grad), PyTorch autograd, HIPS autograd and micrograd.

    pip install -e . && python benchmarks/bench_grad_call.py [--threads N] [--repeats R]
    (peers, each optional: pip install torch==2.13.0 jax autograd micrograd)

Each contender gets numpy arrays in and returns numpy arrays out (the cost a numpy
user pays); JAX is also timed on its own device arrays.  Medians of R calls (or of
as many as fit in 3 s) after a warm-up; thread pools pinned to --threads before
anything is imported.
"""
import argparse
import os
import time

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--threads", type=int, default=1)
parser.add_argument("--repeats", type=int, default=300)
args = parser.parse_args()
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(args.threads)
os.environ["XLA_FLAGS"] = (f"--xla_cpu_multi_thread_eigen={'true' if args.threads > 1 else 'false'} "
                           f"intra_op_parallelism_threads={args.threads}")

import numpy as np  # noqa: E402

import llgrad  # noqa: E402


def mlp(params, x, y):
    """A ReLU MLP with squared error: the model every contender can express
    (micrograd's Value has no exp, log or tanh)."""
    h = np.maximum(x @ params["w1"] + params["b1"], 0.0)
    return np.mean((h @ params["w2"] + params["b2"] - y) ** 2)


def make_mlp(n_in, n_hidden, n_out, batch, seed=0):
    rng = np.random.default_rng(seed)
    params = {"w1": rng.normal(size=(n_in, n_hidden)) / np.sqrt(n_in), "b1": np.zeros(n_hidden),
              "w2": rng.normal(size=(n_hidden, n_out)) / np.sqrt(n_hidden), "b2": np.zeros(n_out)}
    x = rng.normal(size=(batch, n_in))
    y = np.eye(n_out)[rng.integers(0, n_out, batch)]
    return params, x, y


MODELS = {
    "tiny MLP 4-8-3, batch 8": make_mlp(4, 8, 3, 8),
    "small MLP 64-32-10, batch 32": make_mlp(64, 32, 10, 32),
    "medium MLP 784-128-10, batch 64": make_mlp(784, 128, 10, 64),
}


def time_calls(call, budget_s=3.0):
    """Median of --repeats calls, or of as many as fit in ``budget_s`` (at least 3)."""
    call()
    times, start = [], time.perf_counter()
    while len(times) < args.repeats and (len(times) < 3 or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def llgrad_native(params, x, y):
    f = llgrad.value_and_grad(mlp)
    return lambda: f(params, x, y)


def llgrad_interpreter(params, x, y):
    f = llgrad.value_and_grad(mlp, backend="interpret")
    return lambda: f(params, x, y)


def _jax_mlp():
    import jax.numpy as jnp

    def jmlp(p, x, y):
        h = jnp.maximum(x @ p["w1"] + p["b1"], 0.0)
        return jnp.mean((h @ p["w2"] + p["b2"] - y) ** 2)
    return jmlp


def jax_numpy_io(params, x, y):
    import jax
    jax.config.update("jax_enable_x64", True)
    f = jax.jit(jax.value_and_grad(_jax_mlp()))

    def call():
        value, g = f(params, x, y)
        return float(value), {k: np.asarray(v) for k, v in g.items()}
    return call


def jax_device_arrays(params, x, y):
    import jax
    jax.config.update("jax_enable_x64", True)
    f = jax.jit(jax.value_and_grad(_jax_mlp()))
    p, xd, yd = jax.device_put(params), jax.device_put(x), jax.device_put(y)
    return lambda: jax.block_until_ready(f(p, xd, yd))


def torch_autograd(params, x, y):
    import torch
    torch.set_num_threads(args.threads)

    def call():
        p = {k: torch.from_numpy(v).requires_grad_() for k, v in params.items()}
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        h = torch.relu(xt @ p["w1"] + p["b1"])
        value = ((h @ p["w2"] + p["b2"] - yt) ** 2).mean()
        value.backward()
        return value.item(), {k: v.grad.numpy() for k, v in p.items()}
    return call


def hips_autograd(params, x, y):
    import autograd
    import autograd.numpy as anp

    def amlp(p, x, y):
        h = anp.maximum(anp.dot(x, p["w1"]) + p["b1"], 0.0)
        return anp.mean((anp.dot(h, p["w2"]) + p["b2"] - y) ** 2)
    f = autograd.value_and_grad(amlp)
    return lambda: f(params, x, y)


def micrograd_scalar(params, x, y):
    """micrograd is a scalar engine: every weight and activation is a Value."""
    from micrograd.engine import Value
    if params["w1"].size > 4000:
        return None  # millions of Value objects per call: not a contender at this size
    n_in, n_hid = params["w1"].shape
    n_out = params["w2"].shape[1]

    def call():
        p = {k: [Value(float(v)) for v in a.ravel()] for k, a in params.items()}
        total = Value(0.0)
        for row, target in zip(x, y):
            h = [sum((p["w1"][i * n_hid + j] * float(row[i]) for i in range(n_in)),
                     p["b1"][j]).relu() for j in range(n_hid)]
            for k in range(n_out):
                out = sum((h[j] * p["w2"][j * n_out + k] for j in range(n_hid)), p["b2"][k])
                total = total + (out - float(target[k])) ** 2
        loss = total * (1.0 / y.size)
        loss.backward()
        return loss.data, {k: np.array([v.grad for v in vs]) for k, vs in p.items()}
    return call


CONTENDERS = [
    ("llgrad native", llgrad_native, None),
    ("llgrad's numpy interpreter", llgrad_interpreter, None),
    ("JAX jit(value_and_grad), numpy in/out", jax_numpy_io, "jax"),
    ("JAX jit(value_and_grad), device arrays", jax_device_arrays, "jax"),
    ("PyTorch autograd", torch_autograd, "torch"),
    ("HIPS autograd", hips_autograd, "autograd"),
    ("micrograd (scalar engine)", micrograd_scalar, "micrograd"),
]


def main():
    print(f"one value_and_grad call, float64, {args.threads} thread(s), median of {args.repeats}")
    for model, (params, x, y) in MODELS.items():
        print(f"\n{model}")
        baseline = None
        for name, make, module in CONTENDERS:
            if module is not None:
                try:
                    __import__(module)
                except ImportError:
                    print(f"  {name:<42} (not installed)")
                    continue
            call = make(params, x, y)
            if call is None:
                print(f"  {name:<42} (skipped: too large for a scalar engine)")
                continue
            median = time_calls(call)
            baseline = baseline or median
            print(f"  {name:<42}{median * 1e6:>12.1f} µs{median / baseline:>9.2f}× llgrad")


if __name__ == "__main__":
    main()
