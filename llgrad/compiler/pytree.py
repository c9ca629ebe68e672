"""Pytrees: nested dict/list/tuple containers of arrays, flattened to a leaf list.

A treedef is a hashable description of the container structure, so that
(treedef, leaf types) is a cache key for compiled functions and the gradient can be
returned in the same structure as the parameters.  Dict keys are visited in sorted
order (as in JAX), so the same dict built in another order is the same tree.
"""
from __future__ import annotations

LEAF = ("leaf",)


def flatten(tree):
    leaves = []

    def walk(node):
        if isinstance(node, dict):
            keys = sorted(node, key=repr)
            return ("dict", tuple(keys), tuple(walk(node[k]) for k in keys))
        if isinstance(node, (list, tuple)) and not hasattr(node, "_fields"):
            return (type(node).__name__, len(node), tuple(walk(c) for c in node))
        if hasattr(node, "_fields"):  # namedtuple
            return ("namedtuple", type(node), tuple(walk(c) for c in node))
        if node is None:
            return ("none",)
        leaves.append(node)
        return LEAF

    return leaves, walk(tree)


def unflatten(treedef, leaves):
    it = iter(leaves)

    def build(td):
        kind = td[0]
        if kind == "leaf":
            return next(it)
        if kind == "none":
            return None
        if kind == "dict":
            return {k: build(c) for k, c in zip(td[1], td[2])}
        children = [build(c) for c in td[2]]
        if kind == "namedtuple":
            return td[1](*children)
        return list(children) if kind == "list" else tuple(children)

    return build(treedef)


def leaf_names(treedef, root: str) -> list[str]:
    """Readable paths of the leaves, e.g. ``params['w1']``, for the IR and errors."""
    names = []

    def walk(td, path):
        kind = td[0]
        if kind == "leaf":
            names.append(path)
        elif kind == "dict":
            for k, c in zip(td[1], td[2]):
                walk(c, f"{path}[{k!r}]")
        elif kind != "none":
            for i, c in enumerate(td[2]):
                walk(c, f"{path}[{i}]")

    walk(treedef, root)
    return names


def map_leaves(fn, *trees):
    """Apply ``fn`` leaf by leaf over trees of the same structure."""
    flat = [flatten(t) for t in trees]
    treedef = flat[0][1]
    for leaves, td in flat[1:]:
        if td != treedef:
            raise ValueError("pytrees have different structures")
    return unflatten(treedef, [fn(*ls) for ls in zip(*(f[0] for f in flat))])
