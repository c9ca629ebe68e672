"""Transposed copies of matrices, for products whose right operand is stored transposed.

The register tiles read B as vectors along its rows, so ``A @ W.T`` (every hidden
layer's input gradient, ``dh @ W.T``) first copies W transposed.  Element by element
that copy reads a new cache line for every element written, a large share of the
product it feeds (re-measure: the tiles column of ``OPENBLAS_NUM_THREADS=1 python
benchmarks/bench_matmul.py --dtype float32 64,128,784,NT`` includes the copy).  Here
it goes in blocks of ``lanes`` x ``lanes``:
``lanes`` vector loads along the source's rows, log2(lanes) rounds of two-vector
shuffles, ``lanes`` vector stores along the destination's rows; the edges that do
not fill a block are copied element by element.  Only data moves, so the copy is
exact.
"""
from __future__ import annotations

from llvmlite import ir

from llgrad.llvm.loops import counted_loop, loop_nest
from llgrad.llvm.scalar import ITEMSIZE, MEMORY, i64


def emit_transpose(b: ir.IRBuilder, src, dst, batch: int, rows: int, cols: int,
                   dtype: str, lanes: int, dst_stride: int | None = None) -> None:
    """``dst[k] = src[k].T`` for each of ``batch`` row-major ``rows`` x ``cols``
    matrices stored one after another; ``dst_stride``: the length of a destination row
    when the copy fills only some of its columns (one matrix)."""
    assert dst_stride is None or batch == 1
    item, typ = ITEMSIZE[dtype], MEMORY[dtype]
    block_rows, block_cols = rows // lanes, cols // lanes
    dst_row = rows if dst_stride is None else dst_stride

    def at(ptr, offset):
        return b.gep(ptr, [offset], inbounds=True, source_etype=typ)

    with counted_loop(b, batch, "tb") as k:
        s, d = at(src, b.mul(k, i64(rows * cols))), at(dst, b.mul(k, i64(rows * cols)))
        with loop_nest(b, (block_rows, block_cols), "tblk") as (bi, bj):
            r0, c0 = b.mul(bi, i64(lanes)), b.mul(bj, i64(lanes))
            vectors = [b.load(at(s, b.add(b.mul(b.add(r0, i64(i)), i64(cols)), c0)),
                              typ=ir.VectorType(typ, lanes), align=item)
                       for i in range(lanes)]
            for j, v in enumerate(_transposed(b, vectors)):
                b.store(v, at(d, b.add(b.mul(b.add(c0, i64(j)), i64(dst_row)), r0)),
                        align=item)
        full_rows, full_cols = block_rows * lanes, block_cols * lanes
        for first_row, n_rows, first_col, n_cols in ((0, full_rows, full_cols, cols - full_cols),
                                                     (full_rows, rows - full_rows, 0, cols)):
            with loop_nest(b, (n_rows, n_cols), "tedge") as (i, j):
                r, c = b.add(i, i64(first_row)), b.add(j, i64(first_col))
                value = b.load(at(s, b.add(b.mul(r, i64(cols)), c)), typ=typ)
                b.store(value, at(d, b.add(b.mul(c, i64(dst_row)), r)))


def _transposed(b: ir.IRBuilder, rows: list) -> list:
    """The columns of the square block whose rows are the vectors ``rows``: round s
    swaps element (i, j) with (i ^ s, j ^ s) wherever bit s of i and j differ, so after
    a round per bit every element has moved from (i, j) to (j, i)."""
    n, s = len(rows), 1
    while s < n:
        low = _mask([j if not j & s else n + (j ^ s) for j in range(n)])
        high = _mask([n + j if j & s else j ^ s for j in range(n)])
        shuffled = list(rows)
        for i in range(n):
            if not i & s:
                shuffled[i] = b.shuffle_vector(rows[i], rows[i | s], low)
                shuffled[i | s] = b.shuffle_vector(rows[i], rows[i | s], high)
        rows, s = shuffled, 2 * s
    return rows


def _mask(indices) -> ir.Constant:
    i32 = ir.IntType(32)
    return ir.Constant(ir.VectorType(i32, len(indices)), [ir.Constant(i32, k) for k in indices])
