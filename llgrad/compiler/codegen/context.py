"""What an emitter sees while it writes one kernel: the builder, where each value
lives (a pointer, or a register), the kernel's scratch, and the module's options and
state.  Reading a value that has no buffer computes it in place through its lowering
row, which is how fused chains become one loop body.
"""
from __future__ import annotations

from llvmlite import ir

from llgrad.compiler.codegen import parallel
from llgrad.compiler.codegen.lowering import row
from llgrad.compiler.codegen.options import CodegenOptions, ModuleState
from llgrad.compiler.codegen.plan import Elementwise, IndexMap, Leaf, View
from llgrad.llvm.indexing import Index
from llgrad.llvm.scalar import const, i64, load


class KernelContext:
    """What a lowering rule sees while it emits one kernel."""

    def __init__(self, b: ir.IRBuilder, pointers: dict, scratch, state: ModuleState,
                 values=None):
        self.b = b
        self.pointers = pointers      # id(node) -> pointer value, for materialised nodes
        self.scratch = scratch        # pointers to this kernel's scratch buffers
        self.state = state            # the module's options and what it has emitted
        self.values = values or {}    # id(node) -> a scalar already in a register
        self.epilogue = None          # a product's: runs the next kernel on its rows
        self.stream = None            # a streamed product's: the kernels after it (matvec.Stream)
        self._computed = {}           # (id(node), id(index)) -> (index, value)
        self.body = None              # a loop's: (fusion, memory plan) of its body

    @property
    def options(self) -> CodegenOptions:
        return self.state.options

    @property
    def flags(self) -> tuple[str, ...]:
        """Fast-math flags for float arithmetic."""
        return self.state.options.flags

    def pointer(self, node):
        return self.pointers[id(node)]

    def by_rows(self, out, rows: int, elements: int, emit_rows) -> None:
        """``emit_rows(ctx, out, first, count)`` writes rows ``[first, first + count)``
        of this kernel's output, each independently of the others: on one thread for
        the whole output, or cut into bands of rows the pool runs at once when the
        output has at least ``parallel.MIN_ELEMENTS`` ``elements`` and the module may
        use threads.  The bands run in functions of their own, which see this kernel's
        stored inputs through a context of their own."""
        b = self.b
        parts = min(rows, self.options.threads)
        if parts < 2 or elements < parallel.MIN_ELEMENTS or self.values:
            emit_rows(self, out, i64(0), i64(rows))
            return
        ids = list(self.pointers)

        def emit_part(pb, pointers, part):
            first = pb.udiv(pb.mul(part, i64(rows)), i64(parts))
            end = pb.udiv(pb.mul(pb.add(part, i64(1)), i64(rows)), i64(parts))
            inner = KernelContext(pb, dict(zip(ids, pointers)), [], self.state)
            emit_rows(inner, pointers[-1], first, pb.sub(end, first))

        parallel.run_parts(b, f"{b.function.name}.rows", parts,
                           [self.pointers[k] for k in ids] + [out], emit_part)

    def read(self, node, index: Index):
        """The value of ``node`` at ``index``: loaded if it has a buffer, else computed."""
        if id(node) in self.values:
            return self.values[id(node)]
        ptr = self.pointers.get(id(node))
        if ptr is not None:
            return load(self.b, ptr, index.linear(self.b, node.shape), node.dtype)
        return self.compute(node, index)

    def compute(self, node, index: Index):
        """The value of an inlined ``node`` at ``index``.  An elementwise value read by
        several nodes of one loop at the same ``Index`` is computed once: the first
        computation dominates the later reads, as a loop body is emitted in order."""
        r = row(node)
        if isinstance(r, Elementwise):
            known = self._computed.get((id(node), id(index)))
            if known is not None:
                return known[1]
            args = [self.read(x, index) for x in node.inputs]
            mark = self.state.lines.mark(self.b)
            value = r.scalar(self, args, node.inputs[-1].dtype, node.attrs)
            self.state.lines.tag(mark, self.b, node)
            self._computed[id(node), id(index)] = (index, value)
            return value
        if isinstance(r, (IndexMap, View)):
            return r.read(self, node, index)
        if isinstance(r, Leaf) and node.op == "constant" and node.type.ndim == 0:
            return const(node.dtype, node.attrs["value"].item())
        raise AssertionError(f"{node.op} cannot be computed inline")
