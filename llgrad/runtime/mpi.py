"""MPI for generated code: the library mpi4py loaded, its functions registered by name.

Generated code that sums across processes calls ``MPI_Allreduce`` (see
``codegen/collective.py``).  The address comes from the MPI library mpi4py was
loaded with (MPICH, Open MPI, or whichever ``mpi4py`` was built or configured for):
``dlsym`` on mpi4py's own extension module searches the libraries it depends on, so
nothing needs the library's file name (an mpi4py that opens libmpi itself puts it in
the global namespace, searched next).  It is
registered with ``llvm.add_symbol`` before any code that calls it is loaded, from
the cache or freshly compiled (``resolve_for``): an unresolved symbol would end the
process inside LLVM.  mpi4py is imported only by graphs that hold collectives.
"""
from __future__ import annotations

import ctypes

import llvmlite.binding as llvm

from llgrad.ir.errors import UnsupportedError
from llgrad.ir.graph import Graph, every_node

ALLREDUCE = "MPI_Allreduce"
#: the MPI functions generated code may call
SYMBOLS = (ALLREDUCE,)
#: the primitives that call them
COLLECTIVES = frozenset({"allreduce_sum"})

_registered: list = []


def uses_collectives(graph: Graph) -> bool:
    """Whether ``graph`` or a graph inside it (a loop's body) has a collective node."""
    return any(node.op in COLLECTIVES for node in every_node(graph))


def register() -> None:
    """Make ``SYMBOLS`` resolvable by name for the JIT (once per process)."""
    if _registered:
        return
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise UnsupportedError("a graph with MPI collectives needs mpi4py "
                               "(pip install -e '.[mpi]')") from exc
    # mpi4py's extension, whose dependencies include libmpi; then the process's global
    # names (an mpi4py that opened libmpi itself, RTLD_GLOBAL)
    libraries = [ctypes.CDLL(MPI.__file__), ctypes.CDLL(None)]
    for name in SYMBOLS:
        found = next((getattr(lib, name) for lib in libraries if hasattr(lib, name)), None)
        if found is None:
            raise UnsupportedError(f"{name} is not in the MPI library mpi4py loaded "
                                   f"({MPI.Get_library_version().splitlines()[0]})")
        llvm.add_symbol(name, ctypes.cast(found, ctypes.c_void_p).value)
    _registered.extend(libraries)


def resolve_for(graph) -> None:
    """Register the MPI functions if ``graph`` calls any (before its code is loaded)."""
    if uses_collectives(graph):
        register()
