"""The cgroup model against three fake machines: pure v1, hybrid, pure v2.

The trees are tests/fixtures/{v1,hybrid,v2}; tests/fixtures/README.md draws
the scenario (limits at each level and the answers expected here). Reads use
the trees in place; every write happens in a copy under tmp_path.
"""

import errno
import os
import shutil
from pathlib import Path

import pytest

import procview.cgroups._base as cgroups_base
from procview.cgroups import (
    UNLIMITED,
    CgroupError,
    CgroupMount,
    CpuQuota,
    CpuTimes,
    CpuUsage,
    Hierarchies,
    IoStat,
    Layout,
    MemoryLimits,
    MemoryStat,
    MemoryUsage,
    discover,
)
from procview.cgroups._base import HierarchyFiles, cgroup_dir, levels

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
LAYOUTS = ["v1", "hybrid", "v2"]
V1_LIKE = ["v1", "hybrid"]  # hybrid hosts use the v1 backend

MiB = 1 << 20
U1 = 9223372036854771712  # what v1 prints for "no limit" on 4 KiB pages

# Where each v1 controller is mounted in the v1 and hybrid trees (from their
# mountinfo; the v1 tree mounts memory and blkio at unusual places on purpose).
V1_MOUNTPOINTS = {
    "v1": {
        "memory": "cg/memory",
        "cpu": "sys/fs/cgroup/cpu",
        "cpuacct": "sys/fs/cgroup/cpuacct",
        "cpuset": "sys/fs/cgroup/cpuset",
        "pids": "sys/fs/cgroup/pids",
        "blkio": "sys/fs/cgroup/blk io",
        "devices": "sys/fs/cgroup/devices",
        "freezer": "sys/fs/cgroup/freezer",
    },
    "hybrid": {
        "memory": "sys/fs/cgroup/memory",
        "cpu": "sys/fs/cgroup/cpu",
        "cpuacct": "sys/fs/cgroup/cpuacct",
        "cpuset": "sys/fs/cgroup/cpuset",
        "pids": "sys/fs/cgroup/pids",
        "blkio": "sys/fs/cgroup/blkio",
        "devices": "sys/fs/cgroup/devices",
        "freezer": "sys/fs/cgroup/freezer",
    },
}


def hierarchies(layout: str) -> Hierarchies:
    return discover(str(FIXTURES / layout))


@pytest.fixture(params=LAYOUTS)
def layout(request):
    return request.param


@pytest.fixture(params=V1_LIKE)
def v1_layout(request):
    return request.param


# -- helpers for the writable copies ------------------------------------------


def writable_copy(layout: str, tmp_path: Path) -> Path:
    """A private copy of a fixture tree (symlinks kept: ns links dangle)."""
    root = tmp_path / layout
    shutil.copytree(FIXTURES / layout, root, symlinks=True)
    return root


def cgdir(root: Path, layout: str, controller: str, path: str) -> Path:
    """The directory of cgroup ``path`` for ``controller`` in a tree."""
    if layout == "v2":
        base = root / "sys/fs/cgroup"
    else:
        base = root / V1_MOUNTPOINTS[layout][controller]
    return base / path.lstrip("/") if path != "/" else base


