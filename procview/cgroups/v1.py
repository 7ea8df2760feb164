"""cgroup v1 backend: one hierarchy per controller (also used on hybrid hosts).

v1 facts this module hides from the views:
- ``memory.memsw.*`` counts memory *plus* swap; the interface speaks of swap
  alone, so the conversion happens here (and only here).
- statistics are hierarchical only under the ``total_*`` keys of
  ``memory.stat``.
- "unlimited" is ``-1`` or PAGE_COUNTER_MAX rounded to a page
  (9223372036854771712); ``_formats.parse_single_value`` folds both.
- a new cpuset cgroup starts with empty ``cpus`` and ``mems`` and cannot
  take a process until both are set.
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
    parse_blkio_recursive,
    parse_cpuacct_usage_all,
    parse_flat_keyed,
    parse_percpu,
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

# The controllers the runtime creates cgroups in. Named hierarchies
# (name=systemd) belong to the init system and are left alone.
MANAGED_CONTROLLERS = ("memory", "cpu", "cpuacct", "cpuset", "pids", "blkio", "devices", "freezer")

# memory.stat total_* key -> MemoryStat field.
_MEMORY_STAT_KEYS = {
    "total_rss": "anon",
    "total_cache": "file",
    "total_shmem": "shmem",
    "total_mapped_file": "file_mapped",
    "total_dirty": "file_dirty",
    "total_writeback": "file_writeback",
    "total_active_anon": "active_anon",
    "total_inactive_anon": "inactive_anon",
    "total_active_file": "active_file",
    "total_inactive_file": "inactive_file",
    "total_unevictable": "unevictable",
    "total_rss_huge": "anon_thp",
    "total_swapcached": "swapcached",
}
_MEMORY_STAT = FlatKeyedSelection(_MEMORY_STAT_KEYS)

# Block I/O counters: the first file that exists wins. The plain names are
# CFQ's (kernels before 5.0); blk-mq kernels keep the throttle layer's
# counters, which see every bio, and BFQ's when BFQ is the scheduler.
_BLKIO_SERVICED = ("blkio.io_serviced_recursive", "blkio.throttle.io_serviced_recursive", "blkio.bfq.io_serviced_recursive")
_BLKIO_BYTES = (
    "blkio.io_service_bytes_recursive",
    "blkio.throttle.io_service_bytes_recursive",
    "blkio.bfq.io_service_bytes_recursive",
)
_BLKIO_MERGED = ("blkio.io_merged_recursive", "blkio.bfq.io_merged_recursive")
_BLKIO_TIMES = (
    ("blkio.io_service_time_recursive", "blkio.bfq.io_service_time_recursive"),
    ("blkio.io_wait_time_recursive", "blkio.bfq.io_wait_time_recursive"),
)


class _OwnPath:
    """In a v1 cgroup's template of paths: "the cgroup's own path here"."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "_OWN"


_OWN = _OwnPath()
# Distinct templates kept (a host has a handful: one per runtime or slice
# that places cgroups alike); the table is emptied when full.
_TEMPLATES_MAX = 256


def _own_path(hierarchies, by_index: list[str | None]) -> str:
    """A v1 cgroup's own path, the one it is shown by: its path in the
    first of memory, cpu, cpuset and pids it has one in, else in any."""
    index = hierarchies.v1_index
    for controller in ("memory", "cpu", "cpuset", "pids"):
        if controller in index and (path := by_index[index[controller]]) is not None:
            return path
    return next((path for path in by_index if path is not None), "/")


