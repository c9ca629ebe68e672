"""The call path for a signature already compiled: no key, no generic flattening.

The general path builds a cache key from the whole pytree (structure, every leaf's
shape and dtype) and hashes it, checks and converts every leaf, and packages the
outputs leaf by leaf: for a small model, as much Python as its native code takes, or
several times more (re-measure: ``python -m timeit`` of a small ``llgrad.grad``
function called with a keyword argument, which always takes this path, against
``llgrad.profile``'s native time).  For a
signature whose arguments are leaves or flat dicts, lists and tuples of leaves, all
Python floats or all numpy arrays, a compiled entry also gets a function that reads
the leaves straight out of the containers, checks each one exactly (type, shape, dtype
object, C-contiguous and aligned) and runs the executable without the conversions
``Executable.check`` would otherwise consider.  Anything else about a call (another
key set, a subclass, a strided array, an equal but distinct dtype) answers ``MISS``,
and the general path decides as before: its checks and errors are the only ones.

Once that function has answered ``NATIVE_AFTER`` calls, the signature is hot and gets
a native entry instead (``native_plan``, ``codegen/pyentry.py``, ``runtime/pycall.py``):
a builtin function whose code makes the same checks by reading object memory and
builds the same result with the C API, with no Python frame at all (re-measure:
``python -m timeit`` of a small ``llgrad.jit`` function, then again under
``LLGRAD_NO_NATIVE_ENTRY=1``).  The Python function stays the path where that does
not apply: an interpreter whose object layout was not verified, a structure the
entry does not build (namedtuples), an executable too large to run with the GIL
held, or ``LLGRAD_NO_NATIVE_ENTRY=1``.

Both that function and the ``packager`` of a signature's outputs (which the general
path uses too) are generated as Python source, one straight line per signature, as
``collections.namedtuple`` and ``dataclasses`` do: in a call this short, the loops,
iterators and ``dict(zip(...))`` of a generic version would be a large share of it.
"""
from __future__ import annotations

import itertools
import json
import os
import warnings
from dataclasses import asdict

import numpy as np

from llgrad.compiler.frontend import pytree
from llgrad.ir.primitives import flops
from llgrad.runtime import cache, engine, pyobjects

MISS = object()


def miss(args):
    """The fast call of no signature."""
    return MISS


def signature(args):
    """The lookup key of a call for ``build`` (its argument types)."""
    return tuple(map(type, args))


#: generating and compiling the checks costs per leaf the price of a few hundred calls,
#: and a call with more leaves than this is no microsecond call anyway (re-measure: time
#: ``build`` for a signature of many leaves)
_MAX_LEAVES = 256


#: calls a signature's Python fast path answers before its native entry is compiled:
#: generating the entry costs what thousands of calls save (loading it from the disk
#: cache, hundreds), so a signature called a few times never pays it and a loop has
#: spent only a little more by then.  Re-measure (no script): time a small
#: ``llgrad.jit`` function's first 1000 calls and the calls after them, with
#: ``LLGRAD_NO_CACHE=1`` and without
NATIVE_AFTER = 1000
#: a call of an executable of more flops, or touching more bytes (arguments, results
#: and scratch), than this may take long enough that holding the GIL through it would
#: stall other threads: it keeps the ctypes call, which releases the GIL while native
#: code runs (``llgrad.profile`` gives such a call's time)
NATIVE_MAX_FLOPS, NATIVE_MAX_BYTES = 1_000_000, 1 << 20


def build(kind: str, argnums, entry, args, leaves, promote=None):
    """``call(args) -> result or MISS`` for ``entry`` compiled from ``args`` (whose
    flattened ``leaves`` it was compiled for), or None when this path does not apply.
    When the signature is hot, ``promote(make)`` (None: never) gets ``make(fallback)``,
    which returns its native entry (a builtin that passes the calls it does not answer
    on to ``fallback``) or None."""
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
    native = None if promote is None else _native(kind, argnums, entry, args, leaves, floats)
    if native is not None and NATIVE_AFTER <= 0:
        promote(native)
    elif native is not None:
        # true at one call only: next() on it is atomic, so one thread promotes however
        # many call at once, and a failed promotion costs later calls nothing
        hot = itertools.chain(itertools.repeat(False, NATIVE_AFTER), (True,))
        source.namespace.update(hot=hot, promote=promote, native=native)
        source.line("if next(hot, False):", "    promote(native)")
    source.line(f"o = run([{', '.join(f'l{j}' for j in range(len(leaves)))}])",
                f"return {_result(source, kind, argnums, entry, leaves, floats=floats)}")
    return source.function("args")


