"""Pytrees: nested dict/list/tuple containers of arrays, flattened to a leaf list.

A treedef is a hashable description of the container structure, so that
(treedef, leaf types) is a cache key for compiled functions and the gradient can be
returned in the same structure as the parameters.  Dict keys are visited in sorted
order (as in JAX), so the same dict built in another order is the same tree.
"""
from __future__ import annotations

from llgrad.ir.errors import ShapeError

LEAF = ("leaf",)

#: dict keys in insertion order -> in visiting order; sorting by repr on every call
#: was a quarter of the cost of flattening a parameter dict
_ORDER: dict = {}
#: types met as leaves (neither containers nor None)
_LEAF_TYPES: set = set()


def flatten(tree):
    leaves = []
    return leaves, _walk(tree, leaves)


def _walk(node, leaves):
    # module-level, not a closure: a recursive closure is a reference cycle that would
    # keep every leaf alive until the garbage collector runs
    if type(node) in _LEAF_TYPES:   # one set lookup for the common case, an array
        leaves.append(node)
        return LEAF
    if isinstance(node, dict):
        keys = sorted_keys(node)
        return ("dict", keys, tuple([_walk(node[k], leaves) for k in keys]))
    if isinstance(node, (list, tuple)):
        if hasattr(node, "_fields"):  # namedtuple
            return ("namedtuple", type(node), tuple([_walk(c, leaves) for c in node]))
        return (type(node).__name__, len(node), tuple([_walk(c, leaves) for c in node]))
    if node is None:
        return ("none",)
    _LEAF_TYPES.add(type(node))
    leaves.append(node)
    return LEAF


def sorted_keys(d: dict) -> tuple:
    """The keys of ``d`` in the order its leaves are visited."""
    keys = tuple(d)
    order = _ORDER.get(keys)
    if order is None:
        if len(_ORDER) > 4096:   # bounded: programs that build many key sets still work
            _ORDER.clear()
        order = _ORDER[keys] = tuple(sorted(keys, key=repr))
    return order


def unflatten(treedef, leaves):
    build = _BUILDERS.get(treedef)
    if build is None:
        if len(_BUILDERS) > 4096:
            _BUILDERS.clear()
        build = _BUILDERS[treedef] = _builder(treedef)
    return build(iter(leaves))


#: treedef -> function of a leaf iterator that rebuilds it; building a parameter dict
#: leaf by leaf through the generic recursion was a tenth of a small model's call
_BUILDERS: dict = {}


def _builder(td):
    kind = td[0]
    if kind == "leaf":
        return next
    if kind == "none":
        return lambda it: None
    children = [_builder(c) for c in td[2]]
    flat = all(c is next for c in children)
    if kind == "dict":
        keys = td[1]
        if flat:
            return lambda it: dict(zip(keys, it))   # zip stops at the last key
        return lambda it: {k: c(it) for k, c in zip(keys, children)}
    if kind == "namedtuple":
        return lambda it: td[1](*[c(it) for c in children])
    container = list if kind == "list" else tuple
    return lambda it: container([c(it) for c in children])


def has_none(treedef) -> bool:
    """Whether a None sits anywhere in the tree (it is an empty subtree, not a leaf,
    so a function given None fails in its own code: staging explains why)."""
    kind = treedef[0]
    return kind == "none" or (kind != "leaf" and any(has_none(c) for c in treedef[2]))


def check_same(expected, got, what: str) -> None:
    """A clear error (naming both structures' leaves) when two treedefs differ."""
    if expected != got:
        raise ShapeError(f"{what} has leaves {leaf_names(got, 'x')}, expected the "
                         f"structure {leaf_names(expected, 'x')}")


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
        check_same(treedef, td, "a pytree")
    return unflatten(treedef, [fn(*ls) for ls in zip(*(f[0] for f in flat))])


def to_data(treedef):
    """``treedef`` as JSON-ready lists (for an exported library's interface); a
    namedtuple's class cannot travel, so it is refused."""
    kind = treedef[0]
    if kind in ("leaf", "none"):
        return [kind]
    if kind == "namedtuple":
        raise ValueError(f"a namedtuple ({treedef[1].__name__}) cannot be described outside "
                         f"Python: use a tuple or a dict")
    children = [to_data(c) for c in treedef[2]]
    return [kind, list(treedef[1]) if kind == "dict" else treedef[1], children]


def from_data(data):
    """The treedef ``to_data`` described."""
    kind = data[0]
    if kind in ("leaf", "none"):
        return (kind,)
    children = tuple(from_data(c) for c in data[2])
    return (kind, tuple(data[1]) if kind == "dict" else data[1], children)
