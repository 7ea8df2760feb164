"""The escape battery: from inside a default ``procview run`` container, as
root, each known way out must fail with the expected error. Each check
also runs in a control container (``--privileged`` or
``--security-opt seccomp=unconfined``) where it succeeds or fails for
another reason, which proves the check can tell the difference.

Every check runs in one container per mode (see conftest.py); the
``probe`` binary makes the syscalls busybox cannot.
"""

from __future__ import annotations

import os
import socket

import pytest

from .conftest import Battery, host_disk, leftovers

pytestmark = pytest.mark.integration

DEFAULT_CAPEFF = "00000000a80425fb"
UNCONFINED = ("--security-opt", "seccomp=unconfined")
PRIVILEGED = ("--privileged",)


@pytest.fixture(scope="module")
def marker(tmp_path_factory):
    """A file only the host's root can see."""
    path = tmp_path_factory.mktemp("host-only") / "procview-escape-marker"
    path.write_text("host\n")
    return str(path)


@pytest.fixture(scope="module")
def battery(probe, marker, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("procview-root"))
    host_pid = os.getpid()
    assert host_pid > 100  # no container process has so high a pid
    checks = {
        "status": "grep -E '^(Cap|Seccomp|NoNewPrivs)' /proc/self/status",
        "init_status": "grep -E '^(CapEff|Seccomp):' /proc/1/status",
        "mount": "/probe mount",
        "busybox_mount": "mount -t tmpfs none /tmp",
        **{f"unshare_{flag}": f"unshare -{flag} true" for flag in "muinpU"},
        "nsenter": "nsenter -t 1 -m true",
        "setns": "/probe setns",
        "pivot_root": "/probe pivot_root",
        "chroot_escape": f"/probe chroot_escape {marker}",
        "ptrace_init": "/probe ptrace 1",
        "keyctl": "/probe keyctl",
        "bpf": "/probe bpf",
        "perf_event_open": "/probe perf_event_open",
        "open_by_handle_at": "/probe open_by_handle_at",
        "sysrq_trigger": "/probe openw /proc/sysrq-trigger",
        "proc_sys_kernel": "/probe openw /proc/sys/kernel/core_pattern",
        "proc_sys_hostname": "echo x > /proc/sys/kernel/hostname",
        "kcore": "/probe read /proc/kcore",
        "timer_list": "/probe read /proc/timer_list",
        "keys": "/probe read /proc/keys",
        "acpi": "ls -A /proc/acpi 2>/dev/null | wc -l",
        "disk": f"/probe dev b {host_disk()}",
        "fuse_device": "/probe dev c 10:229",
        "init_module": "/probe init_module",
        "finit_module": "/probe finit_module",
        "reboot": "/probe reboot",
        "hostname": "hostname procview-escape-test && hostname",
        "kill_host_pid": f"/probe kill {host_pid}",
        "kill_own_child": "sleep 100 & /probe kill $!",
        "sys_writable": "grep ' /sys ' /proc/mounts",
    }
    host_name = socket.gethostname()
    yield Battery(root, probe, checks)
    assert socket.gethostname() == host_name, "a container changed the host's hostname"
    assert os.path.exists(marker)
    assert leftovers(root) == []


def test_status_shows_seccomp_and_docker_capabilities(battery):
    status = battery()["status"]
    assert "Seccomp:\t2" in status
    assert f"CapEff:\t{DEFAULT_CAPEFF}" in status and f"CapPrm:\t{DEFAULT_CAPEFF}" in status
    assert f"CapBnd:\t{DEFAULT_CAPEFF}" in status
    assert "CapInh:\t0000000000000000" in status and "CapAmb:\t0000000000000000" in status
    assert "NoNewPrivs:\t0" in status
    # The init is confined the same way.
    assert battery()["init_status"].splitlines()[:2] == [f"CapEff:\t{DEFAULT_CAPEFF}", "Seccomp:\t2"]
    privileged = battery(*PRIVILEGED)["status"]
    assert "Seccomp:\t0" in privileged and f"CapEff:\t{DEFAULT_CAPEFF}" not in privileged


def test_no_new_privileges_only_when_asked(battery):
    assert "NoNewPrivs:\t1" in battery("--security-opt", "no-new-privileges")["status"]
    assert "NoNewPrivs:\t0" in battery("--security-opt", "no-new-privileges=false")["status"]


def test_mount_is_refused(battery):
    assert battery()["mount"] == "EPERM\nrc=0"
    assert "rc=0" not in battery()["busybox_mount"]
    assert battery(*PRIVILEGED)["mount"] == "ok\nrc=0"


