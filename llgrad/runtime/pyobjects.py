"""Where CPython and numpy keep what a native call reads, checked in this process.

Reading ``array.ctypes.data`` (or any Python-level equivalent) for every array would be
most of a small model's call overhead (re-measure: ``python -m timeit -s "import numpy
as np; a = np.ones(3)" "a.ctypes.data"`` against the call's time).  The
generated code can instead read the pointers itself from the list of argument arrays:
a list's item vector sits at a fixed offset in the list object, and an array's data
pointer at a fixed offset in the array object.  The native Python entry
(``runtime.pycall``) reads more of the same kind: an object's type and reference
count, a tuple's or list's size and items, a dict's size, a float's value, an array's
rank, dimensions, dtype and flags.  Those offsets are ABI facts of the interpreter
and of numpy, so they are measured on live objects here, and the fast entries are
used only when the measurement agrees with the documented layout (a free-threaded
or debug interpreter, or PyPy, simply keeps the slower path).
"""
from __future__ import annotations

import ctypes
import sys
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Objects:
    """Byte offsets of the fields a native entry reads (64-bit CPython, numpy 1.x/2.x),
    and the array flag bits it requires."""
    refcnt: int = 0         # PyObject.ob_refcnt (Py_ssize_t)
    type: int = 8           # PyObject.ob_type
    size: int = 16          # PyVarObject.ob_size of a tuple or list
    tuple_items: int = 24   # PyTupleObject.ob_item[0] (inline)
    list_items: int = 24    # PyListObject.ob_item (a pointer to the items)
    dict_used: int = 16     # PyDictObject.ma_used
    float_value: int = 16   # PyFloatObject.ob_fval
    array_data: int = 16    # PyArrayObject_fields.data
    array_nd: int = 24      # .nd (int)
    array_dims: int = 32    # .dimensions (npy_intp *)
    array_descr: int = 56   # .descr
    array_flags: int = 64   # .flags (int)
    required_flags: int = 0x1 | 0x100   # NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED


def _word(address: int) -> int:
    return ctypes.c_void_p.from_address(address).value or 0


def _int(address: int) -> int:
    return ctypes.c_int.from_address(address).value


def _plain_cpython() -> bool:
    if sys.implementation.name != "cpython" or ctypes.sizeof(ctypes.c_void_p) != 8:
        return False
    return getattr(sys, "_is_gil_enabled", lambda: True)() is not False and not hasattr(
        sys, "gettotalrefcount")


def _measure(o: Objects):
    """(list items, array data) offsets of ``o`` where they hold here, else None."""
    if not _plain_cpython():
        return None
    probes = [np.arange(3.0), np.zeros((2, 2), np.float32), np.empty(0)]
    items = _word(id(probes) + o.list_items)
    for k, probe in enumerate(probes):
        if items == 0 or _word(items + 8 * k) != id(probe):
            return None
        if _word(id(probe) + o.array_data) != probe.ctypes.data:
            return None
    return o.list_items, o.array_data


def _agrees(o: Objects) -> bool:
    """Whether every field of ``o`` reads back what Python says of live probes."""
    value, key = 1.25, "probe"
    tup, lst, dct = (value, key, None), [key, value], {key: value, "other": 2}
    if (_word(id(tup) + o.type) != id(tuple) or _word(id(lst) + o.type) != id(list)
            or _word(id(value) + o.type) != id(float)):
        return False
    if (_word(id(tup) + o.size), _word(id(lst) + o.size), _word(id(dct) + o.dict_used)) \
            != (3, 2, 2):
        return False
    if [_word(id(tup) + o.tuple_items + 8 * k) for k in range(3)] != list(map(id, tup)):
        return False
    items = _word(id(lst) + o.list_items)
    if [_word(items + 8 * k) for k in range(2)] != list(map(id, lst)):
        return False
    if ctypes.c_double.from_address(id(value) + o.float_value).value != value:
        return False
    before = _word(id(lst) + o.refcnt)
    extra = [lst]
    if _word(id(lst) + o.refcnt) != before + 1 or not extra:
        return False
    probes = [(np.zeros((3, 4)), True), (np.zeros((3, 4), order="F"), False),
              (np.zeros(0, np.float32), True), (np.zeros(()), True),
              (np.zeros((4, 6))[:, ::2], False),
              (np.frombuffer(b"\0" * 17, np.float64, 2, 1), False)]
    for array, required in probes:
        dims = _word(id(array) + o.array_dims)
        if (_word(id(array) + o.type) != id(np.ndarray)
                or _word(id(array) + o.array_data) != array.__array_interface__["data"][0]
                or _int(id(array) + o.array_nd) != array.ndim
                or [_word(dims + 8 * k) for k in range(array.ndim)] != list(array.shape)
                or _word(id(array) + o.array_descr) != id(array.dtype)
                or (_int(id(array) + o.array_flags) & o.required_flags
                    == o.required_flags) != required):
            return False
    return True


#: (offset of a list's item vector, offset of an array's data pointer), or None
LAYOUT = _measure(Objects())

#: the offsets of ``Objects`` where this interpreter and numpy agree with them, else None
OBJECTS = Objects() if LAYOUT is not None and _agrees(Objects()) else None
