"""What keeps compile time linear in the program's size, and what it must not change.

Repeated kernels are emitted once (``codegen.kernel_key``), the memory plan's first fit
scans free gaps instead of every buffer, a large graph's calls are split into parts,
and a contiguous static slice is read in place.  The oracles: the interpreter (and
numpy for slices), a plain quadratic first fit, and the LLVM IR's function count.
"""
import random

import numpy as np
import pytest

import llgrad
from llgrad.compiler.codegen import module
from llgrad.compiler.codegen.build import compile_graph
from llgrad.compiler.codegen.fusion import contiguous_start, fuse
from llgrad.compiler.codegen.memplan import _assign_offsets
from llgrad.ir.graph import Builder, Graph
from llgrad.ir.interpret import interpret
from llgrad.ir.types import TensorType
from llgrad.llvm.scalar import ALIGN


def _param(b, i, shape, dtype="float64"):
    return b.parameter(index=i, type=TensorType(shape, dtype), name=f"p{i}")


def _agrees(graph, args, **options):
    """Native results equal the interpreter's up to a product's rounding order."""
    for got, want in zip(compile_graph(graph, **options)(*args), interpret(graph, *args)):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)


def _functions(llvm_ir: str) -> int:
    return sum(line.startswith("define ") for line in llvm_ir.splitlines())


# ---------------------------------------------------------------- memory plan

