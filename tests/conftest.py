import numpy as np
import pytest


@pytest.fixture(params=["native", "interpret"])
def backend(request):
    """Every front-end behaviour holds for native code and for the numpy interpreter."""
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def pytest_configure(config):
    """Tests compile into a cache of their own, never the user's ~/.cache/llgrad."""
    import os
    import tempfile
    os.environ.setdefault("LLGRAD_CACHE_DIR", tempfile.mkdtemp(prefix="llgrad-test-cache-"))


OPT_IN = {"fuzz": "long property-based runs", "large": "arrays of 10**8 elements and more",
          "slow": "the benchmark suite with every installed peer"}


def pytest_collection_modifyitems(config, items):
    """Tests marked fuzz, large or slow run only when asked for: ``pytest -m fuzz``."""
    chosen = config.getoption("-m") or ""
    for item in items:
        for mark, what in OPT_IN.items():
            if mark in item.keywords and mark not in chosen:
                item.add_marker(pytest.mark.skip(reason=f"opt-in ({what}): pytest -m {mark}"))
