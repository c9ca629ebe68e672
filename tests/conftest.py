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
    """Tests compile into a cache of their own, never the user's ~/.cache/llgrad, and
    time no products (``codegen.product_timing``), so that which way a product runs
    never depends on how loaded the machine was: tests that force a way say so.
    Under pytest-xdist they compile without workers (``runtime.workers``)."""
    import os
    import tempfile
    os.environ.setdefault("LLGRAD_CACHE_DIR", tempfile.mkdtemp(prefix="llgrad-test-cache-"))
    os.environ.setdefault("LLGRAD_CALIBRATION", "0")
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # pytest-xdist runs a test process per core already: compile workers beside
        # them would only crowd the cores that the tests of threads and timing need
        # (tests/test_parallel_compile.py asks for its workers itself)
        os.environ.setdefault("LLGRAD_COMPILE_WORKERS", "0")


OPT_IN = ("fuzz", "large", "slow")  # what each means: the markers in pyproject.toml


def pytest_collection_modifyitems(config, items):
    """Tests marked fuzz, large or slow run only when asked for (``pytest -m fuzz``);
    otherwise they are deselected, so the default run lists only what it ran."""
    chosen = config.getoption("-m") or ""
    opted_out = [item for item in items
                 if any(mark in item.keywords and mark not in chosen for mark in OPT_IN)]
    if opted_out:
        config.hook.pytest_deselected(items=opted_out)
        items[:] = [item for item in items if item not in opted_out]
