"""The real tools, run in a container that sees ``procview serve``'s view.

Each test makes a child cgroup with limits, starts the tool as a child of
pid 1 of new pid + mount namespaces (``unshare``), with the mount's files
bind-mounted over ``/proc/{meminfo,cpuinfo,stat,uptime,loadavg,swaps,diskstats}``
and over ``/sys/devices/system/{cpu,node}`` (what an LXCFS user does), and
checks that the tool reports the container's limits. One daemon serves the
whole module (tests about the daemon's own life are in
test_serve_daemon.py).

The main container: 512 MiB and a cpuset of one CPU (the host's last, so
the view renumbers it to 0). ``nproc`` asks the kernel (sched_getaffinity),
so only a cpuset changes it; the quota-only test documents that gap.
"""

from __future__ import annotations

import re
import time

import pytest

from .serve_helpers import (
    MiB,
    PYTHON,
    STDLIB_PYTHON,
    cpuinfo_blocks,
    cpuinfo_processors,
    host_cpus,
    identifying_fields,
    meminfo_kib,
    no_leftovers,  # noqa: F401  (autouse fixture)
    run_in_container,
    shared_mount,  # noqa: F401  (fixture)
)

LIMIT = 512 * MiB


@pytest.fixture
def pinned(sandbox):
    """A cgroup of 512 MiB pinned to the host's last CPU."""
    cpus = host_cpus()
    return sandbox.cgroup("pinned", memory=LIMIT, cpuset={cpus[-1]})


def _tool(sandbox, cg, mount, argv, **kwargs):
    return run_in_container(sandbox, cg, mount.mount, argv, **kwargs).ok()


def test_free_total_is_the_memory_limit(sandbox, shared_mount, pinned):
    run = _tool(sandbox, pinned, shared_mount, ["free", "-b"])
    match = re.search(r"^Mem:\s+(\d+)\s+(\d+)\s+(\d+)", run.out, re.M)
    assert match, f"no Mem: line\n{run}"
    total, used, free = (int(g) for g in match.groups())
    assert total == LIMIT, f"free's total is not the limit ({LIMIT})\n{run}"
    assert 0 < used < LIMIT and free <= LIMIT, run


def test_nproc_counts_the_one_cpu_of_the_cpuset(sandbox, shared_mount, pinned):
    run = _tool(sandbox, pinned, shared_mount, ["nproc"])
    assert run.out.strip() == "1", run


def test_nproc_all_counts_the_cpus_of_the_view(sandbox, shared_mount, pinned):
    # --all: _SC_NPROCESSORS_CONF (cpu/possible, bind-mounted) and affinity.
    run = _tool(sandbox, pinned, shared_mount, ["nproc", "--all"])
    assert run.out.strip() == "1", run


@pytest.mark.parametrize("name", ["_NPROCESSORS_ONLN", "_NPROCESSORS_CONF"])
def test_getconf_counts_the_cpus_of_the_view(sandbox, shared_mount, pinned, name):
    run = _tool(sandbox, pinned, shared_mount, ["getconf", name])
    assert run.out.strip() == "1", run


def test_cat_cpuinfo_shows_one_processor_the_pinned_one(sandbox, shared_mount, pinned):
    run = _tool(sandbox, pinned, shared_mount, ["cat", "/proc/cpuinfo"])
    assert cpuinfo_processors(run.out) == [0], run
    # The one block is the host's block of the pinned CPU, renumbered: its
    # identifying fields (apicid, core id... whatever differs between the
    # host's CPUs) are that CPU's.
    host_blocks = cpuinfo_blocks(open("/proc/cpuinfo").read())
    pinned_cpu = host_cpus()[-1]
    distinct = identifying_fields(host_blocks)
    (block,) = cpuinfo_blocks(run.out).values()
    for key in distinct:
        assert block.get(key) == host_blocks[pinned_cpu].get(key), f"{key}: not host CPU {pinned_cpu}'s\n{run}"


def test_uptime_tool_shows_the_containers_age_and_load(sandbox, shared_mount, pinned):
    before = time.clock_gettime(time.CLOCK_BOOTTIME)
    run = _tool(sandbox, pinned, shared_mount, ["uptime"])
    elapsed = time.clock_gettime(time.CLOCK_BOOTTIME) - before
    match = re.search(r"\bup\s+(\d+) min,", run.out)
    assert match, f"uptime does not say 'up N min' (the host has been up longer than an hour?)\n{run}"
    # procps prints whole minutes of /proc/uptime, which is the container's age.
    assert int(match.group(1)) <= elapsed // 60, f"more minutes than the container has lived ({elapsed:.0f} s)\n{run}"
    host_up = float(open("/proc/uptime").read().split()[0])
    assert host_up > elapsed, "host booted during the test?"
    # A container read for the first time: its load averages start at 0.
    assert re.search(r"load average: 0\.00, 0\.00, 0\.00$", run.out.strip()), run


