"""Positions inside a tensor while a loop nest runs.

An ``Index`` carries the per-axis loop variables of the value being read and,
when the loop walks that value in its own row-major order, its flat element
offset too.  Elementwise operations pass the index through unchanged; index maps
(broadcast, transpose, slice) build a new one with axes only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from llvmlite import ir

from llgrad.llvm.scalar import i64, linearise


@dataclass(frozen=True)
class Index:
    axes: Optional[tuple]          # one i64 value per axis, or None in a flat loop
    flat: Optional[ir.Value] = None

    @staticmethod
    def scalar() -> "Index":
        return Index((), i64(0))

    def linear(self, b: ir.IRBuilder, shape) -> ir.Value:
        if self.flat is not None:
            return self.flat
        if self.axes is None:
            raise AssertionError("flat loop reached a read that needs per-axis indices")
        return linearise(b, self.axes, shape)
