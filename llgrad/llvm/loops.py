"""Loop-nest helpers: canonical counted loops that LLVM's vectoriser recognises.

Every loop has the shape ``for (i = 0; i < n; ++i)`` with an ``i64`` induction
variable, a single latch and a single exit, so O3 can rotate, unroll and vectorise it.
"""
from __future__ import annotations

from contextlib import contextmanager

from llvmlite import ir

from llgrad.llvm.scalar import I64, i64


@contextmanager
def counted_loop(b: ir.IRBuilder, count, name: str = "i"):
    """``with counted_loop(b, n) as i:`` emits the body once per ``i`` in ``range(n)``."""
    with carried_loop(b, count, [], name) as (index, _):
        yield index


@contextmanager
def carried_loop(b: ir.IRBuilder, count, initial, name: str = "i"):
    """A counted loop whose body updates values in registers (phis), not memory:
    ``with carried_loop(b, n, [x0]) as (i, values):`` gives the current values in the
    list ``values``; the body puts the next ones there.  After the loop the list holds
    the final values (for n = 0, the initial ones)."""
    count = i64(count) if isinstance(count, int) else count
    pre = b.block
    header, body, exit_, index = conditional_loop(b, i64(0), name)
    phis = [b.phi(v.type) for v in initial]
    for phi, value in zip(phis, initial):
        phi.add_incoming(value, pre)
    b.cbranch(b.icmp_signed("<", index, count), body, exit_)
    b.position_at_end(body)
    values = list(phis)
    yield index, values
    nxt = b.add(index, i64(1), flags=["nuw", "nsw"])
    index.add_incoming(nxt, b.block)
    for phi, value in zip(phis, values):
        phi.add_incoming(value, b.block)
    b.branch(header)
    b.position_at_end(exit_)
    values[:] = phis


@contextmanager
def loop_nest(b: ir.IRBuilder, shape, name: str = "d"):
    """Nested counted loops over ``shape`` in row-major order; yields the index list.

    Rank 0 runs the body once; a zero-size dimension runs it never.
    """
    with _nest(b, tuple(shape), [], name) as axes:
        yield axes


@contextmanager
def _nest(b, shape, outer, name):
    if not shape:
        yield outer
        return
    with counted_loop(b, shape[0], f"{name}{len(outer)}") as i:
        with _nest(b, shape[1:], outer + [i], name) as axes:
            yield axes


def conditional_loop(b: ir.IRBuilder, start, name: str):
    """The blocks of a loop that tests before each step, ``name.head``, ``name.body``
    and ``name.done``, with the builder in the head, where an ``i64`` phi (the counter,
    ``start`` on entry) is: the caller emits the test (a branch to ``body`` or
    ``done``), the step (adding the counter's next value from the step's last block and
    branching back to ``head``), and goes on in ``done``."""
    pre = b.block
    head = b.append_basic_block(f"{name}.head")
    body = b.append_basic_block(f"{name}.body")
    done = b.append_basic_block(f"{name}.done")
    b.branch(head)
    b.position_at_end(head)
    counter = b.phi(I64, name=name)
    counter.add_incoming(start, pre)
    return head, body, done, counter

