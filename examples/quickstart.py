"""llgrad in two minutes: gradients of plain numpy code, compiled to native code.

    pip install -e . && python examples/quickstart.py
"""
import time

import numpy as np

import llgrad


# 1. The chain rule: a = 2x, b = a + 3, c = b**2, so dc/dx = 2 * (2x + 3) * 2.
@llgrad.grad
def c(x):
    a = 2 * x
    b = a + 3
    return b ** 2


print("dc/dx at x = 1:", c(1.0))
print("\nThe joint forward+backward graph llgrad built for it:")
print(c.trace(1.0).backward)


# 2. A two-layer network's loss, written in plain numpy and left unchanged.
def loss(params, x, y):
    h = np.tanh(x @ params["w1"] + params["b1"])
    logits = h @ params["w2"] + params["b2"]
    logits = logits - logits.max(axis=1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return -np.mean(np.sum(logp * y, axis=1))


rng = np.random.default_rng(0)
params = {"w1": rng.normal(size=(64, 128)) * 0.1, "b1": np.zeros(128),
          "w2": rng.normal(size=(128, 10)) * 0.1, "b2": np.zeros(10)}
x = rng.normal(size=(256, 64))
y = np.eye(10)[rng.integers(0, 10, 256)]

value_and_grad = llgrad.value_and_grad(loss)
value, grads = value_and_grad(params, x, y)
print(f"\nloss = {value:.6f}; gradient keys: {sorted(grads)}")
print("gradient check against finite differences, max error:",
      f"{llgrad.check_grad(loss, params, x[:8], y[:8]):.2e}")

trace = value_and_grad.trace(params, x, y)
print("\nstats:")
print(trace.stats)
print("\nfirst lines of the LLVM IR:")
print("\n".join(trace.llvm_ir.splitlines()[:12]))

interpreted = llgrad.value_and_grad(loss, backend="interpret")
for name, fn in [("llgrad native", value_and_grad), ("numpy interpreter", interpreted)]:
    fn(params, x, y)
    times = []
    for _ in range(50):
        t0 = time.perf_counter()
        fn(params, x, y)
        times.append(time.perf_counter() - t0)
    print(f"{name:>18}: {np.median(times) * 1e6:8.1f} µs per value_and_grad")
