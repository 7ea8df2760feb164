"""The mount's tree through a caller's CPU view (procview/fs.py ViewTree),
over a small fake sysfs."""

from __future__ import annotations

import os

import pytest

from procview.fs import ViewTree, _cpumask
from procview.views.cpuview import CpuView

HOST_VIEW = CpuView((0, 1, 2, 3), 4.0, False)
PINNED = CpuView((2, 3), 2.0, True)  # a container on host CPUs 2 and 3


@pytest.fixture
def tree(tmp_path):
    cpu = tmp_path / "sys/devices/system/cpu"
    for n in range(4):
        (cpu / f"cpu{n}/topology").mkdir(parents=True)
        (cpu / f"cpu{n}/topology/core_id").write_text(f"{n}\n")
    for name, text in (("online", "0-3\n"), ("possible", "0-3\n"), ("present", "0-3\n"), ("kernel_max", "8191\n"), ("offline", "\n")):
        (cpu / name).write_text(text)
    (cpu / "cpufreq").mkdir()
    node = tmp_path / "sys/devices/system/node"
    for n in range(2):
        (node / f"node{n}").mkdir(parents=True)
        (node / f"node{n}/meminfo").write_text(f"Node {n} MemTotal: 1 kB\n")
        (node / f"node{n}/distance").write_text("10 20\n")
    for n in range(4):
        os.symlink(f"../../cpu/cpu{n}", node / f"node{n // 2}/cpu{n}")
    (node / "online").write_text("0-1\n")
    return ViewTree(str(tmp_path))


def names(tree, vpath, view):
    return [name for name, _ in tree.list_dir(tree.resolve(vpath, view), view)]


def test_the_top_of_the_mount_is_ours(tree):
    assert names(tree, "", HOST_VIEW) == ["proc", "sys"]
    assert names(tree, "proc", HOST_VIEW) == ["cpuinfo", "diskstats", "loadavg", "meminfo", "stat", "swaps", "uptime"]
    assert tree.resolve("proc/meminfo", HOST_VIEW).kind == "file"
    assert tree.resolve("proc/kcore", HOST_VIEW) is None
    assert tree.resolve("etc", HOST_VIEW) is None


def test_cpu_directory_shows_the_view_renumbered(tree):
    assert names(tree, "sys/devices/system/cpu", PINNED) == [
        "cpu0", "cpu1", "cpufreq", "kernel_max", "offline", "online", "possible", "present",
    ]
    cpu0 = tree.resolve("sys/devices/system/cpu/cpu0", PINNED)
    assert cpu0.kind == "host" and cpu0.host_path.endswith("/cpu/cpu2")
    core = tree.resolve("sys/devices/system/cpu/cpu1/topology/core_id", PINNED)
    assert core.host_path.endswith("/cpu/cpu3/topology/core_id")
    assert tree.resolve("sys/devices/system/cpu/cpu2", PINNED) is None
    assert tree.resolve("sys/devices/system/cpu/online", PINNED).kind == "file"
    assert tree.resolve("sys/devices/system/cpu/offline", PINNED).text == "\n"
    assert tree.resolve("sys/devices/system/cpu/kernel_max", PINNED).kind == "host"


def test_the_same_directory_has_one_identity_whoever_names_it(tree):
    as_container = tree.resolve("sys/devices/system/cpu/cpu0", PINNED)
    as_host = tree.resolve("sys/devices/system/cpu/cpu2", HOST_VIEW)
    assert as_container.key == as_host.key


def test_node_directory_shows_one_node_with_the_views_cpus(tree):
    assert names(tree, "sys/devices/system/node", PINNED) == ["node0", "online"]
    assert tree.resolve("sys/devices/system/node/node1", PINNED) is None
    assert tree.resolve("sys/devices/system/node/online", PINNED).text == "0\n"
    assert names(tree, "sys/devices/system/node/node0", PINNED) == ["cpu0", "cpu1", "cpulist", "cpumap", "distance", "meminfo"]
    assert tree.resolve("sys/devices/system/node/node0/cpu1", PINNED).text == "../../cpu/cpu1"
    assert tree.resolve("sys/devices/system/node/node0/cpulist", PINNED).text == "0-1\n"
    assert tree.resolve("sys/devices/system/node/node0/meminfo", PINNED).kind == "file"


@pytest.mark.parametrize("count, mask", [(1, "00000001"), (2, "00000003"), (32, "ffffffff"), (33, "00000001,ffffffff")])
def test_cpumask_is_sysfs_format(count, mask):
    assert _cpumask(count) == mask


def test_below_a_cpu_directory_paths_follow_the_host_directory_not_the_name(tree):
    """One inode serves cpu0 of a pinned container and cpu2 of the host:
    what lies below it must be cpu2's, whoever looks it up later."""
    as_container = tree.resolve("sys/devices/system/cpu/cpu0", PINNED)
    topology = tree.child(as_container, "topology", HOST_VIEW)  # a host caller, same inode
    assert topology.host_path.endswith("/cpu/cpu2/topology")
    assert [n for n, _ in tree.list_dir(topology, HOST_VIEW)] == ["core_id"]


def test_only_cpu_names_depend_on_the_caller():
    from procview.fs import is_caller_dependent

    assert is_caller_dependent("sys/devices/system/cpu/cpu0")
    assert is_caller_dependent("sys/devices/system/node/node0/cpulist")
    assert not is_caller_dependent("sys/devices/system/cpu/online")
    assert not is_caller_dependent("sys/devices/system/cpu/cpu0/topology")
    assert not is_caller_dependent("proc/meminfo")
