"""``procview-runc`` under Debian's Docker (docker.io 20.10, its containerd
1.6 and runc), with a private dockerd for this module (docker_helpers.py):
its own socket, data and exec roots, no bridge, no iptables rules.

The dockerd registers the runtime ``procview`` (``<venv>/bin/procview-runc``)
in its daemon.json and gets ``PROCVIEW_VIEW`` / ``PROCVIEW_SECCOMP_SOCKET``
(a ``procview serve`` of this module, with its own supervisor socket) in
its environment,
which reaches the shim through containerd and containerd-shim-runc-v2. The
images are the built-in busybox, from ``procview image export`` and
``docker load``, and a Debian image made from the host's own packages
(debian_rootfs.py, ``docker import``) for the tool matrix of
docs/syscalls.md; no registry.

Inside ``docker run --runtime procview``: busybox ``free`` (sysinfo, the
supervisor) and ``/proc/meminfo`` give the memory limit, ``nproc``
(sched_getaffinity) and ``/sys/devices/system/cpu/online`` the CPUs.
A container of the default runtime is unchanged; with the view's daemon
stopped a ``--runtime procview`` container still starts (on the host's
values); the LXCFS-style ``-v`` layout works under plain runc; exit codes
pass through; ``"default-runtime": "procview"`` in daemon.json gives every
container the view. Containers run with ``--network none`` (the daemon has no
bridge). Timeouts only bound hangs.
"""

from __future__ import annotations

import os

import pytest

from .debian_rootfs import rootfs_tar
from .docker_helpers import PrivateDockerd, have_docker
from .engine_helpers import (PROBE, SECOND_RUNTIME, assert_host_values, check_a_stopped_view,  # noqa: F401
                             module_dir, second_runtime, values, view)
from .serve_helpers import host_meminfo_kib, no_leftovers, serve_daemons  # noqa: F401 (fixtures)
from .test_syscall_view import LIMIT_KB, assert_container_values, needs_two_cpus, parse_probes, probe_script

_why_not = have_docker()
pytestmark = pytest.mark.skipif(_why_not is not None, reason=_why_not or "")

NET = ("--network", "none")  # the private dockerd has no bridge


@pytest.fixture(scope="module")
def dockerd(module_dir, view, second_runtime, tmp_path_factory):
    daemon = PrivateDockerd(module_dir / "docker",
                            {"PROCVIEW_VIEW": view.mount, "PROCVIEW_SECCOMP_SOCKET": view.seccomp_socket},
                            runtimes={SECOND_RUNTIME: second_runtime})
    problems = []
    try:
        daemon.start()
        daemon.load_busybox(str(tmp_path_factory.mktemp("procview-root")))
        yield daemon
    finally:
        problems = daemon.close()
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


def run(dockerd, *args: str):
    return dockerd.docker("run", "--rm", *NET, *args, check=False)


def test_the_procview_runtime_gives_a_container_its_limits(dockerd, view):
    result = run(dockerd, "--runtime", "procview", "-m", "512m", "--cpus", "1", "busybox", "sh", "-c", PROBE)
    assert result.returncode == 0, result.stderr + dockerd.describe()
    assert values(result.stdout) == {"free": "512", "nproc": "1", "meminfo": str(512 * 1024), "online": "0"}, (
        result.stdout + result.stderr)
    # The shim found view and supervisor through dockerd's environment.
    assert "supervising container" in view.log(), view.log()


def test_cpuset_and_a_smaller_limit(dockerd, view):
    result = run(dockerd, "--runtime", "procview", "--cpuset-cpus", "0", "-m", "256m", "busybox", "sh", "-c", PROBE)
    assert result.returncode == 0, result.stderr + dockerd.describe()
    assert values(result.stdout) == {"free": "256", "nproc": "1", "meminfo": str(256 * 1024), "online": "0"}, (
        result.stdout + result.stderr)


def test_a_container_of_the_default_runtime_is_unchanged(dockerd, view):
    result = run(dockerd, "-m", "512m", "--cpus", "1", "busybox", "sh", "-c", PROBE)
    assert result.returncode == 0, result.stderr + dockerd.describe()
    assert_host_values(values(result.stdout))