def put(path: Path, text: str) -> None:
    """Create or truncate a file. The model writes like cgroupfs expects
    (O_WRONLY, no O_TRUNC, never O_CREAT), so plain files must exist and be
    empty before a write for the result to read back exactly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def remove_files(root: Path, name: str) -> None:
    for path in root.rglob(name):
        path.unlink()


@pytest.fixture
def cgroupfs(monkeypatch):
    """Make os.mkdir (and so os.makedirs) behave like mkdir on a cgroup filesystem.

    On cgroupfs a new directory comes with its interface files (a v1 cpuset
    child with *empty* cpuset.cpus and cpuset.mems; a v2 child whose
    cgroup.controllers lists what its parent enables). Call the returned
    function with the tree's Hierarchies once the tree is ready.
    """

    def install(hier: Hierarchies) -> None:
        mounts = []  # (host mountpoint, version, controllers)
        for mount in hier.mounts:
            mounts.append((hier.host_path(mount.mountpoint), mount.version, mount.controllers))

        def interface_files(directory: str) -> dict[str, str]:
            for mountpoint, version, controllers in mounts:
                if directory.startswith(mountpoint + "/"):
                    break
            else:
                return {}
            if version == 2:
                parent = os.path.join(os.path.dirname(directory), "cgroup.subtree_control")
                with open(parent) as f:
                    enabled = " ".join(c.lstrip("+") for c in f.read().split())
                return {
                    "cgroup.controllers": enabled,
                    "cgroup.subtree_control": "",
                    "cgroup.procs": "",
                    "memory.max": "",
                    "cpu.max": "",
                    "cpuset.cpus": "",
                    "pids.max": "",
                }
            files = {"cgroup.procs": "", "tasks": ""}
            if "cpuset" in controllers:
                files.update({"cpuset.cpus": "", "cpuset.mems": ""})
            if "memory" in controllers:
                files.update({"memory.limit_in_bytes": "", "memory.memsw.limit_in_bytes": ""})
            return files

        real_mkdir = os.mkdir

        def mkdir(path, mode=0o777, *args, **kwargs):
            real_mkdir(path, mode, *args, **kwargs)
            for filename, text in interface_files(os.fspath(path)).items():
                with open(os.path.join(path, filename), "w") as f:
                    f.write(text)

        # os.makedirs calls os.mkdir for each level, so this covers both.
        monkeypatch.setattr(os, "mkdir", mkdir)

    return install


# -- discovery -----------------------------------------------------------------


@pytest.mark.parametrize("name, expected", [("v1", Layout.V1), ("hybrid", Layout.HYBRID), ("v2", Layout.V2)])
def test_discover_layout(name, expected):
    assert hierarchies(name).layout is expected


def test_discover_v1_reads_mountpoints_from_mountinfo():
    hier = hierarchies("v1")
    # memory at an unusual place, and not the container's bind mount of
    # /parent/ctr that appears later in the table.
    assert hier.v1["memory"] == CgroupMount(1, "/cg/memory", "/", frozenset({"memory"}))
    # \040 in mountinfo is a space in the path.
    assert hier.v1["blkio"].mountpoint == "/sys/fs/cgroup/blk io"
    # cpu and cpuacct are separate hierarchies here (as on this machine).
    assert hier.v1["cpu"].mountpoint == "/sys/fs/cgroup/cpu"
    assert hier.v1["cpuacct"].mountpoint == "/sys/fs/cgroup/cpuacct"
    # Mount options ("rw,nosuid,...") and super options that are not
    # controllers (xattr, release_agent=..., clone_children) are dropped.
    assert hier.v1["name=systemd"].controllers == frozenset({"name=systemd"})
    assert hier.v1["cpuset"].controllers == frozenset({"cpuset"})
    assert hier.v1["net_cls"] is hier.v1["net_prio"]
    assert hier.v1["net_cls"].controllers == frozenset({"net_cls", "net_prio"})
    assert hier.v2 is None
    assert sorted(hier.v1) == sorted(
        ["name=systemd", "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids",
         "net_cls", "net_prio", "perf_event", "hugetlb", "rdma"]
    )


def test_discover_hybrid_is_this_machines_layout():
    hier = hierarchies("hybrid")
    assert hier.v2 == CgroupMount(2, "/sys/fs/cgroup/unified", "/", frozenset())
    assert sorted(hier.v1) == sorted(
        ["cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "name=systemd"]
    )
    assert {c: m.mountpoint for c, m in hier.v1.items()} == {
        c: "/sys/fs/cgroup/" + ("systemd" if c == "name=systemd" else c) for c in hier.v1
    }


def test_discover_v2_ignores_a_containers_bind_mount():
    hier = hierarchies("v2")
    assert hier.v1 == {}
    assert hier.v2 == CgroupMount(2, "/sys/fs/cgroup", "/", frozenset())


def test_layout_v2_when_only_a_named_v1_hierarchy_remains():
    # Docker on a cgroup2 host may mount name=systemd v1 for old images: no
    # resource controller lives there, so the host is still pure v2.
    hier = Hierarchies(
        [
            CgroupMount(2, "/sys/fs/cgroup", "/", frozenset()),
            CgroupMount(1, "/sys/fs/cgroup/systemd", "/", frozenset({"name=systemd"})),
        ]
    )
    assert hier.layout is Layout.V2


def test_discover_without_mountinfo_raises(tmp_path):
    with pytest.raises(CgroupError) as caught:
        discover(str(tmp_path))
    assert caught.value.path == os.path.join(str(tmp_path), "proc/self/mountinfo")


def test_discover_without_cgroup_mounts_raises(tmp_path):
    put(tmp_path / "proc/self/mountinfo", "22 27 0:21 / /proc rw,relatime - proc proc rw\n")
    with pytest.raises(CgroupError, match="no cgroup hierarchy"):
        discover(str(tmp_path))


def comounted_v1_tree(tmp_path: Path) -> Path:
    """The v1 tree with cpu and cpuacct mounted together, as most distributions do."""
    root = writable_copy("v1", tmp_path)
    fs = root / "sys/fs/cgroup"
    shutil.copytree(fs / "cpu", fs / "cpu,cpuacct", symlinks=True)
    shutil.copytree(fs / "cpuacct", fs / "cpu,cpuacct", symlinks=True, dirs_exist_ok=True)
    shutil.rmtree(fs / "cpu")
    shutil.rmtree(fs / "cpuacct")
    mountinfo = root / "proc/50/mountinfo"
    lines = []
    for line in mountinfo.read_text().splitlines():
        if " /sys/fs/cgroup/cpuacct " in line:
            continue
        if " /sys/fs/cgroup/cpu " in line:
            line = "31 28 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,cpu,cpuacct"
        lines.append(line)
    mountinfo.write_text("\n".join(lines) + "\n")
    proc_cgroup = root / "proc/200/cgroup"
    text = proc_cgroup.read_text().replace("3:cpuacct:/parent/ctr\n2:cpu:/parent/ctr\n", "2:cpu,cpuacct:/parent/ctr\n")
    assert "2:cpu,cpuacct:/parent/ctr\n" in text and ":cpuacct:" not in text.replace("cpu,cpuacct", "")
    proc_cgroup.write_text(text)
    return root


def test_comounted_cpu_cpuacct(tmp_path):
    hier = discover(str(comounted_v1_tree(tmp_path)))
    assert hier.v1["cpu"] is hier.v1["cpuacct"]
    assert hier.v1["cpu"] == CgroupMount(1, "/sys/fs/cgroup/cpu,cpuacct", "/", frozenset({"cpu", "cpuacct"}))
    ctr = hier.cgroup_of(200)
    assert ctr.paths["cpu"] == ctr.paths["cpuacct"] == "/parent/ctr"
    assert ctr.cpu_quota() == CpuQuota(150000, 100000)
    assert ctr.cpu_usage().total == CpuTimes(2405000000, 595000000)
    assert sorted(ctr.threads()) == [200, 201, 202, 210, 211]
    # One tree for the two controllers: their counters are kept under it.
    index = hier.v1_index
    assert hier.v1_trees[index["cpu"]] is hier.v1_trees[index["cpuacct"]]
    assert hier.v1_trees[index["cpu"]].mountpoint == str(tmp_path / "v1/sys/fs/cgroup/cpu,cpuacct")


def test_each_mount_has_a_tree_of_its_cgroups_directories(layout):
    hier = hierarchies(layout)
    mounts = list(hier.v1.values()) + ([hier.v2] if hier.v2 is not None else [])
    trees = list(hier.v1_trees) + ([hier.v2_tree] if hier.v2_tree is not None else [])
    for mount, tree in zip(mounts, trees):
        assert tree.mountpoint == hier.host_path(mount.mountpoint) and tree.root == mount.root
        assert tree.directory("/parent/ctr") == hier.host_path(mount.mountpoint) + "/parent/ctr"
    assert len({id(tree) for tree in hier.v1_trees}) == len(set(hier.v1.values()))


def test_counters_through_kept_files_reach_a_cgroup_by_the_mounts_root(tmp_path):
    # The cgroup /parent bind-mounted at /sys/fs/cgroup/parent (the mount's
    # root is /parent): /parent/ctr is its mountpoint's ctr directory,
    # /sysctr is out of reach, and what cannot be reached is not kept.
    from procview._io import KeptFiles

    hier = Hierarchies([CgroupMount(2, "/sys/fs/cgroup/parent", "/parent", frozenset())], root=str(FIXTURES / "v2"))
    kept = KeptFiles(limit=16)
    hier.read_cgroup_file = kept.read_in
    usage = hier.cgroup("/parent/ctr").memory_usage()
    assert usage.memory is not None and usage == hierarchies("v2").cgroup("/parent/ctr").memory_usage()
    directory = FIXTURES / "v2/sys/fs/cgroup/parent/ctr"
    assert kept.paths() == [str(directory / "memory.current"), str(directory / "memory.swap.current")]
    kept.close()
    assert hier.cgroup("/sysctr").memory_usage() == MemoryUsage(None, None)
    assert len(kept) == 0


# -- pure path helpers ---------------------------------------------------------


def test_levels_walks_up_to_the_mountpoint():
    assert list(levels("/r/sys/fs/cgroup/parent/ctr", "/r/sys/fs/cgroup")) == [
        "/r/sys/fs/cgroup/parent/ctr",
        "/r/sys/fs/cgroup/parent",
        "/r/sys/fs/cgroup",
    ]
    assert list(levels("/r/sys/fs/cgroup/", "/r/sys/fs/cgroup")) == ["/r/sys/fs/cgroup"]
    assert list(levels("/a/b", "/")) == ["/a/b", "/a", "/"]


def test_cgroup_dir_respects_the_mount_root():
    assert cgroup_dir("/sys/fs/cgroup", "/", "/parent/ctr") == "/sys/fs/cgroup/parent/ctr"
    assert cgroup_dir("/sys/fs/cgroup", "/", "/") == "/sys/fs/cgroup"
    # A mount whose root is /parent/ctr (bind mount, cgroup namespace).
    assert cgroup_dir("/c/sys/fs/cgroup", "/parent/ctr", "/parent/ctr") == "/c/sys/fs/cgroup"
    assert cgroup_dir("/c/sys/fs/cgroup", "/parent/ctr", "/parent/ctr/sub") == "/c/sys/fs/cgroup/sub"
    assert cgroup_dir("/c/sys/fs/cgroup", "/parent/ctr", "/parent/ctrX") is None
    assert cgroup_dir("/c/sys/fs/cgroup", "/parent/ctr", "/sysctr") is None


# -- cgroup_of -------------------------------------------------------------------


@pytest.mark.parametrize(
    "pid, path",
    [
        (200, "/parent/ctr"),
        (201, "/parent/ctr"),
        (210, "/parent/ctr/sub"),
        (300, "/sysctr/init.scope"),
        (301, "/sysctr/app"),
    ],
)
def test_cgroup_of_container_processes(layout, pid, path):
    hier = hierarchies(layout)
    cgroup = hier.cgroup_of(pid)
    assert cgroup.path == path
    assert cgroup == hier.cgroup(path)
    assert cgroup.version == (2 if layout == "v2" else 1)


def test_cgroup_of_resolves_each_v1_controller_separately(v1_layout):
    # cron is in its systemd service for the controllers systemd manages and
    # at the root of cpuset and freezer.
    cron = hierarchies(v1_layout).cgroup_of(100)
    assert cron.paths["memory"] == "/system.slice/cron.service"
    assert cron.paths["cpu"] == "/system.slice/cron.service"
    assert cron.paths["cpuset"] == "/"
    assert cron.paths["freezer"] == "/"
    assert cron.paths["name=systemd"] == "/system.slice/cron.service"
    assert cron.path == "/system.slice/cron.service"  # display path: the memory one


def test_cgroup_of_keeps_the_named_systemd_hierarchy(v1_layout):
    init = hierarchies(v1_layout).cgroup_of(1)
    assert init.paths["name=systemd"] == "/init.scope"
    assert init.paths["memory"] == "/"


def test_cgroup_of_host_init_v2():
    assert hierarchies("v2").cgroup_of(1).path == "/init.scope"


def test_cgroup_of_vanished_pid(layout):
    assert hierarchies(layout).cgroup_of(4242) is None


def test_cgroup_from_proc_text_without_a_known_hierarchy():
    # v2 needs the 0:: line; v1 needs a controller it has mounted.
    assert hierarchies("v2").cgroup_from_proc_text("4:memory:/x\n") is None
    assert hierarchies("v1").cgroup_from_proc_text("0::/x\n") is None
    assert hierarchies("v1").cgroup_from_proc_text("") is None


# -- memory limits ---------------------------------------------------------------


def test_memory_limits_of_the_container(layout):
    # min(600, 500) MiB; swap 256 MiB (v1: 756 MiB memsw - 500 MiB).
    assert hierarchies(layout).cgroup("/parent/ctr").memory_limits() == MemoryLimits(500 * MiB, 256 * MiB)


def test_memory_limits_a_child_is_not_an_ancestor(layout):
    # ctr/sub has 400 MiB; it must not lower ctr's answer (checked above),
    # and sub's own answer takes ctr's and parent's limits into account.
    sub = hierarchies(layout).cgroup("/parent/ctr/sub").memory_limits()
    if layout == "v2":
        # memory.swap.max 900 MiB below 256 and 300 MiB above.
        assert sub == MemoryLimits(400 * MiB, 256 * MiB)
    else:
        # sub's memsw 900 MiB is larger than ctr's 756 MiB: 756 - 400 = 356 MiB.
        assert sub == MemoryLimits(400 * MiB, 356 * MiB)


def test_memory_limits_parent(layout):
    expected_swap = 300 * MiB  # v1: 900 - 600; v2: memory.swap.max
    assert hierarchies(layout).cgroup("/parent").memory_limits() == MemoryLimits(600 * MiB, expected_swap)


def test_memory_limits_unlimited(layout):
    # v1 9223372036854771712 and v2 "max" at every level.
    assert hierarchies(layout).cgroup("/sysctr/app").memory_limits() == MemoryLimits(UNLIMITED, UNLIMITED)


def test_memory_limits_v1_child_memsw_above_parent(v1_layout, tmp_path):
    # parent: 600 MiB, memsw 700 MiB (100 MiB of swap); ctr: 500 MiB, memsw
    # 900 MiB. memory+swap is capped by the parent's 700 MiB, so with memory
    # at its 500 MiB limit there is room for 200 MiB of swap, not 400.
    root = writable_copy(v1_layout, tmp_path)
    put(cgdir(root, v1_layout, "memory", "/parent") / "memory.memsw.limit_in_bytes", f"{700 * MiB}\n")
    put(cgdir(root, v1_layout, "memory", "/parent/ctr") / "memory.memsw.limit_in_bytes", f"{900 * MiB}\n")
    ctr = discover(str(root)).cgroup("/parent/ctr")
    assert ctr.memory_limits() == MemoryLimits(500 * MiB, 200 * MiB)


def test_memory_limits_v1_parent_memsw_below_child_memory(v1_layout, tmp_path):
    # The parent caps memory+swap at 400 MiB and sets no memory limit; ctr
    # allows 500 MiB of memory. v1 charges every page to the memsw counters
    # of all ancestors, so ctr can never hold more than 400 MiB of memory,
    # and has no room left for swap.
    # MODEL BUG: memory_limits() reports memory=500 MiB (it never lets a
    # memsw limit bound memory).
    root = writable_copy(v1_layout, tmp_path)
    put(cgdir(root, v1_layout, "memory", "/parent") / "memory.limit_in_bytes", f"{U1}\n")
    put(cgdir(root, v1_layout, "memory", "/parent") / "memory.memsw.limit_in_bytes", f"{400 * MiB}\n")
    ctr = discover(str(root)).cgroup("/parent/ctr")
    assert ctr.memory_limits() == MemoryLimits(400 * MiB, 0)


def test_memory_limits_v1_without_swap_accounting(v1_layout, tmp_path):
    # swapaccount=0: no memory.memsw.* files anywhere; swap is unknown.
    root = writable_copy(v1_layout, tmp_path)
    remove_files(root, "memory.memsw.*")
    hier = discover(str(root))
    assert hier.cgroup("/parent/ctr").memory_limits() == MemoryLimits(500 * MiB, None)
    assert hier.cgroup("/parent/ctr").memory_usage() == MemoryUsage(300 * MiB, None)


def test_memory_limits_v2_without_swap_accounting(tmp_path):
    root = writable_copy("v2", tmp_path)
    remove_files(root, "memory.swap.*")
    hier = discover(str(root))
    assert hier.cgroup("/parent/ctr").memory_limits() == MemoryLimits(500 * MiB, None)
    assert hier.cgroup("/parent/ctr").memory_usage() == MemoryUsage(300 * MiB, None)


# -- memory usage and statistics ---------------------------------------------------


def test_memory_usage(layout):
    # v1: usage 300 MiB, memsw usage 320 MiB -> 20 MiB of swap.
    assert hierarchies(layout).cgroup("/parent/ctr").memory_usage() == MemoryUsage(300 * MiB, 20 * MiB)
    assert hierarchies(layout).cgroup("/parent/ctr").memory_usage(swap=False) == MemoryUsage(300 * MiB, None)


# ctr's memory.stat as the kernel sums it over ctr and ctr/sub (v1 total_*).
CTR_STAT_COMMON = dict(
    anon=188743680,
    file=104857600,
    shmem=8388608,
    file_mapped=33554432,
    file_dirty=405504,
    file_writeback=0,
    active_anon=134217728,
    inactive_anon=62914560,
    active_file=35651584,
    inactive_file=60817408,
    unevictable=0,
    anon_thp=41943040,
    swapcached=1048576,
)


def test_memory_stat_v1_uses_hierarchical_totals():
    stat = hierarchies("v1").cgroup("/parent/ctr").memory_stat()
    # The v1 tree's kernel (4.x) lists ctr's slab caches in memory.kmem.slabinfo:
    # 840*584 + 1456*592 + 2048*64 + 4410*192 bytes, all counted unreclaimable.
    assert stat == MemoryStat(**CTR_STAT_COMMON, slab_reclaimable=0, slab_unreclaimable=2330304)
    # ctr's own (non-total) rss is 161480704 and cache 83886080: not these.
    assert stat.anon != 161480704 and stat.file != 83886080


def test_memory_stat_hybrid_without_slabinfo():
    # Kernel 5.9+ prints an empty memory.kmem.slabinfo (as on this machine):
    # v1 then has no slab figure at all.
    stat = hierarchies("hybrid").cgroup("/parent/ctr").memory_stat()
    assert stat == MemoryStat(**CTR_STAT_COMMON)
    assert stat.slab_reclaimable is None and stat.slab_unreclaimable is None


def test_memory_stat_v2_maps_keys_by_name():
    stat = hierarchies("v2").cgroup("/parent/ctr").memory_stat()
    assert stat == MemoryStat(
        **CTR_STAT_COMMON,
        slab_reclaimable=9437184,
        slab_unreclaimable=3145728,
        file_thp=0,
        shmem_thp=0,
        kernel_stack=589824,
        pagetables=1966080,
        sec_pagetables=0,
        percpu=143360,
        vmalloc=16384,
        zswap=2097152,
        zswapped=6291456,
    )


def test_memory_stat_missing(layout):
    assert hierarchies(layout).cgroup("/broken").memory_stat() is None


# -- CPU quota ----------------------------------------------------------------------


def test_cpu_quota_tightest_level(layout):
    hier = hierarchies(layout)
    # parent 3 CPUs, ctr 1.5 CPUs.
    assert hier.cgroup("/parent/ctr").cpu_quota() == CpuQuota(150000, 100000)
    # sub: 2 CPUs (v1) or max (v2) below ctr's 1.5: ctr's quota still rules.
    assert hier.cgroup("/parent/ctr/sub").cpu_quota() == CpuQuota(150000, 100000)
    parent = hier.cgroup("/parent").cpu_quota()
    assert parent.cpus == 3.0
    assert parent == (CpuQuota(300000, 100000) if layout == "v2" else CpuQuota(600000, 200000))


def test_cpu_quota_unlimited(layout):
    assert hierarchies(layout).cgroup("/sysctr/app").cpu_quota() is UNLIMITED


def test_cpu_quota_compares_cpus_not_microseconds(v1_layout, tmp_path):
    # parent 120000/100000 = 1.2 CPUs; ctr 200000/200000 = 1 CPU. The larger
    # quota number is the tighter limit.
    root = writable_copy(v1_layout, tmp_path)
    for path, quota, period in (("/parent", 120000, 100000), ("/parent/ctr", 200000, 200000)):
        put(cgdir(root, v1_layout, "cpu", path) / "cpu.cfs_quota_us", f"{quota}\n")
        put(cgdir(root, v1_layout, "cpu", path) / "cpu.cfs_period_us", f"{period}\n")
    assert discover(str(root)).cgroup("/parent/ctr").cpu_quota() == CpuQuota(200000, 200000)


# -- cpuset -----------------------------------------------------------------------------


def test_cpuset_fallbacks(layout):
    hier = hierarchies(layout)
    ctr = hier.cgroup("/parent/ctr").cpuset()
    if layout == "v2":
        # cpuset.cpus empty -> cpuset.cpus.effective "0-2".
        assert ctr == frozenset({0, 1, 2})
    else:
        # cpuset.cpus and cpuset.effective_cpus empty -> parent's "0-3".
        assert ctr == frozenset({0, 1, 2, 3})
    assert hier.cgroup("/parent/ctr/sub").cpuset() == frozenset({2})


def test_cpuset_v1_effective_cpus(v1_layout, tmp_path):
    # cpuset_v2_mode: cpuset.cpus empty, the effective set is the answer.
    root = writable_copy(v1_layout, tmp_path)
    put(cgdir(root, v1_layout, "cpuset", "/parent/ctr") / "cpuset.effective_cpus", "1-2\n")
    assert discover(str(root)).cgroup("/parent/ctr").cpuset() == frozenset({1, 2})


def test_cpuset_v2_ancestor(tmp_path):
    root = writable_copy("v2", tmp_path)
    put(cgdir(root, "v2", "cpuset", "/parent/ctr") / "cpuset.cpus.effective", "")
    assert discover(str(root)).cgroup("/parent/ctr").cpuset() == frozenset({0, 1, 2, 3})


# -- CPU usage -------------------------------------------------------------------------------

CTR_PER_CPU_USAGE_ALL = {
    0: CpuTimes(1210000000, 290000000),
    1: CpuTimes(790000000, 210000000),
    2: CpuTimes(405000000, 95000000),
    3: CpuTimes(0, 0),
}


def test_cpu_usage_v1_usage_all(v1_layout):
    usage = hierarchies(v1_layout).cgroup("/parent/ctr").cpu_usage()
    assert usage == CpuUsage(CpuTimes(2405000000, 595000000), CTR_PER_CPU_USAGE_ALL)


def test_cpu_usage_v1_usage_percpu_split_by_cpuacct_stat(v1_layout, tmp_path):
    # Kernels before 4.16 lack usage_all: usage_percpu (1.5 s, 1 s, 0.5 s, 0)
    # split by cpuacct.stat's user 240 / system 60 ticks (80 % user).
    root = writable_copy(v1_layout, tmp_path)
    remove_files(root, "cpuacct.usage_all")
    usage = discover(str(root)).cgroup("/parent/ctr").cpu_usage()
    assert usage == CpuUsage(
        CpuTimes(2400000000, 600000000),
        {
            0: CpuTimes(1200000000, 300000000),
            1: CpuTimes(800000000, 200000000),
            2: CpuTimes(400000000, 100000000),
            3: CpuTimes(0, 0),
        },
    )


def test_cpu_usage_v1_percpu_without_cpuacct_stat_counts_user(v1_layout, tmp_path):
    root = writable_copy(v1_layout, tmp_path)
    remove_files(root, "cpuacct.usage_all")
    remove_files(root, "cpuacct.stat")
    usage = discover(str(root)).cgroup("/parent/ctr").cpu_usage()
    assert usage.total == CpuTimes(3000000000, 0)
    assert usage.per_cpu[0] == CpuTimes(1500000000, 0)


def test_cpu_usage_v1_total_only(v1_layout, tmp_path):
    root = writable_copy(v1_layout, tmp_path)
    remove_files(root, "cpuacct.usage_all")
    remove_files(root, "cpuacct.usage_percpu")
    usage = discover(str(root)).cgroup("/parent/ctr").cpu_usage()
    assert usage == CpuUsage(CpuTimes(2400000000, 600000000), None)


def test_cpu_usage_v2_totals_in_nanoseconds():
    # cpu.stat user_usec 2405000, system_usec 595000; no per-CPU split.
    usage = hierarchies("v2").cgroup("/parent/ctr").cpu_usage()
    assert usage == CpuUsage(CpuTimes(2405000000, 595000000), None)


def test_cpu_busy_ns_v1_is_the_one_number_of_cpuacct_usage(v1_layout, tmp_path):
    # usage_all's columns sum to 3 s; a usage of 3.5 s shows which was read.
    root = writable_copy(v1_layout, tmp_path)
    put(cgdir(root, v1_layout, "cpuacct", "/parent/ctr") / "cpuacct.usage", "3500000000\n")
    assert discover(str(root)).cgroup("/parent/ctr").cpu_busy_ns() == 3500000000


def test_cpu_busy_ns_v1_without_cpuacct_usage_sums_the_per_cpu_usage(v1_layout, tmp_path):
    root = writable_copy(v1_layout, tmp_path)
    remove_files(root, "cpuacct.usage")
    assert discover(str(root)).cgroup("/parent/ctr").cpu_busy_ns() == 3000000000


def test_cpu_busy_ns_v2_is_user_plus_system():
    assert hierarchies("v2").cgroup("/parent/ctr").cpu_busy_ns() == 3000000000


# -- block I/O ---------------------------------------------------------------------------------

CTR_IO = {
    (254, 0): IoStat(
        read_ios=1200, write_ios=340, discard_ios=3, read_bytes=49152000, write_bytes=13926400, discard_bytes=1048576
    ),
    (254, 16): IoStat(read_ios=10, read_bytes=40960),
}


def test_io_stats(layout):
    # v1: blkio.throttle.*_recursive (the hybrid tree also has BFQ's counters
    # with doubled numbers: the throttle layer's win); v2: io.stat.
    assert hierarchies(layout).cgroup("/parent/ctr").io_stats() == CTR_IO


CFQ_SERVICED = "8:0 Read 7\n8:0 Write 9\n8:0 Total 16\nTotal 16\n"


def put_cfq_serviced(root: Path, layout: str) -> None:
    """blkio.io_serviced_recursive, as a kernel with CFQ has it: in every
    cgroup of the hierarchy, its top one included."""
    for path in ("/", "/parent", "/parent/ctr"):
        put(cgdir(root, layout, "blkio", path) / "blkio.io_serviced_recursive", CFQ_SERVICED if path == "/parent/ctr" else "Total 0\n")


def test_io_stats_v1_prefers_cfq_files(v1_layout, tmp_path):
    # Kernels before 5.0 with CFQ have blkio.io_serviced_recursive; it is
    # read first when present.
    root = writable_copy(v1_layout, tmp_path)
    put_cfq_serviced(root, v1_layout)
    stats = discover(str(root)).cgroup("/parent/ctr").io_stats()
    assert stats[(8, 0)] == IoStat(read_ios=7, write_ios=9)
    assert stats[(254, 0)] == IoStat(read_bytes=49152000, write_bytes=13926400, discard_bytes=1048576)


def reads_of(hier: Hierarchies) -> list[str]:
    """Record the file names the hierarchies' counter reads try."""
    tried = []
    read = hier.read_cgroup_file

    def recording_read(tree, path, name):
        tried.append(name)
        return read(tree, path, name)

    hier.read_cgroup_file = recording_read
    return tried


