"""Who is asking: caller pid -> the container it belongs to.

A container is judged by the cgroup of its pid-namespace *init* (LXCFS
semantics): every process of a container sees the same limits, even one
that was moved into a child cgroup of the container. A trailing
``/init.scope`` is stripped, because a systemd container keeps its PID 1 in
``<container>/init.scope`` while the limits are on ``<container>``. A caller
in the host's own pid namespace is judged by its own cgroup.

The init is found without forking (LXCFS forks a child that setns()es and
sends SCM_CREDENTIALS): walk the caller's parent chain while it stays in the
caller's pid namespace until a process whose innermost ``NSpid`` is 1. A
process that joined the namespace with setns() (``docker exec``) has a
parent outside it; then every process is scanned once for the namespace's
pid 1. The answer is cached per pid-namespace inode and re-checked on every
use against the init's start time, so a reused pid is never trusted. The
init's cgroup is re-read at most once a second (``CGROUP_TTL``): a
container's init changes cgroup only when an administrator moves it.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import NamedTuple

from procview.cgroups import Cgroup, Hierarchies
from procview.host import HostFiles, parse_proc_pid_stat, parse_proc_status

log = logging.getLogger(__name__)

INIT_SCOPE = "/init.scope"

# Bound the cache; a host with more live pid namespaces than this just pays
# the (cheap) parent walk again.
_MAX_CACHED_NAMESPACES = 8192
CGROUP_TTL = 1.0  # seconds a container init's cgroup is trusted without re-reading


class Container(NamedTuple):
    """The container a caller belongs to.

    ``cgroup``: the cgroup whose limits apply (``/init.scope`` stripped).
    ``init_pid``: host pid of the pid-namespace init (the caller itself
    for a caller in the host pid namespace). ``init_start``: its start time
    in clock ticks after boot, None in the host pid namespace (the
    "container" then started at boot). ``pidns_level``: index into a task's
    ``NSpid`` of the container's own pid (0 on the host). ``key``: what
    per-container state is kept under (``container_key``); while the
    container's cgroup does not change, every request is handed the same
    key object.
    """

    cgroup: Cgroup
    caller_pid: int
    init_pid: int
    init_start: int | None
    host_pidns: bool
    pidns_level: int
    key: tuple


def container_key(cgroup: Cgroup, init_start: int | None) -> tuple:
    """Identity for per-container state (stat history, load averages):
    the cgroup and the init's start, so a new container in a reused cgroup
    starts afresh."""
    return (cgroup.key, init_start)


def strip_init_scope(path: str) -> str:
    if path.endswith(INIT_SCOPE):
        return path[: -len(INIT_SCOPE)] or "/"
    return path


def limits_cgroup(cgroup: Cgroup) -> Cgroup:
    """The cgroup whose limits apply to a process of ``cgroup``: a trailing
    ``/init.scope`` stripped. On cgroup v1 each hierarchy's path is a string
    of its own, nearly always all equal: one string is kept for each
    distinct path (a daemon keeps a cgroup per container it serves)."""
    distinct: dict[str, str] = {}

    def shared(path: str) -> str:
        path = strip_init_scope(path)
        return distinct.setdefault(path, path)

    return cgroup.with_path(shared)


class _InitRecord(NamedTuple):
    pid: int
    start: int
    level: int
    pidfd: int | None = None  # on a real machine: proves the init is still that process


def _open_pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (OSError, AttributeError):
        return None


def _alive(pidfd: int) -> bool:
    """Whether the process behind ``pidfd`` still runs (pidfds never
    follow a reused pid: a dead init's pidfd stays dead)."""
    try:
        signal.pidfd_send_signal(pidfd, 0)
        return True
    except ProcessLookupError:
        return False
    except OSError:
        return False


class Identity:
    """Resolves callers to containers, caching per pid namespace."""

    def __init__(self, hierarchies: Hierarchies, host: HostFiles):
        self.hierarchies = hierarchies
        self.host = host
        self.own_pidns = host.readlink("/proc/self/ns/pid")
        self._inits: dict[str, _InitRecord] = {}
        # pidns -> (when read, the init's cgroup): a container's init moves
        # between cgroups only if someone moves it, so its cgroup is read
        # again at most every CGROUP_TTL seconds, not on every request.
        self._cgroups: dict[str, tuple[float, Cgroup, tuple]] = {}  # + the container's key

    def pid_namespace(self, pid: int) -> str | None:
        return self.host.readlink(f"/proc/{pid}/ns/pid")

    def container_of(self, pid: int) -> Container | None:
        """The caller's container, or None if the caller is gone (or its
        cgroup cannot be read): the engine then serves the host's file."""
        pidns = self.pid_namespace(pid)
        if pidns is None:
            return None
        if pidns == self.own_pidns:
            cgroup = self.hierarchies.cgroup_of(pid)
            if cgroup is None:
                return None
            cgroup = limits_cgroup(cgroup)
            return Container(cgroup, pid, pid, None, True, 0, container_key(cgroup, None))
        init = self._init_of(pid, pidns)
        if init is None:
            return None
        now = time.monotonic()
        cached = self._cgroups.get(pidns)
        if cached is None or now - cached[0] >= CGROUP_TTL:
            cgroup = self.hierarchies.cgroup_of(init.pid)
            if cgroup is None:
                return None
            cgroup = limits_cgroup(cgroup)
            if cached is not None and cached[1] == cgroup and cached[2][1] == init.start:
                # Unchanged, as nearly always: go on handing out the same
                # cgroup and key. The engine's tables (stat history, load
                # averages, limits) each keep the key they were first given,
                # so a new, equal cgroup at every re-read would keep another
                # copy of its path strings alive per table.
                cached = self._cgroups[pidns] = (now, cached[1], cached[2])
            else:
                cached = self._cgroups[pidns] = (now, cgroup, container_key(cgroup, init.start))
        return Container(cached[1], pid, init.pid, init.start, False, init.level, cached[2])

    # -- finding the pid-namespace init --------------------------------------

    def _init_of(self, pid: int, pidns: str) -> _InitRecord | None:
        cached = self._inits.get(pidns)
        if cached is not None:
            if self._still_init(cached, pidns):
                return cached
            self._forget(pidns)
        record = self._walk_to_init(pid, pidns) or self._scan_for_init(pidns)
        if record is None:
            return None
        if len(self._inits) >= _MAX_CACHED_NAMESPACES:
            for namespace in list(self._inits):
                self._forget(namespace)
        if self.host.root == "/":
            pidfd = _open_pidfd(record.pid)
            # The pidfd is opened after the start time was read: check that
            # it is still the same process before trusting it.
            if pidfd is not None and self.start_time(record.pid) != record.start:
                os.close(pidfd)
                return None
            record = record._replace(pidfd=pidfd)
        self._inits[pidns] = record
        return record

    def _forget(self, pidns: str) -> None:
        self._cgroups.pop(pidns, None)
        record = self._inits.pop(pidns, None)
        if record is not None and record.pidfd is not None:
            os.close(record.pidfd)

    def forget_exited_inits(self) -> int:
        """Drop the namespaces whose init has exited, closing their pidfds
        (each pins the dead process's pid), so neither fds nor entries grow
        with containers that came and went; returns how many."""
        exited = [pidns for pidns, record in self._inits.items() if not self._still_init(record, pidns)]
        for pidns in exited:
            self._forget(pidns)
        return len(exited)

    def start_time(self, pid: int) -> int | None:
        """Process ``pid``'s start time (clock ticks after boot), None if gone."""
        text = self.host.read(f"/proc/{pid}/stat")
        parsed = parse_proc_pid_stat(text) if text else None
        return parsed.starttime if parsed else None

    def _still_init(self, record: _InitRecord, pidns: str) -> bool:
        if record.pidfd is not None:
            return _alive(record.pidfd)  # one syscall, no file to open
        # Same start time and same namespace: not a recycled pid.
        return self.start_time(record.pid) == record.start and self.pid_namespace(record.pid) == pidns

    def _record(self, pid: int, nspid: tuple[int, ...]) -> _InitRecord | None:
        start = self.start_time(pid)
        return None if start is None else _InitRecord(pid, start, len(nspid) - 1)

    def _walk_to_init(self, pid: int, pidns: str) -> _InitRecord | None:
        current = pid
        for _ in range(4096):  # a parent chain is never this long; guards a loop
            text = self.host.read(f"/proc/{current}/status")
            status = parse_proc_status(text) if text else None
            if status is None or not status.nspid:
                return None
            if status.nspid[-1] == 1:
                return self._record(current, status.nspid)
            parent = status.ppid
            if parent <= 0 or self.pid_namespace(parent) != pidns:
                return None  # joined with setns(): the chain leaves the namespace
            current = parent
        return None

    def _scan_for_init(self, pidns: str) -> _InitRecord | None:
        log.debug("scanning processes for the init of %s", pidns)
        try:
            entries = os.listdir(self.host.path("/proc"))
        except OSError:
            return None
        for entry in entries:
            if not entry.isdigit() or self.pid_namespace(int(entry)) != pidns:
                continue
            text = self.host.read(f"/proc/{entry}/status")
            status = parse_proc_status(text) if text else None
            if status is not None and status.nspid and status.nspid[-1] == 1:
                return self._record(int(entry), status.nspid)
        return None
