"""The view engine against this machine's real cgroups (v1/hybrid here,
pure v2 in the cgroup2 VM): create a child cgroup with limits, put a
process in it, render, compare with the limits."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from procview.engine import ViewEngine
from procview.host import parse_meminfo, parse_uptime

from .conftest import wait_until

MiB = 1024 * 1024


def _meminfo(engine, pid):
    return parse_meminfo(engine.render("proc/meminfo", pid).decode())


def _state(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0]


def _children(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def test_container_sees_its_memory_limit_and_host_sees_host(sandbox):
    cg = sandbox.cgroup("mem", memory=256 * MiB)
    ctr = sandbox.start(cg, ["sleep", "600"], pidns=True)
    engine = ViewEngine()
    assert _meminfo(engine, ctr.pid)["MemTotal"] == 256 * 1024
    host_total = parse_meminfo(open("/proc/meminfo").read())["MemTotal"]
    assert _meminfo(engine, os.getpid())["MemTotal"] == host_total
    # The host's file is unchanged.
    assert parse_meminfo(open("/proc/meminfo").read())["MemTotal"] == host_total


def test_limit_on_parent_applies_to_child_cgroup(sandbox):
    parent = sandbox.cgroup("parent", memory=192 * MiB)
    child = sandbox.cgroup("parent/ctr", memory=512 * MiB)
    ctr = sandbox.start(child, ["sleep", "600"], pidns=True)
    assert _meminfo(ViewEngine(), ctr.pid)["MemTotal"] == 192 * 1024
    del parent


def test_caller_is_judged_by_its_pid_namespace_init(sandbox):
    """A process moved into a sub-cgroup of the container still sees the
    container's limits: those of its pid-namespace init, whose cgroup is
    ``ctr/init.scope`` (systemd style; cgroup v2 keeps processes in leaves)
    with ``/init.scope`` stripped."""
    sandbox.cgroup("ctr", memory=256 * MiB)
    init_scope = sandbox.cgroup("ctr/init.scope")
    inner = sandbox.cgroup("ctr/sub", memory=128 * MiB)
    ctr = sandbox.start(init_scope, ["sh", "-c", "sleep 600 & wait"], pidns=True)
    worker = wait_until(lambda: _children(ctr.pid))[0]
    inner.add_process(worker)
    engine = ViewEngine()
    assert _meminfo(engine, worker)["MemTotal"] == 256 * 1024
    assert _meminfo(engine, ctr.pid)["MemTotal"] == 256 * 1024


def test_cpu_view_from_quota_and_cpuset(sandbox):
    last_cpu = max(int(c) for c in re.findall(r"^processor\s*:\s*(\d+)", open("/proc/cpuinfo").read(), re.M))
    cg = sandbox.cgroup("cpu", cpus=0.5, cpuset={last_cpu})
    ctr = sandbox.start(cg, ["sleep", "600"], pidns=True)
    engine = ViewEngine()
    cpuinfo = engine.render("proc/cpuinfo", ctr.pid).decode()
    assert re.findall(r"^processor\s*:\s*(\d+)", cpuinfo, re.M) == ["0"]
    stat = engine.render("proc/stat", ctr.pid).decode()
    assert re.findall(r"^cpu(\d+) ", stat, re.M) == ["0"]
    for name in ("online", "possible", "present"):
        assert engine.render(f"sys/devices/system/cpu/{name}", ctr.pid) == b"0\n"
    assert engine.cpu_view(ctr.pid).cpus == (last_cpu,)


def test_quota_alone_limits_the_cpu_count(sandbox):
    cg = sandbox.cgroup("quota", cpus=1)
    ctr = sandbox.start(cg, ["sleep", "600"], pidns=True)
    stat = ViewEngine().render("proc/stat", ctr.pid).decode()
    assert re.findall(r"^cpu(\d+) ", stat, re.M) == ["0"]


def test_uptime_is_the_age_of_the_container(sandbox):
    before = time.clock_gettime(time.CLOCK_BOOTTIME)
    cg = sandbox.cgroup("up", memory=256 * MiB)
    ctr = sandbox.start(cg, ["sleep", "600"], pidns=True)
    engine = ViewEngine()
    uptime = parse_uptime(engine.render("proc/uptime", ctr.pid).decode())
    after = time.clock_gettime(time.CLOCK_BOOTTIME)
    # Start times have clock-tick (10 ms) resolution; the rendered value has 2 decimals.
    assert 0 <= uptime.uptime <= after - before + 0.02
    host_uptime = parse_uptime(open("/proc/uptime").read()).uptime
    assert uptime.uptime < host_uptime
    btime = int(re.search(r"^btime (\d+)$", engine.render("proc/stat", ctr.pid).decode(), re.M).group(1))
    host_btime = int(re.search(r"^btime (\d+)$", open("/proc/stat").read(), re.M).group(1))
    assert btime > host_btime


def test_loadavg_counts_the_container_and_names_its_own_pids(sandbox):
    cg = sandbox.cgroup("load", memory=256 * MiB)
    ctr = sandbox.start(cg, ["sh", "-c", "sleep 600 & sleep 600 & wait"], pidns=True)
    # Wait until both sleeps (and sh, in wait) are asleep, not still starting.
    wait_until(lambda: len(_children(ctr.pid)) == 2 and all(_state(p) == "S" for p in [ctr.pid, *_children(ctr.pid)]))
    text = ViewEngine().render("proc/loadavg", ctr.pid).decode()
    match = re.fullmatch(r"(\d+\.\d\d) (\d+\.\d\d) (\d+\.\d\d) (\d+)/(\d+) (\d+)\n", text)
    assert match, text
    running, threads, last_pid = int(match.group(4)), int(match.group(5)), int(match.group(6))
    # sh, two sleeps, and the `unshare` that forked the namespace's init
    # (it joined the cgroup first). The reader (rendered as sh) counts as
    # running, as the kernel counts a process reading /proc/loadavg.
    assert threads == 4 and running == 1
    # pids inside the new namespace are 1, 2, 3: never a host pid.
    assert last_pid == 3


def test_loadavg_counts_the_threads_of_child_cgroups_too(sandbox):
    # A container that makes cgroups of its own (systemd inside, a nested
    # runtime) still has those threads: the census walks below its cgroup.
    # Processes live in leaves only (cgroup v2's rule): the init in
    # init.scope, which the view strips, as systemd inside a container does.
    sandbox.cgroup("nested", memory=256 * MiB)
    init_scope = sandbox.cgroup("nested/init.scope")
    other = sandbox.cgroup("nested/other")
    sandbox.cgroup("nested/payload")
    worker = sandbox.cgroup("nested/payload/worker")
    ctr = sandbox.start(init_scope, ["sh", "-c", "sleep 600 & sleep 600 & wait"], pidns=True)
    wait_until(lambda: len(_children(ctr.pid)) == 2 and all(_state(p) == "S" for p in [ctr.pid, *_children(ctr.pid)]))
    first, second = _children(ctr.pid)
    other.add_process(first)
    worker.add_process(second)
    text = ViewEngine().render("proc/loadavg", ctr.pid).decode()
    # unshare and sh in init.scope, a sleep one level down, one two levels down.
    assert text.split()[3].split("/")[1] == "4", text


def test_stat_counters_never_decrease_under_a_busy_loop(sandbox):
    cg = sandbox.cgroup("busy", cpus=0.5)
    ctr = sandbox.start(cg, ["sh", "-c", "while :; do :; done"], pidns=True)
    engine = ViewEngine()
    previous = None
    for _ in range(20):
        lines = [l.split()[1:] for l in engine.render("proc/stat", ctr.pid).decode().splitlines() if l.startswith("cpu")]
        values = [[int(v) for v in line] for line in lines]
        if previous is not None:
            for old, new in zip(previous, values):
                assert all(n >= o for o, n in zip(old, new)), (old, new)
        previous = values
        time.sleep(0.05)
    user, system = previous[0][0], previous[0][2]
    assert user + system > 0  # the loop's CPU time is the container's


def test_vanished_cgroup_falls_back_to_the_host(sandbox):
    cg = sandbox.cgroup("gone", memory=256 * MiB)
    ctr = sandbox.start(cg, ["sleep", "600"], pidns=True)
    engine = ViewEngine()
    assert _meminfo(engine, ctr.pid)["MemTotal"] == 256 * 1024
    ctr.popen.kill()
    ctr.popen.wait()
    # The init dies with unshare (--kill-child) and is reaped by whoever
    # inherits it, which a busy machine may take a while to get to: a
    # zombie has left its container as much as a reaped process has.
    wait_until(lambda: _gone_or_zombie(ctr.pid), timeout=120)
    for path in engine.FILES:
        assert isinstance(engine.render(path, ctr.pid), bytes)


def _gone_or_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_show_command_prints_the_view(sandbox):
    cg = sandbox.cgroup("show", memory=256 * MiB)
    ctr = sandbox.start(cg, ["sleep", "600"], pidns=True)
    out = subprocess.run(
        [sys.executable, "-m", "procview", "show", "/proc/meminfo", "--pid", str(ctr.pid)],
        check=True, capture_output=True, text=True,
    ).stdout
    assert parse_meminfo(out)["MemTotal"] == 256 * 1024


# The container's init: starts a sleeping thread for each line on its stdin.
_THREAD_ON_EACH_LINE = """
import sys, threading, time
for _line in sys.stdin:
    threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
