"""Matrix-vector products at the memory's speed: ``X @ w`` and ``X.T @ r`` streaming X once.

A product whose result is a vector reads every element of the matrix once and does
one multiply-add with it, so it is bound by memory bandwidth, not by the FMA units.
The register tiles (``tiles``) suit products that re-read their operands: for a
vector result they walk the matrix a panel of columns at a time (``X.T @ r``: one pass
over all rows per 3 vectors of columns) or with scalars (``X @ w``: BLAS's gemv, or
scalar tiles).  Here both directions read X row after row, once:

- **rows** (``X @ w``, X's rows contiguous): a few rows at a time, each with a vector
  of partial sums along its row (lane l sums the k = l mod lanes, in k order), added
  across lanes by halves, then the last ``K mod lanes`` terms in k order: a fixed
  order, as a row reduction's (``kernels``), whatever the threads.  The pool's
  threads take bands of rows.
- **axpy** (``X.T @ r``, and any product with one row whose right operand has
  contiguous rows): ``y += r[k] * X[k, :]`` for k in order, a few rows at a time, ``y``
  staying in L1 while X streams past.  The rows are cut into chunks whose number
  depends on the shape only (``chunks``); each chunk sums its rows in k order from
  zero, and the chunks' sums are added in chunk order.  The pool's threads take
  ranges of chunks (or, for one chunk, bands of columns), so the result is bit for bit
  the same on any number of threads.
- **stream** (``X @ w``, elementwise kernels of its result ending in ``r``, ``X.T @ r``:
  a linear model's gradient, ``fusion`` finds them): the axpy's chunks, each a block of
  rows at a time: ``z`` of the block's rows, each kernel on them, then the block's terms
  of the axpy, while the block is still in L2.  X comes from memory once, not twice, and
  every element of z, r and the result is computed as by the kernels in turn.

Re-measure: ``python benchmarks/bench_matvec.py`` (logistic-regression gradient, both
directions, GB/s against ``bench_peak``'s read bandwidth).
"""
from __future__ import annotations

from dataclasses import dataclass

from llvmlite import ir

from llgrad.compiler.codegen import parallel
from llgrad.llvm.loops import carried_loop, counted_loop
from llgrad.llvm.scalar import I64, ITEMSIZE, MEMORY, PTR, REGISTER, const, i64

#: products whose matrix has at least this many elements stream here; smaller ones stay
#: in L1, where the tiles' and BLAS's way costs no more.  Re-measure: a small shape in
#: ``python benchmarks/bench_matvec.py --sizes 64x64,200x20``.
MIN_ELEMENTS = 1 << 12
#: rows each step of the kernels reads at once: independent FMA chains (rows) or one
#: load and store of ``y`` per this many rows (axpy)
ROWS = 4
#: an axpy chunk's rows; the chunk count depends on the shape only (never the threads)
CHUNK_ROWS = 1024
#: the chunks' partial sums (on the stack) are kept under this many bytes
MAX_PARTIAL_BYTES = 256 << 10
#: matrices of at least this many elements are split across the pool's threads
PARALLEL_MIN_ELEMENTS = 1 << 16


@dataclass(frozen=True)
class Plan:
    """``rows``: out[i] = sum_k mat[i*stride + k] * vec[k] for i < count, k < length.
    ``axpy``: out[j] = sum_k vec[k*vec_stride] * mat[k*stride + j], k < length, j < count.
    ``mat_is_lhs``: whether the matrix is the product's left operand (else its right)."""
    kind: str
    mat_is_lhs: bool
    stride: int
    count: int
    length: int
    vec_stride: int


