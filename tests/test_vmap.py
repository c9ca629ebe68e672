"""vmap: a function mapped over a batch axis, against the oracle of a Python loop of calls
(np.stack of the per-example results); per-example gradients against a loop of grad;
jacfwd/jacrev/hessian (built on vmap) against finite differences."""
import numpy as np
import pytest
from helpers import CASES, arguments, case_parameters, looped_graph, small_mlp
from models import mlp_loss

import llgrad
import llgrad.scipy.special as lsp
from llgrad.compiler.autodiff.batching import vmap as batch_graph
from llgrad.ir import PRIMITIVES, Builder, Graph, TensorType, interpret
from llgrad.ir import batch_rules

RNG = np.random.default_rng(7)
B = 3   # the batch size of the tests


def looped(fn, in_axes, *args, out_axis=0):
    """The oracle: ``fn`` called once per example, results stacked."""
    size = next(np.shape(a)[ax] for a, ax in zip(args, in_axes) if ax is not None)
    results = [fn(*[a if ax is None else np.take(a, i, axis=ax) for a, ax in zip(args, in_axes)])
               for i in range(size)]
    return np.stack(results, axis=out_axis)


def assert_vmap_is_loop(fn, in_axes, *args, out_axes=0, rtol=1e-12):
    got = llgrad.vmap(fn, in_axes=in_axes, out_axes=out_axes)(*args)
    np.testing.assert_allclose(got, looped(fn, in_axes, *args, out_axis=out_axes), rtol=rtol,
                               atol=1e-13)


# ----------------------------------------------------------------------------------
# every primitive: the batched graph of each case of the table, interpreted


def _example(value, k):
    """Example k of a batch made from one case's argument: its elements rotated by k
    (staying in the case's domain), integers shifted by k (indices and starts vary)."""
    if value.dtype == np.int64:
        return value + k
    return np.roll(value.ravel(), k).reshape(value.shape)


def _batch_patterns(n):
    """Which operands are batched: all of them, and each alone."""
    return [(True,) * n] + ([tuple(i == j for j in range(n)) for i in range(n)] if n > 1
                            else [])


BATCHABLE = [i for i, c in enumerate(CASES) if c.types and c.op != "parameter"]


@pytest.mark.parametrize("index", BATCHABLE, ids=[CASES[i].id for i in BATCHABLE])
def test_every_case_batched_equals_a_loop_of_examples(index):
    case = CASES[index]
    b = Builder()
    params = case_parameters(b, case)
    out = b.emit(case.op, *params, **case.attrs)
    if isinstance(out.type, tuple):
        pytest.skip("a node of several results: vmap reaches it through tuple_get, as in the "
                    "loop and cond tests")
    graph = Graph(params, [out], name=case.op)
    args = arguments(case)
    for pattern in _batch_patterns(len(args)):
        examples = [[_example(a, k) if flag else a for a, flag in zip(args, pattern)]
                    for k in range(B)]
        expected = np.stack([interpret(graph, *ex)[0] for ex in examples])
        batched = batch_graph(graph, [0 if flag else None for flag in pattern], [0], B)
        stacked = [np.stack([ex[i] for ex in examples]) if flag else a
                   for i, (a, flag) in enumerate(zip(args, pattern))]
        (got,) = interpret(batched, *stacked)
        tol = 1e-5 if "float32" in (d for _, d in case.types) else 1e-12
        np.testing.assert_allclose(got, expected, rtol=tol, atol=tol, err_msg=str(pattern))


def test_every_registered_primitive_has_a_batching_rule():
    """Leaves have none: no operands, so never batched.  Every core primitive vmap meets
    batches as whole arrays (loop and cond by rules installed from the compiler, which
    batch their body or branches); the default of the structural kind, running once per
    example, is left to primitives of other modules, and refuses those of several
    results."""
    for name, prim in PRIMITIVES.items():
        assert (prim.batch is None) == (prim.kind == "leaf"), name
    core = {n for n, p in PRIMITIVES.items()   # the records of ir/primitives.py
            if p.type_rule.__module__ == "llgrad.ir.primitives"} - {"iota"}  # no operands
    assert {n for n in core if PRIMITIVES[n].batch is batch_rules.per_example} == set()
    for name in ("loop", "cond", "tuple_get"):
        assert PRIMITIVES[name].batch is not batch_rules.per_example, name


