"""Which source line each line of every stage's text came from.

The inspector page links the stages through these: a printed graph names its node's
``file:line`` in a comment (and, in a joint graph, whose adjoint a backward node is);
LLVM IR names it through ``!dbg`` locations (``codegen/debuginfo.py``); assembly
through ``.loc`` directives.  Each function here reads one stage's text as it is
printed and returns a ``Line`` per line, so the links can never disagree with the
text a reader sees.
"""
from __future__ import annotations

import re
from typing import NamedTuple


class Line(NamedTuple):
    text: str
    source: int | None = None     # the user's line it came from, in the page's file
    node: str | None = None       # the value it defines (``%5``), in a printed graph
    adjoint_of: tuple = ()        # the forward values a backward node is the adjoint of
    backward: bool = False


_GRAPH_LINE = re.compile(r"^\s*(%\d+):.*?(?:#\s+(.*))?$")


def graph_lines(text: str, file: str) -> list[Line]:
    """A printed graph (``ir.printer``): each node's name, line, and adjoint."""
    lines = []
    for text_line in text.splitlines():
        m = _GRAPH_LINE.match(text_line)
        if not m:
            lines.append(Line(text_line))
            continue
        remark = m.group(2) or ""
        where = re.match(r"(\S+):(\d+)", remark)
        source = int(where.group(2)) if where and where.group(1) == file else None
        backward = "backward" in remark
        adjoint = re.search(r"adjoint of ((?:%\d+(?:, )?)+)", remark)
        of = tuple(adjoint.group(1).replace(",", " ").split()) if adjoint else ()
        lines.append(Line(text_line, source, m.group(1), of, backward))
    return lines


_METADATA = re.compile(r"^!(\d+) = (?:distinct )?!(\w+)\((.*)\)\s*$")


def llvm_lines(text: str, file: str) -> list[Line]:
    """LLVM IR: an instruction's ``!dbg`` location, when it is a line of ``file``."""
    nodes = {}
    for text_line in text.splitlines():
        m = _METADATA.match(text_line)
        if m:
            nodes[m.group(1)] = (m.group(2), m.group(3))

    def field(fields, name):
        m = re.search(rf"\b{name}: (?:!(\d+)|\"([^\"]*)\"|(\d+))", fields)
        return None if m is None else next(g for g in m.groups() if g is not None)

    def line_of(ref):
        kind, fields = nodes.get(ref, (None, ""))
        if kind != "DILocation":
            return None
        scope = nodes.get(field(fields, "scope"), (None, ""))[1]
        named = nodes.get(field(scope, "file"), (None, ""))[1]
        return int(field(fields, "line")) if field(named, "filename") == file else None

    located = {}
    lines = []
    for text_line in text.splitlines():
        m = re.search(r"!dbg !(\d+)", text_line)
        source = None
        if m and not text_line.startswith("define"):
            ref = m.group(1)
            if ref not in located:
                located[ref] = line_of(ref)
            source = located[ref]
        lines.append(Line(text_line, source))
    return lines


def asm_lines(text: str, file: str) -> list[Line]:
    """Assembly: every instruction after a ``.loc`` of ``file`` until the next one."""
    files, current, lines = {}, None, []
    for text_line in text.splitlines():
        stripped = text_line.strip()
        if stripped.startswith(".file"):
            m = re.match(r'\.file\s+(\d+)\s+(?:"[^"]*"\s+)?"([^"]*)"', stripped)
            if m:
                files[m.group(1)] = m.group(2).rsplit("/", 1)[-1]
            lines.append(Line(text_line))
            continue
        if stripped.startswith(".loc"):
            parts = stripped.split()
            current = int(parts[2]) if files.get(parts[1]) == file and int(parts[2]) else None
            lines.append(Line(text_line, current))
            continue
        if stripped.startswith(".Lfunc_end") or text_line.endswith(":") and \
                not text_line.startswith("\t") and not text_line.startswith(".L"):
            current = None    # a new function (its label) or the end of one
        is_instruction = text_line.startswith("\t") and not stripped.startswith(".")
        lines.append(Line(text_line, current if is_instruction else None))
    return lines
