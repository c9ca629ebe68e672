"""``check_grad``: the one gradient check every test (and every user) can call.

It compares llgrad's gradient with central finite differences computed by running
the *original* Python function in plain numpy, so the oracle shares no code with
what it checks.
"""
from __future__ import annotations

import numpy as np

from llgrad.api import grad
from llgrad.compiler.frontend import pytree


def numerical_grad(fn, args, argnum: int, eps: float):
    """Central differences of scalar ``fn`` with respect to every leaf of args[argnum]."""
    leaves, treedef = pytree.flatten(args[argnum])
    out = []
    for k, leaf in enumerate(leaves):
        base = np.array(leaf, dtype=np.float64)
        g = np.zeros_like(base)
        for idx in np.ndindex(base.shape):
            def at(delta):
                moved = base.copy()
                moved[idx] += delta
                new_leaves = list(leaves)
                new_leaves[k] = moved if np.ndim(leaf) else float(moved)
                new_args = list(args)
                new_args[argnum] = pytree.unflatten(treedef, new_leaves)
                return float(fn(*new_args))
            step = eps * max(1.0, abs(base[idx]))
            g[idx] = (at(step) - at(-step)) / (2 * step)
        out.append(g)
    return pytree.unflatten(treedef, out)


def check_grad(fn, *args, argnums=0, eps: float = 1e-6, rtol: float = 1e-5,
               atol: float = 1e-7, backend: str = "native") -> float:
    """Assert that llgrad's gradient of ``fn`` matches central finite differences.

    Returns the largest absolute difference; raises AssertionError naming the leaf."""
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    ours = grad(fn, argnums=nums, backend=backend)(*args)
    worst = 0.0
    for a, g in zip(nums, ours):
        reference = numerical_grad(fn, args, a, eps)
        got_leaves, _ = pytree.flatten(g)
        ref_leaves, _ = pytree.flatten(reference)
        names = pytree.leaf_names(pytree.flatten(args[a])[1], f"arg{a}")
        for name, got, ref in zip(names, got_leaves, ref_leaves):
            got = np.asarray(got, dtype=np.float64)
            err = float(np.max(np.abs(got - ref), initial=0.0))
            worst = max(worst, err)
            if not np.allclose(got, ref, rtol=rtol, atol=atol):
                raise AssertionError(
                    f"gradient of {getattr(fn, '__name__', 'f')} wrt {name} differs from "
                    f"finite differences by {err:.3g}\nllgrad:\n{got}\nfinite differences:\n{ref}")
    return worst
