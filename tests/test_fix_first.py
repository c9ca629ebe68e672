"""The five wrong answers of issue 19's "Fix first", each against an independent oracle.

1. pow at 0: its partials are exact where x ** y is constant (sympy's limits, the
   analytic derivative, central differences), in reverse and forward mode, second
   derivatives and both backends.
2. std and var over any axis length and ddof (central differences of numpy's own
   np.std / np.var), 0 over one element; numpy's own value where ddof >= n.
3. numpy's keywords on every function of the numpy table (numpy's signature says which;
   numpy computes the value), and a clear llgrad error where llgrad does not follow one.
4. a transformation called on constants inside a trace, closing over its Tracers
   (the analytic derivative, central differences of the plain numpy function).
5. np.einsum's sublist form (numpy's values, central differences).
"""
import inspect

import numpy as np
import pytest
import sympy as sp

import llgrad
import llgrad.numpy as lnp
from llgrad.check import numerical_grad
from llgrad.compiler.frontend.numpy_ops import TABLE

R = np.random.default_rng(19)

# ----------------------------------------------------------------------------------
# 1. pow at x = 0

X, Y = sp.symbols("x y", positive=True)


def _limit_at_zero(partial, y):
    """sympy's limit of a partial of x ** y as x -> 0+ at this y (0 is where the
    function is constant, in x for y = 0 and in y for y > 0)."""
    return float(sp.limit(partial.subs(Y, sp.nsimplify(y)), X, 0, "+"))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("y", [0.0, 1.0, 1.5, 2.0, 2.5, 3.0])
def test_pow_partials_at_zero_are_sympys_limits(y, dtype, backend):
    (dx, dy) = llgrad.grad(lambda a, b: a ** b, argnums=(0, 1), backend=backend)(
        dtype(0.0), dtype(y))
    assert dx == _limit_at_zero(sp.diff(X ** Y, X), y)
    if y > 0:
        assert dy == _limit_at_zero(sp.diff(X ** Y, Y), y) == 0.0
    else:   # 0 ** y is 1 at y = 0 and 0 beyond: no derivative; 0 as in PyTorch
        assert dy == 0.0


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_issues_constant_powers_have_derivative_zero(dtype, backend):
    zero = np.zeros(3, dtype)
    assert np.array_equal(llgrad.grad(lambda x: (x ** 0.0).sum(), backend=backend)(zero),
                          zero)
    exponent = np.array([0.5, 2.0, 3.0], dtype)
    assert np.array_equal(llgrad.grad(lambda y: (0.0 ** y).sum(), backend=backend)(exponent),
                          zero)


def _pow_partials(x, y):
    return y * x ** (y - 1), x ** y * np.log(x)


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_pow_partials_away_from_zero_are_the_analytic_ones(dtype, rtol, backend):
    x = R.uniform(0.2, 3.0, 8).astype(dtype)
    y = R.uniform(-2.0, 3.0, 8).astype(dtype)
    y[:2] = 0.0   # the guarded exponent changes nothing away from x = 0
    dx, dy = llgrad.grad(lambda a, b: (a ** b).sum(), argnums=(0, 1), backend=backend)(x, y)
    want_dx, want_dy = _pow_partials(x.astype(np.float64), y.astype(np.float64))
    np.testing.assert_allclose(dx, want_dx, rtol=rtol)
    np.testing.assert_allclose(dy, want_dy, rtol=rtol, atol=rtol)
    assert dx.dtype == dy.dtype == dtype


def test_pow_partials_match_central_differences_at_and_near_zero(backend):
    """Central differences of numpy's power (x may go negative for integer y)."""
    for x, y in [(0.0, 0.0), (0.0, 1.0), (0.0, 2.0), (0.0, 3.0), (1e-3, 2.0), (0.7, 1.3)]:
        got = llgrad.grad(lambda a, b: a ** b, argnums=(0, 1), backend=backend)(x, y)
        want_dx = numerical_grad(lambda a: np.power(a, y), (x,), 0, 1e-6)
        assert got[0] == pytest.approx(float(want_dx), abs=1e-6)
        if x > 0 or y > 0:
            want_dy = numerical_grad(lambda b: np.power(x, b), (y,), 0, 1e-6)
            assert got[1] == pytest.approx(float(want_dy), abs=1e-6)