def _native(kind, argnums, entry, args, leaves, floats):
    """``make(fallback) -> builtin or None`` for the native entry of this signature, or
    None where it does not apply (see the module docstring)."""
    executable = entry.executable
    if (os.environ.get("LLGRAD_NO_NATIVE_ENTRY") == "1" or pyobjects.OBJECTS is None
            or getattr(executable, "checks_status", False)):   # run() raises
        return None
    touched = executable.arena_bytes + sum(
        int(np.prod(shape)) * dtype.itemsize
        for shape, dtype in executable.input_types + executable.output_types)
    if (touched > NATIVE_MAX_BYTES
            or sum(map(flops, executable.graph.nodes)) > NATIVE_MAX_FLOPS):
        return None
    planned = native_plan(kind, argnums, entry, args, leaves, floats)
    if planned is None:
        return None
    plan, objects = planned

    def make(fallback):
        from llgrad.compiler.codegen import pyentry
        from llgrad.runtime import pycall
        key = cache.key("pyentry", json.dumps(plan, sort_keys=True),
                        json.dumps(asdict(pyobjects.OBJECTS)), *engine.context())
        try:
            compiled = pycall.load(lambda: pyentry.build(plan, pyobjects.OBJECTS), key,
                                   pyentry.SYMBOL, pyentry.CAPI)
        except Exception as exc:  # noqa: BLE001 - the Python fast path still works
            warnings.warn(f"llgrad: no native entry for {executable.graph.name}() "
                          f"({type(exc).__name__}: {exc}); using the Python call path",
                          RuntimeWarning, stacklevel=4)
            return None
        return pycall.builtin(executable.graph.name, compiled, executable, pyentry.HEADER,
                              objects, fallback=fallback, floats=floats,
                              pool_at=plan.get("pool", 0))
    return make


class _Unsupported(Exception):
    """A result structure the native entry does not build."""


def native_plan(kind, argnums, entry, args, leaves, floats):
    """(plan, table objects) of the native entry: the plan is the JSON-able structure
    ``codegen.pyentry.build`` generates code from, naming every object the code needs
    by its index in ``objects`` (the table after ``pyentry.HEADER``)."""
    objects: list = []

    def ref(obj) -> int:
        objects.append(obj)
        return len(objects) - 1
    specs = []
    for arg in args:
        if type(arg) in (float, np.ndarray):
            specs.append(["leaf"])
        elif type(arg) is dict:
            specs.append(["dict", [ref(k) for k in pytree.sorted_keys(arg)]])
        else:
            specs.append([type(arg).__name__, len(arg)])
    executable = entry.executable
    outputs = executable.output_types
    plan = {"floats": floats, "args": specs, "n_out": len(outputs)}
    if not floats:
        compiled = executable.input_types
        plan["shapes"] = [list(shape) for shape, _ in compiled]
        plan["descrs"] = [ref(dtype) for _, dtype in compiled]
    try:
        plan["result"] = _result_spec(kind, argnums, entry, leaves, floats, outputs, ref)
    except _Unsupported:
        return None
    if not floats:
        from llgrad.runtime.pycall import GENERATIONS
        plan["generations"] = GENERATIONS
        plan["pool"] = len(objects)
        objects += [None] * (GENERATIONS * len(outputs))
    return plan, objects


def _result_spec(kind, argnums, entry, leaves, floats, outputs, ref):
    """``_result`` as a tree of ``["leaf", output, how]`` (see ``pyentry``), ``["none"]``,
    ``["tuple" or "list", children]`` and ``["dict", key indices, children]``."""
    def value(i):
        return ["leaf", i, "float64" if floats else "scalar" if outputs[i][0] == () else "array"]

    def grad(pos, leaf):
        return ["leaf", pos, "float" if floats else "array" if leaf.ndim > 0 else "scalar"]
    return _assemble(kind, argnums, entry, leaves, value, grad,
                     lambda treedef, items: _tree_spec(treedef, items, ref),
                     lambda parts: ["tuple", parts])


def _tree_spec(treedef, items, ref):
    kind = treedef[0]
    if kind == "leaf":
        return next(items)
    if kind == "none":
        return ["none"]
    if kind == "dict":
        return ["dict", [ref(k) for k in treedef[1]],
                [_tree_spec(child, items, ref) for child in treedef[2]]]
    if kind in ("list", "tuple"):
        return [kind, [_tree_spec(child, items, ref) for child in treedef[2]]]
    raise _Unsupported(kind)


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
    wrap = "" if tracing else "np.float64" if floats else "_scalar"

    def value(i):
        return f"{wrap}(o[{i}])"

    def grad(pos, leaf):
        convert = None if tracing or floats else _converter(leaf)
        return f"o[{pos}]" if convert is None else f"{source.const(convert)}(o[{pos}])"
    return _assemble(kind, argnums, entry, leaves, value, grad,
                     lambda treedef, items: _tree(source, treedef, items),
                     lambda exprs: f"({''.join(e + ', ' for e in exprs)})")


def _assemble(kind, argnums, entry, leaves, value, grad, tree, tuple_of):
    """The user's result from the executable's outputs, in any representation: ``value(i)``
    is output ``i`` as a value, ``grad(pos, leaf)`` output ``pos`` as the gradient of
    ``leaf``, ``tree(treedef, items)`` builds a pytree, ``tuple_of(parts)`` a tuple.
    The values come first (none for grad), then each differentiated argument's leaves."""
    n = entry.n_values
    result = None if kind == "grad" else tree(entry.out_tree, iter(map(value, range(n))))
    if kind == "jit":
        return result
    grads, pos = [], n
    for treedef, start, count in entry.layout:
        grads.append(tree(treedef, iter([grad(pos + k, leaf) for k, leaf in
                                         enumerate(leaves[start:start + count])])))
        pos += count
    gradient = grads[0] if isinstance(argnums, int) else tuple_of(grads)
    return gradient if kind == "grad" else tuple_of([result, gradient])


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