def test_io_stats_v1_tries_only_the_names_the_hierarchy_has(v1_layout):
    # A failed open costs ~11 µs, and this kernel lacks most blkio names
    # (CFQ's, and BFQ's without the bfq module): only the names the
    # hierarchy's top cgroup has are tried, on every read.
    hier = hierarchies(v1_layout)
    tried = reads_of(hier)
    for _ in range(2):
        assert hier.cgroup("/parent/ctr").io_stats() == CTR_IO
    assert tried == ["blkio.throttle.io_serviced_recursive", "blkio.throttle.io_service_bytes_recursive"] * 2


def test_io_stats_v1_a_removed_cgroup_does_not_hide_names(v1_layout):
    # /parent/gone has no files at all and /broken no blkio ones: read
    # first, they must not make the hierarchy look as if it lacked the names.
    hier = hierarchies(v1_layout)
    assert hier.cgroup("/parent/gone").io_stats() is None
    assert hier.cgroup("/broken").io_stats() is None
    assert hier.cgroup("/parent/ctr").io_stats() == CTR_IO


def test_io_stats_v1_sees_names_a_module_adds_after_the_recheck(v1_layout, tmp_path):
    # Loading a scheduler module (bfq) adds its blkio files to every
    # cgroup; the names are asked of the top cgroup again after RECHECK.
    root = writable_copy(v1_layout, tmp_path)
    hier = discover(str(root))
    now = [1000.0]
    hier.files = HierarchyFiles(clock=lambda: now[0])
    ctr = hier.cgroup("/parent/ctr")
    assert ctr.io_stats() == CTR_IO
    put_cfq_serviced(root, v1_layout)
    now[0] += HierarchyFiles.RECHECK / 2
    assert (8, 0) not in ctr.io_stats()
    now[0] += HierarchyFiles.RECHECK / 2
    assert ctr.io_stats()[(8, 0)] == IoStat(read_ios=7, write_ios=9)


