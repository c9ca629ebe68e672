"""Rows gathered by a matrix product itself: ``x[idx] @ w`` and ``x[idx].T @ d`` read
the rows of ``x`` where it is stored, never copying the gathered matrix.

A minibatch of shuffled rows (``llgrad.train`` with ``shuffle``) is such a gather, and
its first layer's two products are its only readers.  Copied by a ``take`` kernel of
its own, the rows came from memory while no arithmetic ran: 19 us of each 190 us step
of the 784-128-10 MLP at batch 64 over 12,800 rows (one thread; ``python -m llgrad
bench --workloads streaming --systems "llgrad native" --profile``).  Read by the
product's register tiles, the loads of the first tile of rows overlap its
multiply-adds, as the rows of a data set read in order do.

``fusion`` leaves such a ``take`` without a buffer when every reader is a product
taking it as its left operand that will run as tiles reading A in place
(``matmul.reads_gathered``); a product that BLAS runs, or a matrix-vector product, reads
the take's copy as before (one copy for all of its readers, not one each).  The product
computes, once, the element offset of each gathered row (the index clamped into range,
as ``take`` clamps it) into a table, and its tiles address A's rows (``x[idx] @ w``) or
its steps of k (``x[idx].T @ d``) through it (``tiles.Matrix.table``).
"""
from __future__ import annotations

from llvmlite import ir

from llgrad.compiler.codegen.kernels import clamped_start
from llgrad.ir.graph import Node
from llgrad.llvm.indexing import Index
from llgrad.llvm.loops import counted_loop
from llgrad.llvm.scalar import I64, i64

#: the most rows a table may hold: it lives on the stack of the product's function, as
#: a pipelined product's partial sums do (``matmul.PIPELINE_MAX_BYTES``); a larger
#: gather keeps its take
MAX_ROWS = (64 << 10) // 8


def by_products(node: Node, readers: list, inlined: set) -> bool:
    """Whether ``node`` is a gather of rows that its readers, all matrix products, may
    read in place: a ``take`` of a stored float matrix's rows (not in ``inlined``) by at
    most ``MAX_ROWS`` indices, each reader a product with no batch axes that takes it as its
    left operand and only there (whether each will is ``matmul.reads_gathered``)."""
    if node.op != "take" or not readers or id(node.inputs[0]) in inlined:
        return False
    x, idx = node.inputs
    return (x.type.ndim == 2 and idx.shape[0] <= MAX_ROWS and node.type.is_float
            and all(r.op == "dot_general" and r.inputs[0] is node and r.inputs[1] is not node
                    and not r.attrs["dims"][1][0] for r in readers))


def is_gathered(ctx, node: Node) -> bool:
    """Whether ``node``, an operand of the product being emitted, is such a gather."""
    return node.op == "take" and id(node) not in ctx.pointers


def offset_table(ctx, node: Node) -> ir.Value:
    """An i64 array, on the stack of the product's function: entry r is the element
    offset in ``x`` of the gathered row r, ``clip(idx[r], 0, rows - 1)`` rows in."""
    b = ctx.b
    x, idx = node.inputs
    rows = idx.shape[0]
    with b.goto_entry_block():
        table = b.alloca(I64, size=i64(max(1, rows)))
    with counted_loop(b, rows, "gather.at") as r:
        row = clamped_start(b, ctx.read(idx, Index((r,), r)), 1, x.shape[0])
        b.store(b.mul(row, i64(x.shape[1])), b.gep(table, [r], inbounds=True,
                                                   source_etype=I64))
    return table
