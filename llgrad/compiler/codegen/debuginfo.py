"""Debug locations: every instruction of the generated code names the user's line.

The assembly's ``.loc`` lines then map machine code back to the user's Python (the
inspector links them, and ``perf annotate`` and ``gdb`` show the lines too).  Only
metadata is added, never an instruction: kernels are compared for sharing
(``module._shared``) before any location is attached, and LLVM keeps debug
information out of its optimisation decisions (tests/test_debuginfo.py compares the
machine code with and without it).

How fine the mapping is: a kernel's loop control, loads and stores carry the line of
the node the kernel computes; the arithmetic of every node fused into it carries that
node's own line (``KernelContext.compute`` calls ``tag``).  A function with no kernel
of its own (a band of rows, a loop-free region, the entry point) takes the line of
the kernel it is part of, else of its first tagged instruction, else line 0 ("no
source line").  Everything is attached in one walk over the module at its end
(``attach``): a dictionary look-up per instruction.  ``Node.source`` is
``"file.py:line"``, the file by its base name, so that is what the line table names.
"""
from __future__ import annotations

import functools
import hashlib
import itertools

from llvmlite import ir

I32 = ir.IntType(32)


@functools.lru_cache(maxsize=4096)
def parse(source: str | None) -> tuple[str, int] | None:
    """``("file.py", line)`` of a node's ``source``, or None when it has none."""
    if not source:
        return None
    name, _, line = source.rpartition(":")
    return (name, int(line)) if name and line.isdigit() else None


def sources_key(graph) -> str:
    """A digest of every node's source line, loop bodies and branches included: object
    code and optimised IR carry the lines, so the on-disk cache must tell apart graphs
    that differ only there."""
    h = hashlib.sha256()
    stack = [graph]
    while stack:
        g = stack.pop()
        for node in g.nodes:
            h.update(f"{node.source or ''}\n".encode())
            for value in node.attrs.values():
                inner = value if isinstance(value, (tuple, list)) else (value,)
                stack.extend(g for g in inner if hasattr(g, "nodes"))
    return h.hexdigest()


class Lines:
    """What emission records for ``attach``: the node each kernel function computes,
    and the node each fused value's instructions came from."""

    def __init__(self):
        self.functions: dict = {}      # function name -> source of its kernel's node
        self.instructions: dict = {}   # id(instruction) -> (instruction, source)

    def kernel(self, fn: ir.Function, node) -> None:
        if node.source:
            self.functions[fn.name] = node.source

    def mark(self, b: ir.IRBuilder):
        """Where the builder stands before one node's instructions are emitted."""
        return b.block, len(b.block.instructions)

    def tag(self, mark, b: ir.IRBuilder, node) -> None:
        """The instructions emitted since ``mark`` came from ``node`` (those of a value
        computed inside them keep the line they were tagged with first)."""
        if not node.source:
            return
        block, start = mark
        emitted = block.instructions[start:]
        if b.block is not block:
            emitted = emitted + b.block.instructions
        for instr in emitted:
            self.instructions.setdefault(id(instr), (instr, node.source))


def attach(module: ir.Module, lines: Lines) -> None:
    """Give every defined function of ``module`` a subprogram and every instruction a
    location; nothing when no node had a source line (a graph built by hand)."""
    sources = itertools.chain(lines.functions.values(),
                              (s for _, s in lines.instructions.values()))
    first = next((p for p in map(parse, sources) if p), None)
    if first is None:
        return
    files, scopes, locations = {}, {}, {}

    def file(name):
        if name not in files:
            files[name] = module.add_debug_info("DIFile", {"filename": name, "directory": ""})
        return files[name]

    main_file = file(first[0])
    unit = module.add_debug_info("DICompileUnit", {
        "language": ir.DIToken("DW_LANG_Python"), "file": main_file, "producer": "llgrad",
        "isOptimized": True, "runtimeVersion": 0,
        "emissionKind": ir.DIToken("LineTablesOnly")}, is_distinct=True)
    no_types = module.add_debug_info("DISubroutineType", {"types": module.add_metadata([])})

    def location(subprogram, home, where):
        """The DILocation of ``where`` (file, line) inside ``subprogram`` of file ``home``."""
        key = (subprogram.name, where)
        if key not in locations:
            scope = subprogram
            if where[0] != home:   # a line of another file: a lexical block of that file
                if (subprogram.name, where[0]) not in scopes:
                    scopes[subprogram.name, where[0]] = module.add_debug_info(
                        "DILexicalBlockFile", {"scope": subprogram, "file": file(where[0]),
                                               "discriminator": 0})
                scope = scopes[subprogram.name, where[0]]
            locations[key] = module.add_debug_info(
                "DILocation", {"line": where[1], "column": 0, "scope": scope})
        return locations[key]

    kernel_of = sorted(lines.functions, key=len, reverse=True)
    defined = [f for f in module.functions if f.blocks]
    lines_of = {fn.name: _own_line(fn, lines, kernel_of) for fn in defined}
    for fn in defined:
        own = lines_of[fn.name]
        home = own[0] if own else first[0]
        line = own[1] if own else 0
        subprogram = module.add_debug_info("DISubprogram", {
            "name": fn.name, "linkageName": fn.name, "file": file(home), "line": line,
            "scopeLine": line, "type": no_types, "unit": unit,
            "spFlags": ir.DIToken("DISPFlagDefinition | DISPFlagOptimized")},
            is_distinct=True)
        fn.set_metadata("dbg", subprogram)
        for block in fn.blocks:
            for instr in block.instructions:
                tagged = lines.instructions.get(id(instr))
                where = parse(tagged[1]) if tagged else _callee_line(instr, lines_of) or own
                instr.metadata["dbg"] = location(subprogram, home, where or (home, 0))
                instr._clear_string_cache()   # printed once when kernels were compared
        fn._clear_string_cache()
    flags = [module.add_metadata([I32(7), "Dwarf Version", I32(5)]),
             module.add_metadata([I32(2), "Debug Info Version", I32(3)])]
    for flag in flags:
        module.add_named_metadata("llvm.module.flags", flag)
    module.add_named_metadata("llvm.dbg.cu", unit)


def _own_line(fn, lines: Lines, kernel_of: list):
    """(file, line) a function stands for: its kernel's node, the kernel whose name its
    own extends (``<kernel>.rows``, ``<kernel>.part``...), or its first tagged line."""
    source = lines.functions.get(fn.name)
    if source is None:
        source = next((lines.functions[k] for k in kernel_of if fn.name.startswith(k + ".")),
                      None)
    if source is None:
        source = next((lines.instructions[id(i)][1] for block in fn.blocks
                       for i in block.instructions if id(i) in lines.instructions), None)
    return parse(source)


def _callee_line(instr, lines_of: dict):
    """A call of a generated function runs its kernel: the call stands for its line."""
    return lines_of.get(getattr(getattr(instr, "callee", None), "name", None))
