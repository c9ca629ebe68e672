"""On-disk cache of compiled object code, so a second process skips LLVM entirely.

The key is a hash of the optimised graph (``ir.fingerprint``), the code generation
options, llgrad's version and source, LLVM's version, and the host CPU with its
features: all of it known before any code is generated, so a hit skips code
generation too.  An entry holds the object code, the optimised LLVM IR (for
``Trace.llvm_ir_optimized`` and ``asm``) and the metadata code generation computes
besides the IR (entry symbol, arena size), so the Executable is rebuilt from the
entry alone.  External symbols (BLAS, libmvec) stay unresolved in the
object code and are bound by name when it is loaded, so an entry is valid in any
process on the same machine.  ``LLGRAD_CACHE_DIR`` moves the cache (default
``~/.cache/llgrad``); ``LLGRAD_NO_CACHE=1`` turns it off.

Object code handed to LLVM runs unchecked in this process, so an entry is loaded only
if everything about it verifies: the magic bytes, the format number, the key it was
stored under and a SHA-256 of its contents.  Anything else (a truncated write, a
flipped bit, an entry of another llgrad version) is reported with one warning and
rebuilt, never loaded.  Entries are plain bytes, never pickles, so reading a cache
cannot run code.  Writes are atomic; a directory that cannot be written is reported
once and the process keeps its compiled code in memory only.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import warnings

FORMAT = 4
MAGIC = b"llgrad-object\n"

# the directory found unwritable (reads still work); what was already warned about;
# llgrad's source digest ("source", computed once)
_state = {"unwritable": None, "reported": set()}
_lock = threading.Lock()


def directory() -> str | None:
    if os.environ.get("LLGRAD_NO_CACHE") == "1":
        return None
    root = os.environ.get("LLGRAD_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "llgrad")
    return root


def source_digest() -> str:
    """SHA-256 of llgrad's own source (its .py and .json files): an edited code
    generator must not load object code its old version made under the same version
    number (once per process, small beside a compile: time this function in a fresh
    process)."""
    if "source" not in _state:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        h = hashlib.sha256()
        for folder, subfolders, files in os.walk(root):
            subfolders[:] = sorted(d for d in subfolders if d != "__pycache__")
            for name in sorted(f for f in files if f.endswith((".py", ".json"))):
                path = os.path.join(folder, name)
                with open(path, "rb") as f:
                    h.update(b"%s\0%s\0" % (os.path.relpath(path, root).encode(), f.read()))
        _state["source"] = h.hexdigest()
    return _state["source"]


def key(*parts: str) -> str:
    h = hashlib.sha256()
    for part in (str(FORMAT), *parts):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def encode(entry_key: str, obj: bytes, optimized_ir: str, meta: dict) -> bytes:
    """MAGIC, a one-line JSON header, then the metadata (JSON), the object code and
    the optimised IR; the checksum covers all three."""
    meta_bytes = json.dumps(meta, sort_keys=True).encode()
    body = meta_bytes + obj + optimized_ir.encode()
    header = {"format": FORMAT, "key": entry_key, "meta_bytes": len(meta_bytes),
              "object_bytes": len(obj), "sha256": hashlib.sha256(body).hexdigest()}
    return MAGIC + json.dumps(header).encode() + b"\n" + body


def decode(entry_key: str, data: bytes):
    """(object code, optimised IR, metadata), or the reason the entry must not be
    loaded."""
    if not data.startswith(MAGIC):
        return "not an llgrad object entry"
    line, _, body = data[len(MAGIC):].partition(b"\n")
    try:
        header = json.loads(line)
        m, n = int(header["meta_bytes"]), int(header["object_bytes"])
    except (ValueError, KeyError, TypeError):
        return "damaged header"
    if header.get("format") != FORMAT:
        return f"written by another llgrad version (format {header.get('format')!r})"
    if header.get("key") != entry_key:
        return "stored under another key"
    if (hashlib.sha256(body).hexdigest() != header.get("sha256")
            or not (0 <= m and 0 <= n and m + n <= len(body))):
        return "checksum mismatch (truncated or damaged)"
    try:
        meta = json.loads(body[:m])
        return body[m:m + n], body[m + n:].decode(), meta
    except (ValueError, UnicodeDecodeError):
        return "damaged metadata or optimised IR"


def load(entry_key: str, suffix: str = ".obj"):
    """(object code, optimised IR, metadata) for the key, or None (a miss; a damaged entry
    is also reported with a warning, and replaced when the caller stores again).
    Compiled functions are ``.obj`` files; llgrad's runtime support (``pool``) has its
    own suffix, so that the entries of functions are what the directory lists."""
    root = directory()
    if root is None:
        return None
    path = os.path.join(root, entry_key + suffix)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    entry = decode(entry_key, data)
    if isinstance(entry, str):
        _warn_once((path, hash(data)), f"llgrad: ignoring the cache entry {path}: {entry}; "
                   f"compiling again", stacklevel=3)
        return None
    return entry


def store(entry_key: str, obj: bytes, optimized_ir: str, meta: dict,
          suffix: str = ".obj") -> None:
    _write(entry_key + suffix, encode(entry_key, obj, optimized_ir, meta))


def _write(name: str, payload: bytes) -> None:
    """Atomically: readers see the old file or the new one, never half of one."""
    root = directory()
    if root is None or root == _state["unwritable"]:
        return
    tmp = None
    try:
        os.makedirs(root, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=root, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.replace(tmp, os.path.join(root, name))
    except OSError as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        _state["unwritable"] = root
        _warn_once(("unwritable", root), f"llgrad: cannot write the cache directory {root} "
                   f"({exc}); compiled code is kept in memory only (set LLGRAD_CACHE_DIR "
                   f"to a writable directory, or LLGRAD_NO_CACHE=1)", stacklevel=4)


def _warn_once(what, message: str, stacklevel: int) -> None:
    """One RuntimeWarning per ``what`` and process, however many threads meet it."""
    with _lock:
        first = what not in _state["reported"]
        _state["reported"].add(what)
    if first:
        warnings.warn(message, RuntimeWarning, stacklevel=stacklevel)
