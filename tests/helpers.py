"""Helpers shared by several test files.

Test files import what they share from here (``from helpers import ...``, as they
import ``models``), never from one another; tests/test_structure.py checks that.

- the table of one-primitive cases (test_codegen checks each natively; the
  primitive-table and forward-mode tests differentiate its float64 rows), with
  finite differences over graphs built from it;
- the sympy oracle tables of scalar functions (first derivatives in
  test_sympy_oracle, higher ones in test_higher_order);
- a small MLP problem and a check that a vector is its Hessian-vector product;
- results compared bit for bit, types and structure included;
- threads started together.
"""
from __future__ import annotations

import threading
import zlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import sympy as sp
from models import mlp_loss

import llgrad
import llgrad.numpy as lnp
from llgrad.ir import PRIMITIVES, Builder, Graph, TensorType, interpret

# ----------------------------------------------------------------------------------
# the table of one-primitive cases

#: the float dtypes; with int64; with int64 and bool (the dtype groups of the case table)
F = ("float64", "float32")
FI = F + ("int64",)
ALL = FI + ("bool",)
_RNG = np.random.default_rng(0)  # draws the explicit arguments of some cases
#: the values of the "special" domain: nan, infinities, signed zeros, large and tiny
SPECIAL = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 0.5, -2.5, 1e-30, 30.0, -30.0]


@dataclass
class Case:
    """One primitive applied to parameters of given types: a row of the case table."""

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


def arguments(case):
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
               "acosh": np.arccosh, "atanh": np.arctanh, "floor": np.floor, "ceil": np.ceil,
               "rint": np.rint, "trunc": np.trunc,
               "erf": lambda x: PRIMITIVES["erf"].evaluate(x),
               "erfc": lambda x: PRIMITIVES["erfc"].evaluate(x),
               "lgamma": lambda x: PRIMITIVES["lgamma"].evaluate(x),
               "digamma": lambda x: PRIMITIVES["digamma"].evaluate(x)}
DOMAIN = {"log": "positive", "sqrt": "positive", "log1p": "log1p", "asin": "unit",
          "acos": "unit", "atanh": "unit", "acosh": "above1", "lgamma": "positive",
          "digamma": "positive"}
UNARY_NUM = {"neg": np.negative, "abs": np.abs, "sign": np.sign}
BINARY_NUM = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "max": np.maximum,
              "min": np.minimum, "fmod": np.fmod}
