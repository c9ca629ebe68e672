"""The primitive table: every operation the IR knows, one record each.

A record holds a primitive's whole story except its machine code: the type rule,
its meaning in numpy (the reference the interpreter and the tests use), its kind,
its cost and its derivative.  Elementwise primitives state their derivative as a
sympy formula (``formula``), differentiated by ``sympy.diff`` on first use;
the others carry a hand-written reverse-mode rule (``vjp``).  Where sympy's partial
would be 0·inf at a point where the function is constant, the record states its
``partials`` in sympy instead (pow).  ``lowering`` names the row of
``compiler/codegen/lowering.py`` that turns the primitive into LLVM IR.

The kind says what a primitive does with elements, which is what the passes ask:

- ``elementwise``: each result element from the operands' elements at the same
  index (the math ops, ``select``, ``convert``);
- ``comparison``: elementwise, with a bool result (``lt`` ... ``ne``);
- ``reduction``: combines the elements along some axes (``reduce_sum``, ``reduce_max``);
- ``indexing``: reads or writes elements at positions given by indices, static or
  traced (``slice``, ``pad`` (its transpose), ``dynamic_slice``,
  ``dynamic_update_slice``, ``take``, ``scatter_add``);
- ``structural``: builds a value from whole operands, rearranged or combined
  (``broadcast_in_dim``, ``reshape``, ``transpose``, ``concatenate``, ``iota``,
  ``dot_general``, ``loop``, ``tuple_get``);
- ``leaf``: has no operands (``constant``, ``parameter``).

``flops(node)`` counts a node's arithmetic with its record's rule, by default the
kind's: one per result element for elementwise ops and comparisons, one per operand
element for reductions, none for data movement and leaves.  ``recompute`` marks the
operations cheap enough that fusion repeats them in every reader's loop rather than
store them (no transcendental calls).

A vjp rule is ``vjp(b, node, g) -> one adjoint (or None) per input``: ``b`` is the
Builder of the joint graph, ``node`` the forward node, ``g`` its adjoint.

``batch`` is vmap's rule (``ir/batch_rules.py`` says its contract): by default the
kind's (elementwise ops broadcast unbatched operands, reductions shift their axes, the
rest run per example), stated here for the shape, indexing and dot_general records.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from llgrad.ir import batch_rules
from llgrad.ir.errors import DTypeError, ShapeError
from llgrad.ir.types import TensorType


@dataclass(frozen=True)
class Primitive:
    name: str
    type_rule: Callable
    evaluate: Callable          # numpy meaning: evaluate(*arrays, **attrs) -> ndarray
    lowering: str               # key of the codegen table
    kind: str                   # one of KINDS (see the module docstring)
    flops: Callable             # flops(node) -> arithmetic operations of the node
    formula: Optional[str] = None   # sympy expression in x (and y) for elementwise ops
    partials: Optional[tuple] = None  # d formula / d x (and y) in sympy, where not sympy's
    vjp: Optional[Callable] = None  # hand-written reverse rule for structural ops
    jvp: Optional[Callable] = None  # hand-written forward rule for structural ops
    batch: Optional[Callable] = None  # vmap's rule (ir/batch_rules.py); by default the kind's
    linear: bool = False        # forward rule: the same op applied to the tangents
    differentiable: bool = True
    pure: bool = True           # False: never merged by hash-consing (parameters)
    recompute: bool = False     # cheap enough for fusion to repeat in every reader

    @property
    def symbolic(self) -> bool:
        """Whether the derivative comes from the sympy formula: the elementwise math ops
        (select and convert are elementwise in kind, with hand-written rules)."""
        return self.formula is not None


def _per_element(node) -> int:
    return node.type.size


def _per_operand_element(node) -> int:
    return node.inputs[0].type.size


def _no_arithmetic(node) -> int:
    return 0


#: each kind's flops rule, which a record may replace
_KIND_FLOPS = {"elementwise": _per_element, "comparison": _per_element,
               "reduction": _per_operand_element, "indexing": _no_arithmetic,
               "structural": _no_arithmetic, "leaf": _no_arithmetic}
KINDS = tuple(_KIND_FLOPS)

PRIMITIVES: dict[str, Primitive] = {}


def register(name, type_rule, evaluate, kind, *, lowering=None, flops=None,
             **fields) -> Primitive:
    if kind not in KINDS:
        raise ValueError(f"primitive {name}: kind {kind!r} is not one of {KINDS}")
    fields.setdefault("batch", batch_rules.KIND_BATCH[kind])
    prim = Primitive(name, type_rule, evaluate, lowering or name, kind,
                     flops or _KIND_FLOPS[kind], **fields)
    PRIMITIVES[name] = prim
    return prim


def flops(node) -> int:
    """Arithmetic operations of one node (2·M·N·K for a matmul), by its record's rule."""
    return PRIMITIVES[node.op].flops(node)


# ----------------------------------------------------------------------------------
# type rules

