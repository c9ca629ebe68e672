"""Nodes, graphs, and the hash-consing Builder that is the only way to make nodes.

Because the Builder returns the existing node when asked for an identical one,
common subexpressions are shared by construction: the derivative rule of tanh asks
for ``tanh(x)`` and gets the forward node back.  A CSE pass exists only to merge
graphs that were built apart.
"""
from __future__ import annotations

import itertools
import keyword
import re
from types import MappingProxyType
from typing import Iterable, Iterator, Sequence

import numpy as np

from llgrad.ir.primitives import PRIMITIVES
from llgrad.ir.printer import format_graph
from llgrad.ir.types import TensorType
from llgrad.ir.walk import topological_order

_ids = itertools.count()


def _hashable(value):
    """A hash key for an attribute value: arrays by content, graphs by identity."""
    if isinstance(value, np.ndarray):
        return ("ndarray", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, (tuple, list)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, Graph):
        return ("graph", id(value))
    if isinstance(value, float) and value != value:
        return ("nan",)
    return value


class Node:
    """One SSA value: a primitive applied to input nodes, with static attributes.

    ``type`` is a TensorType, or a tuple of them for multi-result primitives
    (``loop``), whose results are read with ``tuple_get``.
    """

    __slots__ = ("op", "inputs", "attrs", "type", "source", "id", "__weakref__")

    def __init__(self, op: str, inputs: tuple, attrs: dict, type_, source=None):
        self.op = op
        self.inputs = inputs
        self.attrs = MappingProxyType(dict(attrs))
        self.type = type_
        self.source = source
        self.id = next(_ids)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.type.shape

    @property
    def dtype(self) -> str:
        return self.type.dtype

    def __repr__(self) -> str:
        return f"<Node {self.op} {self.type} #{self.id}>"


class Graph:
    """A function: parameter nodes in, output nodes out; nodes in topological order.

    The node list is everything reachable from the outputs (plus the parameters),
    so dead code never appears in a Graph.  ``pruned`` counts the nodes that the
    rewrite which built this graph made and no output reaches (what DCE removed, for
    ``Trace.stats``).  ``adjoints`` is set on joint graphs made by reverse mode.
    """

    def __init__(self, inputs: Sequence[Node], outputs: Sequence[Node], name: str = "f",
                 output_names: Sequence[str] | None = None,
                 adjoints: AdjointTable | None = None):
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self.name = name
        self.output_names = tuple(output_names) if output_names else None
        self.adjoints = adjoints
        self.nodes = topological_order(self.outputs, self.inputs)
        self.pruned = 0

    def __len__(self) -> int:
        return len(self.nodes)

    def count(self, op: str) -> int:
        return sum(1 for n in self.nodes if n.op == op)

    def __str__(self) -> str:
        return format_graph(self)

    __repr__ = __str__

    def _repr_svg_(self):
        """The drawing a notebook shows (``llgrad.ir.svg``); None, so the text shows,
        when the graph is too large to draw."""
        from llgrad.ir.svg import picture
        return picture(self)


class AdjointTable:
    """What reverse mode knows of the joint graph it built, for printing: its first
    ``n_forward`` outputs are the function's values (the nodes they reach are the
    forward pass), and ``of(node)`` lists the forward values whose adjoint ``node`` is
    (several when an ``add`` hands one adjoint to both operands)."""

    def __init__(self, n_forward: int, pairs: Iterable[tuple[Node, Node]]):
        self.n_forward = n_forward
        self._of: dict[int, list[Node]] = {}
        self._nodes = {}  # keeps the keyed nodes alive, so their ids stay unique
        for forward, adjoint in pairs:
            self._of.setdefault(id(adjoint), []).append(forward)
            self._nodes[id(adjoint)] = adjoint

    def of(self, node: Node) -> list[Node]:
        return self._of.get(id(node), [])




def inner_graphs(node: Node) -> list[Graph]:
    """The graphs a node carries as attributes: a loop's body, a cond's branches."""
    found = []
    for value in node.attrs.values():
        if isinstance(value, Graph):
            found.append(value)
        elif isinstance(value, tuple):
            found += [g for g in value if isinstance(g, Graph)]
    return found


def every_node(graph: Graph) -> Iterator[Node]:
    """The nodes of ``graph`` and of every graph inside it, each graph's once."""
    graphs, seen = [graph], set()
    while graphs:
        inner = graphs.pop()
        if id(inner) in seen:
            continue
        seen.add(id(inner))
        for node in inner.nodes:
            yield node
            graphs += inner_graphs(node)