# -- tasks ----------------------------------------------------------------------------------------


def test_threads_and_processes_include_child_cgroups(layout):
    hier = hierarchies(layout)
    ctr = hier.cgroup("/parent/ctr")
    assert sorted(ctr.threads()) == [200, 201, 202, 210, 211]
    assert sorted(ctr.processes()) == [200, 201, 210]
    sub = hier.cgroup("/parent/ctr/sub")
    assert sorted(sub.threads()) == [210, 211]
    assert sorted(sub.processes()) == [210]


# -- bad input -----------------------------------------------------------------------------------


def test_broken_cgroup_reads_never_raise(layout):
    # /broken: empty memory limit, garbage in usage/quota/cpuset/cpuacct,
    # no memory.stat. Single-file reads are unknown; effective limits skip
    # the unreadable level and keep what the other levels say.
    broken = hierarchies(layout).cgroup("/broken")
    assert broken.memory_usage().memory is None
    assert broken.memory_stat() is None
    assert broken.cpu_usage() is None
    # cpuset.cpus "3-1" is garbled: the root's 0-3 is the nearest readable set.
    assert broken.cpuset() == frozenset({0, 1, 2, 3})
    # The root cgroup is never limited, so it is not consulted (v2's root has
    # no limit files; v1's would only say "unlimited"): the limits are unknown.
    assert broken.memory_limits() == MemoryLimits(None, None)
    assert broken.cpu_quota() is None
    if layout == "v2":
        assert broken.io_stats() == {}  # an empty io.stat: no I/O
    else:
        assert broken.io_stats() is None  # no blkio statistics files


