"""Reverse mode, forward mode and the derivative rules they apply.

Importing the package installs the rules of the structured primitives (``loops``) into
their records, which ``ir`` cannot import.
"""
from llgrad.compiler.autodiff import loops  # noqa: F401  (installs loop's rules)
from llgrad.compiler.autodiff import checkpoint, tape_batching, while_loop  # noqa: F401  (their rules)
from llgrad.compiler.autodiff import branches  # noqa: F401  (installs cond's rules)
from llgrad.compiler.autodiff import batching  # noqa: F401  (loop's and cond's vmap rules)
from llgrad.compiler.autodiff import custom  # noqa: F401  (installs the custom calls' rules)
