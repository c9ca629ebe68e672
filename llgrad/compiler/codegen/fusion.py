"""Fusion: decide which values get a buffer and which are computed inside a consumer's loop.

A value is *inlined* (never stored, recomputed where it is read) when that costs no
extra work: an elementwise or index-map node with exactly one reader that can take
it inline (so ``c = a*b + d`` is one loop, and a trailing ``reduce_sum`` swallows the
chain it sums), or a cheap index map (broadcast_in_dim, iota, scalar constants) with
any number of readers, or one cheap arithmetic operation (``RECOMPUTED``) over values
that have buffers, with any number of elementwise readers: repeating one add per reader
costs less than writing and re-reading an array.  A gather of a stored matrix's rows
whose every reader is a matrix product taking it on the left is read by those products
where the rows are stored (``codegen.gathered``).  Broadcasting never pulls a costly
producer into its loop, since that would recompute the producer once per broadcast copy.
A costly value with several readers is inlined too when all of them compute into one
loop at its own index: that loop computes it once per element and every reader uses the
register (``_share_within_loops``).

Everything else is *materialised* by one ``Kernel`` in topological order; a loop's
body is fused the same way, as a graph of its own (``Kernel.body``).  An
elementwise kernel right after a matrix product that reads it at its own index (a bias
and activation, an optimizer's update of a weight by its gradient) is the product's
*epilogue*: it runs on each band of rows as soon as the product has written them, while
they are still in cache (``codegen.epilogue``).  A matrix-vector product ``X @ w``
streamed from memory, elementwise kernels over its result, and a product streaming
the same ``X`` against one of those kernels' results (``X.T @ r``: the gradient of a linear
model's loss) run as one *stream*: block by block of X's rows, so the second product
reads each block from cache, not memory (``matvec._emit_stream``).  reshape
is a view of its operand's buffer, and so is a dynamic_slice of a stored operand (at
an address computed from its start when the code runs) and a static slice of one whose
elements are contiguous there (``contiguous_start``).  Graph outputs are written
straight into the caller's output arrays when possible, otherwise copied there at the
end.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from llgrad.compiler.codegen import gathered
from llgrad.compiler.codegen.lowering import row
from llgrad.compiler.codegen.matmul import canonical, reads_gathered, streamed
from llgrad.compiler.codegen.plan import (Branches, Elementwise, IndexMap, Leaf, Loop, Part,
                                          Slice, View)
from llgrad.compiler.codegen.plan import Kernel as KernelRow
from llgrad.ir.graph import Graph, Node
from llgrad.ir.primitives import PRIMITIVES
from llgrad.llvm.scalar import part_offset


@dataclass
class Kernel:
    """One loop nest: computes ``node`` into its buffer (or into graph output ``output``)."""
    node: Node
    output: Optional[int] = None
    copy: bool = False                       # only copies an existing value to an output
    reads: list = field(default_factory=list)   # materialised nodes it reads
    inlined: list = field(default_factory=list)  # nodes computed inside its loops
    body: Optional[FusionPlan] = None        # a loop's body's plan (a cond's: per branch)


@dataclass
class FusionPlan:
    graph: Graph
    kernels: list
    inlined: set            # ids of nodes with no buffer of their own
    views: dict             # id(reshape node) -> the node whose buffer it shares
    offsets: dict = field(default_factory=dict)  # id(view) -> byte offset in that buffer
    slices: dict = field(default_factory=dict)   # id(dynamic_slice) -> it, sliced by address
    epilogues: dict = field(default_factory=dict)  # id(product) -> Kernel run as its epilogue
    streams: dict = field(default_factory=dict)    # id(product) -> (elementwise Kernels, product)

    def root(self, node: Node) -> Node:
        """The node that owns ``node``'s bytes (itself unless it is a view)."""
        return self.views.get(id(node), node)

    def roots(self, node: Node) -> list:
        """The nodes whose buffers a read of ``node`` needs: the owner of its bytes or,
        for a slice, its operand's and its start's (read to compute its address)."""
        root = self.root(node)
        if id(root) not in self.slices:
            return [root]
        return [r for x in root.inputs for r in self.roots(x)]

    def followers(self, kernel: Kernel) -> int:
        """How many of the kernels after ``kernel`` run inside its call: its epilogue
        (1), the rest of its stream, or none (0)."""
        if kernel.copy:
            return 0
        key = id(kernel.node)
        if key in self.streams:
            return len(self.streams[key][0]) + 1
        return 1 if key in self.epilogues else 0

    def summary(self) -> str:
        lines = []
        epilogues = {id(k) for k in self.epilogues.values()}
        streamed = {id(k) for middle, last in self.streams.values() for k in (*middle, last)}
        for k in self.kernels:
            where = f" -> output {k.output}" if k.output is not None else ""
            fused = f" fused [{', '.join(n.op for n in k.inlined)}]" if k.inlined else ""
            runs = ("  (epilogue of the product above)" if id(k) in epilogues else
                    "  (streamed with the product above)" if id(k) in streamed else "")
            lines.append(f"{'copy' if k.copy else k.node.op} {k.node.type}{where}{fused}{runs}")
        return "\n".join(lines)


