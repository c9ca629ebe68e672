"""argsort's native code: a stable sort of each row's indices by the row's values.

Each row of ``n`` values is sorted as (value, index) pairs kept in two parallel rows,
the indices straight in the output: first the row's values are copied to a scratch
row of keys beside the indices 0..n-1, then an insertion sort orders every run of
``RUN`` pairs, then bottom-up merge passes double the sorted runs, between that pair
of rows and a second pair in scratch, until one run covers the row.  Keys travel with
their indices, so every read is sequential (no value is looked up through an index).
Both sorts are stable (a pair moves past another only when its key is strictly
less), so the order is numpy's ``kind='stable'``; "less" puts NaN after every number.
The number of merge passes is known from ``n``, so each is emitted once, as a loop
over its pairs of runs whose merge is one counted loop with the two read positions
carried in registers; reads are clamped into each run, so none falls outside the row.
"""
from __future__ import annotations

from dataclasses import dataclass

from llgrad.llvm.loops import carried_loop, conditional_loop, counted_loop
from llgrad.llvm.scalar import I64, ITEMSIZE, MEMORY, i64, is_float, load, store

#: the length of the runs the insertion sort makes before the merges start
RUN = 16


def _merge_passes(n: int) -> int:
    passes, width = 0, RUN
    while width < n:
        passes, width = passes + 1, 2 * width
    return passes


def scratch_bytes(node) -> tuple:
    """A row of keys; with merges, a second row of keys and one of indices to merge into."""
    n, item = node.shape[-1], ITEMSIZE[node.inputs[0].dtype]
    if node.type.size == 0:
        return ()
    return (item * n, item * n, 8 * n) if _merge_passes(n) else (item * n,)


@dataclass(frozen=True)
class _Pairs:
    """A row of (key, index) pairs kept as two parallel rows."""
    keys: object
    indices: object


def _less(b, x, y, dtype):
    """x < y, NaN after every number (and not less than another NaN)."""
    if is_float(dtype):
        number_before_nan = b.and_(b.fcmp_ordered("ord", x, x), b.fcmp_unordered("uno", y, y))
        return b.or_(b.fcmp_ordered("<", x, y), number_before_nan)
    if dtype == "bool":
        return b.icmp_unsigned("<", x, y)
    return b.icmp_signed("<", x, y)


def _min(b, x, limit):
    return b.select(b.icmp_signed("<", x, limit), x, limit)


def emit_argsort(ctx, node, out):
    b, (x,) = ctx.b, node.inputs
    n, dtype = node.shape[-1], x.dtype
    if node.type.size == 0:
        return
    rows = node.type.size // n
    scratch = iter(ctx.scratch)
    home = next(scratch)
    other = _Pairs(next(scratch), next(scratch)) if _merge_passes(n) else None
    with counted_loop(b, rows, "srow") as r:
        start = b.mul(r, i64(n), flags=["nuw", "nsw"])
        row = b.gep(ctx.pointer(x), [start], inbounds=True, source_etype=MEMORY[dtype])
        pairs = _Pairs(home, b.gep(out, [start], inbounds=True, source_etype=I64))
        with counted_loop(b, n, "sinit") as i:
            store(b, load(b, row, i, dtype), pairs.keys, i, dtype)
            store(b, i, pairs.indices, i, "int64")
        _insertion_sort_runs(b, pairs, n, dtype)
        source, target, width = pairs, other, RUN
        for _ in range(_merge_passes(n)):
            _merge_pass(b, source, target, width, n, dtype)
            source, target, width = target, source, 2 * width
        if source is not pairs:
            with counted_loop(b, n, "scopy") as i:
                store(b, load(b, source.indices, i, "int64"), pairs.indices, i, "int64")


def _insertion_sort_runs(b, pairs: _Pairs, n: int, dtype):
    """Sort each run [s, s + RUN) of ``pairs`` by key: every position i in turn sinks
    its pair below the earlier ones of its run whose keys are greater."""
    with counted_loop(b, n, "sins") as i:
        first = b.sub(i, b.urem(i, i64(RUN)))
        key, index = load(b, pairs.keys, i, dtype), load(b, pairs.indices, i, "int64")
        head, shift, done, j = conditional_loop(b, i, "sins")
        above = b.icmp_signed(">", j, first)
        before = b.select(above, b.sub(j, i64(1)), first)   # never below the run
        other_key = load(b, pairs.keys, before, dtype)
        b.cbranch(b.and_(above, _less(b, key, other_key, dtype)), shift, done)
        b.position_at_end(shift)
        store(b, other_key, pairs.keys, j, dtype)
        store(b, load(b, pairs.indices, before, "int64"), pairs.indices, j, "int64")
        j.add_incoming(before, shift)
        b.branch(head)
        b.position_at_end(done)
        store(b, key, pairs.keys, j, dtype)
        store(b, index, pairs.indices, j, "int64")


def _merge_pass(b, source: _Pairs, target: _Pairs, width: int, n: int, dtype):
    """Merge each pair of sorted runs [lo, lo + width), [lo + width, lo + 2·width) of
    ``source`` (cut at n) into ``target``: the right run's head goes first only when
    its key is strictly less than the left's, which keeps the sort stable."""
    pairs = -(-n // (2 * width))
    with counted_loop(b, pairs, "smrg") as k:
        lo = b.mul(k, i64(2 * width), flags=["nuw", "nsw"])
        mid = _min(b, b.add(lo, i64(width)), i64(n))
        hi = _min(b, b.add(lo, i64(2 * width)), i64(n))
        with carried_loop(b, b.sub(hi, lo), [lo, mid], "smrg.k") as (step, ij):
            i, j = ij
            left_at = _min(b, i, b.sub(mid, i64(1)))
            right_at = _min(b, j, b.sub(hi, i64(1)))
            left = load(b, source.keys, left_at, dtype)
            right = load(b, source.keys, right_at, dtype)
            right_first = b.or_(b.icmp_signed(">=", i, mid), _less(b, right, left, dtype))
            take_right = b.and_(b.icmp_signed("<", j, hi), right_first)
            at = b.add(lo, step, flags=["nuw", "nsw"])
            store(b, b.select(take_right, right, left), target.keys, at, dtype)
            store(b, load(b, source.indices, b.select(take_right, right_at, left_at), "int64"),
                  target.indices, at, "int64")
            one = i64(1)
            ij[0] = b.select(take_right, i, b.add(i, one))
            ij[1] = b.select(take_right, b.add(j, one), j)
