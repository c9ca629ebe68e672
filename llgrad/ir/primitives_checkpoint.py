"""``checkpoint``: a region of a graph called as one unit, whose forward values reverse
mode recomputes instead of keeping (``llgrad.checkpoint``).

Inputs: the region's arguments; ``body`` is the region as a Graph of those
arguments; the results are its outputs.  The node is what keeps the region apart:
reverse mode differentiates ``body`` on its own and emits a second ``checkpoint``
whose body is the region's joint graph (its forward nodes, then its adjoints), so the
backward pass runs the region's forward again, in a body of its own, where the
Builder cannot merge those nodes with the originals and the memory plan gives them
a scratch arena that lives for that one call.  What the backward pass keeps of the
region is only its arguments.  ``recomputes``, on such a backward node, is the body
whose forward it runs again (for ``Trace.stats``: the recomputation paid); None on
the forward one.
"""
from __future__ import annotations

from llgrad.ir.errors import ShapeError
from llgrad.ir.primitives_while import register_structured


def checkpoint_type(types, body, recomputes):
    body_in = [p.type for p in body.inputs]
    if body_in != list(types):
        raise ShapeError(f"checkpoint: body takes {body_in}, the node passes {list(types)}")
    return tuple(o.type for o in body.outputs)


def run_checkpoint(interpret, node, *values):
    """The interpreter's meaning: the body, run once."""
    return tuple(interpret(node.attrs["body"], *values))


register_structured("checkpoint", checkpoint_type)
