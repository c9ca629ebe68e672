"""Measured times of products as register tiles and as BLAS, per machine, on disk.

Whether BLAS or llgrad's tiles multiply a product faster depends on the BLAS build,
the core, its caches and the thread count, so it is measured rather than guessed:
``python -m llgrad.calibrate`` times a few product shapes both ways at one and two
threads (about a second once compiled) and stores the times next to the compile
cache, in a file named for the CPU (its name and LLVM's features) and llgrad's
version: another machine, or another release, measures again.  Code generation
reads the table (it is part of the options, hence of every cache key) and, for a
product between the calibrated shapes, interpolates the ratio of the two times in
the logarithm of the product's multiply-adds (``prefers_blas``).  Without a table
the rules in ``codegen.matmul`` decide.  ``LLGRAD_CALIBRATION=0`` ignores a table.
"""
from __future__ import annotations

import functools
import importlib.metadata
import json
import math
import os
import tempfile
from typing import NamedTuple

from llgrad.runtime import cache, engine


class Timing(NamedTuple):
    """Seconds per call of one (M, K, N) product of ``dtype`` on ``threads`` threads."""
    dtype: str
    threads: int
    M: int
    K: int
    N: int
    tiles_s: float
    blas_s: float


@functools.lru_cache(maxsize=None)
def version() -> str:
    """llgrad's installed version (what a table is valid for; read once, ~0.5 ms)."""
    try:
        return importlib.metadata.version("llgrad")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def path() -> str | None:
    """Where this machine's table lives (None: no cache directory)."""
    root = cache.directory()
    if root is None:
        return None
    cpu, features = engine.context()[2:]
    return os.path.join(root, f"calibration-{cache.key(cpu, features, version())[:24]}.json")


def load() -> tuple[Timing, ...]:
    """This machine's measured times (empty: not calibrated, or turned off)."""
    where = path()
    if os.environ.get("LLGRAD_CALIBRATION") == "0" or where is None:
        return ()
    try:
        return _read(where, os.stat(where).st_mtime_ns)
    except OSError:
        return ()


@functools.lru_cache(maxsize=8)
def _read(where: str, mtime_ns: int) -> tuple[Timing, ...]:
    """The table at ``where`` as last modified at ``mtime_ns``: every compile asks for
    it (``codegen_options``), so it is parsed once, and again only once rewritten."""
    try:
        with open(where) as f:
            return tuple(Timing(*row) for row in json.load(f)["timings"])
    except (OSError, ValueError, TypeError, KeyError):
        return ()


def store(timings) -> str:
    """Write the table atomically; returns its path."""
    where = path()
    if where is None:
        raise OSError("no cache directory (LLGRAD_NO_CACHE=1): nowhere to keep a calibration")
    os.makedirs(os.path.dirname(where), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(where), suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump({"cpu": engine.context()[2], "version": version(),
                   "timings": [list(t) for t in timings]}, f, indent=1)
    os.replace(tmp, where)
    return where


#: BLAS is taken where it is expected to be at least this much faster: in a near tie the
#: tiles win, since they also run the product's elementwise successor as their epilogue
#: (``codegen.epilogue``) and a round's noise should not flip a module's code
TIE = 0.05


def prefers_blas(timings, dtype: str, threads: int, M: int, K: int, N: int) -> bool | None:
    """Whether BLAS is expected to be faster for this product, from the calibrated
    shapes of the same dtype and thread count (the nearest count below, else above):
    log(blas / tiles) averaged over them weighted by the inverse square of their
    distance in (log M, log K, log N), below ``-log(1 + TIE)``.  By shape, not by
    multiply-adds alone: at one size a product whose right operand outgrows the cache
    (64x784x1024) and one whose does not (1024x784x128) can fall on opposite sides.
    None: nothing calibrated for ``dtype``."""
    same = [t for t in timings if t.dtype == dtype]
    if not same:
        return None
    counts = sorted({t.threads for t in same})
    nearest = max([c for c in counts if c <= threads] or [counts[0]])
    points = [((t.M, t.K, t.N), math.log(t.blas_s / t.tiles_s))
              for t in same if t.threads == nearest]
    return weighted(points, (M, K, N)) < -math.log1p(TIE)


def weighted(points, shape) -> float:
    """The values of ``points`` [(shape, value)] averaged with weights 1 / distance**2
    in log space (a point at ``shape`` itself: its value)."""
    total = weights = 0.0
    for at, value in points:
        d2 = sum(math.log(max(1, x) / max(1, y)) ** 2 for x, y in zip(shape, at))
        if d2 == 0:
            return value
        total, weights = total + value / d2, weights + 1 / d2
    return total / weights
