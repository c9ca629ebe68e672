"""PyTensor (Theano's heir): a symbolic graph, its gradient by pytensor.grad, compiled
with the default C backend; ``trust_input`` skips per-call argument validation."""
import numpy as np

from . import System, minibatches


def _symbols(pt, values, prefix=""):
    return {k: pt.tensor(f"{prefix}{k}", dtype=np.asarray(v).dtype.name, shape=np.shape(v))
            for k, v in values.items()}


def gradient(workload, problem):
    import pytensor
    import pytensor.tensor as pt
    params = _symbols(pt, problem.params)
    data = list(_symbols(pt, dict(enumerate(problem.data)), "data").values())
    grads = pytensor.grad(workload.loss(pt, params, *data), list(params.values()))
    f = pytensor.function(list(params.values()) + data, grads)
    f.trust_input = True
    args = [np.asarray(v) for v in problem.params.values()] + [np.asarray(d) for d in problem.data]
    return lambda: dict(zip(params, f(*args)))


def train(workload, problem):
    import pytensor
    import pytensor.tensor as pt
    batches = minibatches(problem)
    shared = {k: pytensor.shared(np.array(v), name=k) for k, v in problem.params.items()}
    data = list(_symbols(pt, dict(enumerate(batches[0])), "batch").values())
    grads = pytensor.grad(workload.loss(pt, shared, *data), list(shared.values()))
    updates = [(s, s - np.asarray(problem.lr, s.dtype) * g) for s, g in zip(shared.values(), grads)]
    step = pytensor.function(data, [], updates=updates)
    step.trust_input = True

    def run():
        for k, s in shared.items():
            s.set_value(np.array(problem.params[k]), borrow=True)
        for batch in batches:
            step(*batch)
        return {k: s.get_value() for k, s in shared.items()}
    return run


SYSTEM = System("PyTensor", gradient, train, requires="pytensor",
                note="pytensor.function of pytensor.grad, C backend (matrix products through "
                     "numpy's C API when, as after pip install, no BLAS is linked), trust_input; "
                     "training: a compiled step with shared-variable updates in a Python loop")
