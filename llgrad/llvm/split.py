"""One module's LLVM IR, as ``llvmlite.ir`` prints it, cut into modules that compile apart.

LLVM optimises and generates code for a module on one thread, and llvmlite holds every
call into LLVM under one process-wide lock, so a large module compiles no faster on
many cores.  Cut into parts, it can compile in several processes at once
(``runtime.workers``) and the parts' object code loads into one engine, where calls
between parts resolve by name.

Where to cut: a function stays in the part of every function and global it
references, except that a kernel a driver calls may go elsewhere.  A driver is an
externally visible function (an entry point) or one codegen marks with ``DRIVER`` (a
loop's body, a branch, a part of a large graph: what calls kernels in turn); a
kernel is a ``noinline`` function.  So the cuts fall only between a driver and its
kernels: a helper keeps its callers (LLVM may still inline it, or propagate constant
arguments into it), a function to be inlined stays with its caller, and no mutable
global is duplicated.  A constant that names
nothing (a table of numbers) is copied into each part that reads it instead.  A
function called from another part loses its ``internal`` linkage and is declared in
the parts that call it.

IR of any other shape (a line this module does not recognise at the top level) is
returned whole: cutting is only ever an optimisation.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

#: a global name: @"quoted" or @plain
_NAME = re.compile(r'@("(?:[^"\\]|\\.)*"|[-a-zA-Z$._][-a-zA-Z$._0-9]*)')
#: a definition visible only inside its module
_LOCAL = re.compile(r"^define (?:internal|private) ")
#: the function attribute of a driver (see above)
DRIVER = '"llgrad-driver"'

#: what LLVM's work on a part is estimated by: its lines, and for each loop and each
#: function this many lines more (the vectoriser's versions of a loop, a function's
#: fixed work).  Measured here on workload 3's gradient, whose elementwise kernels'
#: loops cost ~5 ms and lines of straight code ~0.07 ms each: with these weights its
#: two parts took 93 and 97 ms of CPU time, with lines alone 86 and 106 (re-measure:
#: ``python benchmarks/bench_first_call.py --parts 2``)
LOOP_LINES, FUNCTION_LINES = 80, 10


@dataclass
class _Definition:
    name: str
    lines: list[str]
    function: bool
    mutable: bool = False
    driver: bool = False
    kernel: bool = False
    refs: set[str] = field(default_factory=set)

    @property
    def copied(self) -> bool:
        """A constant naming nothing: each part that reads it gets a copy."""
        return not self.function and not self.mutable and not self.refs

    @functools.cached_property
    def cost(self) -> int:
        loops = sum(line.endswith(".head:") for line in self.lines)  # llvm/loops.py's names
        return len(self.lines) + LOOP_LINES * loops + FUNCTION_LINES * self.function


def split(llvm_ir: str, parts: int, *, min_lines: int) -> list[str]:
    """``llvm_ir`` as at most ``parts`` modules, balanced by size, each of at least
    ``min_lines`` lines by ``_Definition.cost`` (one module: ``[llvm_ir]``)."""
    parsed = _parse(llvm_ir)
    if parsed is None:
        return [llvm_ir]
    header, definitions = parsed
    groups = sorted(((sum(definitions[n].cost for n in g), g) for g in _groups(definitions)),
                    key=lambda sized: -sized[0])
    for count in range(min(parts, len(groups)), 1, -1):
        loads = _balanced(groups, count)
        if min(cost for cost, _ in loads) >= min_lines:
            break
    else:
        return [llvm_ir]
    needs = [_needed(definitions, names) for _, names in loads]
    shared = {name for need in needs for name in need if definitions[name].function}
    return [_module(header, definitions, names, need, shared)
            for (_, names), need in zip(loads, needs)]


def _balanced(groups, count: int) -> list[tuple[int, list[str]]]:
    """``groups`` ((cost, names), largest first) dealt into ``count`` parts, each to the
    lightest part: (estimated cost, names) of each part."""
    loads = [[0, []] for _ in range(count)]
    for cost, group in groups:
        lightest = min(loads, key=lambda load: load[0])
        lightest[0] += cost
        lightest[1].extend(group)
    return [(cost, names) for cost, names in loads]


def _parse(llvm_ir: str):
    """(header lines, name -> definition), or None for IR this module does not know."""
    header, definitions = [], {}
    lines = iter(llvm_ir.split("\n"))
    for line in lines:
        if line.startswith("define "):
            body = [line]
            for more in lines:
                body.append(more)
                if more == "}":
                    break
            else:
                return None
            name = _NAME.search(line.partition("(")[0]).group(1)
            definitions[name] = _Definition(
                name, body, True, driver=DRIVER in line or not _LOCAL.match(line),
                kernel=" noinline" in line)
        elif line.startswith("@"):
            name, _, rest = line.partition(" = ")
            if not rest or "appending" in rest.split("[")[0]:
                header.append(line)     # llvm.compiler.used and kin: in every part
                continue
            kind = rest.split("[")[0].split("<")[0].split()
            definitions[name[1:]] = _Definition(name[1:], [line], False,
                                                mutable="constant" not in kind)
        elif line.startswith(("declare ", "!", "target ", ";", "source_filename")) or not line:
            header.append(line)
        else:
            return None
    if any(n in definitions for line in header for n in _NAME.findall(line)):
        return None             # metadata naming a definition: keep whole
    for d in definitions.values():
        d.refs = {n for line in d.lines if "@" in line for n in _NAME.findall(line)}
        d.refs = (d.refs - {d.name}) & definitions.keys()
    return header, definitions


def _groups(definitions) -> list[list[str]]:
    """The definitions that must share a part (see the module's docstring)."""
    parent = {name: name for name in definitions}

    def root(name):
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    for d in definitions.values():
        for ref in d.refs:
            other = definitions[ref]
            if d.driver and other.kernel:
                continue                # a place to cut
            if not other.copied:
                parent[root(ref)] = root(d.name)
    groups: dict[str, list[str]] = {}
    for name, d in definitions.items():
        if not d.copied:
            groups.setdefault(root(name), []).append(name)
    return list(groups.values())


def _needed(definitions, names) -> set[str]:
    """What the definitions ``names`` reference outside themselves: the kernels of
    other parts that their drivers call, and the constants they copy."""
    return {ref for name in names for ref in definitions[name].refs} - set(names)


def _module(header, definitions, names, needed, shared) -> str:
    """One part: the header, the definitions ``names`` (external where another part
    references them: ``shared``), the constants they read, and declarations of the
    functions of other parts they reference."""
    mine, body = set(names), []
    for name, d in definitions.items():
        if name in mine:
            first = _LOCAL.sub("define ", d.lines[0]) if name in shared else d.lines[0]
            body += [first, *d.lines[1:]]
        elif name in needed:
            body.append(_declaration(d.lines[0]) if d.function else d.lines[0])
    return "\n".join(header + body) + "\n"


def _declaration(define: str) -> str:
    """``define [internal] <signature> [!dbg !N]`` as ``declare <signature>``."""
    return re.sub(r"\s*!dbg !\d+\s*$", "", _LOCAL.sub("define ", define)).replace(
        "define ", "declare ", 1)
