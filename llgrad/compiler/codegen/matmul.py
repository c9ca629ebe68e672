"""dot_general as canonical (B, M, K) x (B, K, N) -> (B, M, N) matrix products.

Small and medium products run as generated register tiles (``tiles``); large ones,
and those the tiles could only do with scalars, call BLAS gemm when the module was
configured with BLAS symbols.  Both read an operand stored transposed per batch in
place; operands in any other axis order (and, for the tiles, a right operand whose
rows are not contiguous) are first copied into arena scratch in batch/row/column order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from llgrad.compiler.codegen import gathered, matvec, parallel, tiles, transpose
from llgrad.llvm import atomics
from llgrad.llvm.indexing import Index
from llgrad.llvm.loops import counted_loop, loop_nest
from llgrad.llvm.scalar import (I64, ITEMSIZE, MEMORY, PTR, REGISTER, copy_bytes, declare, i64,
                                 linearise, store)
from llgrad.runtime import calibration
from llgrad.runtime.pool import HOLD_SYMBOL, RELEASE_SYMBOL, REST_SYMBOL

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
        """Which operands need a copy in (batch, row, column) order: (lhs?, rhs?).
        BLAS reads a transposed lhs in place, and so do the tiles unless its sums are
        long (``COPY_TRANSPOSED_MIN_K``); the tiles need rows of the rhs contiguous,
        BLAS does not (its copies are then never made)."""
        la, lb = self.gemm_layouts
        return (la is None or (la == "T" and self.K >= COPY_TRANSPOSED_MIN_K
                               and self.N >= COPY_TRANSPOSED_MIN_N),
                lb is None or not tiles.contiguous_rows(_strides(lb, self.K, self.N), self.N))

    @property
    def gemm_layouts(self):
        """BLAS reads a per-batch transposed operand in place ('T'); only other
        orders need a copy (None): (lhs, rhs), each 'N', 'T' or None."""
        return (_layout(self.lhs_perm, self.nb, self.n_lf),
                _layout(self.rhs_perm, self.nb, self.n_rc))


#: a transposed left operand (``X.T @ dH``, a weight gradient over a large batch) is
#: copied for the tiles, its rows then contiguous, from this many terms a sum and this
#: many columns of C (the tiles re-read A once per panel of columns): read in place,
#: each step of k reads a new line of A for a few of its elements.  784x1024x128
#: float32 ran in 1.58 ms in place and 1.30 ms copied (compiled for Haswell: 3.15 and
#: 2.84), 784x2048x128 in 2.87 and 2.38 ms; 784x512x128 in 1.23 and 1.28 ms for
#: Haswell, 784x1024x32 in 431 and 521 us.  Re-measure: ``LLGRAD_THREADS=1 python
#: benchmarks/bench_matmul.py --dtype float32 784,1024,128,TN 784,512,128,TN
#: 784,1024,32,TN`` (``LLGRAD_CPU=haswell`` for AVX2).
COPY_TRANSPOSED_MIN_K = 1024
COPY_TRANSPOSED_MIN_N = 128


def _layout(perm, nb, n_first):
    """'N' if the operand is already (batch, first, second) in memory, 'T' if it is
    (batch, second, first), None otherwise."""
    identity = tuple(range(len(perm)))
    if perm == identity:
        return "N"
    batch, first, second = perm[:nb], perm[nb:nb + n_first], perm[nb + n_first:]
    return "T" if batch + second + first == identity else None


def _strides(layout, rows, cols):
    """Element strides (batch, row, column) of a batch of rows x cols matrices stored
    in ``layout`` ('N': row-major; 'T': each matrix transposed; None: copied to 'N')."""
    return (rows * cols, 1, rows) if layout == "T" else (rows * cols, cols, 1)


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
    padded = (c.B * c.K * _padded_row(c, node.dtype) * item,) if _pads_by_copy(
        c, node.dtype, MIN_L1D_SPAN, WIDEST_VECTOR_BITS) else ()
    return tuple(n for n, needed in zip(sizes, c.copies) if needed) + padded


#: a right operand that the tiles read in place, with rows half the L1 data cache's
#: span apart or a multiple of that (``l1d_span``: sets x line, 4 KB here), is read
#: through packed column panels (``tiles.packs``: each panel's rows copied one after
#: another into a buffer its tiles then read), or, where a panel would not fit that
#: buffer and the rows are a whole span apart, through a copy of B with each row one
#: cache line longer.  The tiles read a column panel of B down its rows; rows a span
#: apart fall in one set of L1 and in few of L2, which keep only their ways of them, so
#: a long panel streams from L3.  64x784x1024 float32 (rows 4 KB apart) took 1.91 ms as
#: tiles, 0.99 ms through the padded copy (B read and written once, ~0.25 ms), 0.84 ms
#: through packed panels, against 1.01 ms in OpenBLAS (one thread, 2026-12-07).  Rows
#: 2 KB apart fall in two sets: 128x784x512 ran in 1.49 ms in place, 0.90 ms packed
#: (AVX-512; compiled for AVX2, 3.61 and 2.27 ms).  Both pay for many rows of A and a
#: long panel: a padded copy at 32 rows lost for K = 256 (146 us against 124) and tied
#: for K = 784.  Packing costs one read and write of B and pays from the second tile
#: of rows on: 784x64x1024 float32 (B's K x N rows 4 KB apart) ran in 1.50 ms in place
#: and 1.12 ms packed, 128x128x1024 in 415 and 325 us, 32x784x1024 in 1.57 and 0.88 ms;
#: 8x784x512 (one tile of rows) in 65 us in place and 109 packed.  Rows in no such
#: set but a quarter span apart or more (each a page or so from the next) are packed
#: where many rows of A read them: 784x64x256 ran in 267 us in place and 227 packed,
#: 64x784x320 in 343 and 312, but 32x784x256 in 117 and 143, 64x784x192 (768-byte
#: rows) in 173 and 180.  Re-measure: ``LLGRAD_THREADS=1 python
#: benchmarks/bench_matmul.py --dtype float32 64,784,1024,NN 64,784,1040,NN
#: 128,784,512,NN 128,784,528,NN 784,64,1024,TN 784,64,256,TN 32,784,256,NN``
#: (``LLGRAD_CPU=haswell`` for AVX2).  Where BLAS is found, timing each product
#: (``product_timing``) still chooses these tiles or BLAS.
PACK_MIN_ROWS = 16
PACK_WIDE_MIN_ROWS = 64
PAD_MIN_ROWS = 64
PAD_MIN_K = 512
#: the smallest span, and the widest vectors (the largest packed panels), that
#: ``scratch_bytes``, which sees no options, reserves the padded copy for: a host with a
#: larger span or narrower vectors needs it only where these would
MIN_L1D_SPAN = 1024
WIDEST_VECTOR_BITS = 512


def _b_in_place(c: Canonical) -> bool:
    """Whether the tiles read B where it is stored (row-major, rows contiguous)."""
    return c.gemm_layouts[1] == "N" and not c.copies[1]


def _packing_rows(c: Canonical, dtype: str, span: int) -> int | None:
    """The fewest rows of A that make the tiles read B, read in place, through packed
    panels (see ``PACK_MIN_ROWS``): rows of B half of ``span`` bytes apart or a multiple
    of that fall in at most two sets of L1; rows a quarter of it apart or more are far
    apart; None where B is read as it is."""
    if not _b_in_place(c):
        return None
    row = c.N * ITEMSIZE[dtype]
    if row % (span // 2) == 0:
        return PACK_MIN_ROWS
    return PACK_WIDE_MIN_ROWS if row >= span // 4 else None


def _pads_by_copy(c: Canonical, dtype: str, span: int, vector_bits: int) -> bool:
    """Whether the tiles read B through the padded copy: a panel too long to pack, its
    rows a whole ``span`` apart (two sets of L1 cost less than copying B: 64x2000x512
    float32, rows 2 KB apart, ran in 3.1 ms in place and 3.8 ms through the copy), and
    many rows of A and of B (see ``PAD_MIN_ROWS``)."""
    lanes = vector_bits // (8 * ITEMSIZE[dtype])
    return (_b_in_place(c) and c.N * ITEMSIZE[dtype] % span == 0 and c.K >= PAD_MIN_K
            and c.M >= PAD_MIN_ROWS and not tiles.packs(c.K, c.N, lanes, dtype))


def _padded_row(c: Canonical, dtype: str) -> int:
    """Elements from one row of B's copy to the next: one cache line more than N."""
    return c.N + 64 // ITEMSIZE[dtype]