class CgroupV1(Cgroup):
    version = 1
    __slots__ = ("_paths",)

    def __init__(self, hierarchies, paths: dict[str, str]):
        super().__init__(hierarchies)
        # The path in each hierarchy, in the order of ``hierarchies.v1``
        # (None where there is none). A daemon keeps a cgroup per container
        # it serves, and every small object a burst of them needs at once
        # can keep one of Python's 1 MiB arenas alive after; so a cgroup
        # keeps its own path (``path``) once, and where it is elsewhere in
        # a template that cgroups placed alike share (_OWN standing for the
        # own path: a runtime that makes its cgroups in some hierarchies
        # leaves every container at the same other paths in the rest).
        # When the own path is in every hierarchy (a runtime that names a
        # container's cgroup alike in all), the cgroup keeps that one string
        # alone. ``_path_at`` reads either; either is the cgroup's key.
        by_index = [paths.get(controller) for controller in hierarchies.v1]
        own = _own_path(hierarchies, by_index)
        template = tuple(_OWN if path == own else path for path in by_index)
        if all(path is _OWN for path in template):
            self._paths: str | tuple[str, tuple] = own
        else:
            templates = hierarchies.v1_templates
            if len(templates) >= _TEMPLATES_MAX:
                templates.clear()
            self._paths = (own, templates.setdefault(template, template))
        # No directory is kept: a counter is read by (tree, path, file
        # name), and ``KeptFiles`` files the ones it keeps open under that
        # same path string; a directory is made only when a file must be
        # opened (and for the limits' reads, once a second), then dropped.
        # A directory string per hierarchy would be ~95 B more per
        # container, in the small objects a burst leaves behind.

    # -- identity ---------------------------------------------------------

    @property
    def paths(self) -> dict[str, str]:
        """The cgroup's path in each hierarchy, by controller."""
        return {c: p for index, c in enumerate(self.hierarchies.v1) if (p := self._path_at(index)) is not None}

    @property
    def key(self) -> str | tuple[str | None, ...]:
        return self._paths

    def _path_at(self, index: int) -> str | None:
        """The cgroup's path in the hierarchy at ``index`` of ``hierarchies.v1``."""
        paths = self._paths
        if type(paths) is str:
            return paths
        own, template = paths
        path = template[index]
        return own if path is _OWN else path

    @property
    def path(self) -> str:
        paths = self._paths
        return paths if type(paths) is str else paths[0]

    def with_path(self, transform) -> "CgroupV1":
        return CgroupV1(self.hierarchies, {c: transform(p) for c, p in self.paths.items()})

    def _tree_and_path(self, controller: str):
        """``controller``'s hierarchy (its ``CgroupTree``) and this
        cgroup's path in it, or None where it has none."""
        index = self.hierarchies.v1_index.get(controller)
        if index is None or (path := self._path_at(index)) is None:
            return None
        return self.hierarchies.v1_trees[index], path

    def _dir(self, controller: str) -> str | None:
        """The cgroup's directory in ``controller``'s hierarchy, made anew
        at each call (never kept: see ``__init__``)."""
        found = self._tree_and_path(controller)
        return None if found is None else found[0].directory(found[1])

    def _levels(self, controller: str):
        directory = self._dir(controller)
        # A removed cgroup has no limits; its parent's must not stand in.
        if directory is None or not os.path.isdir(directory):
            return iter(())
        mountpoint = self.hierarchies.host_path(self.hierarchies.v1[controller].mountpoint)
        return levels(directory, mountpoint)

    def _limit_levels(self, controller: str):
        """The levels that can hold a limit: all but the hierarchy's root
        cgroup, which the kernel never limits (saves reads on every view)."""
        mount = self.hierarchies.v1.get(controller)
        top = self.hierarchies.host_path(mount.mountpoint).rstrip("/") if mount is not None and mount.root == "/" else None
        return (d for d in self._levels(controller) if d.rstrip("/") != top)

    def limit_dirs(self) -> list[str]:
        return [d for controller in ("memory", "cpu", "cpuset") for d in self._levels(controller)]

    def _read(self, controller: str, name: str) -> str | None:
        """A counter file's text (kept open by the view engine), by the
        hierarchy, the cgroup's own path string and the file's name.
        (``_tree_and_path`` and ``_path_at`` inline: the daemon's hottest
        read.)"""
        index = self.hierarchies.v1_index.get(controller)
        if index is None:
            return None
        paths = self._paths
        if type(paths) is str:
            path = paths
        elif (path := paths[1][index]) is _OWN:
            path = paths[0]
        elif path is None:
            return None
        return self.hierarchies.read_cgroup_file(self.hierarchies.v1_trees[index], path, name)

    def exists(self) -> bool:
        directory = self._dir("memory") or self._dir("cpu") or self._dir("cpuset")
        return directory is not None and os.path.isdir(directory)

    # -- memory -----------------------------------------------------------

    def _min_over_levels(self, controller: str, name: str):
        return min_limit(parse_single_value(read_text(os.path.join(d, name))) for d in self._limit_levels(controller))

    def memory_limits(self) -> MemoryLimits:
        memory = self._min_over_levels("memory", "memory.limit_in_bytes")
        memsw_texts = [read_text(os.path.join(d, "memory.memsw.limit_in_bytes")) for d in self._limit_levels("memory")]
        if not memsw_texts or memsw_texts[0] is None:
            return MemoryLimits(memory, None)  # no memsw file: no swap accounting (swapaccount=0)
        memsw = min_limit(parse_single_value(text) for text in memsw_texts)
        if not isinstance(memsw, int):
            return MemoryLimits(memory, memsw)
        # Every page counts against memory+swap, so memsw caps memory too;
        # what memory may not take of memsw is what swap can hold.
        if not isinstance(memory, int) or memsw < memory:
            memory = memsw
        return MemoryLimits(memory, memsw - memory)

    def _ram_usage_path(self) -> str | None:
        directory = self._dir("memory")
        return None if directory is None else os.path.join(directory, "memory.usage_in_bytes")

    def memory_usage(self, swap: bool = True) -> MemoryUsage:
        memory = parse_single_value(self._read("memory", "memory.usage_in_bytes"))
        memory = memory if isinstance(memory, int) else None
        if not swap:
            return MemoryUsage(memory, None)
        memsw = parse_single_value(self._read("memory", "memory.memsw.usage_in_bytes"))
        swap = max(0, memsw - memory) if isinstance(memsw, int) and memory is not None else None
        return MemoryUsage(memory, swap)

    def oom_kills(self) -> int | None:
        return (parse_flat_keyed(self._read("memory", "memory.oom_control")) or {}).get("oom_kill")

    def memory_stat(self) -> MemoryStat | None:
        fields = _MEMORY_STAT.parse(self._read("memory", "memory.stat"))
        if not fields:
            return None
        slab = _slabinfo_bytes(self._read("memory", "memory.kmem.slabinfo"))
        if slab is not None:
            # v1 does not say which slab caches are reclaimable: count all of
            # it as unreclaimable, so MemAvailable errs on the low side.
            fields["slab_unreclaimable"] = slab
            fields["slab_reclaimable"] = 0
        return MemoryStat(**fields)

    # -- cpu --------------------------------------------------------------

    def cpu_quota(self):
        quotas = []
        for directory in self._limit_levels("cpu"):
            quota = parse_single_value(read_text(os.path.join(directory, "cpu.cfs_quota_us")))
            period = parse_single_value(read_text(os.path.join(directory, "cpu.cfs_period_us")))
            if quota is UNLIMITED:
                quotas.append(UNLIMITED)
            elif isinstance(quota, int) and isinstance(period, int) and quota > 0 and period > 0:
                quotas.append(CpuQuota(quota, period))
        return tightest_quota(quotas)

    def cpuset(self) -> frozenset[int] | None:
        return effective_cpuset(self._levels("cpuset"), ("cpuset.cpus", "cpuset.effective_cpus"))

    def cpu_usage(self) -> CpuUsage | None:
        per_cpu_raw = parse_cpuacct_usage_all(self._read("cpuacct", "cpuacct.usage_all"))
        if per_cpu_raw is not None:
            per_cpu = {cpu: CpuTimes(u, s) for cpu, (u, s) in per_cpu_raw.items()}
        else:
            per_cpu = self._per_cpu_from_percpu()
        if per_cpu is not None:
            total = CpuTimes(sum(t.user_ns for t in per_cpu.values()), sum(t.system_ns for t in per_cpu.values()))
            return CpuUsage(total, per_cpu)
        usage = parse_single_value(self._read("cpuacct", "cpuacct.usage"))
        if not isinstance(usage, int):
            return None
        user_share = self._user_share()
        return CpuUsage(CpuTimes(int(usage * user_share), usage - int(usage * user_share)), None)

    def cpu_busy_ns(self) -> int | None:
        # cpuacct.usage is the sum of usage_all's user and system columns
        # (the same per-CPU counters), one number however many CPUs.
        usage = parse_single_value(self._read("cpuacct", "cpuacct.usage"))
        return usage if isinstance(usage, int) else super().cpu_busy_ns()

    def _user_share(self) -> float:
        # cpuacct.stat splits user/system in ticks; use it to split totals.
        stat = parse_flat_keyed(self._read("cpuacct", "cpuacct.stat")) or {}
        user, system = stat.get("user", 0), stat.get("system", 0)
        return user / (user + system) if user + system > 0 else 1.0

    def _per_cpu_from_percpu(self) -> dict[int, CpuTimes] | None:
        # Older kernels lack usage_all: usage_percpu has one total per CPU.
        values = parse_percpu(self._read("cpuacct", "cpuacct.usage_percpu"))
        if values is None:
            return None
        share = self._user_share()
        return {cpu: CpuTimes(int(v * share), v - int(v * share)) for cpu, v in enumerate(values)}

    # -- io ---------------------------------------------------------------

    def _blkio(self, tree, path: str, names: tuple[str, ...]):
        """The first of ``names`` this kernel has, parsed, or None. Only the
        names the hierarchy's top cgroup has are tried (``HierarchyFiles``):
        a kernel lacks most of them, and a failed open costs more than a
        read of a kept file."""
        for name in self.hierarchies.files.present(tree.mountpoint, names):
            parsed = parse_blkio_recursive(self.hierarchies.read_cgroup_file(tree, path, name))
            if parsed is not None:
                return parsed
        return None

    def io_stats(self):
        found = self._tree_and_path("blkio")
        if found is None:
            return None
        tree, path = found
        serviced = self._blkio(tree, path, _BLKIO_SERVICED)
        service_bytes = self._blkio(tree, path, _BLKIO_BYTES)
        if serviced is None and service_bytes is None:
            return None
        merged = self._blkio(tree, path, _BLKIO_MERGED) or {}
        service_time = self._blkio(tree, path, _BLKIO_TIMES[0]) or {}
        wait_time = self._blkio(tree, path, _BLKIO_TIMES[1]) or {}
        serviced = serviced or {}
        service_bytes = service_bytes or {}
        result = {}
        for device in set(serviced) | set(service_bytes):
            ios, nbytes, mrg = serviced.get(device, {}), service_bytes.get(device, {}), merged.get(device, {})
            st, wt = service_time.get(device, {}), wait_time.get(device, {})
            result[device] = IoStat(
                read_ios=ios.get("read", 0),
                write_ios=ios.get("write", 0),
                discard_ios=ios.get("discard", 0),
                read_bytes=nbytes.get("read", 0),
                write_bytes=nbytes.get("write", 0),
                discard_bytes=nbytes.get("discard", 0),
                read_merged=mrg.get("read", 0),
                write_merged=mrg.get("write", 0),
                discard_merged=mrg.get("discard", 0),
                read_ns=st.get("read", 0) + wt.get("read", 0),
                write_ns=st.get("write", 0) + wt.get("write", 0),
                discard_ns=st.get("discard", 0) + wt.get("discard", 0),
            )
        return result

    # -- tasks ------------------------------------------------------------

    def _task_tree_and_path(self):
        """The first hierarchy that reaches this cgroup, of those that list
        its tasks, and its path there; None if none does."""
        for controller in ("cpu", "cpuacct", "memory", "pids", "cpuset"):
            found = self._tree_and_path(controller)
            if found is not None and found[0].directory(found[1]) is not None:
                return found
        return None

    def _pids_current(self) -> int | None:
        value = parse_single_value(self._read("pids", "pids.current"))
        return value if isinstance(value, int) else None

    def threads(self) -> list[int] | None:
        # Read afresh by path, never kept open: v1 builds a pid list at the
        # first read after open and hands it to later reads of the same open
        # file until it has not been read for a second
        # (CGROUP_PIDLIST_DESTROY_DELAY), so a kept ``tasks`` file read more
        # often than that would never show a new thread.
        found = self._task_tree_and_path()
        return None if found is None else read_id_lists(*found, "tasks")

    def processes(self) -> list[int] | None:
        found = self._task_tree_and_path()
        return None if found is None else read_id_lists(*found, "cgroup.procs")

    # -- writing ----------------------------------------------------------

    def _managed_dirs(self):
        for controller in MANAGED_CONTROLLERS:
            directory = self._dir(controller)
            if directory is not None:
                yield controller, directory

    def create(self) -> None:
        for controller, directory in self._managed_dirs():
            mountpoint = self.hierarchies.host_path(self.hierarchies.v1[controller].mountpoint)
            # Top down, one level at a time: a new cpuset level must be
            # filled from its parent before a level below it can be.
            for level in reversed(list(levels(directory, mountpoint))):
                if os.path.isdir(level):
                    continue
                try:
                    os.mkdir(level)
                except FileExistsError:
                    pass
                except OSError as exc:
                    raise CgroupError(level, None, exc.strerror or str(exc)) from None
                if controller == "cpuset":
                    _inherit_cpuset(level)

    def _own_dirs(self) -> list[str]:
        return [directory for _controller, directory in self._managed_dirs()]

    def remove(self) -> None:
        for _controller, directory in self._managed_dirs():
            remove_tree(directory)

    def add_process(self, pid: int) -> None:
        for _controller, directory in self._managed_dirs():
            write_text(os.path.join(directory, "cgroup.procs"), str(pid))

    def open_self_join(self) -> list[int]:
        files = []
        try:
            for _controller, directory in self._managed_dirs():
                files.append(os.open(os.path.join(directory, "tasks"), os.O_WRONLY | os.O_CLOEXEC))
        except OSError as exc:
            for fd in files:
                os.close(fd)
            raise CgroupError(os.path.join(directory, "tasks"), None, exc.strerror or str(exc)) from None
        return files

    def _write(self, controller: str, name: str, value: str) -> None:
        directory = self._dir(controller)
        if directory is None:
            raise CgroupError(name, value, f"the {controller} controller is not mounted")
        write_text(os.path.join(directory, name), value)

    def set_memory_limit(self, limit) -> None:
        self._write("memory", "memory.limit_in_bytes", "-1" if limit is UNLIMITED else str(int(limit)))

    def set_swap_limit(self, limit) -> None:
        if self._read("memory", "memory.memsw.limit_in_bytes") is None:
            raise CgroupError("memory.memsw.limit_in_bytes", limit, "swap accounting is off on this kernel (swapaccount=0)")
        if limit is UNLIMITED:
            self._write("memory", "memory.memsw.limit_in_bytes", "-1")
            return
        memory = parse_single_value(self._read("memory", "memory.limit_in_bytes"))
        if not isinstance(memory, int):
            raise CgroupError("memory.memsw.limit_in_bytes", limit, "a swap limit needs a memory limit")
        self._write("memory", "memory.memsw.limit_in_bytes", str(memory + int(limit)))

    def set_cpu_quota(self, quota) -> None:
        if quota is UNLIMITED:
            self._write("cpu", "cpu.cfs_quota_us", "-1")
            return
        self._write("cpu", "cpu.cfs_period_us", str(quota.period_us))
        self._write("cpu", "cpu.cfs_quota_us", str(quota.quota_us))

    def set_cpuset(self, cpus: frozenset[int]) -> None:
        self._write("cpuset", "cpuset.cpus", format_cpulist(cpus))

    def set_pids_limit(self, limit) -> None:
        self._write("pids", "pids.max", "max" if limit is UNLIMITED else str(int(limit)))


def _inherit_cpuset(directory: str) -> None:
    """A new v1 cpuset has empty ``cpus`` and ``mems`` and refuses tasks
    until both are set; start it with its parent's (as cgroup.clone_children
    would)."""
    parent = os.path.dirname(directory)
    for name in ("cpuset.mems", "cpuset.cpus"):
        if (read_text(os.path.join(directory, name)) or "").strip():
            continue
        write_text(os.path.join(directory, name), (read_text(os.path.join(parent, name)) or "").strip())


def _slabinfo_bytes(text: str | None) -> int | None:
    """Sum of num_objs x objsize in a v1 ``memory.kmem.slabinfo``."""
    if not text or not text.startswith("slabinfo"):
        return None
    total = 0
    for line in text.splitlines():
        if line.startswith(("slabinfo", "#")):
            continue
        parts = line.split()
        if len(parts) < 4:
            continue
        try:
            total += int(parts[2]) * int(parts[3])
        except ValueError:
            continue
    return total