def test_with_the_view_stopped_the_container_still_starts(dockerd, serve_daemons, module_dir):
    check_a_stopped_view(lambda *args: run(dockerd, *args), serve_daemons, module_dir)


def test_the_lxcfs_style_bind_mounts_keep_working(dockerd, view):
    result = run(dockerd, "-m", "512m", "-v", f"{view.path('proc/meminfo')}:/proc/meminfo:rw",
                 "busybox", "sh", "-c", PROBE)
    assert result.returncode == 0, result.stderr + dockerd.describe()
    assert values(result.stdout)["meminfo"] == str(512 * 1024), result.stdout


def test_default_runtime_in_daemon_json_gives_every_container_the_view(dockerd, view):
    """``"default-runtime": "procview"`` in daemon.json, reloaded: a plain
    ``docker run`` gets the view; ``--runtime runc`` still opts out."""
    dockerd.reconfigure(**{"default-runtime": "procview"})
    try:
        result = run(dockerd, "-m", "512m", "--cpus", "1", "busybox", "sh", "-c", PROBE)
        assert result.returncode == 0, result.stderr + dockerd.describe()
        assert values(result.stdout) == {"free": "512", "nproc": "1", "meminfo": str(512 * 1024), "online": "0"}, (
            result.stdout + result.stderr)
        result = run(dockerd, "--runtime", "runc", "-m", "512m", "--cpus", "1", "busybox", "sh", "-c", PROBE)
        assert result.returncode == 0, result.stderr + dockerd.describe()
        assert values(result.stdout)["meminfo"] == str(host_meminfo_kib()), result.stdout
    finally:
        dockerd.reconfigure(**{"default-runtime": None})


@pytest.mark.parametrize("runtime", [("--runtime", "procview"), ()], ids=["procview", "runc"])
def test_exit_codes_pass_through(dockerd, view, runtime):
    assert run(dockerd, *runtime, "busybox", "sh", "-c", "exit 3").returncode == 3
    assert run(dockerd, *runtime, "busybox", "true").returncode == 0


# -- the tool matrix of docs/syscalls.md, in a Debian image --------------------------

DEBIAN_IMAGE = "procview-test/debian-tools:12"
# The matrix's tools, from Debian's own packages: coreutils (nproc),
# procps (free, top, ps), util-linux (lscpu), libc-bin (getconf),
# busybox-static and Python 3 with psutil; dash is /bin/sh; ncurses-base
# for the terminfo entries top needs (it exits 1 without them, silently).
DEBIAN_TOOLS = ["dash", "coreutils", "grep", "sed", "mawk", "procps", "util-linux", "libc-bin",
                "busybox-static", "python3-psutil", "ncurses-base"]


@pytest.fixture(scope="module")
def debian_image(dockerd, module_dir):
    archive = str(module_dir / "debian-rootfs.tar")
    rootfs_tar(DEBIAN_TOOLS, archive)
    try:
        dockerd.import_rootfs(archive, DEBIAN_IMAGE)
    finally:
        os.unlink(archive)
    return DEBIAN_IMAGE


@pytest.mark.parametrize("limits", [
    ("--cpus", "1"),
    ("--cpuset-cpus", "0"),
    pytest.param(("--cpus", "1", "--cpuset-cpus", "0-1"), marks=needs_two_cpus),
], ids=["cpus-1", "cpuset-0", "cpus-1-over-cpuset-0-1"])
def test_fidelity_matrix(dockerd, view, debian_image, limits):
    result = run(dockerd, "--runtime", "procview", "-m", f"{LIMIT_KB}k", *limits, "-e", "LC_ALL=C", "-e", "COLUMNS=200",
                 debian_image, "sh", "-c", probe_script())
    assert result.returncode == 0, result.stdout + result.stderr + dockerd.describe()
    values = parse_probes(result.stdout)
    assert_container_values(values, result.stdout + result.stderr, time_namespace=False)
    # runc 1.1 makes no time namespace: ps computes pid 1's age from the
    # container's uptime and a start time counted from the host's boot,
    # and gets nonsense, as under LXCFS (docs/engines.md). When this
    # fails, a runtime gave the container a time namespace: update the docs.
    assert not 0 <= int(values["ps -o etimes (pid 1)"]) <= 3600, result.stdout