@pytest.mark.parametrize("x,y", [(0.0, 0.0), (0.0, 0.5), (0.0, 2.0), (0.0, 3.0), (1.5, 0.0),
                                 (1.5, 2.5)])
def test_forward_mode_pow_at_zero_agrees_with_reverse(x, y, backend):
    reverse = llgrad.grad(lambda a, b: a ** b, argnums=(0, 1), backend=backend)(x, y)
    _, dx = llgrad.jvp(lambda a: a ** y, (x,), (1.0,), backend=backend)
    _, dy = llgrad.jvp(lambda b: x ** b, (y,), (1.0,), backend=backend)
    assert (dx, dy) == pytest.approx(reverse, rel=1e-15)


def _pow_hessian(x, y):
    """The analytic Hessian of x ** y, its limits as x -> 0+ where x = 0 (y >= 2)."""
    if x == 0:
        return np.array([[y * (y - 1) * 0.0 ** (y - 2), 0.0], [0.0, 0.0]])
    fxy = x ** (y - 1) * (1 + y * np.log(x))
    return np.array([[y * (y - 1) * x ** (y - 2), fxy], [fxy, x ** y * np.log(x) ** 2]])


@pytest.mark.parametrize("x,y", [(0.0, 2.0), (0.0, 3.0), (0.0, 4.5), (1.5, 2.5), (0.5, 0.0)])
def test_pow_hessian_at_zero_is_finite_and_exact(x, y, backend):
    h = llgrad.hessian(lambda v: v[0] ** v[1], backend=backend)(np.array([x, y]))
    np.testing.assert_allclose(h, _pow_hessian(x, y), rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("y", [0.0, 1.0, 2.0])
def test_second_derivatives_of_constant_powers_at_zero(y, backend):
    """d²/dx² x**y at 0 (0, 0, 2: y(y-1)x^(y-2)) and d²/dy² 0**y for y > 0 (0)."""
    second = llgrad.grad(llgrad.grad(lambda a: a ** y), backend=backend)(0.0)
    assert second == float(sp.diff(X ** sp.nsimplify(y), X, 2).subs(X, 0))
    assert llgrad.grad(llgrad.grad(lambda b: 0.0 ** b), backend=backend)(y + 0.5) == 0.0


@pytest.mark.parametrize("power", [2, 3, 4.0, 2.5, -2])
def test_constant_powers_keep_exact_cheap_derivatives(power):
    """x ** n's derivative is n·x^(n-1) as numpy computes it (a product for n = 3):
    the guards of pow's partial fold away for a constant exponent."""
    x = R.uniform(0.5, 2.0, size=5)
    t = llgrad.grad(lambda a: (a ** power).sum(), backend="interpret").trace(x)
    assert t.optimized.count("select") == t.optimized.count("eq") == 0, t.optimized
    assert t.optimized.count("pow") == (power not in (2, 3))
    np.testing.assert_allclose(llgrad.grad(lambda a: (a ** power).sum())(x),
                               power * x ** (power - 1), rtol=1e-15)


# ----------------------------------------------------------------------------------
# 2. std and var over every axis length and ddof

STATISTICS = [  # shape, axis, ddof
    ((1,), None, 0), ((1,), 0, 0), ((1, 3), 0, 0), ((3, 1), 1, 0), ((1, 1), None, 0),
    ((2, 1, 3), 1, 0), ((2, 3), None, 0), ((2, 3), 0, 0), ((2, 3), 1, 1), ((4,), 0, 2),
    ((4,), None, 3), ((2, 3, 4), (0, 2), 1), ((5,), 0, 0)]


@pytest.mark.parametrize("name", ["std", "var"])
@pytest.mark.parametrize("shape,axis,ddof", STATISTICS)
def test_std_and_var_gradients_match_central_differences(name, shape, axis, ddof, backend):
    x = R.normal(size=shape)
    numpy_fn = getattr(np, name)
    weights = R.normal(size=np.shape(numpy_fn(x, axis=axis)))

    def loss(a):
        return (numpy_fn(a, axis=axis, ddof=ddof) * weights).sum()
    np.testing.assert_allclose(llgrad.jit(loss, backend=backend)(x), loss(x), rtol=1e-12)
    llgrad.check_grad(loss, x, backend=backend)


@pytest.mark.parametrize("shape,axis", [((1,), None), ((1, 3), 0), ((3, 1), 1), ((1, 1), None)])
def test_std_over_one_element_has_gradient_zero(shape, axis, backend):
    """The issue's case: std of one element is the constant 0."""
    x = R.normal(size=shape)
    g = llgrad.grad(lambda a: np.std(a, axis=axis).sum(), backend=backend)(x)
    np.testing.assert_array_equal(g, np.zeros(shape))


def test_std_of_equal_elements_has_the_least_subgradient(backend):
    """Where all elements are equal, std moves as |t| along any direction: llgrad gives
    0 (as PyTorch), which central differences agree with."""
    x = np.full(4, 2.5)
    g = llgrad.grad(np.std, backend=backend)(x)
    np.testing.assert_array_equal(g, np.zeros(4))
    np.testing.assert_allclose(g, numerical_grad(np.std, (x,), 0, 1e-6), atol=1e-9)


@pytest.mark.parametrize("name", ["std", "var"])
@pytest.mark.parametrize("shape,ddof", [((1,), 1), ((3,), 3), ((3,), 5), ((2, 2), 4)])
def test_std_and_var_with_ddof_at_least_n_are_numpys_value(name, shape, ddof, backend):
    """numpy divides by max(n - ddof, 0): inf, or nan where the squares sum to 0 (and
    warns).  llgrad gives the same value; its gradient there is not finite."""
    x = R.normal(size=shape)
    x_equal = np.ones(shape)
    fn = getattr(np, name)
    for a in (x, x_equal):
        with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
            want = fn(a, ddof=ddof)
        got = llgrad.jit(lambda v: fn(v, ddof=ddof), backend=backend)(a)
        np.testing.assert_array_equal(got, want)   # inf or nan, as numpy
        with np.errstate(all="ignore"):
            g = llgrad.grad(lambda v: fn(v, ddof=ddof), backend=backend)(a)
        assert not np.isfinite(g).any()


# ----------------------------------------------------------------------------------
# 3. numpy's keywords

A = R.uniform(0.1, 0.9, size=(2, 3))
B = R.uniform(0.1, 0.9, size=(2, 3))

#: positional arguments of each numpy function of the table, given the traced array
ARGS = {"where": lambda x: (x > 0.5, x, 0.0), "clip": lambda x: (x, 0.2, 0.8),
        "reshape": lambda x: (x, (3, 2)), "swapaxes": lambda x: (x, 0, 1),
        "broadcast_to": lambda x: (x, (4, 2, 3)), "expand_dims": lambda x: (x, 0),
        "concatenate": lambda x: ([x, B],), "stack": lambda x: ([x, B],),
        "full_like": lambda x: (x, 2.5), "take": lambda x: (x, [0, 2, -1]),
        "take_along_axis": lambda x: (x, np.array([[2, 0], [1, 1]]), 1),
        # numpy writes into A: the values already there, so that A stays as it is
        "put_along_axis": lambda x: (x, np.array([[2], [0]]),
                                     np.take_along_axis(x, np.array([[2], [0]]), 1), 1),
        "dot": lambda x: (x, B.T), "tensordot": lambda x: (x, B),
        "outer": lambda x: (x[0], B[1]), "einsum": lambda x: ("ij,kj->ik", x, B),
        "matmul": lambda x: (x, B.T), "invert": lambda x: (x > 0.5,),
        # square matrices for the linear algebra that needs them
        "linalg.solve": lambda x: (x @ x.T + np.eye(2), B[:, 0]),
        "linalg.matrix_power": lambda x: (x @ x.T, 3),
        **{name: lambda x: (x, B) for name in ("append", "cross", "kron")},
        **{name: lambda x: (x, [1]) for name in ("split", "array_split", "vsplit", "dsplit")},
        **{name: lambda x: (x, 1) for name in ("hsplit", "pad", "repeat", "roll", "rollaxis",
                                               "tile")},
        "moveaxis": lambda x: (x, 0, 1),
        "select": lambda x: ([x > 0.5, x < 0.2], [x, B]), "linspace": lambda x: (x[0], x[1], 4),
        "quantile": lambda x: (x, 0.3), "percentile": lambda x: (x, [30, 60]),
        # kth 1 of 3 elements: every valid partition is the sorted order
        **{name: lambda x: (x, 1) for name in ("partition", "argpartition")},
        **{name: lambda x: (x > 0.5, B > 0.5) for name in ("bitwise_and", "bitwise_or",
                                                           "bitwise_xor")}}

#: a value for each keyword whose default numpy does not spell (np._NoValue, or none)
VALUES = {"keepdims": True, "initial": 0.5, "where": True, "correction": 1,
          "mean": np.mean(A, axis=None, keepdims=True), "min": 0.2, "max": 0.8,
          "axes": None, "axis": None, "shape": (3, 2), "a_min": 0.2, "a_max": 0.8}

#: a value of a keyword llgrad refuses by name (numpy's meaning is not supported)
REFUSED = {"out": np.empty((2, 3)), "where": A > 0.5}


def _positional(name, fn):
    if name in ARGS:
        return ARGS[name]
    arity = fn.nin if isinstance(fn, np.ufunc) else 1
    return (lambda x: (x,)) if arity == 1 else (lambda x: (x, B))


def _keyword_calls():
    """(numpy function, llgrad.numpy's, positional arguments, how many are passed by
    position, the names of the rest, keywords) for each keyword numpy's signature of a
    function of the table accepts: given its default (or a value from VALUES), and a
    required argument passed by keyword instead of by position."""
    calls = []
    for name, row in TABLE.items():
        for fn in row.numpy:
            try:
                params = list(inspect.signature(fn).parameters.values())
            except (TypeError, ValueError):
                continue
            positional = _positional(name, fn)
            n_args = len(positional(A))
            n_named = next((k for k, p in enumerate(params) if p.kind == p.VAR_POSITIONAL),
                           len(params))   # the parameters that positional arguments fill
            for k, p in enumerate(params):
                if p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                    continue
                if k < min(n_args, n_named):   # by keyword, with every argument after it
                    names = [q.name for q in params[k:n_args]]
                    calls.append((fn, row.fn, positional, k, names, {}))
                    continue
                value = p.default if p.default not in (p.empty, np._NoValue) else VALUES.get(
                    p.name, p.default)
                calls.append((fn, row.fn, positional, n_args, [], {p.name: value}))
                if p.name == "dtype":
                    calls.append((fn, row.fn, positional, n_args, [], {p.name: np.float32}))
    return calls


CALLS = _keyword_calls()


def _call(fn, positional, n, names, keywords, x):
    args = positional(x)
    return fn(*args[:n], **dict(zip(names, args[n:])), **keywords)


def _same(got, want):
    if isinstance(want, tuple):    # factorisations: each factor, up to its columns' signs
        assert isinstance(got, tuple) and len(got) == len(want)
        for g, w in zip(got, want):
            _same(np.abs(g), np.abs(w))
        return
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    if want.dtype.kind == "f":
        assert got.dtype == want.dtype
    np.testing.assert_allclose(got.astype(float), want.astype(float), equal_nan=True,
                               rtol=1e-6 if want.dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("call", CALLS, ids=[
    f"{getattr(c[0], '__name__', c[0])}-{'+'.join(c[4]) or next(iter(c[5].items()))}"
    for c in CALLS])
def test_every_keyword_numpy_accepts_works_or_is_an_llgrad_error(call):
    """Called on a Tracer, through numpy's function and llgrad.numpy's, with a keyword
    numpy's own signature accepts: numpy's value, or an LlgradError (never a TypeError
    from inside llgrad)."""
    fn, ours, positional, n, names, keywords = call
    try:
        with np.errstate(all="ignore"):
            want = _call(fn, positional, n, names, keywords, A)
    except (TypeError, ValueError):   # llgrad may be more permissive than numpy
        want = None
    for through in (fn, ours):
        try:
            got = llgrad.jit(lambda x: _call(through, positional, n, names, keywords, x),
                             backend="interpret")(A)
        except llgrad.LlgradError:
            continue
        if want is not None:
            _same(got, want)


@pytest.mark.parametrize("keyword", sorted(REFUSED))
def test_keywords_llgrad_does_not_follow_are_refused_by_name(keyword):
    refused = 0
    for fn, _, positional, n, names, keywords in CALLS:
        if keyword not in keywords:
            continue
        call = dict(keywords, **{keyword: REFUSED[keyword]})
        with pytest.raises(llgrad.UnsupportedError, match=f"{keyword}=") as info:
            llgrad.jit(lambda x: _call(fn, positional, n, names, call, x),
                       backend="interpret")(A)
        assert "not supported" in str(info.value)
        refused += 1
    assert refused >= 5


def test_transpose_takes_axes_by_keyword(backend):
    x = R.normal(size=(2, 3, 4))
    got = llgrad.jit(lambda a: np.transpose(a, axes=(2, 0, 1)), backend=backend)(x)
    np.testing.assert_array_equal(got, np.transpose(x, axes=(2, 0, 1)))
    got = llgrad.jit(lambda a: a.transpose(1, 2, 0) + a.transpose((1, 2, 0)),
                     backend=backend)(x)
    np.testing.assert_array_equal(got, 2 * x.transpose(1, 2, 0))


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64])
def test_sum_initial_is_added_to_every_sum(dtype, backend):
    x = (R.normal(size=(3, 4)) * 5).astype(dtype)
    for kw in (dict(initial=0.5), dict(axis=1, initial=2), dict(axis=0, keepdims=True,
                                                                initial=-1.5)):
        got = llgrad.jit(lambda a: np.sum(a, **kw), backend=backend)(x)
        want = np.sum(x, **kw)
        assert got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_max_and_min_initial(backend):
    x = R.normal(size=(3, 4))
    f = llgrad.jit(lambda a: (np.max(a, axis=1, initial=0.2), a.min(axis=0, initial=-0.1),
                              np.max(a[:, :0], axis=1, initial=-7.0)), backend=backend)
    for got, want in zip(f(x), (np.max(x, axis=1, initial=0.2),
                                np.min(x, axis=0, initial=-0.1),
                                np.max(x[:, :0], axis=1, initial=-7.0))):
        np.testing.assert_array_equal(got, want)


