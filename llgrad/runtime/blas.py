"""Optional BLAS: scipy's ``cython_blas`` gemm entry points, registered with the JIT by name.

scipy is imported only when a compile asks for BLAS.  The generated code calls
``dgemm_``/``sgemm_`` (Fortran convention, every argument by pointer); the address is
registered with ``llvm.add_symbol`` at load time, never baked into the IR.
"""
from __future__ import annotations

import ctypes
import os

import llvmlite.binding as llvm

_symbols: dict | None = None


def available() -> tuple[str, ...]:
    """The gemm symbols the JIT can resolve: ("dgemm_", "sgemm_"), or () without scipy."""
    global _symbols
    if _symbols is None:
        _symbols = {}
        if os.environ.get("LLGRAD_NO_BLAS") != "1":
            try:
                from scipy.linalg import cython_blas
            except ImportError:
                return ()
            get_name = ctypes.pythonapi.PyCapsule_GetName
            get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
            get_ptr = ctypes.pythonapi.PyCapsule_GetPointer
            get_ptr.restype = ctypes.c_void_p
            get_ptr.argtypes = [ctypes.py_object, ctypes.c_char_p]
            for name in ("dgemm", "sgemm"):
                capsule = cython_blas.__pyx_capi__[name]
                address = get_ptr(capsule, get_name(capsule))
                llvm.add_symbol(name + "_", address)
                _symbols[name + "_"] = address
    return tuple(_symbols)