def contiguous_start(node: Node) -> Optional[int]:
    """The first element of a static slice that is one run of its operand's elements
    (leading axes cut to one index, one axis to a range of it, the rest whole), else
    None.  Such a slice of a stored operand is read in place, at an address, like a
    dynamic_slice: an RNN unrolled over ``xs[t]`` copies no step's input."""
    if node.op != "slice" or node.type.size == 0:
        return None
    a, shape = node.attrs, node.inputs[0].shape
    start, step, whole = 0, 1, True   # whole: every axis after this one is whole
    for axis in reversed(range(len(shape))):
        n = node.shape[axis]
        if (not whole and n != 1) or (n > 1 and a["strides"][axis] != 1):
            return None
        start += a["starts"][axis] * step
        step *= shape[axis]
        whole = whole and n == shape[axis]
    return start


def _accepts_inline(consumer: Node, operand: Node) -> bool:
    r = row(consumer)
    if isinstance(r, (View, Part)):
        return False
    if isinstance(r, Slice):     # the start is read when the slice's address is computed
        return operand is consumer.inputs[0]
    return r.inline_inputs if isinstance(r, KernelRow) else True


#: the most stored values one value computed inline may read, so a kernel reads at most
#: this many per operand of its own: a longer chain (the gradient of a weight that every
#: step of an unrolled RNN shares sums one product per step) is cut into several
#: kernels.  LLVM's time over one function of thousands of arguments grows faster than
#: the function (re-measure: ``python benchmarks/bench_compile.py --programs rnn``, its
#: llvm_opt column, with this at 10**9)
MAX_READS = 64

#: operations cheap enough to repeat in every reader's loop (no transcendental calls)
RECOMPUTED = frozenset(name for name, prim in PRIMITIVES.items() if prim.recompute)


def _cheap(r) -> bool:
    return isinstance(r, IndexMap) and r.cheap


