"""Counted loops users write: ``scan`` and ``fori_loop``, with JAX's names and meaning.

A Python ``for`` loop in a traced function is unrolled: T steps are T copies of the
body in the IR, and compile time grows with T.  ``scan`` and ``fori_loop`` trace the
body once into one ``loop`` node, lowered to one native loop: the IR and the compile
time do not depend on the trip count.  Both differentiate in reverse and forward mode
(``compiler/autodiff/loops.py``), nest, and run inside ``llgrad.train``.

Called outside a trace (on plain arrays), each compiles itself with ``llgrad.jit``,
once per body, length and argument types, and runs native: the same code the traced
form would run, so the eager result is the compiled one (a body closing over Python
values sees them as constants of that compile).
"""
from __future__ import annotations

import functools

import numpy as np

from llgrad.api import jit
from llgrad.compiler.frontend import pytree
from llgrad.compiler.frontend.loops import (check_carry, lifted, loop_node, reverse_rows, row,
                                            trace_body, tracing)
from llgrad.compiler.frontend.trace import Tracer, current, located, user_source
from llgrad.ir.errors import DTypeError, ShapeError
from llgrad.tape import checkpointed_scan, while_loop


def _name(fn) -> str:
    return getattr(fn, "__name__", "body")


def scan(f, init, xs=None, length=None, reverse=False, checkpoint=None):
    """``f(carry, x) -> (carry, y)`` over the rows of ``xs``; returns ``(carry, ys)``.

    As ``jax.lax.scan``: ``xs`` is a pytree of arrays sharing their leading axis (or
    None, with ``length``), ``x`` is one row of each, the carry keeps the structure,
    shapes and dtypes of ``init``, and ``ys`` stacks each step's ``y`` along a new
    leading axis.  ``reverse=True`` runs from the last row to the first (``ys`` stays
    in the order of ``xs``).  The body is traced once and runs as one native loop.
    ``checkpoint=k`` (or ``"sqrt"``: k = ceil(sqrt(T))) makes reverse mode keep the
    carry every k steps and recompute the rest (``llgrad.tape.checkpointed_scan``)."""
    if not tracing():
        return _eager_scan(f, length, bool(reverse))(init, xs)
    if checkpoint is not None:
        return checkpointed_scan(scan, f, init, xs, length, reverse, checkpoint)
    b = current().builder
    where = user_source()
    init_leaves, init_tree = pytree.flatten(init)
    xs_leaves, xs_tree = pytree.flatten(xs)
    carried, stacked = lifted(init_leaves), lifted(xs_leaves)
    try:
        trip = _trip_count(f, stacked, pytree.leaf_names(xs_tree, "xs"), length)
    except ShapeError as exc:
        raise located(exc) from None
    n_c = len(carried)
    name = _name(f)

    def body(step, *values):
        carry = pytree.unflatten(init_tree, values[:n_c])
        sb = current().builder
        at = step.node if not reverse else sb.sub(sb.const(trip - 1, "int64"), step.node)
        # a scan of no steps never runs its body, traced on zeros for its types
        rows = [row(sb, v.node, at) if trip else sb.full(0, v.node.type.with_shape(
            v.shape[1:])) for v in values[n_c:]]
        out = f(carry, pytree.unflatten(xs_tree, [Tracer(r) for r in rows]))
        if not (isinstance(out, tuple) and len(out) == 2):
            raise located(ShapeError(f"scan: {name}() must return a pair (carry, y), got "
                                     f"{type(out).__name__}"))
        y_leaves, y_tree = pytree.flatten(out[1])
        return _carry_out(name, init_tree, carried, out[0]) + lifted(y_leaves), y_tree

    graph, captured, y_tree = trace_body(
        name, [n.type for n in carried + stacked],
        pytree.leaf_names(init_tree, "carry") + pytree.leaf_names(xs_tree, "xs"), body)
    results = _emit(graph, captured, carried, stacked, trip)
    b.source, outer_source = where, b.source
    ys = [reverse_rows(b, y) for y in results[n_c:]] if reverse else results[n_c:]
    b.source = outer_source
    return (pytree.unflatten(init_tree, [Tracer(n) for n in results[:n_c]]),
            pytree.unflatten(y_tree, [Tracer(n) for n in ys]))


