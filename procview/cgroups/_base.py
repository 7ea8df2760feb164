"""The Cgroup interface and what v1 and v2 share (paths, reads, writes)."""

from __future__ import annotations

import abc
import errno
import os
import time
from collections.abc import Iterator

from procview._io import read_text

from ._formats import parse_cpulist
from ._values import CpuQuota, CpuUsage, IoStat, MemoryLimits, MemoryStat, MemoryUsage


class CgroupError(Exception):
    """A cgroup could not be created, written or removed."""

    def __init__(self, path: str, value, reason: str):
        self.path = path
        self.value = value
        self.reason = reason
        where = path if value is None else f"{path} = {value!r}"
        super().__init__(f"{where}: {reason}")


class Cgroup(abc.ABC):
    """One cgroup, as the views read it and the runtime writes it.

    Read methods return None for "unknown" and never raise. Limits are
    *effective*: the minimum over this cgroup and every ancestor up to the
    root of the mounted hierarchy.
    """

    version: int

    # Slots, not an instance dict: the daemon keeps a cgroup per container,
    # and a dict of its own (~40 B more, in a block of its own) is one more
    # small object a burst of containers leaves in the arenas.
    __slots__ = ("hierarchies",)

    def __init__(self, hierarchies: "Hierarchies"):  # procview.cgroups.Hierarchies
        self.hierarchies = hierarchies

    # -- identity ---------------------------------------------------------

    @property
    @abc.abstractmethod
    def key(self) -> str | tuple:
        """Hashable identity: the cgroup's path (or on v1, where
        hierarchies can differ, its path in each)."""

    @property
    @abc.abstractmethod
    def path(self) -> str:
        """A display path (the memory controller's path on v1)."""

    def __eq__(self, other) -> bool:
        return isinstance(other, Cgroup) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"

    @abc.abstractmethod
    def with_path(self, transform) -> "Cgroup":
        """The same cgroup with each path passed through ``transform``
        (identity uses it to strip ``/init.scope``)."""

    @abc.abstractmethod
    def exists(self) -> bool:
        """Whether the cgroup directory exists (it can vanish mid-read)."""

    # -- reading ----------------------------------------------------------

    @abc.abstractmethod
    def memory_limits(self) -> MemoryLimits:
        """Effective memory and swap limits (swap alone)."""

    @abc.abstractmethod
    def limit_dirs(self) -> list[str]:
        """The directories ``memory_limits``, ``cpu_quota`` and ``cpuset``
        read (this cgroup's and its ancestors', per controller): a write to
        a file in one of them may change a limit."""

    @abc.abstractmethod
    def memory_usage(self, swap: bool = True) -> MemoryUsage:
        """RAM (and, with ``swap``, swap) in use by this cgroup, in bytes;
        None where unknown. Without ``swap`` one file fewer is read."""

    def ram_usage_counter(self):
        """The RAM usage file (``memory_usage(swap=False).memory``) kept
        open, as a ``CounterFile``, or None when it cannot be opened."""
        from procview._io import CounterFile

        path = self._ram_usage_path()
        if path is None:
            return None
        try:
            return CounterFile(path)
        except OSError:
            return None

    @abc.abstractmethod
    def _ram_usage_path(self) -> str | None:
        """The path of the file ``memory_usage`` reads RAM usage from."""

    def oom_kills(self) -> int | None:
        """How many processes the kernel's OOM killer has killed in this
        cgroup (v1 ``memory.oom_control``, v2 ``memory.events``
        ``oom_kill``); None where the kernel does not say."""
        return None

    @abc.abstractmethod
    def memory_stat(self) -> MemoryStat | None:
        ...

    @abc.abstractmethod
    def cpu_quota(self):
        """Effective CFS quota: the tightest ``CpuQuota`` over all levels,
        UNLIMITED, or None."""

    @abc.abstractmethod
    def cpuset(self) -> frozenset[int] | None:
        """CPUs this cgroup may run on (``cpuset.cpus``, else the effective
        set, else the nearest ancestor's)."""

    @abc.abstractmethod
    def cpu_usage(self) -> CpuUsage | None:
        ...

    def cpu_busy_ns(self) -> int | None:
        """CPU time used, user plus system, in ns (``cpu_usage``'s total;
        a hierarchy with a one-number counter reads that instead)."""
        usage = self.cpu_usage()
        return None if usage is None else usage.total.user_ns + usage.total.system_ns

    @abc.abstractmethod
    def io_stats(self) -> dict[tuple[int, int], IoStat] | None:
        ...

    @abc.abstractmethod
    def threads(self) -> list[int] | None:
        """Every thread id in this cgroup and its descendants."""

    @abc.abstractmethod
    def processes(self) -> list[int] | None:
        """Every process id in this cgroup and its descendants."""

    def task_count(self) -> int | None:
        """How many threads this cgroup and its descendants hold: the pids
        controller's ``pids.current`` where it is available (one small
        read), else the length of ``threads()``."""
        current = self._pids_current()
        if current is not None:
            return current
        threads = self.threads()
        return None if threads is None else len(threads)

    def _pids_current(self) -> int | None:
        return None

    # -- writing (the runtime) -------------------------------------------

    @abc.abstractmethod
    def create(self) -> None:
        """Create the cgroup (and missing parents) so processes can join it."""

    @abc.abstractmethod
    def remove(self) -> None:
        """Remove the cgroup and any child cgroups; it must hold no process."""

    def remove_if_empty(self) -> None:
        """Remove this cgroup only if it has no child cgroup and no process
        (CgroupError otherwise): for shared parents such as /procview."""
        for directory in self._own_dirs():
            if os.path.isdir(directory):
                _rmdir(directory)

    @abc.abstractmethod
    def _own_dirs(self) -> list[str]:
        """This cgroup's directories (one per v1 hierarchy, one on v2)."""

    @abc.abstractmethod
    def add_process(self, pid: int) -> None:
        ...

    def open_self_join(self) -> list[int] | None:
        """Files through which a single-threaded process can move *itself*
        here, cheaply (``join_self``), or None where the hierarchy has none
        (v2: moving a process is ``add_process``).

        Why: every write to a ``cgroup.procs`` takes the kernel's global
        ``cgroup_threadgroup_rwsem`` for writing, and the first such write
        after a quiet spell waits for an RCU grace period (7-22 ms on the
        development host). A v1 ``tasks`` write of "0" (the writing thread)
        moves one thread and skips that lock; for a process with one
        thread, such as a child right after fork, that moves the process.
        Open here, in the parent; the child writes after fork."""
        return None

    @staticmethod
    def join_self(files: list[int]) -> None:
        """Move the calling (single-threaded) process into the cgroup whose
        ``open_self_join`` gave ``files``, and close them. Raises CgroupError."""
        try:
            for fd in files:
                os.write(fd, b"0")
        except OSError as exc:
            raise CgroupError("tasks", "0", exc.strerror or str(exc)) from None
        finally:
            for fd in files:
                os.close(fd)

    @abc.abstractmethod
    def set_memory_limit(self, limit) -> None:
        """Bytes or UNLIMITED."""

    @abc.abstractmethod
    def set_swap_limit(self, limit) -> None:
        """Swap alone, in bytes, or UNLIMITED (v1 turns it into memory+swap)."""

    @abc.abstractmethod
    def set_cpu_quota(self, quota: "CpuQuota | object") -> None:
        """A CpuQuota or UNLIMITED."""

    @abc.abstractmethod
    def set_cpuset(self, cpus: frozenset[int]) -> None:
        ...

    @abc.abstractmethod
    def set_pids_limit(self, limit) -> None:
        """A number of tasks or UNLIMITED."""


