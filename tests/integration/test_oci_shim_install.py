"""procview-runc as the DaemonSet installs it on a node
(runtime/oci_shim_install.py, deploy/kubernetes/procview.yaml): copied out
of the virtualenv into a directory of its own, run by the node's
/usr/bin/python3, isolated from every other Python package.

With the real runc: ``--version`` is runc's own answer, and a busybox
container started through the installed copy sees its own limits, so the
copied modules are all the shim needs, on its pass-through path and on the
path that edits config.json (the lazily imported ones included).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from . import test_oci_shim
from .serve_helpers import no_leftovers, serve_daemons  # noqa: F401 (fixtures)
from .test_oci_shim import LIMIT_KB, PROBE, runc, served, values  # noqa: F401 (fixtures)
from .test_run import state_root  # noqa: F401 (fixture)

NODE_PYTHON = "/usr/bin/python3"  # Debian's: not the virtualenv's interpreter


@pytest.fixture
def installed(tmp_path) -> Path:
    """The shim installed by the installer's command line into a fresh
    directory, as the init container does into the host's /opt/procview."""
    dest = tmp_path / "opt-procview"
    result = subprocess.run([sys.executable, "-m", "procview.runtime.oci_shim_install", "--python", NODE_PYTHON, str(dest)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    launcher = dest / "bin" / "procview-runc"
    assert result.stderr == f"procview-runc installed: {launcher} (runs with {NODE_PYTHON})\n"
    return launcher


@pytest.fixture
def poisoned_path(tmp_path) -> str:
    """A directory with a ``procview`` package that fails on import: the
    launcher must not look there, even when PYTHONPATH says so."""
    poison = tmp_path / "poison" / "procview"
    poison.mkdir(parents=True)
    (poison / "__init__.py").write_text("raise ImportError('the installed shim imported a procview from PYTHONPATH')\n")
    return str(poison.parent)


def test_the_installed_shim_is_runc_for_the_nodes_python(installed, poisoned_path):
    assert installed.read_text().startswith(f"#!{NODE_PYTHON} -IS\n")
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": poisoned_path}
    result = subprocess.run([str(installed), "--version"], capture_output=True, text=True, env=env, timeout=60)
    runc = subprocess.run(["runc", "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == runc.stdout and result.stdout.startswith("runc version ")
    assert result.stderr == ""


def test_a_container_started_through_the_installed_shim_sees_its_own_limits(installed, poisoned_path, runc, served,
                                                                             monkeypatch):
    daemon, env = served
    monkeypatch.setattr(test_oci_shim, "SHIM", str(installed))  # runc.run starts containers through it
    bundle = runc.bundle(["sh", "-c", PROBE])
    result = runc.run(bundle, env={**env, "PYTHONPATH": poisoned_path})
    assert result.returncode == 0, result.stderr
    assert values(result.stdout) == {"free": "512", "nproc": "1", "meminfo": str(LIMIT_KB), "online": "0"}, \
        result.stdout + result.stderr
    assert result.stderr == ""
    assert "supervising container" in daemon.log()