def test_cgroup_exists(layout):
    hier = hierarchies(layout)
    assert hier.cgroup("/parent/ctr").exists()
    assert not hier.cgroup("/parent/gone").exists()


# A cgroup that was removed (the container stopped between the lookup and
# the read). Nothing about it is known any more; its parent's limits are not
# its limits.
# MODEL BUG: memory_limits, cpu_quota and cpuset walk the ancestors of the
# missing directory and answer with /parent's values (600 MiB, 3 CPUs, 0-3).
@pytest.mark.parametrize(
    "read, unknown",
    [
        ("memory_limits", MemoryLimits(None, None)),
        ("memory_usage", MemoryUsage(None, None)),
        ("memory_stat", None),
        ("cpu_quota", None),
        ("cpuset", None),
        ("cpu_usage", None),
        ("io_stats", None),
        ("threads", None),
        ("processes", None),
    ],
)
def test_removed_cgroup_reads_are_unknown(layout, read, unknown):
    gone = hierarchies(layout).cgroup("/parent/gone")
    assert getattr(gone, read)() == unknown


@pytest.mark.parametrize(
    "read, unknown",
    [
        ("memory_limits", MemoryLimits(None, None)),
        ("memory_usage", MemoryUsage(None, None)),
        ("memory_stat", None),
        ("cpu_quota", None),
        ("cpuset", None),
        ("cpu_usage", None),
        ("io_stats", None),
        ("threads", None),
        ("processes", None),
    ],
)
def test_cgroup_outside_the_mount_is_unknown(read, unknown):
    # The hierarchy is mounted with root /parent (a cgroup namespace or a bind
    # mount): /sysctr cannot be reached through it.
    hier = Hierarchies([CgroupMount(2, "/sys/fs/cgroup", "/parent", frozenset())], root=str(FIXTURES / "v2"))
    assert getattr(hier.cgroup("/sysctr"), read)() == unknown