BINARY_FLOAT = {"div": np.divide, "pow": np.power, "atan2": np.arctan2}
BINARY_INT = {"floordiv": np.floor_divide}
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
    for table, dtypes, exact in ((BINARY_NUM, FI, True), (BINARY_FLOAT, F, False),
                                 (BINARY_INT, ("int64",), True)):
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
                           args=(_random(_RNG, (5, 3), dt, "any"), start),
                           numpy=lambda x, s: x[min(max(int(s), 0), 3):][:2]))
            cs.append(Case("dynamic_update_slice", [((5, 3), dt), ((2, 3), dt), ((), "int64")],
                           args=(_random(_RNG, (5, 3), dt, "any"), _random(_RNG, (2, 3), dt, "any"), start),
                           numpy=_numpy_update))
        cs.append(Case("dynamic_slice", [((4,), dt), ((), "int64")], {"size": 0},
                       args=(_random(_RNG, (4,), dt, "any"), 1), numpy=lambda x, s: x[:0]))
        cs.append(Case("dynamic_slice", [((4,), dt), ((), "int64")], {"size": 4},
                       args=(_random(_RNG, (4,), dt, "any"), 3), numpy=lambda x, s: x))
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
                           args=(_random(_RNG, (rows, 2), dt, "any"), idx),
                           numpy=lambda x, i: x[np.clip(i, 0, x.shape[0] - 1)]))
        cs.append(Case("parameter", [((2, 3), dt)], numpy=lambda x: x))
    for rows, idx, start in [(5, [0, 4, 2, 2, -3, 9], 3), (1, [0], -2), (3, [], 0)]:
        cs.append(Case("prefetch_rows", [((rows, 37), "float32"), ((len(idx),), "int64"),
                                         ((), "int64")], {"rows": 4},
                       args=(_random(_RNG, (rows, 37), "float32", "any"), idx, start),
                       numpy=lambda x, i, s: np.int64(0)))   # a hint: the token is 0
    for dt in FI:
        for rows, idx in [(5, [0, 4, 2, 2, -3, 9]), (1, [0, 0]), (3, [])]:
            cs.append(Case("scatter_add", [((rows, 2), dt), ((len(idx),), "int64"),
                                           ((len(idx), 2), dt)],
                           args=(_random(_RNG, (rows, 2), dt, "any"), idx,
                                 _random(_RNG, (len(idx), 2), dt, "any")),
                           numpy=_numpy_scatter_add))
    for dt in ALL:   # ties (few distinct values), and NaN and signed zeros in "special"
        for shape in [(1,), (7,), (3, 4), (0, 3), (3, 0), (2, 1, 5), (37,)]:
            for domain in ("any", "special") if dt in F else ("any",):
                cs.append(Case("argsort", [(shape, dt)], domain=domain,
                               numpy=lambda x: np.argsort(x, axis=-1, kind="stable")))
    for dt in FI:   # sums in numpy's order: exact
        for shape in [(1,), (7,), (3, 4), (0, 3), (2, 1, 5), (37,)]:
            for reverse in (False, True):
                cs.append(Case("cumsum", [(shape, dt)], {"reverse": reverse},
                               numpy=lambda x, r=reverse: np.flip(np.cumsum(
                                   np.flip(x, -1), -1), -1) if r else np.cumsum(x, -1)))
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


def _linalg_cases():
    """The linear-algebra primitives on well-posed matrices (positive definite for
    cholesky, distinct eigenvalues and singular values), one and a batch of two."""
    rng, cs = np.random.default_rng(7), []
    tri = lambda lower: lambda a, r: np.linalg.solve(np.tril(a) if lower else  # noqa: E731
                                                     np.triu(a, 1) + np.eye(3), r)
    for lead in [(), (2,)]:
        a = rng.standard_normal(lead + (3, 3))
        spd = a @ np.swapaxes(a, -1, -2) + 3 * np.eye(3)
        spd = (spd + np.swapaxes(spd, -1, -2)) / 2
        rhs, tall = rng.standard_normal(lead + (3, 2)), rng.standard_normal(lead + (4, 3))
        for dt in F:
            one, two = [(a.shape, dt)], [(a.shape, dt), (rhs.shape, dt)]
            common = dict(exact=False, terms=64)
            cs += [Case("cholesky", one, args=(spd,), numpy=np.linalg.cholesky, **common),
                   Case("triangular_solve", two, {"lower": True, "unit": False},
                        args=(a + 4 * np.eye(3), rhs), numpy=tri(True), **common),
                   Case("triangular_solve", two, {"lower": False, "unit": True},
                        args=(a, rhs), numpy=tri(False), **common),
                   Case("solve", two, args=(a, rhs), numpy=np.linalg.solve, **common),
                   Case("slogdet", one, args=(a,), numpy=lambda x: np.stack(
                       np.linalg.slogdet(x), -1), **common),
                   Case("eigh", one, args=(a,), numpy=PRIMITIVES["eigh"].evaluate, **common),
                   Case("svd", [(tall.shape, dt)], args=(tall,),
                        numpy=PRIMITIVES["svd"].evaluate, **common),
                   Case("qr", [(tall.shape, dt)], {"complete": False}, args=(tall,),
                        numpy=lambda x: PRIMITIVES["qr"].evaluate(x, complete=False),
                        **common)]
    # complete Q has no derivative for tall matrices: float32 only, out of FD_CASES
    cs.append(Case("qr", [((4, 3), "float32")], {"complete": True}, args=(tall[..., 0, :, :]
                   if tall.ndim == 3 else tall,), numpy=lambda x: PRIMITIVES["qr"].evaluate(
                       x, complete=True), exact=False, terms=64))
    return cs