def _padded_copy(b, src, dst, c: Canonical, dtype: str):
    """B's rows, every batch's, into ``dst`` ``_padded_row`` elements apart."""
    item = ITEMSIZE[dtype]
    with counted_loop(b, c.B * c.K, "pad") as row:
        at = lambda ptr, per: b.gep(ptr, [b.mul(row, i64(per * item))],  # noqa: E731
                                    source_etype=ir.IntType(8))
        copy_bytes(b, at(dst, _padded_row(c, dtype)), at(src, c.N), i64(c.N * item))
    return tiles.Matrix(dst, (c.K * _padded_row(c, dtype), _padded_row(c, dtype), 1))


def _reordered(ctx, x, perm, scratch):
    """``x`` with its axes in ``perm`` order, in ``scratch`` (row-major): a stored
    float matrix (or batch of them) transposed block by block (``transpose``), any
    other order element by element."""
    b = ctx.b
    if _blockwise(ctx, x, perm):
        batch = int(np.prod(x.shape[:-2], dtype=np.int64))
        transpose.emit_transpose(b, ctx.pointer(x), scratch, batch, x.shape[-2], x.shape[-1],
                                 x.dtype, _lanes(ctx.options, x.dtype))
        return scratch
    shape = tuple(x.shape[p] for p in perm)
    with loop_nest(b, shape, "t") as idx:
        axes = [None] * len(perm)
        for k, p in enumerate(perm):
            axes[p] = idx[k]
        store(b, ctx.read(x, Index(tuple(axes))), scratch, linearise(b, idx, shape), x.dtype)
    return scratch