def test_a_primitive_without_a_rule_of_its_own_runs_per_example():
    b = Builder()
    x = b.parameter(index=0, type=TensorType((4, 3), "float64"), name="x")
    xs = b.parameter(index=0, type=TensorType((2, 4, 3), "float64"), name="xs")
    batched = batch_rules.per_example(b, b.transpose(x, perm=(1, 0)), [xs], (True,))
    value = RNG.normal(size=(2, 4, 3))
    np.testing.assert_array_equal(interpret(Graph([xs], [batched]), value)[0],
                                  value.transpose(0, 2, 1))


# ----------------------------------------------------------------------------------
# vmap of numpy code, natively, against the loop


def test_elementwise_with_a_shared_argument_broadcast():
    assert_vmap_is_loop(lambda x, y: np.sin(x) * y + 2.0, (0, None),
                        RNG.normal(size=(B, 3, 4)), RNG.normal(size=4))


@pytest.mark.parametrize("axis", [-1, -2, (0, -1), None])
def test_reductions_with_negative_axes(axis):
    x = RNG.normal(size=(B, 3, 4))
    assert_vmap_is_loop(lambda v: v.sum(axis=axis) + v.max(axis=axis) * v.mean(axis=axis),
                        (0,), x)


@pytest.mark.parametrize("in_axes", [(0, None), (None, 0), (0, 0), (1, -1)])
def test_matmul_in_every_batch_placement(in_axes):
    x_shape = {None: (3, 4), 0: (B, 3, 4), 1: (3, B, 4)}[in_axes[0]]
    y_shape = {None: (4, 5), 0: (B, 4, 5), -1: (4, 5, B)}[in_axes[1]]
    assert_vmap_is_loop(lambda a, c: a @ c, in_axes, RNG.normal(size=x_shape),
                        RNG.normal(size=y_shape))


def test_dot_general_with_batch_dimensions_of_its_own():
    x, y = RNG.normal(size=(B, 2, 3, 4)), RNG.normal(size=(2, 4, 5))
    for axes in [(0, None), (0, 0)]:
        yy = y if axes[1] is None else np.stack([y * (k + 1) for k in range(B)])
        assert_vmap_is_loop(lambda a, c: np.einsum("bij,bjk->bik", a, c), axes, x, yy)
    assert_vmap_is_loop(lambda a, c: a @ c, (0, 0), RNG.normal(size=(B, 4)),
                        RNG.normal(size=(B, 4)))


def test_shapes_and_slices():
    def fn(x):
        return np.concatenate([x.reshape(-1)[::2], x.T[1:, :2].ravel(),
                               np.transpose(x)[::-1, 0], np.pad(x, 1)[0]])
    assert_vmap_is_loop(fn, (0,), RNG.normal(size=(B, 3, 4)))


def test_indexing_with_batched_and_shared_indices():
    table = RNG.normal(size=(B, 6, 2))
    idx = RNG.integers(0, 6, size=(B, 4))
    assert_vmap_is_loop(lambda t, i: t[i] * 2.0, (0, 0), table, idx)
    assert_vmap_is_loop(lambda t, i: t[i], (None, 0), table[0], idx)
    assert_vmap_is_loop(lambda t, i: np.take(t, i, axis=1), (0, None), table, idx[0] % 2)


def test_concatenate_where_and_stack_with_shared_operands():
    x, c = RNG.normal(size=(B, 5)), RNG.normal(size=5)
    assert_vmap_is_loop(lambda v, w: np.where(v > w, v, w * 3.0), (0, None), x, c)
    assert_vmap_is_loop(lambda v, w: np.concatenate([w, v, w[:2]]), (0, None), x, c)
    assert_vmap_is_loop(lambda v, w: np.stack([v, w], axis=-1), (0, None), x, c)


def test_cumulative_ops_softmax_and_logsumexp():
    x = RNG.normal(size=(B, 3, 4))
    assert_vmap_is_loop(lambda v: np.cumsum(v, axis=-1) + np.cumprod(v, axis=0), (0,), x)
    assert_vmap_is_loop(lambda v: lsp.softmax(v, axis=-1) + lsp.logsumexp(v, axis=0), (0,), x)


def test_in_axes_none_one_negative_and_out_axes_one():
    x = RNG.normal(size=(3, B, 4))
    y = RNG.normal(size=(4, B))
    assert_vmap_is_loop(lambda a, c: a * c, (1, -1), x, y, out_axes=1)
    assert_vmap_is_loop(lambda a, c: (a * c).sum(axis=0), (1, -1), x, y, out_axes=-1)