#: every primitive, every dtype it accepts, awkward shapes: the suite's one table of cases
CASES = _cases()
CASES += _linalg_cases()


def case_parameters(b, case):
    """One parameter of ``b`` for each input type of ``case``, named a0, a1, ..."""
    return [b.parameter(index=i, type=TensorType(s, d), name=f"a{i}")
            for i, (s, d) in enumerate(case.types)]


#: primitives whose derivative rules raise GradientError (never a silent 0), and loop
#: and tuple_get, whose bodies the one-op cases cannot express: tests/test_scan.py checks
#: their derivatives against finite differences and unrolled programs
NOT_YET_DIFFERENTIABLE = {"loop", "tuple_get", "digamma"}  # digamma: trigamma refused
#: likewise cond (several results), and the primitives whose derivative is given, not
#: their numpy meaning's (stop_gradient's is zero, a custom call's the user's rule):
#: tests/test_cond.py and tests/test_custom_rules.py check those
NOT_YET_DIFFERENTIABLE |= {"cond", "stop_gradient", "custom_vjp_call", "custom_jvp_call"}
#: and while, tape_row and checkpoint (a body graph each): tests/test_while_loop.py (second
#: order through tape_row), test_recompute.py
NOT_YET_DIFFERENTIABLE |= {"while", "tape_row", "checkpoint"}


def _fd_cases():
    chosen = {}
    for case in CASES:
        prim = PRIMITIVES[case.op]
        float_inputs = [k for k, (s, d) in enumerate(case.types) if d == "float64"]
        if (not prim.differentiable or case.op in NOT_YET_DIFFERENTIABLE or not float_inputs
                or case.domain == "special" or any(d == "float32" for _, d in case.types)):
            continue
        if any(0 in s for s, _ in case.types) or case.attrs.get("dtype", "float64") != "float64":
            continue  # empty, or rounded to another dtype: finite differences say nothing
        chosen.setdefault(case.op, []).append(case)
    return [c for cases in chosen.values() for c in cases[:4]]


#: up to four float64 cases of each differentiable primitive, for derivative checks
FD_CASES = _fd_cases()


def scalarised(case, weights):
    """sum(w * op(inputs)): a scalar whose gradient is the op's vjp applied to w."""
    b = Builder()
    params = case_parameters(b, case)
    out = b.emit(case.op, *params, **case.attrs)
    w = b.const(weights, "float64")
    return Graph(params, [b.reduce_sum(b.mul(out, w), axes=tuple(range(out.type.ndim)))],
                 name=f"sum_w_{case.op}")


def central_differences(graph, args, k, eps):
    """d graph / d args[k] by central differences of the interpreted (scalar) graph."""
    expected = np.zeros_like(args[k])
    for idx in np.ndindex(args[k].shape):
        step = eps * max(1.0, abs(args[k][idx]))
        moved = [a.copy() for a in args]
        moved[k][idx] += step
        up = interpret(graph, *moved)[0]
        moved[k][idx] -= 2 * step
        expected[idx] = (up - interpret(graph, *moved)[0]) / (2 * step)
    return expected


def branched_graph():
    """A traced graph with a cond, a custom_vjp and a custom_jvp call and a
    stop_gradient (samples of those primitives, which the one-op cases cannot build)."""
    @llgrad.custom_vjp
    def clipped(x):
        return x

    clipped.defvjp(lambda x: (x, ()), lambda _, g: (lnp.clip(g, -1.0, 1.0),))

    @llgrad.custom_jvp
    def doubled(x):
        return 2 * x

    doubled.defjvp(lambda primals, tangents: (2 * primals[0], 2 * tangents[0]))

    def f(x):
        y = llgrad.cond(x.sum() > 0, np.sin, np.cos, clipped(x))
        return doubled(y) + llgrad.stop_gradient(x)

    return llgrad.jit(f).trace(np.ones(3)).ir