def _blockwise(ctx, x, perm) -> bool:
    """Whether ``x`` in ``perm`` order is a stored float matrix (or batch) transposed."""
    n = len(perm)
    return (n >= 2 and tuple(perm) == tuple(range(n - 2)) + (n - 1, n - 2)
            and x.dtype in ("float32", "float64") and id(x) in ctx.pointers)


def _lanes(options, dtype) -> int:
    return options.vector_bits // (8 * ITEMSIZE[dtype])


#: products with at least this many multiply-adds go to BLAS when it is available,
#: up to ``LARGE_TILES_MIN_FLOPS``.  Both run at about the FMA units' peak from ~32**3
#: on, so what the tiles save is BLAS's per-call cost, while each shape of tile costs
#: compile time (LLVM's time per instruction): above this size the saving no longer
#: pays for the compile.  Just below it, tiles also run the product's elementwise
#: successor as its epilogue (``codegen.epilogue``), which BLAS cannot.  Re-measure:
#: ``OPENBLAS_NUM_THREADS=1 python benchmarks/bench_matmul.py`` (both sides at the tiny
#: MLP's shapes and squares up to 128); for the MLP step's 64x128x10 products, the
#: training workload end to end, ``python -m llgrad bench --threads 2 --workloads
#: training --systems "llgrad native"``, and the first call in
#: ``python benchmarks/bench_cache_hit.py``.
BLAS_MIN_FLOPS = 2 ** 17
#: from this many multiply-adds products run as tiles again, split across the pool's
#: threads, while what the tiles re-read stays in ``tile_panel_bytes`` (half of a
#: core's L2 cache): either the whole right operand, or the left one together with
#: one column panel of the right (the tiles take C a panel of columns at a time, every
#: row tile re-reading the panel and every panel re-reading A).  OpenBLAS copies both
#: operands into packed panels first, which these sizes do not repay; once what the
#: tiles re-read outgrows L2 they fall far behind, so those products stay with BLAS.
#: Re-measure on cores with different L2 sizes, at ``OPENBLAS_NUM_THREADS=1
#: LLGRAD_THREADS=1`` and again at ``=2``: ``python benchmarks/bench_matmul.py --dtype
#: float32 64,784,128,NN 64,784,256,NN 64,784,1024,NN 512,512,512,NN 1024,1024,1024,NN
#: 32,4096,1024,NN`` and ``--dtype float64 64,784,128,NN 512,512,512,NN
#: 32,2048,1024,NN``.
LARGE_TILES_MIN_FLOPS = 2 ** 20
#: from this many multiply-adds OpenBLAS runs a product on its own threads (its
#: GEMM_MULTITHREAD_THRESHOLD, 4 x 65536); in a module that splits work on llgrad's
#: pool such products are tiles, since two pools on the same cores wait for each
#: other: a thread of one spins on the core a thread of the other needs, during a
#: product and for a while after it, so with OpenBLAS on two threads a gradient can
#: run slower than with OpenBLAS on one, the split kernels after the product included.
#: Only whole programs show it: ``python -m llgrad bench --threads 2 --workloads
#: scaling`` (the 784-1024-10 gradient at batch 64 suffers most; a 784-256-256-10
#: gradient at batch 128 is not in the suite: time it with ``llgrad.profile``).  The
#: tiles against OpenBLAS, both on two threads: ``OPENBLAS_NUM_THREADS=2
#: LLGRAD_THREADS=2 python benchmarks/bench_matmul.py --dtype float32 128,784,256,NN
#: 512,512,512,NN 1024,1024,1024,NN``.
BLAS_THREADS_MIN_FLOPS = 2 ** 18
#: products the tiles can only do with scalars (N = 1 with A's columns strided, see
#: ``tiles.vectorised``) go to BLAS from this size, where BLAS's gemv (which reorders
#: the sum) overtakes scalar tiles; below it the call costs more.  Re-measure:
#: ``OPENBLAS_NUM_THREADS=1 python benchmarks/bench_matmul.py 100,16,1,NN 16,100,1,TN``
SCALAR_BLAS_MIN_FLOPS = 1024


def _fits(gemm, c) -> bool:
    """Fortran BLAS and LP64 CBLAS take 32-bit sizes; beyond them the (64-bit) tiles run."""
    return gemm.convention == "cblas64" or max(c.M, c.N, c.K) < 2 ** 31


def _emit_gemm(b, c, A, Bm, out, dtype, gemm, layouts=("N", "N")):
    """Row-major C = op(A) op(B), one gemm per batch; an operand stored transposed is
    read in place with 'T' and the other leading dimension."""
    item = ITEMSIZE[dtype]
    with counted_loop(b, c.B, "gemm") as batch:
        at = lambda ptr, per: b.gep(ptr, [b.mul(batch, i64(per * item))],  # noqa: E731
                                    source_etype=ir.IntType(8))
        _gemm_call(b, c, at(A, c.M * c.K), at(Bm, c.K * c.N), at(out, c.M * c.N), dtype, gemm,
                   layouts, i64(c.M))


