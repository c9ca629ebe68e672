"""Tensor types: a static shape and one of four dtypes.

Shapes are fully static because llgrad specialises every trace to the shapes it
was called with (as JAX does); a new shape is a new trace, never a runtime branch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llgrad.ir.errors import DTypeError

#: The dtypes llgrad computes with, by name.  Everything else is rejected at the boundary.
DTYPES = {
    "float64": np.dtype(np.float64),
    "float32": np.dtype(np.float32),
    "int64": np.dtype(np.int64),
    "bool": np.dtype(np.bool_),
}
FLOAT_DTYPES = ("float64", "float32")


def dtype_name(dtype) -> str:
    """Map a numpy dtype (or anything np.dtype accepts) to an llgrad dtype name.

    Smaller integer types widen to int64 so that user code with int32 indices
    still works; anything without a faithful native representation is an error.
    """
    dt = np.dtype(dtype)
    if dt.kind == "f" and dt.itemsize in (4, 8):
        return "float32" if dt.itemsize == 4 else "float64"
    if dt.kind == "f" and dt.itemsize == 2:
        return "float32"
    if dt.kind in "iu":
        return "int64"
    if dt.kind == "b":
        return "bool"
    raise DTypeError(f"dtype {dt} is not supported by llgrad (supported: {', '.join(DTYPES)})")


_INT64_MAX = np.iinfo(np.int64).max


def check_fits_int64(arr: np.ndarray, where: str) -> None:
    """uint64 values above 2**63 - 1 would wrap to negative int64s: refuse them."""
    if arr.dtype.kind == "u" and arr.dtype.itemsize == 8 and arr.size and arr.max() > _INT64_MAX:
        raise DTypeError(f"{where}: the uint64 value {arr.max()} does not fit int64, the "
                         f"integer type llgrad computes with")


@dataclass(frozen=True)
class TensorType:
    shape: tuple[int, ...]
    dtype: str

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise DTypeError(f"unknown dtype {self.dtype!r}")
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def np_dtype(self) -> np.dtype:
        return DTYPES[self.dtype]

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    def with_shape(self, shape) -> "TensorType":
        return TensorType(tuple(shape), self.dtype)

    def with_dtype(self, dtype: str) -> "TensorType":
        return TensorType(self.shape, dtype)

    def __str__(self) -> str:
        short = {"float64": "f64", "float32": "f32", "int64": "i64", "bool": "bool"}[self.dtype]
        return f"{short}[{','.join(map(str, self.shape))}]"


def type_of(value) -> TensorType:
    """The TensorType of a concrete numpy value or Python scalar."""
    arr = np.asarray(value)
    return TensorType(arr.shape, dtype_name(arr.dtype))