# -- writing (the runtime) ----------------------------------------------------------------------

MANAGED_V1 = ["memory", "cpu", "cpuacct", "cpuset", "pids", "blkio", "devices", "freezer"]


def test_v1_create_in_every_managed_controller(v1_layout, tmp_path, cgroupfs):
    root = writable_copy(v1_layout, tmp_path)
    hier = discover(str(root))
    cgroupfs(hier)
    hier.cgroup("/parent/newctr").create()
    for controller in MANAGED_V1:
        assert cgdir(root, v1_layout, controller, "/parent/newctr").is_dir(), controller
    # The init system's named hierarchy is left alone.
    assert not (root / "sys/fs/cgroup/systemd/parent/newctr").exists()
    # A new v1 cpuset is empty and refuses tasks: create() copies the parent's.
    cpuset = cgdir(root, v1_layout, "cpuset", "/parent/newctr")
    assert (cpuset / "cpuset.cpus").read_text() == "0-3"
    assert (cpuset / "cpuset.mems").read_text() == "0"


def test_v1_create_fills_the_cpuset_of_every_new_level(v1_layout, tmp_path, cgroupfs):
    # /parent/a does not exist either: create() makes it too. The kernel
    # only lets b take cpus its parent a has, so a must be filled first
    # (an empty a would make the write to b's cpuset.cpus fail).
    root = writable_copy(v1_layout, tmp_path)
    hier = discover(str(root))
    cgroupfs(hier)
    hier.cgroup("/parent/a/b").create()
    for path in ("/parent/a", "/parent/a/b"):
        cpuset = cgdir(root, v1_layout, "cpuset", path)
        assert (cpuset / "cpuset.cpus").read_text() == "0-3", path
        assert (cpuset / "cpuset.mems").read_text() == "0", path


