"""Tiles or BLAS for a product, timed the first time this machine compiles it.

Which of the two multiplies a product faster turns on its shape, its layout, the
thread counts and the core (at two threads on one machine, 32x256x1024 ran 2x faster
as tiles and 256x3200x1024 2.5x faster with OpenBLAS), and no model of them all has
held across machines.  So before a module is generated, each of its products whose
way is open (``matmul.timed``) and not yet in this machine's table is compiled both
ways alone and timed, and the result is stored (``runtime.calibration``): once per
machine, product and thread count, 0.3-0.6 s a product.  The module's options
then carry the rows its products are decided by, so its cache key names the choices.
``LLGRAD_CALIBRATION=0`` turns this off (the rules in ``matmul`` decide).  A program
with collectives (an MPI job's) times nothing: its products follow the rows already
stored, else the grid or the rules, the same on every rank.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from llgrad.compiler.codegen import matmul
from llgrad.ir import Builder, Graph, TensorType
from llgrad.ir.graph import every_node
from llgrad.runtime import blas, calibration, mpi

#: rounds each way is timed in; the fastest counts: another process on the machine
#: only ever adds time (on a loaded machine a round's time is often several times the
#: product's), so the fastest round is the product's own time
ROUNDS = 7
#: seconds one round takes at least (a few calls of a small product)
ROUND_S = 2e-3
#: OpenBLAS's threads spin on the cores for a while after a threaded call (~0.15 s
#: here: their CPU time in /proc/self/task, 2026-12-07) and slow the pool's tiles
#: meanwhile (a 1024x784x128 product on two threads timed 1.35 ms right after BLAS
#: calls, 0.71 ms away from them); so where BLAS runs a product on its own threads
#: (``matmul.blas_keeps_threads_spinning``) each way is timed in a block of its own,
#: the tiles first, and this long is left after BLAS's block for the spinning to end.
#: Elsewhere the two ways' rounds alternate: a slow spell of this shared machine then
#: slows both alike, where in blocks it had once timed 64x784x128 on two threads at
#: 128 us as tiles (65 us in the grid a minute before) and chosen BLAS (105 us).
BLAS_SPIN_S = 0.25


def with_timed_products(graph: Graph, options, compile_graph):
    """``options`` carrying this machine's grid and a timing of each of ``graph``'s
    products whose way is open, those not timed before timed now with
    ``compile_graph``."""
    if not options.blas or options.blas_min_flops is not None or not calibration.enabled():
        return options
    table, threads, blas_threads = calibration.load(), options.threads, blas.threads() or 0
    products = {(node.dtype, matmul.signature(node)): node for node in every_node(graph)
                if node.op == "dot_general" and matmul.timed(node, options)}
    known = {(t.dtype, t.signature): t for t in table
             if t.signature and t.threads == threads and t.blas_threads == blas_threads}
    # every rank of an MPI job compiles the same program at once: timing there would
    # measure the ranks against each other, and could choose differently on each
    timing = not mpi.uses_collectives(graph)
    new = [time_product(node.inputs[0].type, node.inputs[1].type, node.attrs["dims"],
                        threads, blas_threads, compile_graph,
                        matmul.blas_keeps_threads_spinning(options, node))
           for key, node in products.items() if key not in known and timing]
    if new:
        try:
            calibration.add(new)
        except OSError:     # a cache directory that cannot be written: they decide this
            pass            # module all the same, and are timed again next process
    rows = [t for t in table if not t.signature]
    rows += [known[key] for key in products if key in known] + new
    return dataclasses.replace(options, product_timings=tuple(rows))


def time_product(lhs: TensorType, rhs: TensorType, dims, threads: int, blas_threads: int,
                 compile_graph, blas_spins: bool = True) -> calibration.Timing:
    """One dot_general of operands ``lhs`` and ``rhs``, as tiles and as BLAS
    (``blas_spins``: on OpenBLAS's own threads, see ``BLAS_SPIN_S``)."""
    b = Builder()
    x = b.parameter(index=0, type=lhs, name="a")
    y = b.parameter(index=1, type=rhs, name="b")
    product = b.dot_general(x, y, dims=dims)
    graph = Graph([x, y], [product])
    c = matmul.canonical(product)
    tiles_s, blas_s = fastest(compile_graph(graph, blas=False, threads=threads),
                              compile_graph(graph, blas_min_flops=1, threads=threads),
                              _arguments(lhs, rhs), blas_threads if blas_spins else 0)
    return calibration.Timing(lhs.dtype, threads, c.B * c.M, c.K, c.N, tiles_s, blas_s,
                              matmul.signature(product), blas_threads)


def _arguments(*types):
    rng = np.random.default_rng(0)
    return tuple(rng.standard_normal(t.shape).astype(t.np_dtype) for t in types)


def fastest(tiles, gemm, args, blas_threads: int) -> tuple[float, float]:
    """Seconds a call of the tiles' and of BLAS's compiled product take: each the
    fastest of ``ROUNDS`` rounds of at least ``ROUND_S``.  ``blas_threads`` > 1 (BLAS
    runs on threads of its own): the tiles' rounds first, then BLAS's, and time for
    its threads to stop spinning after; else the rounds alternate (``BLAS_SPIN_S``)."""
    calls = [_calls_per_round(fn, args) for fn in (tiles, gemm)]
    if blas_threads > 1:
        tiles_s = min(_per_call(tiles, args, calls[0]) for _ in range(ROUNDS))
        blas_s = min(_per_call(gemm, args, calls[1]) for _ in range(ROUNDS))
        time.sleep(BLAS_SPIN_S)
        return tiles_s, blas_s
    rounds = [(_per_call(tiles, args, calls[0]), _per_call(gemm, args, calls[1]))
              for _ in range(ROUNDS)]
    return min(r[0] for r in rounds), min(r[1] for r in rounds)


def _calls_per_round(fn, args) -> int:
    return max(1, int(ROUND_S / max(_per_call(fn, args, 1), 1e-7)))


def _per_call(fn, args, calls) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn(*args)
    return (time.perf_counter() - start) / calls
