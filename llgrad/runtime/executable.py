"""Calling compiled code: argument checks, pointer marshalling, fresh outputs.

Every argument is checked (count, shape, dtype) before native code runs, because
native code trusts its shapes completely.  The entry point takes one pointer to a
packed ``void*`` array ``[inputs..., outputs..., arena]``; the arena (scratch for
intermediates) is allocated once per executable and per calling thread.  Where the
module has a ``.list`` entry, the native code fills the input slots itself from the
checked list of arrays; an all-scalar graph also has ``scalar_call``.
"""
from __future__ import annotations

import ctypes
import sys
import threading

import numpy as np

from llgrad.ir.errors import TAPE_MEMORY, DTypeError, LoopLimitError, ShapeError
from llgrad.ir.types import check_fits_int64, dtype_name

_ALIGN = 64
_ENTRY = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
#: ``<entry>.list(list of arrays, packed)``: the native code reads the data pointers
_LIST_ENTRY = ctypes.CFUNCTYPE(None, ctypes.py_object, ctypes.c_void_p)


def _owned_refcount() -> int:
    """What sys.getrefcount reports, in the check below, for an array only we hold."""
    probe = [np.empty(0)]
    return max(map(sys.getrefcount, probe))


_OWNED = _owned_refcount()


def _allocate(shape, dtype, function: str, what: str) -> np.ndarray:
    """np.empty, or a MemoryError naming the function and the bytes, raised before
    any native code runs (shapes are static, so every request is known up front)."""
    try:
        return np.empty(shape, dtype)
    except MemoryError:
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        raise MemoryError(f"{function}(): cannot allocate {nbytes} bytes "
                          f"({nbytes / 2 ** 30:.1f} GiB) for {what}") from None