"""


def test_loadavg_counts_a_thread_started_in_the_container(sandbox):
    """A thread started in the container shows at the first read one clock
    tick (CENSUS_TTL) after the last census, though reads come more often
    than once a second (v1 keeps a ``tasks`` file's pid list for an open
    file until it has not been read for a second)."""
    cg = sandbox.cgroup("tick", memory=256 * MiB)
    ctr = sandbox.start(cg, [sys.executable, "-c", _THREAD_ON_EACH_LINE], pidns=True, stdin=subprocess.PIPE)
    engine = ViewEngine()

    def counts():
        fields = engine.render("proc/loadavg", ctr.pid).decode().split()
        return int(fields[3].split("/")[1]), int(fields[4])

    # The python init, and the `unshare` that forked it (in the cgroup first).
    assert counts() == (2, 1)
    for started in (1, 2):
        ctr.popen.stdin.write(b"\n")
        ctr.popen.stdin.flush()
        wait_until(lambda: len(os.listdir(f"/proc/{ctr.pid}/task")) == 1 + started)
        time.sleep(engine.CENSUS_TTL)  # at least one tick since the last census
        # Each thread takes the namespace's next pid: 2, then 3.
        assert counts() == (2 + started, 1 + started)


@pytest.fixture
def loop_disk(tmp_path):
    """(major, minor, name, path) of a loop device this test made on a
    file: a disk of its own, so no host disk is written to or given a
    rule, and the throttle state the kernel keeps per disk goes with it."""
    backing = tmp_path / "disk.img"
    with open(backing, "wb") as f:
        f.truncate(8 * MiB)
    device = subprocess.run(["losetup", "--find", "--show", str(backing)], capture_output=True, text=True, check=True).stdout.strip()
    try:
        rdev = os.stat(device).st_rdev
        yield os.major(rdev), os.minor(rdev), os.path.basename(device), device
    finally:
        subprocess.run(["losetup", "--detach", device], check=True)


def test_diskstats_shows_the_containers_direct_io_on_its_disk(sandbox, loop_disk):
    """16 reads and 16 writes of 64 KiB that bypass the page cache show on
    the line of the disk they went to. On v1
    the counters are the blkio files the hierarchy's top cgroup has
    (``HierarchyFiles``): the kernel's, not the fixtures'."""
    major, minor, name, device = loop_disk
    cg = sandbox.cgroup("io", memory=256 * MiB)
    hierarchies = sandbox.hierarchies
    if hierarchies.layout.value != "v2":
        # Linux 6.x counts v1's blkio.throttle.* only on a disk that has a
        # throttle rule somewhere; this one never throttles (1 PiB/s), and
        # the disk is the test's own.
        from procview.cgroups._base import cgroup_dir, write_text

        mount = hierarchies.v1["blkio"]
        directory = cgroup_dir(mount.mountpoint, mount.root, f"{sandbox.base}/io")
        write_text(os.path.join(directory, "blkio.throttle.read_bps_device"), f"{major}:{minor} {1 << 50}")
    script = (
        f"dd if=/dev/zero of={device} bs=64k count=16 oflag=direct status=none && "
        f"dd if={device} of=/dev/null bs=64k count=16 iflag=direct status=none && echo done && exec sleep 600"
    )
    ctr = sandbox.start(cg, ["sh", "-c", script], pidns=True, stdout=subprocess.PIPE)
    assert ctr.popen.stdout.readline() == b"done\n"
    text = ViewEngine().render("proc/diskstats", ctr.pid).decode()
    # Other lines may show: the container's first run of dd can read it
    # from the host's disk (a page-cache miss charged to the container).
    lines = [line.split() for line in text.splitlines()]
    assert [(int(f[0]), int(f[1]), f[2]) for f in lines].count((major, minor, name)) == 1, text
    # Yet none is the host's line: the host has read far more from any
    # disk it has (it booted from one) than this container has.
    with open("/proc/diskstats") as f:
        host = {line.split()[2]: int(line.split()[5]) for line in f}
    for other in (f for f in lines if f[2] != name):
        assert int(other[5]) < host[other[2]], f"the host's line, not the container's:\n{text}"
    fields = next(f for f in lines if f[2] == name)
    reads, read_sectors, writes, write_sectors = int(fields[3]), int(fields[5]), int(fields[7]), int(fields[9])
    assert reads >= 1 and read_sectors >= 16 * 128, text  # 128 sectors of 512 bytes in 64 KiB
    assert writes >= 1 and write_sectors >= 16 * 128, text


class _MaintenanceClock:
    """The real clocks, but for ``monotonic``, which the test moves: the
    engine's limits, watches and maintenance all go by it."""

    def __init__(self, now: float):
        self.now = now

    def monotonic(self) -> float:
        return self.now

    @staticmethod
    def boottime() -> float:
        return time.clock_gettime(time.CLOCK_BOOTTIME)

    @staticmethod
    def realtime() -> float:
        return time.time()


