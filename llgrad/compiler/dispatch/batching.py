"""vmap at trace time: trace the function once for one example, batch its graph, and
inline the batched graph into the trace being built.

``llgrad.vmap`` runs this inside a trace of its own (so a batched function called on
arrays compiles to native code), and ``jacfwd``/``jacrev`` inside theirs, mapping a
jvp or a pullback over the basis in one batched pass.  Because the result is inlined
as ordinary IR, an enclosing grad, jit or vmap transforms it like any other code.
"""
from __future__ import annotations

import inspect

from llgrad.compiler.autodiff.batching import vmap as batch_graph
from llgrad.compiler.frontend import pytree
from llgrad.compiler.frontend.trace import Tracer, current, input_type, lift, trace
from llgrad.compiler.passes.rewrite import inline
from llgrad.ir.errors import ShapeError


def _count(treedef) -> int:
    return len(pytree.leaf_names(treedef, ""))


def axes_per_leaf(spec, treedef, what: str) -> list:
    """``spec`` (an int, None, or a pytree prefix of the tree ``treedef`` describes, as
    JAX's in_axes/out_axes) as one entry per leaf."""
    if spec is None or (isinstance(spec, int) and not isinstance(spec, bool)):
        return [spec] * _count(treedef)
    kind = treedef[0]
    if kind == "dict" and isinstance(spec, dict) and set(spec) == set(treedef[1]):
        return [a for k, child in zip(treedef[1], treedef[2])
                for a in axes_per_leaf(spec[k], child, what)]
    if kind in ("tuple", "list", "namedtuple") and isinstance(spec, (tuple, list)) and (
            len(spec) == len(treedef[2])):
        return [a for s, child in zip(spec, treedef[2]) for a in axes_per_leaf(s, child, what)]
    raise ShapeError(f"{what} {spec!r} does not match the structure "
                     f"{pytree.leaf_names(treedef, 'x')}")


def _axis(axis, ndim: int, what: str):
    """``axis`` in 0..ndim-1 (negative counting from the end), or None."""
    if axis is None:
        return None
    if not -ndim <= axis < ndim:
        raise ShapeError(f"{what}: axis {axis} is out of range for rank {ndim}")
    return axis % ndim


def _arg_names(fn, n: int) -> list[str]:
    try:
        names = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        names = []
    return [names[i] if i < len(names) else f"arg{i}" for i in range(n)]


def batched_call(fn, args, in_axes, out_axes, name: str | None = None):
    """``fn`` mapped over the axes ``in_axes`` of ``args``, inside the current trace: its
    outputs (Tracers) with the batch on ``out_axes``.  Arguments of different batch
    sizes are a ShapeError naming the function and each argument's shape."""
    name = name or getattr(fn, "__name__", "f")
    args = tuple(args)
    leaves, treedef = pytree.flatten(args)
    axes = axes_per_leaf(in_axes, treedef, f"vmap of {name}(): in_axes")
    names = [leaf_name for child, arg in zip(treedef[2], _arg_names(fn, len(args)))
             for leaf_name in pytree.leaf_names(child, arg)]
    mapped, example_types, sizes = [], [], {}
    for leaf, axis, leaf_name in zip(leaves, axes, names):
        t = leaf.node.type if isinstance(leaf, Tracer) else input_type(
            leaf, f"argument {leaf_name} of vmap({name})")
        axis = _axis(axis, t.ndim, f"vmap of {name}(): in_axes of {leaf_name} {t}")
        mapped.append(axis)
        if axis is not None:
            sizes[leaf_name] = (t.shape, axis)
            t = t.with_shape(t.shape[:axis] + t.shape[axis + 1:])
        example_types.append(t)
    batch = {shape[axis] for shape, axis in sizes.values()}
    if not batch:
        raise ShapeError(f"vmap of {name}(): in_axes {in_axes!r} maps no argument (at least "
                         f"one must be an int)")
    if len(batch) > 1:
        shapes = ", ".join(f"{n} of shape {s} on axis {a}" for n, (s, a) in sizes.items())
        raise ShapeError(f"vmap of {name}(): the arguments have different batch sizes: "
                         f"{shapes}")
    graph, out_tree = trace(fn, example_types, treedef, name, names)
    out_axes = [_axis(a, o.type.ndim + 1, f"vmap of {name}(): out_axes of {n}")
                for a, o, n in zip(axes_per_leaf(out_axes, out_tree, f"vmap of {name}(): "
                                                 f"out_axes"), graph.outputs,
                                   pytree.leaf_names(out_tree, "out"))]
    batched = batch_graph(graph, mapped, out_axes, batch.pop())
    nodes = inline(current().builder, batched, [lift(leaf) for leaf in leaves])
    return pytree.unflatten(out_tree, [Tracer(n) for n in nodes])
