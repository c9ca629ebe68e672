"""np.einsum on traced arrays in every form numpy accepts
(``compiler/frontend/numpy_einsum.py``): explicit and implicit output, ellipsis,
repeated indices, any number of operands, the sublist form; contractions in the order
np.einsum_path plans.

np.einsum on the same arrays is the oracle for values, shapes and dtypes (native code
and the interpreter); central differences for gradients; np.einsum_path's own count
for the cost of the planned order, read from the traced graph (``flops``)."""
import numpy as np
import pytest
from helpers import central_jacobian

import llgrad
from llgrad.check import check_grad, numerical_grad
from llgrad.ir.errors import LlgradError
from llgrad.ir.primitives import flops
from llgrad.ir.walk import topological_order

BACKENDS = ("native", "interpret")

#: subscripts and operand shapes: explicit and implicit, ellipsis, repeated indices
#: (diagonals, traces), broadcasting size-1 axes, chains of up to 4 operands, empty axes
TABLE = [
    ("ij,jk->ik", [(3, 4), (4, 5)]),
    ("ij,jk", [(3, 4), (4, 5)]),
    ("ij->ji", [(2, 3)]),
    ("ij", [(2, 3)]),
    ("ji", [(2, 3)]),
    ("ij->", [(2, 3)]),
    ("ij->j", [(0, 3)]),
    ("i,i", [(3,), (3,)]),
    ("i,i->i", [(3,), (3,)]),
    ("i,j->ij", [(2,), (3,)]),
    ("i,j,k", [(2,), (3,), (4,)]),
    ("ii->i", [(3, 3)]),
    ("ii", [(3, 3)]),
    ("iij->j", [(2, 2, 3)]),
    ("iji->j", [(2, 3, 2)]),
    ("iii->", [(3, 3, 3)]),
    ("ii,jj->ij", [(2, 2), (3, 3)]),
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    ("ijk,jil->kl", [(2, 3, 4), (3, 2, 5)]),
    ("ij,ji", [(3, 4), (4, 3)]),          # both axes contracted, in opposite orders
    ("ijk,kji->", [(2, 3, 4), (4, 3, 2)]),
    ("ba,Ab", [(2, 3), (4, 2)]),
    ("...ij,...jk->...ik", [(2, 3, 4), (4, 5)]),
    ("...ij,...jk", [(2, 1, 3, 4), (3, 4, 5)]),
    ("...i->...", [(2, 3)]),
    ("i...->...", [(3,)]),
    ("a...,...b", [(2, 3), (3, 4)]),
    ("...,...", [(3,), (2, 3)]),
    ("...ii->...i", [(2, 3, 3)]),
    ("i,i", [(1,), (3,)]),
    ("ij,j->i", [(2, 1), (3,)]),
    ("", [()]),
    (",", [(), ()]),
    (",i->i", [(), (3,)]),
    ("ij,ij,ij->", [(2, 3), (2, 3), (2, 3)]),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)]),
    ("ab,bc,cd,de->ae", [(2, 3), (3, 4), (4, 5), (5, 2)]),
    ("abc,cd,de,ef->abf", [(2, 2, 3), (3, 4), (4, 2), (2, 3)]),
    ("ea,fb,abcd,gc,hd->efgh", [(2, 3), (2, 3), (3, 3, 3, 3), (2, 3), (2, 3)]),
    ("i,i", [(0,), (0,)]),
]


def _operands(shapes, dtype="float64", seed=0):
    rng = np.random.default_rng(seed)
    if dtype == "int64":
        return [rng.integers(-3, 4, s) for s in shapes]
    if dtype == "bool":
        return [rng.random(s) < 0.6 for s in shapes]
    return [np.asarray(rng.standard_normal(s), dtype=dtype) for s in shapes]


def assert_close(got, want, dtype="float64"):
    got, want = np.asarray(got), np.asarray(want)
    assert (got.dtype, got.shape) == (want.dtype, want.shape)
    eps = np.finfo(want.dtype).eps if want.dtype.kind == "f" else 0
    np.testing.assert_allclose(got, want, rtol=64 * eps, atol=64 * eps)


@pytest.mark.parametrize("subscripts,shapes", TABLE, ids=[f"'{s}'" for s, _ in TABLE])
@pytest.mark.parametrize("backend", BACKENDS)
def test_einsum_matches_numpy(subscripts, shapes, backend):
    ops = _operands(shapes)
    got = llgrad.jit(lambda *a: np.einsum(subscripts, *a), backend=backend)(*ops)
    assert_close(got, np.einsum(subscripts, *ops))


@pytest.mark.parametrize("dtype", ["float32", "int64", "bool"])
@pytest.mark.parametrize("subscripts,shapes", [("ij,jk->ik", [(3, 4), (4, 2)]),
                                               ("ii,i", [(3, 3), (3,)]),
                                               ("i,j,j", [(2,), (3,), (3,)])])
def test_einsum_keeps_numpys_dtype(dtype, subscripts, shapes):
    ops = _operands(shapes, dtype)
    got = llgrad.jit(lambda *a: np.einsum(subscripts, *a))(*ops)
    assert_close(got, np.einsum(subscripts, *ops))


def test_dtype_keyword_computes_in_that_dtype():
    ops = _operands([(3, 4), (4,)], "int64")
    got = llgrad.jit(lambda a, b: np.einsum("ij,j", a, b, dtype=np.float64))(*ops)
    assert_close(got, np.einsum("ij,j", *ops, dtype=np.float64))


