"""numpy's construction, stacking, splitting and shape functions on traced arrays
(``compiler/frontend/numpy_shapes.py``).  Each case is a plain numpy function, and
numpy running it is the oracle: the values, dtypes and shapes llgrad's native code
gives, the interpreter agreeing with native code, and the gradient of
sum(w · f(x)) against central differences.  Then: numpy's errors, the refusals, and
second derivatives."""
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from helpers import central_differences

import llgrad
import llgrad.numpy as lnp
from llgrad.ir.errors import UnsupportedError


@dataclass
class Case:
    name: str
    fn: Callable                # of numpy arrays, written with plain np.* calls
    shapes: tuple               # of the arguments
    dtype: str = "float64"      # of every argument
    grad: bool = True           # checked against central differences

    @property
    def id(self):
        return f"{self.name}{list(self.shapes)}{'' if self.dtype == 'float64' else self.dtype}"


def _args(case, seed=0):
    rng = np.random.default_rng(seed)
    if case.dtype == "bool":
        return [rng.random(s) < 0.5 for s in case.shapes]
    if case.dtype == "int64":
        return [rng.integers(-4, 5, s) for s in case.shapes]
    return [rng.standard_normal(s).astype(case.dtype) for s in case.shapes]


def _cross2(a, b, **kw):
    """np.cross of 2-vectors, without numpy's (and llgrad's) deprecation warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return np.cross(a, b, **kw)


COORDS5 = np.array([0.0, 0.5, 1.5, 1.75, 3.0])
COORDS3 = np.array([0.0, 2.0, 2.5])


def _cases():
    c = []

    def add(name, fn, *shapes, **kw):
        c.append(Case(name, fn, shapes, **kw))

    # construction
    add("array_like", lambda a, b: np.array([a, b], like=a), (3,), (3,))
    add("lnp.array_nested", lambda a, b: lnp.array([[a, b], (b, a)]), (), ())
    add("lnp.array_mixed_ndmin", lambda a: lnp.array([a, [1.0, 2.0, 3.0]], ndmin=3), (3,))
    add("lnp.asarray_dtype", lambda a: lnp.asarray((a, 2 * a), dtype=np.float32), (2,),
        grad=False)
    add("append", np.append, (2, 3), (4,))
    add("append_axis", lambda a, b: np.append(a, b, axis=-1), (2, 3), (2, 1))
    add("append_list", lambda a: np.append(a, [a[0], 1.0]), (3,))
    add("append_empty", np.append, (0,), (2,))
    add("lnp.mean_list", lambda a, b: lnp.mean([a, b]), (2, 3), (2, 3))
    add("lnp.sum_list_axis0", lambda a, b: lnp.sum([a, b], axis=0), (3,), (3,))
    add("lnp.max_list_axis", lambda a, b: lnp.max((a, 2 * b), axis=-1), (2,), (2,))
    # stacking
    for shapes in [((3,), (2, 3)), ((), ()), ((0, 3), (2, 3))]:
        add("vstack", lambda *xs: np.vstack(xs), *shapes)
    add("row_stack", lambda a, b: np.vstack([a, b], dtype=np.float64), (2,), (2,))
    for shapes in [((2,), (3,)), ((2, 3), (2, 0), (2, 1)), ((), (2,))]:
        add("hstack", lambda *xs: np.hstack(xs), *shapes)
    for shapes in [((2,), (2,)), ((2, 3), (2, 3, 2)), ((), ())]:
        add("dstack", lambda *xs: np.dstack(xs), *shapes)
    for shapes in [((3,), (3, 2)), ((), ()), ((0,), (0, 2))]:
        add("column_stack", lambda *xs: np.column_stack(xs), *shapes)
    for f in (np.atleast_1d, np.atleast_2d, np.atleast_3d):
        add(f.__name__, lambda a, b, c, d, f=f: f(a, b, c, d), (), (4,), (2, 3), (2, 1, 2, 1))
        add(f.__name__ + "_one", lambda a, f=f: f(a), (3,))
    # splitting
    add("split_sections", lambda a: np.split(a, 3), (6,))
    add("split_indices_neg_axis", lambda a: np.split(a, [1, 3], axis=-1), (4, 6))
    add("split_clamped", lambda a: np.split(a, [2, -1, 10]), (6,))
    add("split_empty", lambda a: np.split(a, 2), (0, 4))
    add("array_split", lambda a: np.array_split(a, 3), (7,))
    add("array_split_axis", lambda a: np.array_split(a, 4, axis=1), (2, 5))
    add("array_split_more_than_n", lambda a: np.array_split(a, 4), (2,))
    add("hsplit_2d", lambda a: np.hsplit(a, 2), (2, 4))
    add("hsplit_1d", lambda a: np.hsplit(a, [2]), (6,))
    add("vsplit", lambda a: np.vsplit(a, [1, 3]), (4, 2))
    add("dsplit", lambda a: np.dsplit(a, 2), (1, 2, 4))
    # repeating
    add("repeat", lambda a: np.repeat(a, 2), (3,))
    add("repeat_per_entry", lambda a: np.repeat(a, [1, 0, 2], axis=1), (2, 3))
    add("repeat_neg_axis", lambda a: np.repeat(a, 3, axis=-2), (2, 3))
    add("repeat_rank0", lambda a: np.repeat(a, 4), ())
    add("repeat_zero", lambda a: np.repeat(a, 0, axis=0), (2, 2))
    add("repeat_one_count", lambda a: np.repeat(a, [2], axis=0), (2, 3))
    add("repeat_empty", lambda a: np.repeat(a, 2, axis=0), (0, 3))
    add("repeat_method", lambda a: a.repeat(2, axis=1), (2, 2))
    add("tile", lambda a: np.tile(a, 2), (3,))
    add("tile_more_reps", lambda a: np.tile(a, (2, 1, 2)), (2, 3))
    add("tile_rank0", lambda a: np.tile(a, 3), ())
    add("tile_fewer_reps", lambda a: np.tile(a, 2), (2, 1, 2))
    add("tile_zero", lambda a: np.tile(a, (1, 0)), (2, 3))
    for shapes in [((2,), (3,)), ((2, 2), (3, 1)), ((), (2, 3)), ((2, 3), ()),
                   ((2, 1, 2), (3,)), ((0, 2), (2, 2))]:
        add("kron", np.kron, *shapes)
    # rearranging
    add("roll", lambda a: np.roll(a, 2), (5,))
    add("roll_negative", lambda a: np.roll(a, -7), (5,))
    add("roll_axis", lambda a: np.roll(a, 1, axis=-1), (3, 4))
    add("roll_axes", lambda a: np.roll(a, (1, 2), axis=(0, 1)), (3, 4))
    add("roll_flat", lambda a: np.roll(a, 5), (3, 4))
    add("roll_same_axis_twice", lambda a: np.roll(a, (1, 1), axis=(1, 1)), (3, 4))
    add("roll_rank0", lambda a: np.roll(a, 3), ())
    add("roll_empty", lambda a: np.roll(a, 1, axis=0), (0, 3))
    add("flip", np.flip, (4,))
    add("flip_axis", lambda a: np.flip(a, axis=-1), (3, 4))
    add("flip_axes", lambda a: np.flip(a, axis=(0, 2)), (2, 3, 4))
    add("flip_rank0", np.flip, ())
    add("flip_empty", np.flip, (0, 3))
    add("flip_size1", lambda a: np.flip(a, 0), (1, 3))
    add("flipud", np.flipud, (3, 2))
    add("fliplr", np.fliplr, (2, 3))
    add("rot90", np.rot90, (2, 3))
    for k in (2, -1, 0, 1.5):
        add(f"rot90_k{k}", lambda a, k=k: np.rot90(a, k), (2, 3))
    add("rot90_axes", lambda a: np.rot90(a, 3, axes=(2, 0)), (2, 3, 4))
    add("moveaxis", lambda a: np.moveaxis(a, 0, -1), (2, 3, 4))
    add("moveaxis_several", lambda a: np.moveaxis(a, (0, 1), (-1, 0)), (2, 3, 4))
    add("rollaxis", lambda a: np.rollaxis(a, 2), (2, 3, 4))
    add("rollaxis_start_end", lambda a: np.rollaxis(a, 0, 3), (2, 3, 4))
    add("rollaxis_negative", lambda a: np.rollaxis(a, -1, -2), (2, 3, 4))
    add("rollaxis_noop", lambda a: np.rollaxis(a, 1, 1), (2, 3, 4))
    # pad
    add("pad", lambda a: np.pad(a, 2), (3,))
    add("pad_pairs", lambda a: np.pad(a, ((1, 0), (2, 1))), (2, 3))
    add("pad_values", lambda a: np.pad(a, 1, constant_values=((-1, 2), (3, 4.5))), (2, 3))
    add("pad_empty", lambda a: np.pad(a, 1, constant_values=7), (0, 2))
    add("pad_rank0", lambda a: np.pad(a, 2, mode="edge"), ())
    add("pad_dict", lambda a: np.pad(a, {1: (1, 2)}), (2, 3))
    add("pad_int_constant", lambda a: np.pad(a, (1, 2), constant_values=1.5), (3,),
        dtype="int64", grad=False)
    add("pad_edge", lambda a: np.pad(a, (2, 3), mode="edge"), (3,))
    add("pad_edge_2d", lambda a: np.pad(a, ((1, 1), (0, 2)), mode="edge"), (2, 3))
    add("pad_edge_size1", lambda a: np.pad(a, 3, mode="edge"), (1, 2))
    add("pad_reflect", lambda a: np.pad(a, 2, mode="reflect"), (4,))
    add("pad_reflect_wide", lambda a: np.pad(a, 7, mode="reflect"), (4,))
    add("pad_reflect_2d", lambda a: np.pad(a, ((1, 2), (2, 0)), mode="reflect"), (2, 3))
    add("pad_reflect_size1", lambda a: np.pad(a, ((2, 2), (0, 0)), mode="reflect"), (1, 3))
    add("pad_symmetric", lambda a: np.pad(a, (4, 1), mode="symmetric"), (3,))
    add("pad_wrap", lambda a: np.pad(a, (5, 2), mode="wrap"), (3,))
    add("pad_wrap_2d", lambda a: np.pad(a, 2, mode="wrap"), (2, 3))
    # differences
    add("diff", np.diff, (5,))
    add("diff_n2", lambda a: np.diff(a, 2), (5,))
    add("diff_axis0", lambda a: np.diff(a, axis=0), (3, 4))
    add("diff_n3_neg_axis", lambda a: np.diff(a, 3, axis=-1), (3, 4))
    add("diff_past_length", lambda a: np.diff(a, 6), (4,))
    add("diff_prepend_append", lambda a: np.diff(a, prepend=0.5, append=[1.0, 2.0]), (3,))
    add("diff_prepend_traced", lambda a, b: np.diff(a, axis=1, prepend=b), (2, 3), (2, 1))
    add("diff_n0_rank0", lambda a: np.diff(a, 0), ())
    add("diff_bool", np.diff, (5,), dtype="bool", grad=False)
    add("gradient", np.gradient, (5,))
    add("gradient_spacing", lambda a: np.gradient(a, 0.5), (5,))
    add("gradient_coordinates", lambda a: np.gradient(a, COORDS5), (5,))
    add("gradient_2d", np.gradient, (4, 5))
    add("gradient_axis", lambda a: np.gradient(a, 2.0, axis=-1), (4, 5))
    add("gradient_edge2", lambda a: np.gradient(a, edge_order=2), (3, 4))
    add("gradient_coordinates_edge2", lambda a: np.gradient(a, COORDS5, edge_order=2), (5,))
    add("gradient_two_points", np.gradient, (2,))
    add("gradient_axes_spacings", lambda a: np.gradient(a, 1.5, COORDS3, axis=(1, 0)), (3, 4))
    add("gradient_int", np.gradient, (4,), dtype="int64", grad=False)
    add("gradient_float32", lambda a: np.gradient(a, 0.5), (4,), dtype="float32", grad=False)
    # triangles and diagonals
    for f in (np.tril, np.triu):
        for k in (0, -1, 2):
            add(f"{f.__name__}_k{k}", lambda a, f=f, k=k: f(a, k), (3, 4))
        add(f.__name__ + "_batch", f, (2, 3, 3))
        add(f.__name__ + "_1d", f, (3,))
        add(f.__name__ + "_empty", f, (0, 3))
        add(f.__name__ + "_bool", f, (3, 3), dtype="bool", grad=False)
    for shape, k in [((3,), 0), ((3,), 1), ((3,), -2), ((3, 4), 0), ((3, 4), 2),
                     ((4, 3), -1), ((3, 4), 5), ((1,), 0)]:
        add(f"diag_k{k}", lambda a, k=k: np.diag(a, k), shape)
    add("diagonal", np.diagonal, (3, 4))
    add("diagonal_axes", lambda a: np.diagonal(a, 1, axis1=-1, axis2=0), (2, 3, 4))
    add("diagonal_below", lambda a: np.diagonal(a, -2), (3, 4))
    add("diagonal_empty", lambda a: np.diagonal(a, 3), (3, 3))
    add("diagonal_method", lambda a: a.diagonal(1), (3, 3))
    add("trace", np.trace, (3, 4))
    add("trace_axes", lambda a: np.trace(a, -1, axis1=1, axis2=2), (2, 3, 4))
    add("trace_method", lambda a: a.trace(), (2, 2))
    add("trace_bool", np.trace, (3, 3), dtype="bool", grad=False)
    # products
    add("cross", np.cross, (3,), (3,))
    add("cross_broadcast", np.cross, (2, 3), (4, 1, 3))
    add("cross_axis", lambda a, b: np.cross(a, b, axis=0), (3, 2), (3, 2))
    add("cross_axes", lambda a, b: np.cross(a, b, axisa=0, axisb=-1, axisc=1), (3, 2, 4),
        (4, 3))
    add("cross_2x2", _cross2, (4, 2), (2,))
    add("cross_2x3", _cross2, (2,), (3,))
    add("cross_3x2", lambda a, b: _cross2(a, b, axisc=0), (2, 3), (2,))
    add("cross_int", np.cross, (3,), (3,), dtype="int64", grad=False)
    add("inner", np.inner, (3,), (3,))
    add("inner_matrices", np.inner, (2, 3), (4, 3))
    add("inner_scalar", np.inner, (), (2, 3))
    add("inner_empty", np.inner, (2, 0), (3, 0))
    add("inner_int", np.inner, (2, 3), (3,), dtype="int64", grad=False)
    add("inner_bool", np.inner, (2, 3), (3,), dtype="bool", grad=False)
    return c


CASES = _cases()
GRAD_CASES = [c for c in CASES if c.grad]


def _leaves(out):
    return [leaf for part in out for leaf in _leaves(part)] if isinstance(
        out, (list, tuple)) else [out]


def _assert_matches(got, expected, rtol=1e-12):
    got, expected = _leaves(got), _leaves(expected)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        g, e = np.asarray(g), np.asarray(e)
        assert (g.dtype, g.shape) == (e.dtype, e.shape)
        np.testing.assert_allclose(g, e, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_native_code_gives_numpys_values_dtypes_and_shapes(case):
    args = _args(case)
    _assert_matches(llgrad.jit(case.fn)(*args), case.fn(*args),
                    rtol=1e-6 if "float32" in (case.dtype, case.name[-7:]) else 1e-12)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_the_interpreter_agrees_with_native_code(case):
    args = _args(case, seed=1)
    _assert_matches(llgrad.jit(case.fn, backend="interpret")(*args),
                    llgrad.jit(case.fn)(*args))


def _weighted_sum(case, args):
    """sum(w · f(x)) over every output, with random weights of each output's shape."""
    rng = np.random.default_rng(2)
    weights = [rng.standard_normal(np.shape(leaf)) for leaf in _leaves(case.fn(*args))]

    def loss(xs):
        return sum(np.sum(leaf * w) for leaf, w in zip(_leaves(case.fn(*xs)), weights))
    return loss


