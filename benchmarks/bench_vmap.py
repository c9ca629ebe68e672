"""vmap: per-example gradients, and Jacobians built on it.

    OPENBLAS_NUM_THREADS=1 LLGRAD_THREADS=1 python benchmarks/bench_vmap.py [--batch 64] [--n 100]

1. Per-example gradients of a small MLP (32 -> 64 tanh -> 10, softmax cross-entropy,
   float64) over a batch: ``llgrad.vmap(llgrad.grad(loss), in_axes=(None, 0, 0))`` in
   one native call, against a Python loop of ``llgrad.grad`` calls (checked equal
   first); the median of ``--repeats`` calls of each.
2. ``jacrev``, ``jacfwd`` and ``hessian`` of an n -> n function (n -> 1 for the
   Hessian): the first call (trace, passes, compile), the traced IR's size (which vmap
   keeps independent of n: one batched jvp or pullback over the basis) and the median
   call, checked against central finite differences.
"""
import argparse
import time

import numpy as np

import llgrad


def _median_us(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e6 * float(np.median(times))


def _mlp_loss(p, x, y):
    h = np.tanh(x @ p["w1"] + p["b1"])
    logits = h @ p["w2"] + p["b2"]
    logits = logits - logits.max()
    return -(y * (logits - np.log(np.exp(logits).sum()))).sum()


def per_example_gradients(batch, repeats):
    rng = np.random.default_rng(0)
    params = {"w1": rng.normal(size=(32, 64)) / 6, "b1": np.zeros(64),
              "w2": rng.normal(size=(64, 10)) / 8, "b2": np.zeros(10)}
    xs, ys = rng.normal(size=(batch, 32)), np.eye(10)[rng.integers(0, 10, batch)]
    grad = llgrad.grad(_mlp_loss)
    batched = llgrad.vmap(grad, in_axes=(None, 0, 0))
    start = time.perf_counter()
    together = batched(params, xs, ys)
    first = time.perf_counter() - start
    looped = [grad(params, x, y) for x, y in zip(xs, ys)]
    for k in params:
        np.testing.assert_allclose(together[k], np.stack([g[k] for g in looped]), rtol=1e-12)
    vmapped = _median_us(lambda: batched(params, xs, ys), repeats)
    loop = _median_us(lambda: [grad(params, x, y) for x, y in zip(xs, ys)], repeats)
    print(f"per-example gradients, batch {batch}: vmap(grad) {vmapped:.0f} us "
          f"(first call {first:.2f} s), loop of grad {loop:.0f} us: {loop / vmapped:.1f}x")


def jacobians(n, repeats):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(n, n)) / np.sqrt(n)
    x = rng.normal(size=n)

    def vector(v):
        return np.tanh(w @ v) * v + np.sin(v).sum()

    def scalar(v):
        return np.sum(np.tanh(w @ v) * v)

    eps = 1e-6
    for name, fn, of in [("jacrev", vector, vector), ("jacfwd", vector, vector),
                         ("hessian", scalar, llgrad.grad(scalar))]:
        jac = getattr(llgrad, name)(fn)
        start = time.perf_counter()
        got = jac(x)
        first = time.perf_counter() - start
        numeric = np.stack([(of(x + eps * e) - of(x - eps * e)) / (2 * eps)
                            for e in np.eye(n)], axis=-1)
        np.testing.assert_allclose(got, numeric, rtol=1e-5, atol=1e-7)
        print(f"{name} {n} -> {n if fn is vector else 1}: first call {first:.2f} s, traced IR "
              f"{len(jac.trace(x).ir)} nodes, call {_median_us(lambda: jac(x), repeats):.0f} us")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    per_example_gradients(args.batch, args.repeats)
    jacobians(args.n, args.repeats)


if __name__ == "__main__":
    main()
