"""The call path for a signature already compiled: no key, no generic flattening.

The general path builds a cache key from the whole pytree (structure, every leaf's
shape and dtype) and hashes it, checks and converts every leaf, and packages the
outputs leaf by leaf: about 11 µs of Python around the 10 µs of native code of the
benchmark's tiny MLP, and 2.5 µs around 0.7 µs for its scalar expression.  For a
signature whose arguments are leaves or flat dicts, lists and tuples of leaves, all
Python floats or all numpy arrays, a compiled entry also gets a function that reads
the leaves straight out of the containers, checks each one exactly (type, shape, dtype
object, C-contiguous and aligned) and runs the executable without the conversions
``Executable.check`` would otherwise consider.  Anything else about a call (another
key set, a subclass, a strided array, an equal but distinct dtype) answers ``MISS``,
and the general path decides as before: its checks and errors are the only ones.

Both that function and the ``packager`` of a signature's outputs (which the general
path uses too) are generated as Python source, one straight line per signature, as
``collections.namedtuple`` and ``dataclasses`` do: at a microsecond per call, the
loops, iterators and ``dict(zip(...))`` of a generic version were a third of the time.
"""
from __future__ import annotations

import numpy as np

from . import pytree

MISS = object()


def miss(args):
    """The fast call of no signature."""
    return MISS


def signature(args):
    """The lookup key of a call for ``build`` (its argument types)."""
    return tuple(map(type, args))


#: generating and compiling the checks costs ~0.2 ms a leaf, the price of a few hundred
#: calls; a call with more leaves than this is no microsecond call anyway
_MAX_LEAVES = 256


def build(kind: str, argnums, entry, args, leaves):
    """``call(args) -> result or MISS`` for ``entry`` compiled from ``args`` (whose
    flattened ``leaves`` it was compiled for), or None when this path does not apply."""
    if kind not in ("jit", "grad", "value_and_grad") or len(leaves) > _MAX_LEAVES:
        return None
    if all(type(v) is float for v in leaves):
        run, floats = getattr(entry.executable, "scalar_call", lambda: None)(), True
    elif all(type(v) is np.ndarray for v in leaves):
        run, floats = getattr(entry.executable, "run", None), False
        compiled = getattr(entry.executable, "input_types", None)
        # the leaves were converted unless they are what was compiled (int32, float16
        # and byte-swapped arrays are not): then every call would be converted too
        if [(v.shape, v.dtype) for v in leaves] != compiled:
            return None
    else:
        return None
    if run is None or not all(_flat(a) for a in args):
        return None
    source = _Source({"MISS": MISS, "run": run, "ndarray": np.ndarray})
    source.line(f"if len(args) != {len(args)}:", "    return MISS")
    names = [f"a{i}" for i in range(len(args))]
    source.line(f"{', '.join(names)}, = args" if args else "")
    k = 0
    for name, arg in zip(names, args):
        container = type(arg)
        if container in (float, np.ndarray):
            source.line(f"l{k} = {name}")
            k += 1
            continue
        source.line(f"if type({name}) is not {source.const(container)} "
                    f"or len({name}) != {len(arg)}:", "    return MISS")
        count = len(arg)
        if container is dict:
            source.line("try:")
            for key in pytree.sorted_keys(arg):
                source.line(f"    l{k} = {name}[{source.const(key)}]")
                k += 1
            source.line("except KeyError:", "    return MISS")
        else:
            source.line(f"{', '.join(f'l{j}' for j in range(k, k + count))}, = {name}")
            k += count
    for j in range(len(leaves)):
        if floats:
            source.line(f"if type(l{j}) is not float:", "    return MISS")
        else:
            shape, dtype = compiled[j]   # numpy's own dtype objects: compared by identity
            source.line(f"if (type(l{j}) is not ndarray or l{j}.shape != "
                        f"{source.const(shape)} or l{j}.dtype is not "
                        f"{source.const(dtype)}):", "    return MISS",
                        f"flags = l{j}.flags",
                        "if not (flags.c_contiguous and flags.aligned):", "    return MISS")
    source.line(f"o = run([{', '.join(f'l{j}' for j in range(len(leaves)))}])",
                f"return {_result(source, kind, argnums, entry, leaves, floats=floats)}")
    return source.function("args")


