"""The IR: types, graphs, the primitive table, printing, reference evaluation."""
from .graph import Builder, Graph, Node
from .interpret import interpret
from .primitives import PRIMITIVES, Primitive
from .types import TensorType
from .verify import verify

__all__ = ["Builder", "Graph", "Node", "PRIMITIVES", "Primitive", "TensorType", "interpret", "verify"]
