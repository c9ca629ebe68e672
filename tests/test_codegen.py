"""Native code agrees with the interpreter (the numpy meaning of every primitive) and numpy.

Each case builds a one-primitive graph by hand.  It is checked twice: alone (the
primitive's own loop nest) and fused (its operands produced inline by an identity
elementwise op, its result consumed inline by another), so both the kernel and the
inline-read path of every lowering row run.
"""
from __future__ import annotations

import functools
import threading
import zlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest

from llgrad.compiler.codegen.lowering import LOWERINGS
from llgrad.compiler.codegen.build import compile_graph
from llgrad.ir import PRIMITIVES, Builder, Graph, TensorType, interpret
from llgrad.ir.errors import DTypeError, ShapeError

F = ("float64", "float32")
FI = F + ("int64",)
ALL = FI + ("bool",)
RNG = np.random.default_rng(0)
SPECIAL = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 0.5, -2.5, 1e-30, 30.0, -30.0]


@dataclass
class Case:
    op: str
    types: list                 # (shape, dtype) of each parameter
    attrs: dict = field(default_factory=dict)
    numpy: Callable = None      # direct numpy oracle over the arguments
    exact: bool = True          # bit-exact (else a few ulp)
    domain: str = "any"         # "positive", "log1p", "unit", "above1", "special" (nan/inf)
    args: tuple = None          # explicit arguments instead of random ones
    terms: int = 1              # terms summed per result (scales the tolerance)

    @property
    def id(self):
        sig = ",".join(f"{d}{list(s)}" for s, d in self.types)
        extra = ",".join(f"{k}={v}" for k, v in self.attrs.items() if k != "value")
        return f"{self.op}({sig}{';' if extra else ''}{extra}){self.domain[:4]}"


def _random(rng, shape, dtype, domain):
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if dtype == "int64":
        return rng.integers(-5, 6, shape).astype(np.int64)
    np_dtype = np.dtype(dtype)
    if domain == "special":
        return rng.choice(np.array(SPECIAL), shape).astype(np_dtype)
    x = rng.standard_normal(shape) * 2
    if domain == "positive":
        x = np.abs(x) + 0.05
    elif domain == "log1p":
        x = np.abs(x) - 0.9
    elif domain == "unit":   # inside (-1, 1), away from the ends where d/dx blows up
        x = np.tanh(x) * 0.9
    elif domain == "above1":
        x = np.abs(x) + 1.1
    return x.astype(np_dtype)


def _arguments(case):
    """The case's inputs: drawn from a generator seeded by the case, so each test sees the
    same numbers whichever tests ran before it."""
    if case.args is not None:
        return [np.asarray(a, dtype=d) for a, (s, d) in zip(case.args, case.types)]
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))
    return [np.asarray(_random(rng, s, d, case.domain)) for s, d in case.types]


# ----------------------------------------------------------------------------------
# the cases: every primitive, every dtype it accepts, awkward shapes

SHAPES = [(), (1,), (7,), (3, 4), (0, 3), (2, 1, 5), (37,)]
UNARY_FLOAT = {"exp": np.exp, "log": np.log, "log1p": np.log1p, "expm1": np.expm1,
               "sin": np.sin, "cos": np.cos, "tanh": np.tanh, "sqrt": np.sqrt,
               "logistic": lambda x: (1 / (1 + np.exp(-x))).astype(x.dtype),
               "asin": np.arcsin, "acos": np.arccos, "atan": np.arctan, "asinh": np.arcsinh,
               "acosh": np.arccosh, "atanh": np.arctanh}
DOMAIN = {"log": "positive", "sqrt": "positive", "log1p": "log1p", "asin": "unit",
          "acos": "unit", "atanh": "unit", "acosh": "above1"}
UNARY_NUM = {"neg": np.negative, "abs": np.abs, "sign": np.sign}
BINARY_NUM = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "max": np.maximum,
              "min": np.minimum}
BINARY_FLOAT = {"div": np.divide, "pow": np.power, "atan2": np.arctan2}
COMPARE = {"lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal,
           "eq": np.equal, "ne": np.not_equal}


