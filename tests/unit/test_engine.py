"""The engine over the fixture machines (tests/fixtures/README.md draws
them): who sees what, for every file, on v1, hybrid and v2."""

from __future__ import annotations

import os
import re

import pytest

from procview.engine import ViewEngine
from procview.host import parse_meminfo, parse_uptime

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures")
LAYOUTS = ["v1", "hybrid", "v2"]

HOST_UPTIME = 97320.45
HOST_BTIME = 1732510000


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def boottime(self):
        return HOST_UPTIME

    def realtime(self):
        return HOST_BTIME + HOST_UPTIME

    def monotonic(self):
        return self.now


@pytest.fixture(params=LAYOUTS)
def layout(request):
    return request.param


@pytest.fixture
def engine(layout):
    return ViewEngine(root=os.path.join(FIXTURES, layout), clock=FakeClock())


def text(engine, path, pid):
    return engine.render(path, pid).decode()


def host_file(layout, path):
    with open(os.path.join(FIXTURES, layout, path)) as f:
        return f.read()


# -- who is asking ------------------------------------------------------------


@pytest.mark.parametrize("pid", [200, 201, 210])
def test_every_process_of_a_container_sees_its_limit(engine, pid):
    """200 is ctr's pid-namespace init; 201 its child; 210 sits in ctr/sub
    (400 MiB) but is judged by its init's cgroup, ctr (500 MiB)."""
    assert parse_meminfo(text(engine, "proc/meminfo", pid))["MemTotal"] == 500 * 1024


def test_init_scope_is_stripped_and_an_unlimited_container_sees_the_host(engine, layout):
    # 301's init (300) is in /sysctr/init.scope; /sysctr has no limits.
    for path in ("proc/meminfo", "proc/cpuinfo", "proc/uptime", "proc/stat"):
        assert text(engine, path, 301) == host_file(layout, path)
    assert engine.identity.container_of(301).cgroup.path == "/sysctr"


def test_host_process_is_judged_by_its_own_cgroup(engine, layout):
    # 100 (cron) has no limit: the host's file. 50 (the daemon's service) has 256 MiB.
    assert text(engine, "proc/meminfo", 100) == host_file(layout, "proc/meminfo")
    assert parse_meminfo(text(engine, "proc/meminfo", 50))["MemTotal"] == 256 * 1024


def test_a_vanished_caller_gets_the_host_file(engine, layout):
    for path in engine.FILES:
        assert text(engine, path, 4242) == host_file(layout, path)


def test_unknown_path_is_refused(engine):
    with pytest.raises(KeyError):
        engine.render("proc/kcore", 200)
    assert not engine.is_virtual("proc/kcore")
    assert engine.is_virtual("sys/devices/system/node/node0/meminfo")


# -- the files --------------------------------------------------------------------


def test_cpu_files_share_one_view(engine):
    # quota 1.5 CPUs over cpuset 0-3 (v1) or 0-2 (v2): 2 CPUs, renumbered.
    assert re.findall(r"^processor\s*:\s*(\d+)", text(engine, "proc/cpuinfo", 200), re.M) == ["0", "1"]
    assert re.findall(r"^cpu(\d+) ", text(engine, "proc/stat", 200), re.M) == ["0", "1"]
    for name in ("online", "possible", "present"):
        assert text(engine, f"sys/devices/system/cpu/{name}", 200) == "0-1\n"
    view = engine.cpu_view(200)
    assert view.cpus == (0, 1) and view.capacity == 1.5
    assert engine.cpu_view(4242).cpus == (0, 1, 2, 3)


def test_time_follows_the_callers_time_namespace(engine):
    """ctr's processes are in a time namespace with a boottime offset of
    -86400 s: uptime and btime shift by it, as the kernel shifts the start
    times those processes see."""
    uptime = parse_uptime(text(engine, "proc/uptime", 201))
    assert uptime.uptime == pytest.approx(HOST_UPTIME - 86400, abs=0.01)
    # idle = age x capacity - busy: age = 97320.45 - 86400.12 (init start), 1.5 CPUs, 3 s used.
    assert uptime.idle == pytest.approx((HOST_UPTIME - 86400.12) * 1.5 - 3.0, abs=0.01)
    btime = int(re.search(r"^btime (\d+)$", text(engine, "proc/stat", 201), re.M).group(1))
    assert btime == HOST_BTIME + 86400


