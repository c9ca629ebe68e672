"""Memory plan: where every materialised value lives.

Inputs and outputs live in the caller's arrays, array constants in global constants,
and every other buffer at an offset in one arena allocated once per executable.
Offsets are reused: a buffer's lifetime runs from the kernel that writes it to the
last kernel that reads it (directly or through a view), and two buffers share bytes
only when their lifetimes are disjoint.  A kernel's output never shares bytes with
its own inputs, which is what makes its ``noalias`` pointers true.  A product's epilogue
and the rest of its stream (``fusion``) run while the product does, so what each of
those kernels reads and writes lives until the last one's step, with the product's
scratch: no output among them takes bytes another of them uses.
"""
from __future__ import annotations

import bisect
import heapq
from dataclasses import dataclass

from llgrad.compiler.codegen.fusion import contiguous_start
from llgrad.compiler.codegen.lowering import row
from llgrad.compiler.codegen.plan import Branches, Kernel, Loop
from llgrad.llvm.scalar import ALIGN, nbytes


@dataclass(frozen=True, eq=False)
class Buffer:
    kind: str        # "input" | "output" | "arena" | "constant" | "slice"
    index: int       # argument slot, arena byte offset, constant or slice number
    nbytes: int


@dataclass(frozen=True, eq=False)
class SliceBuffer(Buffer):
    """Rows of ``source`` from row ``min(max(start, 0), last_start)`` on, where
    ``start`` is the int64 scalar stored in ``start``: a dynamic_slice by address.
    A static slice has no ``start``: the bytes of ``source`` from ``offset`` on."""
    source: Buffer = None
    start: Buffer = None
    row_bytes: int = 0
    last_start: int = 0
    offset: int = 0


@dataclass
class MemoryPlan:
    buffers: dict        # id(node) -> Buffer, for every node read from memory
    scratch: list        # per kernel: tuple of scratch Buffers
    outputs: list        # per kernel: Buffer it writes
    arena_bytes: int
    constants: list      # constant nodes, by Buffer.index
    bodies: list         # per kernel: a loop's body's MemoryPlan (a cond's: per branch)

    def summary(self) -> str:
        used = sum(b.nbytes for b in {id(b): b for b in self.buffers.values()}.values()
                   if b.kind == "arena")
        return f"arena {self.arena_bytes} bytes (buffers without reuse: {used} bytes)"


def _nbytes(node) -> int:
    return nbytes(node.type)


def plan_memory(fusion) -> MemoryPlan:
    graph = fusion.graph
    buffers: dict = {}
    constants = []
    for i, p in enumerate(graph.inputs):
        buffers[id(p)] = Buffer("input", i, _nbytes(p))
    for n in graph.nodes:
        if n.op == "constant" and id(n) not in fusion.inlined:
            buffers[id(n)] = Buffer("constant", len(constants), _nbytes(n))
            constants.append(n)

    # lifetimes of arena buffers, in kernel steps
    requests = []                    # [start, end, nbytes, key]
    by_root: dict = {}
    kernels = fusion.kernels
    bodies = [None] * len(kernels)   # per kernel: a loop's body's own plan
    inside = [fusion.followers(k) for k in kernels]   # kernels run in the call of kernel t
    caller = list(range(len(kernels)))                 # whose call runs kernel t
    for t, n in enumerate(inside):
        for follower in range(t + 1, t + 1 + n):
            caller[follower] = t
    for t, k in enumerate(kernels):
        calls = kernels[caller[t]:t]       # those run before it in the same call
        reads = k.reads + [n for c in calls for n in c.reads] + [
            c.node for c in calls if c.output is None]
        for root in (r for n in reads for r in fusion.roots(n)):
            req = by_root.get(id(root))
            if req is not None:
                req[1] = t
        if k.output is None and not k.copy:
            req = [t, t, _nbytes(k.node), ("node", id(k.node))]
            by_root[id(k.node)] = req
            requests.append(req)
        for s, size in enumerate(() if k.copy else _scratch(k, bodies, t)):
            requests.append([t, t + inside[t], size, ("scratch", t, s)])

    offsets, arena_bytes = _assign_offsets(requests)
    scratch = [[] for _ in fusion.kernels]
    for req in requests:
        key = req[3]
        buf = Buffer("arena", offsets[key], req[2])
        if key[0] == "node":
            buffers[key[1]] = buf
        else:
            scratch[key[1]].append(buf)

    outputs = []
    for k in fusion.kernels:
        if k.output is not None:
            buf = Buffer("output", k.output, _nbytes(k.node))
            if not k.copy:
                buffers[id(k.node)] = buf
        else:
            buf = buffers[id(k.node)]
        outputs.append(buf)
    numbers = {key: k for k, key in enumerate(fusion.slices)}
    for n in graph.nodes:    # in order: a view of a slice, or a slice of a view
        if id(n) in numbers and n.op == "slice":
            buffers[id(n)] = SliceBuffer("slice", numbers[id(n)], _nbytes(n),
                                         buffers[id(n.inputs[0])], offset=nbytes(
                                             n.type.with_shape((contiguous_start(n),))))
        elif id(n) in numbers:
            operand, start = n.inputs
            row_bytes = nbytes(operand.type.with_shape(operand.shape[1:]))
            buffers[id(n)] = SliceBuffer("slice", numbers[id(n)], _nbytes(n),
                                         buffers[id(operand)], buffers[id(start)], row_bytes,
                                         operand.shape[0] - n.shape[0])
        root = fusion.views.get(id(n))
        if root is not None and id(root) in buffers:
            buf = buffers[id(root)]
            offset = fusion.offsets.get(id(n))
            if offset is not None:   # a part of a multi-result node's buffer
                assert buf.kind == "arena", "multi-result values live in the arena"
                buf = Buffer("arena", buf.index + offset, buf.nbytes - offset)
            buffers[id(n)] = buf
    return MemoryPlan(buffers, [tuple(s) for s in scratch], outputs, arena_bytes, constants,
                      bodies)