def taped_graph():
    """A traced graph with a while loop and a checkpointed region (samples of those
    primitives, which the one-op cases cannot build)."""
    def f(x):
        halved = llgrad.while_loop(lambda c: c.sum() > 1.0, lambda c: c / 2, x, max_steps=8)
        return llgrad.checkpoint(lambda c: np.tanh(c) * c)(halved)

    return llgrad.jit(f).trace(np.ones(3)).ir


def heap_taped_graph():
    """The body of the reversed loop of a while_loop without max_steps, which reads the
    forward loop's heap tape (a sample of ``tape_row``)."""
    def f(x):
        return np.sum(llgrad.while_loop(lambda c: c.sum() > 1.0, lambda c: np.sin(c), x))

    backward = llgrad.grad(f).trace(np.full(3, 2.0)).backward
    return next(n.attrs["body"] for n in backward.nodes if n.op == "while"
                and any(m.op == "tape_row" for m in n.attrs["body"].nodes))


def central_gradient(f, x, eps=1e-6):
    """d f / d x of a scalar numpy function by central differences, element by element."""
    grad = np.zeros_like(x)
    for i in range(x.size):
        step = np.zeros_like(x)
        step.flat[i] = eps
        grad.flat[i] = (f(x + step) - f(x - step)) / (2 * eps)
    return grad


def central_jacobian(f, x, eps=1e-6):
    """d f / d x of an array function by central differences: f's shape + x's shape
    (of a gradient function, the Hessian)."""
    columns = []
    for i in range(x.size):
        step = np.zeros_like(x)
        step.flat[i] = eps
        columns.append((np.asarray(f(x + step)) - np.asarray(f(x - step))) / (2 * eps))
    return np.moveaxis(np.array(columns), 0, -1).reshape(np.shape(columns[0]) + x.shape)


def looped_graph():
    """c ↦ c squared three times, as a native loop."""
    b = Builder()
    i = b.parameter(index=0, type=TensorType((), "int64"), name="i")
    c = b.parameter(index=1, type=TensorType((), "float64"), name="c")
    body = Graph([i, c], [b.mul(c, c)], name="body")
    outer = Builder()
    c0 = outer.parameter(index=0, type=TensorType((), "float64"), name="c0")
    looped = outer.loop(c0, body=body, trip_count=3, n_carried=1)
    return Graph([c0], [outer.tuple_get(looped, index=0)], name="looped")


def collective_graph():
    """An all-reduce of a flat buffer (MPICH-style handles: built and inspected, never
    run here; tests/test_distributed.py runs collectives in MPI jobs)."""
    b = Builder()
    x = b.parameter(index=0, type=TensorType((5,), "float64"), name="x")
    summed = b.allreduce_sum(x, comm=0x44000000, datatype=0x4C00080B, reduce_op=0x58000003,
                             handle_bits=32)
    return Graph([x], [summed], name="collective")


# ----------------------------------------------------------------------------------
# scalar functions written twice: in numpy (what llgrad traces) and in sympy (the
# oracle), so that the two share no code

#: the sympy symbols the oracle tables are written in
x, y = sp.symbols("x y", real=True)

