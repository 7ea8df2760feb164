"""procview as a user installs it: an sdist and a wheel built the way
``python -m build`` and ``pip`` build them, the wheel installed into a
fresh virtualenv outside the checkout, and the main job run from there
(``procview serve``; a 512 MiB / 1-CPU busybox container shows ``free``
512 and ``nproc`` 1). A data file left out of the package, a module that
only imports from the checkout, or a missing executable fails here.

The builds run in a copy of the checkout (what ``git ls-files`` would
give, plus uncommitted work), so the checkout itself gets no ``build/``
or ``*.egg-info``. Building needs the package index (setuptools for the
isolated build) and installing needs procview's dependencies: pip's cache
has them once ``dev/setup`` ran.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from .serve_helpers import REPO, no_leftovers, serve_daemons  # noqa: F401  (fixtures)

BUILD_TIMEOUT = 900  # seconds; bounds a hang (pip may compile pyfuse3 on a cold cache)
PROFILE = "procview/runtime/security/default_profile.json"
# What a copy of the checkout leaves out: generated, never part of a build.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                                    ".hypothesis")


def _run(argv, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=BUILD_TIMEOUT, stdin=subprocess.DEVNULL,
                            **kwargs)
    assert result.returncode == 0, f"{' '.join(map(str, argv))}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def _clean_env() -> dict:
    """The environment of a user's shell: nothing that points Python at the
    checkout or at this test run's virtualenv."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PYTHON", "VIRTUAL_ENV", "PIP_REQUIRE"))}
    env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    env["PROCVIEW_FORKSERVER_SOCKET"] = ""  # the machine's fork server runs its own code, not the wheel's
    return env


@pytest.fixture(scope="module")
def source_copy(tmp_path_factory) -> Path:
    copy = tmp_path_factory.mktemp("packaging") / "procview-src"
    shutil.copytree(REPO, copy, symlinks=True, ignore=NOT_SOURCE)
    return copy


@pytest.fixture(scope="module")
def distributions(source_copy, tmp_path_factory) -> dict:
    """``python -m build``: an sdist, and a wheel built from that sdist."""
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(out), str(source_copy)])
    (sdist,) = out.glob("procview-*.tar.gz")
    (wheel,) = out.glob("procview-*.whl")
    return {"sdist": sdist, "wheel": wheel}


@pytest.fixture(scope="module")
def installed(distributions, tmp_path_factory) -> Path:
    """A fresh virtualenv, outside the checkout, with only the wheel (and
    its dependencies) installed. Returns the virtualenv's directory."""
    venv = tmp_path_factory.mktemp("installed") / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    _run([base_python, "-m", "venv", str(venv)], env=_clean_env())
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
          str(distributions["wheel"])], env=_clean_env(), cwd="/")
    return venv


def test_the_wheel_carries_the_code_the_data_and_the_executable(distributions):
    names = zipfile.ZipFile(distributions["wheel"]).namelist()
    assert PROFILE in names
    assert "procview/runtime/run_command.py" in names and "procview/cli.py" in names
    assert any(name.endswith(".data/scripts/procview") for name in names), names
    assert any(name.endswith(".data/scripts/procview-runc") for name in names), names
    assert "procview/runtime/oci_shim.py" in names
    # One import package: nothing top-level but procview (and the metadata).
    tops = {name.split("/")[0] for name in names}
    assert {top for top in tops if not top.endswith((".dist-info", ".data"))} == {"procview"}, tops
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]


