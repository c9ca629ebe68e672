"""Checks for NaN and Inf after every kernel, for ``llgrad.debug_nans``.

A module built with ``check_finite=True`` scans, after each kernel call of its
graphs (loop bodies included), the kernel's float output buffer: an element ``x`` is
bad when ``x - x`` is unordered (NaN for both NaN and +-Inf, 0 for every finite
value; the module is built without fast-math flags on this subtraction).  The first
bad kernel stores its check number (1-based) into the module's one status word
(``cmpxchg`` from 0: the first one wins) and the graph function returns at once;
every graph function also returns after a call when the status is set, so a loop
body's failure ends the loop's graph and the entry.  ``<entry>.nan_status`` returns
the status word's address: the Executable reads it after each call, raises
``FloatingPointError`` with the check's label (kept in the module's metadata, so a
cached executable reports the same) and clears it.  The status is one word per
module, not per call: calls of one checked executable from several threads at once
may report each other's failure.  Modules built without ``check_finite`` are
unchanged: none of this is emitted.
"""
from __future__ import annotations

from llvmlite import ir

from llgrad.llvm.loops import counted_loop
from llgrad.llvm.scalar import I64, PTR, i64, is_float, load

STATUS = "llgrad.nan.status"


def _status(module: ir.Module) -> ir.GlobalVariable:
    if STATUS not in module.globals:
        g = ir.GlobalVariable(module, I64, STATUS)
        g.linkage = "internal"
        g.initializer = i64(0)
    return module.globals[STATUS]


def label(graph, t: int, node, origins) -> dict:
    """What check ``t`` of ``graph`` reports: the op, its pass, whose adjoint it is and
    the user's line (``origins``: ``id(node) -> (pass, adjoint of)``, see
    ``dispatch.staging.origins``; None: unknown, as for a graph built by hand)."""
    where, of = (origins or {}).get(id(node), (None, None))
    return {"graph": graph.name, "kernel": t, "op": node.op, "type": str(node.type),
            "pass": where, "adjoint_of": of, "source": node.source}


def check(state, b: ir.IRBuilder, graph, items, address, before_return=None) -> None:
    """After the kernel call(s) just emitted with ``b``: scans the float output of each
    (kernel number, node, output buffer) in ``items``, then returns from the function
    when the status is set (``before_return(builder)`` first: what must not leak, such
    as heap tapes).  Nothing when the module is not checked."""
    if state.checks is None:
        return
    status = _status(state.module)
    for t, node, buf in items:
        dtype = getattr(node.type, "dtype", None)
        size = getattr(node.type, "size", 0)
        if dtype is None or not is_float(dtype) or not size:
            continue
        state.checks.append(label(graph, t, node, state.origins))
        number = len(state.checks)
        ptr = address(buf)
        with counted_loop(b, size, "finite") as i:
            x = load(b, ptr, i, dtype)
            d = b.fsub(x, x)
            with b.if_then(b.fcmp_unordered("uno", d, d), likely=False):
                b.cmpxchg(status, i64(0), i64(number), "monotonic", "monotonic")
    failed = b.icmp_unsigned("!=", b.load(status, typ=I64), i64(0))
    with b.if_then(failed, likely=False):
        if before_return is not None:
            before_return(b)
        b.ret_void()


def finish(state, entry_name: str) -> list:
    """Adds ``ptr <entry>.nan_status()``; returns the checks' labels (none unchecked)."""
    if state.checks is None:
        return []
    fn = ir.Function(state.module, ir.FunctionType(PTR, []), entry_name + ".nan_status")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    b.ret(b.bitcast(_status(state.module), PTR))
    return state.checks