def fuse(graph: Graph, *, enabled: bool = True, options=None) -> FusionPlan:
    """The plan of ``graph``'s kernels; ``options`` (``CodegenOptions``, which decide
    how each product runs) lets products read a gather's rows where they are stored."""
    uses: dict[int, list[Node]] = {}
    for n in graph.nodes:
        for i in n.inputs:
            uses.setdefault(id(i), []).append(n)
    outputs = {id(o) for o in graph.outputs}

    def inline(n: Node) -> bool:
        readers = uses.get(id(n), [])
        if n.op == "constant":   # scalars are literals, unless a reader needs an address
            return n.type.ndim == 0 and all(_accepts_inline(c, n) for c in readers)
        r = row(n)
        if not enabled or id(n) in outputs or not isinstance(r, (Elementwise, IndexMap)):
            return False
        if not readers or not all(_accepts_inline(c, n) for c in readers):
            return False
        if _cheap(r):
            return True
        return len(readers) == 1 and not _cheap(row(readers[0]))

    inlined: set = set()

    def recompute(n: Node) -> bool:
        readers = uses.get(id(n), [])
        if not enabled or n.op not in RECOMPUTED or id(n) in outputs or len(readers) < 2:
            return False
        if not all(_accepts_inline(c, n) and isinstance(row(c), (Elementwise, KernelRow))
                   for c in readers):
            return False
        # its operands are read from memory (or are cheap): the repeated work stays one op
        return all(id(i) not in inlined or _cheap(row(i)) for i in n.inputs)

    width: dict[int, int] = {}   # id(node) -> stored values read to compute it inline
    for n in graph.nodes:   # topological: a node's operands are decided before it
        width[id(n)] = sum(width[id(i)] if id(i) in inlined else 1 for i in n.inputs)
        if (inline(n) or recompute(n)) and width[id(n)] <= MAX_READS:
            inlined.add(id(n))
        elif (enabled and options is not None and id(n) not in outputs
              and gathered.by_products(n, uses.get(id(n), []), inlined)
              and all(reads_gathered(options, r) for r in uses[id(n)])):
            inlined.add(id(n))       # its readers gather its rows (``codegen.gathered``)
    if enabled:
        _share_within_loops(graph, uses, inlined, outputs, width)
    views: dict[int, Node] = {}
    offsets: dict[int, int] = {}
    slices: dict[int, Node] = {}
    kernels: list[Kernel] = []
    owners: dict[int, Kernel] = {}
    for n in graph.nodes:
        if id(n) in inlined or isinstance(row(n), Leaf):
            continue
        if ((isinstance(row(n), Slice) or contiguous_start(n) is not None)
                and id(n.inputs[0]) not in inlined):
            slices[id(n)] = n
            continue
        if isinstance(row(n), (View, Part)) and id(n.inputs[0]) not in inlined:
            source = n.inputs[0]
            views[id(n)] = views.get(id(source), source)
            offset = offsets.get(id(source), 0)
            if isinstance(row(n), Part):
                offset += part_offset(source.type, n.attrs["index"])
            if isinstance(row(n), Part) or id(source) in offsets:
                offsets[id(n)] = offset
            continue
        body = (fuse(n.attrs["body"], enabled=enabled, options=options)
                if isinstance(row(n), Loop) else None)
        if isinstance(row(n), Branches):
            body = tuple(fuse(g, enabled=enabled, options=options)
                         for g in n.attrs["branches"])
        kernel = Kernel(n, body=body)
        kernels.append(kernel)
        owners[id(n)] = kernel

    for j, o in enumerate(graph.outputs):
        owner = owners.get(id(views.get(id(o), o)))
        if owner is not None and owner.output is None and id(o) not in offsets:
            owner.output = j
        else:
            kernels.append(Kernel(o, output=j, copy=True))

    for k in kernels:
        _collect(k, inlined)
    streams = _streams(graph, kernels, views, offsets, options) if enabled and options else {}
    epilogues = _epilogues(graph, kernels, streams) if enabled else {}
    return FusionPlan(graph, kernels, inlined, views, offsets, slices, epilogues, streams)


def _epilogues(graph: Graph, kernels: list, streams: dict) -> dict:
    """{id(product): the Kernel right after it} where that kernel is an elementwise loop
    over the product's own shape that reads the product only at its own index, through
    elementwise nodes: each of its rows then needs only the same row of the product.
    A product of one matrix by another only, whose result's axes are the product's rows
    and columns (a vector times a 2x4 array is a 1x8 product with a 2x4 result)."""
    order = {id(n): k for k, n in enumerate(graph.nodes)}
    found = {}
    for product, consumer in zip(kernels, kernels[1:]):
        p, e = product.node, consumer.node
        if (p.op == "dot_general" and not product.copy and not consumer.copy
                and id(p) not in streams
                and isinstance(row(e), Elementwise) and e.shape == p.shape
                and p.type.size > 1 and _one_matrix(canonical(p), p.shape)
                and any(n is p for n in consumer.reads)
                and _read_in_place(consumer, {id(p)}, order)):
            found[id(p)] = consumer
    return found


def _streams(graph: Graph, kernels: list, views: dict, offsets: dict, options) -> dict:
    """{id(first product): (elementwise Kernels, second product Kernel)} for kernels in a
    row: ``z = X @ w`` streamed by rows (``matvec``), elementwise kernels over z's
    elements, each reading z and the ones before it only at its own index (``e = exp(z)``
    kept for the loss, then ``r``), and a product streaming the same X (one buffer from
    one offset, one row stride) against one of them (``X.T @ r``), both products
    reading X in place.  Each element of every result is computed as by the kernels one
    after another (``matvec._emit_stream``)."""
    order = {id(n): k for k, n in enumerate(graph.nodes)}
    root = lambda n: views.get(id(n), n)  # noqa: E731
    found = {}
    for i, first in enumerate(kernels):
        p = first.node
        rows = streamed(options, p) if p.op == "dot_general" and not first.copy else None
        if rows is None or rows.kind != "rows":
            continue
        end = i + 1
        while (end < len(kernels) and not kernels[end].copy
               and isinstance(row(kernels[end].node), Elementwise)):
            end += 1
        middle, last = kernels[i + 1:end], kernels[end] if end < len(kernels) else None
        if not middle or last is None or last.copy or last.node.op != "dot_general":
            continue
        q = last.node
        axpy = streamed(options, q)
        if axpy is None or axpy.kind != "axpy" or axpy.vec_stride != 1:
            continue
        if (rows.count, rows.length, rows.stride) != (axpy.length, axpy.count, axpy.stride):
            continue
        x1, x2 = p.inputs[0 if rows.mat_is_lhs else 1], q.inputs[0 if axpy.mat_is_lhs else 1]
        vector = root(q.inputs[1 if axpy.mat_is_lhs else 0])
        made = {id(p)}
        in_place = True
        for k in middle:      # each reads what the stream made before it at its own index
            e = k.node
            in_place = in_place and (e.type.size == rows.count and e.shape[0] == rows.count
                                     and _read_in_place(k, made, order))
            made.add(id(e))
        if (in_place and root(x1) is root(x2)
                and offsets.get(id(x1), 0) == offsets.get(id(x2), 0)
                and any(vector is k.node for k in middle)):
            found[id(p)] = (tuple(middle), last)
    return found


