"""Matrix products as register tiles: C = A B, every output element summed over k in order.

A tile is ``rows`` rows by a few vectors of C held in registers while k runs: each
step loads a row segment of B as vectors, broadcasts one element of A per tile row
and multiply-adds (FMA where contraction is allowed).  The tile is written out in
the IR (the pipeline unrolls nothing) and sized so that accumulators, B's vectors
and the broadcasts fit the vector registers.  A is read an element at a time, so in
place whatever its strides (a transposed A is even contiguous across a tile's rows);
B and C must be contiguous along the vector axis.  Many independent accumulators
keep both FMA units busy although each element's sum is a serial chain: that chain,
in k order, is what keeps results reproducible, as in a plain i-k-j loop nest.  One
tile function per tile shape serves every product of the module (strides and sizes
are its arguments): tiles are long straight-line code, and LLVM's compile time grows
with every instruction.

Why tiles for small products: OpenBLAS adds a call, locks and copies to its
small-matrix kernels on every product, while the tiles keep both FMA units busy, so
the tiles win at sizes such as a 2-16-16-1 MLP's 100x16 @ 16x16 (re-measure:
``OPENBLAS_NUM_THREADS=1 python benchmarks/bench_matmul.py``, whose default shapes are
that MLP's products).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from llvmlite import ir

from llgrad.llvm.loops import carried_loop, counted_loop
from llgrad.llvm.scalar import I64, ITEMSIZE, MEMORY, PTR, REGISTER, const, copy_bytes, i64

#: cap on a tile's rows: 12 single-vector rows already cover FMA latency x 2 ports
MAX_ROWS = 12
#: cap on a tile's vectors per row (wider C rows become several tiles)
MAX_VECTORS = 3


@dataclass(frozen=True)
class Matrix:
    """A batch of matrices in memory: base pointer and element strides
    (batch, row, column); a stride of an axis of size 1 is never used.

    A gathered matrix (``x[idx]`` read where ``x`` is stored, ``codegen.gathered``) has
    a ``table``: an i64 array whose entry i is the element offset from ``ptr`` of its
    row i (``table_axis`` 1) or column i (2), in place of i times that axis's stride;
    one batch only."""
    ptr: ir.Value
    strides: tuple
    table: ir.Value | None = None
    table_axis: int = 0

    def transposed(self) -> "Matrix":
        s = self.strides
        return Matrix(self.ptr, (s[0], s[2], s[1]), self.table, (0, 2, 1)[self.table_axis])

    @property
    def pointers(self) -> list:
        """What a function this matrix is handed to needs: its base, then its table."""
        return [self.ptr] + ([] if self.table is None else [self.table])

    def received(self, pointers) -> tuple["Matrix", list]:
        """This matrix in a function handed ``pointers``, which begin with its
        ``pointers`` (as that function sees them), and the pointers after those."""
        own = len(self.pointers)
        table = pointers[1] if self.table is not None else None
        return Matrix(pointers[0], self.strides, table, self.table_axis), list(pointers[own:])

    def rows_from(self, b, first, dtype) -> "Matrix":
        """The same matrix from row ``first`` (an ``i64`` value) of every batch."""
        return self._from(b, first, 1, dtype)

    def cols_from(self, b, first, dtype) -> "Matrix":
        """The same matrix from column ``first`` of every row."""
        return self._from(b, first, 2, dtype)

    def _from(self, b, first, axis, dtype) -> "Matrix":
        if self.table is not None and axis == self.table_axis:
            return Matrix(self.ptr, self.strides, b.gep(self.table, [first], inbounds=True,
                                                        source_etype=I64), axis)
        return Matrix(_element(b, self.ptr, b.mul(first, i64(self.strides[axis])), dtype),
                      self.strides, self.table, self.table_axis)


def contiguous_rows(strides, cols) -> bool:
    """Whether a matrix of ``cols`` columns can be read as row vectors."""
    return cols == 1 or strides[2] == 1


def vectorised(M, N, a_strides) -> bool:
    """Whether the product runs on vectors: along C's rows, or along its single
    column when A's columns are contiguous (otherwise it is scalar)."""
    return N > 1 or (M > 1 and a_strides[1] == 1)