def _cases():
    cs = []
    for op, fn in UNARY_FLOAT.items():
        for dt in F:
            for shape in SHAPES:
                cs.append(Case(op, [(shape, dt)], numpy=fn, exact=False,
                               domain=DOMAIN.get(op, "any")))
            if op not in DOMAIN:
                cs.append(Case(op, [((12,), dt)], numpy=fn, exact=False, domain="special"))
    for op, fn in UNARY_NUM.items():
        for dt in FI:
            for shape in [(), (0,), (3, 4), (37,)]:
                cs.append(Case(op, [(shape, dt)], numpy=fn))
        for dt in F:
            cs.append(Case(op, [((12,), dt)], numpy=fn, domain="special"))
    for table, dtypes, exact in ((BINARY_NUM, FI, True), (BINARY_FLOAT, F, False)):
        for op, fn in table.items():
            for dt in dtypes:
                for shape in [(), (1,), (0, 2), (3, 4), (37,)]:
                    cs.append(Case(op, [(shape, dt)] * 2, numpy=fn, exact=exact,
                                   domain="positive" if op == "pow" else "any"))
                if dt != "int64":
                    cs.append(Case(op, [((12,), dt)] * 2, numpy=fn, exact=exact,
                                   domain="special"))
    for op, fn in COMPARE.items():
        for dt in ALL:
            for shape in [(), (0,), (3, 4)]:
                cs.append(Case(op, [(shape, dt)] * 2, numpy=fn))
        cs.append(Case(op, [((12,), "float64")] * 2, numpy=fn, domain="special"))
    for dt in ALL:
        for shape in [(), (3, 4), (0,)]:
            cs.append(Case("select", [(shape, "bool"), (shape, dt), (shape, dt)],
                           numpy=np.where))
    for src in ALL:
        for dst in ALL:
            cs.append(Case("convert", [((3, 5), src)], {"dtype": dst},
                           numpy=lambda x, dst=dst: x.astype(dst)))
        if src in F:
            cs.append(Case("convert", [((12,), src)], {"dtype": "bool"}, domain="special",
                           numpy=lambda x: x.astype(bool)))
            other = "float32" if src == "float64" else "float64"
            cs.append(Case("convert", [((12,), src)], {"dtype": other}, domain="special",
                           numpy=lambda x, o=other: x.astype(o)))
    for dt in FI:
        for shape, axes in [((3, 4), (0,)), ((3, 4), (1,)), ((3, 4), (0, 1)),
                            ((2, 3, 4), (0, 2)), ((5,), ()), ((), ()), ((4, 0), (0,)),
                            ((1, 37), (1,)), ((2, 1100), (1,)), ((1100,), (0,))]:
            terms = int(np.prod([shape[a] for a in axes]))
            cs.append(Case("reduce_sum", [(shape, dt)], {"axes": axes}, exact=dt == "int64",
                           terms=terms,
                           numpy=lambda x, axes=axes: np.sum(x, axis=axes, dtype=x.dtype)))
            cs.append(Case("reduce_max", [(shape, dt)], {"axes": axes},
                           numpy=lambda x, axes=axes: np.max(x, axis=axes)))
        cs.append(Case("reduce_sum", [((0, 3), dt)], {"axes": (0,)},
                       numpy=lambda x: np.sum(x, axis=0, dtype=x.dtype)))
    for dt in F:
        cs.append(Case("reduce_max", [((3, 4), dt)], {"axes": (1,)}, domain="special",
                       numpy=lambda x: np.max(x, axis=1)))
    for dt in ALL:
        for shape_in, shape, dims in [((3,), (2, 3), (1,)), ((3, 1), (3, 4), (0, 1)),
                                      ((), (2, 2), ()), ((2,), (2, 3, 1), (0,)),
                                      ((1,), (0, 4), (1,)), ((4,), (4,), (0,))]:
            def bcast(x, shape=shape, dims=dims):
                kept = [1] * len(shape)
                for i, d in enumerate(dims):
                    kept[d] = x.shape[i]
                return np.broadcast_to(x.reshape(kept), shape)
            cs.append(Case("broadcast_in_dim", [(shape_in, dt)], {"shape": shape, "dims": dims},
                           numpy=bcast))
        for shape_in, shape in [((3, 4), (4, 3)), ((2, 3, 4), (24,)), ((), (1, 1)),
                                ((0, 3), (3, 0)), ((6,), (2, 3))]:
            cs.append(Case("reshape", [(shape_in, dt)], {"shape": shape},
                           numpy=lambda x, shape=shape: x.reshape(shape)))
        for shape_in, perm in [((2, 3, 4), (2, 0, 1)), ((3, 4), (1, 0)), ((), ()),
                               ((0, 2), (1, 0)), ((2, 1, 3), (1, 2, 0))]:
            cs.append(Case("transpose", [(shape_in, dt)], {"perm": perm},
                           numpy=lambda x, perm=perm: np.transpose(x, perm)))
        for shape_in, starts, limits, strides in [((10,), (1,), (9,), (3,)),
                                                  ((4, 5), (1, 0), (3, 5), (1, 2)),
                                                  ((3,), (0,), (0,), (1,)),
                                                  ((), (), (), ()),
                                                  ((5, 4), (0, 3), (5, 4), (2, 1))]:
            cs.append(Case("slice", [(shape_in, dt)],
                           {"starts": starts, "limits": limits, "strides": strides},
                           numpy=lambda x, a=starts, l=limits, s=strides: x[tuple(
                               slice(*t) for t in zip(a, l, s))]))
        for shape_in, low, high, interior in [((3,), (1,), (2,), (1,)),
                                              ((2, 3), (0, 1), (1, 0), (0, 2)),
                                              ((0,), (1,), (1,), (0,)), ((), (), (), ()),
                                              ((1, 2), (0, 0), (0, 0), (3, 3))]:
            cs.append(Case("pad", [(shape_in, dt)],
                           {"low": low, "high": high, "interior": interior},
                           numpy=lambda x, lo=low, hi=high, it=interior: _numpy_pad(
                               x, lo, hi, it)))
        for shapes, axis in [([(2, 3), (1, 3)], 0), ([(2, 3), (2, 0), (2, 2)], 1),
                             ([(4,)], 0), ([(2, 1, 2), (2, 3, 2)], 1)]:
            cs.append(Case("concatenate", [(s, dt) for s in shapes], {"axis": axis},
                           numpy=lambda *xs, axis=axis: np.concatenate(xs, axis=axis)))
        for start in [-2, 0, 2, 3, 10]:
            cs.append(Case("dynamic_slice", [((5, 3), dt), ((), "int64")], {"size": 2},
                           args=(_random(RNG, (5, 3), dt, "any"), start),
                           numpy=lambda x, s: x[min(max(int(s), 0), 3):][:2]))
            cs.append(Case("dynamic_update_slice", [((5, 3), dt), ((2, 3), dt), ((), "int64")],
                           args=(_random(RNG, (5, 3), dt, "any"), _random(RNG, (2, 3), dt, "any"), start),
                           numpy=_numpy_update))
        cs.append(Case("dynamic_slice", [((4,), dt), ((), "int64")], {"size": 0},
                       args=(_random(RNG, (4,), dt, "any"), 1), numpy=lambda x, s: x[:0]))
        cs.append(Case("dynamic_slice", [((4,), dt), ((), "int64")], {"size": 4},
                       args=(_random(RNG, (4,), dt, "any"), 3), numpy=lambda x, s: x))
    for dt in ALL:
        for shape, axis in [((3, 4), 1), ((5,), 0), ((2, 0, 3), 2), ((2, 3, 4), 0)]:
            if dt == "bool" and shape[axis] > 2:
                continue
            cs.append(Case("iota", [], {"shape": shape, "dtype": dt, "axis": axis},
                           numpy=lambda shape=shape, dt=dt, axis=axis: np.broadcast_to(
                               np.arange(shape[axis]).astype(dt).reshape(
                                   [n if d == axis else 1 for d, n in enumerate(shape)]),
                               shape)))
    for dt in F:
        for (ls, rs), dims, fn in DOTS:
            terms = int(np.prod([ls[a] for a in dims[0][0]]))
            cs.append(Case("dot_general", [(ls, dt), (rs, dt)], {"dims": dims}, numpy=fn,
                           exact=False, terms=terms))
    for value in [np.arange(6.0).reshape(2, 3), np.float64(2.5), np.array([True, False]),
                  np.arange(4, dtype=np.int64), np.arange(3, dtype=np.float32),
                  np.zeros((0, 2))]:
        cs.append(Case("constant", [], {"value": value}, numpy=lambda v=value: v))
    for dt in ALL:
        for rows, idx in [(5, [0, 4, 2, 2, -3, 9]), (1, [0]), (3, [])]:
            cs.append(Case("take", [((rows, 2), dt), ((len(idx),), "int64")],
                           args=(_random(RNG, (rows, 2), dt, "any"), idx),
                           numpy=lambda x, i: x[np.clip(i, 0, x.shape[0] - 1)]))
        cs.append(Case("parameter", [((2, 3), dt)], numpy=lambda x: x))
    for dt in FI:
        for rows, idx in [(5, [0, 4, 2, 2, -3, 9]), (1, [0, 0]), (3, [])]:
            cs.append(Case("scatter_add", [((rows, 2), dt), ((len(idx),), "int64"),
                                           ((len(idx), 2), dt)],
                           args=(_random(RNG, (rows, 2), dt, "any"), idx,
                                 _random(RNG, (len(idx), 2), dt, "any")),
                           numpy=_numpy_scatter_add))
    return cs


