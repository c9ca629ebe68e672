"""Optional BLAS for large matrix products, registered with the JIT by name.

Preferred: the OpenBLAS that numpy's wheels bundle (``numpy.libs/libscipy_openblas*``),
called through its row-major CBLAS entry point.  It is already loaded with numpy, so
llgrad needs nothing more, and it shares numpy's thread pool: two OpenBLAS copies with
two pools of spinning threads made timings erratic (see LLVMLITE-NOTES).  Fallback:
scipy's ``cython_blas`` (Fortran convention, every argument by pointer).  Without
either, products run as generated register tiles.  Addresses are registered with
``llvm.add_symbol`` at load time, never baked into the IR.  ``LLGRAD_NO_BLAS=1``
turns BLAS off.
"""
from __future__ import annotations

import ctypes
import functools
import glob
import os
from dataclasses import dataclass

import llvmlite.binding as llvm


@dataclass(frozen=True)
class Gemm:
    symbol: str        # the name the generated code calls
    convention: str    # "cblas64"/"cblas": row-major CBLAS with 64/32-bit ints; "fortran"

    @property
    def thread_count_symbols(self) -> tuple[str, str] | None:
        """(get, set) of the BLAS's thread count, where generated code may call them:
        numpy's OpenBLAS (the one "cblas64" gemm found), registered with its gemm."""
        return OPENBLAS_THREAD_COUNT if self.convention == "cblas64" else None


#: ``int get(void)`` and ``void set(int)`` of numpy's OpenBLAS thread count
OPENBLAS_THREAD_COUNT = ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_")


#: the system's CBLAS, which an exported library links (``-lblas``)
SYSTEM_CBLAS = {"float64": Gemm("cblas_dgemm", "cblas"), "float32": Gemm("cblas_sgemm", "cblas")}

_found: dict | None = None


@functools.lru_cache(maxsize=1)
def _numpy_openblas_library():
    """numpy's bundled OpenBLAS, loaded (None where numpy brings none)."""
    import numpy
    libs = os.path.join(os.path.dirname(os.path.dirname(numpy.__file__)), "numpy.libs")
    for path in glob.glob(os.path.join(libs, "libscipy_openblas64_*.so")):
        return ctypes.CDLL(path)
    return None


def threads() -> int | None:
    """How many threads numpy's OpenBLAS runs a product on (None: not that OpenBLAS):
    a product's measured speed (``runtime.calibration``) depends on it."""
    lib = _numpy_openblas_library()
    try:
        return int(lib.scipy_openblas_get_num_threads64_())
    except AttributeError:
        return None


def set_threads(count: int) -> int | None:
    """Have numpy's OpenBLAS run on ``count`` threads; returns the count it had
    (None, and nothing changed, where that OpenBLAS is not the one found)."""
    lib = _numpy_openblas_library()
    try:
        before = lib.scipy_openblas_get_num_threads64_()
        lib.scipy_openblas_set_num_threads64_(ctypes.c_int(count))
    except AttributeError:
        return None
    return before


def _numpy_openblas() -> dict:
    lib = _numpy_openblas_library()
    if lib is not None:
        try:
            for name in ("scipy_cblas_dgemm64_", "scipy_cblas_sgemm64_") + OPENBLAS_THREAD_COUNT:
                llvm.add_symbol(name, ctypes.cast(getattr(lib, name), ctypes.c_void_p).value)
        except AttributeError:
            return {}
        return {"float64": Gemm("scipy_cblas_dgemm64_", "cblas64"),
                "float32": Gemm("scipy_cblas_sgemm64_", "cblas64")}
    return {}


def _scipy_blas() -> dict:
    try:
        from scipy.linalg import cython_blas
    except ImportError:
        return {}
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_ptr = ctypes.pythonapi.PyCapsule_GetPointer
    get_ptr.restype = ctypes.c_void_p
    get_ptr.argtypes = [ctypes.py_object, ctypes.c_char_p]
    found = {}
    for dtype, name in (("float64", "dgemm"), ("float32", "sgemm")):
        capsule = cython_blas.__pyx_capi__[name]
        llvm.add_symbol(name + "_", get_ptr(capsule, get_name(capsule)))
        found[dtype] = Gemm(name + "_", "fortran")
    return found


def available() -> dict:
    """dtype -> Gemm for the dtypes BLAS can multiply here (empty without BLAS)."""
    global _found
    if _found is None:
        _found = {}
        if os.environ.get("LLGRAD_NO_BLAS") != "1":
            _found = _numpy_openblas() or _scipy_blas()
    return dict(_found)