def test_pytree_arguments_and_results_with_prefix_axes():
    params = {"w": RNG.normal(size=(4, 2)), "b": RNG.normal(size=(B, 2))}
    xs = RNG.normal(size=(B, 4))

    def fn(p, x):
        h = x @ p["w"] + p["b"]
        return {"h": h, "sum": h.sum()}
    got = llgrad.vmap(fn, in_axes=({"w": None, "b": 0}, 0), out_axes={"h": 1, "sum": 0})(
        params, xs)
    for k in range(B):
        one = fn({"w": params["w"], "b": params["b"][k]}, xs[k])
        np.testing.assert_allclose(got["h"][:, k], one["h"], rtol=1e-13)
        np.testing.assert_allclose(got["sum"][k], one["sum"], rtol=1e-13)


def test_an_output_independent_of_the_batch_is_broadcast_or_kept():
    x, c = RNG.normal(size=(B, 3)), RNG.normal(size=3)
    same, kept = llgrad.vmap(lambda v, w: (w * 2.0, w + 1.0), (0, None), (0, None))(x, c)
    np.testing.assert_array_equal(same, np.stack([c * 2.0] * B))
    np.testing.assert_array_equal(kept, c + 1.0)


def test_vmap_of_vmap_is_a_double_loop():
    x, y = RNG.normal(size=(B, 2, 4)), RNG.normal(size=(2, 4))

    def fn(a, c):
        return np.tanh(a * c).sum()
    got = llgrad.vmap(llgrad.vmap(fn, in_axes=(0, 0)), in_axes=(0, None))(x, y)
    expected = np.array([[fn(x[i, j], y[j]) for j in range(2)] for i in range(B)])
    np.testing.assert_allclose(got, expected, rtol=1e-13)


def test_jit_of_vmap_and_vmap_of_jit():
    x = RNG.normal(size=(B, 4))
    fn = llgrad.jit(lambda v: np.exp(v) / np.exp(v).sum())
    np.testing.assert_allclose(llgrad.jit(llgrad.vmap(fn))(x), looped(fn, (0,), x), rtol=1e-13)


def _rnn(h0, xs, w):
    def step(h, x):
        h = np.tanh(w @ h + x)
        return h, h.sum()
    return llgrad.scan(step, h0, xs)


@pytest.mark.parametrize("in_axes", [(0, 0, None), (None, 0, None), (0, None, None),
                                     (None, None, 0)])
def test_vmap_of_scan_equals_the_loop(in_axes):
    """Carried values batched from the start or only through the body (a shared initial
    carry meeting batched rows), shared xs, batched weights."""
    shapes = [(4,), (6, 4), (4, 4)]
    args = [RNG.normal(size=(B,) + s if ax == 0 else s) / 2 for s, ax in zip(shapes, in_axes)]
    got = llgrad.vmap(_rnn, in_axes=in_axes)(*args)
    for k in range(2):
        np.testing.assert_allclose(got[k], looped(lambda *a: _rnn(*a)[k], in_axes, *args),
                                   rtol=1e-13, atol=1e-14)


def test_vmap_of_fori_loop_equals_the_loop():
    def horner(x):
        return llgrad.fori_loop(0, 4, lambda i, c: c * x + 1.0, x * 0.0)
    assert_vmap_is_loop(horner, (0,), RNG.normal(size=(B, 2)))


def _branchy(p, x):
    return llgrad.cond(p > 0, lambda v: np.sin(v) * 2.0, lambda v: np.cos(v).sum() + v, x)


@pytest.mark.parametrize("in_axes", [(0, 0), (None, 0), (0, None)])
def test_vmap_of_cond_with_batched_or_shared_predicate(in_axes):
    p = np.array([1.0, -1.0, 2.0]) if in_axes[0] == 0 else -1.0
    x = RNG.normal(size=(B, 3) if in_axes[1] == 0 else 3)
    assert_vmap_is_loop(_branchy, in_axes, p, x)


def test_vmap_of_switch_with_batched_indices_clamped_as_switch():
    def pick(i, x):
        return llgrad.switch(i, [lambda v: v + 1.0, lambda v: v * 2.0, lambda v: -v], x)
    assert_vmap_is_loop(pick, (0, 0), np.array([0, 7, -2]), RNG.normal(size=(B, 2)))


# ----------------------------------------------------------------------------------
# gradients