# -- helpers shared by the backends ------------------------------------------


class HierarchyFiles:
    """Which of some candidate file names a hierarchy's cgroups have.

    Which interface files a cgroup has is the kernel's choice, the same in
    every cgroup of a hierarchy: v1 ``blkio`` has CFQ's ``blkio.io_*``
    before Linux 5.0, the throttle layer's always, BFQ's while the bfq
    module is loaded. Trying a name the kernel lacks costs a failed open
    (~11 µs, the path walk through kernfs) on every read, so the names
    are asked once of the hierarchy's top cgroup (never removed, unlike a
    container's, whose missing file may only mean it is gone) and asked
    again after ``RECHECK`` seconds, which a scheduler module loaded or
    unloaded meanwhile needs. (Only root-flagged files such as CFQ's
    ``weight`` differ between the top and the rest; no candidate is one.)"""

    RECHECK = 10.0

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        # (top directory, candidate names) -> (asked at, the names it has)
        self._present: dict[tuple[str, tuple[str, ...]], tuple[float, tuple[str, ...]]] = {}

    def present(self, top: str, names: tuple[str, ...]) -> tuple[str, ...]:
        """Those of ``names`` that the cgroups under ``top`` have, in order."""
        key = (top, names)
        now = self._clock()
        known = self._present.get(key)
        if known is None or now - known[0] >= self.RECHECK:
            known = self._present[key] = (now, tuple(name for name in names if os.path.exists(os.path.join(top, name))))
        return known[1]


