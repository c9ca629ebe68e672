"""The call path for a signature already compiled: no key, no generic flattening.

The general path builds a cache key from the whole pytree (structure, every leaf's
shape and dtype) and hashes it, checks and converts every leaf, and packages the
outputs leaf by leaf: about 11 µs of Python around the 10 µs of native code of the
benchmark's tiny MLP, and 15 µs around well under a microsecond for its scalar
expression.  For a signature whose arguments are leaves or flat dicts, lists and tuples
of leaves, all Python floats or all numpy arrays, a compiled entry also gets a
function that reads the leaves straight out of the containers, checks each one
exactly (type, shape, dtype object, C-contiguous and aligned) and runs the
executable without the conversions ``Executable.check`` would otherwise consider.
Anything else about a call (another key set, a subclass, a strided array, an equal
but distinct dtype) answers ``MISS``, and the general path decides as before: its
checks and errors are the only ones.  The outputs are packaged by a ``packager``
built once per compiled signature, which the general path uses too."""
from __future__ import annotations

from operator import itemgetter

import numpy as np

from . import pytree

MISS = object()


def miss(args):
    """The fast call of no signature."""
    return MISS


def signature(args):
    """The lookup key of a call for ``build`` (its argument types)."""
    return tuple(map(type, args))


def _reader(arg):
    """(container type, size, leaves of a container) for an argument whose leaves sit
    at most one container deep, (None, 0, None) for a bare leaf, None otherwise."""
    if type(arg) in (float, np.ndarray):
        return None, 0, None
    if type(arg) is dict and arg and all(type(v) in (float, np.ndarray) for v in arg.values()):
        keys = pytree.sorted_keys(arg)
        return dict, len(keys), itemgetter(*keys) if len(keys) > 1 else (
            lambda d, key=keys[0]: (d[key],))
    if type(arg) in (list, tuple) and arg and all(type(v) in (float, np.ndarray) for v in arg):
        return type(arg), len(arg), None
    return None


def build(kind: str, argnums, entry, args, leaves):
    """``call(args) -> result or MISS`` for ``entry`` compiled from ``args`` (whose
    flattened ``leaves`` it was compiled for), or None when this path does not apply."""
    if kind not in ("jit", "grad", "value_and_grad"):
        return None
    readers = [_reader(a) for a in args]
    if any(r is None for r in readers):
        return None
    executable = entry.executable
    if all(type(v) is float for v in leaves):
        run, floats = getattr(executable, "scalar_call", lambda: None)(), True
    elif all(type(v) is np.ndarray for v in leaves):
        run, floats = getattr(executable, "run", None), False
        kinds = [(v.shape, v.dtype) for v in leaves]
    else:
        return None
    if run is None:
        return None
    package = packager(kind, argnums, entry, leaves, floats=floats)
    n_args, ndarray = len(args), np.ndarray

    def read(args):
        """The leaves of a call of this signature, or MISS."""
        if len(args) != n_args:
            return MISS
        got = []
        for a, (container, size, items) in zip(args, readers):
            if container is None:
                got.append(a)
            elif type(a) is not container or len(a) != size:
                return MISS
            elif items is None:
                got += a
            else:
                try:
                    got += items(a)
                except KeyError:
                    return MISS
        return got

    def call_floats(args):
        values = read(args)
        if values is MISS:
            return MISS
        for v in values:
            if type(v) is not float:
                return MISS
        return package(run(values))

    def call_arrays(args):
        arrays = read(args)
        if arrays is MISS:
            return MISS
        for a, (shape, dtype) in zip(arrays, kinds):
            if type(a) is not ndarray or a.shape != shape or a.dtype is not dtype:
                return MISS
            flags = a.flags
            if not (flags.c_contiguous and flags.aligned):
                return MISS
        return package(run(arrays))

    return call_floats if floats else call_arrays


def packager(kind: str, argnums, entry, leaves, *, floats=False, tracing=False):
    """``package(outputs) -> result``: forward outputs in the function's output
    structure, gradients in the structure of the differentiated arguments; a Python
    scalar's gradient is a Python float, a 0-d array's a numpy scalar.  ``floats``:
    the outputs are Python floats (``Executable.scalar_call``); ``tracing``: they are
    Tracers of an enclosing trace, kept as they are.  Built once per signature, so
    that a call only slices and rebuilds."""
    n_values = entry.n_values
    single = isinstance(argnums, int)
    as_value = (lambda v: v) if tracing else np.float64 if floats else _scalar
    build_value = pytree.builder(entry.out_tree)
    segments, pos = [], n_values
    for treedef, start, count in entry.layout:
        converters = [None if tracing or floats else _converter(leaf)
                      for leaf in leaves[start:start + count]]
        segments.append((_rebuild(treedef), pos, pos + count,
                         converters if any(converters) else None))
        pos += count

    if kind == "grad" and single and segments[0][3] is None:   # the common case, spelt out
        build, lo, hi, _ = segments[0]
        return lambda outputs: build(outputs[lo:hi])

    def package(outputs):
        if kind != "grad":
            value = build_value(iter([as_value(v) for v in outputs[:n_values]]))
            if kind == "jit":
                return value
        grads = []
        for build, lo, hi, converters in segments:
            flat = outputs[lo:hi]
            if converters is not None:
                flat = [g if c is None else c(g) for c, g in zip(converters, flat)]
            grads.append(build(flat))
        grad = grads[0] if single else tuple(grads)
        return grad if kind == "grad" else (value, grad)
    return package


def _rebuild(treedef):
    """``rebuild(list of leaves) -> tree``, without an iterator where the tree is one
    leaf or a flat dict (a third of the cost of packaging a dict of three floats)."""
    if treedef == pytree.LEAF:
        return itemgetter(0)
    if treedef[0] == "dict" and all(child == pytree.LEAF for child in treedef[2]):
        return lambda flat, keys=treedef[1]: dict(zip(keys, flat))
    build = pytree.builder(treedef)
    return lambda flat: build(iter(flat))


def _converter(leaf):
    """How the native gradient of ``leaf`` becomes what the user gets; None: as it is."""
    if isinstance(leaf, (float, int)):
        return float
    if isinstance(leaf, np.ndarray) and leaf.ndim > 0:
        return None
    return _scalar


def _scalar(x):
    return x[()] if isinstance(x, np.ndarray) and x.ndim == 0 else x