def _trip_count(f, stacked, names, length) -> int:
    """The common leading length of the ``xs`` leaves (and ``length``, if given)."""
    lengths = {}
    for node, name in zip(stacked, names):
        if node.type.ndim == 0:
            raise ShapeError(f"scan of {_name(f)}(): {name} is a scalar ({node.type}); each "
                             f"leaf of xs needs a leading axis to scan over")
        lengths[name] = node.shape[0]
    if length is not None:
        if not isinstance(length, (int, np.integer)) or isinstance(length, bool) or length < 0:
            raise ShapeError(f"scan of {_name(f)}(): length must be a non-negative Python "
                             f"int, got {length!r}")
        lengths["length"] = int(length)
    if not lengths:
        raise ShapeError(f"scan of {_name(f)}(): with xs=None, give length=")
    if len(set(lengths.values())) != 1:
        described = ", ".join(f"{k} has {n}" for k, n in lengths.items())
        raise ShapeError(f"scan of {_name(f)}(): xs leaves must share their leading length: "
                         f"{described}")
    return next(iter(lengths.values()))


@functools.lru_cache(maxsize=64)
def _eager_scan(f, length, reverse):
    def run(init, xs):
        return scan(f, init, xs, length=length, reverse=reverse)
    run.__name__ = f"scan_{_name(f)}"
    return jit(run)


def fori_loop(lower, upper, body, init, *, max_steps=None):
    """``body(i, carry) -> carry`` for i from ``lower`` up to ``upper`` (exclusive);
    returns the final carry, as ``jax.lax.fori_loop``.

    Python int bounds make one ``loop`` of ``upper - lower`` steps, as differentiable
    as a ``scan``.  Traced int bounds (computed in the function) make, as in JAX, a
    ``while_loop`` over ``(i, carry)``: the trip count is known only when it runs, and
    reverse mode reads the steps the forward pass recorded (``max_steps`` bounds them
    and sizes that record: see ``llgrad.while_loop``)."""
    if isinstance(lower, Tracer) or isinstance(upper, Tracer):
        return _fori_traced_bounds(lower, upper, body, init, max_steps)
    for bound, what in ((lower, "lower"), (upper, "upper")):
        if not isinstance(bound, (int, np.integer)) or isinstance(bound, bool):
            raise DTypeError(f"fori_loop of {_name(body)}(): the {what} bound must be an "
                             f"int, got {bound!r}")
    lower, upper = int(lower), int(upper)
    if not tracing():
        return _eager_fori(body, lower, upper)(init)
    init_leaves, init_tree = pytree.flatten(init)
    carried = lifted(init_leaves)
    name = _name(body)

    def call(step, *values):
        sb = current().builder
        i = step if lower == 0 else Tracer(sb.add(step.node, sb.const(lower, "int64")))
        new = body(i, pytree.unflatten(init_tree, values))
        return _carry_out(name, init_tree, carried, new), None

    graph, captured, _ = trace_body(name, [n.type for n in carried],
                                    pytree.leaf_names(init_tree, "carry"), call)
    results = _emit(graph, captured, carried, [], max(upper - lower, 0))
    return pytree.unflatten(init_tree, [Tracer(n) for n in results])


def _fori_traced_bounds(lower, upper, body, init, max_steps):
    """fori_loop with a bound known only at run time: a while_loop over (i, carry)."""
    for bound, what in ((lower, "lower"), (upper, "upper")):
        dtype = np.asarray(bound).dtype if not isinstance(bound, Tracer) else bound.dtype
        if dtype.kind not in "iu":
            raise DTypeError(f"fori_loop of {_name(body)}(): the {what} bound must be an "
                             f"int, got {dtype}")
    start = lower if isinstance(lower, Tracer) else np.int64(lower)

    def below_upper(state):
        return state[0] < upper

    def step(state):
        i, carry = state
        return i + 1, body(i, carry)

    step.__name__ = _name(body)
    return while_loop(below_upper, step, (start, init), max_steps=max_steps)[1]


@functools.lru_cache(maxsize=64)
def _eager_fori(body, lower, upper):
    def run(init):
        return fori_loop(lower, upper, body, init)
    run.__name__ = f"fori_loop_{_name(body)}"
    return jit(run)


def _carry_out(name, init_tree, carried, new_carry) -> list:
    """The nodes of the carry a body returns, checked against the carry it was given."""
    leaves, tree = pytree.flatten(new_carry)
    nodes = lifted(leaves)
    check_carry(name, "carry", init_tree, [c.type for c in carried], tree,
                [n.type for n in nodes])
    return nodes


def _emit(graph, captured, carried, stacked, trip) -> list:
    """The loop node's results, stamped with the user's line of the scan/fori_loop call."""
    b = current().builder
    outer_source, b.source = b.source, user_source()
    try:
        return loop_node(graph, captured, carried, stacked, trip)
    finally:
        b.source = outer_source
