"""A SHA-256 of everything about a Graph that the code compiled from it depends on.

The on-disk object cache is keyed by it, so a second process can find its object
code before generating any: two graphs with equal fingerprints must compile to the
same machine code.  The serialisation is canonical and faithful: nodes in
topological order, each as its primitive, its inputs by position, its type and its
attributes in sorted order, with arrays by dtype, shape and bytes, floats by their
exact hex form (so -0.0, nan and inf stay apart), loop bodies recursively, then the
graph's inputs and outputs by position and its name (the entry point's symbol).
Source locations and output names are left out: they never reach the code.
An attribute of a kind this module does not know is an error, never hashed by
``repr`` (which could hold a memory address, or hide a difference).
"""
from __future__ import annotations

import hashlib

import numpy as np

from llgrad.ir.graph import Graph
from llgrad.ir.types import TensorType


def fingerprint(graph: Graph) -> str:
    h = hashlib.sha256()
    _graph(graph, h)
    return h.hexdigest()


def _graph(graph: Graph, h) -> None:
    position = {}
    h.update(b"graph %s %d\n" % (_text(graph.name), len(graph.nodes)))
    for k, node in enumerate(graph.nodes):
        position[id(node)] = k
        inputs = ",".join(str(position[id(i)]) for i in node.inputs)
        h.update(b"%d=%s(%s):" % (k, node.op.encode(), inputs.encode()))
        node_value(node, h)
        h.update(b"\n")
    for role, nodes in (("in", graph.inputs), ("out", graph.outputs)):
        h.update(b"%s %s\n" % (role.encode(), ",".join(str(position[id(n)])
                                                       for n in nodes).encode()))


def node_value(node, h) -> None:
    """What one node computes, its inputs aside: its type and its attributes (sorted)."""
    _value(node.type, h)
    for name in sorted(node.attrs):
        h.update(b" %s=" % name.encode())
        _value(node.attrs[name], h)


def _text(s: str) -> bytes:
    return repr(str(s)).encode()


def _value(v, h) -> None:
    """Each kind is tagged, so ``True``, ``1``, ``1.0`` and ``"1"`` differ."""
    if isinstance(v, bool) or v is None:
        h.update(b"b%r" % v)
    elif isinstance(v, int):
        h.update(b"i%d" % v)
    elif isinstance(v, float):
        h.update(b"f" + v.hex().encode())
    elif isinstance(v, str):
        h.update(b"s" + _text(v))
    elif isinstance(v, TensorType):
        h.update(b"t%s%r" % (v.dtype.encode(), v.shape))
    elif isinstance(v, (np.ndarray, np.generic)):
        a = np.ascontiguousarray(v)
        h.update(b"a%s%r:%d:" % (a.dtype.str.encode(), a.shape, a.nbytes))
        h.update(a.tobytes())
    elif isinstance(v, (tuple, list)):
        h.update(b"(%d" % len(v))
        for item in v:
            h.update(b",")
            _value(item, h)
        h.update(b")")
    elif isinstance(v, Graph):
        h.update(b"{")
        _graph(v, h)
        h.update(b"}")
    else:
        raise TypeError(f"llgrad cannot fingerprint the attribute value {type(v).__name__} "
                        f"(an llgrad bug: teach ir/fingerprint.py this kind)")