def write_text(path: str, value: str) -> None:
    """Write one value to an existing cgroup file (never creates files)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    except OSError as exc:
        raise CgroupError(path, value, exc.strerror or str(exc)) from None
    try:
        os.write(fd, value.encode())
    except OSError as exc:
        raise CgroupError(path, value, exc.strerror or str(exc)) from None
    finally:
        os.close(fd)


def cgroup_dir(mountpoint: str, mount_root: str, path: str) -> str | None:
    """The directory of cgroup ``path`` inside a hierarchy mounted at
    ``mountpoint`` whose root cgroup is ``mount_root``; None when the cgroup
    lies outside what the mount can reach."""
    mount_root = mount_root.rstrip("/")
    if mount_root and path != mount_root and not path.startswith(mount_root + "/"):
        return None
    rel = path[len(mount_root):].lstrip("/")
    return os.path.join(mountpoint, rel) if rel else mountpoint


class CgroupTree:
    """The directory tree of one mounted hierarchy, as this machine's paths
    reach it: where the directory of each of its cgroups is.

    A cgroup keeps only its path (a string it shares) and names a file of
    its own by (tree, path, file name); the directory string is made when
    a file must be opened (``directory``), not kept per cgroup. A daemon
    tracks a cgroup per container, and every small object a burst of a
    thousand of them keeps can pin one of Python's 1 MiB arenas after the
    burst is gone. Hashed by identity: ``Hierarchies`` makes one per mount
    (controllers mounted together share it), and ``KeptFiles`` tells a
    cgroup's files in one hierarchy from its files in another by it."""

    __slots__ = ("mountpoint", "root")

    def __init__(self, mountpoint: str, root: str):
        self.mountpoint = mountpoint  # under the Hierarchies' root (a fixture tree in tests)
        self.root = root  # the cgroup that is the mount's root

    def directory(self, path: str) -> str | None:
        """The directory of cgroup ``path``, None when the mount does not
        reach it (``cgroup_dir``)."""
        return cgroup_dir(self.mountpoint, self.root, path)

    def __repr__(self) -> str:
        return f"CgroupTree({self.mountpoint!r}, root={self.root!r})"


def levels(directory: str, mountpoint: str) -> Iterator[str]:
    """``directory`` and each parent directory up to ``mountpoint``."""
    mountpoint = mountpoint.rstrip("/") or "/"
    current = directory.rstrip("/") or "/"
    while True:
        yield current
        if current == mountpoint or len(current) <= len(mountpoint):
            return
        current = os.path.dirname(current)


def read_cgroup_file(tree: CgroupTree, path: str, name: str) -> str | None:
    """The text of file ``name`` of cgroup ``path`` in ``tree``, or None;
    read afresh by its path (``KeptFiles.read_in`` is the same read from
    a file kept open)."""
    directory = tree.directory(path)
    return None if directory is None else read_text(os.path.join(directory, name))


def read_id_lists(tree: CgroupTree, path: str, filename: str, read=read_cgroup_file) -> list[int] | None:
    """Ids listed in ``filename`` of cgroup ``path`` and of every cgroup
    below it (``read(tree, path, name)``: ``read_cgroup_file`` or a
    kept-files reader)."""
    ids: list[int] = []
    found_any = False
    for cgroup_path in _with_descendants(tree, path):
        text = read(tree, cgroup_path, filename)
        if text is None:
            continue
        found_any = True
        for line in text.split():
            try:
                ids.append(int(line))
            except ValueError:
                continue
    return ids if found_any else None


def _with_descendants(tree: CgroupTree, path: str) -> Iterator[str]:
    """Cgroup ``path`` and the path of every cgroup below it, parents
    first (none when ``tree`` does not reach it).

    A cgroup directory's link count is 2 plus its number of child cgroups
    (kernfs keeps it so, on cgroupfs and cgroup2 alike), so a cgroup
    without children, the usual container, costs one stat() instead of a
    listing of its thirty-odd files. (A file system that does not count
    links this way, btrfs says 1 for every directory, gets listed.)"""
    directory = tree.directory(path)
    if directory is None:
        return
    yield path
    try:
        if os.stat(directory).st_nlink == 2:
            return
        names = [entry.name for entry in os.scandir(directory) if entry.is_dir(follow_symlinks=False)]
    except OSError:
        return  # removed meanwhile
    parent = path.rstrip("/")
    for name in names:
        yield from _with_descendants(tree, f"{parent}/{name}")


def remove_tree(directory: str) -> None:
    """rmdir a cgroup and its children, deepest first."""
    if not os.path.isdir(directory):
        return
    for dirpath, dirnames, _files in os.walk(directory, topdown=False):
        for name in dirnames:
            _rmdir(os.path.join(dirpath, name))
    _rmdir(directory)


def _rmdir(path: str) -> None:
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise CgroupError(path, None, "still has processes (EBUSY)") from None
        raise CgroupError(path, None, exc.strerror or str(exc)) from None


def effective_cpuset(dirs: Iterator[str], files: tuple[str, ...]) -> frozenset[int] | None:
    """The first non-empty cpu list found walking up through ``dirs``,
    trying each of ``files`` at each level (LXCFS ``get_cpuset_cpus``)."""
    for directory in dirs:
        for name in files:
            cpus = parse_cpulist(read_text(os.path.join(directory, name)))
            if cpus:
                return cpus
    return None


def tightest_quota(quotas) -> "CpuQuota | object | None":
    """The quota allowing the fewest CPUs; UNLIMITED if none is set."""
    from ._values import UNLIMITED

    best = None
    for quota in quotas:
        if quota is None:
            continue
        if quota is UNLIMITED:
            if best is None:
                best = UNLIMITED
            continue
        if best is None or best is UNLIMITED or quota.cpus < best.cpus:
            best = quota
    return best
