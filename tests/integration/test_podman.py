"""``procview-runc`` under Debian's Podman (podman 4.3, conmon 2.1, runc
1.1), with a private podman for this module (podman_helpers.py): its own
roots, configuration files and cgroup, no network, no registry.

podman's containers.conf (a private one here) registers the shim as
``[engine.runtimes] procview`` and gives conmon, which runs the runtime's
``create``, ``PROCVIEW_VIEW`` / ``PROCVIEW_SECCOMP_SOCKET`` (a ``procview
serve`` of this module, with its own supervisor socket) through
``conmon_env_vars``: podman's own environment does not reach the runtime.
The image is the built-in busybox, from ``procview image export`` and
``podman load`` (no registry).

Inside ``podman run --runtime procview`` (or the shim's absolute path):
busybox ``free`` (sysinfo, the supervisor) and ``/proc/meminfo`` give the
memory limit, ``nproc`` (sched_getaffinity) and
``/sys/devices/system/cpu/online`` the CPUs. A container of the default
runtime (runc) is unchanged; with the view's daemon stopped a container
of the shim still starts (on the host's values), and the shim's warnings
are in podman's runtime log (``oci-log``); the LXCFS-style ``-v`` layout
works under plain runc; exit codes pass through. Timeouts only bound
hangs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .engine_helpers import (PROBE, SECOND_RUNTIME, SHIM, assert_host_values, check_a_stopped_view,  # noqa: F401
                             module_dir, running, second_runtime, values, view, view_values)
from .podman_helpers import PrivatePodman, containers_conf, have_podman
from .serve_helpers import no_leftovers, serve_daemons  # noqa: F401 (fixtures)

_why_not = have_podman()
pytestmark = pytest.mark.skipif(_why_not is not None, reason=_why_not or "")


@pytest.fixture(scope="module")
def podman(module_dir, view, second_runtime, tmp_path_factory):
    engine = PrivatePodman(module_dir / "podman",
                           {"PROCVIEW_VIEW": view.mount, "PROCVIEW_SECCOMP_SOCKET": view.seccomp_socket},
                           runtimes={SECOND_RUNTIME: second_runtime})
    with running(engine):
        engine.load_busybox(str(tmp_path_factory.mktemp("procview-root")))
        yield engine


@pytest.mark.parametrize("runtime", ["procview", SHIM], ids=["named", "path"])
def test_the_procview_runtime_gives_a_container_its_limits(podman, view, runtime):
    supervised_before = view.log().count("supervising container")
    result = podman.run("--runtime", runtime, "-m", "512m", "--cpus", "1", "busybox", "sh", "-c", PROBE)
    assert result.returncode == 0, result.stderr
    assert values(result.stdout) == view_values(512), result.stdout + result.stderr
    # The shim found view and supervisor through conmon's environment.
    assert view.log().count("supervising container") == supervised_before + 1, view.log()


def test_cpuset_and_a_smaller_limit(podman, view):
    result = podman.run("--runtime", "procview", "--cpuset-cpus", "0", "-m", "256m", "busybox", "sh", "-c", PROBE)
    assert result.returncode == 0, result.stderr
    assert values(result.stdout) == view_values(256), result.stdout + result.stderr


def test_a_container_of_the_default_runtime_is_unchanged(podman, view):
    result = podman.run("-m", "512m", "--cpus", "1", "busybox", "sh", "-c", PROBE)
    assert result.returncode == 0, result.stderr
    assert_host_values(values(result.stdout))


def test_podmans_own_environment_does_not_reach_the_runtime(podman, view, module_dir):
    # The same configuration without the view in conmon_env_vars: the
    # variables in podman's environment stop at podman.
    conf = module_dir / "containers-without-view.conf"
    conf.write_text(containers_conf(podman.tmp, {}, {}))
    result = podman.run("--runtime", SHIM, "-m", "512m", "--cpus", "1", "busybox", "sh", "-c", PROBE,
                        env={"CONTAINERS_CONF": str(conf), "PROCVIEW_VIEW": view.mount,
                             "PROCVIEW_SECCOMP_SOCKET": view.seccomp_socket})
    conf.unlink()
    assert result.returncode == 0, result.stderr
    assert_host_values(values(result.stdout))


def test_with_the_view_stopped_the_container_still_starts(podman, serve_daemons, module_dir):
    check_a_stopped_view(podman.run, serve_daemons, module_dir)


def test_the_lxcfs_style_bind_mounts_keep_working(podman, view):
    result = podman.run("-m", "512m", "-v", f"{view.path('proc/meminfo')}:/proc/meminfo:rw", "busybox", "sh", "-c", PROBE)
    assert result.returncode == 0, result.stderr
    assert values(result.stdout)["meminfo"] == str(512 * 1024), result.stdout


@pytest.mark.parametrize("runtime", [("--runtime", "procview"), ()], ids=["procview", "runc"])
def test_exit_codes_pass_through(podman, view, runtime):
    assert podman.run(*runtime, "busybox", "sh", "-c", "exit 3").returncode == 3
    assert podman.run(*runtime, "busybox", "true").returncode == 0


def test_the_shims_warnings_go_to_podmans_runtime_log(podman):
    # The second runtime's view is not running outside its test: the shim
    # warns, and runtime_supports_json sends its warnings where runc's own
    # log lines go, the container's oci-log.
    created = podman.run("--name", "warned", "--runtime", SECOND_RUNTIME, "busybox", "true", remove=False)
    assert created.returncode == 0, created.stderr
    container = podman.podman("inspect", "--format", "{{.Id}}", "warned").stdout.strip()
    log = Path(podman.runroot) / "overlay-containers" / container / "userdata" / "oci-log"
    messages = [json.loads(line)["msg"] for line in log.read_text().splitlines()]
    podman.podman("rm", "warned")
    assert [m.split(":")[0] for m in messages] == ["procview-runc", "procview-runc"], messages
    assert "no live procview view" in messages[0] and "no procview supervisor" in messages[1], messages
