"""The IR passes in the order they run, each followed by the verifier.

CSE runs first: simplify rebuilds through a hash-consing Builder too, so it would merge
any duplicates silently; run first, CSE is the pass that finds (and counts) them.
"""
from __future__ import annotations

import os
import sys
import time
from typing import NamedTuple

from llgrad.compiler.passes.cse import cse
from llgrad.compiler.passes.dce import dce
from llgrad.compiler.passes.loop_merge import merge_loops
from llgrad.compiler.passes.pad_sums import join_pad_sums
from llgrad.compiler.passes.reversed_rows import unreversed_contractions
from llgrad.compiler.passes.simplify import simplify
from llgrad.ir.graph import Graph
from llgrad.ir.verify import verify

PASSES = (("cse", cse), ("merge_loops", merge_loops), ("pad_sums", join_pad_sums),
          ("reversed_rows", unreversed_contractions), ("simplify", simplify), ("dce", dce))


class Pass(NamedTuple):
    """One IR pass as it ran: its name, the graph it returned, its time."""
    name: str
    graph: Graph
    seconds: float


def optimize(graph: Graph, record: list | None = None) -> Graph:
    """The IR passes, in order, each followed by the verifier (a broken pass is an
    llgrad bug and must say so here, not as an LLVM error later).  ``record`` gets a
    ``Pass`` per pass, for ``Trace.passes``.

    ``LLGRAD_DEBUG=1`` prints what each pass did to stderr; ``LLGRAD_DEBUG=2`` also
    prints every intermediate graph."""
    level = int(os.environ.get("LLGRAD_DEBUG", "0") or 0)
    for name, run in PASSES:
        before = len(graph.nodes)
        t0 = time.perf_counter()
        graph = run(graph)
        verify(graph)
        if record is not None:
            record.append(Pass(name, graph, time.perf_counter() - t0))
        if level:
            print(f"llgrad: {name:<8} {graph.name}: {before} -> {len(graph.nodes)} nodes",
                  file=sys.stderr)
            if level > 1:
                print(graph, file=sys.stderr)
    return graph