def test_stat_counts_the_containers_cpu_time_and_tasks(engine):
    stat = text(engine, "proc/stat", 200)
    cpu_lines = {l.split()[0]: [int(v) for v in l.split()[1:]] for l in stat.splitlines() if l.startswith("cpu")}
    # 2.405 s user + 0.595 s system = 240 + 59 ticks (rounded down per CPU on v1).
    assert 238 <= cpu_lines["cpu"][0] <= 240 and 57 <= cpu_lines["cpu"][2] <= 59
    assert cpu_lines["cpu"] == [sum(c) for c in zip(cpu_lines["cpu0"], cpu_lines["cpu1"])]
    assert re.search(r"^procs_running 2$", stat, re.M)  # 201 is R, and the reader (200) runs
    assert re.search(r"^processes 5$", stat, re.M)  # highest pid in ctr's namespace
    assert re.search(r"^intr 0( 0)*$", stat, re.M)


def test_loadavg_names_the_containers_own_pids(engine):
    line = text(engine, "proc/loadavg", 201)
    # threads with a /proc entry: 200, 201, 210 (202 and 211 have none in the
    # fixture: counted as exited); 201 runs; the highest ns pid is 5.
    assert re.fullmatch(r"\d+\.\d\d \d+\.\d\d \d+\.\d\d 1/3 5\n", line), line


