"""An exported function with bounded while_loops returns which loop ran out of steps.

Oracles: the jit path (its LoopLimitError and its results), plain Python arithmetic,
and a C program (tests/c/loop_status.c) that checks the returned code against the
macros of the generated header.
"""
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import llgrad
from llgrad.ir.errors import LoopLimitError

CALLER = Path(__file__).parent / "c" / "loop_status.c"
CC = os.environ.get("CC", "cc")
pytestmark = pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in (CC, "ar")),
    reason=f"llgrad.export links with a C compiler ({CC!r}) and ar: not found "
           f"(Debian: apt-get install gcc libc6-dev)")


def two_loops(x, y):
    """Count x up to 10 (at most 5 steps), then up to y (at most 3 steps)."""
    v = llgrad.while_loop(lambda v: v < 10.0, lambda v: v + 1.0, x, max_steps=5)
    return llgrad.while_loop(lambda v: v < y, lambda v: v + 1.0, v, max_steps=3)


LINES = [n for n, text in enumerate(Path(__file__).read_text().splitlines(), 1)
         if "llgrad.while_loop(" in text and "def " not in text][:2]
# (x, y, which code): within both limits, the first loop over, the second loop over
CALLS = [(8.0, 12.0, "ok"), (0.0, 12.0, "loop0"), (8.0, 20.0, "loop1")]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("loops")
    return llgrad.export(llgrad.jit(two_loops), 8.0, 12.0, path=folder, name="loops")


def test_header_defines_a_code_per_loop_naming_its_line(exported):
    header = Path(exported.header).read_text()
    codes = dict(re.findall(r"#define LOOPS_(\w+) (\d+)", header))
    assert [codes[k] for k in ("OK", "ERROR_LOOP0", "ERROR_LOOP1")] == ["0", "3", "4"]
    for suffix, line, limit in (("LOOP0", LINES[0], 5), ("LOOP1", LINES[1], 3)):
        documented = re.search(rf"#define LOOPS_ERROR_{suffix} \d+ +/\* (.*) \*/", header)
        assert f"test_export_loop_status.py:{line} " in documented.group(1)
        assert f"max_steps={limit} " in documented.group(1)
    assert "int loops(" in header


@pytest.mark.parametrize("x, y, which", CALLS)
def test_c_caller_gets_the_code_of_the_loop_that_ran_out(exported, x, y, which):
    folder = Path(exported.header).parent
    (folder / "loop_bind.h").write_text("\n".join([
        '#include "loops.h"', "#define LIB_CALL(x, y, out, ws) loops(x, y, out, ws)",
        "#define LIB_WORKSPACE_SIZE loops_workspace_size", "#define LIB_OK LOOPS_OK",
        "#define LIB_LOOP0 LOOPS_ERROR_LOOP0", "#define LIB_LOOP1 LOOPS_ERROR_LOOP1", ""]))
    binary = folder / "loop_status"
    if not binary.exists():
        built = subprocess.run([CC, "-std=c11", "-Wall", "-Werror", f"-I{folder}", str(CALLER),
                                exported.static, "-lm", "-o", str(binary)],
                               capture_output=True, text=True)
        assert built.returncode == 0, built.stderr
    ran = subprocess.run([str(binary), repr(x), repr(y), which], capture_output=True,
                         text=True, timeout=60)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    if which == "ok":
        assert float(ran.stdout.split()[-1]) == y


def test_loaded_library_raises_what_jit_raises_and_recovers(exported):
    library = llgrad.load_library(exported.shared)
    jitted = llgrad.jit(two_loops)
    for x, y, which in CALLS:
        if which == "ok":
            assert library(x, y) == jitted(x, y) == y
            continue
        with pytest.raises(LoopLimitError) as from_jit:
            jitted(x, y)
        with pytest.raises(LoopLimitError) as from_library:
            library(x, y)
        assert str(from_library.value) == str(from_jit.value)
        line = LINES[int(which[-1])]
        assert f"test_export_loop_status.py:{line} " in str(from_library.value)
    assert library(8.0, 12.0) == 12.0   # the flag was cleared


def test_function_without_bounded_loops_keeps_its_two_error_codes(tmp_path):
    exported = llgrad.export(llgrad.jit(lambda x: llgrad.while_loop(
        lambda v: v < 10.0, lambda v: v + 1.0, x)), 1.0, path=tmp_path, name="unbounded")
    header = Path(exported.header).read_text()
    assert re.findall(r"#define UNBOUNDED_(OK|ERROR_\w+) \d+", header) == [
        "OK", "ERROR_NULL", "ERROR_OVERLAP"]
    assert llgrad.load_library(exported.shared)(1.0) == 10.0


def counted_rows(xs):
    """Each row counted up to 3 by a bounded loop inside a scan's body."""
    def step(total, x):
        v = llgrad.while_loop(lambda v: v < 3.0, lambda v: v + 1.0, x, max_steps=4)
        return total + v, v
    return llgrad.scan(step, 0.0, xs)[0]


def test_a_bounded_loop_inside_a_scan_body_has_its_code(tmp_path):
    xs = np.array([0.5, 2.5, 1.0])
    exported = llgrad.export(llgrad.jit(counted_rows), xs, path=tmp_path, name="rows")
    assert len(exported.interface.loop_limits) == 1
    library = llgrad.load_library(exported.shared)
    assert library(xs) == 3.5 + 3.5 + 3.0
    with pytest.raises(LoopLimitError, match="max_steps=4"):
        library(np.array([0.5, -2.0, 1.0]))
    assert library(xs) == 10.0


def grown(x):
    """An unbounded loop (its trip count the data's): its gradient grows a heap tape."""
    v = llgrad.while_loop(lambda v: np.sum(v) < 3000.0, lambda v: v + 0.5 + 1e-3 * np.sin(v),
                          x)
    return np.sum(v ** 2)


def test_exported_gradient_of_an_unbounded_loop_has_a_memory_code(tmp_path):
    x = np.array([0.1, 0.2, -0.3])
    grad = llgrad.grad(grown)
    exported = llgrad.export(grad, x, path=tmp_path, name="grown")
    (message,) = exported.interface.loop_limits
    assert message.startswith("out of memory: while_loop at test_export_loop_status.py:")
    header = Path(exported.header).read_text()
    assert re.search(r"#define GROWN_ERROR_LOOP0 3 +/\* out of memory: while_loop", header)
    library = llgrad.load_library(exported.shared)
    np.testing.assert_array_equal(library(x), grad(x))   # about 2000 trips
    with pytest.raises(MemoryError, match="test_export_loop_status.py"):
        library._raise(3)   # what a failed realloc's code raises
