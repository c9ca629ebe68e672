"""dot_general as a loop nest: canonical (B, M, K) x (B, K, N) -> (B, M, N).

Operands whose axes are not already in batch/free/contracting order are first copied
into arena scratch in that order, so the product itself is one simple i-k-j nest whose
innermost loop runs along contiguous rows of the right operand and the output (LLVM
vectorises it; every output element still sums over k in order).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .indexing import Index
from .loops import counted_loop, loop_nest
from .scalar import ITEMSIZE, const, i64, linearise, load, store

# Multiply-add may contract to FMA (as BLAS does); it never reorders the sum.
_CONTRACT = ("contract",)


@dataclass(frozen=True)
class Canonical:
    lhs_perm: tuple
    rhs_perm: tuple
    B: int
    M: int
    K: int
    N: int

    @property
    def copies(self):
        """Which operands need a reordered copy: (lhs?, rhs?)."""
        return (self.lhs_perm != tuple(range(len(self.lhs_perm))),
                self.rhs_perm != tuple(range(len(self.rhs_perm))))


def _free(ndim, contracting, batch):
    return tuple(d for d in range(ndim) if d not in contracting and d not in batch)


def canonical(node) -> Canonical:
    lhs, rhs = node.inputs
    (lc, rc), (lb, rb) = node.attrs["dims"]
    lf, rf = _free(lhs.type.ndim, lc, lb), _free(rhs.type.ndim, rc, rb)
    size = lambda x, axes: int(np.prod([x.shape[d] for d in axes], dtype=np.int64))  # noqa
    return Canonical(tuple(lb) + lf + tuple(lc), tuple(rb) + tuple(rc) + rf,
                     size(lhs, lb), size(lhs, lf), size(lhs, lc), size(rhs, rf))


def scratch_bytes(node):
    c, item = canonical(node), ITEMSIZE[node.dtype]
    sizes = (c.B * c.M * c.K * item, c.B * c.K * c.N * item)
    return tuple(n for n, needed in zip(sizes, c.copies) if needed)


def _reordered(ctx, x, perm, scratch):
    """``x`` with its axes in ``perm`` order, in ``scratch`` (row-major)."""
    b = ctx.b
    shape = tuple(x.shape[p] for p in perm)
    with loop_nest(b, shape, "t") as idx:
        axes = [None] * len(perm)
        for k, p in enumerate(perm):
            axes[p] = idx[k]
        store(b, ctx.read(x, Index(tuple(axes))), scratch, linearise(b, idx, shape), x.dtype)
    return scratch


def emit_dot_general(ctx, node, out):
    b, dtype = ctx.b, node.dtype
    lhs, rhs = node.inputs
    c = canonical(node)
    scratch = iter(ctx.scratch)
    need_l, need_r = c.copies
    A = _reordered(ctx, lhs, c.lhs_perm, next(scratch)) if need_l else ctx.pointer(lhs)
    Bm = _reordered(ctx, rhs, c.rhs_perm, next(scratch)) if need_r else ctx.pointer(rhs)
    flags = tuple(ctx.flags) or _CONTRACT
    nsw = ["nuw", "nsw"]
    with counted_loop(b, c.B * c.M, "bi") as bi:       # batch and row together
        batch = b.udiv(bi, i64(c.M)) if c.B > 1 else i64(0)
        crow = b.mul(bi, i64(c.N), flags=nsw)
        with counted_loop(b, c.N, "j0") as j:
            store(b, const(dtype, 0), out, b.add(crow, j, flags=nsw), dtype)
        arow = b.mul(bi, i64(c.K), flags=nsw)
        bbase = b.mul(batch, i64(c.K * c.N), flags=nsw)
        with counted_loop(b, c.K, "k") as k:
            a = load(b, A, b.add(arow, k, flags=nsw), dtype)
            brow = b.add(bbase, b.mul(k, i64(c.N), flags=nsw), flags=nsw)
            with counted_loop(b, c.N, "j") as j:
                where = b.add(crow, j, flags=nsw)
                prod = b.fmul(a, load(b, Bm, b.add(brow, j, flags=nsw), dtype), flags=flags)
                store(b, b.fadd(load(b, out, where, dtype), prod, flags=flags), out, where,
                      dtype)
