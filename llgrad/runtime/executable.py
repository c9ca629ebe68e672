"""Calling compiled code: argument checks, pointer marshalling, fresh outputs.

Every argument is checked (count, shape, dtype) before native code runs, because
native code trusts its shapes completely.  The entry point takes one pointer to a
packed ``void*`` array ``[inputs..., outputs..., arena]``; the arena (scratch for
intermediates) is allocated once per executable and per calling thread.
"""
from __future__ import annotations

import ctypes
import sys
import threading

import numpy as np

from llgrad.ir.errors import DTypeError, ShapeError
from llgrad.ir.types import dtype_name

_ALIGN = 64
_ENTRY = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


def _owned_refcount() -> int:
    """What sys.getrefcount reports, in the check below, for an array only we hold."""
    probe = [np.empty(0)]
    return max(sys.getrefcount(a) for a in probe)


_OWNED = _owned_refcount()


def _address(array: np.ndarray) -> int:
    """The data pointer of a contiguous array; through ctypes' buffer protocol it costs
    a third of ``array.ctypes.data`` (which read-only and empty arrays still need)."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(array))
    except (TypeError, ValueError):
        return array.ctypes.data


class Executable:
    """A compiled Graph: ``exe(*arrays) -> list of fresh numpy arrays``."""

    def __init__(self, graph, compiled, *, arena_bytes: int, llvm_ir: str, plan=None):
        self.graph = graph
        self.llvm_ir = llvm_ir
        self.plan = plan
        self.arena_bytes = arena_bytes
        self._compiled = compiled   # keeps the JIT engine (and so the code) alive
        self._entry = _ENTRY(compiled.address)
        self._inputs = [(p.attrs.get("name", f"arg{i}"), p.shape, p.type.np_dtype, p.dtype)
                        for i, p in enumerate(graph.inputs)]
        self._outputs = [(o.shape, o.type.np_dtype) for o in graph.outputs]
        self._n = len(self._inputs) + len(self._outputs) + 1
        self._local = threading.local()

    @property
    def llvm_ir_optimized(self) -> str:
        return self._compiled.llvm_ir_optimized

    @property
    def asm(self) -> str:
        return self._compiled.asm()

    def _thread_state(self):
        """(packed pointer array, its address) for this thread, with its own arena."""
        state = getattr(self._local, "state", None)
        if state is None:
            arena = np.empty(self.arena_bytes + _ALIGN, np.uint8)
            base = arena.ctypes.data
            packed = np.zeros(self._n, np.uintp)
            packed[-1] = base + (-base) % _ALIGN
            state = self._local.state = (packed, packed.ctypes.data, arena)
        return state

    def check(self, args) -> list[np.ndarray]:
        """The arguments as contiguous arrays of the compiled types, or a clear error."""
        name = self.graph.name
        if len(args) != len(self._inputs):
            raise ShapeError(f"{name}() takes {len(self._inputs)} arguments "
                             f"({', '.join(a[0] for a in self._inputs)}), got {len(args)}")
        arrays = []
        for a, (arg_name, shape, np_dtype, dtype) in zip(args, self._inputs):
            if isinstance(a, np.ndarray) and a.dtype == np_dtype and a.flags.c_contiguous:
                arr = a
            else:
                arr = self._convert(a, arg_name, np_dtype, dtype)
            if arr.shape != shape:
                raise ShapeError(f"{name}(): argument {arg_name!r} has shape {arr.shape}, "
                                 f"expected {shape}")
            arrays.append(arr)
        return arrays

    def _convert(self, a, arg_name, np_dtype, dtype):
        src = np.asarray(a)
        try:
            got = dtype_name(src.dtype)
        except DTypeError:
            got = str(src.dtype)
        python_scalar = not isinstance(a, (np.ndarray, np.generic))
        if got != dtype and not (python_scalar and np.can_cast(src.dtype, np_dtype,
                                                                "same_kind")):
            raise DTypeError(f"{self.graph.name}(): argument {arg_name!r} has dtype "
                             f"{src.dtype}, expected {dtype}")
        return np.array(src, dtype=np_dtype, order="C", copy=None)  # keeps rank 0

    def _fresh_outputs(self) -> tuple[list[np.ndarray], list[int]]:
        """New output arrays, or those of one of the last two calls once the caller has
        dropped every one of them (nothing but our pool refers to them, not even a
        view).  Two generations, because ``g = grad(...)`` in a loop still holds the
        previous result while the next call runs: a Python training loop then writes
        into warm memory instead of page-faulting through new gradients every step."""
        pool = getattr(self._local, "pool", None)
        if pool is None:
            pool = self._local.pool = []
        for outputs, addresses in pool:
            if max((sys.getrefcount(a) for a in outputs), default=_OWNED) <= _OWNED:
                return list(outputs), addresses  # the caller's list is not ours
        outputs = [np.empty(shape, dt) for shape, dt in self._outputs]
        addresses = [a.ctypes.data for a in outputs]
        pool.insert(0, (outputs, addresses))
        del pool[2:]
        return list(outputs), addresses

    def __call__(self, *args) -> list[np.ndarray]:
        arrays = self.check(args)
        outputs, output_addresses = self._fresh_outputs()
        packed, address, _ = self._thread_state()
        n = len(arrays)
        packed[:n] = [_address(a) for a in arrays]
        packed[n:n + len(outputs)] = output_addresses
        self._entry(address)
        return outputs

    def __repr__(self) -> str:
        return (f"<Executable {self.graph.name}: {len(self.graph.inputs)} inputs, "
                f"{len(self.graph.outputs)} outputs, arena {self.arena_bytes} bytes>")