def _address(array: np.ndarray) -> int:
    """The data pointer of a contiguous array; through ctypes' buffer protocol it costs
    a third of ``array.ctypes.data`` (which read-only and empty arrays still need)."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(array))
    except (TypeError, ValueError):
        return array.ctypes.data


class Executable:
    """A compiled Graph: ``exe(*arrays) -> list of fresh numpy arrays``."""

    def __init__(self, graph, compiled, *, arena_bytes: int, lowering,
                 list_address: int = 0, nan_checks=None, loop_status=None):
        self.graph = graph
        self._lowering = lowering   # IR and plan; made again on demand after a cache hit
        self.arena_bytes = arena_bytes
        self._compiled = compiled   # keeps the JIT engine (and so the code) alive
        self._entry = _ENTRY(compiled.address)
        self._list_entry = _LIST_ENTRY(list_address) if list_address else None
        self._inputs = [(p.attrs.get("name", f"arg{i}"), p.shape, p.type.np_dtype, p.dtype)
                        for i, p in enumerate(graph.inputs)]
        self._outputs = [(o.shape, o.type.np_dtype) for o in graph.outputs]
        self._n = len(self._inputs) + len(self._outputs) + 1
        self._local = threading.local()
        #: (status word, labels) of a module built with ``check_finite`` (codegen/finite.py)
        self._nan_status = None
        if nan_checks is not None:
            self._nan_status = ctypes.c_int64.from_address(nan_checks[0])
            self._nan_labels = nan_checks[1]
        #: the status word of a module with a bounded while_loop (codegen/while_loop.py):
        #: 0, or the address of the message of the loop that ran out of steps
        self._loop_status = (None if loop_status is None
                             else ctypes.c_int64.from_address(loop_status))

    @property
    def checks_status(self) -> bool:
        """Whether a call may fail in native code (NaN checks, a while_loop's max_steps)
        and so must run through ``run``, which raises: no scalar or native entry."""
        return self._nan_status is not None or self._loop_status is not None

    def _raise_nan(self) -> None:
        """FloatingPointError naming the kernel whose output held a NaN or Inf."""
        number, self._nan_status.value = self._nan_status.value, 0
        label = self._nan_labels[number - 1]
        where = f"{label['pass']} pass" if label["pass"] else "graph"
        if label.get("adjoint_of"):
            where += f", adjoint of {label['adjoint_of']}"
        raise FloatingPointError(
            f"llgrad.debug_nans: NaN or Inf in the output of {label['op']} "
            f"({label['type']}; {where}) at {label['source'] or 'an unknown line'}, "
            f"kernel {label['kernel']} of {label['graph']}()")

    @property
    def llvm_ir(self) -> str:
        return self._lowering.llvm_ir

    @property
    def plan(self):
        """(fusion, memory plan) of the graph, as ``compiler.passes`` made them."""
        return self._lowering.plan

    @property
    def input_types(self) -> list[tuple[tuple, np.dtype]]:
        """(shape, numpy dtype) of each input: what ``run`` takes without a ``check``."""
        return [(shape, np_dtype) for _, shape, np_dtype, _ in self._inputs]

    @property
    def output_types(self) -> list[tuple[tuple, np.dtype]]:
        """(shape, numpy dtype) of each output."""
        return list(self._outputs)

    @property
    def entry_address(self) -> int:
        """The address of ``void entry(void **packed)`` (see the module docstring)."""
        return self._compiled.address

    @property
    def llvm_ir_optimized(self) -> str:
        return self._compiled.llvm_ir_optimized

    @property
    def asm(self) -> str:
        return self._compiled.asm()

    def _thread_state(self):
        """(packed pointer array, its address, arena) for this thread; the last item is
        the output addresses now in the packed array (a list, updated in place)."""
        state = getattr(self._local, "state", None)
        if state is None:
            packed, arena = self.new_packed()
            state = self._local.state = (packed, packed.ctypes.data, arena, [None])
        return state

    def new_packed(self) -> tuple[np.ndarray, np.ndarray]:
        """(packed argument array, arena): a caller's own slots, the last one pointing
        at a fresh arena aligned to 64 bytes; both must outlive any native call on them."""
        arena = _allocate(self.arena_bytes + _ALIGN, np.uint8, self.graph.name,
                          "the scratch memory of its intermediate values")
        base = arena.ctypes.data
        packed = np.zeros(self._n, np.uintp)
        packed[-1] = base + (-base) % _ALIGN
        return packed, arena

    def check(self, args) -> list[np.ndarray]:
        """The arguments as contiguous arrays of the compiled types, or a clear error."""
        name = self.graph.name
        if len(args) != len(self._inputs):
            raise ShapeError(f"{name}() takes {len(self._inputs)} arguments "
                             f"({', '.join(a[0] for a in self._inputs)}), got {len(args)}")
        arrays = []
        for a, (arg_name, shape, np_dtype, dtype) in zip(args, self._inputs):
            if (isinstance(a, np.ndarray) and a.dtype == np_dtype and a.flags.c_contiguous
                    and a.flags.aligned):   # native loads assume the dtype's alignment
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
        check_fits_int64(src, f"{self.graph.name}(): argument {arg_name!r}")
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
            if max(map(sys.getrefcount, outputs), default=_OWNED) <= _OWNED:
                return list(outputs), addresses  # the caller's list is not ours
        outputs = [self.allocate_output(k) for k in range(len(self._outputs))]
        addresses = [a.ctypes.data for a in outputs]
        pool.insert(0, (outputs, addresses))
        del pool[2:]
        return list(outputs), addresses

    def allocate_output(self, k: int) -> np.ndarray:
        """A new array for output ``k`` (a MemoryError naming the function if none)."""
        shape, dtype = self._outputs[k]
        return _allocate(shape, dtype, self.graph.name, f"an output of shape {shape}")

    def scalar_call(self):
        """For a graph whose inputs and outputs are all float64 scalars, ``call(values)
        -> list of floats``: the values go straight into per-thread ctypes slots whose
        addresses are packed once, so a call skips checks (the caller has matched the
        signature: a tuple of Python floats) and allocates no arrays.  None otherwise."""
        scalar = ((), np.dtype(np.float64))
        if (self.checks_status or any((shape, dt) != scalar for _, shape, dt, _ in self._inputs)
                or any(out != scalar for out in self._outputs)):
            return None
        n_in, n_out, entry, local = len(self._inputs), len(self._outputs), self._entry, \
            threading.local()

        def state():
            values, results = (ctypes.c_double * n_in)(), (ctypes.c_double * n_out)()
            packed = (ctypes.c_void_p * self._n)(
                *[ctypes.addressof(values) + 8 * i for i in range(n_in)],
                *[ctypes.addressof(results) + 8 * i for i in range(n_out)],
                int(self._thread_state()[0][-1]))
            local.state = (values, results, ctypes.addressof(packed), packed)
            return local.state

        def call(args):
            try:
                values, results, address, _ = local.state
            except AttributeError:
                values, results, address, _ = state()
            values[:] = args
            entry(address)
            return results[:]
        return call

    def __call__(self, *args) -> list[np.ndarray]:
        return self.run(self.check(args))

    def run(self, arrays: list) -> list[np.ndarray]:
        """Run on arrays that ``check`` would return unchanged (C-contiguous, aligned,
        of the compiled shapes and dtypes), in a list no other code holds."""
        outputs, output_addresses = self._fresh_outputs()
        packed, address, _, packed_outputs = self._thread_state()
        n = len(arrays)
        if packed_outputs[0] is not output_addresses:   # another pool generation
            packed[n:n + len(outputs)] = output_addresses
            packed_outputs[0] = output_addresses
        if self._list_entry is not None and type(arrays) is list:
            self._list_entry(arrays, address)   # a list of checked arrays, only ours
        else:
            packed[:n] = [_address(a) for a in arrays]
            self._entry(address)
        if self._nan_status is not None and self._nan_status.value:
            self._raise_nan()
        if self._loop_status is not None and self._loop_status.value:
            message, self._loop_status.value = self._loop_status.value, 0
            text = ctypes.string_at(message).decode()
            raise (MemoryError if text.startswith(TAPE_MEMORY) else LoopLimitError)(text)
        return outputs

    def __repr__(self) -> str:
        return (f"<Executable {self.graph.name}: {len(self.graph.inputs)} inputs, "
                f"{len(self.graph.outputs)} outputs, arena {self.arena_bytes} bytes>")