def test_per_example_gradients_equal_a_loop_of_grad(backend):
    params, xs, ys, _ = small_mlp(3)
    grad = llgrad.grad(mlp_loss)
    per_example = llgrad.vmap(grad, in_axes=(None, 0, 0), backend=backend)(
        params, xs[:, None], ys[:, None])
    for k in range(len(xs)):
        one = grad(params, xs[k:k + 1], ys[k:k + 1])
        for name in params:
            np.testing.assert_allclose(per_example[name][k], one[name], rtol=1e-12,
                                       atol=1e-14)


def test_grad_of_vmap_equals_finite_differences():
    w = RNG.normal(size=(4, 3))
    xs = RNG.normal(size=(B, 4))

    def loss(w):
        return np.sum(llgrad.vmap(lambda x: np.tanh(x @ w).sum() ** 2)(xs))

    def plain(w):
        return sum(np.tanh(x @ w).sum() ** 2 for x in xs)
    got = llgrad.grad(loss)(w)
    eps, expected = 1e-6, np.zeros_like(w)
    for i in np.ndindex(w.shape):
        d = np.zeros_like(w)
        d[i] = eps
        expected[i] = (plain(w + d) - plain(w - d)) / (2 * eps)
    np.testing.assert_allclose(got, expected, rtol=1e-7, atol=1e-8)


def test_per_example_gradients_through_scan_and_cond():
    w = RNG.normal(size=(4, 4)) / 2
    h0, xs, ps = RNG.normal(size=4), RNG.normal(size=(B, 6, 4)), np.array([1.0, -1.0, 0.5])

    def loss(w, xs, p):
        h, ys = _rnn(h0, xs, w)
        return _branchy(p, h).sum() + ys.sum()
    grad = llgrad.grad(loss)
    got = llgrad.vmap(grad, in_axes=(None, 0, 0))(w, xs, ps)
    np.testing.assert_allclose(got, np.stack([grad(w, xs[k], ps[k]) for k in range(B)]),
                               rtol=1e-12, atol=1e-14)


def test_second_order_grad_of_vmap_of_grad_equals_finite_differences():
    xs = RNG.normal(size=(B, 3))

    def inner(x, w):
        return np.sum(np.tanh(w * x))

    def outer(w):
        return llgrad.vmap(llgrad.grad(inner), in_axes=(0, None))(xs, w).sum()

    def plain(w):   # the same by hand: d inner / dx = w (1 - tanh(w x)^2)
        return sum(np.sum(w * (1 - np.tanh(w * x) ** 2)) for x in xs)
    eps = 1e-6
    assert llgrad.grad(outer)(0.7) == pytest.approx(
        (plain(0.7 + eps) - plain(0.7 - eps)) / (2 * eps), rel=1e-7)


@pytest.mark.parametrize("transform", [llgrad.hessian, llgrad.jacrev])
def test_vmap_of_hessian_and_jacobian_of_vmap(transform):
    xs = RNG.normal(size=(B, 3))

    def fn(x):
        return np.sum(np.sin(x) * x)
    if transform is llgrad.hessian:
        np.testing.assert_allclose(llgrad.vmap(transform(fn))(xs),
                                   looped(transform(fn), (0,), xs), rtol=1e-13)
    else:
        got = transform(llgrad.vmap(fn))(xs)
        expected = np.stack([np.eye(B)[k][:, None] * (np.cos(xs) * xs + np.sin(xs))
                             for k in range(B)])
        np.testing.assert_allclose(got, expected, rtol=1e-13)


def _numeric_jacobian(fn, x, eps=1e-6):
    cols = [(fn(x + eps * e) - fn(x - eps * e)) / (2 * eps)
            for e in np.eye(x.size).reshape((x.size,) + x.shape)]
    return np.moveaxis(np.array(cols), 0, -1).reshape(np.shape(fn(x)) + x.shape)


def _vector_fn(x):
    return np.concatenate([(np.sin(x) * x[::-1]).ravel(), np.sum(x ** 2, keepdims=True)[0]]
                          ).reshape(-1, 1)


