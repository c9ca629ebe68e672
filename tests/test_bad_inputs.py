"""The bad-input catalogue: every way of calling llgrad wrongly gets an llgrad error
whose message names the function, the argument or op, the shapes and the user's source
line (where there is one), never a Python or llvmlite traceback from inside llgrad, a
crash or a silently wrong answer.  Arrays llgrad can read faithfully (strided,
byte-swapped, smaller integer and float types) are converted, and the numbers checked."""
import inspect

import numpy as np
import pytest

import llgrad
from llgrad import optim
from llgrad.compiler.codegen.build import compile_graph
from llgrad.ir import Builder, Graph, TensorType

A = np.ones((3, 4))


def line_of(fn, text):
    """``test_bad_inputs.py:N`` where line N of ``fn`` contains ``text``."""
    lines, start = inspect.getsourcelines(fn)
    return f"test_bad_inputs.py:{start + next(i for i, l in enumerate(lines) if text in l)}"


def raises(error, call, *words):
    """Run ``call``; it must raise ``error`` whose message contains every word."""
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    return message


# ----------------------------------------------------------------------------------
# shapes and ranks inside the user's function

def sums_axis_two(x):
    return x.sum(axis=2)


def matmul_mismatch(x, w):
    return (x @ w).sum()


def reshape_mismatch(x):
    return x.reshape(5, 2)


def add_mismatch(x, y):
    return x + y


def test_wrong_rank_names_op_rank_function_and_line(backend):
    raises(llgrad.ShapeError, lambda: llgrad.jit(sums_axis_two, backend=backend)(A),
           "sums_axis_two()", "sum", "axis 2", "dimension 2",
           line_of(sums_axis_two, "axis=2"))


@pytest.mark.parametrize("fn,args,words,text", [
    (matmul_mismatch, (A, np.ones((5, 6))), ("matmul", "(3, 4)", "(5, 6)"), "x @ w"),
    (reshape_mismatch, (A,), ("reshape", "(3, 4)", "(5, 2)"), "reshape(5, 2)"),
    (add_mismatch, (A, np.ones(5)), ("add", "(3, 4)", "(5,)"), "x + y"),
], ids=["matmul", "reshape", "broadcast"])
def test_wrong_shape_names_op_shapes_function_and_line(fn, args, words, text, backend):
    raises(llgrad.ShapeError, lambda: llgrad.grad(fn, backend=backend)(*args),
           f"{fn.__name__}()", *words, line_of(fn, text))


# ----------------------------------------------------------------------------------
# arguments llgrad cannot compute with

def doubles(x):
    return x * 2


@pytest.mark.parametrize("value,dtype", [
    (np.ones(2, complex), "complex128"), (np.ones(2, np.longdouble), "float128"),
    (np.array(["a", "b"]), "<U1"), (np.array([1.0, 2.0], dtype=object), "object"),
    (np.array(["2020-01-01"], dtype="datetime64[D]"), "datetime64[D]"),
    (np.array([2 ** 64 - 1], np.uint64), "uint64"),
], ids=["complex", "longdouble", "str", "object", "datetime", "uint64-overflow"])
def test_unrepresentable_dtypes_name_the_argument_and_function(value, dtype, backend):
    raises(llgrad.DTypeError, lambda: llgrad.jit(doubles, backend=backend)(value),
           "doubles()", "x", dtype)


def test_masked_array_is_refused_not_unmasked(backend):
    masked = np.ma.masked_array([1.0, 2.0], mask=[False, True])
    raises(llgrad.DTypeError, lambda: llgrad.jit(doubles, backend=backend)(masked),
           "doubles()", "argument x", "masked", "filled")


def test_uint64_that_fits_is_converted(backend):
    got = llgrad.jit(doubles, backend=backend)(np.array([2 ** 62, 5], np.uint64))
    np.testing.assert_array_equal(got, np.array([2 ** 62, 5]) * 2)   # wraps as int64 does
    assert got.dtype == np.int64


def test_object_array_of_numbers_is_refused_not_guessed(backend):
    raises(llgrad.DTypeError,
           lambda: llgrad.grad(lambda v: v.sum(), backend=backend)(np.array([1.0], object)),
           "<lambda>()", "object", "argument v")


def test_none_argument_is_named(backend):
    message = raises(llgrad.DTypeError, lambda: llgrad.jit(doubles, backend=backend)(None),
                     "doubles()", "argument x", "None", line_of(doubles, "x * 2"))
    assert "NoneType" in message            # Python's own words are kept as the detail


def sums_a_list(xs):
    return np.sum(xs)


