"""``llgrad.debug_nans``: find the op that first makes a NaN or Inf.

With ``debug_nans(True)`` (or ``LLGRAD_DEBUG_NANS=1`` in the environment) every
graph compiled from then on is built unfused (each op its own kernel) and with a
scan of each kernel's float output after it runs (``compiler/codegen/finite.py``);
the first NaN or Inf stops the call with a ``FloatingPointError`` naming the op,
whether it is in the forward or the backward pass (and, in the backward pass, whose
adjoint it is) and the user's source line.  The flag is read when a function is
compiled, and ``jit``/``grad`` compile once per call signature: turn it on before
the first call of the functions to check (or make them again).  Off, nothing is
emitted and nothing is checked.  See docs/debugging.md.
"""
from __future__ import annotations

from llgrad.compiler.codegen import build


class debug_nans:
    """``debug_nans(True)`` turns the checks on for code compiled afterwards,
    ``debug_nans(False)`` off, ``debug_nans(None)`` back to ``LLGRAD_DEBUG_NANS``;
    ``with debug_nans():`` (or ``with debug_nans(True):``) turns them on for the
    block and restores the previous setting after it."""

    def __init__(self, on: bool | None = True):
        self._previous = build._debug_nans[0]
        build.set_debug_nans(on)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        build.set_debug_nans(self._previous)
        return False


__all__ = ["debug_nans"]