def test_the_maintenance_keeps_the_watches_of_kept_limits_and_stops_the_rest(sandbox):
    """A kept limit's directories stay watched across a maintenance pass
    (a write shows at the next read, before its second is up); once no
    read has renewed them for LIMITS_TTL, the pass stops the watches, and
    the next read reads the limits again and watches anew."""
    cg = sandbox.cgroup("watched", memory=256 * MiB)
    ctr = sandbox.start(cg, ["sleep", "600"], pidns=True)
    clock = _MaintenanceClock(1000.0)
    engine = ViewEngine(clock=clock)
    watches = engine._limit_writes
    assert watches is not None
    assert _meminfo(engine, ctr.pid)["MemTotal"] == 256 * 1024
    watched = len(watches)
    assert watched >= 1
    clock.now += 0.5
    engine.maintain()
    assert len(watches) == watched  # the kept limits' watches stay
    cg.set_memory_limit(200 * MiB)
    clock.now += 0.1
    assert _meminfo(engine, ctr.pid)["MemTotal"] == 200 * 1024  # seen by the watch, not the TTL
    clock.now += 10
    engine.maintain()
    assert len(watches) == 0  # no read renewed them
    clock.now += 0.1
    assert _meminfo(engine, ctr.pid)["MemTotal"] == 200 * 1024
    assert len(watches) == watched
    cg.set_memory_limit(180 * MiB)
    clock.now += 0.1
    assert _meminfo(engine, ctr.pid)["MemTotal"] == 180 * 1024
