"""The kinds of row in the lowering table: what the planner (fusion, the memory plan)
needs to know of a primitive's code before any of it is emitted.

A row says how a primitive becomes LLVM IR, in one of these forms:

- ``Elementwise(scalar)``: ``scalar(ctx, args, dtype, attrs)`` computes one element
  from the operands' elements (``dtype`` is the operands' dtype; ``ctx`` is the
  ``KernelContext``, with the builder ``ctx.b`` and the fast-math flags ``ctx.flags``).
  Fusion inlines chains of these into one loop.
- ``IndexMap(read)``: the value at an index is an input's value at another index
  (broadcast_in_dim, transpose, slice) or a function of the index (iota), so it
  is read through, never stored, unless fusion decides otherwise.
- ``Kernel(emit)``: a structural op that writes its whole output with its own loop
  nest: ``emit(ctx, node, out)``.
- ``Loop``: a kernel whose body is a graph of its own, planned (fused, given memory)
  as a whole graph is.
- ``Branches``: a kernel that runs one of several graphs (cond), each planned so.
- ``View``: same bytes, new shape (reshape).
- ``Slice``: a block of whole rows chosen by a start read at run time
  (dynamic_slice): the operand's bytes from that row on, or a copy when the operand
  itself is computed inline.
- ``Leaf``: values that exist before the code runs (parameter, constant).
- ``Part``: one result of a multi-result node (tuple_get of a loop).

This module imports no emitter, so the planner can read the kinds without the
code that emits them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Elementwise:
    scalar: Callable          # scalar(ctx, args, dtype, attrs) -> value


@dataclass(frozen=True)
class IndexMap:
    read: Callable            # read(ctx, node, index) -> value
    needs_axes: Callable      # needs_axes(node) -> bool: False if the index is ignored
    cheap: bool = False       # cheap enough to recompute at every use


@dataclass(frozen=True)
class Kernel:
    emit: Callable                                   # emit(ctx, node, out_ptr)
    scratch: Callable = lambda node: ()              # scratch buffers (bytes) it needs
    inline_inputs: bool = True                       # may its inputs be computed inline?


@dataclass(frozen=True)
class Loop(Kernel):
    """A counted loop whose body is a graph: the planner fuses the body and plans its
    memory like a whole graph's, and ``scratch(node, body_arena_bytes)`` says what
    the loop needs besides the body's own arena."""


@dataclass(frozen=True)
class Branches(Kernel):
    """A kernel that runs one of its node's ``branches`` graphs: the planner fuses and
    plans each as a whole graph, and ``scratch(node, arena_bytes)`` gets the largest
    branch arena, which the branches share (only one of them runs)."""


@dataclass(frozen=True)
class View:
    read: Callable            # used only when the operand has no buffer to share
    needs_axes: Callable


@dataclass(frozen=True)
class Slice(Kernel):
    """Rows ``[start, start + size)`` of a row-major operand are contiguous bytes, so
    a stored operand is sliced by address (a minibatch of a data set costs no copy: the
    product reading it streams the rows from memory itself).  ``emit`` copies the rows
    instead when fusion computes the operand inline (only the slice's rows of it are
    then ever computed).  The start is always stored: the slice's address is computed
    from it before the readers run."""


@dataclass(frozen=True)
class Leaf:
    pass


@dataclass(frozen=True)
class Part:
    """One result of a multi-result node: a view at a byte offset into its buffer."""