DOTS = [
    (((3, 4), (4, 5)), (((1,), (0,)), ((), ())), lambda a, b: a @ b),
    (((3, 4), (4,)), (((1,), (0,)), ((), ())), lambda a, b: a @ b),
    (((4,), (4,)), (((0,), (0,)), ((), ())), lambda a, b: np.dot(a, b)),
    (((2, 3, 4), (2, 4, 5)), (((2,), (1,)), ((0,), (0,))), lambda a, b: a @ b),
    (((4, 3), (4, 5)), (((0,), (0,)), ((), ())), lambda a, b: a.T @ b),
    (((3, 4), (5, 4)), (((1,), (1,)), ((), ())), lambda a, b: a @ b.T),
    (((3,), (4,)), (((), ()), ((), ())), np.outer),
    (((2, 3, 4), (3, 4, 5)), (((1, 2), (0, 1)), ((), ())),
     lambda a, b: np.tensordot(a, b, axes=([1, 2], [0, 1]))),
    (((3, 2, 4), (4, 2, 5)), (((2,), (0,)), ((1,), (1,))),
     lambda a, b: np.einsum("ibk,kbj->bij", a, b)),
    (((3, 0), (0, 2)), (((1,), (0,)), ((), ())), lambda a, b: a @ b),
    (((1, 1), (1, 1)), (((1,), (0,)), ((), ())), lambda a, b: a @ b),
    (((17, 33), (33, 19)), (((1,), (0,)), ((), ())), lambda a, b: a @ b),
    (((), (3,)), (((), ()), ((), ())), lambda a, b: a * b),
]


