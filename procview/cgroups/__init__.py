"""The cgroup model: one interface, a v1 and a v2 backend behind it.

``discover()`` reads ``/proc/self/mountinfo`` and returns the host's
``Hierarchies`` (pure v1, hybrid, or pure v2). ``Hierarchies.cgroup_of(pid)``
resolves a process to its ``Cgroup`` from ``/proc/PID/cgroup``;
``Hierarchies.cgroup(path)`` names one directly (the runtime creates its
containers' cgroups this way).

A ``Cgroup`` answers what the views need (effective limits over all
ancestors, usage, statistics, tasks) and takes what the runtime writes
(limits, processes). Reads never raise: an unreadable value is None
("unknown") and the view falls back to the host's value. Writes raise
``CgroupError`` with the path and the value.

On a hybrid host the resource controllers are the v1 ones (that is where
systemd's hybrid mode binds them); the cgroup2 mount only tracks processes,
so hybrid uses the v1 backend.
"""

from __future__ import annotations

import enum
import os

from procview._io import read_text

from ._formats import format_cpulist, parse_cpulist, parse_single_value
from ._mountinfo import CgroupMount, parse_mountinfo, parse_proc_cgroup
from ._values import (
    UNLIMITED,
    CpuQuota,
    CpuTimes,
    CpuUsage,
    IoStat,
    MemoryLimits,
    MemoryStat,
    MemoryUsage,
    min_limit,
)
from ._base import Cgroup, CgroupError, CgroupTree, HierarchyFiles, read_cgroup_file

__all__ = [
    "UNLIMITED",
    "Cgroup",
    "CgroupError",
    "CgroupMount",
    "CgroupTree",
    "CpuQuota",
    "CpuTimes",
    "CpuUsage",
    "Hierarchies",
    "IoStat",
    "Layout",
    "MemoryLimits",
    "MemoryStat",
    "MemoryUsage",
    "discover",
    "format_cpulist",
    "min_limit",
    "parse_cpulist",
    "parse_single_value",
]


class Layout(enum.Enum):
    """How the host mounts cgroups."""

    V1 = "v1"  # only v1 hierarchies
    HYBRID = "hybrid"  # v1 controllers plus a cgroup2 mount (e.g. /sys/fs/cgroup/unified)
    V2 = "v2"  # only the unified hierarchy


class Hierarchies:
    """The cgroup hierarchies one machine has mounted.

    ``root`` prefixes every path read (``/`` on a real machine, a fixture
    directory in tests), in the way psutil swaps its procfs path.
    """

    def __init__(self, mounts: list[CgroupMount], root: str = "/"):
        self.root = root
        self.mounts = mounts
        # How a cgroup's counters (usage, memory.stat, cpuacct, pids) are
        # read: whole, by (tree, cgroup path, file name), so that no cgroup
        # keeps a directory string of its own. The view engine swaps in
        # ``KeptFiles.read_in`` (the same text, from files kept open).
        self.read_cgroup_file = read_cgroup_file
        # Which interface files its cgroups have, per hierarchy (v1 blkio).
        self.files = HierarchyFiles()
        self.v1: dict[str, CgroupMount] = {}
        self.v2: CgroupMount | None = None
        for mount in mounts:
            if mount.version == 2:
                self.v2 = mount
            else:
                for controller in mount.controllers:
                    self.v1[controller] = mount
        # A v1 cgroup keeps its paths in this order (``CgroupV1``), the
        # paths that are not its own in a template its cgroups share.
        self.v1_index: dict[str, int] = {controller: index for index, controller in enumerate(self.v1)}
        self.v1_templates: dict[tuple, tuple] = {}
        # Where the cgroups' directories are: a tree per mount, in the same
        # order (controllers mounted together, cpu and cpuacct, share one).
        trees = {id(mount): CgroupTree(self.host_path(mount.mountpoint), mount.root) for mount in mounts}
        self.v1_trees: tuple[CgroupTree, ...] = tuple(trees[id(mount)] for mount in self.v1.values())
        self.v2_tree: CgroupTree | None = None if self.v2 is None else trees[id(self.v2)]
        has_v1_resources = any(c in self.v1 for c in ("memory", "cpu", "cpuacct", "cpuset", "pids", "blkio"))
        if has_v1_resources:
            self.layout = Layout.HYBRID if self.v2 is not None else Layout.V1
        else:
            self.layout = Layout.V2

    def __repr__(self) -> str:
        return f"Hierarchies(layout={self.layout.value}, root={self.root!r})"

    def host_path(self, path: str) -> str:
        """A machine path under ``root``."""
        if self.root == "/":
            return path
        return os.path.join(self.root, path.lstrip("/"))

    def read_proc(self, relpath: str) -> str | None:
        return read_text(self.host_path("/proc/" + relpath))

    def cgroup(self, path: str | dict[str, str]) -> Cgroup:
        """The cgroup at ``path`` (one path for every controller, or a
        per-controller dict on v1). It need not exist yet (see ``create``)."""
        if self.layout is Layout.V2:
            from .v2 import CgroupV2

            assert isinstance(path, str)
            return CgroupV2(self, path)
        from .v1 import CgroupV1

        if isinstance(path, str):
            paths = {controller: path for controller in self.v1}
        else:
            paths = dict(path)
        return CgroupV1(self, paths)

    def cgroup_of(self, pid: int) -> Cgroup | None:
        """The cgroup of process (or thread) ``pid``, None if it is gone."""
        text = self.read_proc(f"{pid}/cgroup")
        if text is None:
            return None
        return self.cgroup_from_proc_text(text)

    def cgroup_from_proc_text(self, text: str) -> Cgroup | None:
        entries = parse_proc_cgroup(text)
        if self.layout is Layout.V2:
            for entry in entries:
                if entry.hierarchy_id == 0:
                    return self.cgroup(entry.path)
            return None
        paths = {}
        for entry in entries:
            for controller in entry.controllers:
                if controller in self.v1:
                    paths[controller] = entry.path
        if not paths:
            return None
        return self.cgroup(paths)


def discover(root: str = "/") -> Hierarchies:
    """The hierarchies mounted on this machine, from ``/proc/self/mountinfo``."""
    path = os.path.join(root, "proc/self/mountinfo")
    try:
        with open(path) as f:
            text = f.read()
    except OSError as exc:
        raise CgroupError(path, None, f"cannot read mount table: {exc.strerror}") from None
    mounts = parse_mountinfo(text)
    if not mounts:
        raise CgroupError(path, None, "no cgroup hierarchy is mounted")
    return Hierarchies(mounts, root)
