"""A Graph as numpy source: one line per node, runnable, steppable in pdb.

    def chain_vjp(x):
        v1 = np.multiply(2.0, x)                     # f64[]  chain.py:3
        ...
        return v3, v6

Each line runs its primitive's numpy meaning, the same ``evaluate`` of
``ir/primitives.py`` that the interpreter runs: a numpy function is called by its
numpy name, anything else through ``ops.<primitive>`` (this module's ``ops``).
Variables are named after the printer's SSA names (``%5`` is ``v5``), arguments
after the function's parameters, and every line ends with its type and source line.
"""
from __future__ import annotations

import keyword
import re
from types import SimpleNamespace

import numpy as np

from llgrad.ir.errors import UnsupportedError
from llgrad.ir.graph import parameter_identifiers
from llgrad.ir.primitives import PRIMITIVES
from llgrad.ir.printer import format_graph
from llgrad.ir.walk import scalar_constant

# The numpy meaning of every primitive, for lines that cannot name a numpy function.
ops = SimpleNamespace(**{name: prim.evaluate for name, prim in PRIMITIVES.items()})

_SMALL = 16  # array constants up to this many elements are written out as lists


def _numpy_name(fn):
    """``np.<name>`` when ``fn`` is numpy's own public function of that name."""
    name = getattr(fn, "__name__", None)
    return f"np.{name}" if name and getattr(np, name, None) is fn else None


def _scalar(value, dtype: str) -> str:
    if dtype == "float32":
        return f"np.float32({value!r})"
    if isinstance(value, float) and not np.isfinite(value):
        return f"np.float64({str(value)!r})"
    return repr(value)


def _array(value: np.ndarray) -> str:
    """An exact literal of an array constant (small ones readable, large ones as the
    hex of their bytes)."""
    dtype = f"np.{value.dtype.name}"
    if value.size <= _SMALL and np.all(np.isfinite(value)):
        return f"np.array({value.tolist()!r}, dtype={dtype})"
    return (f"np.frombuffer(bytes.fromhex({value.tobytes().hex()!r}), dtype={dtype})"
            f".reshape({value.shape!r})")


def to_python(graph) -> str:
    """Source of a module defining ``graph`` as a Python function of its inputs."""
    names: dict = {}
    format_graph(graph, names=names)
    var = {id(p): name for p, name in zip(graph.inputs, parameter_identifiers(graph.inputs))}

    def expr(node) -> str:
        if id(node) in var:
            return var[id(node)]
        value = scalar_constant(node)
        if value is None:
            raise UnsupportedError(f"as_python: {node.op} is not written before its use")
        if node.type.ndim == 0:
            return _scalar(value, node.dtype)
        return f"np.full({node.shape!r}, {_scalar(value, node.dtype)}, dtype=np.{node.dtype})"

    body = []
    for node in graph.nodes:
        if node.op == "parameter" or scalar_constant(node) is not None:
            continue
        if "body" in node.attrs or "branches" in node.attrs:
            raise UnsupportedError(f"as_python cannot write {graph.name}(): its {node.op} "
                                   f"node has a body graph (a compiled loop) or branch "
                                   f"graphs (a cond)")
        var[id(node)] = names[id(node)].replace("%", "v")
        if node.op == "constant":
            call = _array(node.attrs["value"])
        else:
            fn = PRIMITIVES[node.op].evaluate
            args = [expr(i) for i in node.inputs]
            # a custom rule's graphs matter only to differentiation: its value is
            # its first operand
            args += [f"{k}={v!r}" for k, v in node.attrs.items() if not hasattr(v, "nodes")]
            call = f"{_numpy_name(fn) or 'ops.' + node.op}({', '.join(args)})"
        line = f"    {var[id(node)]} = {call}"
        note = f"{node.type}  {node.source or ''}".rstrip()
        body.append(f"{line:<60}  # {note}" if len(line) < 200 else f"{line}  # {note}")
    params = ", ".join(var[id(p)] for p in graph.inputs)
    function_name = re.sub(r"\W+", "_", graph.name).strip("_") or "f"
    function_name += "_" if keyword.iskeyword(function_name) else ""
    arg_notes = [f"    # {var[id(p)]}: {p.attrs['name']} {p.type}" for p in graph.inputs]
    outputs = ", ".join(expr(o) for o in graph.outputs)
    return "\n".join([
        f'"""{graph.name} as numpy: one line per node of the llgrad graph."""',
        "import numpy as np",
        "",
        "from llgrad.ir.pysource import ops",
        "",
        "",
        f"def {function_name}({params}):",
        *arg_notes,
        *body,
        f"    return {outputs}{',' if len(graph.outputs) == 1 else ''}",
        ""])
