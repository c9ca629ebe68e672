"""What the code generator is told about the CPU it writes for: read once per process.

The tiles' shapes, how many registers they may hold, and how much a large product may
keep re-reading are sized from these figures rather than from constants measured on
one machine: AVX2 has 16 vector registers of 256 bits, AVX-512 32 of 512, and cores
differ in their cache sizes.  The vector ISA comes from LLVM's host features
(``llvm.get_host_cpu_features``), the caches from Linux's sysfs (``index*/{level,
type,size}`` of cpu0), with fallbacks where sysfs says nothing.

``LLGRAD_HOST`` (``avx512``, ``avx2``, ``avx`` or ``sse``) or ``LLGRAD_VECTOR_BITS``
(512, 256 or 128) makes the code generator size its choices for that ISA on any x86
machine: LLVM still compiles for the real CPU (a 512-bit vector becomes two halves
on AVX2), so each path can be tested where it would not be chosen.  Both are part of
the options, hence of every cache key.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace

from llgrad.runtime import engine

#: an ISA's vector width in bits and its count of vector registers
ISAS = {"avx512": (512, 32), "avx2": (256, 16), "avx": (256, 16), "sse": (128, 16)}
#: where sysfs reports no cache (not Linux, a container hiding it): common sizes
FALLBACK_CACHES = {1: 32 << 10, 2: 1 << 20, 3: 8 << 20}


@dataclass(frozen=True)
class Host:
    """``isa``: the widest vector ISA used; ``vector_bits`` and ``vector_registers``:
    its register width and count; ``fma_units``: fused multiply-adds issued per cycle
    (2 on every core with FMA that llgrad targets; 1 without FMA); ``l1d``, ``l2``,
    ``l3``: bytes of one core's data caches (``l3`` shared); ``l1d_span``: bytes from
    one line of the L1 data cache to the next line in the same set (its sets times its
    line size): rows of a matrix that many bytes apart compete for one set."""
    isa: str
    vector_bits: int
    vector_registers: int
    fma_units: int
    l1d: int
    l2: int
    l3: int
    l1d_span: int = 4096

    @property
    def tile_panel_bytes(self) -> int:
        """What register tiles may keep re-reading: half of a core's L2 (the other half
        holds what streams through)."""
        return self.l2 // 2


def isa_of(features) -> str:
    """The widest vector ISA of a CPU with ``features`` (name -> bool)."""
    if features.get("avx512f"):
        return "avx512"
    if features.get("avx2"):
        return "avx2"
    return "avx" if features.get("avx") else "sse"


def for_features(features, caches=None) -> Host:
    """The host description of a CPU with ``features`` (``caches``: level -> bytes,
    default this machine's)."""
    caches = caches or cache_sizes()
    isa = isa_of(features)
    bits, registers = ISAS[isa]
    return Host(isa, bits, registers, 2 if features.get("fma") else 1,
                caches[1], caches[2], caches[3], l1d_span())


def forced(host: Host, environ=os.environ) -> Host:
    """``host`` sized as ``LLGRAD_HOST`` or ``LLGRAD_VECTOR_BITS`` say (see above)."""
    name = environ.get("LLGRAD_HOST", "").strip().lower().replace("-", "")
    bits = environ.get("LLGRAD_VECTOR_BITS", "").strip()
    if bits:
        by_bits = {b: isa for isa, (b, _) in reversed(list(ISAS.items()))}
        if not bits.isdigit() or int(bits) not in by_bits:
            raise ValueError(f"LLGRAD_VECTOR_BITS={bits!r}: use 128, 256 or 512")
        name = name or by_bits[int(bits)]
    if not name:
        return host
    if name not in ISAS:
        raise ValueError(f"LLGRAD_HOST={name!r}: use one of {', '.join(ISAS)}")
    width, registers = ISAS[name]
    return replace(host, isa=name, vector_bits=width, vector_registers=registers)


SYSFS_CACHES = "/sys/devices/system/cpu/cpu0/cache"


def _cache_indexes(base: str):
    """For each cache of cpu0 in sysfs (``index*``), a reader of its attributes:
    ``read("size")`` -> the file's text (OSError where it has none)."""
    for index in sorted(os.listdir(base)):
        if index.startswith("index"):
            def read(name, index=index):
                with open(os.path.join(base, index, name)) as f:
                    return f.read().strip()
            yield read


def cache_sizes(base: str = SYSFS_CACHES) -> dict:
    """level -> bytes of cpu0's data (or unified) cache at each level, from sysfs,
    ``FALLBACK_CACHES`` where it has none."""
    found = {}
    try:
        for read in _cache_indexes(base):
            if read("type") in ("Unified", "Data"):
                size = read("size")
                scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(size[-1:], 1)
                found.setdefault(int(read("level")), int(size.rstrip("KMG")) * scale)
    except (OSError, ValueError):
        pass
    return {level: found.get(level) or size for level, size in FALLBACK_CACHES.items()}


#: where sysfs does not say: 64 sets of 64-byte lines, every x86 core since Sandy Bridge
FALLBACK_L1D_SPAN = 4096


def l1d_span(base: str = SYSFS_CACHES) -> int:
    """Sets times line size of cpu0's L1 data cache, from sysfs (``FALLBACK_L1D_SPAN``
    where it has none)."""
    try:
        for read in _cache_indexes(base):
            if read("level") == "1" and read("type") == "Data":
                return int(read("number_of_sets")) * int(read("coherency_line_size"))
    except (OSError, ValueError):
        pass
    return FALLBACK_L1D_SPAN


_current: list = []


def current() -> Host:
    """This machine, as the environment may force it (read once per process; the
    environment is read on every call, so a test can force a host)."""
    if not _current:
        _current.append(for_features(engine.host_features()))
    return forced(_current[0])