def test_python_list_argument_is_a_pytree_and_np_sum_of_it_is_explained(backend):
    raises(llgrad.UnsupportedError,
           lambda: llgrad.grad(sums_a_list, backend=backend)([1.0, 2.0]),
           "sums_a_list()", "f64[]", "np.stack", line_of(sums_a_list, "np.sum"))
    got = llgrad.grad(lambda xs: np.sum(np.stack(xs)) * xs[0], backend=backend)([1.0, 2.0])
    assert got == [4.0, 1.0]               # d/dx (x + y) x, d/dy (x + y) x


# ----------------------------------------------------------------------------------
# arrays llgrad reads faithfully: copied, never misread

@pytest.mark.parametrize("make", [
    lambda: np.arange(12.0).reshape(3, 4)[:, ::2],                  # strided view
    lambda: np.arange(12.0).reshape(3, 4).T,                        # transposed view
    lambda: np.arange(12.0)[::-2].reshape(2, 3),                    # negative strides
    lambda: np.asfortranarray(np.arange(6.0).reshape(2, 3)),        # Fortran order
    lambda: np.arange(6.0).reshape(2, 3).astype(">f8"),             # big-endian float
    lambda: np.arange(6).reshape(2, 3).astype(">i8"),               # big-endian int
    lambda: np.arange(6).reshape(2, 3).astype(np.int32),            # narrower int
    lambda: np.arange(6).reshape(2, 3).astype(np.uint16),           # unsigned int
    lambda: np.arange(6.0).reshape(2, 3).astype(np.float16),        # half precision
    lambda: np.frombuffer(bytearray(4) + np.arange(6.0).tobytes(), np.float64, offset=4),
], ids=["strided", "transposed", "negative-strides", "fortran", "big-endian-f8",
        "big-endian-i8", "int32", "uint16", "float16", "misaligned"])
def test_unusual_layouts_are_converted_and_read_correctly(make, backend):
    x = make()
    assert not (x.flags.c_contiguous and x.flags.aligned and x.dtype.isnative
                and x.dtype in (np.float64, np.int64))     # each case really is unusual
    fn = lambda v: v * 3 + v[..., :1]  # noqa: E731
    got = llgrad.jit(fn, backend=backend)(x)
    want = fn(x.astype(np.float32 if x.dtype == np.float16 else
                       np.float64 if x.dtype.kind == "f" else np.int64))
    np.testing.assert_array_equal(got, want)


def test_gradient_of_a_byte_swapped_strided_argument_is_right(backend):
    x = np.arange(1.0, 13.0).reshape(3, 4).astype(">f8")[:, ::2]
    got = llgrad.grad(lambda v: (v ** 3).sum(), backend=backend)(x)
    np.testing.assert_allclose(got, 3 * x.astype(np.float64) ** 2, rtol=1e-15)


def _compiled_pair():
    b = Builder()
    x = b.parameter(index=0, type=TensorType((2, 3), "float64"), name="x")
    n = b.parameter(index=1, type=TensorType((), "int64"), name="n")
    return compile_graph(Graph([x, n], [b.mul(x, b.broadcast_in_dim(
        b.convert(n, dtype="float64"), shape=(2, 3), dims=()))], name="scale"))


@pytest.mark.parametrize("args,error,words", [
    ((A,), llgrad.ShapeError, ("scale()", "takes 2 arguments", "x, n", "got 1")),
    ((np.ones((3, 2)), 2), llgrad.ShapeError, ("scale()", "'x'", "(3, 2)", "(2, 3)")),
    ((np.ones(6), 2), llgrad.ShapeError, ("scale()", "'x'", "(6,)", "(2, 3)")),
    ((np.ones((2, 3), np.float32), 2), llgrad.DTypeError, ("scale()", "'x'", "float32",
                                                             "float64")),
    ((np.ones((2, 3)), np.nan), llgrad.DTypeError, ("scale()", "'n'", "float64", "int64")),
    ((np.ones((2, 3)), np.array(2.5)), llgrad.DTypeError, ("'n'", "float64", "int64")),
    ((np.ones((2, 3)), None), llgrad.DTypeError, ("scale()", "'n'", "object")),
    ((np.ones((2, 3)), [1, 2]), llgrad.ShapeError, ("scale()", "'n'", "(2,)", "()")),
], ids=["count", "shape", "rank", "dtype", "nan-for-int", "float-for-int", "none", "list"])
def test_compiled_function_checks_every_argument_before_native_code(args, error, words):
    raises(error, lambda: _compiled_pair()(*args), *words)


# ----------------------------------------------------------------------------------
# NaN where an integer is needed

@pytest.mark.parametrize("fn,words", [
    (lambda x, a: x.sum(axis=a), ("sum", "axis must be an integer", "nan")),
    (lambda x, a: x.reshape(a), ("reshape", "dimension", "nan")),
    (lambda x, a: x[a], ("getitem", "index must be an integer", "nan")),
], ids=["axis", "reshape", "index"])
def test_nan_in_a_static_integer_position(fn, words, backend):
    raises(llgrad.DTypeError,
           lambda: llgrad.jit(fn, static_argnums=1, backend=backend)(A, float("nan")),
           "<lambda>()", *words, "test_bad_inputs.py:")


