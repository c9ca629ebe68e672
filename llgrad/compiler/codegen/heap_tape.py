"""The heap tape of a ``while`` without ``max_steps``: rows appended in native code,
read back by ``tape_row``, freed after the last reader of its handle.

A loop with ``heap_tape`` whose handle some kernel of its graph reads (``plan``: in
reverse mode, the reversed loop) copies its carried values as each step begins into
row ``step`` of a heap buffer, one row of all of them; a full buffer is ``realloc``'d
to twice its rows (INITIAL_ROWS first), so appending costs amortised constant time
and the tape needs no bound.  ``realloc`` and ``free`` are resolved by name when the
code is loaded, as libm's functions are.  A failed ``realloc`` (or a size past what
an i64 counts) stops the loop as a spent ``max_steps`` does: the module's status word
gets a message naming the loop's line, which the Executable raises as
``MemoryError``; the rows recorded so far stay valid and are freed like any tape.  The
handle (the buffer's address, 0 before any row) is one of the loop's results.

``plan`` also says after which kernel of the graph each handle is read for the last
time: ``module.py`` frees the tape (``release_before``) right after that kernel, or on
the way out of a function that stops early (``on_early_return``), so a tape lives for
one call (or one run of the body it is made in), and nothing can overwrite the
handle's bytes first.  A handle that leaves its graph (a body's result) would have no
last reader here: that is refused.  A loop whose handle nothing reads records nothing.
"""
from __future__ import annotations

from llvmlite import ir

from llgrad.ir.errors import TAPE_MEMORY, UnsupportedError
from llgrad.ir.primitives_while import handle_index
from llgrad.llvm.scalar import I8, I64, PTR, copy_bytes, declare, i64, load, nbytes

#: rows of a tape's first buffer
INITIAL_ROWS = 16


def row_layout(body, n_carried: int):
    """(bytes of one row, each carried value's offset in it, each one's bytes)."""
    sizes = [nbytes(p.type) for p in body.inputs[1:1 + n_carried]]
    offsets = [sum(sizes[:j]) for j in range(n_carried)]
    return max(1, sum(sizes)), offsets, sizes


def plan(state, graph, kernels, memory) -> dict:
    """Kernel number -> (handle buffer, kernel that makes it) of the tapes to free after
    it (``release_before`` the next); marks in ``state.taped`` the loops of ``graph``
    whose tape some kernel reads."""
    handles = {id(n): n for n in graph.nodes if n.op == "tuple_get"
               and n.inputs[0].op == "while" and n.inputs[0].attrs.get("heap_tape")
               and n.attrs["index"] == handle_index(n.inputs[0])}
    escaping = [h for h in handles.values() if any(h is o for o in graph.outputs)]
    if escaping:
        where = escaping[0].inputs[0].attrs["where"] or "an unknown line"
        raise UnsupportedError(f"while_loop at {where}: the backward pass of a loop without "
                               f"max_steps must run in the same call as its forward pass; "
                               f"give max_steps")
    last, made = {}, {}
    for t, kernel in enumerate(kernels):
        made[id(kernel.node)] = t
        for n in kernel.reads:
            if id(n) in handles:
                last[id(n)] = t
    release_after = {}
    for key, t in last.items():
        loop = handles[key].inputs[0]
        state.taped.add(id(loop))
        release_after.setdefault(t, []).append((memory.buffers[key],
                                                made.get(id(loop), len(kernels))))
    return release_after


def _free(b: ir.IRBuilder, handle_address) -> None:
    free = declare(b.module, "free", ir.VoidType(), [PTR])
    b.call(free, [b.inttoptr(load(b, handle_address, i64(0), "int64"), PTR)])


def release_before(b: ir.IRBuilder, address, pending: dict, t: int) -> None:
    """``free`` the tapes whose handles ``plan`` said are last read before kernel ``t``
    (and take them out of ``pending``)."""
    for k in sorted(k for k in pending if k < t):
        for buf, _ in pending.pop(k):
            _free(b, address(buf))