def _same_types(op, types):
    first = types[0]
    for t in types[1:]:
        if t.shape != first.shape:
            raise ShapeError(f"{op}: operand shapes {[x.shape for x in types]} differ")
        if t.dtype != first.dtype:
            raise DTypeError(f"{op}: operand dtypes {[x.dtype for x in types]} differ")
    return first


def float_elementwise(op):
    def rule(types):
        t = _same_types(op, types)
        if not t.is_float:
            raise DTypeError(f"{op} needs floating-point operands, got {t.dtype}")
        return t
    return rule


def numeric_elementwise(op):
    def rule(types):
        t = _same_types(op, types)
        if t.dtype == "bool":
            raise DTypeError(f"{op} does not accept bool operands")
        return t
    return rule


def integer_elementwise(op):
    def rule(types):
        t = _same_types(op, types)
        if t.dtype != "int64":
            raise DTypeError(f"{op} needs int64 operands, got {t.dtype}")
        return t
    return rule


def comparison(op):
    def rule(types):
        return _same_types(op, types).with_dtype("bool")
    return rule


def _check_axes(op, axes, ndim):
    if len(set(axes)) != len(axes) or any(not 0 <= a < ndim for a in axes):
        raise ShapeError(f"{op}: axes {axes} are invalid for rank {ndim}")


# ----------------------------------------------------------------------------------
# elementwise: the formula is the derivative's source; x and y are the operands

def _special(name, scalar):
    """numpy meaning of a special function numpy lacks: scipy.special's ufunc where
    scipy is installed (imported on first use), else the scalar ``math`` function
    element by element (``scalar`` returning inf where C's does and math raises)."""
    def evaluate(x):
        try:
            import scipy.special as sc
            out = getattr(sc, name)(x)
        except ImportError:
            out = np.vectorize(scalar, otypes=[np.float64])(x)
        return np.asarray(out).astype(x.dtype)
    return evaluate


def _lgamma_scalar(v):
    import math
    try:
        return math.lgamma(v)
    except ValueError:   # a pole: C's lgamma (and scipy's gammaln) give +inf
        return float("inf")


def _math_fn(name):
    import math
    return getattr(math, name)


# digamma by the same steps as its lowering (codegen/lowering.py ``_digamma``)
DIGAMMA_SHIFT = 10
#: psi(z) ~ log z - 1/(2z) - sum_k B_2k / (2k z^2k): the coefficients B_2k / 2k
DIGAMMA_SERIES = (1 / 12, -1 / 120, 1 / 252, -1 / 240, 1 / 132, -691 / 32760, 1 / 12)


def digamma_reference(x):
    """psi(x) in numpy: reflection for x < 0, recurrence up by DIGAMMA_SHIFT, then the
    asymptotic series (the fallback where scipy is absent)."""
    x = np.asarray(x)
    with np.errstate(all="ignore"):
        t = x.astype(np.float64)
        neg = t < 0
        z = np.where(neg, 1 - t, t)
        shift = sum(1 / (z + k) for k in range(DIGAMMA_SHIFT))
        z = z + DIGAMMA_SHIFT
        w = 1 / (z * z)
        poly = 0.0
        for c in reversed(DIGAMMA_SERIES):
            poly = (poly + c) * w
        psi = np.log(z) - 0.5 / z - poly - shift
        psi = np.where(neg, psi - np.pi / np.tan(np.pi * t), psi)
    return psi.astype(x.dtype)


def _digamma_evaluate(x):
    try:
        import scipy.special as sc
    except ImportError:
        return digamma_reference(x)
    return np.asarray(sc.digamma(x)).astype(x.dtype)