def plan(c, a_strides, b_strides) -> Plan | None:
    """How the canonical product ``c`` (A with ``a_strides``, B with ``b_strides``)
    streams, or None when it is not a large matrix-vector product of one batch."""
    if c.B != 1 or min(c.M, c.K, c.N) < 1 or not (c.M == 1 or c.N == 1):
        return None
    if c.N == 1:            # A (M x K) times the column B (K x 1)
        chosen = (Plan("rows", True, a_strides[1], c.M, c.K, b_strides[1])
                  if a_strides[2] == 1 or c.K == 1 else
                  Plan("axpy", True, a_strides[2], c.M, c.K, b_strides[1])
                  if a_strides[1] == 1 else None)
    else:                   # the row A (1 x K) times B (K x N)
        chosen = (Plan("axpy", False, b_strides[1], c.N, c.K, a_strides[2])
                  if b_strides[2] == 1 else
                  Plan("rows", False, b_strides[2], c.N, c.K, a_strides[2])
                  if b_strides[1] == 1 else None)
    if chosen is None or chosen.count * chosen.length < MIN_ELEMENTS:
        return None
    if chosen.kind == "rows" and chosen.vec_stride != 1 and chosen.length > 1:
        return None         # the rows kernel loads the vector as vectors
    return chosen