SUBLISTS = [
    (lambda a, b: np.einsum(a, [0, 1], b, [1, 2], [0, 2]), [(3, 4), (4, 5)]),
    (lambda a, b: np.einsum(a, [0, 1], b, [1, 2]), [(3, 4), (4, 5)]),
    (lambda a: np.einsum(a, [Ellipsis, 0, 0], [Ellipsis, 0]), [(2, 3, 3)]),
    (lambda a, b: np.einsum(a, [Ellipsis, 30], b, [30, 51], [51, Ellipsis]), [(2, 3), (3, 4)]),
    (lambda a, b, c: np.einsum(a, [0], b, [0, 1], c, [1], []), [(2,), (2, 3), (3,)]),
]


@pytest.mark.parametrize("k", range(len(SUBLISTS)))
@pytest.mark.parametrize("backend", BACKENDS)
def test_sublist_form_matches_numpy(k, backend):
    fn, shapes = SUBLISTS[k]
    ops = _operands(shapes)
    assert_close(llgrad.jit(fn, backend=backend)(*ops), fn(*ops))


@pytest.mark.parametrize("optimize", [False, True, "greedy", "optimal",
                                      ["einsum_path", (0, 1), (0, 1)],
                                      ["einsum_path", (1, 2), (0, 1)]])
def test_every_optimize_value_gives_the_same_result(optimize):
    ops = _operands([(3, 4), (4, 5), (5, 2)])
    fn = llgrad.jit(lambda *a: np.einsum("ij,jk,kl->il", *a, optimize=optimize))
    assert_close(fn(*ops), np.einsum("ij,jk,kl->il", *ops))


def _forward_flops(fn, *args):
    graph = llgrad.jit(fn).trace(*args).executable.graph
    return sum(flops(node) for node in topological_order(graph.outputs))


def test_the_planned_order_costs_what_einsum_path_plans_and_beats_left_to_right():
    """(A·B)·C forms a 1000×1000 intermediate; A·(B·C) a 2×2 one: the greedy plan
    takes the second, whose cost np.einsum_path states."""
    a, b, c = np.ones((1000, 2)), np.ones((2, 1000)), np.ones((1000, 2))
    planned = _forward_flops(lambda x, y, z: np.einsum("ij,jk,kl->il", x, y, z), a, b, c)
    in_order = _forward_flops(lambda x, y, z: np.einsum(
        "ij,jk,kl->il", x, y, z, optimize=["einsum_path", (0, 1), (0, 1)]), a, b, c)
    report = np.einsum_path("ij,jk,kl->il", a, b, c, optimize="greedy")[1]
    numpy_count = float(report.split("Optimized FLOP count:")[1].split()[0])
    assert planned == numpy_count == 16000
    assert in_order == 8_000_000 and planned < in_order / 100


def test_wrong_subscripts_are_clear_errors():
    ones = np.ones((2, 3))
    cases = [("ij,jk", (ones, ones), "index 'j' has size 3 and size 2"),
             ("ij,jk", (ones,), "1 operands"),
             ("i->i", (ones,), "2 dimensions"),
             ("ij->ii", (ones,), "more than once"),
             ("ij->k", (ones,), "never appears"),
             ("i2", (ones,), "invalid subscript"),
             ("ii", (ones,), "don't match"),
             ("...j->j", (np.ones((2, 3)),), "no '...'")]
    for subscripts, ops, message in cases:
        with pytest.raises(LlgradError, match=message):
            llgrad.jit(lambda *a, s=subscripts: np.einsum(s, *a))(*ops)
    with pytest.raises(LlgradError, match="does not fit"):
        llgrad.jit(lambda a, b: np.einsum("ij,jk", a, b, optimize=["einsum_path", (0, 5)]))(
            ones, ones.T)


# ----------------------------------------------------------------------------------
# derivatives

GRADIENTS = {
    "matmul chain": ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 2)]),
    "trace of a product": ("ij,ji", [(3, 4), (4, 3)]),
    "diagonal": ("...ii->...i", [(2, 3, 3)]),
    "batched ellipsis": ("...ij,...j->...i", [(2, 3, 4), (4,)]),
    "broadcast size 1": ("ij,j->i", [(2, 1), (3,)]),
    "four operands": ("ab,bc,cd,da->", [(2, 3), (3, 2), (2, 3), (3, 2)]),
}


def _loss(subscripts, ops, k):
    weights = np.random.default_rng(3).standard_normal(np.einsum(subscripts, *ops).shape)

    def loss(x):
        args = list(ops)
        args[k] = x
        return np.sum(weights * np.sin(np.einsum(subscripts, *args)))
    return loss


@pytest.mark.parametrize("name", GRADIENTS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_reverse_gradients_match_central_differences(name, backend):
    subscripts, shapes = GRADIENTS[name]
    ops = _operands(shapes, seed=1)
    for k in range(len(ops)):
        check_grad(_loss(subscripts, ops, k), ops[k], backend=backend, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", GRADIENTS)
def test_forward_gradients_match_central_differences(name):
    subscripts, shapes = GRADIENTS[name]
    ops = _operands(shapes, seed=2)
    loss = _loss(subscripts, ops, 0)
    np.testing.assert_allclose(llgrad.jacfwd(loss)(ops[0]), numerical_grad(loss, (ops[0],), 0, 1e-6),
                               rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", ["matmul chain", "diagonal", "four operands"])
def test_second_derivatives_match_central_differences_of_the_gradient(name):
    subscripts, shapes = GRADIENTS[name]
    ops = _operands(shapes, seed=4)
    loss = _loss(subscripts, ops, 0)
    x = ops[0]
    want = central_jacobian(llgrad.grad(loss), x)
    np.testing.assert_allclose(llgrad.hessian(loss)(x), want, rtol=1e-6, atol=1e-7)
