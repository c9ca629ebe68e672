"""``while``: the body graph as a function called until its condition is false.

As for ``loop`` (``control.py``), the body is planned as a graph of its own and
becomes an internal function with the packed-argument convention; the carried values
live in two scratch sets that swap roles every step (no copy between steps), chosen
by the parity of the step count, which here is known only at run time.  The body
writes the condition on its new values into a one-byte scratch slot, read after the
call.

The loop stores its trip count.  With ``max_steps`` it also copies the carried values
at the start of each step into row ``step`` of their tape (a ``memcpy``).  Before a step
that would be number ``max_steps`` the loop stops instead: it stores the address of
a message naming the user's line into the module's status word (the first failure
wins) and leaves the loop with the values it has, so nothing is written past a tape
and the code after it runs on finite memory.  ``<entry>.while_status`` returns the
word's address: the Executable reads it after each call and raises
``LoopLimitError`` with the message (``codegen/build.py``).  Without ``max_steps`` a
loop whose heap tape is read appends the rows to it instead (``heap_tape.py``), and
reports a tape that cannot grow through the same word.  The word is one per
module, as ``finite.py``'s: concurrent calls of one executable may see each other's
failure.
"""
from __future__ import annotations

from llvmlite import ir

from llgrad.compiler.codegen import heap_tape
from llgrad.compiler.codegen.call import lower_body
from llgrad.ir.primitives_while import handle_index, limit_message, tape_index, trip_index
from llgrad.llvm.loops import conditional_loop
from llgrad.llvm.scalar import I8, I64, PTR, copy_bytes, i64, load, nbytes, part_offset, store

STATUS = "llgrad.while.status"
ACCESSOR = ".while_status"   # appended to the entry's symbol


def scratch_bytes(node, body_arena_bytes: int):
    """Carried values twice (this step's and the next), the condition, the body's arena."""
    carried = [nbytes(x.type) for x in node.inputs[1:1 + node.attrs["n_carried"]]]
    return tuple(carried) + tuple(carried) + (1, body_arena_bytes)


def _status(module: ir.Module, entry: str) -> ir.GlobalVariable:
    """The module's status word, and ``ptr <entry>.while_status()`` returning it."""
    if STATUS not in module.globals:
        word = ir.GlobalVariable(module, I64, STATUS)
        word.linkage = "internal"
        word.initializer = i64(0)
        fn = ir.Function(module, ir.FunctionType(PTR, []), entry + ACCESSOR)
        fb = ir.IRBuilder(fn.append_basic_block("entry"))
        fb.ret(fb.bitcast(word, PTR))
    return module.globals[STATUS]


def _message(module: ir.Module, text: str) -> ir.GlobalVariable:
    data = bytearray(text.encode() + b"\0")
    name = f"llgrad.while.message{sum(1 for g in module.globals if g.startswith('llgrad.while.message'))}"
    g = ir.GlobalVariable(module, ir.ArrayType(I8, len(data)), name)
    g.global_constant = True
    g.linkage = "internal"
    g.initializer = ir.Constant(ir.ArrayType(I8, len(data)), data)
    return g


def emit_while(ctx, node, out):
    b, state = ctx.b, ctx.state
    body, nc = node.attrs["body"], node.attrs["n_carried"]
    limit = node.attrs["max_steps"]
    pred0, carried, invariants = node.inputs[0], node.inputs[1:1 + nc], node.inputs[1 + nc:]
    body_fn = lower_body(ctx, node, nc)

    n_slots = len(body.inputs) + len(body.outputs) + 1
    packed = b.alloca(ir.ArrayType(PTR, n_slots), name="packed")
    step_slot = b.alloca(I64, name="step")
    first, second = ctx.scratch[:nc], ctx.scratch[nc:2 * nc]
    pred_slot, arena = ctx.scratch[2 * nc], ctx.scratch[2 * nc + 1]
    sizes = [i64(nbytes(x.type)) for x in carried]

    def put(slot, ptr):
        b.store(ptr, b.gep(packed, [i64(0), i64(slot)], inbounds=True))

    def part(index):
        return b.gep(out, [i64(part_offset(node.type, index))], inbounds=True, source_etype=I8)

    for x, a, size in zip(carried, first, sizes):
        copy_bytes(b, a, ctx.pointer(x), size)
    put(0, step_slot)
    for k, x in enumerate(invariants):
        put(1 + nc + k, ctx.pointer(x))
    base = len(body.inputs)
    put(base, pred_slot)
    put(n_slots - 1, arena)
    b.store(b.zext(load(b, ctx.pointer(pred0), i64(0), "bool"), I8), pred_slot)
    tape = (heap_tape.Recorder(b, node, _message(state.module, heap_tape.memory_message(node)))
            if id(node) in state.taped else None)

    head, run, done, step = conditional_loop(b, i64(0), "while")
    b.cbranch(load(b, pred_slot, i64(0), "bool"), run, done)
    b.position_at_end(run)
    entry = b.function.name.split(".")[0]
    if limit is not None:
        within = b.append_basic_block("while.within")
        over = b.append_basic_block("while.over")
        b.cbranch(b.icmp_signed("<", step, i64(limit)), within, over)
        b.position_at_end(over)
        message = b.ptrtoint(_message(state.module, limit_message(node)), I64)
        b.cmpxchg(_status(state.module, entry), i64(0), message, "monotonic", "monotonic")
        b.branch(done)
        b.position_at_end(within)
    odd = b.trunc(step, ir.IntType(1))
    current = [b.select(odd, s, f) for f, s in zip(first, second)]
    for k, (f, s) in enumerate(zip(first, second)):   # even steps read the first set
        put(1 + k, current[k])
        put(base + 1 + k, b.select(odd, f, s))
    if tape is not None:
        full = b.append_basic_block("while.tape_full")
        tape.append(step, current, sizes, full)
        appended = b.block
        b.position_at_end(full)
        tape.fail(_status(state.module, entry))
        b.branch(done)
        b.position_at_end(appended)
    if limit is not None:
        for k, (src, size) in enumerate(zip(current, sizes)):
            row = b.gep(part(tape_index(node, k)), [b.mul(step, size)], inbounds=True,
                        source_etype=I8)
            copy_bytes(b, row, src, size)
    b.store(step, step_slot)
    b.call(body_fn, [b.gep(packed, [i64(0), i64(0)], inbounds=True)])
    step.add_incoming(b.add(step, i64(1), flags=["nuw", "nsw"]), b.block)
    b.branch(head)

    b.position_at_end(done)
    trips = b.phi(I64, name="while.trips")
    trips.add_incoming(step, head)
    if limit is not None:
        trips.add_incoming(step, over)
    if tape is not None:
        trips.add_incoming(step, full)
        store(b, tape.handle(), part(handle_index(node)), i64(0), "int64")
    elif node.attrs.get("heap_tape"):   # nothing reads it: no tape
        store(b, i64(0), part(handle_index(node)), i64(0), "int64")
    odd = b.trunc(trips, ir.IntType(1))
    for k, (f, s, size) in enumerate(zip(first, second, sizes)):
        copy_bytes(b, part(k), b.select(odd, s, f), size)
    store(b, trips, part(trip_index(node)), i64(0), "int64")