@pytest.mark.parametrize("case", GRAD_CASES, ids=lambda c: c.id)
def test_gradients_match_central_differences(case):
    args = _args(case, seed=3)
    loss = _weighted_sum(case, args)
    grads = llgrad.grad(loss)(tuple(args))
    graph = llgrad.jit(loss).trace(tuple(args)).ir
    for k, g in enumerate(grads):
        np.testing.assert_allclose(g, central_differences(graph, args, k, 1e-6),
                                   rtol=1e-6, atol=1e-8)


# ----------------------------------------------------------------------------------
# second derivatives

SECOND_ORDER = {
    "cross_roll": lambda x: np.cross(x, np.roll(x, 1)) ** 2,
    "kron_diag": lambda x: np.kron(x, np.diag(x)),
    "diff_reflect_pad": lambda x: np.diff(np.pad(x, 2, mode="reflect")) ** 3,
    "gradient_flip_tile": lambda x: np.gradient(np.flip(np.tile(x, 2))) * x[0],
}


@pytest.mark.parametrize("name", sorted(SECOND_ORDER))
def test_hessians_match_central_differences_of_the_gradient(name):
    rng = np.random.default_rng(4)
    x = rng.standard_normal(3)
    w = rng.standard_normal(np.shape(SECOND_ORDER[name](x)))

    def loss(v):
        return np.sum(SECOND_ORDER[name](v) * w)
    grad, eps = llgrad.grad(loss), 1e-5
    columns = [(grad(x + eps * e) - grad(x - eps * e)) / (2 * eps) for e in np.eye(3)]
    np.testing.assert_allclose(llgrad.hessian(loss)(x), np.stack(columns, axis=1),
                               rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------------
# numpy's errors, raised as numpy raises them (ValueError or TypeError)

ERRORS = {
    "split_unequal": (lambda a: np.split(a, 2), (5,), ValueError),
    "array_split_zero_sections": (lambda a: np.array_split(a, 0), (5,), ValueError),
    "hsplit_rank0": (lambda a: np.hsplit(a, 1), (), ValueError),
    "vsplit_rank1": (lambda a: np.vsplit(a, 1), (3,), ValueError),
    "dsplit_rank2": (lambda a: np.dsplit(a, 1), (2, 3), ValueError),
    "flipud_rank0": (np.flipud, (), ValueError),
    "fliplr_rank1": (np.fliplr, (3,), ValueError),
    "flip_axis_out_of_range": (lambda a: np.flip(a, 2), (3, 4), ValueError),
    "rot90_same_axes": (lambda a: np.rot90(a, axes=(0, 0)), (2, 3), ValueError),
    "rot90_axes_out_of_range": (lambda a: np.rot90(a, axes=(0, 2)), (2, 3), ValueError),
    "rot90_three_axes": (lambda a: np.rot90(a, axes=(0, 1, 2)), (2, 3, 4), ValueError),
    "moveaxis_lengths": (lambda a: np.moveaxis(a, (0, 1), 0), (2, 3), ValueError),
    "moveaxis_repeated": (lambda a: np.moveaxis(a, (0, 0), (0, 1)), (2, 3), ValueError),
    "rollaxis_start": (lambda a: np.rollaxis(a, 0, 4), (2, 3), ValueError),
    "roll_2d_shift": (lambda a: np.roll(a, [[1]], axis=0), (2, 3), ValueError),
    "pad_edge_of_empty": (lambda a: np.pad(a, 1, mode="edge"), (0, 2), ValueError),
    "pad_negative": (lambda a: np.pad(a, -1), (3,), ValueError),
    "pad_float_width": (lambda a: np.pad(a, 1.5), (3,), TypeError),
    "pad_keyword_of_other_mode": (lambda a: np.pad(a, 1, mode="edge", constant_values=1),
                                  (3,), ValueError),
    "diff_negative_order": (lambda a: np.diff(a, -1), (3,), ValueError),
    "diff_rank0": (np.diff, (), ValueError),
    "gradient_too_short": (lambda a: np.gradient(a, edge_order=2), (2,), ValueError),
    "gradient_edge_order3": (lambda a: np.gradient(a, edge_order=3), (4,), ValueError),
    "gradient_spacings_count": (lambda a: np.gradient(a, 1.0, 2.0), (4,), TypeError),
    "gradient_coordinates_length": (lambda a: np.gradient(a, COORDS3), (4,), ValueError),
    "diag_rank3": (np.diag, (2, 2, 2), ValueError),
    "diagonal_rank1": (np.diagonal, (3,), ValueError),
    "diagonal_same_axes": (lambda a: np.diagonal(a, 0, 1, 1), (2, 3), ValueError),
    "cross_dimension4": (lambda a: np.cross(a, a), (4,), ValueError),
    "inner_not_aligned": (lambda a: np.inner(a, a[:2]), (3,), ValueError),
    "repeat_negative": (lambda a: np.repeat(a, -1), (3,), ValueError),
    "repeat_counts_length": (lambda a: np.repeat(a, [1, 2]), (3,), ValueError),
    "tile_negative": (lambda a: np.tile(a, -1), (3,), ValueError),
}


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_numpys_errors_are_raised_as_numpy_raises_them(name):
    fn, shape, error = ERRORS[name]
    x = np.ones(shape)
    with pytest.raises(error):
        fn(x)
    with pytest.raises(error):
        llgrad.jit(fn)(x)


# ----------------------------------------------------------------------------------
# what numpy does not hand to llgrad, and what llgrad does not do

@pytest.mark.parametrize("fn", [
    lambda a, b: np.array([a, b]),
    lambda a, b: np.asarray([a, b]),
    lambda a, b: np.mean([a, b]),
    lambda a, b: np.sum([a, b], axis=0),
], ids=["np.array", "np.asarray", "np.mean", "np.sum"])
def test_numpy_converting_a_list_of_traced_arrays_is_refused_naming_np_stack(fn):
    with pytest.raises(UnsupportedError, match="np.stack"):
        llgrad.jit(fn)(np.ones(3), np.zeros(3))


@pytest.mark.parametrize("fn", [lambda a, b: np.r_[a, b], lambda a, b: np.c_[a, b]],
                         ids=["r_", "c_"])
def test_np_r_and_c_are_refused_naming_np_concatenate(fn):
    with pytest.raises(UnsupportedError, match="np.concatenate"):
        llgrad.jit(fn)(np.ones(3), np.zeros(3))


@pytest.mark.parametrize("fn", [
    lambda a, n: np.repeat(a, n),
    lambda a, n: np.split(a, n),
    lambda a, n: np.tile(a, n),
    lambda a, n: np.roll(a, n),
    lambda a, n: np.pad(a, n),
    lambda a, n: np.gradient(a, n),
], ids=["repeat", "split", "tile", "roll", "pad", "gradient"])
def test_a_traced_count_width_or_spacing_is_refused(fn):
    with pytest.raises(UnsupportedError, match="static"):
        llgrad.jit(fn)(np.ones(4), np.int64(2))


@pytest.mark.parametrize("kwargs", [{"mode": "mean"}, {"mode": "linear_ramp"},
                                    {"mode": "reflect", "reflect_type": "odd"}])
def test_pad_modes_other_than_index_maps_and_constants_are_refused(kwargs):
    with pytest.raises(UnsupportedError, match="pad"):
        llgrad.jit(lambda a: np.pad(a, 1, **kwargs))(np.ones(3))


def test_two_vector_cross_products_warn_as_numpy_does():
    with pytest.warns(DeprecationWarning, match="2-dimensional vectors"):
        llgrad.jit(np.cross)(np.ones(2), np.ones(2))


def test_llgrad_numpy_exports_every_function_of_the_module():
    for name in ("array", "asarray", "asanyarray", "append", "vstack", "row_stack", "hstack",
                 "dstack", "column_stack", "atleast_1d", "atleast_2d", "atleast_3d", "split",
                 "array_split", "hsplit", "vsplit", "dsplit", "repeat", "tile", "kron", "roll",
                 "flip", "flipud", "fliplr", "rot90", "moveaxis", "rollaxis", "pad", "diff",
                 "gradient", "tril", "triu", "diag", "diagonal", "trace", "cross", "inner"):
        assert name in lnp.__all__, name
    assert np.array_equal(lnp.vstack([np.ones(2), np.zeros(2)]), np.vstack([np.ones(2),
                                                                             np.zeros(2)]))
