"""A product's epilogue: the elementwise kernel right after a matrix product that reads
it at its own index runs on each band of rows as soon as the tiles have written it (or
after the whole product, where the product is not cut into bands of rows).  Every way
a product can go (tiles on one thread, row bands and column bands across threads,
BLAS, a matrix-vector product) agrees with the interpreter, and a consumer that reads
the product at another index is never made an epilogue."""
import numpy as np
import pytest

from models import tanh_layer_loss, tanh_layer_sgd

from llgrad.compiler.codegen.fusion import fuse
from llgrad.compiler.codegen.memplan import plan_memory
from llgrad.compiler.codegen.build import compile_graph
from llgrad.ir.graph import Builder, Graph
from llgrad.ir.interpret import interpret
from llgrad.ir.types import TensorType

MATMUL = (((1,), (0,)), ((), ()))
#: (M, K, N): tiles on one thread, a last tile overlapping its neighbour (M % rows),
#: a matrix-vector product, row bands across threads (2**20 multiply-adds), a small
#: product whose epilogue alone is split, column bands (8 rows across two threads)
SHAPES = [(100, 16, 16), (13, 7, 20), (37, 5, 1), (256, 64, 64), (1024, 1, 64), (8, 4096, 256)]
#: how the product is computed: register tiles, or BLAS from one multiply-add on
WAYS = {"tiles": {"blas": False}, "blas": {"blas_min_flops": 1}}


def _param(b, i, shape, dtype):
    return b.parameter(index=i, type=TensorType(shape, dtype), name=f"p{i}")


def _dense_tanh(M, K, N, dtype):
    """tanh(x @ w + bias): the epilogue broadcasts the bias along the rows."""
    b = Builder()
    x, w, bias = _param(b, 0, (M, K), dtype), _param(b, 1, (K, N), dtype), _param(b, 2, (N,), dtype)
    product = b.dot_general(x, w, dims=MATMUL)
    out = b.tanh(b.add(product, b.broadcast_in_dim(bias, shape=(M, N), dims=(1,))))
    return Graph([x, w, bias], [out], name="dense")


def _agrees(graph, args, dtype, **options):
    tol = 1e-12 if dtype == "float64" else 2e-5
    for got, want in zip(compile_graph(graph, **options)(*args), interpret(graph, *args)):
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def _epilogue_ops(graph):
    plan = fuse(graph)
    return [k.node.op for k in plan.epilogues.values()]


@pytest.mark.parametrize("way", sorted(WAYS))
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("M,K,N", SHAPES)
def test_bias_and_tanh_after_a_product_agree_with_the_interpreter(M, K, N, threads, way):
    dtype = "float32" if M * K * N >= 2 ** 20 else "float64"
    graph = _dense_tanh(M, K, N, dtype)
    assert _epilogue_ops(graph) == ["tanh"]
    assert fuse(graph).summary().splitlines()[1].endswith("(epilogue of the product above)")
    rng = np.random.default_rng(M + K + N)
    args = [(rng.normal(size=s) / np.sqrt(K)).astype(dtype) for s in ((M, K), (K, N), (N,))]
    _agrees(graph, args, dtype, threads=threads, **WAYS[way])


@pytest.mark.parametrize("threads", [1, 2])
def test_a_weight_update_from_a_transposed_product_is_its_epilogue(threads):
    """w - lr * (x.T @ d), the SGD step of a first layer: the product reads x
    transposed in place and the update is flat (no axes)."""
    b = Builder()
    x, d, w = (_param(b, 0, (64, 300), "float32"), _param(b, 1, (64, 128), "float32"),
               _param(b, 2, (300, 128), "float32"))
    grad = b.dot_general(x, d, dims=(((0,), (0,)), ((), ())))
    lr = b.broadcast_in_dim(b.const(0.1, "float32"), shape=(300, 128), dims=())
    graph = Graph([x, d, w], [b.sub(w, b.mul(lr, grad))], name="update")
    assert _epilogue_ops(graph) == ["sub"]
    rng = np.random.default_rng(1)
    args = [rng.normal(size=s).astype("float32") for s in ((64, 300), (64, 128), (300, 128))]
    _agrees(graph, args, "float32", threads=threads, blas=False)
    got, = compile_graph(graph, threads=threads, blas=False)(*args)
    np.testing.assert_allclose(got, args[2] - 0.1 * (args[0].T @ args[1]), rtol=2e-5, atol=2e-4)