def _numpy_pad(x, low, high, interior):
    if x.ndim == 0:
        return x.copy()
    out = np.zeros([lo + n + max(n - 1, 0) * it + hi
                    for n, lo, hi, it in zip(x.shape, low, high, interior)], x.dtype)
    out[tuple(slice(lo, None, it + 1) for lo, it in zip(low, interior))][
        tuple(slice(0, n) for n in x.shape)] = x
    return out


def _numpy_scatter_add(x, idx, updates):
    out = x.copy()
    for i, u in zip(np.clip(idx, 0, x.shape[0] - 1), updates):
        out[i] += u  # one at a time, in order: the order the kernel adds in
    return out


def _numpy_update(x, u, s):
    out = x.copy()
    s = min(max(int(s), 0), x.shape[0] - u.shape[0])
    out[s:s + u.shape[0]] = u
    return out


CASES = _cases()


# ----------------------------------------------------------------------------------
# building and checking

def _graph(case, fused):
    b = Builder()
    params = [b.parameter(index=i, type=TensorType(s, d), name=f"a{i}")
              for i, (s, d) in enumerate(case.types)]
    operands = params
    if fused:  # identity producers, computed inline by the op's loop
        operands = [b.select(b.eq(p, p), p, p) for p in params]
    if case.op == "parameter":
        out = params[0]
    elif case.op == "constant":
        value = np.asarray(case.attrs["value"])
        value.setflags(write=False)
        out = b.emit("constant", value=value)
    else:
        out = b.emit(case.op, *operands, **case.attrs)
    if fused:  # an identity consumer, into whose loop the op is inlined
        out = b.convert(out, dtype=out.dtype)
    return Graph(params, [out], name=f"case_{case.op}")