def test_v1_create_on_a_plain_directory_tree(v1_layout, tmp_path):
    # Without cgroupfs no cpuset.mems appears on mkdir, and create() cannot
    # fill it: it says so with a CgroupError naming the file (never a bare
    # OSError). This is why the tests above emulate cgroupfs.
    root = writable_copy(v1_layout, tmp_path)
    hier = discover(str(root))
    with pytest.raises(CgroupError) as caught:
        hier.cgroup("/parent/newctr").create()
    assert caught.value.path == str(cgdir(root, v1_layout, "cpuset", "/parent/newctr") / "cpuset.mems")
    assert caught.value.value == "0"


def test_comounted_create(tmp_path, cgroupfs):
    root = comounted_v1_tree(tmp_path)
    hier = discover(str(root))
    cgroupfs(hier)
    hier.cgroup("/parent/newctr").create()
    assert (root / "sys/fs/cgroup/cpu,cpuacct/parent/newctr").is_dir()


def test_v2_create_on_a_plain_directory_tree(tmp_path):
    root = writable_copy("v2", tmp_path)
    hier = discover(str(root))
    hier.cgroup("/parent/newctr").create()
    assert (root / "sys/fs/cgroup/parent/newctr").is_dir()
    # Everything the runtime needs is already enabled in / and /parent.
    assert (root / "sys/fs/cgroup/cgroup.subtree_control").read_text() == "cpuset cpu io memory pids\n"
    assert (root / "sys/fs/cgroup/parent/cgroup.subtree_control").read_text() == "cpuset cpu io memory pids\n"


def test_v2_create_enables_controllers_top_down(tmp_path, cgroupfs):
    root = writable_copy("v2", tmp_path)
    put(root / "sys/fs/cgroup/parent/cgroup.subtree_control", "")
    hier = discover(str(root))
    cgroupfs(hier)
    hier.cgroup("/parent/a/b").create()
    base = root / "sys/fs/cgroup"
    assert (base / "parent/cgroup.subtree_control").read_text() == "+cpu +cpuset +memory +pids +io"
    assert (base / "parent/a/cgroup.controllers").read_text() == "cpu cpuset memory pids io"
    assert (base / "parent/a/cgroup.subtree_control").read_text() == "+cpu +cpuset +memory +pids +io"
    assert (base / "parent/a/b").is_dir()
    assert (base / "parent/a/b/cgroup.subtree_control").read_text() == ""  # a leaf enables nothing
    assert (base / "cgroup.subtree_control").read_text() == "cpuset cpu io memory pids\n"


@pytest.fixture
def ctr_for_writing(layout, tmp_path):
    """(root, layout, cgroup) for /parent/ctr in a private copy."""
    root = writable_copy(layout, tmp_path)
    return root, layout, discover(str(root)).cgroup("/parent/ctr")


def blank(root, layout, controller, name):
    path = cgdir(root, layout, controller, "/parent/ctr") / name
    put(path, "")
    return path


