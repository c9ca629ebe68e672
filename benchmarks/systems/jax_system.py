"""JAX: jit(grad), with asynchronous CPU dispatch off so that a small call is timed to
its end rather than to its enqueueing; training is one jit of a lax.fori_loop."""
from benchmarks.workloads import WithScan, row_order

from . import System


def _jax():
    import jax
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_cpu_enable_async_dispatch", False)
    return jax


def _loss(workload):
    import jax
    import jax.numpy as jnp
    xp = WithScan(jnp, jax.lax.scan)
    return lambda params, *data: workload.loss(xp, params, *data)


def gradient(workload, problem):
    jax = _jax()
    g = jax.jit(jax.grad(_loss(workload)))
    params, data = jax.device_put(problem.params), jax.device_put(problem.data)
    return lambda: jax.block_until_ready(g(params, *data))


def train(workload, problem):
    jax = _jax()
    loss, batch, lr = _loss(workload), problem.batch, problem.lr
    order = jax.device_put(row_order(problem))

    @jax.jit
    def run_all(params, *data):
        def step(i, params):
            if problem.shuffle is None:
                rows = [jax.lax.dynamic_slice_in_dim(d, i * batch, batch) for d in data]
            else:   # the step's rows gathered by index, as llgrad.train(shuffle=...) does
                index = jax.lax.dynamic_slice_in_dim(order, i * batch, batch)
                rows = [jax.numpy.take(d, index, axis=0) for d in data]
            grads = jax.grad(loss)(params, *rows)
            return jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads)
        return jax.lax.fori_loop(0, problem.steps, step, params)

    params, data = jax.device_put(problem.params), jax.device_put(problem.data)
    return lambda: jax.block_until_ready(run_all(params, *data))


SYSTEM = System("JAX jit(grad)", gradient, train, requires="jax",
                note="x64 on, async CPU dispatch off; training: jit of lax.fori_loop")
