"""``llgrad.export``: a compiled function as a C library that runs without Python.

The graph that ``f.trace(*example_args)`` compiles is generated again with options
for a library (no Python entry points; the threads, products and vector instructions
asked for), compiled ahead of time for the chosen CPU as position-independent code,
and linked with a C wrapper (``c_source``) into ``NAME.so`` and ``NAME.a``, beside
``NAME.h`` and ``NAME_example.c``.  Every file is written in a scratch folder inside ``path`` and moved
into place only when all of them are built, so a failure leaves nothing behind.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

import numpy as np

from llgrad import c_source
from llgrad import train as training
from llgrad.compiler.codegen import heap_tape
from llgrad.compiler.codegen.build import Lowering
from llgrad.compiler.codegen.options import CodegenOptions
from llgrad.compiler.dispatch.staging import Staged
from llgrad.compiler.frontend import pytree
from llgrad.compiler.passes.pipeline import optimize
from llgrad.ir.errors import LlgradError, UnsupportedError
from llgrad.ir.graph import Graph, every_node
from llgrad.ir.primitives_while import handle_index, limit_message
from llgrad.runtime import aot, engine, host, pool
from llgrad.runtime.blas import SYSTEM_CBLAS

#: the root of the result paths, by transformation
_VALUE_ROOT = {"jit": "out", "value_and_grad": "value", "vjp": "value"}


@dataclass(frozen=True)
class Exported:
    """The files ``export`` wrote, and what the C function takes and returns."""
    shared: str
    static: str
    header: str
    example: str
    interface: c_source.Interface


def export(f, *example_args, path, name: str | None = None, target: str = "host",
           threads: int = 1, blas: str | None = None) -> Exported:
    """Write ``f`` (``jit``, ``grad``, ``value_and_grad``, ``hessian``, ...; or the
    pullback ``llgrad.vjp`` returned, given example cotangents) for the signature of
    ``example_args`` as ``NAME.so``, ``NAME.a``, ``NAME.h`` and ``NAME_example.c`` in the
    folder ``path``.  ``target``: the CPU to compile for, "host" or any LLVM CPU name
    ("x86-64" runs on every x86-64 machine, "x86-64-v3" on those with AVX2).
    ``threads``: large kernels are split across that many threads of llgrad's pool,
    linked into the library (``NAME_init`` starts its workers, ``NAME_shutdown`` parks
    them); 1, the default, makes a library with no threads and no global state.
    ``blas="cblas"``: large products call the system's CBLAS (``cblas_dgemm``, linked
    with ``-lblas``) instead of llgrad's own kernels.  Needs a C compiler (``$CC``,
    default ``cc``) to link; the library needs none of Python."""
    staged, args, values = _exported_call(f, example_args)
    name = c_source.c_names([name or staged.name])[0]
    trace = staged.trace(*args)
    graph = trace.executable.graph
    leaves = [leaf for a in values for leaf in pytree.flatten(a)[0]]
    inputs = _leaves([p.attrs["name"] for p in graph.inputs], graph.inputs)
    outputs = _leaves(_output_paths(staged, trace, graph), graph.outputs)
    summary = _summary(staged)
    return _build(name, summary, Graph(graph.inputs, graph.outputs, name=f"{name}_kernels"),
                  inputs, outputs, leaves, target, path, threads, blas,
                  fastmath=staged.fastmath,
                  python={"kind": staged.kind, "argnums": staged.argnums,
                          "n_values": trace.n_values,
                          "out_tree": _tree_data(trace.out_tree, name),
                          "layout": [[_tree_data(t, name), start, count]
                                     for t, start, count in getattr(trace, "layout", [])],
                          "in_tree": _tree_data(pytree.flatten(tuple(values))[1], name)})


def export_train(loss, params, data, optimizer, *, batch_size: int, steps: int, path,
                 name: str | None = None, target: str = "host", threads: int = 1,
                 blas: str | None = None, opt_state=None) -> Exported:
    """Write ``steps`` optimiser steps of ``loss(params, *batch)`` as a C library (see
    ``export``).  The C function takes the parameters and the optimiser state (updated
    in place), the data arrays (``data``'s shapes: all the rows, in the caller's
    buffers), ``order`` (int64[steps * batch_size]: step ``i`` trains on the rows
    ``order[i * batch_size:(i + 1) * batch_size]``, so the caller shuffles), and
    writes ``losses`` (float64[steps], each step's loss before its update)."""
    name = c_source.c_names([name or f"train_{getattr(loss, '__name__', 'loss')}"])[0]
    data, n = training.check_data(data, batch_size)
    state = optimizer.init(params) if opt_state is None else opt_state
    graph = optimize(training.training_graph(loss, optimizer, params, state, data,
                                             batch_size, steps, in_order=False,
                                             grad_norms=False, runtime_count=False))
    order = np.arange(steps * batch_size, dtype=np.int64) % n
    values = (params, state, data, order)
    paths = [p.attrs["name"] for p in graph.inputs]
    n_carried = len(pytree.flatten((params, state))[0])
    inputs = _leaves(paths, graph.inputs)
    outputs = _leaves([f"new {p}" for p in paths[:n_carried]] + ["losses"], graph.outputs)
    summary = (f"{steps} steps of {optimizer.__class__.__name__} on "
               f"{getattr(loss, '__name__', 'loss')}() over minibatches of {batch_size} rows")
    return _build(name, summary, Graph(graph.inputs, graph.outputs, name=f"{name}_kernels"),
                  inputs, outputs, [leaf for v in values for leaf in pytree.flatten(v)[0]],
                  target, path, threads, blas, fastmath=False,
                  updates=tuple((k, k) for k in range(n_carried)),
                  python={"kind": "train", "in_tree": _tree_data(pytree.flatten(values)[1], name),
                          "params": _tree_data(pytree.flatten(params)[1], name),
                          "opt_state": _tree_data(pytree.flatten(state)[1], name)})


def _exported_call(f, example_args):
    """(the Staged function, the arguments to trace it with, every argument of the C
    function in order): a pullback exports its forward pass and itself together."""
    origin = getattr(f, "llgrad_vjp", None)
    if origin is not None:
        staged, primals = origin
        return staged, primals, (*primals, *example_args)
    if not isinstance(f, Staged):
        raise UnsupportedError(
            f"llgrad.export takes a function made by llgrad (jit, grad, value_and_grad, "
            f"hessian, ... or a pullback from llgrad.vjp); got {f!r}: wrap it in llgrad.jit")
    if f.static_argnums:
        raise UnsupportedError(f"llgrad.export of {f.name}(): static arguments are not "
                               f"supported (close over them instead)")
    return f, example_args, example_args


def _leaves(paths, nodes) -> tuple:
    names = c_source.c_names(paths)
    return tuple(c_source.Leaf(n, p, node.dtype, tuple(node.shape))
                 for n, p, node in zip(names, paths, nodes))


def _output_paths(staged, trace, graph) -> list[str]:
    """Each result's pytree path: the values (``out``/``value``), then each
    differentiated argument's gradient, named ``grad`` + the argument's path."""
    paths = pytree.leaf_names(trace.out_tree, _VALUE_ROOT.get(staged.kind, "value"))[
        :trace.n_values] if trace.n_values else []
    for _, start, count in getattr(trace, "layout", []):
        paths += [f"grad {graph.inputs[k].attrs['name']}" for k in range(start, start + count)]
    return paths


def _summary(staged) -> str:
    what = {"jit": "", "grad": "the gradient of ", "value_and_grad": "the value and gradient of ",
            "vjp": "the value and vector-Jacobian product of "}.get(staged.kind, "")
    argnums = "" if staged.kind == "jit" else f" with respect to argument(s) {staged.argnums}"
    return f"{what}{staged.name}(){argnums}, for the shapes below."


def _tree_data(treedef, name):
    try:
        return pytree.to_data(treedef)
    except ValueError as exc:
        raise UnsupportedError(f"llgrad.export of {name}: {exc}") from None


def _options(name, target: str, fastmath: bool, threads: int, blas) -> CodegenOptions:
    """Options for a library: no Python entries, products by llgrad's kernels or the
    system's CBLAS, and the vector width and libmvec variants of ``target``."""
    if blas not in (None, "cblas"):
        raise LlgradError(f"llgrad.export of {name}: blas={blas!r}; use None (llgrad's own "
                          f"kernels) or 'cblas' (the system's CBLAS)")
    try:
        features = aot.features(target)
    except aot.UnknownCPU:
        raise LlgradError(f"llgrad.export: LLVM knows no CPU named {target!r} (try 'host', "
                          f"'x86-64', 'x86-64-v3' or a name such as 'znver3')") from None
    isas = engine.isas_for(features) if engine.has_libmvec() else ()
    gemms = tuple((dtype, g.symbol, g.convention) for dtype, g in SYSTEM_CBLAS.items())
    cpu = host.for_features(features)
    return CodegenOptions(fastmath=fastmath, vector_isas=isas, blas=gemms if blas else (),
                          vector_bits=cpu.vector_bits, vector_registers=cpu.vector_registers,
                          fma_units=cpu.fma_units,
                          tile_panel_bytes=cpu.tile_panel_bytes, threads=threads)


def _build(name, summary, graph, inputs, outputs, arguments, target, path, threads, blas, *,
           fastmath, python, updates=()) -> Exported:
    cc = _compiler(name)
    if not 1 <= threads <= pool.MAX_WORKERS + 1:
        raise LlgradError(f"llgrad.export of {name}: threads={threads} must be between 1 "
                          f"and {pool.MAX_WORKERS + 1}")
    lowering = Lowering(graph, _options(name, target, fastmath, threads, blas))
    entry, limits = lowering.meta["entry"], loop_limits(graph)
    status = (entry + c_source.WHILE_STATUS,) if limits else ()
    objects = {f"{name}_kernels.o": aot.object_code(_own_pool(lowering.llvm_ir, name), target,
                                                   hidden=(entry, *status))}
    if threads > 1:
        objects[f"{name}_pool.o"] = aot.object_code(
            _own_pool(pool.module_ir(), name), target,
            hidden=tuple(f"{name}_{role}" for role in _POOL_ROLES.values()))
    optimized = "".join(text for _, text in objects.values())
    link = ("blas",) if "cblas_" in optimized else ()
    link += ("m", "mvec") if "_ZGV" in optimized else ("m",)
    link += ("pthread",) if threads > 1 else ()
    iface = c_source.Interface(name, summary, inputs, outputs, lowering.meta["arena_bytes"],
                               entry, target, link, python, updates, threads, limits)
    folder = _writable_folder(path, name)
    scratch = tempfile.mkdtemp(prefix=f".{name}-", dir=folder)
    try:
        files = {f"{name}.h": c_source.header(iface), f"{name}.c": c_source.wrapper(iface),
                 f"{name}_example.c": c_source.example(iface, arguments)}
        for file, text in files.items():
            with open(os.path.join(scratch, file), "w") as out:
                out.write(text)
        for file, (code, _) in objects.items():
            with open(os.path.join(scratch, file), "wb") as out:
                out.write(code)
        run = _runner(name, scratch)
        run([cc, "-c", "-O2", "-fPIC", "-std=c11", f"{name}.c", "-o", f"{name}_wrapper.o"])
        linked = [*objects, f"{name}_wrapper.o"]
        libs = [f"-l{lib}" for lib in link]
        run([cc, "-shared", "-o", f"{name}.so", *linked, *libs, "-Wl,-z,noexecstack"])
        run(["ar", "rcs", f"{name}.a", *linked])
        run([cc, "-std=c11", f"{name}_example.c", f"{name}.a", *libs, "-o", f"{name}_example"])
        written = {}
        try:
            for file in (f"{name}.so", f"{name}.a", f"{name}.h", f"{name}_example.c"):
                os.replace(os.path.join(scratch, file), os.path.join(folder, file))
                written[file] = os.path.join(folder, file)
        except OSError as exc:   # none or all: the files moved so far go again
            for moved in written.values():
                os.remove(moved)
            raise LlgradError(f"llgrad.export of {name}: cannot write "
                              f"{os.path.join(folder, file)}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return Exported(written[f"{name}.so"], written[f"{name}.a"], written[f"{name}.h"],
                    written[f"{name}_example.c"], iface)


def loop_limits(graph: Graph) -> tuple:
    """The message of each ``while_loop`` in ``graph`` and the bodies inside it that may
    fail, each once: a bounded one's spent ``max_steps``, or the heap tape of one whose
    tape is read that cannot grow.  What the C function's loop codes stand for."""
    messages = []
    for node in every_node(graph):
        if node.op == "while" and node.attrs["max_steps"] is not None:
            messages.append(limit_message(node))
        if node.op == "tuple_get" and node.inputs[0].op == "while" and (
                node.inputs[0].attrs.get("heap_tape")
                and node.attrs["index"] == handle_index(node.inputs[0])):
            messages.append(heap_tape.memory_message(node.inputs[0]))
    return tuple(dict.fromkeys(messages))


#: the pool's entry points, by their role in a library (``<name>_<role>``)
_POOL_ROLES = {pool.SYMBOL: "parallel", pool.REST_SYMBOL: "pool_rest",
               pool.RESET_SYMBOL: "pool_reset", pool.HOLD_SYMBOL: "blas_hold",
               pool.RELEASE_SYMBOL: "blas_release"}


def _own_pool(llvm_ir: str, name: str) -> str:
    """``llvm_ir`` with the pool's entry points named for this library, so that two
    libraries linked into one program each keep their own pool."""
    for symbol, role in _POOL_ROLES.items():
        llvm_ir = re.sub(rf'@"?{re.escape(symbol)}"?(?![\w.])', f"@{name}_{role}", llvm_ir)
    return llvm_ir


def _compiler(name) -> str:
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None or shutil.which("ar") is None:
        raise LlgradError(f"llgrad.export of {name}: linking the library needs a C compiler "
                          f"({cc!r}) and ar, and none was found (Debian: apt-get install gcc)")
    return cc


def _writable_folder(path, name) -> str:
    folder = os.path.abspath(os.fspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        probe = tempfile.TemporaryFile(dir=folder)
        probe.close()
    except OSError as exc:
        raise LlgradError(f"llgrad.export of {name}: cannot write into {folder}: "
                          f"{exc.strerror or exc}") from None
    return folder


def _runner(name, folder):
    def run(command):
        done = subprocess.run(command, cwd=folder, capture_output=True, text=True)
        if done.returncode:
            raise LlgradError(f"llgrad.export of {name}: {' '.join(command)} failed:\n"
                              f"{done.stderr.strip()}")
    return run

