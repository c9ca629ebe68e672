"""Where CPython and numpy keep the data pointers a call needs, checked in this process.

Reading ``array.ctypes.data`` (or any Python-level equivalent) costs about half a
microsecond per array, which was most of the call overhead of a small model.  The
generated code can instead read the pointers itself from the list of argument arrays:
a list's item vector sits at a fixed offset in the list object, and an array's data
pointer at a fixed offset in the array object.  Those offsets are ABI facts of the
interpreter and of numpy, so they are measured on live objects here, and the fast
entry is used only when the measurement agrees with the documented layout (a
free-threaded or debug interpreter, or PyPy, simply keeps the slower path).
"""
from __future__ import annotations

import ctypes
import sys

import numpy as np

#: PyListObject.ob_item and PyArrayObject_fields.data on 64-bit CPython builds
_LIST_ITEMS, _ARRAY_DATA = 24, 16


def _word(address: int) -> int:
    return ctypes.c_void_p.from_address(address).value or 0


def _measure():
    if sys.implementation.name != "cpython" or ctypes.sizeof(ctypes.c_void_p) != 8:
        return None
    if getattr(sys, "_is_gil_enabled", lambda: True)() is False or hasattr(sys, "gettotalrefcount"):
        return None
    probes = [np.arange(3.0), np.zeros((2, 2), np.float32), np.empty(0)]
    items = _word(id(probes) + _LIST_ITEMS)
    for k, probe in enumerate(probes):
        if items == 0 or _word(items + 8 * k) != id(probe):
            return None
        if _word(id(probe) + _ARRAY_DATA) != probe.ctypes.data:
            return None
    return _LIST_ITEMS, _ARRAY_DATA


#: (offset of a list's item vector, offset of an array's data pointer), or None
LAYOUT = _measure()