@pytest.mark.parametrize("jacobian", [llgrad.jacfwd, llgrad.jacrev])
def test_jacobians_equal_finite_differences(jacobian):
    x = RNG.normal(size=(2, 3))
    np.testing.assert_allclose(jacobian(_vector_fn)(x), _numeric_jacobian(_vector_fn, x),
                               rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("jacobian", [llgrad.jacfwd, llgrad.jacrev])
def test_jacobians_of_pytrees(jacobian):
    p = {"a": RNG.normal(size=3), "b": RNG.normal(size=(2, 2))}

    def fn(p):
        return {"u": p["a"] * p["b"].sum(), "v": np.tanh(p["b"]) * p["a"][0]}
    jac = jacobian(fn)(p)
    for out in ("u", "v"):
        for leaf in ("a", "b"):
            def part(v, out=out, leaf=leaf):
                return np.asarray(fn({**p, leaf: v})[out])
            np.testing.assert_allclose(jac[out][leaf], _numeric_jacobian(part, p[leaf]),
                                       rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("jacobian", [llgrad.jacfwd, llgrad.jacrev, llgrad.hessian])
def test_jacobians_with_an_empty_leaf(jacobian):
    def fn(p):
        return np.sin(p["a"]).sum() + p["b"].sum()
    got = jacobian(fn)({"a": np.array([0.0, 1.0]), "b": np.ones(0)})
    if jacobian is llgrad.hessian:
        np.testing.assert_allclose(got["a"]["a"], -np.diag(np.sin([0.0, 1.0])), atol=1e-15)
        assert got["a"]["b"].shape == (2, 0) and got["b"]["b"].shape == (0, 0)
    else:
        np.testing.assert_allclose(got["a"], np.cos([0.0, 1.0]), rtol=1e-15)
        assert got["b"].shape == (0,)


def test_hessian_equals_finite_differences_of_the_gradient():
    x = RNG.normal(size=4)

    def fn(v):
        return np.sum(np.sin(v) * v[::-1]) + np.prod(v[:2]) ** 2
    grad = llgrad.grad(fn)
    np.testing.assert_allclose(llgrad.hessian(fn)(x), _numeric_jacobian(grad, x),
                               rtol=1e-6, atol=1e-8)


def test_jacobian_graph_does_not_grow_with_the_number_of_elements():
    """One batched pass over the basis: the traced graph is the same size for 4 and for
    40 inputs (it was one jvp or pullback per element)."""
    def fn(x):
        return np.tanh(x) * x.sum()
    for jacobian in (llgrad.jacfwd, llgrad.jacrev):
        sizes = {len(jacobian(fn).trace(np.ones(n)).ir) for n in (4, 40)}
        assert len(sizes) == 1, jacobian


# ----------------------------------------------------------------------------------
# errors


def _per_example_sum(x, y):
    return (x * y).sum()


def test_different_batch_sizes_name_the_function_and_the_shapes():
    with pytest.raises(llgrad.ShapeError, match=r"_per_example_sum.*x of shape \(3, 2\).*"
                                                r"y of shape \(4, 2\)"):
        llgrad.vmap(_per_example_sum)(np.ones((3, 2)), np.ones((4, 2)))


def test_bad_axes_are_clear_errors():
    with pytest.raises(llgrad.ShapeError, match="in_axes of x.*axis 2 is out of range"):
        llgrad.vmap(_per_example_sum, in_axes=(2, 0))(np.ones((3, 2)), np.ones((3, 2)))
    with pytest.raises(llgrad.ShapeError, match="maps no argument"):
        llgrad.vmap(_per_example_sum, in_axes=None)(np.ones(3), np.ones(3))
    with pytest.raises(llgrad.ShapeError, match="in_axes.*does not match"):
        llgrad.vmap(_per_example_sum, in_axes=(0, 0, 0))(np.ones(3), np.ones(3))
    with pytest.raises(llgrad.ShapeError, match="out_axes is None.*depends on the batch"):
        llgrad.vmap(_per_example_sum, out_axes=None)(np.ones(3), np.ones(3))


def test_a_primitive_of_several_results_without_a_rule_is_refused_clearly():
    b = Builder()
    x = b.parameter(index=0, type=TensorType((), "float64"), name="x")
    node = b.loop(x, body=looped_graph().nodes[1].attrs["body"], trip_count=2, n_carried=1)
    with pytest.raises(llgrad.UnsupportedError, match="vmap of loop"):
        batch_rules.per_example(b, node, [x], (True,))


def test_the_batched_ir_prints_with_the_batch_in_front():
    text = str(llgrad.vmap(lambda v: np.sin(v).sum()).trace(np.ones((5, 3))).ir)
    assert "f64[5,3]" in text and "reduce_sum" in text
