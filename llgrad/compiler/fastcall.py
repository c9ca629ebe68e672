"""The call path for functions of Python floats: no flattening, checking or allocating.

A scalar function (workload 1 of the benchmark: three floats in, value and gradient
out) spent 15 µs per call in the general path, flattening pytrees, checking 0-d arrays
and packaging 0-d results, around well under a microsecond of native code.  When every
argument is a Python float or a flat dict of Python floats and every output is a
scalar, the compiled signature also gets a function that reads the floats straight
into the executable's per-thread slots (``Executable.scalar_call``) and builds the
result from the floats it gets back.  It is found by the argument types alone and
checks the rest itself (dict keys, value types), answering ``MISS`` when the call is
not of its signature, so the general path decides as before."""
from __future__ import annotations

import numpy as np

from . import pytree

MISS = object()


def _plan(arg):
    """None for a float, the keys in leaf order for a flat dict of floats, else False."""
    if type(arg) is float:
        return None
    if type(arg) is dict and arg and all(type(v) is float for v in arg.values()):
        leaves, treedef = pytree.flatten(arg)
        return treedef[1]
    return False


def signature(args):
    """The lookup key of a call for ``build`` (its argument types)."""
    return tuple(map(type, args))


def build(kind: str, argnums, entry, args):
    """``call(args) -> result or MISS`` for ``entry`` compiled from ``args``, or None
    when this path does not apply."""
    if kind == "vjp" or entry.out_tree != pytree.LEAF:
        return None
    plans = [_plan(a) for a in args]
    if any(p is False for p in plans):
        return None
    run = getattr(entry.executable, "scalar_call", lambda: None)()
    if run is None:
        return None
    n_values = entry.n_values
    layout, pos = [], n_values   # (treedef, first output, last output) per gradient
    for treedef, _, count in entry.layout:
        layout.append((treedef, pos, pos + count))
        pos += count
    single, value_too = isinstance(argnums, int), kind == "value_and_grad"
    all_floats = all(p is None for p in plans)
    bare = all(treedef == pytree.LEAF for treedef, _, _ in layout)   # one float each

    def values_of(args):
        if all_floats:
            return args
        values = []
        for a, keys in zip(args, plans):
            if keys is None:
                if type(a) is not float:
                    return MISS
                values.append(a)
                continue
            if len(a) != len(keys):
                return MISS
            try:
                part = [a[k] for k in keys]
            except (KeyError, TypeError):
                return MISS
            if not all(type(v) is float for v in part):
                return MISS
            values.extend(part)
        return values

    def call(args):
        values = values_of(args)
        if values is MISS:
            return MISS
        outputs = run(values)
        if kind == "jit":
            return np.float64(outputs[0])
        grads = outputs[n_values:] if bare else [pytree.unflatten(treedef, outputs[lo:hi])
                                                 for treedef, lo, hi in layout]
        grad = grads[0] if single else tuple(grads)
        return (np.float64(outputs[0]), grad) if value_too else grad
    return call
