"""The front end: Python functions traced into IR (``trace``), numpy's functions rebuilt
from primitives (``numpy_ops``), pytrees, and sympy in and out (``sympy_io``).

Importing the package makes the Tracer an array (numpy's protocols, the operators and
the array methods, from the numpy table), so a tracer works whichever module made it.
"""
from llgrad.compiler.frontend import numpy_ops, trace
from llgrad.compiler.frontend import numpy_shapes  # noqa: F401  (registers its rows)
from llgrad.compiler.frontend import scipy_special  # noqa: F401  (registers its rows)
from llgrad.compiler.frontend import numpy_indexing  # noqa: F401  (registers its rows)
from llgrad.compiler.frontend import numpy_math  # noqa: F401  (registers its rows)
from llgrad.compiler.frontend import numpy_sort  # noqa: F401  (registers its rows)
from llgrad.compiler.frontend import numpy_einsum  # noqa: F401  (registers its rows)
from llgrad.compiler.frontend import numpy_logic  # noqa: F401  (registers its rows)
from llgrad.compiler.frontend import numpy_linalg  # noqa: F401  (registers its rows)

numpy_ops.attach(trace.Tracer)