def _gemm_call(b, c, a, bm, cm, dtype, gemm, layouts, rows):
    """One gemm of ``rows`` (an i64 value, at most M) rows of C = op(A) op(B) of one
    batch, from the rows ``a`` and ``cm`` point at; the leading dimensions are those of
    the whole matrices."""
    t = REGISTER[dtype]
    lda = c.K if layouts[0] == "N" else c.M
    ldb = c.N if layouts[1] == "N" else c.K
    i32 = ir.IntType(32)
    if gemm.convention in ("cblas", "cblas64"):
        # cblas_?gemm(RowMajor=101, transA, transB, M, N, K, 1, A, lda, B, ldb, 0, C, N),
        # sizes 64-bit ("cblas64", numpy's OpenBLAS) or 32-bit (a system CBLAS)
        size = I64 if gemm.convention == "cblas64" else i32
        n = lambda value: ir.Constant(size, value)  # noqa: E731
        fn = declare(b.module, gemm.symbol, ir.VoidType(),
                     [i32] * 3 + [size] * 3 + [t, PTR, size, PTR, size, t, PTR, size])
        trans = {"N": ir.Constant(i32, 111), "T": ir.Constant(i32, 112)}
        m = rows if size is I64 else b.trunc(rows, i32)
        b.call(fn, [ir.Constant(i32, 101), trans[layouts[0]], trans[layouts[1]],
                    m, n(c.N), n(c.K), ir.Constant(t, 1.0), a, n(lda),
                    bm, n(ldb), ir.Constant(t, 0.0), cm, n(c.N)])
        return
    # Fortran, column-major: the column-major view of a row-major matrix is its
    # transpose, so C^T = op(B)^T op(A)^T: gemm(tb, ta, N, M, K, 1, B, ldb, A, lda, 0, C, N)
    i8 = ir.IntType(8)
    fn = declare(b.module, gemm.symbol, ir.VoidType(), [PTR] * 13)
    with b.goto_entry_block():
        cells = [b.alloca(typ) for typ in (i8, i8, i32, i32, i32, t, i32, i32, t, i32)]
    values = [ir.Constant(i8, ord(layouts[1])), ir.Constant(i8, ord(layouts[0])),
              ir.Constant(i32, c.N), b.trunc(rows, i32), ir.Constant(i32, c.K),
              ir.Constant(t, 1.0), ir.Constant(i32, ldb), ir.Constant(i32, lda),
              ir.Constant(t, 0.0), ir.Constant(i32, c.N)]
    for cell, value in zip(cells, values):
        b.store(value, cell)
    tb, ta, n, m, k, one, pldb, plda, zero, ldc = cells
    b.call(fn, [tb, ta, n, m, k, one, bm, pldb, a, plda, zero, cm, ldc])


#: the fewest rows of C a part of a product split across the pool as BLAS calls gets
POOL_GEMM_MIN_ROWS = 8


