"""cgroup v2 backend: the unified hierarchy.

v2 facts this module hides from the views:
- ``memory.swap.max`` is swap alone (no conversion needed, unlike v1).
- ``memory.stat`` keys are hierarchical already and include slab, kernel
  stack and page tables, which v1 lacks.
- ``cpu.stat`` has only totals: no per-CPU split.
- a controller works in a child only once the parent lists it in
  ``cgroup.subtree_control``.
"""

from __future__ import annotations

import os

from ._base import (
    Cgroup,
    CgroupError,
    effective_cpuset,
    levels,
    read_id_lists,
    read_text,
    remove_tree,
    tightest_quota,
    write_text,
)
from ._formats import (
    FlatKeyedSelection,
    format_cpulist,
    parse_cpu_max,
    parse_flat_keyed,
    parse_nested_keyed,
    parse_single_value,
)
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

# The controllers the runtime needs enabled for its containers.
MANAGED_CONTROLLERS = ("cpu", "cpuset", "memory", "pids", "io")

# memory.stat: v2's keys are MemoryStat's field names.
_MEMORY_STAT = FlatKeyedSelection({field: field for field in MemoryStat._fields})


class CgroupV2(Cgroup):
    version = 2
    __slots__ = ("_path",)

    def __init__(self, hierarchies, path: str):
        super().__init__(hierarchies)
        # The cgroup keeps its path only: a counter is read by (tree, path,
        # file name), and ``KeptFiles`` files the ones it keeps open under
        # this same string; the directory is made when a file must be
        # opened (and for the limits' reads, once a second), then dropped.
        # A directory string kept per cgroup would be ~95 B more per
        # container, in the small objects a burst leaves behind.
        self._path = path or "/"

    @property
    def key(self) -> str:
        return self._path

    @property
    def path(self) -> str:
        return self._path

    def with_path(self, transform) -> "CgroupV2":
        return CgroupV2(self.hierarchies, transform(self._path))

    def _dir(self) -> str | None:
        """The cgroup's directory, made anew at each call (never kept: see
        ``__init__``)."""
        tree = self.hierarchies.v2_tree
        return None if tree is None else tree.directory(self._path)

    def _levels(self):
        directory = self._dir()
        # A removed cgroup has no limits; its parent's must not stand in.
        if directory is None or not os.path.isdir(directory):
            return iter(())
        return levels(directory, self.hierarchies.host_path(self.hierarchies.v2.mountpoint))

    def limit_dirs(self) -> list[str]:
        return list(self._levels())

    def _read(self, name: str) -> str | None:
        """A counter file's text (kept open by the view engine), by the
        hierarchy, the cgroup's own path string and the file's name."""
        tree = self.hierarchies.v2_tree
        return None if tree is None else self.hierarchies.read_cgroup_file(tree, self._path, name)

    def exists(self) -> bool:
        directory = self._dir()
        return directory is not None and os.path.isdir(directory)

    # -- memory -----------------------------------------------------------

    def _min_over_levels(self, name: str):
        return min_limit(parse_single_value(read_text(os.path.join(d, name))) for d in self._levels())

    def memory_limits(self) -> MemoryLimits:
        memory = self._min_over_levels("memory.max")
        swap = self._min_over_levels("memory.swap.max") if self._read("memory.swap.current") is not None else None
        return MemoryLimits(memory, swap)

    def _ram_usage_path(self) -> str | None:
        directory = self._dir()
        return None if directory is None else os.path.join(directory, "memory.current")

    def memory_usage(self, swap: bool = True) -> MemoryUsage:
        memory = parse_single_value(self._read("memory.current"))
        if not swap:
            return MemoryUsage(memory if isinstance(memory, int) else None, None)
        swap = parse_single_value(self._read("memory.swap.current"))
        return MemoryUsage(memory if isinstance(memory, int) else None, swap if isinstance(swap, int) else None)

    def oom_kills(self) -> int | None:
        return (parse_flat_keyed(self._read("memory.events")) or {}).get("oom_kill")

    def memory_stat(self) -> MemoryStat | None:
        fields = _MEMORY_STAT.parse(self._read("memory.stat"))
        return MemoryStat(**fields) if fields else None

    # -- cpu --------------------------------------------------------------

    def cpu_quota(self):
        quotas = []
        for directory in self._levels():
            parsed = parse_cpu_max(read_text(os.path.join(directory, "cpu.max")))
            if parsed is None:
                continue
            quota, period = parsed
            quotas.append(UNLIMITED if quota is UNLIMITED else CpuQuota(quota, period))
        return tightest_quota(quotas)

    def cpuset(self) -> frozenset[int] | None:
        return effective_cpuset(self._levels(), ("cpuset.cpus", "cpuset.cpus.effective"))

    def cpu_usage(self) -> CpuUsage | None:
        stat = parse_flat_keyed(self._read("cpu.stat"))
        if not stat or "user_usec" not in stat or "system_usec" not in stat:
            return None
        return CpuUsage(CpuTimes(stat["user_usec"] * 1000, stat["system_usec"] * 1000), None)

    # -- io ---------------------------------------------------------------

    def io_stats(self):
        parsed = parse_nested_keyed(self._read("io.stat"))
        if parsed is None:
            return None
        result = {}
        for device, fields in parsed.items():
            major, sep, minor = device.partition(":")
            try:
                key = (int(major), int(minor))
                values = {k: int(v) for k, v in fields.items()}
            except ValueError:
                continue
            result[key] = IoStat(
                read_ios=values.get("rios", 0),
                write_ios=values.get("wios", 0),
                discard_ios=values.get("dios", 0),
                read_bytes=values.get("rbytes", 0),
                write_bytes=values.get("wbytes", 0),
                discard_bytes=values.get("dbytes", 0),
            )
        return result

    # -- tasks ------------------------------------------------------------

    def _pids_current(self) -> int | None:
        value = parse_single_value(self._read("pids.current"))
        return value if isinstance(value, int) else None

    def threads(self) -> list[int] | None:
        tree = self.hierarchies.v2_tree
        return None if tree is None else read_id_lists(tree, self._path, "cgroup.threads", self.hierarchies.read_cgroup_file)

    def processes(self) -> list[int] | None:
        tree = self.hierarchies.v2_tree
        return None if tree is None else read_id_lists(tree, self._path, "cgroup.procs")

    # -- writing ----------------------------------------------------------

    def create(self) -> None:
        directory = self._dir()
        if directory is None:
            raise CgroupError(self._path, None, "no cgroup2 hierarchy is mounted")
        mountpoint = self.hierarchies.host_path(self.hierarchies.v2.mountpoint)
        # Enable the controllers from the top down, creating what is missing.
        chain = list(levels(directory, mountpoint))[::-1]
        for parent, child in zip(chain, chain[1:]):
            self._enable_controllers(parent)
            try:
                os.makedirs(child, exist_ok=True)
            except OSError as exc:
                raise CgroupError(child, None, exc.strerror or str(exc)) from None

    @staticmethod
    def _enable_controllers(directory: str) -> None:
        available = set((read_text(os.path.join(directory, "cgroup.controllers")) or "").split())
        enabled = set((read_text(os.path.join(directory, "cgroup.subtree_control")) or "").split())
        wanted = [c for c in MANAGED_CONTROLLERS if c in available and c not in enabled]
        if wanted:
            write_text(os.path.join(directory, "cgroup.subtree_control"), " ".join("+" + c for c in wanted))

    def _own_dirs(self) -> list[str]:
        directory = self._dir()
        return [] if directory is None else [directory]

    def remove(self) -> None:
        directory = self._dir()
        if directory is not None:
            remove_tree(directory)

    def add_process(self, pid: int) -> None:
        self._write("cgroup.procs", str(pid))

    def _write(self, name: str, value: str) -> None:
        directory = self._dir()
        if directory is None:
            raise CgroupError(name, value, "no cgroup2 hierarchy is mounted")
        write_text(os.path.join(directory, name), value)

    def set_memory_limit(self, limit) -> None:
        self._write("memory.max", "max" if limit is UNLIMITED else str(int(limit)))

    def set_swap_limit(self, limit) -> None:
        self._write("memory.swap.max", "max" if limit is UNLIMITED else str(int(limit)))

    def set_cpu_quota(self, quota) -> None:
        if quota is UNLIMITED:
            self._write("cpu.max", "max")
        else:
            self._write("cpu.max", f"{quota.quota_us} {quota.period_us}")

    def set_cpuset(self, cpus: frozenset[int]) -> None:
        self._write("cpuset.cpus", format_cpulist(cpus))

    def set_pids_limit(self, limit) -> None:
        self._write("pids.max", "max" if limit is UNLIMITED else str(int(limit)))
