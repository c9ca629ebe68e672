"""Measured times of products as register tiles and as BLAS, per machine, on disk.

Whether BLAS or llgrad's tiles multiply a product faster depends on the BLAS build,
the core, its caches, the thread count and the product's own shape and layout, so it
is measured rather than guessed, in two ways that share one table:

- every product large enough for the choice to matter is timed both ways the first
  time a module containing it is compiled on this machine
  (``codegen.product_timing``), as that product (its operands' shapes and contracted
  axes: its ``signature``), at the module's thread count and BLAS's;
- ``python -m llgrad.calibrate`` times a grid of shapes at one and two threads, from
  which a product of a shape never timed is interpolated: the ratio of the two times,
  in the logarithms of M, K and N (``prefers_blas``).

The table lives next to the compile cache, in a file named for the CPU (its name and
LLVM's features) and llgrad's version: another machine, or another release, measures
again.  A module's options carry the rows its products are decided by (part of every
cache key).  Without any row the rules in ``codegen.matmul`` decide;
``LLGRAD_CALIBRATION=0`` ignores the table and times nothing.
"""
from __future__ import annotations

import functools
import importlib.metadata
import json
import math
import os
import shutil
import tempfile
from typing import NamedTuple

from llgrad.runtime import cache, engine


class Timing(NamedTuple):
    """Seconds per call of one (M, K, N) product of ``dtype`` on ``threads`` threads:
    a product of the grid (``signature`` empty), or the product ``signature`` names,
    timed with BLAS on ``blas_threads`` threads."""
    dtype: str
    threads: int
    M: int
    K: int
    N: int
    tiles_s: float
    blas_s: float
    signature: str = ""
    blas_threads: int = 0

    @property
    def key(self) -> tuple:
        """What a later measurement of the same product replaces."""
        return self.dtype, self.threads, self.blas_threads, self.signature, self.M, self.K, self.N


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


def enabled() -> bool:
    """Whether products are decided by measurement (off: ``LLGRAD_CALIBRATION=0``, or
    no cache directory to keep the table in)."""
    return os.environ.get("LLGRAD_CALIBRATION") != "0" and cache.directory() is not None


def load() -> tuple[Timing, ...]:
    """This machine's measured times (empty: nothing measured yet, or turned off)."""
    if not enabled():
        return ()
    where = path()
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


def copy_into(directory: str) -> None:
    """Put this machine's table into another cache directory (an empty one a benchmark
    compiles into): it belongs to the machine, measured once, not to a compile."""
    where = path()
    if where and os.path.exists(where):
        os.makedirs(directory, exist_ok=True)
        shutil.copy(where, os.path.join(directory, os.path.basename(where)))


def add(timings) -> str:
    """Merge ``timings`` into the stored table, each replacing an earlier row of the
    same product; returns the table's path."""
    fresh = {t.key for t in timings}
    return store([t for t in load() if t.key not in fresh] + list(timings))


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


def prefers_blas(timings, dtype: str, threads: int, M: int, K: int, N: int,
                 signature: str = "") -> bool | None:
    """Whether BLAS is expected to be faster for this product: as measured, where the
    product ``signature`` names was timed at this thread count; else from the grid's
    shapes of the same dtype and thread count (the nearest count below, else above):
    log(blas / tiles) averaged over them weighted by the inverse square of their
    distance in (log M, log K, log N), below ``-log(1 + TIE)``.  By shape, not by
    multiply-adds alone: at one size a product whose right operand outgrows the cache
    (64x784x1024) and one whose does not (1024x784x128) can fall on opposite sides.
    None: nothing measured for ``dtype``."""
    own = [t for t in timings if signature and t.signature == signature
           and t.dtype == dtype and t.threads == threads]
    if own:
        return own[-1].blas_s * (1 + TIE) < own[-1].tiles_s
    same = [t for t in timings if t.dtype == dtype and not t.signature]
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
