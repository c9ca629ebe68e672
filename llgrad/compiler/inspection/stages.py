"""What llgrad made of one function for one signature, every stage readable.

``llgrad.grad(loss).trace(params, x, y)`` returns a Trace: the forward graph
(``ir``), the joint graph as reverse mode produced it (``backward``), the graph after
each pass (``passes``) and the one compiled (``optimized``, with its fusion kernels),
the values the backward pass keeps (``residuals``), numbers about all of it
(``stats``, with the bytes kept and the flops checkpoints pay to recompute), and the
generated code (``llvm_ir``, ``llvm_ir_optimized``, ``asm``).
Everything is computed from the graphs when asked, so it cannot drift from them.
"""
from __future__ import annotations

import html
from collections.abc import Mapping
from functools import cached_property
from typing import NamedTuple

from llgrad.ir.svg import picture, render_dot
from llgrad.compiler.autodiff.checkpoint import recomputed_flops
from llgrad.compiler.passes.dce import removed
from llgrad.ir.errors import LlgradError
from llgrad.ir.graph import Graph
from llgrad.ir.primitives import flops
from llgrad.ir.printer import format_graph
from llgrad.ir.walk import forward_ids, scalar_constant


class Residual(NamedTuple):
    """A forward value the backward pass reads, so it is kept until the gradient is
    computed: its name in ``print(trace.optimized)``, op, type, size and source line."""
    name: str
    op: str
    type: object
    nbytes: int
    source: str | None

    def __str__(self):
        shown = (", ".join(map(str, self.type)) if isinstance(self.type, tuple)
                 else self.type)   # a loop's results: its stacked residuals among them
        return f"{self.name}: {shown} {self.op}, {self.nbytes} bytes  {self.source or ''}"


class Annotated:
    """A graph printed with one stage's remarks on its lines (``optimized``: the kernel
    each node runs in); otherwise it is the graph (``nodes``, ``count``, ``outputs``)."""

    def __init__(self, graph: Graph, notes: dict):
        self.graph = graph
        self.notes = notes

    def __getattr__(self, name):
        return getattr(self.graph, name)

    def __len__(self):
        return len(self.graph)

    def __str__(self):
        return format_graph(self.graph, notes=self.notes)

    __repr__ = __str__

    def _repr_svg_(self):
        return picture(self.graph)


def _argument_bytes(node) -> bool:
    """Whether ``node`` is an argument or a constant, or a view of one's bytes (a
    reshape, rows by ``dynamic_slice``): nothing the forward pass made or keeps."""
    while node.op in ("reshape", "dynamic_slice"):
        node = node.inputs[0]
    return node.op in ("parameter", "constant")


def _nbytes(type_) -> int:
    if isinstance(type_, tuple):
        return sum(_nbytes(t) for t in type_)
    return type_.size * type_.np_dtype.itemsize


class Stats(Mapping):
    """Numbers about every stage, read as a dict (``stats["cse_merges"]``) or printed
    as a table.  Node counts include parameters and the scalar literals the printer
    writes inline.  ``cse_merges`` counts nodes found identical to another and merged;
    ``dce_removals`` the nodes that reverse mode and the passes built but no output
    reaches; ``bytes_moved`` what the kernels read and write (each value once per
    kernel that touches it), or every node's operands and result when interpreted."""

    _STAGES = (("trace", "forward_nodes", "trace_s"), ("autodiff", "joint_nodes", "autodiff_s"))

    def __init__(self, values: dict, passes: list):
        self._values = values
        self._passes = [p.name for p in passes]

    def __getitem__(self, key):
        return self._values[key]

    def __iter__(self):
        return iter(self._values)

    def __len__(self):
        return len(self._values)

    def __str__(self):
        v = self._values
        rows = [(stage, v.get(nodes), v.get(time)) for stage, nodes, time in self._STAGES]
        rows += [(name, v.get(f"{name}_nodes"), v.get(f"{name}_s")) for name in self._passes]
        rows.append(("compile", None, v.get("compile_s")))
        lines = [f"{'stage':<10} {'nodes':>7} {'time':>10}"]
        for stage, count, seconds in rows:
            if count is None and seconds is None:
                continue
            count = "" if count is None else count
            shown = "" if seconds is None else f"{seconds * 1e3:.2f} ms"
            lines.append(f"{stage:<10} {count:>7} {shown:>10}")
        for key, label in (("kernels", "fused kernels"), ("cse_merges", "CSE merges"),
                           ("dce_removals", "DCE removals"), ("flops", "flops"),
                           ("bytes_moved", "bytes moved"), ("arena_bytes", "arena bytes"),
                           ("residual_bytes", "residual bytes"),
                           ("recomputed_flops", "recomputed flops")):
            if v.get(key) is not None:
                lines.append(f"{label:<15} {v[key]:>12,}")
        return "\n".join(lines)

    def __repr__(self):
        return repr(self._values)

    def _repr_html_(self):
        return f"<pre>{html.escape(str(self))}</pre>"