def _quadratic_first_fit(requests):
    """The first fit as plainly as it can be written: every placed buffer whose
    lifetime meets the new one's is busy; take the lowest offset clear of them all."""
    placed, offsets, top = [], {}, 0
    for start, end, want, key in sorted(requests, key=lambda r: r[0]):
        size = -(-max(want, 1) // ALIGN) * ALIGN
        busy = sorted((off, off + sz) for s, e, off, sz in placed if s <= end and start <= e)
        offset = 0
        for lo, hi in busy:
            if offset + size <= lo:
                break
            offset = max(offset, hi)
        placed.append((start, end, offset, size))
        offsets[key] = offset
        top = max(top, offset + size)
    return offsets, top


@pytest.mark.parametrize("seed", range(40))
def test_first_fit_places_every_buffer_where_the_quadratic_search_does(seed):
    rnd = random.Random(seed)
    requests = []
    for k in range(rnd.randint(1, 80)):
        start = rnd.randint(0, 40)
        end = start + rnd.choice([0, 0, 1, 3, rnd.randint(0, 50)])
        requests.append([start, end, rnd.choice([1, 64, 100, 4096, rnd.randint(1, 9000)]),
                         ("node", k)])
    offsets, top = _assign_offsets(requests)
    assert (offsets, top) == _quadratic_first_fit(requests)
    for s1, e1, w1, k1 in requests:          # and, on its own terms: no overlap in use
        for s2, e2, w2, k2 in requests:
            if k1 < k2 and s1 <= e2 and s2 <= e1:
                a, b = offsets[k1], offsets[k2]
                assert a + w1 <= b or b + w2 <= a


# ---------------------------------------------------------------- static slices

SLICES = [  # (starts, limits, strides) of a (3, 4, 5) array
    ((1, 0, 0), (2, 4, 5), (1, 1, 1)),     # one leading index: contiguous
    ((1, 0, 0), (3, 4, 5), (1, 1, 1)),     # a range of leading rows
    ((2, 1, 0), (3, 3, 5), (1, 1, 1)),     # one index, then a range, then whole
    ((0, 2, 3), (1, 3, 4), (1, 1, 1)),     # one element
    ((0, 0, 1), (3, 4, 3), (1, 1, 1)),     # a range of the last axis: strided
    ((0, 1, 0), (3, 2, 5), (1, 1, 1)),     # one middle index under a range: strided
    ((1, 0, 0), (3, 4, 5), (2, 1, 1)),     # rows 1 (and only 1) by a stride of 2
    ((0, 0, 0), (3, 4, 5), (2, 1, 1)),     # every other row
]


@pytest.mark.parametrize("starts, limits, strides", SLICES)
def test_contiguous_start_is_where_numpy_finds_one_run(starts, limits, strides):
    b = Builder()
    x = _param(b, 0, (3, 4, 5))
    node = b.slice(x, starts=starts, limits=limits, strides=strides)
    flat = np.arange(60).reshape(3, 4, 5)[tuple(map(slice, starts, limits, strides))].ravel()
    one_run = np.array_equal(flat, np.arange(flat[0], flat[0] + flat.size))
    assert contiguous_start(node) == (flat[0] if one_run else None)


@pytest.mark.parametrize("starts, limits, strides", SLICES)
@pytest.mark.parametrize("source", ["input", "computed", "constant"])
def test_a_stored_static_slice_is_read_in_place(starts, limits, strides, source):
    """Sliced from an argument, from a stored value and from a constant array, then
    read by a product (which takes no value inline) and returned reshaped."""
    b = Builder()
    x = _param(b, 0, (3, 4, 5))
    rng = np.random.default_rng(len(source))
    operand = {"input": x, "computed": b.tanh(x),
               "constant": b.const(rng.normal(size=(3, 4, 5)), "float64")}[source]
    part = b.slice(operand, starts=starts, limits=limits, strides=strides)
    rows = b.reshape(part, shape=(part.type.size // part.shape[-1], part.shape[-1]))
    w = _param(b, 1, (part.shape[-1], 2))
    product = b.dot_general(rows, w, dims=(((1,), (0,)), ((), ())))
    graph = Graph([x, w], [product, b.reshape(part, shape=(part.type.size,)),
                           b.exp(operand)], name="sliced")
    ops = [k.node.op for k in fuse(graph).kernels if not k.copy]
    assert ("slice" in ops) == (contiguous_start(part) is None)
    args = [rng.normal(size=(3, 4, 5)), rng.normal(size=(part.shape[-1], 2))]
    _agrees(graph, args)
    _agrees(graph, args, blas=False)


def test_an_unrolled_rnn_copies_no_step_input():
    def loss(w, u, xs):
        h = np.zeros((3, 4))
        for t in range(6):
            h = np.tanh(xs[t] @ w + h @ u)
        return np.sum(h * h)
    rng = np.random.default_rng(0)
    args = (rng.normal(size=(5, 4)) * 0.4, rng.normal(size=(4, 4)) * 0.4,
            rng.normal(size=(6, 3, 5)))
    grad = llgrad.grad(loss, argnums=(0, 1))
    plan = grad.trace(*args).executable.plan[0]
    assert all(k.node.op != "slice" for k in plan.kernels)
    for got, want in zip(grad(*args), llgrad.grad(loss, argnums=(0, 1),
                                                  backend="interpret")(*args)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- shared kernels

def _deep(depth):
    def loss(ws, x):
        for w in ws:
            x = np.tanh(x @ w + 0.1)
        return np.sum(x * x)
    rng = np.random.default_rng(depth)
    return loss, ([rng.normal(size=(6, 6)) * 0.5 for _ in range(depth)],
                  rng.normal(size=(4, 6)))


def test_a_repeated_layer_is_one_function_however_deep():
    counts = []
    for depth in (3, 12):
        loss, args = _deep(depth)
        grad = llgrad.grad(loss)
        counts.append(_functions(grad.trace(*args).llvm_ir))
        for got, want in zip(grad(*args)[0], llgrad.grad(loss, backend="interpret")(*args)[0]):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert counts[0] == counts[1]


def test_kernels_alike_but_for_a_literal_an_axis_or_an_operand_are_not_shared():
    b = Builder()
    x, y = _param(b, 0, (7, 7)), _param(b, 1, (7, 7))
    two, three = b.full(2.0, x.type), b.full(3.0, x.type)
    outputs = [b.mul(x, two), b.mul(x, three), b.mul(x, x), b.mul(x, y), b.mul(y, x),
               b.reduce_sum(x, axes=(0,)), b.reduce_sum(x, axes=(1,)),
               b.transpose(x, perm=(1, 0)), b.sub(x, y), b.sub(y, x)]
    graph = Graph([x, y], outputs, name="alike")
    rng = np.random.default_rng(3)
    args = [rng.normal(size=(7, 7)), rng.normal(size=(7, 7))]
    for got, want in zip(compile_graph(graph)(*args), interpret(graph, *args)):
        np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------- parts

@pytest.fixture
def small_parts(monkeypatch):
    monkeypatch.setattr(module, "CALLS_PER_PART", 3)


def test_a_large_graph_runs_in_parts_and_computes_the_same(small_parts):
    loss, args = _deep(5)
    grad = llgrad.grad(loss)
    assert ".part" in grad.trace(*args).llvm_ir
    for got, want in zip(grad(*args)[0], llgrad.grad(loss, backend="interpret")(*args)[0]):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_a_nan_inside_a_part_stops_the_call_and_is_named(small_parts):
    def loss(ws, x):
        for w in ws:
            x = np.tanh(x @ w + 0.1)
        return np.sum(np.log(x))    # tanh may be negative: log makes the NaN, last
    _, args = _deep(5)
    with llgrad.debug_nans(True), pytest.raises(FloatingPointError, match="log"):
        llgrad.jit(loss)(*args)


def test_a_profile_of_parts_times_every_kernel_once(small_parts):
    loss, args = _deep(4)
    grad = llgrad.grad(loss)
    prof = llgrad.profile(grad, *args, seconds=0.02)
    n_kernels = len(grad.trace(*args).executable.plan[0].kernels)
    covered = [k for r in prof.rows for k in range(r["label"]["kernels"][0],
                                                     r["label"]["kernels"][1] + 1)]
    assert sorted(covered) == list(range(n_kernels))


def test_a_long_sum_is_cut_into_kernels_of_bounded_reads():
    """A sum of 300 stored values: no kernel reads more than MAX_READS per operand, and
    the sum is the interpreter's to the last bit (the order of the additions is kept)."""
    from llgrad.compiler.codegen.fusion import MAX_READS
    b = Builder()
    xs = [_param(b, i, (5,)) for i in range(300)]
    total = xs[0]
    for x in xs[1:]:
        total = b.add(total, b.mul(x, x))
    graph = Graph(xs, [total], name="long_sum")
    assert max(len(k.reads) for k in fuse(graph).kernels) <= min(2 * MAX_READS, 299)
    args = list(np.random.default_rng(4).normal(size=(300, 5)))
    for got, want in zip(compile_graph(graph)(*args), interpret(graph, *args)):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("collecting", [True, False])
def test_no_collection_runs_during_a_compile_and_the_collector_is_left_as_it_was(
        collecting, monkeypatch):
    """The cyclic collector pauses while a function compiles (``staging``): no
    collection runs then, though they run around it, and the collector is on again
    afterwards only if it was before."""
    import gc

    from llgrad.compiler.dispatch import staging
    collections, inside = [], []
    compile_ = staging.Staged._compile

    def counted(self, *args, **kwargs):
        before = len(collections)
        try:
            return compile_(self, *args, **kwargs)
        finally:
            inside.append(len(collections) - before)
    monkeypatch.setattr(staging.Staged, "_compile", counted)

    def note(phase, info):
        if phase == "start":
            collections.append(info["generation"])
    threshold = gc.get_threshold()
    gc.set_threshold(10)            # a collection every few allocations, where allowed
    gc.callbacks.append(note)
    (gc.enable if collecting else gc.disable)()
    try:
        f = llgrad.grad(lambda x: np.sum(np.tanh(x) ** 2))
        assert np.allclose(f(np.full(3, 0.5)), 2 * np.tanh(0.5) / np.cosh(0.5) ** 2)
        for _ in range(100):        # garbage outside a compile is collected as ever
            [[]]
        assert gc.isenabled() == collecting
    finally:
        gc.callbacks.remove(note)
        gc.set_threshold(*threshold)
        gc.enable()
    assert inside == [0]
    assert bool(collections) == collecting