def test_diskstats_shows_only_the_containers_devices(engine):
    lines = text(engine, "proc/diskstats", 200).splitlines()
    assert [l.split()[2] for l in lines] == ["vda", "vdb"]
    vda = lines[0].split()
    assert vda[3] == "1200" and vda[5] == str(49152000 // 512)


def test_swaps_and_node_meminfo_agree_with_meminfo(engine):
    meminfo = parse_meminfo(text(engine, "proc/meminfo", 200))
    assert meminfo["SwapTotal"] == 256 * 1024
    swaps = text(engine, "proc/swaps", 200).splitlines()
    assert swaps[1].split()[:3] == ["none", "virtual", str(256 * 1024)]
    node = text(engine, "sys/devices/system/node/node0/meminfo", 200)
    assert re.search(r"^Node 0 MemTotal:\s+512000 kB$", node, re.M)


# -- state ---------------------------------------------------------------------


def test_stat_never_goes_backwards_and_state_is_forgotten(engine):
    first = text(engine, "proc/stat", 200)
    assert text(engine, "proc/stat", 200) == first
    key = engine.identity.container_of(200).key
    assert engine._last_seen(key) is not None
    engine.clock.now += ViewEngine.FORGET_AFTER + 1
    engine.maintain()
    assert key not in engine._tracked


def test_a_failing_renderer_serves_the_host_file(engine, layout, monkeypatch, caplog):
    def boom(*args):
        raise RuntimeError("renderer bug")

    monkeypatch.setattr(ViewEngine, "_meminfo", boom)
    assert text(engine, "proc/meminfo", 200) == host_file(layout, "proc/meminfo")
    assert text(engine, "proc/meminfo", 200) == host_file(layout, "proc/meminfo")
    assert sum("rendering proc/meminfo" in r.getMessage() for r in caplog.records if r.levelname == "WARNING") == 1


def test_commit_limit_follows_the_hosts_overcommit_ratio(engine, monkeypatch):
    # CommitLimit = MemTotal x vm.overcommit_ratio / 100 + SwapTotal (no huge pages here).
    monkeypatch.setattr(engine, "overcommit_ratio", lambda: 80)
    meminfo = parse_meminfo(text(engine, "proc/meminfo", 200))
    assert meminfo["CommitLimit"] == 512000 * 80 // 100 + 256 * 1024


# -- the syscalls: the same numbers as the files -----------------------------------


def test_sysinfo_tells_what_the_files_show(engine):
    from procview.views.sysinfo import SI_LOAD_SHIFT

    meminfo = parse_meminfo(text(engine, "proc/meminfo", 201))
    values = engine.sysinfo(201)
    assert values.totalram == meminfo["MemTotal"] * 1024 == 500 * 1024 * 1024
    assert values.freeram == meminfo["MemFree"] * 1024
    assert values.sharedram == meminfo["Shmem"] * 1024
    assert values.totalswap == meminfo["SwapTotal"] * 1024 and values.freeswap == meminfo["SwapFree"] * 1024
    # Rounded up, as the kernel rounds a partial second; the caller's time namespace applies.
    uptime = parse_uptime(text(engine, "proc/uptime", 201)).uptime
    assert values.uptime == int(uptime) + 1
    # ctr and ctr/sub hold 5 thread ids (202 and 211 included: the kernel counts threads).
    assert values.procs == 5
    load = text(engine, "proc/loadavg", 201).split()[:3]
    assert [round(v / (1 << SI_LOAD_SHIFT), 2) for v in values.loads] == [float(x) for x in load]


def test_sysinfo_and_affinity_leave_unlimited_callers_to_the_kernel(engine):
    for pid in (301, 100, 4242):  # an unlimited container, a host process, a vanished one
        assert engine.sysinfo(pid) is None
        assert engine.affinity_count(pid) is None
    assert engine.affinity_count(200) == 2  # 1.5 CPUs over 0-3 (v1) or 0-2 (v2)


def test_sysinfo_load_follows_the_kernels_average_without_a_census_per_call(engine, monkeypatch):
    """A census reads every thread's stat: sysinfo takes one only when a
    5-second load sample is due (busy callers make thousands of calls)."""
    import procview.engine

    engine.sysinfo(200)  # starts tracking
    reads = []
    real = procview.engine.parse_proc_pid_stat
    monkeypatch.setattr(procview.engine, "parse_proc_pid_stat", lambda text: reads.append(1) or real(text))
    engine.sysinfo(200)
    assert reads == []
    engine.clock.now += 5.0
    engine.sysinfo(200)
    assert reads


def test_sysinfo_reads_ram_usage_on_every_call_and_the_rest_once_per_ttl(tmp_path):
    """busybox free mixes sysinfo's free with meminfo's cache: free must be
    fresh. Limits, shmem and thread counts may be SYSINFO_TTL old."""
    import shutil

    root = tmp_path / "v1"
    shutil.copytree(os.path.join(FIXTURES, "v1"), root, symlinks=True)
    engine = ViewEngine(root=str(root), clock=FakeClock())
    first = engine.sysinfo(201)
    memory_dir = root / "cg" / "memory" / "parent" / "ctr"
    (memory_dir / "memory.usage_in_bytes").write_text(str(400 * 1024 * 1024) + "\n")
    (root / "sys/fs/cgroup/pids/parent/ctr/pids.current").write_text("9\n")
    second = engine.sysinfo(201)
    assert second.freeram == 100 * 1024 * 1024 != first.freeram  # 500 MiB limit - 400 MiB used
    assert second.procs == first.procs == 5  # within the TTL
    engine.clock.now += ViewEngine.SYSINFO_TTL
    assert engine.sysinfo(201).procs == 9


def test_sysinfo_keeps_the_ram_usage_file_open_and_reopens_a_new_one(tmp_path):
    """The usage file is kept open (CounterFile) and re-read at offset 0; it
    is opened again after LIMITS_TTL, so a cgroup made anew is seen."""
    import shutil

    root = tmp_path / "v1"
    shutil.copytree(os.path.join(FIXTURES, "v1"), root, symlinks=True)
    engine = ViewEngine(root=str(root), clock=FakeClock())
    usage = root / "cg" / "memory" / "parent" / "ctr" / "memory.usage_in_bytes"
    engine.sysinfo(201)
    assert len(engine._ram_counters) == 1
    usage.write_text(str(300 * 1024 * 1024) + "\n")  # in place, as the kernel's file changes
    assert engine.sysinfo(201).freeram == 200 * 1024 * 1024
    usage.unlink()  # the cgroup is made anew: a new file at the same path
    usage.write_text(str(450 * 1024 * 1024) + "\n")
    engine.clock.now += ViewEngine.LIMITS_TTL  # (the kernel's old file fails at once: ENODEV)
    assert engine.sysinfo(201).freeram == 50 * 1024 * 1024


def test_cpuinfo_is_rendered_again_when_the_host_text_or_the_view_changes(tmp_path):
    """Rendered cpuinfo is remembered by its exact inputs (the host's text,
    read on every open, and the CPU view): a changed clock speed shows at
    the next open, and each container gets its own CPUs."""
    import shutil

    root = tmp_path / "v2"
    shutil.copytree(os.path.join(FIXTURES, "v2"), root, symlinks=True)
    engine = ViewEngine(root=str(root), clock=FakeClock())
    cpuinfo = root / "proc" / "cpuinfo"
    first = text(engine, "proc/cpuinfo", 200)
    assert text(engine, "proc/cpuinfo", 200) == first
    assert "cpu MHz\t\t: 2445.406" in first
    cpuinfo.write_text(cpuinfo.read_text().replace("2445.406", "3100.000", 1))
    second = text(engine, "proc/cpuinfo", 200)
    assert "cpu MHz\t\t: 3100.000" in second and second != first
    processors = re.compile(r"^processor\s*:\s*(\d+)", re.M)
    assert processors.findall(second) == ["0", "1"]  # ctr: 2 CPUs
    # docker update --cpus 3: the new view shows once the limits are read again.
    (root / "sys/fs/cgroup/parent/ctr/cpu.max").write_text("300000 100000\n")
    engine.clock.now += ViewEngine.LIMITS_TTL
    third = text(engine, "proc/cpuinfo", 200)
    assert processors.findall(third) == ["0", "1", "2"]  # cpuset 0-2
    assert "cpu MHz\t\t: 3100.000" in third