def test_set_memory_limit(ctr_for_writing):
    root, layout, ctr = ctr_for_writing
    name = "memory.max" if layout == "v2" else "memory.limit_in_bytes"
    path = blank(root, layout, "memory", name)
    ctr.set_memory_limit(512 * MiB)
    assert path.read_text() == "536870912"
    put(path, "")
    ctr.set_memory_limit(UNLIMITED)
    assert path.read_text() == ("max" if layout == "v2" else "-1")


def test_set_swap_limit(ctr_for_writing):
    root, layout, ctr = ctr_for_writing
    if layout == "v2":
        path = blank(root, layout, "memory", "memory.swap.max")
        ctr.set_swap_limit(256 * MiB)
        assert path.read_text() == "268435456"
        put(path, "")
        ctr.set_swap_limit(UNLIMITED)
        assert path.read_text() == "max"
        return
    # v1 has no swap-alone limit: memsw = the memory limit (500 MiB) + swap.
    path = blank(root, layout, "memory", "memory.memsw.limit_in_bytes")
    ctr.set_swap_limit(256 * MiB)
    assert path.read_text() == str(500 * MiB + 256 * MiB)
    put(path, "")
    ctr.set_swap_limit(UNLIMITED)
    assert path.read_text() == "-1"


def test_v1_set_swap_limit_needs_a_memory_limit(v1_layout, tmp_path):
    root = writable_copy(v1_layout, tmp_path)
    app = discover(str(root)).cgroup("/sysctr/app")  # memory unlimited
    with pytest.raises(CgroupError, match="needs a memory limit"):
        app.set_swap_limit(256 * MiB)


def test_v1_set_swap_limit_without_swap_accounting(v1_layout, tmp_path):
    root = writable_copy(v1_layout, tmp_path)
    remove_files(root, "memory.memsw.*")
    with pytest.raises(CgroupError, match="swapaccount=0"):
        discover(str(root)).cgroup("/parent/ctr").set_swap_limit(256 * MiB)


def test_set_cpu_quota(ctr_for_writing):
    root, layout, ctr = ctr_for_writing
    if layout == "v2":
        path = blank(root, layout, "cpu", "cpu.max")
        ctr.set_cpu_quota(CpuQuota(150000, 100000))
        assert path.read_text() == "150000 100000"
        put(path, "")
        ctr.set_cpu_quota(UNLIMITED)
        assert path.read_text() == "max"
        return
    quota = blank(root, layout, "cpu", "cpu.cfs_quota_us")
    period = blank(root, layout, "cpu", "cpu.cfs_period_us")
    ctr.set_cpu_quota(CpuQuota(150000, 100000))
    assert (quota.read_text(), period.read_text()) == ("150000", "100000")
    put(quota, "")
    ctr.set_cpu_quota(UNLIMITED)
    assert quota.read_text() == "-1"


def test_set_cpuset(ctr_for_writing):
    root, layout, ctr = ctr_for_writing
    path = blank(root, layout, "cpuset", "cpuset.cpus")
    ctr.set_cpuset(frozenset({0, 1, 2, 5}))
    assert path.read_text() == "0-2,5"


def test_set_pids_limit(ctr_for_writing):
    root, layout, ctr = ctr_for_writing
    path = blank(root, layout, "pids", "pids.max")
    ctr.set_pids_limit(512)
    assert path.read_text() == "512"
    put(path, "")
    ctr.set_pids_limit(UNLIMITED)
    assert path.read_text() == "max"


def test_add_process(ctr_for_writing):
    root, layout, ctr = ctr_for_writing
    controllers = ["unified"] if layout == "v2" else MANAGED_V1
    paths = [blank(root, layout, c, "cgroup.procs") for c in controllers]
    ctr.add_process(4321)
    assert [p.read_text() for p in paths] == ["4321"] * len(paths)


def test_write_to_a_missing_file_names_the_path(layout, tmp_path):
    root = writable_copy(layout, tmp_path)
    missing = discover(str(root)).cgroup("/nonexistent")
    with pytest.raises(CgroupError) as caught:
        missing.set_pids_limit(5)
    assert caught.value.path == str(cgdir(root, layout, "pids", "/nonexistent") / "pids.max")
    assert caught.value.value == "5"
    assert caught.value.reason == os.strerror(errno.ENOENT)


def test_remove_deepest_first(layout, tmp_path, monkeypatch):
    root = writable_copy(layout, tmp_path)
    controllers = ["unified"] if layout == "v2" else MANAGED_V1
    for controller in controllers:
        (cgdir(root, layout, controller, "/parent/x/y/z")).mkdir(parents=True)
    removed = []
    real_rmdir = os.rmdir

    def rmdir(path, *args, **kwargs):
        removed.append(os.fspath(path))
        real_rmdir(path, *args, **kwargs)

    monkeypatch.setattr(cgroups_base.os, "rmdir", rmdir)
    discover(str(root)).cgroup("/parent/x").remove()
    for controller in controllers:
        x = str(cgdir(root, layout, controller, "/parent/x"))
        assert [p for p in removed if p.startswith(x)] == [x + "/y/z", x + "/y", x], controller
        assert not os.path.exists(x)
        assert cgdir(root, layout, controller, "/parent/ctr").is_dir()


def test_remove_missing_cgroup_is_quiet(layout, tmp_path):
    root = writable_copy(layout, tmp_path)
    discover(str(root)).cgroup("/parent/never-created").remove()


def test_remove_busy_cgroup(layout, tmp_path, monkeypatch):
    root = writable_copy(layout, tmp_path)
    controllers = ["unified"] if layout == "v2" else MANAGED_V1
    for controller in controllers:
        cgdir(root, layout, controller, "/parent/busy").mkdir()

    def rmdir(path, *args, **kwargs):
        raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), path)

    monkeypatch.setattr(cgroups_base.os, "rmdir", rmdir)
    with pytest.raises(CgroupError, match="still has processes") as caught:
        discover(str(root)).cgroup("/parent/busy").remove()
    assert caught.value.path.endswith("/parent/busy")
