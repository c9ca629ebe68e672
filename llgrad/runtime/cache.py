"""On-disk cache of compiled object code, so a second process skips LLVM entirely.

The key is a hash of the unoptimised LLVM IR (which already encodes the graph, its
shapes and the codegen that produced it), llgrad's and LLVM's versions, and the
host CPU with its features.  External symbols (BLAS, libmvec) stay unresolved in the
object code and are bound by name when it is loaded, so an entry is valid in any
process on the same machine.  Entries are written atomically; an unreadable entry
is treated as a miss.  ``LLGRAD_CACHE_DIR`` moves the cache (default
``~/.cache/llgrad``); ``LLGRAD_NO_CACHE=1`` turns it off.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile

FORMAT = 2


def directory() -> str | None:
    if os.environ.get("LLGRAD_NO_CACHE") == "1":
        return None
    root = os.environ.get("LLGRAD_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "llgrad")
    return root


def key(llvm_ir: str, *context: str) -> str:
    h = hashlib.sha256()
    for part in (str(FORMAT), *context, llvm_ir):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def load(entry_key: str):
    """(object code, optimised IR) for the key, or None."""
    root = directory()
    if root is None:
        return None
    try:
        with open(os.path.join(root, entry_key + ".obj"), "rb") as f:
            obj, optimized, digest = pickle.load(f)
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError):
        return None
    # never hand LLVM damaged object code: a truncated file must be a miss, not a crash
    return (obj, optimized) if hashlib.sha256(obj).hexdigest() == digest else None


def store(entry_key: str, obj: bytes, optimized_ir: str) -> None:
    _write(entry_key + ".obj",
           pickle.dumps((obj, optimized_ir, hashlib.sha256(obj).hexdigest())))


def load_json(name: str):
    """A small JSON document kept beside the object code (derivative recipes), or None."""
    root = directory()
    if root is None:
        return None
    try:
        with open(os.path.join(root, name), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def store_json(name: str, data) -> None:
    _write(name, json.dumps(data).encode())


def _write(name: str, payload: bytes) -> None:
    """Atomically: readers see the old file or the new one, never half of one."""
    root = directory()
    if root is None:
        return
    try:
        os.makedirs(root, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=root, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.replace(tmp, os.path.join(root, name))
    except OSError:
        pass  # a read-only or full disk only costs the next process the work again
