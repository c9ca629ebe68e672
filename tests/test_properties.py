"""Property tests: for random shapes, broadcasting patterns and reduction axes, native
code computes what numpy computes and its gradient is the finite-difference one."""
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import llgrad

SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def broadcast_pair(draw):
    """Two shapes that broadcast together (numpy's rules, ranks 0-3, sizes 1-3)."""
    rank = draw(st.integers(0, 3))
    full = draw(st.lists(st.integers(1, 3), min_size=rank, max_size=rank))
    shapes = []
    for _ in range(2):
        keep = draw(st.integers(0, rank))
        shapes.append(tuple(n if draw(st.booleans()) else 1 for n in full[rank - keep:]))
    return shapes


BINARY = [lambda a, b: a * b + b, lambda a, b: np.maximum(a, b) - a / (b * b + 1),
          lambda a, b: np.where(a > b, np.tanh(a), np.sin(b) * a)]


@SETTINGS
@given(broadcast_pair(), st.sampled_from(range(len(BINARY))), st.integers(0, 2 ** 31))
def test_broadcast_binary_matches_numpy_and_finite_differences(shapes, which, seed):
    rng = np.random.default_rng(seed)
    a, b = (rng.normal(size=s) for s in shapes)
    fn = BINARY[which]
    np.testing.assert_allclose(llgrad.jit(fn)(a, b), fn(a, b), rtol=1e-13, atol=1e-14)
    llgrad.check_grad(lambda a, b: (fn(a, b) ** 2).sum(), a, b, argnums=(0, 1))


@st.composite
def reduction(draw):
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    axes = tuple(sorted(draw(st.sets(st.integers(0, len(shape) - 1)))))
    return shape, axes or None, draw(st.booleans())


@SETTINGS
@given(reduction(), st.sampled_from(["sum", "mean", "max", "min", "var"]),
       st.integers(0, 2 ** 31))
def test_reductions_match_numpy_and_finite_differences(spec, name, seed):
    shape, axes, keepdims = spec
    x = np.random.default_rng(seed).normal(size=shape)
    fn = lambda x: getattr(np, name)(np.exp(x), axis=axes, keepdims=keepdims)  # noqa: E731
    np.testing.assert_allclose(llgrad.jit(fn)(x), fn(x), rtol=1e-12, atol=1e-13)
    llgrad.check_grad(lambda x: (fn(x) * np.arange(1.0, 1.0 + np.size(fn(x))).reshape(
        np.shape(fn(x)))).sum(), x)
