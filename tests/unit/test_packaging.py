"""What the distribution must hold, checked on the source tree (the
built and installed package is tests/integration/test_packaging.py).

- One import package: the runtime/ folder is ``procview.runtime`` (through
  the procview/runtime symlink), and no code imports it as a top-level
  ``runtime``, which would be a second copy of every module in a checkout
  and a missing module in a wheel.
- Every file the package needs at run time that is not Python is declared
  as package data in pyproject.toml, or a wheel would leave it out.
"""

from __future__ import annotations

import ast
import fnmatch
import os
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CODE_DIRS = ("procview", "runtime", "tests", "bench", "dev")


def _python_files():
    for top in CODE_DIRS:
        for base, dirs, files in os.walk(REPO / top):  # does not follow procview/runtime: runtime/ is walked itself
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for name in files:
                if name.endswith(".py"):
                    yield Path(base) / name


def _imported_modules(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def test_runtime_is_imported_only_as_procview_runtime():
    offenders = [f"{path.relative_to(REPO)}: {module}"
                 for path in _python_files() for module in _imported_modules(path)
                 if module == "runtime" or module.startswith("runtime.")]
    assert offenders == []


def test_the_runtime_folder_is_the_procview_runtime_subpackage():
    link = REPO / "procview" / "runtime"
    assert link.is_symlink() and os.readlink(link) == "../runtime"
    assert (link / "__init__.py").samefile(REPO / "runtime" / "__init__.py")


def test_every_data_file_of_the_package_is_declared_as_package_data():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    declared = config["tool"]["setuptools"]["package-data"]
    undeclared = []
    for top, package in (("procview", "procview"), ("runtime", "procview.runtime")):
        for base, dirs, files in os.walk(REPO / top):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            relative = Path(base).relative_to(REPO / top)
            subpackage = ".".join([package, *relative.parts])
            for name in files:
                if name.endswith((".py", ".pyc")):
                    continue
                if not any(fnmatch.fnmatch(name, pattern) for pattern in declared.get(subpackage, ())):
                    undeclared.append(f"{subpackage}: {name}")
    assert undeclared == []