class Trace:
    """Everything llgrad made for one signature; see the module docstring.

    ``backward`` is None for ``jit`` (there is no reverse pass)."""

    #: the Python function traced (the staged function sets it): the page's source
    function = None

    def __init__(self, forward: Graph, joint: Graph | None, passes: list, executable,
                 out_tree, times: dict, first_output: int = 0):
        self.ir = forward
        self.backward = joint
        self._first_output = first_output  # grad returns the joint graph's outputs from here
        self.passes = passes
        self.executable = executable
        self.out_tree = out_tree
        self._times = times

    @property
    def n_values(self) -> int:
        """How many of the executable's outputs are the function's values (they come
        before the gradients; grad compiles none of them)."""
        return 0 if self._first_output else len(self.ir.outputs)

    @property
    def _source(self) -> Graph:
        """The graph the passes start from: the joint graph, or for jit the forward one."""
        return self.ir if self.backward is None else self.backward

    @property
    def _optimized_joint(self) -> Graph:
        """The last pass's output, values and gradients."""
        return self.passes[-1].graph if self.passes else self._source

    @cached_property
    def _compiled(self) -> Graph:
        """The graph that runs: the last pass's output, without the values for grad
        (what only the value needs is never compiled)."""
        graph = self._optimized_joint
        if not self._first_output:
            return graph
        return Graph(graph.inputs, graph.outputs[self._first_output:], name=graph.name,
                     output_names=(graph.output_names or ())[self._first_output:] or None)

    @property
    def _plan(self):
        plan = getattr(self.executable, "plan", None)
        return plan[0] if plan else None

    @property
    def optimized(self) -> Annotated:
        """The compiled graph; each line says which fusion kernel computes it
        (``kernel 3``) or is computed inside another's loop (``fused into kernel 3``)."""
        notes = {}
        plan = self._plan
        for k, kernel in enumerate(plan.kernels if plan else ()):
            if not kernel.copy:
                notes[id(kernel.node)] = f"kernel {k}"
            for node in kernel.inlined:
                notes[id(node)] = f"fused into kernel {k}"
        return Annotated(self._compiled, notes)

    @property
    def kernels(self) -> str:
        """The loop nests the native code runs, one line each, with what was fused in."""
        plan = self._plan
        return plan.summary() if plan else "(interpreted: no kernels)"

    @property
    def residuals(self) -> list[Residual]:
        """The forward values the backward pass of the compiled graph reads (constants
        and the arguments themselves are not kept, so not listed)."""
        if self.backward is None:
            return []
        graph = self._compiled
        forward = forward_ids(self._optimized_joint, len(self.ir.outputs))
        names: dict = {}
        format_graph(graph, names=names)
        kept = {}
        for node in graph.nodes:
            if id(node) in forward:
                continue
            for i in node.inputs:
                if (id(i) in forward and not _argument_bytes(i)
                        and scalar_constant(i) is None and id(i) in names):
                    kept[id(i)] = i
        return [Residual(names[id(n)], n.op, n.type, _nbytes(n.type), n.source)
                for n in graph.nodes if id(n) in kept]

    @property
    def stats(self) -> Stats:
        values = {"forward_nodes": len(self.ir.nodes),
                  "joint_nodes": None if self.backward is None else len(self.backward.nodes),
                  "optimized_nodes": len(self._compiled.nodes)}
        for p in self.passes:
            values[f"{p.name}_nodes"] = len(p.graph.nodes)
        plan = self._plan
        values["kernels"] = len(plan.kernels) if plan else None
        start = self._source
        steps = list(zip([start] + [p.graph for p in self.passes], self.passes))
        # CSE rebuilds a dead-free graph into one node per distinct value, so the
        # nodes it saves are exactly its merges
        values["cse_merges"] = sum(removed(before, p.graph) for before, p in steps
                                   if p.name == "cse")
        values["dce_removals"] = start.pruned + sum(
            p.graph.pruned + (removed(before, p.graph) if p.name == "dce" else 0)
            for before, p in steps)
        values["flops"] = sum(flops(n) for n in self._compiled.nodes)
        values["bytes_moved"] = _bytes_moved(self._compiled, plan)
        values["arena_bytes"] = getattr(self.executable, "arena_bytes", None)
        values["residual_bytes"] = sum(r.nbytes for r in self.residuals)
        values["recomputed_flops"] = recomputed_flops(self._compiled)
        values.update(self._times)
        for p in self.passes:
            values[f"{p.name}_s"] = p.seconds
        return Stats(values, self.passes)

    @property
    def llvm_ir(self) -> str:
        return self._native("llvm_ir")

    @property
    def llvm_ir_optimized(self) -> str:
        return self._native("llvm_ir_optimized")

    @property
    def asm(self) -> str:
        return self._native("asm")

    def _native(self, what):
        if not hasattr(self.executable, "plan"):
            raise LlgradError(f"{self.ir.name}() was not compiled to native code "
                              f"(backend='interpret'), so it has no {what}")
        return getattr(self.executable, what)

    def to_sympy(self, output=None, *, standard: bool = True):
        """The sympy expressions of what the function returns (for grad: the gradients;
        for value_and_grad: the value, then the gradients), or of output number ``output``
        of the joint graph (the values first), read from the joint graph as reverse mode
        built it.  The graph must be elementwise (see ``sympy_frontend.to_sympy``)."""
        from llgrad.compiler.frontend.sympy_io import to_sympy
        graph = self._source
        if output is not None:
            return to_sympy(graph, output, standard=standard)
        return tuple(to_sympy(graph, i, standard=standard)
                     for i in range(self._first_output, len(graph.outputs)))

    def to_dot(self, path=None) -> str:
        """Graphviz text of the joint graph (the forward graph for jit), forward and
        backward nodes coloured apart; also written to ``path`` when given."""
        from llgrad.ir.dot import to_dot
        text = to_dot(self._source)
        if path is not None:
            with open(path, "w") as f:
                f.write(text)
        return text

    def render(self, path) -> str:
        """Draw the graph with Graphviz's ``dot`` program into ``path``; the format is
        its extension (svg, png, pdf)."""
        path = str(path)
        fmt = path.rsplit(".", 1)[-1] if "." in path else "svg"
        svg = render_dot(self.to_dot(), fmt)
        with open(path, "wb") as f:
            f.write(svg)
        return path

    def as_python(self) -> str:
        """The joint graph (the forward graph for jit) as numpy source, one line per
        node, defining a function of the flattened arguments; ``exec`` it, or save it
        to a file, import it and step through it in pdb."""
        from llgrad.ir.pysource import to_python
        return to_python(self._source)

    def __repr__(self):
        return f"<llgrad.Trace of {self.ir.name}: {dict(self.stats)}>"

    def to_html(self, path=None, *, title: str | None = None, profile=None) -> str:
        """The inspector page (``inspection/page.py``): every stage linked to the
        source lines; also written to ``path`` when given.  ``profile``: an
        ``llgrad.profile`` of the same function, shown in a tab of its own."""
        from llgrad.compiler.inspection.page import html_report
        page = html_report(self, title or f"llgrad: {self.ir.name}", profile=profile)
        if path is not None:
            with open(path, "w") as f:
                f.write(page)
        return page

    def _repr_html_(self):
        """A notebook shows the inspector page inline."""
        from llgrad.compiler.inspection.page import inline_frame
        return inline_frame(self.to_html())

    def _repr_svg_(self):
        """The drawing of the joint graph (the forward graph for jit)."""
        return picture(self._source)


def _bytes_moved(graph: Graph, plan) -> int:
    if plan is not None:
        return sum(_nbytes(k.node.type) + sum(_nbytes(r.type) for r in k.reads)
                   for k in plan.kernels)
    return sum(_nbytes(n.type) + sum(_nbytes(i.type) for i in n.inputs)
               for n in graph.nodes if n.op != "parameter" and scalar_constant(n) is None)
