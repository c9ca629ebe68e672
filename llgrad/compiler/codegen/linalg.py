"""Native loops of the linear-algebra primitives (``ir/primitives_linalg.py``), one
matrix of the batch at a time, in the operands' dtype.

Each ``emit_*(ctx, node, out)`` is a ``Kernel`` row whose inputs are stored buffers
(``inline_inputs=False``): the algorithms read entries many times and in any order.
The algorithms are the textbook ones, chosen for small matrices (up to ~32×32, where
a call to LAPACK would cost more than the arithmetic): Cholesky–Banachiewicz, forward
and back substitution, LU with partial pivoting, cyclic Jacobi for eigh, one-sided
(Hestenes) Jacobi for the SVD, Householder QR with LAPACK's sign choice.  They run in
O(n³) per matrix (Jacobi: a few sweeps of O(n³)), for any size.

Where numpy raises LinAlgError the matrix's result is all NaN (cholesky of a matrix
not positive definite, solve with a zero pivot); slogdet gives numpy's (0, -inf).
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
from llvmlite import ir

from llgrad.compiler.codegen import math
from llgrad.ir.primitives_linalg import qr_sizes
from llgrad.llvm.loops import counted_loop
from llgrad.llvm.scalar import I1, ITEMSIZE, const, i64, load, store

#: Jacobi sweeps at most (each converges quadratically once near diagonal: 6-10 sweeps
#: suffice for the sizes measured, see docs)
MAX_SWEEPS = 40
FALSE, TRUE = ir.Constant(I1, 0), ir.Constant(I1, 1)


class _Emitter:
    """The builder with the loops, branches and scalars the algorithms are written in."""

    def __init__(self, ctx, dtype):
        self.ctx, self.b, self.dtype = ctx, ctx.b, dtype

    def c(self, value):
        return const(self.dtype, value)

    def var(self, value):
        """A mutable scalar (an alloca LLVM turns into registers)."""
        b = self.b
        with b.goto_entry_block():
            slot = b.alloca(value.type)
        b.store(value, slot)
        return slot

    @contextmanager
    def span(self, lo, hi, name="k"):
        """``for k in range(lo, hi)`` with i64 values or Python ints."""
        lo, hi = _i(lo), _i(hi)
        b = self.b
        with counted_loop(b, b.sub(hi, lo), name) as k:
            yield b.add(k, lo)

    def when(self, cond):
        return self.b.if_then(cond)

    def math(self, name, *args):
        return math.call(self.ctx, name, list(args), self.dtype)

    def add(self, x, y):
        return self.b.fadd(x, y)

    def sub(self, x, y):
        return self.b.fsub(x, y)

    def mul(self, x, y):
        return self.b.fmul(x, y)

    def div(self, x, y):
        return self.b.fdiv(x, y)

    def lt(self, x, y):
        return self.b.fcmp_ordered("<", x, y)

    def dot(self, lo, hi, term):
        """sum of term(k) for k in range(lo, hi), in order."""
        acc = self.var(self.c(0.0))
        with self.span(lo, hi) as k:
            self.b.store(self.add(self.b.load(acc), term(k)), acc)
        return self.b.load(acc)

    def fill(self, matrix, rows, cols, value):
        with self.span(0, rows, "i") as i:
            with self.span(0, cols, "j") as j:
                matrix.set(i, j, value)

    def rotation(self, theta):
        """(c, s, t) of the Jacobi rotation with cot 2φ = theta: t = tan φ =
        sgn θ / (|θ| + √(θ²+1)), c = cos φ, s = sin φ."""
        one = self.c(1.0)
        t = self.div(one, self.add(self.math("fabs", theta),
                                   self.math("sqrt", self.add(self.mul(theta, theta), one))))
        t = self.b.select(self.lt(theta, self.c(0.0)), self.b.fneg(t), t)
        c = self.div(one, self.math("sqrt", self.add(self.mul(t, t), one)))
        return c, self.mul(c, t), t

    def rotate_columns(self, matrix, rows, p, q, c, s):
        """columns p, q ← (c·p − s·q, s·p + c·q)."""
        with self.span(0, rows, "r") as k:
            xp, xq = matrix.get(k, p), matrix.get(k, q)
            matrix.set(k, p, self.sub(self.mul(c, xp), self.mul(s, xq)))
            matrix.set(k, q, self.add(self.mul(s, xp), self.mul(c, xq)))

    def swap_columns(self, matrix, rows, p, q):
        with self.span(0, rows, "r") as k:
            xp, xq = matrix.get(k, p), matrix.get(k, q)
            matrix.set(k, p, xq)
            matrix.set(k, q, xp)

    def nan_if(self, flag, matrix, rows, cols):
        with self.when(self.b.load(flag)):
            self.fill(matrix, rows, cols, self.c(float("nan")))


def _i(v):
    return i64(v) if isinstance(v, (int, np.integer)) else v


class _Matrix:
    """Matrix ``(rows × cols)`` at element offset ``base`` of a buffer, row-major,
    optionally read transposed."""

    def __init__(self, em, ptr, base, cols, transposed=False):
        self.em, self.ptr, self.base, self.cols, self.t = em, ptr, base, cols, transposed

    def _at(self, i, j):
        b = self.em.b
        i, j = (_i(j), _i(i)) if self.t else (_i(i), _i(j))
        return b.add(self.base, b.add(b.mul(i, i64(self.cols)), j))

    def get(self, i, j):
        return load(self.em.b, self.ptr, self._at(i, j), self.em.dtype)

    def set(self, i, j, value):
        store(self.em.b, value, self.ptr, self._at(i, j), self.em.dtype)


class _Symmetrised:
    """Reads (S + Sᵀ)/2: S itself for a symmetric S (x + x halves exactly)."""

    def __init__(self, matrix):
        self.matrix, self.em = matrix, matrix.em

    def get(self, i, j):
        em = self.em
        return em.mul(em.add(self.matrix.get(i, j), self.matrix.get(j, i)), em.c(0.5))


@contextmanager
def _each_matrix(ctx, node):
    """Loop over the batch: yields (emitter, matrix index)."""
    x = node.inputs[0]
    batch = int(np.prod(x.shape[:-2], dtype=np.int64))
    em = _Emitter(ctx, node.dtype)
    with counted_loop(ctx.b, batch, "batch") as t:
        yield em, t


def _offset(em, t, size):
    return em.b.mul(t, i64(size))


def _copy(em, src, dst, rows, cols):
    with em.span(0, rows, "i") as i:
        with em.span(0, cols, "j") as j:
            dst.set(i, j, src.get(i, j))


# ----------------------------------------------------------------------------------
# cholesky


def emit_cholesky(ctx, node, out):
    n = node.shape[-1]
    with _each_matrix(ctx, node) as (em, t):
        base = _offset(em, t, n * n)
        s = _Symmetrised(_Matrix(em, ctx.pointer(node.inputs[0]), base, n))
        lf = _Matrix(em, out, base, n)
        em.fill(lf, n, n, em.c(0.0))
        bad = em.var(FALSE)
        with em.span(0, n, "j") as j:
            d2 = em.sub(s.get(j, j), em.dot(0, j, lambda k: em.mul(lf.get(j, k), lf.get(j, k))))
            positive = em.b.fcmp_ordered(">", d2, em.c(0.0))
            em.b.store(em.b.or_(em.b.load(bad), em.b.not_(positive)), bad)
            d = em.math("sqrt", d2)
            lf.set(j, j, d)
            with em.span(em.b.add(j, i64(1)), n, "i") as i:
                r = em.sub(s.get(i, j), em.dot(0, j, lambda k: em.mul(lf.get(i, k), lf.get(j, k))))
                lf.set(i, j, em.div(r, d))
        em.nan_if(bad, lf, n, n)


# ----------------------------------------------------------------------------------
# triangular solve


def _substitute(em, tri, x, n, k, lower, unit):
    """x ← tri⁻¹ x in place (x holds the right-hand side)."""
    b = em.b
    with em.span(0, k, "c") as c:
        with em.span(0, n, "ii") as ii:
            i = ii if lower else b.sub(i64(n - 1), ii)
            lo, hi = (i64(0), i) if lower else (b.add(i, i64(1)), i64(n))
            r = em.sub(x.get(i, c), em.dot(lo, hi, lambda j: em.mul(tri.get(i, j), x.get(j, c))))
            x.set(i, c, r if unit else em.div(r, tri.get(i, i)))


def emit_triangular_solve(ctx, node, out):
    a, rhs = node.inputs
    n, k = rhs.shape[-2:]
    with _each_matrix(ctx, node) as (em, t):
        tri = _Matrix(em, ctx.pointer(a), _offset(em, t, n * n), n)
        x = _Matrix(em, out, _offset(em, t, n * k), k)
        _copy(em, _Matrix(em, ctx.pointer(rhs), _offset(em, t, n * k), k), x, n, k)
        _substitute(em, tri, x, n, k, node.attrs["lower"], node.attrs["unit"])


# ----------------------------------------------------------------------------------
# LU with partial pivoting: solve and slogdet


def _lu(em, lu, n, rhs=None, k=0, on_pivot=None):
    """Factor ``lu`` in place (L below the diagonal, U on and above), swapping rows of
    ``rhs`` (n×k) along and eliminating in it.  ``on_pivot(pivot, swapped)`` sees each
    pivot.  Returns a flag: some pivot was exactly 0."""
    b = em.b
    singular = em.var(FALSE)
    with em.span(0, n, "p") as p:
        best, row = em.var(em.math("fabs", lu.get(p, p))), em.var(p)
        with em.span(b.add(p, i64(1)), n, "i") as i:
            v = em.math("fabs", lu.get(i, p))
            with em.when(b.fcmp_ordered(">", v, b.load(best))):
                b.store(v, best)
                b.store(i, row)
        piv = b.load(row)
        swapped = b.icmp_signed("!=", piv, p)
        with em.when(swapped):
            for m, cols in ((lu, n), (rhs, k)):
                if m is not None:
                    with em.span(0, cols, "j") as j:
                        x, y = m.get(p, j), m.get(piv, j)
                        m.set(p, j, y)
                        m.set(piv, j, x)
        pivot = lu.get(p, p)
        b.store(b.or_(b.load(singular), b.fcmp_ordered("==", pivot, em.c(0.0))), singular)
        if on_pivot is not None:
            on_pivot(pivot, swapped)
        with em.span(b.add(p, i64(1)), n, "i") as i:
            f = em.div(lu.get(i, p), pivot)
            lu.set(i, p, f)
            with em.span(b.add(p, i64(1)), n, "j") as j:
                lu.set(i, j, em.sub(lu.get(i, j), em.mul(f, lu.get(p, j))))
            if rhs is not None:
                with em.span(0, k, "c") as c:
                    rhs.set(i, c, em.sub(rhs.get(i, c), em.mul(f, rhs.get(p, c))))
    return singular


def square_scratch(node):
    """One n×n work matrix, reused by every matrix of the batch."""
    n = node.inputs[0].shape[-1]
    return (n * n * ITEMSIZE[node.dtype],)


def emit_solve(ctx, node, out):
    a, rhs = node.inputs
    n, k = rhs.shape[-2:]
    with _each_matrix(ctx, node) as (em, t):
        lu = _Matrix(em, ctx.scratch[0], i64(0), n)
        _copy(em, _Matrix(em, ctx.pointer(a), _offset(em, t, n * n), n), lu, n, n)
        x = _Matrix(em, out, _offset(em, t, n * k), k)
        _copy(em, _Matrix(em, ctx.pointer(rhs), _offset(em, t, n * k), k), x, n, k)
        singular = _lu(em, lu, n, x, k)
        _substitute(em, lu, x, n, k, lower=False, unit=False)
        em.nan_if(singular, x, n, k)


def emit_slogdet(ctx, node, out):
    n = node.inputs[0].shape[-1]
    with _each_matrix(ctx, node) as (em, t):
        b = em.b
        lu = _Matrix(em, ctx.scratch[0], i64(0), n)
        _copy(em, _Matrix(em, ctx.pointer(node.inputs[0]), _offset(em, t, n * n), n), lu, n, n)
        sign, logabs = em.var(em.c(1.0)), em.var(em.c(0.0))

        def on_pivot(pivot, swapped):
            flip = b.xor(swapped, em.lt(pivot, em.c(0.0)))
            b.store(b.select(flip, b.fneg(b.load(sign)), b.load(sign)), sign)
            b.store(em.add(b.load(logabs), em.math("log", em.math("fabs", pivot))), logabs)

        singular = _lu(em, lu, n, on_pivot=on_pivot)
        zero = b.load(singular)
        where = _offset(em, t, 2)
        store(b, b.select(zero, em.c(0.0), b.load(sign)), out, where, node.dtype)
        store(b, b.select(zero, em.c(float("-inf")), b.load(logabs)), out,
              b.add(where, i64(1)), node.dtype)


# ----------------------------------------------------------------------------------
# eigh: cyclic Jacobi


def _tolerance(dtype):
    return float(np.finfo(dtype).eps)


def _sweeps(em, body):
    """Up to MAX_SWEEPS calls of ``body(converged_flag)``, each skipped once the flag
    (which ``body`` sets) is true."""
    done = em.var(FALSE)
    with em.span(0, MAX_SWEEPS, "sweep"):
        with em.when(em.b.not_(em.b.load(done))):
            body(done)


def _sort_columns(em, values, n, columns, descending):
    """Selection sort of ``values`` (a 1×n matrix), swapping ``columns`` ((matrix,
    rows) pairs) along."""
    b = em.b
    with em.span(0, n, "i") as i:
        best = em.var(i)
        with em.span(b.add(i, i64(1)), n, "j") as j:
            x, y = values.get(0, j), values.get(0, b.load(best))
            with em.when(b.fcmp_ordered(">" if descending else "<", x, y)):
                b.store(j, best)
        m = b.load(best)
        with em.when(b.icmp_signed("!=", m, i)):
            x, y = values.get(0, i), values.get(0, m)
            values.set(0, i, y)
            values.set(0, m, x)
            for matrix, rows in columns:
                em.swap_columns(matrix, rows, i, m)


def _largest_entry_positive(em, v, rows, n, also=()):
    """Negate each column of ``v`` (and of the ``also`` (matrix, rows) pairs) whose
    largest-magnitude entry (the first of equals) is negative."""
    b = em.b
    with em.span(0, n, "j") as j:
        best, at = em.var(em.c(-1.0)), em.var(i64(0))
        with em.span(0, rows, "i") as i:
            x = em.math("fabs", v.get(i, j))
            with em.when(b.fcmp_ordered(">", x, b.load(best))):
                b.store(x, best)
                b.store(i, at)
        with em.when(em.lt(v.get(b.load(at), j), em.c(0.0))):
            for matrix, count in ((v, rows),) + tuple(also):
                with em.span(0, count, "i") as i:
                    matrix.set(i, j, b.fneg(matrix.get(i, j)))


def emit_eigh(ctx, node, out):
    """Jacobi rotations Jᵀ A J of the symmetric working copy, each zeroing A[p, q]: rows
    p and q rotated in place (contiguous), columns p and q copied from them (A stays
    symmetric), the 2×2 block set directly.  V accumulates the rotations, stored
    transposed so that its columns are contiguous too."""
    n = node.shape[-1]
    with _each_matrix(ctx, node) as (em, t):
        b = em.b
        a = _Matrix(em, ctx.scratch[0], i64(0), n)
        v = _Matrix(em, ctx.scratch[1], i64(0), n, transposed=True)
        source = _Matrix(em, ctx.pointer(node.inputs[0]), _offset(em, t, n * n), n)
        _copy(em, _Symmetrised(source), a, n, n)
        _identity(em, v, n)
        total = em.dot(0, n * n, lambda k: em.mul(a.get(0, k), a.get(0, k))) if n else em.c(0.0)
        # converged: the off-diagonal part below eps·‖A‖ (eigenvalues then move by
        # less, second order in it; the next sweep would square it again)
        limit = em.mul(total, em.c(_tolerance(node.dtype) ** 2))

        def sweep(done):
            off = em.var(em.c(0.0))
            with em.span(0, n, "p") as p:
                with em.span(b.add(p, i64(1)), n, "q") as q:
                    apq = a.get(p, q)
                    b.store(em.add(b.load(off), em.mul(apq, apq)), off)
            b.store(b.fcmp_ordered("<=", b.load(off), limit), done)
            with em.when(b.not_(b.load(done))):
                with em.span(0, n, "p") as p:
                    with em.span(b.add(p, i64(1)), n, "q") as q:
                        apq = a.get(p, q)
                        with em.when(b.fcmp_unordered("!=", apq, em.c(0.0))):
                            _jacobi_rotation(em, a, v, n, p, q, apq)
        _sweeps(em, sweep)
        base = _offset(em, t, (n + 1) * n)
        w = _Matrix(em, out, base, n)
        with em.span(0, n, "i") as i:
            w.set(0, i, a.get(i, i))
        _sort_columns(em, w, n, [(v, n)], descending=False)
        _largest_entry_positive(em, v, n, n)
        _copy(em, v, _Matrix(em, out, b.add(base, i64(n)), n), n, n)


def _jacobi_rotation(em, a, v, n, p, q, apq):
    app, aqq = a.get(p, p), a.get(q, q)
    c, s, t = em.rotation(em.div(em.sub(aqq, app), em.mul(em.c(2.0), apq)))
    _rotate_rows(em, a, n, p, q, c, s)
    with em.span(0, n, "k") as k:
        a.set(k, p, a.get(p, k))
        a.set(k, q, a.get(q, k))
    a.set(p, p, em.sub(app, em.mul(t, apq)))
    a.set(q, q, em.add(aqq, em.mul(t, apq)))
    a.set(p, q, em.c(0.0))
    a.set(q, p, em.c(0.0))
    em.rotate_columns(v, n, p, q, c, s)


def _identity(em, matrix, n):
    em.fill(matrix, n, n, em.c(0.0))
    with em.span(0, n, "i") as i:
        matrix.set(i, i, em.c(1.0))


def _rotate_rows(em, a, n, p, q, c, s):
    with em.span(0, n, "r") as k:
        xp, xq = a.get(p, k), a.get(q, k)
        a.set(p, k, em.sub(em.mul(c, xp), em.mul(s, xq)))
        a.set(q, k, em.add(em.mul(s, xp), em.mul(c, xq)))


# ----------------------------------------------------------------------------------
# svd (rows >= columns): one-sided Jacobi on the columns of W = A, V accumulates


def emit_svd(ctx, node, out):
    """Rotations of column pairs of W = A until all are orthogonal (W = UΣ, V the
    product of the rotations); W and V are stored transposed, so their columns are
    contiguous."""
    m, n = node.inputs[0].shape[-2:]
    with _each_matrix(ctx, node) as (em, t):
        b = em.b
        w = _Matrix(em, ctx.scratch[0], i64(0), m, transposed=True)
        v = _Matrix(em, ctx.scratch[1], i64(0), n, transposed=True)
        _copy(em, _Matrix(em, ctx.pointer(node.inputs[0]), _offset(em, t, m * n), n), w, m, n)
        _identity(em, v, n)
        # columns count as orthogonal at the rounding error of their dot product
        tol = em.c(max(m, 4) * _tolerance(node.dtype))

        def sweep(done):
            b.store(TRUE, done)
            with em.span(0, n, "p") as p:
                with em.span(b.add(p, i64(1)), n, "q") as q:
                    alpha = em.dot(0, m, lambda k: em.mul(w.get(k, p), w.get(k, p)))
                    beta = em.dot(0, m, lambda k: em.mul(w.get(k, q), w.get(k, q)))
                    gamma = em.dot(0, m, lambda k: em.mul(w.get(k, p), w.get(k, q)))
                    scale = em.mul(tol, em.math("sqrt", em.mul(alpha, beta)))
                    with em.when(b.fcmp_ordered(">", em.math("fabs", gamma), scale)):
                        b.store(FALSE, done)
                        zeta = em.div(em.sub(beta, alpha), em.mul(em.c(2.0), gamma))
                        c, sn, _ = em.rotation(zeta)
                        em.rotate_columns(w, m, p, q, c, sn)
                        em.rotate_columns(v, n, p, q, c, sn)
        _sweeps(em, sweep)
        base = _offset(em, t, (m + 1 + n) * n)
        u = _Matrix(em, out, base, n)
        s = _Matrix(em, out, b.add(base, i64(m * n)), n)
        with em.span(0, n, "j") as j:
            s.set(0, j, em.math("sqrt", em.dot(0, m, lambda k: em.mul(w.get(k, j), w.get(k, j)))))
        _sort_columns(em, s, n, [(w, m), (v, n)], descending=True)
        with em.span(0, n, "j") as j:
            sj = s.get(0, j)
            zero = b.fcmp_unordered("==", sj, em.c(0.0))
            inverse = em.div(em.c(1.0), b.select(zero, em.c(1.0), sj))
            with em.span(0, m, "i") as i:
                u.set(i, j, em.mul(w.get(i, j), inverse))
        _complete_columns(em, u, s, m, n)
        _largest_entry_positive(em, v, n, n, also=[(u, m)])
        _copy(em, _Matrix(em, v.ptr, i64(0), n), _Matrix(em, out, b.add(base, i64((m + 1) * n)), n),
              n, n)


def _complete_columns(em, u, s, m, n):
    """Each column of U whose singular value is 0 (a zero column so far) becomes a unit
    vector orthogonal to all the others, as LAPACK's: the standard basis vector with the
    largest part outside them, that part (Gram–Schmidt, twice) normalised."""
    b = em.b
    with em.span(0, n, "j") as j:
        with em.when(b.fcmp_ordered("==", s.get(0, j), em.c(0.0))):
            best, at = em.var(em.c(-1.0)), em.var(i64(0))
            with em.span(0, m, "i") as i:   # ‖(I − UUᵀ) e_i‖² = 1 − Σ_l U[i, l]²
                outside = em.sub(em.c(1.0), em.dot(0, n, lambda k: em.mul(u.get(i, k),
                                                                          u.get(i, k))))
                with em.when(b.fcmp_ordered(">", outside, b.load(best))):
                    b.store(outside, best)
                    b.store(i, at)
            with em.span(0, m, "i") as i:
                u.set(i, j, b.select(b.icmp_signed("==", i, b.load(at)), em.c(1.0),
                                     em.c(0.0)))
            for _ in range(2):
                with em.span(0, n, "l") as col:
                    with em.when(b.icmp_signed("!=", col, j)):
                        d = em.dot(0, m, lambda k: em.mul(u.get(k, col), u.get(k, j)))
                        with em.span(0, m, "k") as k:
                            u.set(k, j, em.sub(u.get(k, j), em.mul(d, u.get(k, col))))
            norm = em.math("sqrt", em.dot(0, m, lambda k: em.mul(u.get(k, j), u.get(k, j))))
            with em.span(0, m, "k") as k:
                u.set(k, j, em.div(u.get(k, j), norm))


def svd_scratch(node):
    """Wᵀ and Vᵀ."""
    m, n = node.inputs[0].shape[-2:]
    return (m * n * ITEMSIZE[node.dtype], n * n * ITEMSIZE[node.dtype])


def eigh_scratch(node):
    """A and Vᵀ."""
    return square_scratch(node) * 2


# ----------------------------------------------------------------------------------
# qr: Householder reflectors H = I − τ v vᵀ (v_j = 1), β = −sign(α)·‖x‖ as LAPACK


def emit_qr(ctx, node, out):
    """The working copy of A and Q are stored transposed: a reflector and the columns
    it is applied to are then contiguous."""
    m, n = node.inputs[0].shape[-2:]
    k = qr_sizes(m, n, node.attrs["complete"])
    r_count = min(m, n)
    with _each_matrix(ctx, node) as (em, t):
        b = em.b
        r = _Matrix(em, ctx.scratch[0], i64(0), m, transposed=True)
        tau = _Matrix(em, ctx.scratch[1], i64(0), max(r_count, 1))
        _copy(em, _Matrix(em, ctx.pointer(node.inputs[0]), _offset(em, t, m * n), n), r, m, n)
        with em.span(0, r_count, "j") as j:
            _reflect(em, r, tau, m, n, j)
        base = _offset(em, t, m * k + k * n)
        q = _Matrix(em, ctx.scratch[2], i64(0), m, transposed=True)
        em.fill(q, m, k, em.c(0.0))
        with em.span(0, min(m, k), "i") as i:
            q.set(i, i, em.c(1.0))
        with em.span(0, r_count, "jj") as jj:
            j = b.sub(i64(r_count - 1), jj)
            _apply_reflector(em, r, tau, m, j, q, 0, k)
        _copy(em, q, _Matrix(em, out, base, k), m, k)
        rr = _Matrix(em, out, b.add(base, i64(m * k)), n)
        with em.span(0, k, "i") as i:
            with em.span(0, n, "j") as jc:
                above = b.icmp_signed("<=", i, jc)
                rr.set(i, jc, b.select(above, r.get(i, jc), em.c(0.0)))


def _reflect(em, r, tau, m, n, j):
    """Column j's reflector: v below the diagonal of ``r`` (v_j = 1 implied), τ in
    ``tau``, β on the diagonal; then applied to the columns right of j."""
    b = em.b
    alpha = r.get(j, j)
    below = b.add(j, i64(1))
    xnorm2 = em.dot(below, m, lambda i: em.mul(r.get(i, j), r.get(i, j)))
    tau.set(0, j, em.c(0.0))
    with em.when(b.fcmp_ordered(">", xnorm2, em.c(0.0))):
        norm = em.math("sqrt", em.add(em.mul(alpha, alpha), xnorm2))
        beta = b.select(b.fcmp_ordered(">=", alpha, em.c(0.0)), b.fneg(norm), norm)
        tau.set(0, j, em.div(em.sub(beta, alpha), beta))
        scale = em.div(em.c(1.0), em.sub(alpha, beta))
        with em.span(below, m, "i") as i:
            r.set(i, j, em.mul(r.get(i, j), scale))
        r.set(j, j, beta)
    _apply_reflector(em, r, tau, m, j, r, b.add(j, i64(1)), n)


def _apply_reflector(em, r, tau, m, j, target, first, last):
    """target[:, first:last] ← H_j target[:, first:last]."""
    b = em.b
    tj = tau.get(0, j)
    below = b.add(j, i64(1))
    with em.when(b.fcmp_unordered("!=", tj, em.c(0.0))):
        with em.span(first, last, "c") as c:
            d = em.add(target.get(j, c),
                       em.dot(below, m, lambda i: em.mul(r.get(i, j), target.get(i, c))))
            f = em.mul(tj, d)
            target.set(j, c, em.sub(target.get(j, c), f))
            with em.span(below, m, "i") as i:
                target.set(i, c, em.sub(target.get(i, c), em.mul(f, r.get(i, j))))


def qr_scratch(node):
    """The working copy of A (R above the diagonal, the reflectors below), τ and Q."""
    m, n = node.inputs[0].shape[-2:]
    item = ITEMSIZE[node.dtype]
    k = qr_sizes(m, n, node.attrs["complete"])
    return (m * n * item, max(min(m, n), 1) * item, m * k * item)

