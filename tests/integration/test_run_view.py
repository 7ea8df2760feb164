"""`procview run` with the view: the container's tools see its limits."""

from __future__ import annotations

import re

from .serve_helpers import no_leftovers, procview_mount, serve_daemons  # noqa: F401 (fixtures)
from .test_run import run, state_root  # noqa: F401 (fixture)

MiB = 1 << 20


def test_free_nproc_uptime_inside_show_the_limits(state_root, procview_mount):
    view = procview_mount.mount
    result = run(state_root, "--view", view, "--seccomp-socket", procview_mount.seccomp_socket, "--memory", "512M",
                 "--cpus", "1", "busybox", "sh", "-c",
                 "head -1 /proc/meminfo; nproc; cat /sys/devices/system/cpu/online; grep -c ^processor /proc/cpuinfo;"
                 " grep -c '^cpu[0-9]' /proc/stat; cat /proc/uptime; cat /proc/loadavg; free -k | sed -n 2p")
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr  # a view and a supervisor: nothing to warn about
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"MemTotal:\s+524288 kB", lines[0]), lines[0]
    assert lines[1:5] == ["1", "0", "1", "1"], result.stdout
    assert float(lines[5].split()[0]) < 60  # time namespace + view agree: the container's age
    # loadavg: a pid of the container's namespace, never a host pid (pids there are small).
    assert int(lines[6].split()[-1]) < 100, lines[6]
    # busybox free: total and free from sysinfo(2) (the supervisor's answer),
    # available from /proc/meminfo (the file): the same 512 MiB.
    free = lines[7].split()
    assert free[1] == "524288" and int(free[-1]) <= 524288, lines[7]


def test_without_a_supervisor_the_container_runs_with_a_warning(state_root, procview_mount, tmp_path):
    result = run(state_root, "--view", procview_mount.mount, "--seccomp-socket", str(tmp_path / "none.sock"),
                 "--memory", "512M", "busybox", "sh", "-c", "free -k | sed -n 2p")
    assert result.returncode == 0, result.stderr
    assert "no seccomp supervisor at" in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert int(result.stdout.split()[1]) > 524288  # sysinfo(2) is the kernel's: the host's total


def test_without_a_view_the_container_runs_with_a_warning(state_root, tmp_path):
    result = run(state_root, "--view", str(tmp_path / "none"), "busybox", "true")
    assert result.returncode == 0
    assert "no procview view at" in result.stderr and result.stderr.count("\n") == 1
