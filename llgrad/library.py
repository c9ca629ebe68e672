"""``llgrad.load_library``: an exported library back in Python, through ctypes.

The library carries its own interface (``NAME_llgrad_interface``, written by
``llgrad.export``): the pytree of its arguments, each leaf's dtype and shape, and how
its results fold back into the structure the original function returned.  So a library
shipped without its Python source is called exactly like the function it came from.
"""
from __future__ import annotations

import ctypes
import json
import os
import threading
from types import SimpleNamespace

import numpy as np

from llgrad.c_source import LOOP_LIMIT_CODE, Interface, Leaf
from llgrad.compiler.dispatch.fastcall import packager
from llgrad.compiler.frontend import pytree
from llgrad.ir.errors import TAPE_MEMORY, DTypeError, LlgradError, LoopLimitError, ShapeError


class Library:
    """A loaded exported function: ``lib(*args)`` returns what the original did."""

    def __init__(self, path):
        self.path = os.path.abspath(os.fspath(path))
        self.name = os.path.basename(self.path).split(".")[0]
        self.cdll = ctypes.CDLL(self.path)   # its other functions (NAME_init, ...)
        try:
            text = ctypes.string_at(ctypes.addressof(
                ctypes.c_char.in_dll(self.cdll, f"{self.name}_llgrad_interface")))
        except ValueError:
            raise LlgradError(f"{self.path} is not a library written by llgrad.export "
                              f"(no {self.name}_llgrad_interface)") from None
        data = json.loads(text)
        self.interface = Interface(**{
            **data, "inputs": tuple(Leaf(**leaf) for leaf in data["inputs"]),
            "outputs": tuple(Leaf(**leaf) for leaf in data["outputs"])})
        self.interface = Interface(**{**vars(self.interface),
                                      "updates": tuple(map(tuple, data["updates"])),
                                      "loop_limits": tuple(data.get("loop_limits", ()))})
        python = data["python"]
        self._kind = python["kind"]
        self._in_tree = pytree.from_data(python["in_tree"])
        if self._kind != "train":
            argnums = python["argnums"]
            self._argnums = tuple(argnums) if isinstance(argnums, list) else argnums
            self._shape = SimpleNamespace(
                n_values=python["n_values"], out_tree=pytree.from_data(python["out_tree"]),
                layout=[(pytree.from_data(t), start, count)
                        for t, start, count in python["layout"]])
        self._packagers = {}
        self._package = self._trained(python) if self._kind == "train" else self._packaged
        self._function = getattr(self.cdll, self.name)
        self._function.restype = ctypes.c_int
        self._function.argtypes = [ctypes.c_void_p] * (len(self.interface.inputs)
                                                       + len(self.interface.returned) + 1)
        size = getattr(self.cdll, f"{self.name}_workspace_size")
        size.restype = ctypes.c_size_t
        self.workspace_bytes = size()
        self._local = threading.local()

    def _workspace(self) -> np.ndarray:
        """This thread's workspace: calls from several threads each need their own."""
        space = getattr(self._local, "workspace", None)
        if space is None:
            space = self._local.workspace = np.empty(self.workspace_bytes, np.uint8)
        return space

    def __call__(self, *args):
        leaves, treedef = pytree.flatten(tuple(args))
        pytree.check_same(self._in_tree, treedef, f"the arguments of {self.name}()")
        updated = self.interface.updated
        arrays = [self._argument(leaf, spec, copy=k in updated)   # never the caller's own
                  for k, (leaf, spec) in enumerate(zip(leaves, self.interface.inputs))]
        returned = [np.empty(spec.shape, spec.dtype) for spec in self.interface.returned]
        status = self._function(*[a.ctypes.data for a in arrays + returned],
                                self._workspace().ctypes.data)
        if status:
            self._raise(status)
        written_back, rest = dict(self.interface.updates), iter(returned)
        outputs = [arrays[written_back[k]] if k in written_back else next(rest)
                   for k in range(len(self.interface.outputs))]
        return self._package(leaves, outputs)

    def _raise(self, status: int):
        """A loop's code raises what the jit path raises with its message (LoopLimitError,
        or MemoryError for a tape that could not grow); any other the error it stands
        for."""
        meaning = {code: text for _, code, text in self.interface.error_codes()}
        if status >= LOOP_LIMIT_CODE and status in meaning:
            text = meaning[status]
            raise (MemoryError if text.startswith(TAPE_MEMORY) else LoopLimitError)(text)
        raise LlgradError(f"{self.name}() returned error {status}: "
                          f"{meaning.get(status, 'unknown')}")

    def _packaged(self, leaves, outputs):
        """The original function's result; its packager is generated once per type of
        each argument leaf (Python float or array: what the gradients' types follow)."""
        key = tuple(map(type, leaves))
        package = self._packagers.get(key)
        if package is None:
            package = self._packagers[key] = packager(self._kind, self._argnums,
                                                      self._shape, leaves)
        return package(outputs)

    @staticmethod
    def _trained(python):
        """A training step's results: (new params, new optimiser state, losses)."""
        params, state = pytree.from_data(python["params"]), pytree.from_data(python["opt_state"])
        n_params = len(pytree.leaf_names(params, ""))
        n_state = len(pytree.leaf_names(state, ""))

        def package(leaves, outputs):
            return (pytree.unflatten(params, outputs[:n_params]),
                    pytree.unflatten(state, outputs[n_params:n_params + n_state]),
                    outputs[n_params + n_state])
        return package

    def _argument(self, value, spec: Leaf, copy: bool = False) -> np.ndarray:
        array = np.asarray(value)
        if array.shape != tuple(spec.shape):
            raise ShapeError(f"{self.name}(): argument {spec.path} has shape {array.shape}, "
                             f"the library was exported for {tuple(spec.shape)}")
        if array.dtype != spec.dtype and not np.can_cast(array.dtype, spec.dtype, "same_kind"):
            raise DTypeError(f"{self.name}(): argument {spec.path} has dtype {array.dtype}, "
                             f"the library takes {spec.dtype}")
        return np.array(array, dtype=spec.dtype, order="C", copy=True if copy else None)

    def __repr__(self):
        return f"<llgrad library {self.name} ({self.interface.summary}) from {self.path}>"


def load_library(path) -> Library:
    """The function an ``llgrad.export`` wrote as ``path`` (its ``.so``), callable as the
    original was, with the same pytrees in and out."""
    return Library(path)
