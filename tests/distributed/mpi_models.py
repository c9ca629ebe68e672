"""The model, data and single-process oracle the MPI tests share."""
import numpy as np

import llgrad

BATCH = 8          # per rank
STEPS = 50


def loss(params, x, y):
    h = np.tanh(x @ params["w1"] + params["b1"])
    return np.mean((h @ params["w2"] + params["b2"] - y) ** 2)


def problem(size, seed=0):
    """float64 parameters and a global data set of ``STEPS`` batches of ``size`` ranks."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(STEPS * BATCH * size, 5))
    y = np.sin(x[:, :2]) + 0.1 * rng.normal(size=(len(x), 2))
    params = {"w1": rng.normal(size=(5, 16)) / 3, "b1": np.zeros(16),
              "w2": rng.normal(size=(16, 2)) / 4, "b2": np.zeros(2)}
    return params, x, y


def global_order(size, rows_per_rank, orders):
    """Row indices of the global data, one global batch after another: global batch i
    is rank 0's batch i, then rank 1's, ... (each rank's shard a contiguous block, as
    ``llgrad.distributed.shard`` cuts it; ``orders[r]``: rank r's order in its shard)."""
    batches = []
    for i in range(len(orders[0]) // BATCH):
        for r in range(size):
            batches.append(r * rows_per_rank + orders[r][i * BATCH:(i + 1) * BATCH])
    return np.concatenate(batches)


def one_process(params, x, y, optimizer, order, size):
    """The oracle: one process training on the global batches, ``size`` times larger."""
    return llgrad.train(loss, params, (x[order], y[order]), optimizer, batch_size=BATCH * size)