#: name -> (numpy function of one argument, the same function in sympy over x)
UNARY = {
    "neg": (lambda a: -a, -x),
    "exp": (np.exp, sp.exp(x)),
    "log": (np.log, sp.log(x)),
    "log1p": (np.log1p, sp.log(1 + x)),
    "expm1": (np.expm1, sp.exp(x) - 1),
    "sin": (np.sin, sp.sin(x)),
    "cos": (np.cos, sp.cos(x)),
    "tanh": (np.tanh, sp.tanh(x)),
    "sigmoid": (lnp.sigmoid, 1 / (1 + sp.exp(-x))),
    "sqrt": (np.sqrt, sp.sqrt(x)),
    "abs": (np.abs, sp.Abs(x)),
    "square": (np.square, x ** 2),
    "cube": (lambda a: a ** 3, x ** 3),
    "reciprocal": (lambda a: 1 / a, 1 / x),
    "chain": (lambda a: (2 * a + 3) ** 2, (2 * x + 3) ** 2),
    "nested": (lambda a: np.sin(np.exp(np.tanh(a)) * a) / (1 + a * a),
               sp.sin(sp.exp(sp.tanh(x)) * x) / (1 + x ** 2)),
    "log_sqrt_pow": (lambda a: np.log(np.sqrt(a) + a ** 1.5), sp.log(sp.sqrt(x) + x ** 1.5)),
    "reuse": (lambda a: np.sin(a) * np.sin(a) + np.sin(a), sp.sin(x) ** 2 + sp.sin(x)),
    # inverse functions, their arguments scaled into their domains for every point
    "arcsin": (lambda a: np.arcsin(a / 2), sp.asin(x / 2)),
    "arccos": (lambda a: np.arccos(a / 2), sp.acos(x / 2)),
    "arctan": (np.arctan, sp.atan(x)),
    "arcsinh": (np.arcsinh, sp.asinh(x)),
    "arccosh": (lambda a: np.arccosh(a + 1), sp.acosh(x + 1)),
    "arctanh": (lambda a: np.arctanh(a / 2), sp.atanh(x / 2)),
}

#: name -> (numpy function of two arguments, the same function in sympy over x and y)
BINARY = {
    "add": (lambda a, b: a + b, x + y),
    "sub": (lambda a, b: a - b, x - y),
    "mul": (lambda a, b: a * b, x * y),
    "div": (lambda a, b: a / b, x / y),
    "pow": (lambda a, b: a ** b, x ** y),
    "max": (np.maximum, sp.Max(x, y)),
    "min": (np.minimum, sp.Min(x, y)),
    "mixed": (lambda a, b: np.tanh(a * b) * np.exp(b - a) + np.log(a + b * b),
              sp.tanh(x * y) * sp.exp(y - x) + sp.log(x + y ** 2)),
    "arctan2": (np.arctan2, sp.atan2(x, y)),
}


# ----------------------------------------------------------------------------------
# a small MLP (models.mlp_loss) and its Hessian-vector product

def small_mlp(seed):
    """Parameters, data and a random direction in parameter space."""
    rng = np.random.default_rng(seed)
    params = {"w1": rng.normal(size=(4, 5)), "b1": rng.normal(size=5) * 0.1,
              "w2": rng.normal(size=(5, 3)), "b2": rng.normal(size=3) * 0.1}
    xs, ys = rng.normal(size=(6, 4)), np.eye(3)[rng.integers(0, 3, 6)]
    return params, xs, ys, {k: rng.normal(size=v.shape) for k, v in params.items()}


def assert_is_mlp_hvp(hvp, params, xs, ys, direction, eps=1e-5):
    """``hvp`` is the MLP loss's Hessian times ``direction``: central differences of
    the gradient along it."""
    grad = llgrad.grad(mlp_loss)
    plus = grad({k: v + eps * direction[k] for k, v in params.items()}, xs, ys)
    minus = grad({k: v - eps * direction[k] for k, v in params.items()}, xs, ys)
    for k in params:
        np.testing.assert_allclose(hvp[k], (plus[k] - minus[k]) / (2 * eps), rtol=1e-6,
                                   atol=1e-8)


# ----------------------------------------------------------------------------------
# results compared bit for bit

def assert_identical(a, b):
    """``a`` is ``b`` in every respect: the same containers (dict keys in order), the
    same type of each leaf, and arrays of the same dtype, shape and bytes."""
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_identical(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_identical(x, y)
    elif isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes()
    else:
        assert a == b


# ----------------------------------------------------------------------------------
# threads

def run_threads(target, n=4):
    """Start ``n`` threads on ``target(k)`` together; re-raise the first failure."""
    barrier, errors = threading.Barrier(n), []

    def body(k):
        try:
            barrier.wait()
            target(k)
        except BaseException as exc:  # noqa: BLE001 - reported in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