@pytest.mark.parametrize("flag", list("muinpU"))
def test_unshare_of_each_namespace_is_refused(battery, flag):
    result = battery()[f"unshare_{flag}"]
    assert "Operation not permitted" in result and not result.endswith("rc=0"), result
    assert battery(*PRIVILEGED)[f"unshare_{flag}"] == "rc=0"


def test_setns_is_refused(battery):
    # nsenter into the container's own pid 1 (the host's are out of reach).
    assert not battery()["nsenter"].endswith("rc=0")
    assert battery()["setns"] == "EPERM\nrc=0"
    assert battery(*PRIVILEGED)["nsenter"] == "rc=0"
    assert battery(*PRIVILEGED)["setns"] == "ok\nrc=0"


def test_pivot_root_is_refused(battery):
    assert battery()["pivot_root"] == "EPERM\nrc=0"
    privileged = battery(*PRIVILEGED)["pivot_root"]
    assert privileged.split()[0] != "EPERM", privileged  # EINVAL/EBUSY: the kernel's own checks


def test_double_chroot_does_not_reach_the_host(battery):
    # CAP_SYS_CHROOT is one of Docker's 14: the escape leaves the inner
    # chroot (so the check can see an escape), but only reaches the
    # container's own root: pivot_root detached the host's.
    assert battery()["chroot_escape"] == "left-inner-chroot host-root-hidden\nrc=0"
    assert battery(*PRIVILEGED)["chroot_escape"] == "left-inner-chroot host-root-hidden\nrc=0"


def test_ptrace_of_the_init_is_refused(battery):
    assert battery()["ptrace_init"] == "EPERM\nrc=0"
    assert battery(*PRIVILEGED)["ptrace_init"] == "ok\nrc=0"


@pytest.mark.parametrize("check", ["keyctl", "bpf", "perf_event_open", "open_by_handle_at"])
def test_dangerous_syscalls_are_refused(battery, check):
    assert battery()[check] == "EPERM\nrc=0"
    control = battery(*PRIVILEGED)[check]
    assert control.split()[0] != "EPERM", control


def test_keyctl_works_without_seccomp(battery):
    # keyctl needs no capability: only the filter stops it.
    assert battery(*UNCONFINED)["keyctl"].split()[0] != "EPERM"


def test_proc_sys_and_sysrq_trigger_are_read_only(battery):
    for check, path in (("sysrq_trigger", "/proc/sysrq-trigger"), ("proc_sys_kernel", "/proc/sys/kernel/core_pattern")):
        if not os.path.exists(path):  # a kernel without CONFIG_MAGIC_SYSRQ
            assert battery()[check] == "ENOENT\nrc=0", check
            continue
        assert battery()[check] == "EROFS\nrc=0", check
        assert battery(*PRIVILEGED)[check] == "ok\nrc=0", check
    assert "Read-only file system" in battery()["proc_sys_hostname"]


def test_masked_paths_read_nothing(battery):
    results = battery()
    assert results["kcore"].split()[0] in ("empty", "ENOENT")  # masked, or absent from this kernel
    assert results["timer_list"] == "empty\nrc=0"
    assert results["keys"].split()[0] in ("empty", "ENOENT")
    assert results["acpi"].split()[0] == "0"
    assert battery(*PRIVILEGED)["timer_list"] == "data\nrc=0"


@pytest.mark.parametrize("check", ["disk", "fuse_device"])
def test_a_made_device_node_cannot_be_opened(battery, check):
    # CAP_MKNOD makes the node; the devices cgroup (v1 files, v2 eBPF) refuses to open it.
    assert battery()[check] == "mknod=ok open=EPERM\nrc=0"
    assert battery(*PRIVILEGED)[check].startswith("mknod=ok open=ok")


def test_module_loading_and_reboot_are_refused(battery):
    for check in ("init_module", "finit_module", "reboot"):
        assert battery()[check] == "EPERM\nrc=0", check
        control = battery(*PRIVILEGED)[check]
        assert control.split()[0] != "EPERM", (check, control)


def test_hostname_change_stays_inside(battery):
    assert "Operation not permitted" in battery()["hostname"]
    # Privileged, it changes the container's UTS namespace only (the fixture checks the host's).
    assert battery(*PRIVILEGED)["hostname"] == "procview-escape-test\nrc=0"


def test_host_processes_cannot_be_signalled(battery):
    assert battery()["kill_host_pid"] == "ESRCH\nrc=0"
    assert battery(*PRIVILEGED)["kill_host_pid"] == "ESRCH\nrc=0"
    assert battery()["kill_own_child"] == "ok\nrc=0"  # kill itself works


def test_sys_is_read_only_unless_privileged(battery):
    assert " ro," in battery()["sys_writable"]
    assert " rw," in battery(*PRIVILEGED)["sys_writable"]
