"""The IR: types, graphs, the primitive table, printing, reference evaluation."""
from llgrad.ir.graph import Builder, Graph, Node
from llgrad.ir.interpret import interpret
from llgrad.ir.primitives import PRIMITIVES, Primitive
from llgrad.ir.types import TensorType
from llgrad.ir.verify import verify

# each registers its records in PRIMITIVES (see the end of primitives.py)
from llgrad.ir import (  # noqa: E402,F401
    primitives_checkpoint, primitives_collective, primitives_cond, primitives_cumsum,
    primitives_custom, primitives_linalg, primitives_sort, primitives_while)
from llgrad.ir import primitives_prefetch  # noqa: E402,F401

__all__ = ["Builder", "Graph", "Node", "PRIMITIVES", "Primitive", "TensorType", "interpret", "verify"]