def test_the_sdist_carries_what_a_wheel_is_built_from(distributions):
    with tarfile.open(distributions["sdist"]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
        members = {member.name.split("/", 1)[1]: member for member in sdist.getmembers() if "/" in member.name}
    assert {PROFILE, "pyproject.toml", "README.md", "bin/procview", "bin/procview-runc", "dev/build_backend/procview_build.py"} <= names
    # The checkout's procview/runtime symlink arrives as the files themselves.
    assert members["procview/runtime"].isdir()
    assert "procview/runtime/security/seccomp.py" in names
    assert not [name for name in names if name.startswith((".venv", "tests/", ".git/"))]


def test_a_wheel_built_in_an_unclean_tree_carries_no_leftovers(tmp_path):
    """``pip wheel .`` builds in the tree; setuptools stages modules in
    build/lib and never empties it, so a module deleted since an earlier
    build would ship again. procview's build backend forgets them."""
    tree = tmp_path / "unclean"
    shutil.copytree(REPO, tree, symlinks=True, ignore=NOT_SOURCE)
    stale = tree / "build" / "lib" / "procview" / "deleted_since.py"
    stale.parent.mkdir(parents=True)
    stale.write_text("LEFT_OVER = True\n")
    (tree / "procview" / "__pycache__").mkdir(exist_ok=True)
    (tree / "procview" / "__pycache__" / "stray.cpython-311.pyc").write_bytes(b"not code")
    out = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check", "-w", str(out),
          str(tree)])
    (wheel,) = out.glob("procview-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert PROFILE in names
    assert not [name for name in names if "deleted_since" in name or name.endswith(".pyc")], names


def test_the_installed_package_imports_from_its_own_directory(installed):
    code = ("import procview, procview.runtime.security.programs as p, os; "
            "print(procview.__file__); print(os.path.exists(p.DEFAULT_PROFILE))")
    result = _run([str(installed / "bin" / "python"), "-c", code], env=_clean_env(), cwd="/")
    location, profile_exists = result.stdout.split()
    assert location.startswith(str(installed)), location
    assert profile_exists == "True"
    site = Path(location).parent.parent
    assert not (site / "runtime").exists(), "a top-level 'runtime' package was installed"


def test_the_main_job_runs_from_the_installed_package(installed, serve_daemons, tmp_path):
    """The README's demo, from a directory outside the checkout, with only
    the installed package: serve the view, start a 512 MiB / 1-CPU busybox
    container, read free, nproc and /proc/meminfo inside."""
    procview = str(installed / "bin" / "procview")
    away = tmp_path / "elsewhere"
    away.mkdir()
    daemon = serve_daemons.start(procview=procview, cwd=away, env=_clean_env())
    inside = "free -m; echo nproc=$(nproc); head -1 /proc/meminfo"
    result = subprocess.run(
        [procview, "run", "--root", str(tmp_path / "state"), "--rm", "--view", daemon.mount,
         "--seccomp-socket", daemon.seccomp_socket, "--memory", "512M", "--cpus", "1", "busybox", "sh", "-c", inside],
        capture_output=True, text=True, timeout=BUILD_TIMEOUT, cwd=away, env=_clean_env(), stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    mem_line = next(line for line in result.stdout.splitlines() if line.startswith("Mem:"))
    assert mem_line.split()[1] == "512", result.stdout  # busybox free: sysinfo(2), answered by the supervisor
    assert "nproc=1" in result.stdout.split()
    assert re.search(r"^MemTotal:\s+524288 kB$", result.stdout, re.M), result.stdout


def test_the_installed_procview_runc_finds_runc(installed, tmp_path):
    """procview-runc is installed next to procview, runs from the installed
    package (a pass-through: runc's own --version), and says in one line,
    exit 127, when there is no runc to run."""
    shim = installed / "bin" / "procview-runc"
    assert os.access(shim, os.X_OK)
    if shutil.which("runc"):
        result = subprocess.run([str(shim), "--version"], capture_output=True, text=True, timeout=BUILD_TIMEOUT,
                                cwd="/", env=_clean_env(), stdin=subprocess.DEVNULL)
        assert result.returncode == 0 and result.stdout.startswith("runc version"), result.stdout + result.stderr
    result = subprocess.run([str(shim), "state", "x"], capture_output=True, text=True, timeout=BUILD_TIMEOUT, cwd="/",
                            env={**_clean_env(), "PROCVIEW_RUNC": str(tmp_path / "no-runc")}, stdin=subprocess.DEVNULL)
    assert result.returncode == 127, result.stderr
    assert result.stderr.startswith("procview-runc: runc not found") and result.stderr.count("\n") == 1, result.stderr


def _library_file(soname: str) -> str:
    """Where the dynamic loader finds ``soname`` (ldconfig's cache)."""
    listing = _run(["ldconfig", "-p"]).stdout
    match = re.search(rf"^\s*{re.escape(soname)} \(.*x86-64.*\) => (\S+)$", listing, re.M) or \
        re.search(rf"^\s*{re.escape(soname)} \(.*\) => (\S+)$", listing, re.M)
    assert match, f"{soname} is not in ldconfig's cache"
    return os.path.realpath(match.group(1))


@pytest.mark.parametrize("soname, library, package, argv, code", [
    ("libfuse3.so.3", "libfuse3", "fuse3", ["serve", "{tmp}/mnt"], 1),
    ("libseccomp.so.2", "libseccomp", "libseccomp2", ["serve", "{tmp}/mnt", "--seccomp-socket", "{tmp}/s.sock"], 1),
    ("libseccomp.so.2", "libseccomp", "libseccomp2", ["run", "--root", "{tmp}/state", "--rm", "--no-view", "busybox", "true"], 125),
])
def test_a_missing_debian_library_is_one_line_naming_its_package(installed, tmp_path, soname, library, package, argv,
                                                                  code):
    """As on a machine without the package: the library is hidden (an empty
    file bound over it in a mount namespace of the command's own)."""
    hidden = _library_file(soname)
    argv = [str(installed / "bin" / "procview"), *(arg.format(tmp=tmp_path) for arg in argv)]
    script = 'mount --bind /dev/null "$1" && shift && exec "$@"'
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", hidden, *argv],
                            capture_output=True, text=True, timeout=BUILD_TIMEOUT, cwd="/", env=_clean_env(),
                            stdin=subprocess.DEVNULL)
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"{library} cannot be loaded" in lines[0] and f"apt-get install {package}" in lines[0], lines[0]