@dataclass(frozen=True)
class VectorUnit:
    """The vector registers tiles are sized for (``runtime.host``): their width in
    bits and their count (16 on AVX2, 32 on AVX-512)."""
    bits: int
    registers: int


@dataclass(frozen=True)
class Stage:
    """A product computed over one range of k, in a pipeline of such stages: every
    tile waits (``wait(b, t)``, t counting the tiles in order) until the stage
    before has written that tile's sums into ``partials`` (None for the first
    stage), goes on from them, and announces it is done (``done(b, t)``)."""
    partials: Matrix | None
    wait: Callable
    done: Callable


def emit_product(b: ir.IRBuilder, shape, a: Matrix, bm: Matrix, c: Matrix, dtype: str,
                 flags, unit: VectorUnit, stage: Stage | None = None,
                 after_rows: Callable | None = None, pack: bool = False) -> None:
    """C[i] = A[i] @ B[i] for each batch ``i``; ``shape`` is (batch, M, K, N) (K may
    be an ``i64`` value); ``unit``: the registers the tiles are sized for.

    B and C must have contiguous rows (``contiguous_rows``).  When N is 1 and A's
    columns are contiguous, the transposed product (C^T = B^T A^T) runs instead, so
    that a matrix-vector product is vectorised along M (not with a ``stage``).
    ``after_rows(b, first, count)`` (one batch, no ``stage``) emits what runs on rows
    ``[first, first + count)`` of C (``i64`` values) once they are written: the tiles
    then compute one band of rows across all of C's columns, then the next.
    ``pack``: each column panel of B is first copied into a buffer, its rows one after
    another (``packs``), and every tile of the panel reads it there (not with
    ``after_rows`` or a ``stage``, whose tiles visit a panel once per band of rows).
    """
    nb, M, K, N = shape
    assert a.table is None or (nb == 1 and N > 1), "a gathered A: one batch, C's rows vectors"
    if N == 1 and vectorised(M, N, a.strides) and stage is None:
        if after_rows is not None:      # the transposed product has no bands of C's rows
            emit_product(b, shape, a, bm, c, dtype, flags, unit)
            after_rows(b, i64(0), i64(M))
            return
        a, bm, c = bm.transposed(), a.transposed(), c.transposed()
        M, N = N, M
    if M == 0 or N == 0:
        return
    vector_bits, registers = unit.bits, unit.registers
    lanes = vector_bits // (8 * ITEMSIZE[dtype])
    col_blocks = _column_blocks(N, lanes)
    # accumulators and B's vectors must fit the registers, or LLVM spills inside the
    # k loop; so must one broadcast, except with AVX-512, whose FMAs read a broadcast
    # element straight from memory (embedded broadcast).  One is enough: a row's FMAs
    # follow its broadcast, so none outlives its row (AVX2 float32, 64x784x512: 4 rows
    # of 3 vectors in 1.04 ms against 1.21 for 3 rows, which kept a register a row;
    # no spill in either: ``t.asm``; re-measure: ``LLGRAD_CPU=haswell LLGRAD_THREADS=1
    # python benchmarks/bench_matmul.py --dtype float32 64,784,512,NN``)
    vectors = len(col_blocks[0][1])
    broadcast = int(vector_bits < 512)
    most = min(MAX_ROWS, (registers - vectors - broadcast) // vectors)
    rows = _tile_rows(M, most, {r for r in range(1, most + 1) if _tile_name(
        dtype, r, col_blocks[0][1], flags, False) in b.module.globals})
    strides = [x if isinstance(x, ir.Value) else i64(x)
               for x in (K, a.strides[1], a.strides[2], bm.strides[1], c.strides[1])]

    def at(m: Matrix, batch, row, col):
        row = i64(row) if isinstance(row, int) else row
        offset = b.add(b.mul(batch, i64(m.strides[0])),
                       b.add(b.mul(row, i64(m.strides[1])), b.mul(col, i64(m.strides[2]))))
        return _element(b, m.ptr, offset, dtype)

    def a_from(batch, row):
        """A's arguments to a tile function from ``row``: its address there, or, for a
        gathered A, its base and its table from the entry of that row (or of k = 0)."""
        if a.table is None:
            return [at(a, batch, row, i64(0))], []
        row = i64(row) if isinstance(row, int) else row
        if a.table_axis == 1:
            return [a.ptr], [b.gep(a.table, [row], inbounds=True, source_etype=I64)]
        return [_element(b, a.ptr, b.mul(row, i64(a.strides[1])), dtype)], [a.table]

    def call_tiles(fn, batch, first, j, count, packed_panel=None):
        """``count`` tiles from row ``first``, column ``j``; B read in place, or from
        ``packed_panel`` (its buffer, its width) where it was packed."""
        b_at, b_rows = ((at(bm, batch, 0, j), strides[3]) if packed_panel is None
                        else (packed_panel[0], i64(packed_panel[1])))
        a_at, table = a_from(batch, first)
        b.call(fn, a_at + [b_at, at(c, batch, first, j), i64(count)]
               + strides[:3] + [b_rows] + strides[4:] + table)

    packed = pack and after_rows is None and stage is None and packs(K, N, lanes, dtype)
    if packed:
        with b.goto_entry_block():
            buffer = b.alloca(MEMORY[dtype], size=i64(K * MAX_VECTORS * lanes))
            buffer.align = 64

    def panel(fn, batch, j, width):
        """Columns j.. of one batch: M // rows tiles, then, when rows do not divide M,
        one more ending at row M, overlapping its neighbour (which it overwrites with
        the same values): one tile function instead of a second for the rest."""
        if packed:
            _pack_panel(b, at(bm, batch, 0, j), buffer, K, bm.strides[1], width, dtype)
        for first, count in [(0, M // rows)] + ([(M - rows, 1)] if M % rows else []):
            if stage is None:
                call_tiles(fn, batch, first, j, count, (buffer, width) if packed else None)
                continue
            with counted_loop(b, count, "staged") as i:     # one tile at a time
                row = b.add(i64(first), b.mul(i, i64(rows)))
                t = b.load(sequence)
                stage.wait(b, t)
                resume = [at(stage.partials, batch, row, j)] if stage.partials else []
                a_at, table = a_from(batch, row)
                b.call(fn, a_at + [at(bm, batch, 0, j), at(c, batch, row, j), i64(1)]
                       + strides + resume + table)
                stage.done(b, t)
                b.store(b.add(t, i64(1)), sequence)

    if stage is not None:
        with b.goto_entry_block():
            sequence = b.alloca(I64)
        b.store(i64(0), sequence)

    def across(batch, visit):
        """``visit(fn, j, width)`` for every block of ``width`` columns from j (an
        ``i64`` value)."""
        for count, widths, j0 in col_blocks:
            fn = _tile_function(b.module, dtype, rows, widths, flags,
                                resume=stage is not None and stage.partials is not None,
                                table_axis=a.table_axis)
            _repeat(b, count, "nt", lambda t, fn=fn, width=sum(widths), j0=j0:
                    visit(fn, b.add(b.mul(t, i64(width)), i64(j0)), width))

    if after_rows is None:
        _repeat(b, nb, "batch", lambda batch: across(
            batch, lambda fn, j, width: panel(fn, batch, j, width)))
        return
    assert nb == 1 and stage is None, "bands of rows are those of one product"

    def band(first):    # one tile's rows across every column (the last may overlap)
        across(i64(0), lambda fn, j, width: call_tiles(fn, i64(0), first, j, 1))

    with counted_loop(b, M // rows, "band") as i:
        first = b.mul(i, i64(rows))
        band(first)
        after_rows(b, first, i64(rows))
    if M % rows:
        band(i64(M - rows))
        after_rows(b, i64(M - M % rows), i64(M % rows))


#: the largest buffer of a packed column panel of B (``pack``): it lives on the stack
#: of the thread running the product (a worker's holds megabytes), and a panel this
#: large (K = 1365 float32 rows of three AVX-512 vectors) stays in L2 while its tiles
#: read it
PACK_MAX_BYTES = 256 << 10


def packs(K, N, lanes: int, dtype: str) -> bool:
    """Whether a product of these sizes can read B through packed panels."""
    return (isinstance(K, int) and N > 1
            and K * MAX_VECTORS * lanes * ITEMSIZE[dtype] <= PACK_MAX_BYTES)


def _pack_panel(b, src, dst, K: int, row_stride: int, width: int, dtype: str) -> None:
    """``width`` columns of B's ``K`` rows (``row_stride`` elements apart), from ``src``
    into ``dst`` one row after another."""
    item = ITEMSIZE[dtype]
    with counted_loop(b, K, "pack") as k:
        copy_bytes(b, _element(b, dst, b.mul(k, i64(width)), dtype),
                   _element(b, src, b.mul(k, i64(row_stride)), dtype), i64(width * item))


#: a tile size the module already has a function for is taken when it costs at most
#: this much more work than the best size (each shape compiled is one more long function
#: for LLVM: ``Trace.stats["compile_s"]`` shows the compile time)
SHARED_SIZE_TOLERANCE = 1.03


def _tile_rows(M, most, compiled=frozenset()):
    """Rows of a tile, at most ``most``: the size with the least work, counted as
    tiles x (rows + 1).  A last tile that the size does not divide M by overlaps its
    neighbour, computing those rows twice (64 rows in 7-row tiles are 70), and each
    tile reads its panel of B once more, about the cost of one more row.  The count
    ranks row counts as their times do (re-measure: float32 64x784 @ 784x128 as tiles
    of 4 to 8 rows; ``OPENBLAS_NUM_THREADS=1 python benchmarks/bench_matmul.py --dtype
    float32 64,784,128,NN`` times the size chosen).  Larger tiles win ties, and a size
    in ``compiled`` wins within ``SHARED_SIZE_TOLERANCE``: the MLP step's 784-row
    product takes the 8-row tiles of its 64-row one (882 against 880 for 9 rows), one
    tile function fewer to compile."""
    def work(r):
        return -(-M // r) * (r + 1)
    least = min(work(r) for r in range(1, most + 1))
    return min(range(most, 0, -1), key=lambda r: (
        r not in compiled or work(r) > SHARED_SIZE_TOLERANCE * least, work(r)))


def _column_blocks(N, lanes):
    """[(count, vector widths, first column)]: C's columns as equal blocks of at most
    MAX_VECTORS vectors (16 columns of 4 lanes are 2 x 2 vectors, not 3 + 1), then
    one block of the rest, whose last vector may be partial."""
    vectors = -(-N // lanes)
    per_block = -(-vectors // -(-vectors // MAX_VECTORS))
    full, rest = divmod(N, per_block * lanes)
    blocks = [(full, [lanes] * per_block, 0)] if full else []
    if rest:
        blocks.append((1, [lanes] * (rest // lanes) + [rest % lanes] * (rest % lanes > 0),
                       N - rest))
    return blocks


def _repeat(b, count: int, name, body):
    """``body(i)`` for each i in range(count): a counted loop, or the body once when
    count is 1 (the pipeline runs no loop unroller, see runtime.engine)."""
    if count == 1:
        body(i64(0))
        return
    with counted_loop(b, count, name) as i:
        body(i)


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


def _tile_name(dtype, rows, widths, flags, resume, table_axis=0) -> str:
    return (f"llgrad.tile.{dtype}.{rows}x{'+'.join(map(str, widths))}.{'.'.join(flags)}"
            + (".resume" if resume else "") + ("", ".rows_at", ".k_at")[table_axis])


def _tile_function(module, dtype, rows, widths, flags, resume=False,
                   table_axis=0) -> ir.Function:
    """``void tile(A, B, C, count, K, a_row, a_k, b_k, c_row)``: ``count`` tiles of
    ``rows`` x ``sum(widths)`` one below the other (strides in elements).  One
    function per shape of tile, shared by every product of the module: a tile is
    hundreds of instructions, and LLVM's time grows with each one compiled.
    ``resume``: one more argument ``I``, laid out as C, holding the sums of earlier
    k: the accumulators start from them instead of zero, and go on in k order.
    ``table_axis`` 1 or 2: a last argument, A's table (``Matrix.table``), gives the
    offset of each of its rows (read once a tile) or of each k (once a step of k)."""
    name = _tile_name(dtype, rows, widths, flags, resume, table_axis)
    if name in module.globals:
        return module.globals[name]
    tabled = int(table_axis > 0)
    fn = ir.Function(module, ir.FunctionType(
        ir.VoidType(), [PTR] * 3 + [I64] * 6 + [PTR] * (resume + tabled)), name)
    fn.linkage = "internal"
    fn.attributes.add("noinline")
    for arg in fn.args[:3] + fn.args[9:]:
        arg.add_attribute("noalias")
        arg.add_attribute("captures(none)")
    A, B, C, count, K, a_row, a_k, b_k, c_row = fn.args[:9]
    table = fn.args[-1] if tabled else None
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    starts = [sum(widths[:v]) for v in range(len(widths))]

    def entry(i):
        return b.load(b.gep(table, [i], inbounds=True, source_etype=I64), typ=I64)

    with counted_loop(b, count, "tile") as t:
        first = b.mul(t, i64(rows))
        a_rows = [entry(b.add(first, i64(r))) if table_axis == 1
                  else b.mul(b.add(first, i64(r)), a_row) for r in range(rows)]
        if resume:
            c_rows = [b.mul(b.add(first, i64(r)), c_row) for r in range(rows)]
            zeros = [_load(b, fn.args[9], b.add(c_r, i64(s)), dtype, w)
                     for c_r in c_rows for s, w in zip(starts, widths)]
        else:
            zeros = [_zero(dtype, w) for _ in range(rows) for w in widths]
        with carried_loop(b, K, zeros, "k") as (k, accs):
            b_k_row = b.mul(k, b_k)
            vectors = [_load(b, B, b.add(b_k_row, i64(s)), dtype, w)
                       for s, w in zip(starts, widths)]
            a_col = entry(k) if table_axis == 2 else b.mul(k, a_k)
            for r, a_r in enumerate(a_rows):
                x = _load(b, A, b.add(a_r, a_col), dtype, 1)
                for v, (vec, w) in enumerate(zip(vectors, widths)):
                    prod = b.fmul(_broadcast(b, x, w), vec, flags=flags)
                    at = r * len(widths) + v
                    accs[at] = b.fadd(accs[at], prod, flags=flags)
        for r in range(rows):
            c_r = b.mul(b.add(first, i64(r)), c_row)
            for v, (s, w) in enumerate(zip(starts, widths)):
                b.store(accs[r * len(widths) + v], _element(b, C, b.add(c_r, i64(s)), dtype),
                        align=ITEMSIZE[dtype])
    b.ret_void()
    return fn


def _zero(dtype, width):
    zero = const(dtype, 0)
    return zero if width == 1 else ir.Constant(ir.VectorType(zero.type, width), [zero] * width)