def chunk_rows(p: Plan, dtype: str) -> int:
    """The rows of each of an axpy's chunks but the last: from the shape alone, whole
    runs of ``parallel.LINE_ELEMENTS`` (where a stream's blocks start, ``_block_rows``)."""
    wanted = -(-p.length // CHUNK_ROWS)
    room = MAX_PARTIAL_BYTES // (p.count * ITEMSIZE[dtype]) + 1
    rows = -(-p.length // max(1, min(wanted, room)))
    return -(-rows // parallel.LINE_ELEMENTS) * parallel.LINE_ELEMENTS


def chunks(p: Plan, dtype: str) -> int:
    """How many chunks an axpy's rows are cut into (``chunk_rows``)."""
    return -(-p.length // chunk_rows(p, dtype))


@dataclass(frozen=True)
class Stream:
    """What a streamed ``X @ w`` (``ctx.stream``) computes besides itself: the
    elementwise kernels over its result, in order, each ``(fn, pointers)`` with ``void
    fn(pointers..., i64 lo, i64 hi)``, then the axpy ``plan`` over the same X, reading
    ``vector`` (one of those kernels' results) into ``out``; pointers as the product's
    function sees them."""
    elementwise: tuple
    plan: Plan
    vector: ir.Value
    out: ir.Value


def emit(ctx, p: Plan, A, Bm, out, dtype: str, flags) -> None:
    """The product ``p`` from the operands' pointers into ``out`` (and, for a product
    with a ``ctx.stream``, what streams with it)."""
    mat, vec = (A, Bm) if p.mat_is_lhs else (Bm, A)
    lanes = ctx.options.vector_bits // (8 * ITEMSIZE[dtype])
    threads = ctx.options.threads if p.count * p.length >= PARALLEL_MIN_ELEMENTS else 1
    if ctx.stream is not None:
        _emit_stream(ctx.b, p, mat, vec, out, dtype, flags, lanes, threads, ctx.stream,
                     _block_rows(ctx.options, p, dtype))
        return
    emit_kind = _emit_rows if p.kind == "rows" else _emit_axpy
    emit_kind(ctx.b, p, mat, vec, out, dtype, flags, lanes, threads)


# -- rows: X @ w ---------------------------------------------------------------------------

def _emit_rows(b, p, mat, vec, out, dtype, flags, lanes, threads):
    """Rows in bands across ``threads`` when each gets at least 8 groups of rows."""
    fn = _rows_function(b.module, dtype, lanes, flags)
    args = lambda m, v, o, lo, hi: [m, v, o, lo, hi, i64(p.length), i64(p.stride)]  # noqa
    parts = min(threads, p.count // (8 * ROWS))
    if parts < 2:
        b.call(fn, args(mat, vec, out, i64(0), i64(p.count)))
        return

    def emit_part(pb, pointers, part):
        lo, hi = parallel.piece(pb, p.count, parts, part, unit=8)
        pb.call(fn, args(*pointers, lo, hi))
    parallel.run_parts(b, f"{b.function.name}.matvec_rows", parts, [mat, vec, out], emit_part)


def _rows_function(module, dtype, lanes, flags) -> ir.Function:
    """``void f(X, w, y, lo, hi, K, lda)``: y[i] = X[i, :K] . w for i in [lo, hi)."""
    name = f"llgrad.matvec.rows.{dtype}.{lanes}.{'.'.join(flags)}"
    if name in module.globals:
        return module.globals[name]
    fn = _function(module, name, [PTR] * 3 + [I64] * 4)
    X, w, y, lo, hi, K, lda = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    vectors = b.udiv(K, i64(lanes))
    tail_start = b.mul(vectors, i64(lanes))
    tail = b.sub(K, tail_start)

    def group(first, rows):
        """Rows [first, first + rows): vector partial sums, halves, then the tail."""
        bases = [b.mul(b.add(first, i64(r)), lda) for r in range(rows)]
        zero = ir.Constant(ir.VectorType(REGISTER[dtype], lanes), [const(dtype, 0)] * lanes)
        with carried_loop(b, vectors, [zero] * rows, "kv") as (kv, accs):
            k = b.mul(kv, i64(lanes))
            wv = _load(b, w, k, dtype, lanes)
            for r, base in enumerate(bases):
                x = _load(b, X, b.add(base, k), dtype, lanes)
                accs[r] = b.fadd(accs[r], b.fmul(x, wv, flags=flags), flags=flags)
        sums = [_across_lanes(b, acc, lanes, flags) for acc in accs]
        with carried_loop(b, tail, sums, "kt") as (kt, sums_):
            k = b.add(tail_start, kt)
            wk = _load(b, w, k, dtype, 1)
            for r, base in enumerate(bases):
                x = _load(b, X, b.add(base, k), dtype, 1)
                sums_[r] = b.fadd(sums_[r], b.fmul(x, wk, flags=flags), flags=flags)
        for r, s in enumerate(sums_):
            b.store(s, _at(b, y, b.add(first, i64(r)), dtype))

    _grouped(b, lo, hi, group)
    b.ret_void()
    return fn


def _across_lanes(b, acc, lanes, flags):
    """The lanes' sum, by halves (a fixed order)."""
    while lanes > 1:
        half = lanes // 2
        pick = lambda start: b.shuffle_vector(  # noqa: E731
            acc, acc, ir.Constant(ir.VectorType(ir.IntType(32), half),
                                  list(range(start, start + half))))
        acc, lanes = b.fadd(pick(0), pick(half), flags=flags), half
    return b.extract_element(acc, ir.Constant(ir.IntType(32), 0))


# -- axpy: X.T @ r -------------------------------------------------------------------------

def _emit_axpy(b, p, mat, vec, out, dtype, flags, lanes, threads):
    """The chunks (``chunks``) on ``threads``, then their sums in chunk order."""
    fn = _axpy_function(b.module, dtype, lanes, flags)
    if chunks(p, dtype) == 1 and threads > 1 and p.count >= 2 * threads * lanes:
        _emit_axpy_columns(b, p, fn, mat, vec, out, dtype, lanes, threads)
        return

    def run(bb, pointers, target, k0, k1):
        m, v = pointers
        bb.call(fn, [v, i64(p.vec_stride), m, i64(p.stride), target, k0, k1, i64(p.count)])
    _chunked(b, p, dtype, flags, threads, out, [mat, vec], run)


def _emit_stream(b, p, mat, vec, out, dtype, flags, lanes, threads, stream, block):
    """``out`` = X @ w, the stream's elementwise kernels over it in order, and its axpy,
    a block of ``block`` rows of each of the axpy's chunks after another (``Stream``)."""
    rows_fn = _rows_function(b.module, dtype, lanes, flags)
    axpy = stream.plan
    axpy_fn = _axpy_function(b.module, dtype, lanes, flags)

    counts = [len(pointers) for _, pointers in stream.elementwise]

    def run(bb, pointers, target, k0, k1):
        m, v, z, r, *after = pointers
        steps = bb.udiv(bb.add(bb.sub(k1, k0), i64(block - 1)), i64(block))
        with counted_loop(bb, steps, "block") as s:
            lo = bb.add(k0, bb.mul(s, i64(block)))
            hi = bb.select(bb.icmp_unsigned("<", bb.add(lo, i64(block)), k1),
                           bb.add(lo, i64(block)), k1)
            bb.call(rows_fn, [m, v, z, lo, hi, i64(p.length), i64(p.stride)])
            start = 0
            for (fn, _), count in zip(stream.elementwise, counts):
                bb.call(fn, [*after[start:start + count], lo, hi])
                start += count
            bb.call(axpy_fn, [r, i64(1), m, i64(axpy.stride), target, lo, hi, i64(axpy.count)])
    _chunked(b, axpy, dtype, flags, threads, stream.out,
             [mat, vec, out, stream.vector, *(p for _, ps in stream.elementwise for p in ps)],
             run)


def _chunked(b, p, dtype, flags, threads, out, pointers, run):
    """The axpy ``p`` into ``out`` by chunks (``chunks``), ranges of them on ``threads``:
    ``run(builder, pointers, target, k0, k1)`` adds the terms of rows [k0, k1) to
    ``target`` (zeroed first): ``out`` for chunk 0, a partial sum of its own for the
    others, which are then added to ``out`` in chunk order.  ``pointers`` are what
    ``run`` reads, as the function it is emitted in sees them."""
    n_chunks, chunk = chunks(p, dtype), chunk_rows(p, dtype)
    with b.goto_entry_block():
        partials = b.alloca(MEMORY[dtype], size=i64(max(1, (n_chunks - 1) * p.count)))
        partials.align = 64

    def run_chunk(bb, o, parts_ptr, inner, c):
        target = bb.select(bb.icmp_unsigned("==", c, i64(0)), o, _at(
            bb, parts_ptr, bb.mul(bb.sub(c, i64(1)), i64(p.count)), dtype))
        k0 = bb.mul(c, i64(chunk))
        k1 = bb.select(bb.icmp_unsigned("<", bb.add(k0, i64(chunk)), i64(p.length)),
                       bb.add(k0, i64(chunk)), i64(p.length))
        _zero(bb, target, p.count, dtype)
        run(bb, inner, target, k0, k1)

    parts = min(threads, n_chunks)
    if parts < 2:
        with counted_loop(b, n_chunks, "chunk") as c:
            run_chunk(b, out, partials, pointers, c)
    else:
        def emit_part(pb, inner, part):
            lo, hi = parallel.piece(pb, n_chunks, parts, part, unit=1)
            with counted_loop(pb, pb.sub(hi, lo), "chunk") as c:
                run_chunk(pb, inner[0], inner[1], inner[2:], pb.add(lo, c))
        parallel.run_parts(b, f"{b.function.name}.matvec_chunks", parts,
                           [out, partials, *pointers], emit_part)
    if n_chunks > 1:                # the chunks' sums, in chunk order
        with counted_loop(b, n_chunks - 1, "sum") as c:
            base = b.mul(c, i64(p.count))
            with counted_loop(b, p.count, "j") as j:
                total = b.fadd(_load(b, out, j, dtype, 1),
                               _load(b, partials, b.add(base, j), dtype, 1), flags=flags)
                b.store(total, _at(b, out, j, dtype))


#: the rows of X a stream takes at a time: a block of this share of
#: ``CodegenOptions.tile_panel_bytes`` (half of L2) stays in L2 between its two reads.
#: Shares from 1 to 32 ran within 3% of each other (50000x200 float64, one and two
#: threads, 2026-12-08).  Re-measure: the streamed line of ``python
#: benchmarks/bench_matvec.py --stream`` with this changed
STREAM_BLOCK_SHARE = 4


def _block_rows(options, p: Plan, dtype: str) -> int:
    """Rows of X per block of a stream (``STREAM_BLOCK_SHARE``): whole runs of
    ``parallel.LINE_ELEMENTS``, as a split elementwise kernel's pieces are, so that
    each element of the elementwise kernel is computed by the same vector or scalar
    code as in one call over all of them (libmvec's vector functions and libm's
    scalar ones may differ in the last bit)."""
    room = (options.tile_panel_bytes or 1 << 20) // STREAM_BLOCK_SHARE
    unit = parallel.LINE_ELEMENTS
    return max(unit, room // (p.length * ITEMSIZE[dtype]) // unit * unit)


def _emit_axpy_columns(b, p, fn, mat, vec, out, dtype, lanes, threads):
    """An axpy of one chunk on several threads: each takes a band of whole vectors of
    columns over every row, so no sum is split."""
    def emit_part(pb, pointers, part):
        m, v, o = pointers
        lo, hi = parallel.piece(pb, p.count, threads, part, unit=lanes)
        _zero(pb, _at(pb, o, lo, dtype), pb.sub(hi, lo), dtype)
        pb.call(fn, [v, i64(p.vec_stride), _at(pb, m, lo, dtype), i64(p.stride),
                     _at(pb, o, lo, dtype), i64(0), i64(p.length), pb.sub(hi, lo)])
    parallel.run_parts(b, f"{b.function.name}.matvec_columns", threads, [mat, vec, out],
                       emit_part)


def _axpy_function(module, dtype, lanes, flags) -> ir.Function:
    """``void f(r, r_stride, X, ldx, y, k0, k1, N)``: y[j] += r[k] X[k, j] for k in
    [k0, k1) in order, for j < N."""
    name = f"llgrad.matvec.axpy.{dtype}.{lanes}.{'.'.join(flags)}"
    if name in module.globals:
        return module.globals[name]
    fn = _function(module, name, [PTR, I64, PTR, I64, PTR, I64, I64, I64])
    r, r_stride, X, ldx, y, k0, k1, N = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    vectors = b.udiv(N, i64(lanes))
    tail_start = b.mul(vectors, i64(lanes))

    def group(first, rows):
        """Rows [first, first + rows) into y, each element's terms in k order."""
        ks = [b.add(first, i64(q)) for q in range(rows)]
        coefs = [_load(b, r, b.mul(k, r_stride), dtype, 1) for k in ks]
        bases = [b.mul(k, ldx) for k in ks]
        splats = [_splat(b, x, lanes) for x in coefs]

        def update(j, width, scale):
            at = _at(b, y, j, dtype)
            acc = b.load(at, typ=_type(dtype, width), align=ITEMSIZE[dtype])
            for base, s in zip(bases, scale):
                x = _load(b, X, b.add(base, j), dtype, width)
                acc = b.fadd(acc, b.fmul(s, x, flags=flags), flags=flags)
            b.store(acc, at, align=ITEMSIZE[dtype])

        with counted_loop(b, vectors, "jv") as jv:
            update(b.mul(jv, i64(lanes)), lanes, splats)
        with counted_loop(b, b.sub(N, tail_start), "jt") as jt:
            update(b.add(tail_start, jt), 1, coefs)

    _grouped(b, k0, k1, group)
    b.ret_void()
    return fn


# -- shared pieces -------------------------------------------------------------------------

def _grouped(b, lo, hi, group):
    """``group(first, ROWS)`` over [lo, hi) by ROWS, then ``group(first, 1)`` for the rest."""
    full = b.udiv(b.sub(hi, lo), i64(ROWS))
    with counted_loop(b, full, "rows") as g:
        group(b.add(lo, b.mul(g, i64(ROWS))), ROWS)
    rest = b.add(lo, b.mul(full, i64(ROWS)))
    with counted_loop(b, b.sub(hi, rest), "row") as q:
        group(b.add(rest, q), 1)


def _zero(b, y, count, dtype):
    """y[j] = 0 for j < ``count`` (an int or ``i64`` value)."""
    with counted_loop(b, count, "zero") as j:
        b.store(const(dtype, 0), _at(b, y, j, dtype))


def _function(module, name, args) -> ir.Function:
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), args), name)
    fn.linkage = "internal"
    fn.attributes.add("noinline")
    return fn


def _type(dtype, width):
    return REGISTER[dtype] if width == 1 else ir.VectorType(REGISTER[dtype], width)


def _at(b, ptr, offset, dtype):
    return b.gep(ptr, [offset], inbounds=True, source_etype=MEMORY[dtype])


def _load(b, ptr, offset, dtype, width):
    return b.load(_at(b, ptr, offset, dtype), typ=_type(dtype, width), align=ITEMSIZE[dtype])


def _splat(b, x, width):
    v = b.insert_element(ir.Constant(ir.VectorType(x.type, width), ir.Undefined), x,
                         ir.Constant(ir.IntType(32), 0))
    return b.shuffle_vector(v, v, ir.Constant(ir.VectorType(ir.IntType(32), width),
                                              [0] * width))
