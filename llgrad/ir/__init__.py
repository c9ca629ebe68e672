"""The IR: types, graphs, the primitive table, printing, reference evaluation."""
from llgrad.ir.graph import Builder, Graph, Node
from llgrad.ir.interpret import interpret
from llgrad.ir.primitives import PRIMITIVES, Primitive
from llgrad.ir.types import TensorType
from llgrad.ir.verify import verify

__all__ = ["Builder", "Graph", "Node", "PRIMITIVES", "Primitive", "TensorType", "interpret", "verify"]
