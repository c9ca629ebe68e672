"""Reference evaluation of a Graph with numpy.

This is the oracle every compiled result is compared with, and the "interpreted"
baseline of the benchmarks.  Each node runs its primitive's numpy meaning.
"""
from __future__ import annotations

import numpy as np

from llgrad.ir.primitives import PRIMITIVES
from llgrad.ir.primitives_cond import clamp_index
from llgrad.ir.primitives_checkpoint import run_checkpoint
from llgrad.ir.primitives_while import run_tape_row, run_while
from llgrad.ir.types import check_fits_int64


def _run_loop(node, *values):
    """Run the body ``trip_count`` times (or the runtime count, its last input, clamped
    to [0, trip_count]; the stacked rows from it on stay zero), threading the carried
    values."""
    n_carried, trip = node.attrs["n_carried"], node.attrs["trip_count"]
    body = node.attrs["body"]
    if node.attrs.get("runtime_count"):
        *values, count = values
        trip = int(min(max(int(count), 0), trip))
    carried, invariants = list(values[:n_carried]), list(values[n_carried:])
    per_step = [np.zeros(t.shape, t.np_dtype) for t in node.type[n_carried:]]
    for i in range(trip):
        out = interpret(body, np.int64(i), *carried, *invariants)
        carried = out[:n_carried]
        for stacked, value in zip(per_step, out[n_carried:]):
            stacked[i] = value
    return tuple(carried) + tuple(per_step)


def _run_cond(node, index, *operands):
    """Run only the branch the (clamped) index chooses."""
    branches = node.attrs["branches"]
    return tuple(interpret(branches[clamp_index(index, len(branches))], *operands))


# Primitives whose evaluation needs the interpreter itself (a body graph to run).
STRUCTURED = {"loop": _run_loop, "cond": _run_cond,
              "while": lambda node, *v: run_while(interpret, node, *v),
              "tape_row": lambda node, *v: run_tape_row(interpret, node, *v),
              "checkpoint": lambda node, *v: run_checkpoint(interpret, node, *v)}


def interpret(graph, *args) -> list[np.ndarray]:
    if len(args) != len(graph.inputs):
        raise TypeError(f"{graph.name} takes {len(graph.inputs)} arguments, got {len(args)}")
    env = {}
    for p, a in zip(graph.inputs, args):
        a = np.asarray(a)
        check_fits_int64(a, f"{graph.name}(): argument {p.attrs.get('name')!r}")
        env[id(p)] = a.astype(p.type.np_dtype, copy=False).reshape(p.shape)
    with np.errstate(all="ignore"):
        for node in graph.nodes:
            if id(node) in env:
                continue
            vals = [env[id(i)] for i in node.inputs]
            if node.op in STRUCTURED:
                out = STRUCTURED[node.op](node, *vals)
            elif isinstance(node.type, tuple) or node.op == "tuple_get":
                out = PRIMITIVES[node.op].evaluate(*vals, **node.attrs)
            else:
                out = PRIMITIVES[node.op].evaluate(*vals, **node.attrs)
                out = np.asarray(out, dtype=node.type.np_dtype).reshape(node.shape)
            env[id(node)] = out
    return [env[id(o)] for o in graph.outputs]