_ELEMENTWISE = {
    # name: (formula, numpy, accepts integers, cheap to recompute)
    "neg": ("-x", np.negative, True, True),
    "exp": ("exp(x)", np.exp, False, False),
    "log": ("log(x)", np.log, False, False),
    "log1p": ("log1p(x)", np.log1p, False, False),
    "expm1": ("expm1(x)", np.expm1, False, False),
    "sin": ("sin(x)", np.sin, False, False),
    "cos": ("cos(x)", np.cos, False, False),
    "tanh": ("tanh(x)", np.tanh, False, False),
    "logistic": ("logistic(x)", lambda x: (1 / (1 + np.exp(-x))).astype(x.dtype), False,
                 False),
    "sqrt": ("sqrt(x)", np.sqrt, False, False),
    "abs": ("Abs(x)", np.abs, True, True),
    "sign": ("sign(x)", np.sign, True, True),
    "add": ("x + y", np.add, True, True),
    "sub": ("x - y", np.subtract, True, True),
    "mul": ("x * y", np.multiply, True, True),
    "div": ("x / y", np.divide, False, False),
    "pow": ("x ** y", np.power, False, False),
    "max": ("Max(x, y)", np.maximum, True, True),
    "min": ("Min(x, y)", np.minimum, True, True),
    "asin": ("asin(x)", np.arcsin, False, False),
    "acos": ("acos(x)", np.arccos, False, False),
    "atan": ("atan(x)", np.arctan, False, False),
    "asinh": ("asinh(x)", np.arcsinh, False, False),
    "acosh": ("acosh(x)", np.arccosh, False, False),
    "atanh": ("atanh(x)", np.arctanh, False, False),
    "atan2": ("atan2(x, y)", np.arctan2, False, False),
    # piecewise constant: derivative 0 almost everywhere (the steps' deltas dropped, as
    # sign's); rint rounds half to even, as np.rint and np.round
    "floor": ("floor(x)", np.floor, False, True),
    "ceil": ("ceil(x)", np.ceil, False, True),
    "rint": ("rint(x)", np.rint, False, True),
    "trunc": ("trunc(x)", np.trunc, False, True),
    # C's remainder, with the dividend's sign; integers too (x fmod 0 is 0, as numpy)
    "fmod": ("x - y*trunc(x/y)", np.fmod, True, False),
    # special functions (llgrad.scipy.special); erf's derivative is 2/sqrt(pi)·exp(-x²),
    # lgamma's (log|gamma|, scipy's gammaln) is digamma, a primitive of its own below
    "erf": ("erf(x)", _special("erf", _math_fn("erf")), False, False),
    "erfc": ("erfc(x)", _special("erfc", _math_fn("erfc")), False, False),
    "lgamma": ("loggamma(x)", _special("gammaln", _lgamma_scalar), False, False),
}
#: partials stated by hand, where sympy's are 0·inf at a point where the function is
#: constant: x ** y is 1 for y = 0 whatever x, and 0 for x = 0 whatever y > 0, but
#: y·x**(y-1) at x = y = 0 is 0·inf, and x**y·log(x) at x = 0 is 0·(-inf).  Each select
#: guards an operand of the partial at exactly that point (as autograd does), not the
#: partial itself: around the whole, the branch not taken would still get a zero adjoint
#: in a second derivative, times its infinite partial; and elsewhere the partial is
#: sympy's, so are its own derivatives.  test_derivative_table checks them against sympy's.
_PARTIALS = {"pow": ("y * x ** Piecewise((1, Eq(x, 0) & Eq(y, 0)), (y - 1, True))",
                     "x ** y * log(Piecewise((1, Eq(x, 0)), (x, True)))")}
for _name, (_formula, _fn, _ints, _cheap) in _ELEMENTWISE.items():
    register(_name, (numeric_elementwise if _ints else float_elementwise)(_name),
             _fn, "elementwise", formula=_formula, partials=_PARTIALS.get(_name),
             recompute=_cheap)

for _name, _fn in {"lt": np.less, "le": np.less_equal, "gt": np.greater,
                   "ge": np.greater_equal, "eq": np.equal, "ne": np.not_equal}.items():
    register(_name, comparison(_name), _fn, "comparison", differentiable=False,
             recompute=True)




def _digamma_not_differentiable(b, node, g):
    """digamma's derivative is trigamma, which llgrad does not compute: refuse loudly
    (so gammaln has a first derivative, not a second)."""
    from llgrad.ir.errors import GradientError
    raise GradientError("digamma is not differentiable in llgrad (its derivative, "
                        "trigamma, is not implemented): gammaln has first derivatives "
                        "only")


# psi, the derivative of lgamma: computed by a series in the lowering (libm has none)
register("digamma", float_elementwise("digamma"), _digamma_evaluate, "elementwise",
         vjp=_digamma_not_differentiable, jvp=_digamma_not_differentiable)


# numpy's // of integers (floats' is composed from fmod and floor in the front end): x // 0
# is 0 and INT64_MIN // -1 wraps to INT64_MIN, as numpy; integers have no derivative
register("floordiv", integer_elementwise("floordiv"), np.floor_divide, "elementwise",
         differentiable=False, recompute=True)


def _select_type(types):
    cond, a, b = types
    if cond.dtype != "bool":
        raise DTypeError(f"select: condition must be bool, got {cond.dtype}")
    _same_types("select", [cond.with_dtype(a.dtype), a, b])
    return a


def _select_vjp(b, node, g):
    cond = node.inputs[0]
    zeros = b.full(0.0, g.type)
    return None, b.select(cond, g, zeros), b.select(cond, zeros, g)


register("select", _select_type, np.where, "elementwise", vjp=_select_vjp, linear=True,
         recompute=True)


def _convert_vjp(b, node, g):
    x = node.inputs[0]
    return (b.convert(g, dtype=x.dtype) if x.type.is_float else None,)


def _convert_eval(x, dtype):
    """astype, except float -> int64 saturates (NaN -> 0, ±inf and out-of-range values
    -> the nearest int64), as the native lowering does: numpy's own result there is
    platform-defined (INT64_MIN on x86, with a warning)."""
    if dtype == "int64" and x.dtype.kind == "f":
        limit = np.float64(2.0 ** 63)   # the smallest float above INT64_MAX
        wide = np.nan_to_num(np.asarray(x, np.float64), nan=0.0, posinf=limit, neginf=-limit)
        return np.where(wide >= limit, np.iinfo(np.int64).max,
                        np.maximum(wide, -limit).astype(np.int64))
    return x.astype(TensorType((), dtype).np_dtype)