def _scratch(kernel, bodies: list, t: int) -> tuple:
    """The scratch buffers kernel ``t`` needs; a loop's include its body's arena, whose
    plan goes into ``bodies[t]``."""
    r = row(kernel.node)
    if isinstance(r, Loop):
        bodies[t] = plan_memory(kernel.body)
        return r.scratch(kernel.node, bodies[t].arena_bytes)
    if isinstance(r, Branches):
        bodies[t] = tuple(plan_memory(branch) for branch in kernel.body)
        return r.scratch(kernel.node, max(m.arena_bytes for m in bodies[t]))
    return r.scratch(kernel.node) if isinstance(r, Kernel) else ()


def _assign_offsets(requests):
    """First fit: each buffer takes the lowest offset free during its whole lifetime.

    Requests are taken in order of their first step, so the bytes busy when one starts
    are those of the buffers placed before it whose lifetime reaches its start: a
    malloc and free simulation.  The free gaps below the highest busy byte are kept
    merged, so a placement scans the gaps, not every buffer placed (a gradient keeps
    thousands of residuals alive at once)."""
    offsets, top = {}, 0
    live = []            # heap of (last step, offset, size) of the buffers busy now
    gaps = []            # sorted, merged [lo, hi) free ranges below ``high``
    high = 0             # end of the highest busy byte
    for start, end, want, key in sorted(requests, key=lambda r: r[0]):
        while live and live[0][0] < start:
            _, lo, size = heapq.heappop(live)
            high = _release(gaps, lo, lo + size, high)
        size = -(-max(want, 1) // ALIGN) * ALIGN
        offset = _take(gaps, size)
        if offset is None:
            offset, high = high, high + size
        heapq.heappush(live, (end, offset, size))
        offsets[key] = offset
        top = max(top, offset + size)
    return offsets, top


def _take(gaps: list, size: int):
    """The lowest offset of a gap of at least ``size`` bytes, now taken; None if none."""
    for k, (lo, hi) in enumerate(gaps):
        if hi - lo >= size:
            if hi - lo == size:
                del gaps[k]
            else:
                gaps[k] = (lo + size, hi)
            return lo
    return None


def _release(gaps: list, lo: int, hi: int, high: int) -> int:
    """Free ``[lo, hi)``, merged with the gaps beside it; returns the new ``high``."""
    k = bisect.bisect(gaps, (lo, hi))
    if k < len(gaps) and gaps[k][0] == hi:
        hi = gaps.pop(k)[1]
    if k and gaps[k - 1][1] == lo:
        k -= 1
        lo = gaps.pop(k)[0]
    if hi == high:
        return lo
    gaps.insert(k, (lo, hi))
    return high
