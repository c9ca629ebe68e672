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
