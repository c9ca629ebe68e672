"""``cond``: run one of several branch Graphs, chosen by an index known only at run time.

Inputs: the index (``i64[]``, clamped to ``[0, len(branches) - 1]`` as
``jax.lax.switch`` does), then the operands.  Every branch Graph takes exactly the
operands' types and all branches return the same types; the node's type is the tuple
of them, read with ``tuple_get``.  Only the chosen branch runs (natively an LLVM
conditional branch around each branch's lowered graph, ``codegen/branches.py``), so a
branch that would divide by zero or index out of range is harmless when not taken.

The derivative rules are conds again (``compiler/autodiff/branches.py`` attaches
them to this record, since a record may not import the compiler): each branch's vjp
or jvp, under the same index.
"""
from __future__ import annotations

from llgrad.ir.errors import DTypeError, ShapeError
from llgrad.ir.primitives import flops, register
from llgrad.ir.types import TensorType

INDEX = TensorType((), "int64")


def clamp_index(index: int, n_branches: int) -> int:
    """The branch an index selects: out-of-range indices take the nearest end."""
    return min(max(int(index), 0), n_branches - 1)


def _cond_type(types, branches):
    index, operands = types[0], list(types[1:])
    if index != INDEX:
        raise DTypeError(f"cond: the branch index must be {INDEX}, got {index}")
    first = branches[0]
    for branch in branches:
        takes = [p.type for p in branch.inputs]
        if takes != operands:
            raise ShapeError(f"cond: branch {branch.name}() takes {takes}, the cond passes "
                             f"{operands}")
        if len(branch.outputs) != len(first.outputs):
            raise ShapeError(f"cond: branch {first.name}() returns {len(first.outputs)} "
                             f"values, branch {branch.name}() {len(branch.outputs)}")
        for k, (a, b) in enumerate(zip(first.outputs, branch.outputs)):
            if a.type != b.type:
                leaf = first.output_names[k] if first.output_names else f"out[{k}]"
                raise (DTypeError if a.shape == b.shape else ShapeError)(
                    f"cond: branches return different types for {leaf}: {first.name}() "
                    f"gives {a.type}, {branch.name}() gives {b.type}")
    return tuple(o.type for o in first.outputs)


def _cond_flops(node) -> int:
    """The dearest branch's arithmetic: at most this much runs."""
    return max(sum(flops(n) for n in g.nodes if n.op != "parameter")
               for g in node.attrs["branches"])


def _evaluated_by_the_interpreter(*args, **attrs):
    raise RuntimeError("cond is evaluated by the interpreter, which runs the chosen branch")


register("cond", lambda types, branches: _cond_type(types, branches),
         _evaluated_by_the_interpreter, "structural", flops=_cond_flops)
