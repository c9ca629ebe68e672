"""From a Python call to a compiled graph: signatures, tracing, passes, the cache.

A Staged function is what ``jit``/``grad``/``value_and_grad`` return.  Each call
flattens its arguments, looks up the compiled function for their signature
(pytree structure, shapes, dtypes, static values) and traces + compiles on a miss:
a new shape retraces, as in JAX.  A call of a signature already compiled is first
offered to the function ``fastcall`` generated for it, which answers it or says MISS;
a hot signature's native entry answers before any Python runs (``Staged``).
"""
from __future__ import annotations

import contextlib
import functools
import gc
import inspect
import threading
import time
import weakref

import numpy as np

from llgrad.compiler.autodiff.forward import jvp
from llgrad.compiler.autodiff.reverse import vjp
from llgrad.compiler.dispatch import fastcall, recompiles
from llgrad.compiler.frontend import pytree
from llgrad.compiler.frontend.trace import Tracer, current, input_type, lift, raised_at, trace
from llgrad.compiler.inspection.stages import Trace
from llgrad.compiler.passes.pipeline import optimize
from llgrad.compiler.passes.rewrite import inline
from llgrad.ir.errors import DTypeError, GradientError, LlgradError, ShapeError, UnsupportedError
from llgrad.ir.graph import Graph
from llgrad.ir.interpret import interpret
from llgrad.ir.walk import forward_ids, topological_order


def _closes_over(graph: Graph) -> bool:
    """Whether ``graph`` reads values of an enclosing trace: parameters not its own,
    which the function reached through a closure."""
    own = {id(p) for p in graph.inputs}
    return any(n.op == "parameter" and id(n) not in own for n in graph.nodes)


def _uncompiled(graph, joint, out_tree, layout, times) -> Trace:
    """The Trace of a call inlined into an enclosing trace: staged, never compiled."""
    entry = Trace(graph, joint, [], None, out_tree, times)
    entry.layout = layout
    return entry


class Interpreted:
    """The numpy interpreter behind the Executable interface (``backend="interpret"``)."""

    def __init__(self, graph):
        self.graph = graph

    def __call__(self, *args):
        return interpret(self.graph, *args)


def compile_for(graph, backend: str, fastmath: bool, profile: bool = False, origins=None):
    """The executable of an optimised graph: native code, or the numpy interpreter
    (``origins``: see ``compile_graph``)."""
    if backend == "interpret":
        return Interpreted(graph)
    from llgrad.compiler.codegen.build import compile_graph
    return compile_graph(graph, fastmath=fastmath, profile=profile, origins=origins)


def differentiate(graph: Graph, kind: str, wrt: list[int]) -> Graph | None:
    """The joint graph a transformation of ``kind`` compiles from the forward
    ``graph``, differentiated with respect to inputs ``wrt``: none for "jit", forward
    mode for "jvp", reverse mode otherwise (with cotangent inputs for "vjp")."""
    if kind == "jit":
        return None
    return jvp(graph, wrt) if kind == "jvp" else vjp(graph, wrt, cotangents=kind == "vjp")


def origins(joint: Graph | None, optimized: Graph) -> dict:
    """``id(node) -> (pass, adjoint of)`` for the nodes of the optimised graph, for
    ``llgrad.debug_nans``'s reports: "forward" if the function's values need it (every
    node without a ``joint`` graph made by reverse mode), else "backward".  The passes
    rebuild nodes, so whose adjoint a backward node is, is found by matching: the
    forward values (as "op (line)") whose adjoint is a joint node of the same op, type
    and line as the node or, failing that, as the nearest node reading it; None when
    none matches."""
    order = topological_order(optimized.outputs)
    if joint is None or joint.adjoints is None:
        return {id(n): ("forward", None) for n in order}
    adjoints = joint.adjoints
    of = {}
    for n in topological_order(joint.outputs):
        forward = adjoints.of(n)
        if forward:
            of.setdefault((n.op, str(n.type), n.source), ", ".join(
                f"parameter {m.attrs.get('name', '')}".rstrip() if m.op == "parameter"
                else f"{m.op} ({m.source})" if m.source else m.op for m in forward))
    forward = forward_ids(optimized, adjoints.n_forward)
    result = {}
    readers: dict = {}
    for n in order:
        for x in n.inputs:
            readers.setdefault(id(x), []).append(n)
    for n in reversed(order):
        if id(n) in forward:
            result[id(n)] = ("forward", None)
            continue
        mine = of.get((n.op, str(n.type), n.source))
        if mine is None:
            mine = next((result[id(r)][1] for r in readers.get(id(n), ())
                         if result[id(r)][1] is not None), None)
        result[id(n)] = ("backward", mine)
    return result