@functools.lru_cache(maxsize=None)
def _compiled(index, fused):
    case = CASES[index]
    graph = _graph(case, fused)
    return graph, compile_graph(graph)


def _tolerance(want, exact, terms):
    """Exact, or a few ulp; sums of n terms may differ by n ulp of their largest term."""
    if exact or want.dtype.kind != "f":
        return dict(rtol=0, atol=0)
    eps = float(np.finfo(want.dtype).eps)
    big = float(np.max(np.abs(want[np.isfinite(want)]), initial=1.0))
    return dict(rtol=8 * eps, atol=8 * eps * terms * big if terms > 1 else 8 * eps)


def _check(got, want, exact, terms=1):
    assert got.shape == want.shape and got.dtype == want.dtype, (got, want)
    np.testing.assert_allclose(got, want, equal_nan=True, **_tolerance(want, exact, terms))


@pytest.mark.parametrize("fused", [False, True], ids=["alone", "fused"])
@pytest.mark.parametrize("index", range(len(CASES)), ids=[c.id for c in CASES])
def test_primitive_matches_interpreter_and_numpy(index, fused):
    case = CASES[index]
    graph, exe = _compiled(index, fused)
    args = _arguments(case)
    (got,) = exe(*args)
    (want,) = interpret(graph, *args)
    _check(got, want, case.exact, case.terms)
    with np.errstate(all="ignore"):
        direct = np.asarray(case.numpy(*args)).astype(want.dtype)
    _check(got, direct, case.exact, case.terms)


@pytest.mark.parametrize("dtype", F)
def test_staged_reduction_sums_in_the_same_order_as_the_direct_one(dtype):
    """A reduced value computed inline is staged in chunks before the lanes sum it
    (kernels.CHUNK); the order of the additions, and so every bit, must not change."""
    index = next(i for i, c in enumerate(CASES)
                 if c.op == "reduce_sum" and c.types == [((2, 1100), dtype)])
    args = _arguments(CASES[index])
    (direct,) = _compiled(index, False)[1](*args)
    (staged,) = _compiled(index, True)[1](*args)
    assert "stage" in _compiled(index, True)[1].llvm_ir
    np.testing.assert_array_equal(staged, direct)


def test_a_row_sum_adds_each_lane_in_order_as_one_vector():
    """Element j of a row goes to partial sum j % LANES, in order, and the partial sums
    combine pairwise (emulated here in float32 with numpy); the lanes are one vector
    register in the loop, not scalars for the SLP vectoriser to reassemble."""
    import llgrad
    from llgrad.compiler.codegen.kernels import LANES
    g = np.random.default_rng(3).standard_normal((16, 13 * LANES + 5)).astype(np.float32)
    f = llgrad.jit(lambda g: np.sum(g * g, axis=1))
    squares = g * g
    lanes = np.zeros((16, LANES), np.float32)
    for start in range(0, 13 * LANES, LANES):
        lanes += squares[:, start:start + LANES]
    partial = [lanes[:, k] for k in range(LANES)]
    while len(partial) > 1:
        partial = [partial[k] + partial[k + 1] for k in range(0, len(partial), 2)]
    want = partial[0]
    for j in range(13 * LANES, g.shape[1]):
        want = want + squares[:, j]
    np.testing.assert_array_equal(f(g), want)
    assert f"fadd <{LANES} x float>" in f.trace(g).llvm_ir_optimized


