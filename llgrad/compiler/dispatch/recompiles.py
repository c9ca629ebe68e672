"""Why a call compiled again: the difference between its signature and the nearest one
compiled before, in the user's words (``LLGRAD_LOG_COMPILES=1`` prints it), and one
warning when a function keeps recompiling, the usual cause of a slow loop (a shape or
a static value that changes every call)."""
from __future__ import annotations

import os
import sys
import warnings

from llgrad.compiler.frontend import pytree

#: compiled signatures of one function after which a recompile warns (once)
WARN_AFTER = 8


def logging() -> bool:
    return os.environ.get("LLGRAD_LOG_COMPILES", "") not in ("", "0")


def _kind(kind) -> str:
    shape, typ = kind
    name = getattr(typ, "__name__", None) or str(typ)   # a dtype, or a Python scalar type
    return f"{name}{list(shape)}" if shape else name


def _differences(old, new, arg_name) -> list[str]:
    (old_tree, old_kinds, old_static, old_n), (tree, kinds, static, n) = old, new
    if old_n != n:
        return [f"{old_n} -> {n} arguments"]
    dynamic = [i for i in range(n) if i not in {k for k, _ in static if isinstance(k, int)}]
    if old_tree != tree:
        return [f"pytree structure of {arg_name(i)} changed"
                for a, b, i in zip(old_tree[2], tree[2], dynamic) if a != b]
    out = []
    names = [name for child, i in zip(tree[2], dynamic)
             for name in pytree.leaf_names(child, arg_name(i))]
    for name, a, b in zip(names, old_kinds, kinds):
        if a != b:
            what = "shape" if a[1] == b[1] else "dtype" if a[0] == b[0] else "shape and dtype"
            out.append(f"{name}: {what} {_kind(a)} -> {_kind(b)}")
    if old_static != static:
        before = dict(old_static)
        out.extend(f"static {arg_name(k) if isinstance(k, int) else k}: "
                   f"{before[k]!r} -> {v!r}" if k in before else f"new keyword {k}={v!r}"
                   for k, v in static if before.get(k, object()) != v)
    return out


def explain(previous, key, arg_name) -> str:
    """Why ``key`` (see ``Staged._key``) missed: the shortest list of differences from
    a previous key; ``arg_name(i)`` names positional argument ``i``."""
    if not previous:
        return "first call"
    best = min((_differences(old, key, arg_name) for old in reversed(previous)), key=len)
    return "; ".join(best) or "new signature"


def note(fn_name: str, kind: str, previous, key, arg_name, seconds: float) -> None:
    """Log one compile (if asked) and warn once per function that recompiles often."""
    if logging():
        print(f"llgrad: compiled {fn_name}() [{kind}] in {seconds:.3f} s: "
              f"{explain(previous, key, arg_name)}", file=sys.stderr)
    if len(previous) == WARN_AFTER:
        warnings.warn(f"llgrad: {fn_name}() has been compiled for {WARN_AFTER + 1} "
                      f"signatures (the last because: {explain(previous, key, arg_name)}); "
                      f"a shape, dtype or static value that changes on every call "
                      f"recompiles on every call (LLGRAD_LOG_COMPILES=1 logs each)",
                      RuntimeWarning, stacklevel=4)
