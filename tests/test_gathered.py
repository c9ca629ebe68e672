"""Rows gathered by the products that read them (``codegen.gathered``): ``x[idx] @ w``
and ``x[idx].T @ d`` read the rows of ``x`` where it is stored, on every path a product
can take (one thread, bands of rows or of columns, a pipeline over k, BLAS, a
matrix-vector product, a copied A), and compute exactly what the product of the
copied rows computes: the oracle is the same graph compiled with every node a kernel of
its own (``fuse_ops=False``: the gather copied first), bit for bit, and numpy."""
import numpy as np
import pytest

import llgrad
from llgrad.compiler.codegen.build import compile_graph
from llgrad.ir import Builder, Graph, TensorType

NN = (((1,), (0,)), ((), ()))      # x[idx] @ w
TN = (((0,), (0,)), ((), ()))      # x[idx].T @ d


def _gather_graph(x_shape, n_idx, b_shape, dims, dtype):
    b = Builder()
    x = b.parameter(index=0, type=TensorType(x_shape, dtype), name="x")
    idx = b.parameter(index=1, type=TensorType((n_idx,), "int64"), name="idx")
    w = b.parameter(index=2, type=TensorType(b_shape, dtype), name="w")
    return Graph([x, idx, w], [b.dot_general(b.take(x, idx), w, dims=dims)], name="gathered")