def test_a_consumer_reading_the_product_transposed_is_not_an_epilogue():
    """p + p.T reads row j of p for row i of the result: rows not yet written."""
    b = Builder()
    x = _param(b, 0, (12, 12), "float64")
    p = b.dot_general(x, x, dims=MATMUL)
    graph = Graph([x], [b.tanh(b.add(p, b.transpose(p, perm=(1, 0))))], name="symmetric")
    assert _epilogue_ops(graph) == []
    _agrees(graph, [np.random.default_rng(2).normal(size=(12, 12))], "float64")


def test_a_product_whose_result_axes_are_not_its_rows_and_columns_is_not_an_epilogue():
    """v @ w for v of 3 and w of 3x2x4 is one row of 8 columns, stored as a 2x4 array:
    its rows are not the result's rows."""
    b = Builder()
    v, w, y = (_param(b, 0, (3,), "float64"), _param(b, 1, (3, 2, 4), "float64"),
               _param(b, 2, (2, 4), "float64"))
    p = b.dot_general(v, w, dims=(((0,), (0,)), ((), ())))
    graph = Graph([v, w, y], [b.add(p, b.mul(y, y))], name="vector")
    assert p.shape == (2, 4) and _epilogue_ops(graph) == []
    rng = np.random.default_rng(5)
    _agrees(graph, [rng.normal(size=3), rng.normal(size=(3, 2, 4)), rng.normal(size=(2, 4))],
            "float64", blas=False)


def test_a_product_read_again_later_is_still_stored_whole():
    """tanh(p) runs as p's epilogue; the row sums of p read p after it."""
    b = Builder()
    x, w = _param(b, 0, (30, 9), "float64"), _param(b, 1, (9, 40), "float64")
    p = b.dot_general(x, w, dims=MATMUL)
    graph = Graph([x, w], [b.tanh(p), b.reduce_sum(p, axes=(1,)), p], name="twice")
    assert _epilogue_ops(graph) == ["tanh"]
    rng = np.random.default_rng(3)
    _agrees(graph, [rng.normal(size=(30, 9)), rng.normal(size=(9, 40))], "float64", blas=False)


@pytest.mark.parametrize("threads", [1, 2])
def test_the_epilogue_never_writes_over_what_the_product_still_reads(threads):
    """exp(w), the product's right operand, is read by every band of rows and by
    nothing after the product, and the epilogue's result has its size: the memory plan
    keeps the product's operands alive through the epilogue, so the epilogue's first
    rows never land on the operand the later bands still read."""
    b = Builder()
    x, w = _param(b, 0, (96, 96), "float64"), _param(b, 1, (96, 48), "float64")
    p = b.dot_general(x, b.exp(w), dims=MATMUL)
    q = b.tanh(b.mul(p, p))     # stored in the arena: a second product reads it
    graph = Graph([x, w], [b.dot_general(q, b.transpose(w, perm=(1, 0)), dims=MATMUL)],
                  name="reuse")
    plan = fuse(graph)
    memory = plan_memory(plan)
    epilogue = plan.epilogues[id(p)]
    operand = memory.buffers[id(p.inputs[1])]
    assert operand.kind == memory.outputs[plan.kernels.index(epilogue)].kind == "arena"
    assert memory.outputs[plan.kernels.index(epilogue)].index != operand.index
    rng = np.random.default_rng(4)
    _agrees(graph, [rng.normal(size=(96, 96)) / 30, rng.normal(size=(96, 48))], "float64",
            threads=threads, blas=False)


@pytest.mark.parametrize("threads", ["1", "2"])
def test_a_training_loop_with_epilogues_follows_numpy_sgd(threads, monkeypatch):
    """16x512 @ 512x64 per step: at two threads the forward product is a pipeline over k
    (its weight is rewritten every step), its bias and tanh run after it; the weight
    gradient runs in row bands with the SGD update as its epilogue."""
    import llgrad
    from llgrad import optim
    monkeypatch.setenv("LLGRAD_THREADS", threads)
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(64, 512)), rng.normal(size=(64, 64))
    params = {"w": rng.normal(size=(512, 64)) * 0.05, "b": np.zeros(64)}
    result = llgrad.train(tanh_layer_loss, params, (x, y), optim.sgd(0.5), batch_size=16,
                          epochs=2, grad_norms=False)
    body = next(n for n in result.graph.nodes if n.op == "loop").attrs["body"]
    assert sorted(k.node.op for k in fuse(body).epilogues.values()) == ["sub", "tanh"]
    w, bias = tanh_layer_sgd(params, x, y, 0.5, 16, 8)
    np.testing.assert_allclose(result.params["w"], w, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(result.params["b"], bias, rtol=1e-11, atol=1e-12)
