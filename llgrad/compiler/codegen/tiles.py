"""Matrix products as register tiles: C = A B with every output element summed over k in order.

A tile is ``mr`` rows by a few vectors of C held in registers while k runs: each step
loads one row segment of B as vectors, broadcasts one element of A per tile row and
multiply-adds (FMA when contraction is allowed).  Shapes are static, so the tile is
written out in the IR (no loop LLVM would have to unroll) and its size is chosen so
that accumulators, B's vectors and one broadcast fit the vector registers.  A is only
ever read an element at a time, so it is read in place whatever its strides (a
transposed A is even contiguous across a tile's rows); B and C must be contiguous
along the vector axis.  Many independent accumulators keep the FMA units busy even
though each element's own sum is a serial chain; that in-order chain is what keeps
results reproducible (exact mode), as in the i-k-j loop nest this replaced.
"""
from __future__ import annotations

from dataclasses import dataclass

from llvmlite import ir

from .loops import counted_loop
from .scalar import ITEMSIZE, MEMORY, REGISTER, const, i64

#: cap on a tile's rows: more accumulators than FMA latency x ports buy nothing
MAX_ROWS = 12
#: cap on a tile's vectors per row (wider C rows become several tiles)
MAX_VECTORS = 3


@dataclass(frozen=True)
class Matrix:
    """A batch of matrices in memory: base pointer and element strides
    (batch, row, column); a stride of an axis of size 1 is never used."""
    ptr: ir.Value
    strides: tuple

    def transposed(self) -> "Matrix":
        s = self.strides
        return Matrix(self.ptr, (s[0], s[2], s[1]))


def contiguous_rows(strides, cols) -> bool:
    """Whether a matrix of ``cols`` columns can be read as row vectors."""
    return cols == 1 or strides[2] == 1


def vectorised(M, N, a_strides) -> bool:
    """Whether the product runs on vectors: along C's rows, or along its single
    column when A's columns are contiguous (otherwise it is scalar)."""
    return N > 1 or (M > 1 and a_strides[1] == 1)