def _one_matrix(c, shape) -> bool:
    """One product, whose result has two axes: its rows and its columns."""
    return c.B == 1 and (c.M, c.N) == tuple(shape)


def _read_in_place(kernel: Kernel, targets: set, order: dict) -> bool:
    """Whether every node of ``kernel`` on a path from its root to a node whose id is in
    ``targets`` is elementwise: then each target is read at the index the kernel is
    computing, never at another (a transpose or a broadcast on the way would read other
    rows)."""
    inside = {id(n) for n in kernel.inlined}
    nodes = sorted([kernel.node, *kernel.inlined], key=lambda n: order[id(n)])
    leads = {}       # id(node) -> whether a path from it reaches a target
    for n in nodes:  # operands before their readers
        leads[id(n)] = any(id(x) in targets or (id(x) in inside and leads[id(x)])
                           for x in n.inputs)
    return all(isinstance(row(n), Elementwise) for n in nodes if leads[id(n)])


def _share_within_loops(graph: Graph, uses: dict, inlined: set, outputs: set,
                        width: dict) -> None:
    """Inline a costly elementwise value with several readers when every reader computes
    into one and the same loop at the same index (``sin(x)`` read by the forward and the
    backward formula of one gradient): code generation computes it once per element and
    hands the register to every reader (``KernelContext.compute`` remembers it), so the
    value costs neither a second evaluation nor an array written and read back.  Without
    this, each such value would be a loop of its own over a buffer of its own: the
    suite's elementwise gradient would run seven loops over 8 MB arrays instead of one
    (its loops: ``python -m llgrad bench --workloads elementwise --systems "llgrad
    native" --profile``).

    Consumers are decided before their operands (reverse topological order), so
    ``home`` holds, for every decided node, the materialised node whose loop computes it
    at its own index, or None when that is not one loop (several kernels, or a reader that
    reads it at another index: a broadcast, a transpose, a product).  A value that would
    read more than ``MAX_READS`` stored values keeps its own kernel here too."""
    home: dict[int, Optional[Node]] = {}

    def one_loop(n: Node) -> Optional[Node]:
        roots = {}
        for reader in uses.get(id(n), []):
            r = row(reader)
            # a reduction's loop, too, reads its operand at the index of its iteration
            same_index = isinstance(r, Elementwise) or (
                PRIMITIVES[reader.op].kind == "reduction" and id(reader) not in inlined)
            root = home.get(id(reader)) if same_index else None
            if root is None:
                return None
            roots[id(root)] = root
        return next(iter(roots.values())) if len(roots) == 1 else None

    for n in reversed(graph.nodes):
        if id(n) in inlined:
            home[id(n)] = one_loop(n) if isinstance(row(n), Elementwise) else None
            continue
        if (isinstance(row(n), Elementwise) and id(n) not in outputs and n.op != "constant"
                and width[id(n)] <= MAX_READS):
            root = one_loop(n)
            if root is not None:
                inlined.add(id(n))
                home[id(n)] = root
                continue
        home[id(n)] = n


def _collect(kernel: Kernel, inlined: set) -> None:
    """Fill in what a kernel reads from memory and what it computes inline."""
    seen = set()
    stack = [kernel.node] if kernel.copy else list(kernel.node.inputs)
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        if id(n) in inlined:
            if n.op != "constant":
                kernel.inlined.append(n)
            stack.extend(n.inputs)
        else:
            kernel.reads.append(n)