def on_early_return(address, pending: dict, t: int):
    """What frees the tapes still pending that kernels up to ``t`` made, on the way out
    of a function that stops early (a NaN found by ``finite.check``).  Their handles'
    addresses are taken now, in the flow every later block is reached from."""
    handles = [address(buf) for entries in pending.values() for buf, made in entries
               if made <= t]

    def release(b: ir.IRBuilder) -> None:
        for handle_address in handles:
            _free(b, handle_address)
    return release


class Recorder:
    """The code ``emit_while`` adds to a loop that records a heap tape."""

    def __init__(self, b: ir.IRBuilder, node, message):
        self.b, self.message = b, message
        self.row_bytes, self.offsets, _ = row_layout(node.attrs["body"],
                                                     node.attrs["n_carried"])
        self.buffer = b.alloca(PTR, name="tape")
        self.rows = b.alloca(I64, name="tape.rows")
        b.store(ir.Constant(PTR, None), self.buffer)
        b.store(i64(0), self.rows)

    def append(self, step, values, sizes, failed: ir.Block) -> None:
        """Copies ``values`` into row ``step``, growing the buffer first when it is
        full; branches to ``failed`` (status set) when it cannot grow."""
        b = self.b
        grow = b.append_basic_block("tape.grow")
        grown = b.append_basic_block("tape.grown")
        fits = b.append_basic_block("tape.fits")
        rows = b.load(self.rows)
        b.cbranch(b.icmp_signed("<", step, rows), fits, grow)
        b.position_at_end(grow)
        more = b.select(b.icmp_signed("==", rows, i64(0)), i64(INITIAL_ROWS),
                        b.shl(rows, i64(1)))
        too_many = b.icmp_unsigned(">", more, i64((2 ** 63 - 1) // self.row_bytes))
        size = b.select(too_many, i64(-1), b.mul(more, i64(self.row_bytes)))  # -1: fails
        realloc = declare(b.module, "realloc", PTR, [PTR, I64])
        moved = b.call(realloc, [b.load(self.buffer), size])
        b.cbranch(b.icmp_unsigned("==", b.ptrtoint(moved, I64), i64(0)), failed, grown)
        b.position_at_end(grown)
        b.store(moved, self.buffer)
        b.store(more, self.rows)
        b.branch(fits)
        b.position_at_end(fits)
        row = b.gep(b.load(self.buffer), [b.mul(step, i64(self.row_bytes))], inbounds=True,
                    source_etype=I8)
        for offset, value, size in zip(self.offsets, values, sizes):
            copy_bytes(b, b.gep(row, [i64(offset)], inbounds=True, source_etype=I8), value,
                       size)

    def fail(self, status) -> None:
        """In the block a failed growth branches to: the status word names the loop."""
        b = self.b
        message = b.ptrtoint(self.message, I64)
        b.cmpxchg(status, i64(0), message, "monotonic", "monotonic")

    def handle(self):
        """The buffer's address as the i64 the handle result holds."""
        return self.b.ptrtoint(self.b.load(self.buffer), I64)


def memory_message(node) -> str:
    """What a loop whose tape cannot grow says."""
    where = node.attrs["where"] or "an unknown line"
    row_bytes = row_layout(node.attrs["body"], node.attrs["n_carried"])[0]
    return (f"{TAPE_MEMORY} while_loop at {where} could not grow its tape "
            f"({row_bytes} bytes per step); give max_steps to bound it, or free memory")


def emit_tape_row(ctx, node, out) -> None:
    """Row k's carried value ``index``: bytes copied from the tape the handle holds."""
    b = ctx.b
    handle, k = node.inputs[:2]
    row_bytes, offsets, sizes = row_layout(node.attrs["body"], node.attrs["n_carried"])
    index = node.attrs["index"]
    base = b.inttoptr(load(b, ctx.pointer(handle), i64(0), "int64"), PTR)
    at = b.add(b.mul(load(b, ctx.pointer(k), i64(0), "int64"), i64(row_bytes)),
               i64(offsets[index]))
    copy_bytes(b, out, b.gep(base, [at], inbounds=True, source_etype=I8), i64(sizes[index]))