def test_where_masks_and_out_arrays_are_refused_with_the_function_named():
    x = R.normal(size=(3, 4))
    for fn, name, keyword in [(lambda a: np.sum(a, where=a > 0), "sum", "where"),
                              (lambda a: a.mean(where=a > 0), "mean", "where"),
                              (lambda a: np.exp(a, where=a > 0), "exp", "where"),
                              (lambda a: np.add(a, 1, out=np.empty((3, 4))), "add", "out"),
                              (lambda a: np.std(a, out=np.empty(())), "var", "out")]:
        with pytest.raises(llgrad.UnsupportedError, match=f"{name}\\({keyword}=\\.\\.\\.\\)"):
            llgrad.jit(fn, backend="interpret")(x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mean_and_ufunc_dtype(dtype, backend):
    x = R.normal(size=(3, 4))
    f = llgrad.jit(lambda a: (np.mean(a, axis=0, dtype=dtype), np.exp(a, dtype=dtype),
                              np.add(a, 1, dtype=dtype),
                              np.einsum("ij->j", a, dtype=dtype, casting="same_kind")),
                   backend=backend)
    wants = (np.mean(x, axis=0, dtype=dtype), np.exp(x, dtype=dtype),
             np.add(x, 1, dtype=dtype), np.einsum("ij->j", x, dtype=dtype, casting="same_kind"))
    for got, want in zip(f(x), wants):
        assert got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_a_comparisons_dtype_is_its_results(backend):
    """numpy compares in the operands' own dtype: dtype=bool casts nothing."""
    x = R.normal(size=5)
    got = llgrad.jit(lambda a: np.less(a, 0.1, dtype=bool), backend=backend)(x)
    np.testing.assert_array_equal(got, np.less(x, 0.1, dtype=bool))


def test_var_and_std_take_mean_and_correction(backend):
    x = R.normal(size=(3, 4))
    m = np.mean(x, axis=1, keepdims=True)
    f = llgrad.jit(lambda a: (np.var(a, axis=1, mean=m), np.std(a, axis=1, correction=1),
                              a.var(axis=1, ddof=1)), backend=backend)
    wants = (np.var(x, axis=1, mean=m), np.std(x, axis=1, correction=1),
             x.var(axis=1, ddof=1))
    for got, want in zip(f(x), wants):
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_other_keywords_numpy_takes(backend):
    x = R.normal(size=(3, 4))
    cases = [
        (lambda a: np.clip(a, min=-0.5, max=0.5), lambda a: np.clip(a, -0.5, 0.5)),
        (lambda a: np.reshape(a, shape=(4, 3), copy=None), lambda a: a.reshape(4, 3)),
        (lambda a: np.ravel(a, order="K"), np.ravel),
        (lambda a: np.zeros_like(a, shape=(2,), dtype=np.float32),
         lambda a: np.zeros(2, np.float32)),
        (lambda a: np.take(a, [5, -9], axis=1, mode="clip"),
         lambda a: np.take(a, [5, -9], axis=1, mode="clip")),
        (lambda a: np.take(a, [5, -9], mode="wrap"), lambda a: np.take(a, [5, -9], mode="wrap")),
        (lambda a: np.stack([a, a], axis=1, dtype=np.float32),
         lambda a: np.stack([a, a], axis=1, dtype=np.float32)),
        (lambda a: np.argmax(a, axis=0, keepdims=True), lambda a: np.argmax(a, 0, keepdims=True)),
    ]
    for fn, oracle in cases:
        got, want = llgrad.jit(fn, backend=backend)(x), oracle(x)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_llgrad_numpy_functions_take_the_ufunc_keywords():
    x = R.normal(size=(3, 4))
    got = llgrad.jit(lambda a: lnp.multiply(a, 2, where=True, casting="same_kind",
                                            dtype=np.float32), backend="interpret")(x)
    np.testing.assert_array_equal(got, np.multiply(x, 2, dtype=np.float32))


# ----------------------------------------------------------------------------------
# 4. transformations on constants inside a trace, closing over its Tracers

def _closure_product(x):
    return x * llgrad.grad(lambda y: x * y)(2.0)               # x * x: 2x


def _closure_sin(x):
    return llgrad.grad(lambda y: np.sin(x * y) * y)(0.5) * x   # x (x/2 cos(x/2) + sin(x/2))


def _closure_array(x):
    inner = llgrad.grad(lambda y: (np.tanh(x * y) * y).sum())(np.linspace(0.1, 0.4, 3))
    return (inner * x).sum()


def _closure_value_and_grad(x):
    value, slope = llgrad.value_and_grad(lambda y: x * y ** 2)(3.0)
    return value + x * slope    # 9x + 6x²


def _closure_jit(x):
    return llgrad.jit(lambda y: np.exp(x * y))(0.5)


def _numpy_closure(fn):
    """The same function with every inner transformation done by finite differences
    or plain calls, in numpy: the oracle shares no llgrad code."""
    return {
        _closure_product: lambda x: x * x,
        _closure_sin: lambda x: (x / 2 * np.cos(x / 2) + np.sin(x / 2)) * x,
        _closure_array: lambda x: (numerical_grad(
            lambda y: (np.tanh(x * y) * y).sum(), (np.linspace(0.1, 0.4, 3),), 0, 1e-7)
            * x).sum(),
        _closure_value_and_grad: lambda x: 9 * x + 6 * x * x,
        _closure_jit: lambda x: np.exp(x * 0.5),
    }[fn]


@pytest.mark.parametrize("fn", [_closure_product, _closure_sin, _closure_array,
                                _closure_value_and_grad, _closure_jit],
                         ids=lambda f: f.__name__)
def test_inner_transformation_on_a_constant_closing_over_the_trace(fn, backend):
    x = 1.3
    numpy_fn = _numpy_closure(fn)
    assert llgrad.jit(fn, backend=backend)(x) == pytest.approx(numpy_fn(x), rel=1e-7)
    got = llgrad.grad(fn, backend=backend)(x)
    assert got == pytest.approx(float(numerical_grad(numpy_fn, (x,), 0, 1e-5)), rel=1e-6)


def test_the_issues_nested_grad_is_the_analytic_derivative(backend):
    """d/dx [x · d/dy (x·y)] = d/dx x² = 2x."""
    assert llgrad.grad(lambda x: x * llgrad.grad(lambda y: x * y)(2.0),
                       backend=backend)(3.0) == 6.0


def test_hessian_of_a_closure_over_an_inner_gradient(backend):
    """f(x) = d/dy (x·y)³ at y = 2 = 12x³: f'' = 72x."""
    f = lambda x: llgrad.grad(lambda y: (x * y) ** 3)(2.0)   # noqa: E731
    assert llgrad.hessian(f, backend=backend)(3.0) == pytest.approx(216.0, rel=1e-12)
    v = np.array([0.5, -1.0])
    h = llgrad.hessian(lambda v: llgrad.grad(lambda y: (v * y).sum() ** 2)(1.5),
                       backend=backend)(v)  # d/dy (s y)² = 2 s² y with s = v0 + v1: 3 s²
    np.testing.assert_allclose(h, np.full((2, 2), 6.0), rtol=1e-12)


def test_an_inner_function_closing_over_nothing_still_runs_compiled():
    inner = llgrad.grad(lambda y: y ** 3)
    assert llgrad.grad(lambda x: x * inner(2.0))(5.0) == 12.0
    assert len(inner._cache) == 1   # compiled once, as at top level


# ----------------------------------------------------------------------------------
# 5. np.einsum's sublist form

P = R.normal(size=(2, 3))
Q = R.normal(size=(3, 4))
S = R.normal(size=(5, 2, 3))
T = R.normal(size=(5, 3, 4))

SUBLISTS = {
    "matmul": (lambda a, b: np.einsum(a, [0, 1], b, [1, 2], [0, 2]), (P, Q)),
    "implicit": (lambda a, b: np.einsum(a, [0, 1], b, [1, 2]), (P, Q)),
    "transposed": (lambda a, b: np.einsum(a, [0, 1], b, [1, 2], [2, 0]), (P, Q)),
    "high_labels": (lambda a, b: np.einsum(a, [51, 26], b, [26, 25], [25, 51]), (P, Q)),
    "one_operand": (lambda a, b: np.einsum(a, [0, 1], [1]), (P, Q)),
    "ellipsis": (lambda a, b: np.einsum(a, [..., 0, 1], b, [..., 1, 2], [..., 0, 2]), (S, T)),
    "ellipsis_implicit": (lambda a, b: np.einsum(a, [..., 0, 1], b, [1, 2]), (S, Q)),
}


@pytest.mark.parametrize("name", sorted(SUBLISTS))
def test_einsum_sublist_form_is_numpys(name, backend):
    fn, args = SUBLISTS[name]
    got, want = llgrad.jit(fn, backend=backend)(*args), fn(*args)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("name", ["matmul", "implicit", "ellipsis_implicit", "one_operand"])
def test_einsum_sublist_gradients_match_central_differences(name, backend):
    fn, args = SUBLISTS[name]
    weights = R.normal(size=fn(*args).shape)
    llgrad.check_grad(lambda a, b: (fn(a, b) * weights).sum(), *args, argnums=(0, 1),
                      backend=backend)


def test_einsum_sublist_labels_out_of_range_are_an_llgrad_error():
    with pytest.raises(llgrad.ShapeError, match="valid range"):
        llgrad.jit(lambda a, b: np.einsum(a, [0, 52], b, [52, 1]), backend="interpret")(P, Q)
