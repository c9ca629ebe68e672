"""np.einsum on traced arrays, in every form numpy accepts: subscripts with explicit or
implicit output, ellipsis (broadcast dimensions), repeated indices (diagonals and
traces), any number of operands, and the sublist form ``einsum(a, [0, 1], b, [1, 2])``.

It runs in four steps, each on static shapes at trace time:

1. the subscripts are read into one letter per axis: an ellipsis is spelt out in
   letters unused elsewhere (aligned at the right, as numpy broadcasts), an implicit
   output is the ellipsis and then the letters seen once, in alphabetical order;
2. an index repeated within one operand becomes that operand's diagonal (the
   repeated axes moved last, flattened, and sliced with the stride that steps along
   the diagonal);
3. the operands are contracted two at a time in the order ``np.einsum_path`` plans
   (``optimize='greedy'`` unless the call asks for ``'optimal'`` or gives a path: the
   order matters for the cost, never for the value beyond rounding); an index that
   only one operand still has and that is not wanted later is summed away first;
4. each pair becomes one ``dot_general`` (contracting the shared indices no later
   operand or the output wants, batching the others), or, for integer and bool
   operands and for pairs that contract nothing, a broadcast product and a sum.

A size-1 axis broadcasts against the same index elsewhere, as in numpy.  The
derivative is that of the products and sums it is built from.
"""
from __future__ import annotations

import string

import numpy as np

from llgrad.compiler.frontend.numpy_ops import (
    astype,
    broadcast_to,
    multiply,
    op,
    reshape,
    sum,
    transpose,
)
from llgrad.compiler.frontend.numpy_support import (
    accept,
    as_node,
    builder,
    integer,
    result_dtype,
    traced,
    wrap,
)
from llgrad.compiler.frontend.trace import Tracer
from llgrad.ir.errors import ShapeError, UnsupportedError
from llgrad.ir.types import dtype_name

#: numpy's sublist labels 0-51 are these letters; einsum_path knows no others
LETTERS = string.ascii_uppercase + string.ascii_lowercase


# ----------------------------------------------------------------------------------
# reading the subscripts

def _sublists(args) -> tuple[str, list]:
    """numpy's sublist form, ``einsum(a, [0, 1], b, [1, 2], [0, 2])``, as subscripts
    and operands: label n is ``LETTERS[n]``, Ellipsis is '...', and a last sublist
    with no operand is the output."""
    def spell(sublist):
        letters = []
        for label in sublist:
            if label is Ellipsis:
                letters.append("...")
                continue
            n = integer(label, "an einsum sublist label")
            if not 0 <= n < len(LETTERS):
                raise ShapeError(f"einsum: subscript {n} is not within the valid range "
                                 f"[0, {len(LETTERS)})")
            letters.append(LETTERS[n])
        return "".join(letters)
    pairs = len(args) // 2
    subscripts = ",".join(spell(s) for s in args[1:2 * pairs:2])
    if len(args) % 2:
        subscripts += "->" + spell(args[-1])
    return subscripts, list(args[0:2 * pairs:2])


def _check_term(term: str, where: str) -> None:
    rest = term.replace("...", "", 1)
    for c in rest:
        if c not in LETTERS:
            raise ShapeError(f"einsum: invalid subscript {c!r} in {where}: subscripts "
                             f"must be letters (and one '...')")


def _terms(subscripts: str, count: int) -> tuple[list[str], str | None]:
    """The input terms (one per operand) and the output term (None when implicit)."""
    inputs, arrow, output = subscripts.replace(" ", "").partition("->")
    terms = inputs.split(",")
    if len(terms) != count:
        raise ShapeError(f"einsum {subscripts!r}: {len(terms)} operand subscripts for "
                         f"{count} operands")
    for k, term in enumerate(terms):
        _check_term(term, f"operand {k}")
    if arrow:
        _check_term(output, "the output")
    return terms, (output if arrow else None)