def takes(x, i):
    return np.take(x, i)


def test_nan_in_a_traced_index_array(backend):
    raises(llgrad.UnsupportedError, lambda: llgrad.jit(takes, backend=backend)(
        np.arange(3.0), np.array([0.0, np.nan])), "takes()", "f64[2]", "integer",
        line_of(takes, "np.take"))


# ----------------------------------------------------------------------------------
# data-dependent Python control flow

def branches(x):
    if x.sum() > 0:
        return x
    return -x


def loops_while(x):
    while x.max() > 1:
        x = x / 2
    return x


def counts(x):
    return sum(x[i] for i in range(int(x[0])))


@pytest.mark.parametrize("fn,text", [(branches, "if x.sum()"), (loops_while, "while x"),
                                     (counts, "range(int")],
                         ids=["if", "while", "int"])
def test_control_flow_on_traced_values_explains_the_fix(fn, text, backend):
    message = raises(llgrad.UnsupportedError, lambda: llgrad.jit(fn, backend=backend)(A),
                     f"{fn.__name__}()", "trace time", line_of(fn, text))
    assert "np.where" in message


# ----------------------------------------------------------------------------------
# what llgrad does not support

def uses(name):
    def fn(x):
        return eval(name)(x)   # the line below the def, for every name
    return fn


@pytest.mark.parametrize("name", ["np.fft.fft", "np.unique", "np.histogram", "np.linalg.eig",
                                  "np.cbrt"])
def test_unsupported_numpy_functions_are_named_with_the_line(name, backend):
    raises(llgrad.UnsupportedError, lambda: llgrad.jit(uses(name), backend=backend)(np.eye(3)),
           name, "not supported", "fn()", line_of(uses, "eval(name)"))


def uses_nonzero(x):
    return (x > 0).nonzero()


def test_unsupported_array_method_is_named_with_the_line(backend):
    raises(llgrad.UnsupportedError, lambda: llgrad.jit(uses_nonzero, backend=backend)(A),
           ".nonzero", "uses_nonzero()", line_of(uses_nonzero, ".nonzero()"))


# ----------------------------------------------------------------------------------
# gradients that do not exist

def vector_valued(x):
    return np.tanh(x)


def integer_valued(x):
    return x.astype(np.int64).sum()


@pytest.mark.parametrize("fn,type_,text", [(vector_valued, "f64[3,4]", "np.tanh"),
                                           (integer_valued, "i64[]", "astype")],
                         ids=["non-scalar", "integer"])
def test_grad_of_a_non_scalar_or_integer_output(fn, type_, text, backend):
    raises(llgrad.GradientError, lambda: llgrad.grad(fn, backend=backend)(A),
           f"{fn.__name__}()", type_, "scalar", line_of(fn, text))


def test_grad_with_respect_to_an_integer_argument(backend):
    raises(llgrad.GradientError,
           lambda: llgrad.grad(lambda n: (n * 2.0).sum(), backend=backend)(np.arange(4)),
           "i64[4]", "float")


# ----------------------------------------------------------------------------------
# pytrees whose structure does not match

def test_vjp_cotangent_of_another_structure():
    _, pullback = llgrad.vjp(lambda x: (x, x * 2), A)
    raises(llgrad.ShapeError, lambda: pullback([A]), "cotangent", "<lambda>()",
           "x[0]", "x[1]")
    raises(llgrad.ShapeError, lambda: pullback((A, np.ones(3))), "cotangent[1]", "(3,)",
           "(3, 4)")


def test_jvp_tangents_of_another_structure():
    raises(llgrad.ShapeError,
           lambda: llgrad.jvp(lambda p: p["a"] * 2, ({"a": A},), ({"b": A},)),
           "tangents", "<lambda>()", "'a'", "'b'")


def test_optimizer_state_of_other_parameters():
    opt = optim.adam(0.1)
    state = opt.init({"w": np.ones(3)})
    raises(llgrad.ShapeError, lambda: opt.update({"v": np.ones(3)}, state, {"v": np.ones(3)}),
           "structure of the parameters", "'w'", "'v'")


def test_errors_are_llgrad_errors_and_keep_python_base_classes():
    assert issubclass(llgrad.ShapeError, (llgrad.LlgradError, ValueError))
    assert issubclass(llgrad.DTypeError, (llgrad.LlgradError, TypeError))
    assert issubclass(llgrad.UnsupportedError, (llgrad.LlgradError, NotImplementedError))