def test_top_header_shows_the_limit_and_one_cpu(sandbox, shared_mount, pinned):
    run = _tool(sandbox, pinned, shared_mount, ["top", "-bn1"])
    match = re.search(r"MiB Mem\s*:\s*([\d.]+) total", run.out)
    assert match, f"no 'MiB Mem : N total' in top's header\n{run}"
    assert float(match.group(1)) == LIMIT / MiB, run
    assert re.search(r"load average: 0\.00, 0\.00, 0\.00", run.out), run

    run = _tool(sandbox, pinned, shared_mount, ["top", "-bn1", "-1"])
    rows = re.findall(r"^%Cpu(\S*)\s*:", run.out, re.M)
    assert rows == ["0"], f"top -1 should show exactly one per-CPU row, %Cpu0\n{run}"


def test_python_os_cpu_count_and_psutil_memory(sandbox, shared_mount, pinned):
    run = _tool(sandbox, pinned, shared_mount,
                [PYTHON, "-c", "import os, psutil; print(os.cpu_count(), psutil.virtual_memory().total)"])
    assert run.out.split() == ["1", str(LIMIT)], run


def test_lscpu_counts_one_cpu(sandbox, shared_mount, pinned):
    run = _tool(sandbox, pinned, shared_mount, ["lscpu"])
    fields = dict(re.findall(r"^([^:\n]+):\s*(.*)$", run.out, re.M))
    assert fields.get("CPU(s)") == "1", run
    assert fields.get("On-line CPU(s) list") == "0", run
    assert "Off-line CPU(s) list" not in fields, run


def test_quota_only_container_file_tools_say_one_and_nproc_asks_the_kernel(sandbox, shared_mount):
    """cpus=1 by CFS quota alone, no cpuset, on a host of several CPUs: the
    files say 1 CPU. ``nproc`` calls sched_getaffinity, which no file can
    answer: it still counts the host's CPUs (the known syscall gap, closed
    later by the runtime's cpuset sizing or seccomp). The exact value is
    asserted so that this test notices when that changes."""
    cpus = host_cpus()
    assert len(cpus) >= 2, f"precondition: the host needs 2+ CPUs for a quota of 1 to limit anything (has {cpus})"
    cg = sandbox.cgroup("quota", memory=LIMIT, cpus=1)
    script = r"""
        echo "== cpuinfo"; grep -c '^processor' /proc/cpuinfo
        echo "== online"; cat /sys/devices/system/cpu/online
        echo "== stat"; grep -c '^cpu[0-9]' /proc/stat
        echo "== getconf"; getconf _NPROCESSORS_ONLN
        echo "== python"; %s -c 'import os; print(os.cpu_count())'
        echo "== cpudirs"; ls /sys/devices/system/cpu | grep -c '^cpu[0-9]'
        echo "== nproc"; nproc
    """ % " ".join(STDLIB_PYTHON)
    run = _tool(sandbox, cg, shared_mount, ["sh", "-c", script])
    sections = dict(re.findall(r"^== (\w+)\n(.*?)\n", run.out, re.M))
    for name in ("cpuinfo", "online", "stat", "getconf", "python", "cpudirs"):
        expected = "0" if name == "online" else "1"
        assert sections.get(name) == expected, f"{name}: expected {expected}\n{run}"
    assert sections.get("nproc") == str(len(cpus)), (
        f"nproc (sched_getaffinity) was expected to still see the host's {len(cpus)} CPUs "
        f"in a quota-only container; if this changed, update the test and the docs\n{run}")



def test_busybox_cat_reads_whole_files_through_sendfile(sandbox, shared_mount, pinned):
    """busybox cat copies with sendfile(), which goes through the page cache
    and stops at the inode's size (0, as in /proc): every open announces the
    snapshot's length so such readers get the whole file too."""
    host_lines = len(open("/proc/meminfo").read().splitlines())
    run = _tool(sandbox, pinned, shared_mount, ["busybox", "cat", "/proc/meminfo"])
    assert len(run.out.splitlines()) == host_lines and meminfo_kib(run.out) == LIMIT // 1024, run
    run = _tool(sandbox, pinned, shared_mount, ["busybox", "cat", "/proc/cpuinfo"])
    assert cpuinfo_processors(run.out) == [0] and run.out.endswith("\n\n"), run
    run = _tool(sandbox, pinned, shared_mount, ["busybox", "cat", "/sys/devices/system/cpu/online"])
    assert run.out == "0\n", run
