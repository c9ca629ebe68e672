"""A product's epilogue: the elementwise kernel after a matrix product, run on each band
of rows as soon as the product has written them (see ``fusion``).

The epilogue is its elementwise kernel's own function over a range, ``void fn(ptr...,
i64 lo, i64 hi)``, called by the product's code: after every band of rows of the
register tiles, while those rows are still in L1, or, where the product goes another
way (BLAS, a pipeline over k), once over all rows after it, split across the pool's
threads as the kernel alone would be.  Each element is computed exactly as by the
kernel alone.  Run after the whole product instead, an update such as ``w - lr * dw``
over a 784x128 float32 gradient reads the gradient back from L2 (re-measure: the
product's line in ``python -m llgrad bench --workloads training --systems "llgrad
native" --profile``, with and without the epilogue).
"""
from __future__ import annotations

from dataclasses import dataclass

from llvmlite import ir

from llgrad.compiler.codegen import parallel
from llgrad.llvm.scalar import i64


@dataclass(frozen=True)
class Epilogue:
    fn: ir.Function       # void fn(pointers..., i64 lo, i64 hi)
    pointers: tuple       # its pointer arguments, as the product's function sees them
    rows: int             # rows of the product
    row_elements: int     # elements in each row
    flat: bool            # fn's range counts elements (else rows)
    state: object         # the module's ModuleState (its threads, its split parts)

    def run(self, b: ir.IRBuilder, pointers, first, count) -> None:
        """Rows ``[first, first + count)`` (i64 values), with ``pointers`` standing for
        ``self.pointers`` in the function ``b`` builds."""
        lo, hi = first, b.add(first, count)
        if self.flat:
            lo, hi = b.mul(lo, i64(self.row_elements)), b.mul(hi, i64(self.row_elements))
        b.call(self.fn, [*pointers, lo, hi])

    def run_all(self, b: ir.IRBuilder) -> None:
        """Every row, cut across the pool's threads when the kernel alone would be."""
        size = self.rows * self.row_elements if self.flat else self.rows
        threads = self.state.options.threads
        unit = parallel.split_unit(threads, self.rows * self.row_elements, self.rows, self.flat)
        if unit is not None:
            parallel.call_split(self.state, b, self.fn, list(self.pointers), size, threads, unit)
        else:
            b.call(self.fn, [*self.pointers, i64(0), i64(size)])