def emit_product(b: ir.IRBuilder, shape, a: Matrix, bm: Matrix, c: Matrix, dtype: str,
                 flags, vector_bits: int) -> None:
    """C[i] = A[i] @ B[i] for each batch ``i``; ``shape`` is (batch, M, K, N).

    B and C must have contiguous rows (``contiguous_rows``).  When N is 1 and A's
    columns are contiguous, the transposed product (C^T = B^T A^T) runs instead, so
    that a matrix-vector product is vectorised along M.
    """
    nb, M, K, N = shape
    if N == 1 and vectorised(M, N, a.strides):
        a, bm, c = bm.transposed(), a.transposed(), c.transposed()
        M, N = N, M
    if M == 0 or N == 0:
        return
    lanes = vector_bits // (8 * ITEMSIZE[dtype])
    registers = 32 if vector_bits >= 512 else 16
    full = [lanes] * min(MAX_VECTORS, N // lanes) or [N]
    # accumulators, B's vectors and (worst case, when not folded into the FMA) one
    # broadcast per row must fit the registers, or LLVM spills inside the k loop
    rows = max(1, min(MAX_ROWS, M, (registers - len(full)) // (len(full) + 1)))
    row_blocks = [(M // rows, rows, 0)] + ([(1, M % rows, M - M % rows)] if M % rows else [])
    nr = sum(full)
    col_blocks = [(N // nr, full, 0)]
    if N % nr:
        rest = N % nr
        col_blocks.append((1, [lanes] * (rest // lanes) + [rest % lanes] * (rest % lanes > 0),
                           N - rest))
    tiles = [(rb, cb) for cb in col_blocks for rb in row_blocks]

    def per_batch(batch):
        for (ni, mr, i0), (nj, widths, j0) in tiles:
            def row_tile(ti, mr=mr, i0=i0, nj=nj, widths=widths, j0=j0):
                i = b.add(b.mul(ti, i64(mr)), i64(i0))
                _repeat(b, nj, "nt", lambda tj: _tile(
                    b, K, batch, i, b.add(b.mul(tj, i64(sum(widths))), i64(j0)), mr, widths,
                    a, bm, c, dtype, flags))
            _repeat(b, ni, "mt", row_tile)

    _repeat(b, nb, "batch", per_batch)


def _repeat(b, count, name, body, unroll=1):
    """``body(i)`` for each i in range(count): a counted loop, or written out when
    ``count <= unroll`` (the pipeline runs no loop unroller, see runtime.engine)."""
    if count <= unroll:
        for i in range(count):
            body(i64(i))
        return
    with counted_loop(b, count, name) as i:
        body(i)


def _offset(b, m: Matrix, batch, row, col):
    """Element offset of (batch, row, col); ``row``/``col`` are i64 values or ints."""
    total = b.mul(batch, i64(m.strides[0]))
    for index, stride in ((row, m.strides[1]), (col, m.strides[2])):
        index = i64(index) if isinstance(index, int) else index
        total = b.add(total, b.mul(index, i64(stride)))
    return total


def _vector_type(dtype, width):
    return REGISTER[dtype] if width == 1 else ir.VectorType(REGISTER[dtype], width)


def _element(b, ptr, offset, dtype):
    return b.gep(ptr, [offset], inbounds=True, source_etype=MEMORY[dtype])


def _load(b, ptr, offset, dtype, width):
    return b.load(_element(b, ptr, offset, dtype), typ=_vector_type(dtype, width),
                  align=ITEMSIZE[dtype])


def _broadcast(b, x, width):
    if width == 1:
        return x
    v = b.insert_element(ir.Constant(ir.VectorType(x.type, width), ir.Undefined), x,
                         ir.Constant(ir.IntType(32), 0))
    return b.shuffle_vector(v, v, ir.Constant(ir.VectorType(ir.IntType(32), width),
                                              [0] * width))


def _tile(b, K, batch, i, j, rows, widths, a, bm, c, dtype, flags):
    """C[i:i+rows, j:j+sum(widths)] of one batch, accumulated in registers over k."""
    starts = [sum(widths[:v]) for v in range(len(widths))]
    with b.goto_entry_block():
        cells = [[b.alloca(_vector_type(dtype, w)) for w in widths] for _ in range(rows)]
    for row in cells:
        for cell, w in zip(row, widths):
            b.store(_zero(dtype, w), cell)
    a_rows = [_offset(b, a, batch, b.add(i, i64(r)), 0) for r in range(rows)]
    b_row = _offset(b, bm, batch, 0, j)
    def step(k):
        b_k = b.add(b_row, b.mul(k, i64(bm.strides[1])))
        vectors = [_load(b, bm.ptr, b.add(b_k, i64(s)), dtype, w)
                   for s, w in zip(starts, widths)]
        a_k = b.mul(k, i64(a.strides[2]))
        for r, row in enumerate(cells):
            x = _load(b, a.ptr, b.add(a_rows[r], a_k), dtype, 1)
            for cell, vec, w in zip(row, vectors, widths):
                prod = b.fmul(_broadcast(b, x, w), vec, flags=flags)
                b.store(b.fadd(b.load(cell), prod, flags=flags), cell)
    _repeat(b, K, "k", step)
    for r, row in enumerate(cells):
        c_row = _offset(b, c, batch, b.add(i, i64(r)), j)
        for cell, s, w in zip(row, starts, widths):
            b.store(b.load(cell), _element(b, c.ptr, b.add(c_row, i64(s)), dtype),
                    align=ITEMSIZE[dtype])


def _zero(dtype, width):
    zero = const(dtype, 0)
    return zero if width == 1 else ir.Constant(ir.VectorType(zero.type, width), [zero] * width)