# a conversion changes a value's representation, not its value: counted as data movement
register("convert", lambda types, dtype: types[0].with_dtype(dtype), _convert_eval,
         "elementwise", flops=_no_arithmetic, vjp=_convert_vjp, linear=True, recompute=True)


# ----------------------------------------------------------------------------------
# reductions (over the given axes, which disappear; keepdims is a reshape in the front end)

def _reduce_type(op):
    def rule(types, axes):
        (t,) = types
        _check_axes(op, axes, t.ndim)
        if t.dtype == "bool":
            raise DTypeError(f"{op} does not accept bool operands")
        return t.with_shape(n for d, n in enumerate(t.shape) if d not in axes)
    return rule


def _kept_shape(x_shape, axes):
    return tuple(1 if d in axes else n for d, n in enumerate(x_shape))


def _spread(b, v, node):
    """``v``, shaped like reduction ``node``'s result, broadcast back over its operand."""
    x = node.inputs[0]
    return b.broadcast_to(b.reshape(v, shape=_kept_shape(x.shape, node.attrs["axes"])),
                          x.shape)


def _reduce_sum_vjp(b, node, g):
    return (_spread(b, g, node),)


def _maxima(b, node):
    """1 where the operand of reduce_max ``node`` equals its maximum, else 0."""
    x = node.inputs[0]
    return b.convert(b.eq(x, _spread(b, node, node)), dtype=x.dtype)


def _reduce_max_vjp(b, node, g):
    """Ties share the adjoint equally (as in JAX), so the rule is exact for ties too."""
    mask = _maxima(b, node)
    count = b.reduce_sum(mask, axes=node.attrs["axes"])
    return (b.mul(_spread(b, b.div(g, count), node), mask),)


def _reduce_max_jvp(b, node, tangents):
    """The mean of the tangents at the maxima (the transpose of the vjp's tie rule)."""
    mask, axes = _maxima(b, node), node.attrs["axes"]
    return b.div(b.reduce_sum(b.mul(tangents[0], mask), axes=axes),
                 b.reduce_sum(mask, axes=axes))


register("reduce_sum", _reduce_type("reduce_sum"),
         lambda x, axes: np.sum(x, axis=axes, dtype=x.dtype), "reduction",
         vjp=_reduce_sum_vjp, linear=True)
register("reduce_max", _reduce_type("reduce_max"),
         lambda x, axes: np.max(x, axis=axes), "reduction", vjp=_reduce_max_vjp,
         jvp=_reduce_max_jvp)


# ----------------------------------------------------------------------------------
# shape primitives

def _broadcast_in_dim_type(types, shape, dims):
    (t,) = types
    if len(dims) != t.ndim or list(dims) != sorted(set(dims)) or any(
            not 0 <= d < len(shape) or t.shape[i] not in (1, shape[d])
            for i, d in enumerate(dims)):
        raise ShapeError(f"broadcast_in_dim: cannot broadcast {t.shape} to {shape} "
                         f"along dims {dims}")
    return t.with_shape(shape)


def _broadcast_in_dim_eval(x, shape, dims):
    kept = [1] * len(shape)
    for i, d in enumerate(dims):
        kept[d] = x.shape[i]
    return np.broadcast_to(x.reshape(kept), shape).copy()


def _broadcast_in_dim_vjp(b, node, g):
    x = node.inputs[0]
    dims = node.attrs["dims"]
    summed = tuple(d for d in range(g.type.ndim) if d not in dims) + tuple(
        d for i, d in enumerate(dims) if x.shape[i] == 1 and g.shape[d] != 1)
    if summed:
        g = b.reduce_sum(g, axes=tuple(sorted(summed)))
    return (g if g.shape == x.shape else b.reshape(g, shape=x.shape),)


def _reshape_type(types, shape):
    (t,) = types
    if int(np.prod(shape, dtype=np.int64)) != t.size:
        raise ShapeError(f"reshape: cannot reshape {t.shape} into {tuple(shape)}")
    return t.with_shape(shape)


def _transpose_type(types, perm):
    (t,) = types
    if sorted(perm) != list(range(t.ndim)):
        raise ShapeError(f"transpose: {perm} is not a permutation of the axes of {t.shape}")
    return t.with_shape(t.shape[p] for p in perm)


def _transpose_vjp(b, node, g):
    return (b.transpose(g, perm=tuple(np.argsort(node.attrs["perm"]).tolist())),)