def packager(kind: str, argnums, entry, leaves, *, floats=False, tracing=False):
    """``package(outputs) -> result``: forward outputs in the function's output
    structure, gradients in the structure of the differentiated arguments; a Python
    scalar's gradient is a Python float, a 0-d array's a numpy scalar.  ``floats``:
    the outputs are Python floats (``Executable.scalar_call``); ``tracing``: they are
    Tracers of an enclosing trace, kept as they are."""
    source = _Source({})
    result = _result(source, kind, argnums, entry, leaves, floats=floats, tracing=tracing)
    source.line(f"return {result}")
    return source.function("o")


def _flat(arg) -> bool:
    """Whether the fast path can read ``arg``: a leaf, or a non-empty dict, list or
    tuple of leaves (of the exact types, no subclasses)."""
    leaf = (float, np.ndarray)
    if type(arg) in leaf:
        return True
    if type(arg) is dict:
        return bool(arg) and all(type(v) in leaf for v in arg.values())
    return type(arg) in (list, tuple) and bool(arg) and all(type(v) in leaf for v in arg)


def _result(source, kind, argnums, entry, leaves, *, floats, tracing=False) -> str:
    """The expression of the user's result in the outputs ``o``."""
    n = entry.n_values
    wrap = "" if tracing else "np.float64" if floats else "_scalar"
    value = "" if kind == "grad" else _tree(source, entry.out_tree,
                                            iter(f"{wrap}(o[{i}])" for i in range(n)))
    if kind == "jit":
        return value
    exprs, pos = [], n
    for treedef, start, count in entry.layout:
        items = []
        for leaf in leaves[start:start + count]:
            convert = None if tracing or floats else _converter(leaf)
            items.append(f"o[{pos}]" if convert is None else
                         f"{source.const(convert)}(o[{pos}])")
            pos += 1
        exprs.append(_tree(source, treedef, iter(items)))
    grad = exprs[0] if isinstance(argnums, int) else f"({''.join(e + ', ' for e in exprs)})"
    return grad if kind == "grad" else f"({value}, {grad})"


#: containers nested deeper than this are rebuilt by ``pytree.unflatten`` (Python's
#: parser refuses an expression nested 200 deep)
_MAX_DEPTH = 16


def _tree(source, treedef, items, depth=0) -> str:
    """The expression that builds ``treedef`` from the leaf expressions ``items``."""
    kind = treedef[0]
    if kind == "leaf":
        return next(items)
    if kind == "none":
        return "None"
    if depth == _MAX_DEPTH:
        flat = [next(items) for _ in pytree.leaf_names(treedef, "")]
        return f"{source.const(pytree.unflatten)}({source.const(treedef)}, [{', '.join(flat)}])"
    children = [_tree(source, child, items, depth + 1) for child in treedef[2]]
    if kind == "dict":
        return "{" + ", ".join(f"{source.const(k)}: {c}" for k, c in
                               zip(treedef[1], children)) + "}"
    if kind == "namedtuple":
        return f"{source.const(treedef[1])}({', '.join(children)})"
    if kind == "list":
        return f"[{', '.join(children)}]"
    return f"({''.join(c + ', ' for c in children)})"


class _Source:
    """Lines of one generated function and the objects they refer to by name."""

    def __init__(self, namespace: dict):
        self.namespace = {"np": np, "_scalar": _scalar, **namespace}
        self.lines: list[str] = []

    def const(self, value) -> str:
        """A name for ``value`` in the generated code (never its repr: keys and
        dtypes are compared as the objects themselves)."""
        name = f"c{len(self.namespace)}"
        self.namespace[name] = value
        return name

    def line(self, *lines):
        self.lines.extend(line for line in lines if line)

    def function(self, parameter: str):
        body = "\n".join("    " + line for line in self.lines)
        exec(f"def generated({parameter}):\n{body}\n", self.namespace)   # noqa: S102
        return self.namespace["generated"]


def _converter(leaf):
    """How the native gradient of ``leaf`` becomes what the user gets; None: as it is."""
    if isinstance(leaf, (float, int)):
        return float
    if isinstance(leaf, np.ndarray) and leaf.ndim > 0:
        return None
    return _scalar


def _scalar(x):
    return x[()] if isinstance(x, np.ndarray) and x.ndim == 0 else x
