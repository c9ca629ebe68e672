"""Which kernels compile to the same function, known before any of their code is written.

A deep network's layers, an unrolled RNN's steps and the jvps of a Jacobian repeat
the same kernels hundreds of times over other buffers.  ``module._shared`` merges
identical functions by their text, but only after each was emitted and printed,
which costs milliseconds per kernel: most of a large program's compile time, and more
than LLVM spends on the few distinct functions left.  The key says up front what
the function's code depends on, so a repeat is a dictionary hit and a call:

- every node the kernel computes, in the order it is reached from the kernel's node:
  its primitive, type, attributes and inputs (by position in that order);
- every value it reads from memory: its type (a load reads nothing else of it: the
  emitters look at their own nodes' attributes only) and which pointer argument (the
  output, then each distinct stored input, then scratch) or which constant global
  holds it;
- its pointer arguments' count, and how the loop is run (split into ranges or not,
  flat or by rows).

Everything else the emitters read is the same for the whole module (the options, the
module's declarations).  Loops, branches and products with an epilogue get no key:
their code depends on plans of their own, so they go through the text comparison only.
Source lines are left out on purpose, as ``_shared`` leaves them out: debug locations
are attached after sharing (``debuginfo``).
"""
from __future__ import annotations

import hashlib

from llgrad.ir.fingerprint import node_value


def kernel_key(kernel, inlined: set, memory, params: list, *, ranged: bool,
               flat: bool) -> bytes:
    """A digest of everything kernel ``kernel``'s function is made of (see above);
    ``params`` are the buffers its pointer arguments receive, in order."""
    h = hashlib.sha256(b"%d %d %d %d\n" % (kernel.copy, ranged, flat, len(params)))
    slot = {id(buf): k for k, buf in enumerate(params)}
    position: dict = {}

    def stored(n) -> bytes:
        buf = memory.buffers[id(n)]
        if buf.kind == "constant":
            return b"const%d" % buf.index
        return b"arg%d" % slot[id(buf)]

    def visit(root) -> None:
        stack = [(root, False)]
        while stack:
            n, expanded = stack.pop()
            if id(n) in position:
                continue
            computed = id(n) in inlined or (n is kernel.node and not kernel.copy)
            if computed and not expanded:
                stack.append((n, True))
                stack.extend((x, False) for x in reversed(n.inputs) if id(x) not in position)
                continue
            position[id(n)] = len(position)
            if not computed:    # loaded by its type: what made it does not matter
                h.update(b"%d read %s:%s" % (position[id(n)], stored(n),
                                             repr(n.type).encode()))
            else:
                inputs = ",".join(str(position[id(x)]) for x in n.inputs)
                h.update(b"%d=%s(%s):" % (position[id(n)], n.op.encode(), inputs.encode()))
                node_value(n, h)
            h.update(b"\n")

    visit(kernel.node)
    return h.digest()