def _emit_gemm_on_pool(b, options, c, A, Bm, out, dtype, gemm, layouts):
    """A product OpenBLAS would run on its own threads, run as bands of C's rows on
    llgrad's pool instead, each band one gemm with OpenBLAS held to one thread.  Two
    pools on the same cores wait for each other: OpenBLAS's threads spin on the cores
    for ~0.15 s after a threaded call, so in a module that also splits work on llgrad's
    pool every later split ran slower meanwhile (784-128-10 at batch 512, two threads:
    a gradient's median 1.6 ms with a product through threaded OpenBLAS, 0.89 ms with
    no BLAS at all).  Single-threaded OpenBLAS called from two threads at once ran 40
    products of 1600x256x1024 in 128 ms, against 124 ms on OpenBLAS's two threads and
    223 ms on one (numpy from two Python threads, 2026-12-07; this path against the
    tiles: the BLAS column of ``LLGRAD_THREADS=2 python benchmarks/bench_matmul.py``).
    The count OpenBLAS had is put back after the product, by the last of the products
    holding it at the time (``runtime.pool``: two Python threads may run such products
    at once)."""
    getter, setter = gemm.thread_count_symbols
    i32 = ir.IntType(32)
    get = declare(b.module, getter, i32, [])
    set_ = declare(b.module, setter, ir.VoidType(), [i32])
    b.call(declare(b.module, HOLD_SYMBOL, ir.VoidType(), [PTR, PTR]), [get, set_])
    band = -(-c.M // options.threads)
    parts = -(-c.M // band)
    item = ITEMSIZE[dtype]
    a_row = (c.K if layouts[0] == "N" else 1) * item      # bytes from a row of A to the next

    def emit_part(pb, pointers, part):
        pa, pbm, pc = pointers
        first = pb.mul(part, i64(band))
        rows = pb.select(pb.icmp_unsigned("<", part, i64(parts - 1)), i64(band),
                         i64(c.M - (parts - 1) * band))
        at = lambda ptr, per: pb.gep(ptr, [pb.mul(first, i64(per))],  # noqa: E731
                                     source_etype=ir.IntType(8))
        _gemm_call(pb, c, at(pa, a_row), pbm, at(pc, c.N * item), dtype, gemm, layouts, rows)

    parallel.run_parts(b, f"{b.function.name}.gemm", parts, [A, Bm, out], emit_part)
    b.call(declare(b.module, RELEASE_SYMBOL, ir.VoidType(), [PTR]), [set_])


def _on_pool(options, gemm, c: Canonical) -> bool:
    """Whether a BLAS product runs as single-threaded calls split on llgrad's pool
    (``_emit_gemm_on_pool``): where OpenBLAS would start its threads, the BLAS lets its
    thread count be set, and C has rows enough for each part."""
    return (_blas_would_thread(options, c.M * c.K * c.N) and c.B == 1
            and gemm.thread_count_symbols is not None
            and c.M >= POOL_GEMM_MIN_ROWS * options.threads)


def blas_keeps_threads_spinning(options, node) -> bool:
    """Whether this product, through BLAS, runs on OpenBLAS's own threads (not split
    on llgrad's pool, ``_on_pool``), which spin on the cores after the call."""
    c = canonical(node)
    gemm = options.gemm(node.dtype)
    return (gemm is not None and _blas_would_thread(options, c.M * c.K * c.N)
            and not _on_pool(options, gemm, c))


def signature(node) -> str:
    """A product as ``runtime.calibration`` times it: its operands' shapes and the axes
    it contracts and batches (which decide the layouts, hence the copies, both ways)."""
    lhs, rhs = node.inputs
    return f"{lhs.shape}@{rhs.shape}{node.attrs['dims']}"


def timed(node, options) -> bool:
    """Whether tiles or BLAS for this product is decided by timing it
    (``product_timing``): BLAS found and not forced, a product the tiles vectorise, of
    at least ``BLAS_MIN_FLOPS`` multiply-adds a matrix (below, the tiles win on every
    machine measured: BLAS's per-call cost), and no streaming matrix-vector product."""
    c = canonical(node)
    la, lb = c.gemm_layouts
    a_strides = _strides(la, c.M, c.K)
    gemm = options.gemm(node.dtype)
    return (gemm is not None and options.blas_min_flops is None and _fits(gemm, c)
            and c.M * c.N * c.K >= BLAS_MIN_FLOPS and tiles.vectorised(c.M, c.N, a_strides)
            and matvec.plan(c, a_strides, _strides(lb, c.K, c.N)) is None)


def _use_blas(options, gemm, c: Canonical, vectorised: bool, node) -> bool:
    """BLAS from ``blas_min_flops`` multiply-adds on whatever the tiles could do, when
    the module was built with that option; else as this machine measured this product,
    or interpolates from its calibrated grid (``runtime.calibration``); else per the
    thresholds above."""
    if gemm is None or min(c.M, c.N, c.K) < 1 or not _fits(gemm, c):
        return False
    flops = c.M * c.N * c.K
    forced = options.blas_min_flops
    if forced is not None:
        return flops >= forced
    if not vectorised:
        return flops >= SCALAR_BLAS_MIN_FLOPS
    measured = calibration.prefers_blas(options.product_timings, node.dtype, options.threads,
                                        c.B * c.M, c.K, c.N, signature(node))
    if measured is not None:
        return measured
    if _blas_would_thread(options, flops):
        return False          # on llgrad's pool, never OpenBLAS's threads beside it
    return flops >= BLAS_MIN_FLOPS and not (flops >= LARGE_TILES_MIN_FLOPS
                                            and _re_reads_fit(options, c, ITEMSIZE[node.dtype]))


def _blas_would_thread(options, flops: int) -> bool:
    """Whether OpenBLAS would start its threads for a product of ``flops``
    multiply-adds in a module that splits work on llgrad's pool."""
    return options.threads > 1 and flops >= BLAS_THREADS_MIN_FLOPS


def _re_reads_fit(options, c: Canonical, itemsize: int) -> bool:
    """Whether what the tiles read more than once fits ``tile_panel_bytes`` (see
    ``LARGE_TILES_MIN_FLOPS``)."""
    room = options.tile_panel_bytes
    panel = c.K * tiles.MAX_VECTORS * options.vector_bits // 8
    return c.K * c.N * itemsize <= room or c.M * c.K * itemsize + panel <= room


def _way(options, node):
    """How a product runs: (the streaming matrix-vector plan, or None; whether BLAS
    runs it); neither: the tiles."""
    c = canonical(node)
    la, lb = c.gemm_layouts
    a_strides = _strides(la, c.M, c.K)
    streaming = matvec.plan(c, a_strides, _strides(lb, c.K, c.N))   # B read in place
    if streaming is not None and node.dtype not in ("float32", "float64"):
        streaming = None
    blas = streaming is None and _use_blas(options, options.gemm(node.dtype), c,
                                           tiles.vectorised(c.M, c.N, a_strides), node)
    return streaming, blas


def streamed(options, node) -> matvec.Plan | None:
    """The matrix-vector plan this product streams by (``matvec``), when it reads both
    operands in place (no copy into scratch), else None."""
    plan = _way(options, node)[0]
    return plan if plan is not None and None not in canonical(node).gemm_layouts else None


def reads_gathered(options, node) -> bool:
    """Whether this product's tiles can read its left operand, rows gathered from a
    stored matrix (``codegen.gathered``), through a table of the rows' offsets: one
    matrix, as tiles, vectors along C's rows, and A read in place (transposed or not)."""
    c = canonical(node)
    la = c.gemm_layouts[0]
    return (c.B == 1 and c.N > 1 and la is not None and not (la == "T" and c.copies[0])
            and _way(options, node) == (None, False))


def emit_dot_general(ctx, node, out):
    b, dtype = ctx.b, node.dtype
    lhs, rhs = node.inputs
    c = canonical(node)
    scratch = iter(ctx.scratch)
    need_l, need_r = c.copies
    l_scratch = next(scratch) if need_l else None
    r_scratch = next(scratch) if need_r else None
    la, lb = c.gemm_layouts
    a_strides = _strides(la, c.M, c.K)
    streaming, blas = _way(ctx.options, node)
    gemm = ctx.options.gemm(dtype)
    table = None
    if gathered.is_gathered(ctx, lhs):    # x[idx], its rows where x is (``reads_gathered``)
        table = gathered.offset_table(ctx, lhs)
    A = (ctx.pointer(lhs.inputs[0]) if table is not None
         else ctx.pointer(lhs) if la else _reordered(ctx, lhs, c.lhs_perm, l_scratch))
    if streaming is not None:
        Bm = ctx.pointer(rhs) if lb else _reordered(ctx, rhs, c.rhs_perm, r_scratch)
        matvec.emit(ctx, streaming, A, Bm, out, dtype, tuple(ctx.flags) or _CONTRACT)
        if ctx.epilogue is not None:
            ctx.epilogue.run_all(b)
        return
    if blas:
        Bm = ctx.pointer(rhs) if lb else _reordered(ctx, rhs, c.rhs_perm, r_scratch)
        layouts = (la or "N", lb or "N")
        if _on_pool(ctx.options, gemm, c):
            _emit_gemm_on_pool(b, ctx.options, c, A, Bm, out, dtype, gemm, layouts)
        else:
            if _blas_would_thread(ctx.options, c.M * c.K * c.N):   # OpenBLAS decides per call
                b.call(declare(b.module, REST_SYMBOL, ir.VoidType(), []), [])  # runtime.pool
            _emit_gemm(b, c, A, Bm, out, dtype, gemm, layouts)
        if ctx.epilogue is not None:
            ctx.epilogue.run_all(b)
        return
    if la and need_l:    # a transposed A the tiles read better copied (``copies``)
        A, a_strides = _reordered(ctx, lhs, c.lhs_perm, l_scratch), _strides(None, c.M, c.K)
    # a stored W (N x K) of A @ W.T is transposed by the bands of C that read it
    # (``_emit_tiles``); not a W whose two axes are both contracted (one column of K)
    banded = need_r and rhs.shape == (c.N, c.K) and _blockwise(ctx, rhs, c.rhs_perm)
    span = max(ctx.options.l1d_span, MIN_L1D_SPAN)
    pack_rows = None
    if banded:
        Bm = tiles.Matrix(r_scratch, _strides(None, c.K, c.N))
    elif _pads_by_copy(c, dtype, span, ctx.options.vector_bits):
        Bm = _padded_copy(b, ctx.pointer(rhs), next(scratch), c, dtype)
    else:
        pack_rows = _packing_rows(c, dtype, span)
        Bm = tiles.Matrix(_reordered(ctx, rhs, c.rhs_perm, r_scratch) if need_r
                          else ctx.pointer(rhs), _strides(None if need_r else lb, c.K, c.N))
    # a gathered A's table gives the offsets of its rows, or, transposed, of its k
    a = tiles.Matrix(A, a_strides, table, 0 if table is None else 1 if la == "N" else 2)
    _emit_tiles(b, ctx.options, c, a, Bm,
                tiles.Matrix(out, _strides("N", c.M, c.N)), dtype, tuple(ctx.flags) or _CONTRACT,
                carried=id(rhs) in ctx.state.carried,
                transposed_from=ctx.pointer(rhs) if banded else None, epilogue=ctx.epilogue,
                pack_rows=pack_rows)


#: products that take at least this many cycles at the FMA units' peak (the host's
#: FMA units x lanes multiply-adds a cycle: 2**19 float32 ones with AVX-512, 2**17
#: float64 ones with AVX2) are split into bands of C across the pool's threads
#: (``parallel.run_parts``): below it, handing out and joining a part (~1 us) costs
#: the pool much of what the split saves.  Re-measure: the tiles column of ``python
#: benchmarks/bench_matmul.py --dtype float32 64,128,64,NN`` (2**19) and of shapes
#: around it, under ``LLGRAD_THREADS=1`` and ``LLGRAD_THREADS=2``.
PARALLEL_MIN_CYCLES = 2 ** 14


def _split_min_flops(options, dtype) -> int:
    """Multiply-adds from which a product is split (``PARALLEL_MIN_CYCLES``)."""
    return PARALLEL_MIN_CYCLES * options.fma_units * _lanes(options, dtype)


def _emit_tiles(b, options, c, a, bm, out, dtype, flags, carried=False, transposed_from=None,
                epilogue=None, pack_rows=None):
    """The tiles, split into bands of C that the pool runs at once when the product
    is large and the module may use threads; each element of C is computed exactly
    as without the split.  Products are cut into row bands, as an elementwise kernel
    cuts the same matrix (a weight gradient and its update then stay on one core:
    moving them cost more than the split saved), with tiles of the shapes one
    thread uses (so they compile faster than column bands' tiles, and run as fast);
    products of fewer than 8 rows per part, and those whose B each row band would
    stream from beyond L2 (``_columns_fit_better``), into column bands of whole
    vectors.  All bands but the last have one size, so one product's code
    serves them.  A weight that a loop writes anew every step (``carried``) has its
    rows spread over the cores by that split; a product with few rows and long sums
    then reads it by ranges of k instead (``_emit_k_stages``).  That pays in a training
    loop, not in a single gradient, whose weight stays in both cores' caches
    (re-measure at two threads: the first product's line in ``python -m llgrad bench
    --threads 2 --workloads mlp_step,training --systems "llgrad native" --profile``).

    ``transposed_from``: B is the transpose of this stored matrix (``A @ W.T``), to be
    copied into ``bm`` first.  Split, each column band copies its own columns, so the
    copy runs on every core and no core reads what another wrote (re-measure: the tiles
    column of ``LLGRAD_THREADS=2 python benchmarks/bench_matmul.py --dtype float32
    64,128,784,NT``).

    ``epilogue`` (``codegen.epilogue``): run on each band of a tile's rows as soon as
    the tiles have written it; after the whole product where bands of rows are not
    what the product is cut into (a pipeline over k, column bands), or where the
    epilogue alone would be split across threads but the product is not.

    ``pack_rows``: B is read through packed panels by each pass of tiles over at least
    that many rows of A (the whole product's, or a band's; None: never)."""
    bits = tiles.VectorUnit(options.vector_bits, options.vector_registers)
    parts = options.threads
    lanes = _lanes(options, dtype)

    def copy_columns(pb, src, dst, first, count):
        """Columns [first, first + count) of B, from rows of the stored matrix."""
        transpose.emit_transpose(
            pb, pb.gep(src, [pb.mul(first, i64(c.K))], source_etype=MEMORY[dtype]),
            pb.gep(dst, [first], source_etype=MEMORY[dtype]), 1, count, c.K, dtype, lanes,
            dst_stride=c.N)

    alone = parts < 2 or c.B * c.M * c.K * c.N < _split_min_flops(options, dtype)
    staged = not alone and (carried and c.B == 1 and c.M < c.K and c.K >= 2 * parts
                            and c.M * c.N * ITEMSIZE[dtype] <= PIPELINE_MAX_BYTES)
    by_rows = (c.M >= 8 * parts and transposed_from is None
               and not _columns_fit_better(options, c, dtype, parts, lanes))
    extent, unit = (c.M, 1) if by_rows else (c.N, lanes)
    bands = 1
    if not (alone or staged):
        band = -(-extent // (parts * unit)) * unit
        bands = -(-extent // band)
    rows_read = band if bands > 1 and by_rows else c.M
    pack = pack_rows is not None and rows_read >= pack_rows
    # packed panels are read once each, so their tiles cannot go band by band
    by_bands = epilogue is not None and not staged and not pack and (by_rows or bands < 2) and (
        bands > 1 or parallel.split_unit(parts, c.M * c.N, c.M, epilogue.flat) is None)
    if bands < 2:
        if transposed_from is not None:
            copy_columns(b, transposed_from, bm.ptr, i64(0), c.N)
        if staged:
            _emit_k_stages(b, c, a, bm, out, dtype, flags, bits, parts)
        else:
            tiles.emit_product(b, (c.B, c.M, c.K, c.N), a, bm, out, dtype, flags, bits,
                               after_rows=(lambda pb, first, count: epilogue.run(
                                   pb, epilogue.pointers, first, count)) if by_bands else None,
                               pack=pack)
        if epilogue is not None and not by_bands:
            epilogue.run_all(b)
        return
    parts = bands
    last = extent - (parts - 1) * band

    copied = [] if transposed_from is None else [transposed_from]

    def emit_part(pb, pointers, part):
        pa, pointers = a.received(pointers)
        pbm, pointers = bm.received(pointers)
        pc, pointers = out.received(pointers)
        source, after = pointers[:len(copied)], pointers[len(copied):]
        first = pb.mul(part, i64(band))

        def after_rows(rb, row, count):   # rows of the band, counted from its first
            epilogue.run(rb, after, rb.add(first, row), count)

        def product(size):
            if transposed_from is not None:
                copy_columns(pb, source[0], pbm.ptr, first, size)
            if by_rows:
                tiles.emit_product(pb, (c.B, size, c.K, c.N), pa.rows_from(pb, first, dtype),
                                   pbm, pc.rows_from(pb, first, dtype), dtype, flags, bits,
                                   after_rows=after_rows if by_bands else None, pack=pack)
            else:
                tiles.emit_product(pb, (c.B, c.M, c.K, size), pa, pbm.cols_from(pb, first, dtype),
                                   pc.cols_from(pb, first, dtype), dtype, flags, bits,
                                   pack=pack)
        if last == band:
            product(band)
            return
        with pb.if_else(pb.icmp_unsigned("<", part, i64(parts - 1))) as (inner, final):
            with inner:
                product(band)
            with final:
                product(last)

    pointers = a.pointers + bm.pointers + out.pointers + copied
    pointers += list(epilogue.pointers) if by_bands else []
    parallel.run_parts(b, f"{b.function.name}.bands", parts, pointers, emit_part)
    if epilogue is not None and not by_bands:
        epilogue.run_all(b)


def _columns_fit_better(options, c: Canonical, dtype: str, parts: int, lanes: int) -> bool:
    """Whether column bands beat row bands for a split product: every row band reads
    all of B, column bands B's share and all of A.  Where B is larger than the tiles
    may keep re-reading (half of L2, ``CodegenOptions.tile_panel_bytes``) and A is smaller
    than B, a row band streams B from L3 once for every pass of its tiles, a column
    band keeps its share in L2.  Two threads, AVX-512, float32 (tiles column of
    ``LLGRAD_THREADS=2 python benchmarks/bench_matmul.py --dtype float32
    64,784,1024,NN 64,784,512,NN 128,784,1024,NN``, 2026-12-07): 372, 156 and 597 us
    in row bands, 301, 134 and 520 us in column bands."""
    b_bytes = c.K * c.N * ITEMSIZE[dtype]
    return (c.B == 1 and c.N > c.M and c.N >= parts * lanes
            and b_bytes > options.tile_panel_bytes > 0)


#: products with few rows and long sums whose result is at most this large run as a
#: pipeline over ranges of k (``_emit_k_stages``); its partial sums live on the stack
PIPELINE_MAX_BYTES = 64 << 10


def _emit_k_stages(b, c, a, bm, out, dtype, flags, bits, parts):
    """C = A B with the sum over k cut into consecutive ranges, one per part: part p
    goes on, tile by tile, from the sums part p - 1 has left for that tile, so every
    element is still one chain of multiply-adds in k order, as on one thread.  A
    part reads only its own rows of B: the first layer's product of a training step
    reads the rows of the weight that the same core's part of the weight gradient
    and update wrote (reading a whole weight on both cores cost more than the
    split saved).  A part starts one tile after the part before; the pool's order of
    parts (``runtime.pool``) guarantees the one waited for runs."""
    band = -(-c.K // parts)
    parts = -(-c.K // band)
    with b.goto_entry_block():
        progress = b.alloca(I64, size=i64(parts))
        partials = b.alloca(MEMORY[dtype], size=i64(max(1, (parts - 1) * c.M * c.N)))
        partials.align = 64
    for p in range(parts):
        b.store(i64(0), b.gep(progress, [i64(p)], inbounds=True, source_etype=I64))

    def emit_part(pb, pointers, part):
        pa, pointers = a.received(pointers)
        pbm, pointers = bm.received(pointers)
        pc, (pprogress, ppartials) = out.received(pointers)
        k0 = pb.mul(part, i64(band))
        length = pb.select(pb.icmp_unsigned("<", part, i64(parts - 1)), i64(band),
                           i64(c.K - (parts - 1) * band))
        counter = lambda p: pb.gep(pprogress, [p], inbounds=True, source_etype=I64)  # noqa
        buffer = lambda p: pb.gep(ppartials, [pb.mul(p, i64(c.M * c.N))], inbounds=True,  # noqa
                                  source_etype=MEMORY[dtype])
        last = pb.icmp_unsigned("==", part, i64(parts - 1))
        dest = tiles.Matrix(pb.select(last, pc.ptr, buffer(part)), out.strides)
        earlier = pb.sub(part, i64(1))

        def product(first):
            stage = tiles.Stage(
                None if first else tiles.Matrix(buffer(earlier), out.strides),
                (lambda sb, t: None) if first else
                (lambda sb, t: atomics.wait_beyond(sb, counter(earlier), t)),
                lambda sb, t: atomics.publish(sb, counter(part), sb.add(t, i64(1))))
            tiles.emit_product(pb, (1, c.M, length, c.N), pa.cols_from(pb, k0, dtype),
                               pbm.rows_from(pb, k0, dtype), dest, dtype, flags, bits, stage)

        with pb.if_else(pb.icmp_unsigned("==", part, i64(0))) as (first, later):
            with first:
                product(True)
            with later:
                product(False)

    parallel.run_parts(b, f"{b.function.name}.k_stages", parts,
                       a.pointers + bm.pointers + out.pointers + [progress, partials], emit_part)