def test_every_primitive_has_a_lowering_row():
    assert set(p.lowering for p in PRIMITIVES.values()) <= set(LOWERINGS)


def test_every_primitive_has_a_test_case():
    tested = {c.op for c in CASES} | {"loop", "tuple_get"}  # tests/test_codegen_loop.py
    missing = set(PRIMITIVES) - tested
    assert not missing, f"primitives without a codegen test case: {sorted(missing)}"


def test_every_accepted_dtype_is_covered():
    """Each elementwise primitive is tested with every dtype its type rule accepts."""
    for name, prim in PRIMITIVES.items():
        if not prim.elementwise:
            continue
        tested = {c.types[-1][1] for c in CASES if c.op == name}
        for dt in ALL:
            t = TensorType((2,), dt)
            try:
                prim.type_rule([t] * (1 if prim.formula.count("y") == 0 else 2))
            except (DTypeError, ShapeError):
                continue
            assert dt in tested, f"{name} accepts {dt} but no case tests it"


@pytest.mark.parametrize("path", ["blas", "loops"])
@pytest.mark.parametrize("index", [i for i, c in enumerate(CASES) if c.op == "dot_general"],
                         ids=[c.id for c in CASES if c.op == "dot_general"])
def test_dot_general_blas_and_loop_nest_agree(index, path):
    """Both matmul paths, forced: gemm for every size it accepts, or never."""
    case = CASES[index]
    graph = _graph(case, fused=False)
    exe = compile_graph(graph, blas=path == "blas", blas_min_flops=1)
    args = _arguments(case)
    _check(exe(*args)[0], interpret(graph, *args)[0], case.exact, case.terms)
    uses_gemm = "gemm" in exe.llvm_ir
    assert uses_gemm == (path == "blas" and min(args[0].size, args[1].size) > 0
                         and graph.outputs[0].type.size > 0)


@pytest.mark.parametrize("provider", ["numpy's OpenBLAS", "scipy"])
@pytest.mark.parametrize("dims", [(((1,), (0,)), ((), ())), (((0,), (0,)), ((), ())),
                                  (((1,), (1,)), ((), ()))], ids=["NN", "TN", "NT"])
def test_each_blas_provider_multiplies_transposed_operands(provider, dims, monkeypatch):
    """Both calling conventions (row-major CBLAS, column-major Fortran), with operands
    read transposed in place."""
    from llgrad.compiler.codegen import build as pipeline
    from llgrad.runtime import blas
    found = blas._numpy_openblas() if provider.startswith("numpy") else (
        pytest.importorskip("scipy") and blas._scipy_blas())
    if not found:
        pytest.skip(f"{provider} is not available here")
    monkeypatch.setattr(pipeline, "blas_symbols", lambda: found)
    (lc, rc), _ = dims
    lhs_shape = (40, 33) if lc == (1,) else (33, 40)
    rhs_shape = (33, 20) if rc == (0,) else (20, 33)
    for dtype in ("float64", "float32"):
        b = Builder()
        x = b.parameter(index=0, type=TensorType(lhs_shape, dtype), name="x")
        y = b.parameter(index=1, type=TensorType(rhs_shape, dtype), name="y")
        graph = Graph([x, y], [b.dot_general(x, y, dims=dims)])
        exe = compile_graph(graph, blas_min_flops=1)
        assert found[dtype].symbol in exe.llvm_ir
        args = [RNG.standard_normal(s).astype(dtype) for s in (lhs_shape, rhs_shape)]
        _check(exe(*args)[0], interpret(graph, *args)[0], exact=False, terms=33)
