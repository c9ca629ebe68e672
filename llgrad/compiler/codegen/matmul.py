"""dot_general as a loop nest: canonical (B, M, K) x (B, K, N) -> (B, M, N).

Operands whose axes are not already in batch/free/contracting order are first copied
into arena scratch in that order, so the product itself is one simple i-k-j nest whose
innermost loop runs along contiguous rows of the right operand and the output (LLVM
vectorises it; every output element still sums over k in order).  Large products
call BLAS gemm instead when the module was configured with BLAS symbols.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from .indexing import Index
from .loops import counted_loop, loop_nest
from .scalar import ITEMSIZE, PTR, REGISTER, const, i64, linearise, load, store

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

    nb: int = 0
    n_lf: int = 0
    n_rc: int = 0

    @property
    def copies(self):
        """Which operands need a reordered copy for the loop nest: (lhs?, rhs?)."""
        return (self.lhs_perm != tuple(range(len(self.lhs_perm))),
                self.rhs_perm != tuple(range(len(self.rhs_perm))))

    @property
    def gemm_layouts(self):
        """BLAS reads a per-batch transposed operand in place ('T'); only other
        orders need a copy (None): (lhs, rhs), each 'N', 'T' or None."""
        return (_layout(self.lhs_perm, self.nb, self.n_lf),
                _layout(self.rhs_perm, self.nb, self.n_rc))


def _layout(perm, nb, n_first):
    """'N' if the operand is already (batch, first, second) in memory, 'T' if it is
    (batch, second, first), None otherwise."""
    identity = tuple(range(len(perm)))
    if perm == identity:
        return "N"
    batch, first, second = perm[:nb], perm[nb:nb + n_first], perm[nb + n_first:]
    return "T" if batch + second + first == identity else None


def _free(ndim, contracting, batch):
    return tuple(d for d in range(ndim) if d not in contracting and d not in batch)


def canonical(node) -> Canonical:
    lhs, rhs = node.inputs
    (lc, rc), (lb, rb) = node.attrs["dims"]
    lf, rf = _free(lhs.type.ndim, lc, lb), _free(rhs.type.ndim, rc, rb)
    size = lambda x, axes: int(np.prod([x.shape[d] for d in axes], dtype=np.int64))  # noqa
    return Canonical(tuple(lb) + lf + tuple(lc), tuple(rb) + tuple(rc) + rf,
                     size(lhs, lb), size(lhs, lf), size(lhs, lc), size(rhs, rf),
                     len(lb), len(lf), len(rc))


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


#: products with at least this many multiply-adds go to BLAS when it is available
BLAS_MIN_FLOPS = 32 ** 3
_GEMM = {"float64": "dgemm_", "float32": "sgemm_"}


def _emit_gemm(ctx, c, A, Bm, out, dtype, layouts=("N", "N")):
    """Row-major C = op(A) op(B) per batch as column-major
    gemm(tb, ta, N, M, K, 1, B, ldb, A, lda, 0, C, N): the column-major view of a
    row-major matrix is its transpose, so the operands swap places; an operand
    stored transposed is read with 'T' and the other leading dimension."""
    b = ctx.b
    i32, i8, t = ir.IntType(32), ir.IntType(8), REGISTER[dtype]
    name = _GEMM[dtype]
    fn = b.module.globals.get(name) or ir.Function(
        b.module, ir.FunctionType(ir.VoidType(), [PTR] * 13), name)

    def cell(typ, value):
        p = b.alloca(typ)
        b.store(ir.Constant(typ, value), p)
        return p

    ta, tb = (cell(i8, ord(t)) for t in layouts)
    lda = cell(i32, c.K if layouts[0] == "N" else c.M)
    ldb = cell(i32, c.N if layouts[1] == "N" else c.K)
    n, m, k = cell(i32, c.N), cell(i32, c.M), cell(i32, c.K)
    one, zero = cell(t, 1.0), cell(t, 0.0)
    item = ITEMSIZE[dtype]
    with counted_loop(b, c.B, "gemm") as batch:
        at = lambda ptr, per: b.gep(ptr, [b.mul(batch, i64(per * item))],  # noqa: E731
                                    source_etype=ir.IntType(8))
        b.call(fn, [tb, ta, n, m, k, one, at(Bm, c.K * c.N), ldb, at(A, c.M * c.K), lda,
                    zero, at(out, c.M * c.N), n])


def emit_dot_general(ctx, node, out):
    b, dtype = ctx.b, node.dtype
    lhs, rhs = node.inputs
    c = canonical(node)
    scratch = iter(ctx.scratch)
    need_l, need_r = c.copies
    l_scratch = next(scratch) if need_l else None
    r_scratch = next(scratch) if need_r else None
    if (_GEMM[dtype] in getattr(b.module, "llgrad_blas", ()) and min(c.M, c.N, c.K) >= 1
            and c.M * c.N * c.K >= getattr(b.module, "llgrad_blas_min_flops", BLAS_MIN_FLOPS)):
        la, lb_ = c.gemm_layouts
        A = ctx.pointer(lhs) if la else _reordered(ctx, lhs, c.lhs_perm, l_scratch)
        Bm = ctx.pointer(rhs) if lb_ else _reordered(ctx, rhs, c.rhs_perm, r_scratch)
        _emit_gemm(ctx, c, A, Bm, out, dtype, (la or "N", lb_ or "N"))
        return
    A = _reordered(ctx, lhs, c.lhs_perm, l_scratch) if need_l else ctx.pointer(lhs)
    Bm = _reordered(ctx, rhs, c.rhs_perm, r_scratch) if need_r else ctx.pointer(rhs)
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