def _spelt_out(terms, output, shapes) -> tuple[list[str], str]:
    """Every term as one letter per axis, the ellipsis spelt out in unused letters (the
    same letters for the same broadcast dimension, aligned at the right), and the
    output made explicit."""
    used = set("".join(terms) + (output or ""))
    spare = [c for c in LETTERS if c not in used]
    widths = []
    for k, (term, shape) in enumerate(zip(terms, shapes)):
        named = len(term.replace("...", ""))
        if ("..." in term and named > len(shape)) or ("..." not in term and named != len(shape)):
            raise ShapeError(f"einsum: operand {k} has {len(shape)} dimensions, subscripts "
                             f"{term!r} name {named}"
                             + ("" if "..." in term else " (use '...' for the others)"))
        widths.append(len(shape) - named if "..." in term else 0)
    broadcast = max(widths, default=0)
    if broadcast > len(spare):
        raise UnsupportedError(f"einsum: {broadcast} broadcast dimensions and "
                               f"{len(used)} letters exceed the {len(LETTERS)} indices "
                               f"einsum has")
    fresh = "".join(spare[:broadcast])
    terms = [t.replace("...", fresh[broadcast - w:]) for t, w in zip(terms, widths)]
    if output is None:
        seen = "".join(terms)
        return terms, fresh + "".join(sorted(c for c in set(seen) - set(fresh)
                                             if seen.count(c) == 1))
    if "..." not in output and broadcast:
        raise ShapeError("einsum: output has more dimensions than subscripts given, but "
                         "no '...' ellipsis provided to broadcast the extra dimensions")
    output = output.replace("...", fresh)
    for c in output:
        if output.count(c) > 1:
            raise ShapeError(f"einsum: output subscript {c!r} appears more than once")
        if c not in "".join(terms):
            raise ShapeError(f"einsum: output subscript {c!r} never appears in an input")
    return terms, output


def _index_sizes(terms, shapes) -> dict:
    """The size of each index: equal wherever it appears, or 1 (which broadcasts)."""
    sizes = {}
    for k, (term, shape) in enumerate(zip(terms, shapes)):
        for c, n in zip(term, shape):
            if term.count(c) > 1 and n != shape[term.index(c)]:
                raise ShapeError(f"einsum: dimensions in operand {k} for collapsing index "
                                 f"{c!r} don't match ({shape[term.index(c)]} != {n})")
            known = sizes.get(c, 1)
            if n != 1 and known != 1 and n != known:
                raise ShapeError(f"einsum: index {c!r} has size {known} and size {n} "
                                 f"(operand {k})")
            sizes[c] = n if n != 1 else known
    return sizes


# ----------------------------------------------------------------------------------
# one operand: diagonals and sums

def _diagonal(x: Tracer, term: str) -> tuple[Tracer, str]:
    """``x`` with each index repeated in ``term`` reduced to its diagonal: the k repeated
    axes (size n) moved last and flattened; the diagonal is every (1 + n + ... +
    n^(k-1))-th of their n^k elements."""
    for c in dict.fromkeys(term):
        axes = [d for d, e in enumerate(term) if e == c]
        if len(axes) == 1:
            continue
        others = [d for d in range(x.ndim) if d not in axes]
        n, k = x.shape[axes[0]], len(axes)
        flat = reshape(transpose(x, others + axes), tuple(x.shape[d] for d in others) + (n ** k,))
        step = (n ** k - 1) // (n - 1) if n > 1 else 1
        rank = flat.ndim
        x = wrap(builder().slice(flat.node, starts=(0,) * rank, limits=flat.shape,
                                 strides=(1,) * (rank - 1) + (step,)))
        term = "".join(term[d] for d in others) + c
    return x, term


def _summed(x: Tracer, term: str, wanted: set) -> tuple[Tracer, str]:
    """``x`` summed over the indices of ``term`` not ``wanted``."""
    axes = tuple(d for d, c in enumerate(term) if c not in wanted)
    if not axes:
        return x, term
    return sum(x, axis=axes), "".join(c for c in term if c in wanted)


def _arranged(x: Tracer, term: str, order: str, sizes: dict) -> Tracer:
    """``x`` with its axes in ``order`` (which holds every index of ``term``), each
    broadcast to its index's size."""
    if term != order:
        x = transpose(x, [term.index(c) for c in order])
    shape = tuple(sizes[c] for c in order)
    return x if x.shape == shape else broadcast_to(x, shape)


# ----------------------------------------------------------------------------------
# two operands: one product

