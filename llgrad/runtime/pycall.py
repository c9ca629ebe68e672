"""A compiled C function as a Python builtin: the native entry of a call signature.

A builtin made by ``PyCFunction_NewEx`` costs what calling ``len`` costs, less than a
bare ctypes call and far less than the Python around one (re-measure: ``python -m
timeit`` of a small ``llgrad.jit`` function, then again under
``LLGRAD_NO_NATIVE_ENTRY=1``): see ``codegen/pyentry.py`` for the code and
``compiler/dispatch/fastcall.py`` for when it is used.  This module owns what
the code reads besides its arguments: the table of addresses (item 0 of the
builtin's ``self`` tuple), the packed argument array with its value slots and arena,
and the pool of output arrays.  The builtin's ``self`` keeps all of them, and the JIT
engine holding the code, alive as long as the builtin.

The GIL stays held for the whole call (ctypes released it): right for calls of a few
microseconds, which is why only small executables get a native entry.  It also makes
the entry's single packed array safe under threads: only one thread at a time runs
the code, and the code touches it only where no other thread can run.  The pool's
``refill`` runs Python, so other threads' entries may run while it does (see there).
"""
from __future__ import annotations

import ctypes
import itertools
import threading

import numpy as np

from llgrad.runtime import engine

METH_VARARGS, METH_KEYWORDS = 0x0001, 0x0002
#: output pool generations: ``g = grad(...)`` in a loop still holds the previous
#: result while the next call runs (as ``Executable._fresh_outputs``)
GENERATIONS = 2


class _MethodDef(ctypes.Structure):
    _fields_ = [("ml_name", ctypes.c_char_p), ("ml_meth", ctypes.c_void_p),
                ("ml_flags", ctypes.c_int), ("ml_doc", ctypes.c_char_p)]


_new_function = ctypes.pythonapi.PyCFunction_NewEx
_new_function.restype = ctypes.py_object
_new_function.argtypes = [ctypes.POINTER(_MethodDef), ctypes.py_object, ctypes.c_void_p]

#: every PyMethodDef handed to CPython, for the life of the process: a builtin's
#: deallocation still reads its method definition, after it has released ``self``
_METHOD_DEFS: list = []


def load(llvm_ir, entry_key: str, symbol: str, capi):
    """The compiled entry cached under ``entry_key``, or ``llvm_ir()`` compiled and
    stored there; ``capi``: the C-API functions it calls, made resolvable by name here
    (the interpreter need not export them to the dynamic linker)."""
    import llvmlite.binding as llvm
    for name in capi:
        llvm.add_symbol(name, ctypes.cast(getattr(ctypes.pythonapi, name), ctypes.c_void_p).value)
    compiled = engine.load(entry_key)
    if compiled is None:
        # straight-line code, nothing for the optimiser to find: O3 would take most of
        # an entry's compile time and make no call faster (re-measure: time this call
        # for a 16-leaf entry under ``LLGRAD_NO_CACHE=1`` at speed levels 0 and 3)
        compiled = engine.jit(llvm_ir(), entry_key, {"entry": symbol}, speed_level=0)
    return compiled


def builtin(name: str, compiled, executable, header: tuple, objects: list, *, fallback,
            floats: bool, pool_at: int):
    """The builtin running ``compiled`` for ``executable``, calling ``fallback`` for
    the calls it does not answer.  Its table: the words named
    in ``header`` (``pyentry.HEADER``), then the addresses of ``objects`` (the
    signature's dict keys, dtype objects...), where ``GENERATIONS`` pools of output
    arrays go from ``objects[pool_at]`` on."""
    n_in, n_out = len(executable.input_types), len(executable.output_types)
    table = np.array([0] * len(header) + [id(obj) for obj in objects], np.uint64)
    packed, arena = executable.new_packed()
    values, results = np.zeros(n_in), np.zeros(n_out)
    if floats:
        packed[:n_in] = values.ctypes.data + 8 * np.arange(n_in)
        packed[n_in:-1] = results.ctypes.data + 8 * np.arange(n_out)
    pool = [[] for _ in range(0 if floats else GENERATIONS)]
    turn = itertools.cycle(range(len(pool)))
    swapping = threading.Lock()

    def refill():
        """New arrays for the next generation in turn (the caller holds every one).

        The entry of another thread may run between any two lines here, and takes an
        array the table names whose reference count is 1 as free: so every array the
        table names keeps a reference here until the table names others (else one the
        pool just let go of, held by a caller alone, would be written into), and the
        lock keeps two refills from pairing the table of one with the pool of the
        other."""
        arrays = [executable.allocate_output(k) for k in range(n_out)]
        ids = np.array(list(map(id, arrays)), np.uint64)
        with swapping:
            g = next(turn)
            start = len(header) + pool_at + g * n_out
            replaced, pool[g] = pool[g], arrays
            table[start:start + n_out] = ids
        del replaced
    for _ in pool:
        refill()
    scratch, empty = np.zeros(()), ()
    fill = {"fallback": id(fallback), "tuple": id(tuple), "list": id(list), "dict": id(dict),
            "float": id(float), "ndarray": id(np.ndarray), "none": id(None),
            "empty_tuple": id(empty), "run": executable.entry_address,
            "packed": packed.ctypes.data, "values": values.ctypes.data,
            "results": results.ctypes.data, "scratch": id(scratch), "refill": id(refill)}
    table[:len(header)] = [fill[field] for field in header]
    definition = _MethodDef(name.encode(), compiled.address, METH_VARARGS | METH_KEYWORDS,
                            None)
    _METHOD_DEFS.append(definition)
    keep = (compiled, executable, fallback, objects, arena, packed, values, results, pool,
            scratch, empty, refill)
    return _new_function(ctypes.byref(definition), (table, keep), None)