def _arguments(x_shape, n_idx, b_shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    idx = rng.integers(-2, x_shape[0] + 2, n_idx)         # some out of range: clamped
    return x, idx, rng.standard_normal(b_shape).astype(dtype)


def _reference(x, idx, w, dims):
    rows = x[np.clip(idx, 0, len(x) - 1)].astype(np.float64)
    return (rows if dims == NN else rows.T) @ w


def _check(graph, args, dims, dtype, **options):
    fused = compile_graph(graph, **options)
    got = fused(*args)[0]
    np.testing.assert_array_equal(got, compile_graph(graph, fuse_ops=False, **options)(*args)[0])
    tight = 1e-4 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(got, _reference(*args, dims), rtol=tight, atol=tight * 10)
    return fused.llvm_ir


# (x rows, x columns), gathered rows, right operand, dims: what the tiles' paths see
TILED = [((300, 784), 64, (784, 128), NN),     # row bands on 2 and 3 threads
         ((300, 784), 64, (64, 128), TN),      # k read through the table, row bands
         ((90, 256), 6, (256, 640), NN),       # too few rows for row bands: column bands
         ((90, 40), 640, (640, 96), TN),       # 40 x 640 x 96: column bands
         ((50, 7), 5, (7, 3), NN),             # one small tile, partial vectors
         ((50, 7), 5, (5, 3), TN)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("x_shape,n_idx,b_shape,dims", TILED)
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_tiles_read_the_rows_through_a_table(x_shape, n_idx, b_shape, dims, dtype, threads):
    graph = _gather_graph(x_shape, n_idx, b_shape, dims, dtype)
    ir_text = _check(graph, _arguments(x_shape, n_idx, b_shape, dtype), dims, dtype,
                     threads=threads, blas=False)
    assert (".rows_at" if dims == NN else ".k_at") in ir_text
    kernels = compile_graph(graph, threads=threads, blas=False).plan[0].kernels
    assert [k.node.op for k in kernels] == ["dot_general"]
    assert [n.op for n in kernels[0].inlined] == ["take"]


@pytest.mark.parametrize("dims", [NN, TN])
def test_a_product_that_goes_another_way_reads_the_take_s_copy(dims):
    """BLAS (forced from one multiply-add on), a matrix-vector product (one column of
    C), and a transposed A long enough to be copied (``matmul.COPY_TRANSPOSED_MIN_K``)
    do not read rows through a table: the take keeps its kernel and its buffer."""
    from llgrad.compiler.codegen import matmul
    from llgrad.runtime import blas
    cases = [((300, 784), 64, (784 if dims == NN else 64, 1), {"blas": False})]
    if dims == TN:
        k = matmul.COPY_TRANSPOSED_MIN_K
        cases.append(((300, 96), k, (k, matmul.COPY_TRANSPOSED_MIN_N), {"blas": False}))
    if "float64" in blas.available():
        cases.append(((300, 784), 64, (784 if dims == NN else 64, 128), {"blas_min_flops": 1}))
    for x_shape, n_idx, b_shape, options in cases:
        graph = _gather_graph(x_shape, n_idx, b_shape, dims, "float64")
        ir_text = _check(graph, _arguments(x_shape, n_idx, b_shape, "float64"), dims,
                         "float64", **options)
        assert ".rows_at" not in ir_text and ".k_at" not in ir_text
        ops = [k.node.op for k in compile_graph(graph, **options).plan[0].kernels]
        assert ops == ["take", "dot_general"]


def test_a_gather_with_another_reader_keeps_its_buffer():
    """``x[idx]`` also summed: the take stays a kernel of its own, read by both."""
    b = Builder()
    x = b.parameter(index=0, type=TensorType((40, 30), "float64"), name="x")
    idx = b.parameter(index=1, type=TensorType((20,), "int64"), name="idx")
    w = b.parameter(index=2, type=TensorType((30, 16), "float64"), name="w")
    rows = b.take(x, idx)
    graph = Graph([x, idx, w], [b.dot_general(rows, w, dims=NN), b.reduce_sum(rows, axes=(0,))],
                  name="two_readers")
    executable = compile_graph(graph, blas=False)
    assert "take" in executable.plan[0].summary() and ".rows_at" not in executable.llvm_ir
    xs, ids, ws = _arguments((40, 30), 20, (30, 16), "float64")
    product, total = executable(xs, ids, ws)
    np.testing.assert_allclose(product, _reference(xs, ids, ws, NN), rtol=1e-12)
    np.testing.assert_allclose(total, xs[np.clip(ids, 0, 39)].sum(axis=0), rtol=1e-12)


def test_a_gather_of_more_rows_than_a_table_holds_keeps_its_take():
    """The table lives on the stack: past ``gathered.MAX_ROWS`` rows the take stays."""
    from llgrad.compiler.codegen import gathered
    for n_idx, fused in ((gathered.MAX_ROWS, True), (gathered.MAX_ROWS + 1, False)):
        graph = _gather_graph((50, 3), n_idx, (3, 16), NN, "float64")
        ops = [k.node.op for k in compile_graph(graph, blas=False).plan[0].kernels]
        assert ops == (["dot_general"] if fused else ["take", "dot_general"])
    _check(graph, _arguments((50, 3), n_idx, (3, 16), "float64"), NN, "float64", blas=False)


def _gathered_weight_loop(steps=3):
    """A training loop's first layer over rows gathered afresh each step: h = x[idx] @ w
    (w carried: a pipeline over k on several threads), w <- w - 0.01 x[idx].T h."""
    b = Builder()
    step = b.parameter(index=0, type=TensorType((), "int64"), name="step")
    w = b.parameter(index=1, type=TensorType((784, 128), "float32"), name="w")
    x = b.parameter(index=2, type=TensorType((500, 784), "float32"), name="x")
    order = b.parameter(index=3, type=TensorType((64 * steps,), "int64"), name="order")
    rows = b.take(x, b.dynamic_slice(order, b.mul(step, b.full(64, step.type)), size=64))
    h = b.dot_general(rows, w, dims=NN)
    grad = b.dot_general(rows, h, dims=TN)
    body = Graph([step, w, x, order], [b.sub(w, b.mul(b.full(0.01, w.type), grad)), h],
                 name="body")
    b = Builder()
    params = [b.parameter(index=k, type=p.type, name=f"p{k}")
              for k, p in enumerate(body.inputs[1:])]
    loop = b.loop(*params, body=body, trip_count=steps, n_carried=1)
    return Graph(params, [b.tuple_get(loop, index=0), b.tuple_get(loop, index=1)], name="weights")


def test_a_loop_gathering_its_minibatch_equals_one_thread_and_plain_loops():
    graph = _gathered_weight_loop()
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((784, 128)) * 0.05).astype(np.float32)
    x = (rng.standard_normal((500, 784)) * 0.05).astype(np.float32)
    order = rng.permutation(500)[:192]
    want = compile_graph(graph, threads=1, blas=False)(w, x, order)
    split = compile_graph(graph, threads=2, blas=False)
    assert "k_stages" in split.llvm_ir and ".rows_at" in split.llvm_ir
    for got, same in zip(split(w, x, order), want):
        np.testing.assert_array_equal(got, same)
    w64, hs = w.astype(np.float64), []
    for step in range(3):
        rows = x[order[64 * step:64 * (step + 1)]].astype(np.float64)
        hs.append(rows @ w64)
        w64 = w64 - 0.01 * (rows.T @ hs[-1])
    np.testing.assert_allclose(want[0], w64, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(want[1], np.stack(hs), rtol=1e-4, atol=1e-5)


def test_shuffled_training_reads_its_minibatch_in_place(monkeypatch):
    """``llgrad.train`` with ``shuffle``: the first layer's products gather the rows
    (no take kernel in the step), and the profile counts the rows they read, not the
    whole data set.  Without BLAS, so that no product's timing sends it there."""
    from llgrad.runtime import blas
    monkeypatch.setattr(blas, "_found", {})
    rng = np.random.default_rng(0)
    x = rng.standard_normal((640, 100)).astype(np.float32)
    y = rng.standard_normal((640, 1)).astype(np.float32)
    params = {"w": (rng.standard_normal((100, 32)) * 0.1).astype(np.float32),
              "v": (rng.standard_normal((32, 1)) * 0.1).astype(np.float32)}

    def loss(p, x, y):
        return np.mean((np.tanh(x @ p["w"]) @ p["v"] - y) ** 2)

    result = llgrad.train(loss, params, (x, y), llgrad.optim.sgd(0.1), batch_size=64,
                          shuffle=1, profile=True)
    reference = llgrad.train(loss, params, (x, y), llgrad.optim.sgd(0.1), batch_size=64,
                             shuffle=1, backend="interpret")
    for name in params:
        np.testing.assert_allclose(result.params[name], reference.params[name], rtol=2e-5,
                                   atol=1e-6)
    labels = [r["label"] for r in result.profile.rows]
    products = [lab for lab in labels if lab["op"] == "dot_general" and "take" in lab["fused"]]
    gathers = [lab["type"] for lab in labels if lab["op"] == "take"]
    assert len(products) == 2 and gathers == ["f32[64,1]"]       # y's rows: read elementwise
    assert all(lab["bytes"] < x.nbytes for lab in products)


def test_numpy_indexing_with_negative_indices_is_read_through_the_table(monkeypatch):
    """``x[idx] @ w`` traced from numpy: negative indices count from the end, as numpy's
    do (the wrap is computed inside the product's table loop), and both products read
    the rows in place: no take kernel."""
    from llgrad.runtime import blas
    monkeypatch.setattr(blas, "_found", {})
    rng = np.random.default_rng(5)
    x = rng.standard_normal((40, 24))
    w = rng.standard_normal((24, 20))
    d = rng.standard_normal((16, 20))
    idx = rng.integers(-40, 40, 16)
    f = llgrad.jit(lambda x, w, d, idx: (x[idx] @ w, x[idx].T @ d))
    forward, backward = f(x, w, d, idx)
    np.testing.assert_allclose(forward, x[idx] @ w, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(backward, x[idx].T @ d, rtol=1e-12, atol=1e-12)
    ops = [line.split()[0] for line in str(f.trace(x, w, d, idx).kernels).splitlines()]
    assert ops == ["dot_general", "dot_general"]