def _pair(x: Tracer, xs: str, y: Tracer, ys: str, wanted: set, sizes: dict):
    """The contraction of ``x`` (indices ``xs``) with ``y`` keeping the ``wanted``
    indices: a dot_general of floats contracting something, else a broadcast product
    summed.  The result's indices: the batch ones, then x's, then y's."""
    x, xs = _summed(x, xs, wanted | set(ys))
    y, ys = _summed(y, ys, wanted | set(xs))
    shared = [c for c in xs if c in ys]
    batch = "".join(c for c in shared if c in wanted)
    contracted = "".join(c for c in shared if c not in wanted)
    x_free = "".join(c for c in xs if c not in shared)
    y_free = "".join(c for c in ys if c not in shared)
    result = batch + x_free + y_free
    if contracted and x.node.type.is_float:
        x = _arranged(x, xs, batch + x_free + contracted, sizes)
        y = _arranged(y, ys, batch + contracted + y_free, sizes)
        nb, nc = len(batch), len(contracted)
        dims = ((tuple(range(nb + len(x_free), x.ndim)), tuple(range(nb, nb + nc))),
                (tuple(range(nb)), tuple(range(nb))))
        return wrap(builder().dot_general(x.node, y.node, dims=dims)), result
    everything = result + contracted
    product = multiply(_expanded(x, xs, everything, sizes), _expanded(y, ys, everything, sizes))
    if contracted:
        product = sum(product, axis=tuple(range(len(result), len(everything))))
    return product, result


def _expanded(x: Tracer, term: str, order: str, sizes: dict) -> Tracer:
    """``x`` with its axes in the order they have in ``order`` and a size-1 axis for
    each index of ``order`` it lacks (so that a product broadcasts it)."""
    mine = "".join(c for c in order if c in term)
    x = _arranged(x, term, mine, {c: x.shape[term.index(c)] for c in term})
    return reshape(x, tuple(x.shape[mine.index(c)] if c in mine else 1 for c in order))


# ----------------------------------------------------------------------------------
# the plan

def _path(terms, output, sizes, optimize) -> list[tuple]:
    """numpy's contraction order for these operands: einsum_path's, on stand-in
    arrays of the right shapes (broadcast views of one element, so nothing is
    allocated)."""
    if len(terms) == 1:
        return [(0,)]
    mode = "greedy" if optimize in (False, True, None) else optimize
    if isinstance(mode, str) and mode not in ("greedy", "optimal"):
        raise ShapeError(f"einsum: optimize must be a bool, 'greedy', 'optimal' or a path, "
                         f"got {optimize!r}")
    stand_ins = [np.broadcast_to(np.zeros(()), tuple(sizes[c] for c in t)) for t in terms]
    try:
        path = np.einsum_path(",".join(terms) + "->" + output, *stand_ins, optimize=mode)[0]
    except (ValueError, IndexError, TypeError) as exc:
        raise ShapeError(f"einsum: the contraction path {optimize!r} does not fit the "
                         f"operands ({exc})") from None
    return [tuple(step) for step in path[1:]]


@op("einsum")
def einsum(*operands, out=None, optimize=False, dtype=None, order="K", casting="safe"):
    accept("einsum", out=out, order=order, casting=casting)
    if not operands:
        raise ShapeError("einsum: no operands given")
    subscripts, *arrays = operands
    if not isinstance(subscripts, str):
        subscripts, arrays = _sublists(operands)
    arrays = [traced(a) for a in arrays]
    terms, output = _terms(subscripts, len(arrays))
    target = result_dtype(*arrays) if dtype is None else dtype_name(dtype)
    terms, output = _spelt_out(terms, output, [a.shape for a in arrays])
    sizes = _index_sizes(terms, [a.shape for a in arrays])
    work = "int64" if target == "bool" else target
    pending = [_diagonal(wrap(as_node(a, work)), t) for a, t in zip(arrays, terms)]
    for step in _path([t for _, t in pending], output, sizes, optimize):
        chosen = [pending[k] for k in step]
        pending = [p for k, p in enumerate(pending) if k not in step]
        later = set(output).union(*(t for _, t in pending))
        x, xs = chosen[0]
        for k, (y, ys) in enumerate(chosen[1:], start=2):
            keep = later.union(*(t for _, t in chosen[k:]))
            x, xs = _pair(x, xs, y, ys, keep, sizes)
        pending.append(_summed(x, xs, later))
    ((result, term),) = pending
    result = _arranged(result, term, output, sizes)
    return astype(result, target) if target != work else result
