"""Installing procview-runc on a node (runtime/oci_shim_install.py): which
modules go, the directory they go to, the launcher, and what is refused.
Running the installed shim with the node's python3 and the real runc:
tests/integration/test_oci_shim_install.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from procview.runtime import oci_shim_install as install
from procview.runtime.oci_shim_install import InstallError, imported_names, lib_name, shim_files

SHIM_FILES = {"procview/__init__.py", "procview/mounts.py", "procview/runtime/__init__.py", "procview/runtime/oci_shim.py"}


def test_the_shim_needs_four_of_procviews_files():
    # oci_shim imports procview.mounts (lazily, to check the view is live);
    # the packages above each module come along.
    assert set(shim_files()) == SHIM_FILES


def test_the_copies_are_the_installed_sources():
    import procview.mounts

    with open(procview.mounts.__file__, "rb") as f:
        assert shim_files()["procview/mounts.py"] == f.read()


SOURCE = """
import os, json
from . import sibling
from .. import top_level
from .sub import thing
from pkg.other import name

def lazy():
    import socket
    from pkg.mounts import is_live
"""


def test_imports_are_found_anywhere_in_a_module_and_resolved():
    names = imported_names(SOURCE, "pkg.runtime.shim", is_package=False)
    assert {"os", "json", "socket", "pkg.runtime", "pkg.runtime.sibling", "pkg", "pkg.top_level",
            "pkg.runtime.sub", "pkg.runtime.sub.thing", "pkg.other", "pkg.other.name",
            "pkg.mounts", "pkg.mounts.is_live"} == names


def test_relative_imports_in_a_package_start_from_the_package_itself():
    assert imported_names("from . import a", "pkg.runtime", is_package=True) == {"pkg.runtime", "pkg.runtime.a"}


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A package ``fakeshim`` of our own, importable for this test only."""
    root = tmp_path / "fakeshim"
    (root / "inner").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "inner" / "__init__.py").write_text("")
    (root / "helper.py").write_text("import os\n")
    (root / "unused.py").write_text("import os\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield root
    for name in [m for m in sys.modules if m == "fakeshim" or m.startswith("fakeshim.")]:
        del sys.modules[name]


def test_only_the_modules_reached_are_copied(package):
    (package / "inner" / "shim.py").write_text("import sys\n\ndef f():\n    from fakeshim.helper import os\n")
    assert set(shim_files("fakeshim.inner.shim")) == {
        "fakeshim/__init__.py", "fakeshim/inner/__init__.py", "fakeshim/inner/shim.py", "fakeshim/helper.py"}


def test_an_import_from_outside_the_standard_library_is_refused(package):
    (package / "helper.py").write_text("import yaml\n")
    (package / "inner" / "shim.py").write_text("from fakeshim import helper\n")
    with pytest.raises(InstallError, match="fakeshim.helper imports yaml, which is not in Python's standard library"):
        shim_files("fakeshim.inner.shim")


def test_the_directory_is_named_by_its_content():
    files = {"a/__init__.py": b"", "a/b.py": b"x = 1\n"}
    assert lib_name(files) == lib_name(dict(reversed(list(files.items()))))
    assert lib_name(files) != lib_name({**files, "a/b.py": b"x = 2\n"})
    assert lib_name(files) != lib_name({"a/__init__.py": b"", "a/c.py": b"x = 1\n"})
    assert lib_name(files).startswith("procview-runc-")


def test_the_launcher_names_its_interpreter_and_directory():
    text = install.launcher_text("/usr/bin/python3", "procview-runc-0123", "9.9")
    assert text.startswith("#!/usr/bin/python3 -IS\n")
    assert install.lib_of_launcher(text) == "procview-runc-0123"
    assert install.MARKER in text
    compile(text, "procview-runc", "exec")


def test_bad_usage_exits_2_with_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "procview.runtime.oci_shim_install", "--python", "python3", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].endswith("--python must be an absolute path (a #! line), not 'python3'")
    assert os.listdir(tmp_path) == []


def test_installing_again_keeps_the_copy_in_use_and_removes_older_ones(tmp_path):
    dest = tmp_path / "opt-procview"
    launcher = Path(install.install(str(dest)))
    lib_dir = dest / "lib"
    (current,) = os.listdir(lib_dir)
    assert install.install(str(dest)) == str(launcher) and os.listdir(lib_dir) == [current]  # unchanged: not copied again
    # As after an older procview's install: its launcher names its own copy,
    # an even older copy is still there, and a killed install left a staging directory.
    for name in ("procview-runc-previous", "procview-runc-older", ".procview-runc-x.123.tmp"):
        (lib_dir / name).mkdir()
    launcher.write_text(install.launcher_text("/usr/bin/python3", "procview-runc-previous", "0.0.1"))
    install.install(str(dest))
    # The copy a shim started a moment ago may still import from stays.
    assert sorted(os.listdir(lib_dir)) == sorted([current, "procview-runc-previous"])
    assert install.lib_of_launcher(launcher.read_text()) == current
    assert os.listdir(dest / "bin") == ["procview-runc"]  # no temporary file left
    assert launcher.stat().st_mode & 0o7777 == 0o755
    assert {(lib_dir / current / path).stat().st_mode & 0o7777 for path in SHIM_FILES} == {0o644}


def test_a_launcher_it_did_not_install_is_left_alone(tmp_path):
    dest = tmp_path / "opt-procview"
    (dest / "bin").mkdir(parents=True)
    foreign = dest / "bin" / "procview-runc"
    foreign.write_text("#!/opt/procview/bin/python\nfrom procview.runtime.oci_shim import main\n")  # a virtualenv's
    result = subprocess.run([sys.executable, "-m", "procview.runtime.oci_shim_install", str(dest)],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr == (f"procview-runc install: {foreign} exists and was not installed by "
                             "procview.runtime.oci_shim_install (a procview virtualenv's?): left alone; "
                             "remove it, or install elsewhere\n")
    assert foreign.read_text().startswith("#!/opt/procview/bin/python\n")
    assert sorted(os.listdir(dest)) == ["bin"]