def parameter_identifiers(params: Iterable[Node]) -> list[str]:
    """Readable, distinct Python identifiers for parameters: ``params['w1']`` is
    ``params_w1`` (sympy symbols and generated numpy source use them)."""
    return identifiers([str(p.attrs["name"]) for p in params], keyword.kwlist)


def identifiers(texts: Iterable[str], reserved: Iterable[str] = ()) -> list[str]:
    """Readable, distinct identifiers for ``texts`` (of Python, or C with its keywords
    ``reserved``): runs of other characters become ``_``, a leading digit gets ``arg_``,
    a reserved word a trailing ``_``, and a repeat ``_1``, ``_2``..."""
    reserved, out, taken = frozenset(reserved), [], set()
    for text in texts:
        base = re.sub(r"\W+", "_", text).strip("_") or "arg"
        if base[0].isdigit():
            base = f"arg_{base}"
        if base in reserved:
            base = f"{base}_"
        name, k = base, 1
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        out.append(name)
    return out






class Builder:
    """Creates nodes, checking types through the primitive table and hash-consing.

    ``b.mul(x, y)`` is ``b.emit("mul", x, y)`` for every primitive name, so that
    derivative rules read like the maths they implement.
    """

    def __init__(self, seed: Graph | None = None):
        self._memo: dict = {}
        self.created = 0  # nodes this builder made (not found by hash-consing)
        self.source: str | None = None  # user file:line stamped on new nodes
        if seed is not None:
            for node in seed.nodes:
                self._memo.setdefault(self._key(node.op, node.inputs, node.attrs), node)

    @staticmethod
    def _key(op, inputs, attrs):
        return (op, tuple(id(i) for i in inputs),
                tuple(sorted((k, _hashable(v)) for k, v in attrs.items())))

    def emit(self, op: str, *inputs: Node, **attrs) -> Node:
        prim = PRIMITIVES[op]
        key = self._key(op, inputs, attrs)
        if not prim.pure:  # parameters are distinct even with equal attributes
            key = key + (next(_ids),)
        node = self._memo.get(key)
        if node is None:
            type_ = prim.type_rule([i.type for i in inputs], **attrs)
            node = Node(op, inputs, attrs, type_, self.source)
            self._memo[key] = node
            self.created += 1
        return node

    def __getattr__(self, name):
        if name in PRIMITIVES:
            return lambda *inputs, **attrs: self.emit(name, *inputs, **attrs)
        raise AttributeError(name)

    # Conveniences used throughout the front end and the derivative rules.

    def const(self, value, dtype: str) -> Node:
        """A constant; scalars stay rank 0 so the printed IR shows ``2.0``, not an array."""
        arr = np.asarray(value, dtype=TensorType((), dtype).np_dtype)
        arr.setflags(write=False)
        return self.emit("constant", value=arr)

    def full(self, value, type_: TensorType) -> Node:
        """``value`` broadcast to ``type_``: how scalar constants meet arrays."""
        return self.broadcast_to(self.const(value, type_.dtype), type_.shape)

    def broadcast_to(self, x: Node, shape: tuple[int, ...]) -> Node:
        """numpy broadcasting made explicit: align trailing axes, expand size-1 axes."""
        shape = tuple(shape)
        if x.shape == shape:
            return x
        lead = len(shape) - x.type.ndim
        keep = [d for d, n in enumerate(x.shape) if n != 1 or shape[lead + d] == 1]
        if len(keep) != x.type.ndim:  # drop the size-1 axes that get stretched
            x = self.reshape(x, shape=tuple(x.shape[d] for d in keep))
        return self.broadcast_in_dim(x, shape=shape, dims=tuple(lead + d for d in keep))

    def sum_to(self, x: Node, shape: tuple[int, ...]) -> Node:
        """The transpose of broadcast_to: sum the stretched axes back out."""
        shape = tuple(shape)
        if x.shape == shape:
            return x
        lead = x.type.ndim - len(shape)
        axes = tuple(range(lead)) + tuple(
            lead + d for d, n in enumerate(shape) if n == 1 and x.shape[lead + d] != 1)
        if axes:
            x = self.reduce_sum(x, axes=axes)
        return x if x.shape == shape else self.reshape(x, shape=shape)