def _slice_type(types, starts, limits, strides):
    (t,) = types
    if not (len(starts) == len(limits) == len(strides) == t.ndim) or any(
            not (0 <= s <= l <= n) or st < 1
            for s, l, st, n in zip(starts, limits, strides, t.shape)):
        raise ShapeError(f"slice: starts {starts}, limits {limits}, strides {strides} "
                         f"do not fit {t.shape}")
    return t.with_shape(-(-(l - s) // st) for s, l, st in zip(starts, limits, strides))


def _slice_vjp(b, node, g):
    x = node.inputs[0]
    a = node.attrs
    high = tuple(n - s - ((m - 1) * st + 1) if m else n - s
                 for n, s, st, m in zip(x.shape, a["starts"], a["strides"], g.shape))
    return (b.pad(g, low=a["starts"], high=high,
                  interior=tuple(st - 1 for st in a["strides"])),)


def _pad_type(types, low, high, interior):
    (t,) = types
    if not (len(low) == len(high) == len(interior) == t.ndim) or min(
            (*low, *high, *interior), default=0) < 0:
        raise ShapeError(f"pad: low {low}, high {high}, interior {interior} do not fit {t.shape}")
    return t.with_shape(lo + n + max(n - 1, 0) * it + hi
                        for n, lo, hi, it in zip(t.shape, low, high, interior))


def _pad_eval(x, low, high, interior):
    out = np.zeros(_pad_type([TensorType(x.shape, "float64")], low, high, interior).shape,
                   x.dtype)
    out[tuple(slice(lo, lo + (n - 1) * (it + 1) + 1 if n else lo, it + 1)
              for n, lo, it in zip(x.shape, low, interior))] = x
    return out


def _pad_vjp(b, node, g):
    x = node.inputs[0]
    a = node.attrs
    starts = a["low"]
    strides = tuple(it + 1 for it in a["interior"])
    limits = tuple(lo + (n - 1) * st + 1 if n else lo
                   for lo, n, st in zip(starts, x.shape, strides))
    return (b.slice(g, starts=starts, limits=limits, strides=strides),)


def _concatenate_type(types, axis):
    first = types[0]
    for t in types[1:]:
        if t.dtype != first.dtype or t.ndim != first.ndim or any(
                a != c for d, (a, c) in enumerate(zip(t.shape, first.shape)) if d != axis):
            raise ShapeError(f"concatenate: shapes {[x.shape for x in types]} do not fit "
                             f"along axis {axis}")
    if not 0 <= axis < first.ndim:
        raise ShapeError(f"concatenate: axis {axis} out of range for rank {first.ndim}")
    shape = list(first.shape)
    shape[axis] = sum(t.shape[axis] for t in types)
    return first.with_shape(shape)


def _concatenate_vjp(b, node, g):
    axis, offset, out = node.attrs["axis"], 0, []
    for x in node.inputs:
        starts = [0] * g.type.ndim
        limits = list(g.shape)
        starts[axis], limits[axis] = offset, offset + x.shape[axis]
        offset += x.shape[axis]
        out.append(b.slice(g, starts=tuple(starts), limits=tuple(limits),
                           strides=(1,) * g.type.ndim))
    return tuple(out)


def _iota_eval(shape, dtype, axis):
    kept = [1] * len(shape)
    kept[axis] = shape[axis]
    return np.broadcast_to(np.arange(shape[axis], dtype=TensorType((), dtype).np_dtype)
                           .reshape(kept), shape).copy()


def _concatenate_batch(b, node, args, batched):
    return b.concatenate(*batch_rules.all_batched(b, args, batched),
                         axis=node.attrs["axis"] + 1)


register("broadcast_in_dim", _broadcast_in_dim_type, _broadcast_in_dim_eval, "structural",
         vjp=_broadcast_in_dim_vjp, linear=True,
         batch=batch_rules.leading_axis(shape="size", dims="axis"))
register("reshape", _reshape_type, lambda x, shape: x.reshape(shape), "structural",
         vjp=lambda b, node, g: (b.reshape(g, shape=node.inputs[0].shape),), linear=True,
         batch=batch_rules.leading_axis(shape="size"))
register("transpose", _transpose_type, lambda x, perm: np.transpose(x, perm).copy(),
         "structural", vjp=_transpose_vjp, linear=True,
         batch=batch_rules.leading_axis(perm="axis"))
register("slice", _slice_type,
         lambda x, starts, limits, strides: x[tuple(
             slice(s, l, st) for s, l, st in zip(starts, limits, strides))].copy(),
         "indexing", vjp=_slice_vjp, linear=True,
         batch=batch_rules.leading_axis(starts=0, limits="size", strides=1))
register("pad", _pad_type, _pad_eval, "indexing", vjp=_pad_vjp, linear=True,
         batch=batch_rules.leading_axis(low=0, high=0, interior=0))
register("concatenate", lambda types, axis: _concatenate_type(types, axis),
         lambda *xs, axis: np.concatenate(xs, axis=axis), "structural",
         vjp=_concatenate_vjp, linear=True, batch=_concatenate_batch)
register("iota", lambda types, shape, dtype, axis: TensorType(shape, dtype), _iota_eval,
         "structural", differentiable=False)


# ----------------------------------------------------------------------------------
# dynamic indexing: row blocks chosen by a runtime scalar (minibatch i of a data set)

def _dynamic_slice_type(types, size):
    x, start = types
    if start.shape != () or start.dtype != "int64":
        raise DTypeError(f"dynamic_slice: start must be an int64 scalar, got {start}")
    if x.ndim == 0 or not 0 <= size <= x.shape[0]:
        raise ShapeError(f"dynamic_slice: cannot take {size} rows of {x.shape}")
    return x.with_shape((size,) + x.shape[1:])


def _clamped_start(start, size, rows):
    """Out-of-range starts are clamped (as in XLA), so generated code never overruns."""
    return int(min(max(int(start), 0), rows - size))


def _dynamic_update_slice_type(types):
    x, update, start = types
    if start.shape != () or start.dtype != "int64":
        raise DTypeError(f"dynamic_update_slice: start must be an int64 scalar, got {start}")
    if update.dtype != x.dtype or update.shape[1:] != x.shape[1:] or (
            x.ndim == 0 or update.shape[0] > x.shape[0]):
        raise ShapeError(f"dynamic_update_slice: cannot write {update} into {x}")
    return x


def _dynamic_update_slice_eval(x, update, start):
    out = x.copy()
    s = _clamped_start(start, update.shape[0], x.shape[0])
    out[s:s + update.shape[0]] = update
    return out


def _rows_batch(at, index_batched=batch_rules.per_example):
    """The batching rule of an op on rows (axis 0) chosen by its operand ``at`` (a start
    or indices): while that is unbatched, the same op with the batch moved behind the
    rows of the other operands; else ``index_batched``."""
    def rule(b, node, args, batched):
        if batched[at]:
            return index_batched(b, node, args, batched)
        n = batch_rules.batch_size(args, batched)
        moved = [a if k == at else batch_rules.move_axis(
            b, batch_rules.with_batch(b, a, flag, n), 0, 1)
            for k, (a, flag) in enumerate(zip(args, batched))]
        return batch_rules.move_axis(b, b.emit(node.op, *moved, **node.attrs), 1, 0)
    return rule


register("dynamic_slice", _dynamic_slice_type,
         lambda x, start, size: x[_clamped_start(start, size, x.shape[0]):][:size].copy(),
         "indexing", vjp=lambda b, node, g: (b.dynamic_update_slice(
             b.full(0.0, node.inputs[0].type), g, node.inputs[1]), None), linear=True,
         batch=_rows_batch(1))
register("dynamic_update_slice", _dynamic_update_slice_type, _dynamic_update_slice_eval,
         "indexing", vjp=lambda b, node, g: (
             b.dynamic_update_slice(g, b.full(0.0, node.inputs[1].type), node.inputs[2]),
             b.dynamic_slice(g, node.inputs[2], size=node.inputs[1].shape[0]), None),
         linear=True, batch=_rows_batch(2))


def _take_type(types):
    x, idx = types
    if idx.dtype != "int64" or idx.ndim != 1:
        raise DTypeError(f"take: indices must be a 1-d int64 array, got {idx}")
    if x.ndim == 0 or x.shape[0] == 0:
        raise ShapeError(f"take: cannot take rows of {x}")
    return x.with_shape(idx.shape + x.shape[1:])


def _scatter_add_type(types):
    x, idx, updates = types
    if idx.dtype != "int64" or idx.ndim != 1:
        raise DTypeError(f"scatter_add: indices must be a 1-d int64 array, got {idx}")
    if x.ndim == 0 or x.shape[0] == 0 or updates.dtype != x.dtype or (
            updates.shape != idx.shape + x.shape[1:]):
        raise ShapeError(f"scatter_add: cannot add {updates} into rows of {x} at {idx}")
    if x.dtype == "bool":
        raise DTypeError("scatter_add does not accept bool arrays")
    return x


def _scatter_add_eval(x, idx, updates):
    out = x.copy()
    np.add.at(out, np.clip(idx, 0, x.shape[0] - 1), updates)  # duplicates accumulate
    return out


def _flat_rows(b, idx, rows):
    """Batched row indices (one row of them per example) into arrays of ``rows`` rows as
    indices into the rows of all examples' arrays one after another, each clamped to
    its own example as take clamps."""
    clamped = b.max(b.min(idx, b.full(rows - 1, idx.type)), b.full(0, idx.type))
    offsets = b.mul(b.iota(shape=idx.shape, dtype="int64", axis=0), b.full(rows, idx.type))
    return b.reshape(b.add(clamped, offsets), shape=(idx.type.size,))


def _take_batched_indices(b, node, args, batched):
    x, idx = args
    if not batched[0]:   # the same table for every example: one take of all indices
        out = b.take(x, b.reshape(idx, shape=(idx.type.size,)))
        return b.reshape(out, shape=idx.shape + x.shape[1:])
    n, rows = x.shape[:2]
    out = b.take(b.reshape(x, shape=(n * rows,) + x.shape[2:]), _flat_rows(b, idx, rows))
    return b.reshape(out, shape=idx.shape + x.shape[2:])


def _scatter_add_batched_indices(b, node, args, batched):
    x, idx, updates = batch_rules.all_batched(b, args, batched)
    n, rows = x.shape[:2]
    out = b.scatter_add(b.reshape(x, shape=(n * rows,) + x.shape[2:]),
                        _flat_rows(b, idx, rows),
                        b.reshape(updates, shape=(idx.type.size,) + updates.shape[2:]))
    return b.reshape(out, shape=x.shape)


register("take", _take_type,
         lambda x, idx: x[np.clip(idx, 0, x.shape[0] - 1)],  # clamped like dynamic_slice
         "indexing", vjp=lambda b, node, g: (
             b.scatter_add(b.full(0.0, node.inputs[0].type), node.inputs[1], g), None),
         linear=True, batch=_rows_batch(1, _take_batched_indices))
register("scatter_add", _scatter_add_type, _scatter_add_eval, "indexing",
         vjp=lambda b, node, g: (g, None, b.take(g, node.inputs[1])), linear=True,
         batch=_rows_batch(1, _scatter_add_batched_indices))


# ----------------------------------------------------------------------------------
# dot_general: contraction with batch dimensions, in jax.lax's convention.
# dims = ((lhs_contracting, rhs_contracting), (lhs_batch, rhs_batch)); the result has
# the batch axes, then lhs's free axes, then rhs's free axes, each in increasing order.

def _free_axes(ndim, contracting, batch):
    return tuple(d for d in range(ndim) if d not in contracting and d not in batch)


def _dot_general_type(types, dims):
    lhs, rhs = types
    (lc, rc), (lb, rb) = dims
    ok = (len(lc) == len(rc) and len(lb) == len(rb)
          and all(lhs.shape[a] == rhs.shape[c] for a, c in zip(lc + lb, rc + rb))
          and lhs.dtype == rhs.dtype)
    if not ok:
        raise ShapeError(f"dot_general: cannot contract {lhs} with {rhs} "
                         f"(contracting {lc}/{rc}, batch {lb}/{rb})")
    if not lhs.is_float:
        raise DTypeError(f"dot_general needs floating-point operands, got {lhs.dtype}")
    return lhs.with_shape(tuple(lhs.shape[d] for d in lb)
                          + tuple(lhs.shape[d] for d in _free_axes(lhs.ndim, lc, lb))
                          + tuple(rhs.shape[d] for d in _free_axes(rhs.ndim, rc, rb)))


def _dot_general_eval(lhs, rhs, dims):
    (lc, rc), (lb, rb) = dims
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    ls, rs = [None] * lhs.ndim, [None] * rhs.ndim
    for a, c in zip(lc + lb, rc + rb):
        ls[a] = rs[c] = next(letters)
    for s in (ls, rs):
        for i, v in enumerate(s):
            s[i] = v or next(letters)
    out = ([ls[d] for d in lb] + [ls[d] for d in _free_axes(lhs.ndim, lc, lb)]
           + [rs[d] for d in _free_axes(rhs.ndim, rc, rb)])
    return np.einsum(f"{''.join(ls)},{''.join(rs)}->{''.join(out)}", lhs, rhs)


def _dot_general_vjp(b, node, g):
    """Each adjoint is another dot_general of g with the other operand, ordered so
    that for a plain matmul the result already has the operand's layout
    (dx = g·wᵀ, dw = xᵀ·g); a transpose restores the order in general."""
    lhs, rhs = node.inputs
    (lc, rc), (lb, rb) = node.attrs["dims"]
    nb = len(lb)
    lf = _free_axes(lhs.type.ndim, lc, lb)
    rf = _free_axes(rhs.type.ndim, rc, rb)
    g_batch = tuple(range(nb))
    g_lf = tuple(range(nb, nb + len(lf)))
    g_rf = tuple(range(nb + len(lf), g.type.ndim))

    def into_layout(d, ndim, batch, middle, last):
        """Transpose d (axes: batch, middle, last) into an operand's own axis order."""
        source = [0] * ndim
        for i, a in enumerate(tuple(batch) + tuple(middle) + tuple(last)):
            source[a] = i
        return d if source == list(range(ndim)) else b.transpose(d, perm=tuple(source))

    # d lhs = g · rhsᵀ: axes (batch, lhs free, rhs contracting in increasing order)
    d_lhs = b.dot_general(g, rhs, dims=((g_rf, rf), (g_batch, rb)))
    lc_by_rc = [l for _, l in sorted(zip(rc, lc))]
    # d rhs = lhsᵀ · g: axes (batch, lhs contracting in increasing order, rhs free)
    d_rhs = b.dot_general(lhs, g, dims=((lf, g_lf), (lb, g_batch)))
    rc_by_lc = [r for _, r in sorted(zip(lc, rc))]
    return (into_layout(d_lhs, lhs.type.ndim, lb, lf, lc_by_rc),
            into_layout(d_rhs, rhs.type.ndim, rb, rc_by_lc, rf))


def _dot_general_jvp(b, node, tangents):
    """Bilinear: d(x·y) = dx·y + x·dy."""
    (lhs, rhs), (t_lhs, t_rhs), dims = node.inputs, tangents, node.attrs["dims"]
    terms = ([b.dot_general(t_lhs, rhs, dims=dims)] if t_lhs is not None else []) + (
        [b.dot_general(lhs, t_rhs, dims=dims)] if t_rhs is not None else [])
    return terms[0] if len(terms) == 1 else b.add(*terms)


def _dot_general_flops(node) -> int:
    """A multiply and an add per result element and contracted index: 2·M·N·K."""
    lhs = node.inputs[0].shape
    contracted = 1
    for axis in node.attrs["dims"][0][0]:
        contracted *= lhs[axis]
    return 2 * node.type.size * contracted


def _dot_general_batch(b, node, args, batched):
    """Both operands batched: the batch becomes the first batch dimension.  One: the
    batch is a free axis of that operand, moved to the front of the result."""
    lhs, rhs = args
    (lc, rc), (lb, rb) = node.attrs["dims"]

    def up(axes):
        return tuple(a + 1 for a in axes)

    if all(batched):
        return b.dot_general(lhs, rhs, dims=((up(lc), up(rc)), ((0,) + up(lb), (0,) + up(rb))))
    if batched[0]:   # lhs's axis 0 is its first free axis
        out, at = b.dot_general(lhs, rhs, dims=((up(lc), rc), (up(lb), rb))), len(lb)
    else:            # rhs's first free axis comes after lhs's free axes
        out = b.dot_general(lhs, rhs, dims=((lc, up(rc)), (lb, up(rb))))
        at = lhs.type.ndim - len(lc)
    return batch_rules.move_axis(b, out, at, 0)


register("dot_general", lambda types, dims: _dot_general_type(types, dims), _dot_general_eval,
         "structural", flops=_dot_general_flops, vjp=_dot_general_vjp, jvp=_dot_general_jvp,
         batch=_dot_general_batch)


# ----------------------------------------------------------------------------------
# leaves

def _constant_eval(value):
    return np.array(value)


register("constant", lambda types, value: TensorType(value.shape, _dtype_of(value)),
         _constant_eval, "leaf", differentiable=False)


def _parameter_eval(**attrs):
    raise RuntimeError("parameters are bound to arguments by the interpreter, not evaluated")


register("parameter", lambda types, index, type, name: type, _parameter_eval, "leaf",
         differentiable=False, pure=False)


def _dtype_of(value):
    from llgrad.ir.types import dtype_name
    return dtype_name(value.dtype)


# ----------------------------------------------------------------------------------
# structured control flow: a counted loop (scan-like) and reading its results

def _loop_type(types, body, trip_count, n_carried, runtime_count=False):
    """Inputs: initial carried values, then loop invariants.  The body maps
    (step: i64[], carried..., invariants...) to (new carried..., per-step values...);
    the loop yields the final carried values, then each per-step value stacked over
    the ``trip_count`` steps (as jax.lax.scan's ys).  ``runtime_count=True``: one more
    input, last, an i64[] that says how many steps run, clamped to [0, trip_count]
    (``trip_count`` is then the static bound that sizes the stacked values; their rows
    from the count on are zero), so one compiled loop serves every count."""
    if runtime_count:
        if not types or types[-1] != TensorType((), "int64"):
            raise ShapeError(f"loop: its runtime trip count (last input) is "
                             f"{types[-1] if types else 'missing'}, not i64[]")
        types = types[:-1]
    body_in = [p.type for p in body.inputs]
    if body_in[0] != TensorType((), "int64") or body_in[1:] != list(types):
        raise ShapeError(f"loop: body takes {body_in}, loop passes (i64[], {list(types)})")
    body_out = [o.type for o in body.outputs]
    if body_out[:n_carried] != list(types[:n_carried]):
        raise ShapeError(f"loop: body returns {body_out[:n_carried]} for carried values of "
                         f"types {list(types[:n_carried])}")
    return tuple(body_out[:n_carried]) + tuple(
        t.with_shape((trip_count,) + t.shape) for t in body_out[n_carried:])


def _loop_not_differentiable(b, node, g):
    """The rules of loop and tuple_get until ``compiler/autodiff/loops.py`` installs the
    real ones (importing the autodiff package does; they build IR with the compiler's
    reverse and forward mode, which ``ir`` may not import): refuse loudly meanwhile."""
    from llgrad.ir.errors import GradientError
    raise GradientError(f"{node.op}: its derivative rules are installed by "
                        f"llgrad.compiler.autodiff, which was not imported")


def _structured_eval(**attrs):
    raise RuntimeError("loop is evaluated by the interpreter, which runs its body")


def _loop_flops(node) -> int:
    """The body's arithmetic, once per step (for a runtime count, at its bound)."""
    return node.attrs["trip_count"] * sum(flops(n) for n in node.attrs["body"].nodes)


register("loop", lambda types, **attrs: _loop_type(types, **attrs), _structured_eval,
         "structural", flops=_loop_flops, vjp=_loop_not_differentiable,
         jvp=_loop_not_differentiable)
register("tuple_get", lambda types, index: types[0][index],
         lambda x, index: x[index], "structural", vjp=_loop_not_differentiable,
         jvp=_loop_not_differentiable,
         # a batched node of several results is the tuple of them, batched by its rule
         batch=lambda b, node, args, batched: args[0][node.attrs["index"]])

# Records of further families (linear algebra, sorting, collectives, control flow, custom
# rules) live in llgrad/ir/primitives_*.py; llgrad/ir/__init__.py imports them, so the
# table is whole wherever llgrad.ir is imported and no module imports its importer.