def compile_trace(forward: Graph, joint: Graph | None, backend: str = "native",
                  fastmath: bool = False, out_tree=None, times: dict | None = None, *,
                  values: bool = True, profile: bool = False) -> Trace:
    """Optimise and compile the joint graph (the forward graph when there is none) and
    keep every stage for inspection; also how a graph built by hand is inspected.
    ``values=False`` compiles only the joint graph's gradient outputs; ``profile``
    counts the time of every kernel call."""
    times = {} if times is None else times
    passes = []
    optimized = optimize(joint if joint is not None else forward, passes)
    first_output = len(forward.outputs) if joint is not None and not values else 0
    runs = optimized if not first_output else Graph(
        optimized.inputs, optimized.outputs[first_output:], name=optimized.name)
    t0 = time.perf_counter()
    executable = compile_for(runs, backend, fastmath, profile,
                             origins=functools.partial(origins, joint, optimized))
    times["compile_s"] = time.perf_counter() - t0
    return Trace(forward, joint, passes, executable, out_tree, times, first_output)


#: native entries chained in front of a Staged function (each falls back to the one
#: before it, the first to ``Staged._call``): the hot signatures of a program
_MAX_NATIVE = 4


@contextlib.contextmanager
def _collector_paused():
    """Python's cyclic garbage collector off while a function compiles, on again after
    (if it was on).  A compile allocates tens of thousands of short-lived objects, so
    collections run during it, and in a process that has imported JAX or PyTorch one
    full collection took 14-22 ms of a 250-400 ms first call (workload 3, gc.callbacks,
    2026-12-07); what a compile leaves for the collector is collected afterwards."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class Staged(functools.partial):
    """A user function under a transformation: ``kind`` is "jit", "grad",
    "value_and_grad", "vjp" or "jvp" (forward mode, reached through ``pushforward``).

    A ``functools.partial`` of its front entry, so that a call reaches it without a
    Python frame: first ``_call`` (the Python paths), then, once a signature is hot, its
    native entry (``fastcall``), which answers calls of that signature and passes every
    other call on to the entry it replaced.  A Python ``__call__`` would add a frame to
    every call, a large share of a scalar function's (``python -m llgrad bench
    --workloads scalar --systems "llgrad native"`` times it)."""

    def __new__(cls, *args, **kwargs):
        return super().__new__(cls, print)   # the front entry is set by __init__

    def __init__(self, fn, kind: str, argnums=0, static_argnums=(), backend: str = "native",
                 fastmath: bool = False):
        # the entries in front and the fast calls refer back to this object only
        # weakly: no reference cycle, so a dropped Staged frees its code at once
        self._weak = weakref.proxy(self)
        self._front(functools.partial(Staged._call, self._weak))
        self._natives = 0
        self._promoting = threading.Lock()
        self.fn = fn
        self.kind = kind
        self.argnums = argnums
        self.static_argnums = (static_argnums,) if isinstance(static_argnums, int) else tuple(
            static_argnums)
        self.backend = backend
        self.fastmath = fastmath
        self.name = getattr(fn, "__name__", "f")
        self._cache: dict = {}
        self._fast_calls: dict = {}   # argument types -> call, see fastcall.py
        self._last_fast = fastcall.miss   # the fast call that answered last
        try:
            self._arg_names = list(inspect.signature(fn).parameters)
        except (TypeError, ValueError):
            self._arg_names = []
        self.__name__ = self.name
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__wrapped__ = fn

    def _argnums(self, nargs):
        nums = (self.argnums,) if isinstance(self.argnums, int) else tuple(self.argnums)
        out = []
        for a in nums:
            if not -nargs <= a < nargs:
                raise GradientError(f"argnums {self.argnums} is out of range for "
                                    f"{self.name}() called with {nargs} arguments")
            out.append(a % nargs)
        return tuple(out)

    def _arg_name(self, i):
        return self._arg_names[i] if i < len(self._arg_names) else f"arg{i}"

    def _key(self, args, kwargs):
        """The cache key of a call, cheap enough for every call: pytree structure, each
        leaf's shape and dtype (or Python scalar type), the static values."""
        static, dynamic = (), args
        if self.static_argnums or kwargs:
            static = tuple((i, args[i]) for i in self.static_argnums if i < len(args)) + tuple(
                sorted(kwargs.items()))
            dynamic = tuple(a for i, a in enumerate(args) if i not in self.static_argnums)
        leaves, treedef = pytree.flatten(dynamic)
        kinds = []
        for leaf in leaves:
            if type(leaf) is np.ndarray:
                kinds.append((leaf.shape, leaf.dtype))
            elif isinstance(leaf, Tracer):
                return None, leaves
            else:
                kinds.append((np.shape(leaf), type(leaf)))
        return (treedef, tuple(kinds), static, len(args)), leaves

    def _stage(self, args, kwargs, times: dict):
        """Trace and differentiate for the signature of ``args``: (forward graph, joint
        graph or None, output treedef, gradient layout).  Leaves may be Tracers of an
        enclosing trace (nested differentiation): their types are their nodes' types.
        ``times`` gets the seconds spent tracing and differentiating."""
        t0 = time.perf_counter()
        dynamic = [i for i in range(len(args)) if i not in self.static_argnums]
        names, types, offsets, treedefs = [], [], {}, {}
        for i in dynamic:
            arg_leaves, treedefs[i] = pytree.flatten(args[i])
            offsets[i] = (len(names), len(arg_leaves))
            for leaf, name in zip(arg_leaves, pytree.leaf_names(treedefs[i], self._arg_name(i))):
                types.append(leaf.node.type if isinstance(leaf, Tracer) else
                             input_type(leaf, f"argument {name} of {self.name}()"))
                names.append(name)

        def rebuild(flat_args):
            full = list(args)
            for i, a in zip(dynamic, flat_args):
                full[i] = a
            return full

        fn = functools.partial(self.fn, **kwargs) if kwargs else self.fn
        try:
            graph, out_tree = trace(fn, types, ("tuple", len(dynamic),
                                                tuple(treedefs.values())),
                                    self.name, names, static=rebuild)
        except TypeError as exc:
            nones = [self._arg_name(i) for i in dynamic if pytree.has_none(treedefs[i])]
            if isinstance(exc, LlgradError) or not nones:
                raise
            raise DTypeError(f"in {self.name}() at {raised_at(exc)}: argument {nones[0]} is "
                             f"or holds None, which llgrad treats as an empty pytree, not an "
                             f"array ({exc})") from None
        t1 = time.perf_counter()
        times["trace_s"] = t1 - t0
        if self.kind == "jit":
            return graph, None, out_tree, []
        argnums = self._argnums(len(args))
        wrt = [k for a in argnums for k in range(offsets[a][0], offsets[a][0] + offsets[a][1])]
        joint = differentiate(graph, self.kind, wrt)
        times["autodiff_s"] = time.perf_counter() - t1
        return graph, joint, out_tree, [(treedefs[a], *offsets[a]) for a in argnums]

    def _compile(self, args, kwargs, leaves):
        """The compiled Trace of this call's signature; one with no executable when the
        function closes over Tracers of an enclosing trace (``grad(lambda y: x * y)(2.0)``
        inside a trace of x): its graph reads them, so it is inlined there, not compiled."""
        times = {}
        graph, joint, out_tree, layout = self._stage(args, kwargs, times)
        if _closes_over(graph):
            return _uncompiled(graph, joint, out_tree, layout, times)
        values = self.kind != "grad"   # grad never returns the value: what only it needs never runs
        entry = compile_trace(graph, joint, self.backend, self.fastmath, out_tree, times,
                              values=values)
        entry.layout = layout
        entry.package = fastcall.packager(self.kind, self.argnums, entry, leaves)
        return entry

    def _nested(self, args, kwargs, leaves, entry=None):
        """Called on Tracers of an enclosing trace, or by a function closing over them
        (``entry``: its staged, uncompiled Trace): build the joint graph and inline it
        there, so the enclosing transformation sees (and can differentiate) ordinary
        IR.  ``grad(grad(f))`` is reverse mode applied to a backward graph."""
        if self.kind == "jit" and entry is None:
            return self.fn(*args, **kwargs)
        if self.kind == "vjp":
            raise UnsupportedError(f"llgrad.vjp of {self.name}() inside another llgrad "
                                   f"transformation is not supported")
        if entry is None:
            entry = _uncompiled(*self._stage(args, kwargs, {}), {})
        joint = entry.ir if entry.backward is None else entry.backward
        nodes = inline(current().builder, joint, [lift(leaf) for leaf in leaves])
        package = fastcall.packager(self.kind, self.argnums, entry, leaves, tracing=True)
        return package([Tracer(n) for n in nodes])

    def inline_joint(self, args, extra_sets):
        """Inside an enclosing trace: stage ``fn`` once (its joint graph for this
        kind) and inline it once per entry of ``extra_sets``, each a flat list of values
        for the joint graph's extra parameters (jvp: tangents of the differentiated
        leaves; vjp: cotangents of the outputs).  Forward nodes are shared between the
        copies by hash-consing, and the enclosing transformation sees ordinary IR it can
        differentiate again (forward over reverse: ``hessian``).  Returns (forward
        graph, output treedef, gradient layout, flat output Tracers per set)."""
        graph, joint, out_tree, layout = self._stage(args, {}, {})
        _, leaves = self._key(args, {})
        b = current().builder
        primal = [lift(leaf) for leaf in leaves]
        params = joint.inputs[len(graph.inputs):]
        results = []
        for extra in extra_sets:
            nodes = []
            for value, p in zip(extra, params, strict=True):
                node = lift(value)
                if node.shape != p.shape:
                    raise ShapeError(f"{self.kind} of {self.name}(): {p.attrs['name']} "
                                     f"has shape {p.shape}, got an array of shape {node.shape}")
                nodes.append(node if node.dtype == p.dtype else b.convert(node, dtype=p.dtype))
            results.append([Tracer(n) for n in inline(b, joint, primal + nodes)])
        return graph, out_tree, layout, results

    def pushforward(self, args, tangent_sets):
        """Forward mode inside a trace (kind "jvp"): ``(fn(*args), [J·t for t in
        tangent_sets])``, outputs in the structure of fn's result; each t has one entry
        per argnum (a bare entry for an int argnums), in that argument's structure."""
        argnums = self._argnums(len(args))
        flat_sets = []
        for tangents in tangent_sets:
            tangents = (tangents,) if isinstance(self.argnums, int) else tuple(tangents)
            flat = []
            for a, t in zip(argnums, tangents, strict=True):
                t_leaves, t_tree = pytree.flatten(t)
                if t_tree != pytree.flatten(args[a])[1]:
                    raise ShapeError(f"jvp of {self.name}(): the tangent of argument "
                                     f"{self._arg_name(a)} does not have its structure")
                flat += t_leaves
            flat_sets.append(flat)
        graph, out_tree, _, results = self.inline_joint(args, flat_sets)
        n = len(graph.outputs)
        value = pytree.unflatten(out_tree, results[0][:n]) if results else self.fn(*args)
        return value, [pytree.unflatten(out_tree, r[n:]) for r in results]

    def trace(self, *args, **kwargs) -> Trace:
        """Trace and compile for these arguments (cached) and return the inspection object."""
        return self._entry(args, kwargs)[0]

    def __repr__(self):
        return f"<llgrad {self.kind} of {self.name}>"

    def _repr_html_(self):
        """A notebook shows the inspector of the signature compiled last."""
        if not self._cache:
            return f"<p>llgrad {self.kind} of <code>{self.name}</code>: not called yet</p>"
        return list(self._cache.values())[-1]._repr_html_()

    def __get__(self, obj, objtype=None):
        """Not a method when stored on a class (newer Pythons make partials bind)."""
        return self

    def __reduce__(self):
        """Copies and pickles are the same transformation, compiled anew: partial's own
        reduction would rebuild this object from its front entry alone."""
        return Staged, (self.fn, self.kind, self.argnums, self.static_argnums,
                        self.backend, self.fastmath)

    def _front(self, entry):
        functools.partial.__setstate__(self, (entry, (), None, self.__dict__))

    def _promote(self, make):
        """Put the native entry ``make(fallback)`` in front (``fastcall.build``)."""
        with self._promoting:
            if self._natives < _MAX_NATIVE:
                native = make(self.func)
                if native is not None:
                    self._front(native)
                    self._natives += 1

    def _call(self, *args, **kwargs):
        if not kwargs:
            result = self._last_fast(args)   # no signature to build when a loop repeats
            if result is not fastcall.MISS:
                return result
            fast = self._fast_calls.get(fastcall.signature(args))
            if fast is not None:
                result = fast(args)
                if result is not fastcall.MISS:
                    self._last_fast = fast
                    return result
        entry, leaves = self._entry(args, kwargs)
        if entry is None or entry.executable is None:  # inlined into the enclosing trace
            return self._nested(args, kwargs, leaves, entry)
        return entry.package(entry.executable(*leaves))

    def _entry(self, args, kwargs=None):
        kwargs = kwargs or {}
        key, leaves = self._key(args, kwargs)
        if key is None:
            return None, leaves
        try:
            entry = self._cache.get(key)
        except TypeError:
            raise LlgradError(f"static and keyword arguments of {self.name}() must be "
                              f"hashable (pass arrays positionally)") from None
        if entry is None:
            start = time.perf_counter()
            with _collector_paused():
                entry = self._compile(args, kwargs, leaves)
            entry.function = self.fn   # the inspector page shows its source
            if entry.executable is None:   # reads an enclosing trace: never cached
                return entry, leaves
            recompiles.note(self.name, self.kind, list(self._cache), key, self._arg_name,
                            time.perf_counter() - start)
            self._cache[key] = entry
            if not kwargs and not self.static_argnums:
                fast = fastcall.build(self.kind, self.argnums, entry, args, leaves,
                                      functools.partial(Staged._promote, self._weak))
                if fast is not None:
                    self._fast_calls.setdefault(fastcall.signature(args), fast)
        return entry, leaves
