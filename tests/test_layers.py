"""The import layers of docs/architecture.md, as import-linter checks them.

The contracts live in pyproject.toml: the API over the compiler over the runtime over
ir and llvm, the compiler's own layers, and no import circle anywhere (imports inside
functions count).  import-linter reads the source, so nothing here imports llgrad.
"""
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _lint(root):
    """lint-imports over the llgrad package under ``root``: (exit status, its report)."""
    env = dict(os.environ, PYTHONPATH=root)
    code = ("import sys; from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=root, env=env, timeout=300)
    return done.returncode, done.stdout + done.stderr


def test_the_package_keeps_its_import_contracts():
    status, report = _lint(ROOT)
    assert status == 0, report
    assert "0 broken" in report


BREAKS = {
    "an import upward": (
        "runtime/cache.py", "from llgrad.compiler.codegen import build",
        "llgrad.runtime.cache -> llgrad.compiler.codegen.build"),
    "a circle through an import inside a function": (
        "ir/types.py", "from llgrad.ir import graph", "No cycles are allowed in llgrad.ir"),
}


@pytest.mark.parametrize("module, statement, report_names", BREAKS.values(), ids=list(BREAKS))
def test_the_contracts_catch(tmp_path, module, statement, report_names):
    """A copy of the package with one bad import added inside a function fails lint."""
    shutil.copytree(os.path.join(ROOT, "llgrad"), tmp_path / "llgrad",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(os.path.join(ROOT, "pyproject.toml"), tmp_path)
    with open(tmp_path / "llgrad" / module, "a") as f:
        f.write(f"\n\ndef _added():\n    {statement}  # noqa\n")
    status, report = _lint(str(tmp_path))
    assert status != 0 and report_names in report, report
