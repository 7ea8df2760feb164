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
import math
import os
import signal
import time
from typing import NamedTuple

from procview.cgroups import Cgroup, Hierarchies
from procview.columns import Columns
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


_NO_PIDFD = -1


def _namespace_inode(link: str | None) -> int | None:
    """The inode number a namespace link names (``pid:[4026531836]``:
    4026531836), None for no link or another text."""
    try:
        return int(link[link.index("[") + 1:-1])
    except (AttributeError, ValueError):  # None, or not a namespace's link
        return None


def _open_pidfd(pid: int) -> int:
    try:
        return os.pidfd_open(pid)
    except (OSError, AttributeError):
        return _NO_PIDFD


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
        self.own_pidns = _namespace_inode(host.readlink("/proc/self/ns/pid"))
        # pid namespace -> its init and the init's cgroup: a container's
        # init moves between cgroups only if someone moves it, so its
        # cgroup is read again at most every CGROUP_TTL seconds, not on
        # every request. One slot per namespace in columns
        # (procview/columns.py), not a record object per container.
        self._inits = Columns(
            pid=("q", 0),
            start=("q", 0),  # the init's start time
            level=("i", 0),  # its pid namespace's depth
            pidfd=("i", _NO_PIDFD),  # on a real machine: proves the init is still that process
            cgroup_read=("d", -math.inf),  # when ``cgroup`` was read (time.monotonic)
            cgroup=(None, None),  # the cgroup whose limits apply (init.scope stripped)
            key=(None, None),  # container_key(cgroup, start)
        )

    def pid_namespace(self, pid: int) -> int | None:
        """``pid``'s pid namespace: the inode number its link names
        (``pid:[4026531836]``), None if it is gone. The number, not the
        link's text: a namespace is a key per container kept (32 bytes
        against 65), for ~0.1 µs a read."""
        return _namespace_inode(self.host.readlink(f"/proc/{pid}/ns/pid"))

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
        slot = self._init_slot(pid, pidns)
        if slot < 0:
            return None
        inits = self._inits
        now = time.monotonic()
        if now - inits.cgroup_read[slot] >= CGROUP_TTL:
            cgroup = self.hierarchies.cgroup_of(inits.pid[slot])
            if cgroup is None:
                return None
            cgroup = limits_cgroup(cgroup)
            # Unchanged, as nearly always: go on handing out the same
            # cgroup and key. The engine's tables (stat history, load
            # averages, limits) each keep the key they were first given, so
            # a new, equal cgroup at every re-read would keep another copy
            # of its path strings alive per table.
            if inits.cgroup[slot] != cgroup:
                inits.cgroup[slot], inits.key[slot] = cgroup, container_key(cgroup, inits.start[slot])
            inits.cgroup_read[slot] = now
        return Container(inits.cgroup[slot], pid, inits.pid[slot], inits.start[slot], False, inits.level[slot], inits.key[slot])

    # -- finding the pid-namespace init --------------------------------------

    def _init_slot(self, pid: int, pidns: int) -> int:
        """The slot of ``pidns``'s init in ``_inits`` (found now if not
        known, or no longer running), -1 if it cannot be found."""
        inits = self._inits
        slot = inits.slot(pidns)
        if slot >= 0:
            if self._still_init(slot, pidns):
                return slot
            self._forget(pidns)
        found = self._walk_to_init(pid, pidns) or self._scan_for_init(pidns)
        if found is None:
            return -1
        init_pid, start, level = found
        if len(inits) >= _MAX_CACHED_NAMESPACES:
            for namespace in list(inits):
                self._forget(namespace)
        pidfd = _NO_PIDFD
        if self.host.root == "/":
            pidfd = _open_pidfd(init_pid)
            # The pidfd is opened after the start time was read: check that
            # it is still the same process before trusting it.
            if pidfd != _NO_PIDFD and self.start_time(init_pid) != start:
                os.close(pidfd)
                return -1
        slot = inits.add(pidns)
        inits.pid[slot], inits.start[slot], inits.level[slot], inits.pidfd[slot] = init_pid, start, level, pidfd
        return slot

    def _forget(self, pidns: int) -> None:
        slot = self._inits.slot(pidns)
        if slot >= 0:
            if self._inits.pidfd[slot] != _NO_PIDFD:
                os.close(self._inits.pidfd[slot])
            self._inits.remove(pidns)

    def forget_exited_inits(self) -> int:
        """Drop the namespaces whose init has exited, closing their pidfds
        (each pins the dead process's pid), so neither fds nor entries grow
        with containers that came and went; returns how many."""
        exited = [pidns for pidns, slot in self._inits.items() if not self._still_init(slot, pidns)]
        for pidns in exited:
            self._forget(pidns)
        self._inits.drop_spare_room()  # the room a burst of containers left
        return len(exited)

    def start_time(self, pid: int) -> int | None:
        """Process ``pid``'s start time (clock ticks after boot), None if gone."""
        text = self.host.read(f"/proc/{pid}/stat")
        parsed = parse_proc_pid_stat(text) if text else None
        return parsed.starttime if parsed else None

    def _still_init(self, slot: int, pidns: int) -> bool:
        inits = self._inits
        if inits.pidfd[slot] != _NO_PIDFD:
            return _alive(inits.pidfd[slot])  # one syscall, no file to open
        # Same start time and same namespace: not a recycled pid.
        pid = inits.pid[slot]
        return self.start_time(pid) == inits.start[slot] and self.pid_namespace(pid) == pidns

    def _found(self, pid: int, nspid: tuple[int, ...]) -> tuple[int, int, int] | None:
        """(pid, start time, pid namespace level) of the init found."""
        start = self.start_time(pid)
        return None if start is None else (pid, start, len(nspid) - 1)

    def _walk_to_init(self, pid: int, pidns: int) -> tuple[int, int, int] | None:
        current = pid
        for _ in range(4096):  # a parent chain is never this long; guards a loop
            text = self.host.read(f"/proc/{current}/status")
            status = parse_proc_status(text) if text else None
            if status is None or not status.nspid:
                return None
            if status.nspid[-1] == 1:
                return self._found(current, status.nspid)
            parent = status.ppid
            if parent <= 0 or self.pid_namespace(parent) != pidns:
                return None  # joined with setns(): the chain leaves the namespace
            current = parent
        return None

    def _scan_for_init(self, pidns: int) -> tuple[int, int, int] | None:
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
                return self._found(int(entry), status.nspid)
        return None
