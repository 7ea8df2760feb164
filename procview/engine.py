"""The view engine: (path, caller pid) -> the text that caller should see.

One request = one file for one caller:

1. ``Identity`` finds the caller's container (pid-namespace init -> cgroup).
2. A ``_Request`` gathers, lazily and at most once, the container's values
   the file needs: memory, the CPU view, CPU usage, time, tasks.
3. The file's pure renderer turns those values and the host's text into the
   container's text.

A caller on the host, a container with no limits at all, or any failure
gets the host's own file (a failure is logged once per kind). Nothing here
raises to the caller: the FUSE layer only ever gets bytes.
"""

from __future__ import annotations

import functools
import logging
import os
import math
import re
import time
from typing import Callable

from procview._io import KeptFiles, resized, return_free_heap
from procview.cgroups import UNLIMITED, Hierarchies, MemoryLimits, discover
from procview.columns import Columns
from procview.host import (
    HostFiles,
    MeminfoLayouts,
    MeminfoScan,
    parse_btime,
    parse_meminfo,
    parse_proc_pid_stat,
    parse_proc_status,
    parse_timens_boottime_offset,
    parse_uptime,
    replace_meminfo_values,
    scan_meminfo,
)
from procview.identity import Container, Identity
from procview.inotify import WriteWatch
from procview.views._inputs import ContainerMemory, ContainerTime, TaskCensus, ThreadStates
from procview.views.meminfo import kib, ram_fields, sysinfo_memory
from procview.views.cpuview import CpuView, compute_cpu_view

log = logging.getLogger(__name__)

USER_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

_NODE_MEMINFO = re.compile(r"^sys/devices/system/node/node(\d+)/meminfo$")


class SystemClock:
    """The clocks a view needs; tests pass a fake with the same methods."""

    @staticmethod
    def boottime() -> float:
        return time.clock_gettime(time.CLOCK_BOOTTIME)

    @staticmethod
    def realtime() -> float:
        return time.time()

    @staticmethod
    def monotonic() -> float:
        return time.monotonic()


class ViewEngine:
    """Renders procview's virtual files for any caller.

    ``root`` prefixes every host path (``/`` on a real machine, a fixture
    tree in tests). Per-container state (stat counters that must not go
    backwards, load averages) lives here, so one engine serves one mount.
    """

    # Virtual file path (relative to the mount) -> renderer method name.
    FILES: dict[str, str] = {
        "proc/meminfo": "_meminfo",
        "proc/cpuinfo": "_cpuinfo",
        "proc/stat": "_stat",
        "proc/uptime": "_uptime",
        "proc/loadavg": "_loadavg",
        "proc/swaps": "_swaps",
        "proc/diskstats": "_diskstats",
        "sys/devices/system/cpu/online": "_cpu_list",
        "sys/devices/system/cpu/possible": "_cpu_list",
        "sys/devices/system/cpu/present": "_cpu_list",
    }
    # Files a container's view is made without the host's text of: the
    # host's file is read only when it is served as it is (a caller with
    # no limit, or a failed render).
    RENDERED_WITHOUT_HOST_TEXT = frozenset({
        "proc/uptime", "proc/loadavg",
        "sys/devices/system/cpu/online", "sys/devices/system/cpu/possible", "sys/devices/system/cpu/present",
    })

    def __init__(self, root: str = "/", clock=None, hierarchies: Hierarchies | None = None):
        from procview.views.loadavg import LoadTracker
        from procview.views.stat import StatHistory

        self.host = HostFiles(root)
        self.hierarchies = hierarchies or discover(root)
        # The files every request reads again (the host's /proc file being
        # rendered, the container's counters) are kept open and re-read
        # with pread on a real machine; fixture trees are read by path, as
        # tests replace their files. Limits are kept until a write to their
        # cgroup directories (a real machine) or for LIMITS_TTL (fixtures,
        # whose tests control time with their clock).
        self._kept: KeptFiles | None = None
        self._limit_writes: WriteWatch | None = None
        if root == "/":
            self._kept = KeptFiles(_kept_files_limit())
            self.read_host_file = self._kept.read
            self.hierarchies.read_cgroup_file = self._kept.read_in
            try:
                self._limit_writes = WriteWatch()
            except OSError as exc:  # fs.inotify.max_user_instances reached
                log.warning("cannot watch cgroup directories (%s): a limit change shows within %.0f s", exc, self.LIMITS_TTL)
        else:
            self.read_host_file = self.host.read
        self.identity = Identity(self.hierarchies, self.host)
        self.clock = clock or SystemClock()
        self.own_timens = self.host.readlink("/proc/self/ns/time")
        self.stat_history = StatHistory()
        self.loads = LoadTracker()
        # What the engine keeps for each container, in columns at a slot
        # per container key (procview/columns.py: no object per container,
        # or a burst of them keeps the daemon's RSS up after it is gone).
        self._tracked = Columns(
            # When it was last read (``_saw``; _NEVER for a container whose
            # limits or census only were wanted: a caller with no limit),
            # and the Container that read found, field by field (its
            # cgroup is identity's; ``_last_seen`` makes the Container
            # again): the periodic maintenance samples its load and forgets
            # it when idle or gone.
            last_read=("d", _NEVER),
            cgroup=(None, None),
            caller_pid=("q", 0),
            init_pid=("q", 0),
            init_start=("q", _NO_START),
            host_pidns=("b", 0),
            pidns_level=("i", 0),
            # Its limits (``container_limits``): when they were read, the
            # memory and swap limits (``_limit_number``), the CPU view (one
            # object for equal views, ``shared_cpu_view``).
            limits_taken=("d", _NEVER),
            memory=("q", _UNKNOWN_LIMIT),
            swap=("q", _UNKNOWN_LIMIT),
            cpu_view=(None, None),
            # Its last census (``thread_states``): when it was taken, at
            # which pid namespace level, its ThreadStates field by field
            # (``_keep_states``), and each thread's pid in the container's
            # namespace as flat (thread id, start time, pid) triples
            # (``take_census``).
            census_taken=("d", _NEVER),
            census_level=("i", -1),
            census=(None, None),
            not_running=(None, ()),
            lone_not_running=("q", 0),
            not_running_states=(None, ""),
            census_pids=(None, ()),
        )
        self._warned: set[str] = set()
        # Failures, by kind: "render" (a renderer raised), "caller" (the
        # caller's container could not be found). Counted only where they
        # happen, so a render that succeeds pays nothing (procview serve
        # --metrics shows them).
        self.failures: dict[str, int] = {"render": 0, "caller": 0}
        self._boot_epoch: int | None = None
        self._host_facts: dict[str, tuple[float, object]] = {}
        self._sysinfo_answers: dict[tuple, tuple[float, object]] = {}
        self._callers: dict[int, tuple[float, tuple]] = {}
        self._timens_offsets: dict[str, tuple[float, float]] = {}
        self._ram_counters: dict[tuple, tuple[float, object]] = {}  # container key -> (opened, CounterFile)
        self._cpuinfo_renders: dict[tuple, str] = {}  # (host text, CPU view) -> text
        self._cpu_views: dict[CpuView, CpuView] = {}  # each distinct CPU view once (shared_cpu_view)
        self.meminfo_layouts = MeminfoLayouts()  # the host meminfo's layout: names and columns, never numbers
        self._task_censuses: dict[TaskCensus, TaskCensus] = {}  # each distinct count once (_shared_census)

    # -- public ---------------------------------------------------------------

    def is_virtual(self, path: str) -> bool:
        return path in self.FILES or _NODE_MEMINFO.match(path) is not None

    def render(self, path: str, pid: int) -> bytes:
        """The content of virtual file ``path`` as process ``pid`` sees it."""
        path = path.strip("/")
        match = _NODE_MEMINFO.match(path)
        method = "_node_meminfo" if match else self.FILES.get(path)
        if method is None:
            raise KeyError(path)
        host_path = "/" + path
        host_text = None if path in self.RENDERED_WITHOUT_HOST_TEXT else self.read_host_file(host_path)
        try:
            container = self.identity.container_of(pid)
            if container is None:  # gone, or its cgroup unreadable
                self.failures["caller"] += 1
                return self._host_content(path, host_text, pid)
            request = _Request(self, container, None if host_text is None else {host_path: host_text})
            if not request.is_limited():
                return self._host_content(path, host_text, pid)
            self._saw(container, request.now)
            renderer: Callable = getattr(self, method)
            if match:
                text = renderer(request, host_text or "", int(match.group(1)))
            else:
                text = renderer(request, host_text or "")
            return text.encode()
        except Exception:  # a view must never take the daemon down
            self.failures["render"] += 1
            self.warn_once(f"render:{path}", "rendering %s for pid %d failed; serving the host's file", path, pid, exc_info=True)
            return self._host_content(path, host_text, pid)

    def _saw(self, container: Container, now: float) -> None:
        """Note that ``container`` was read at ``now``."""
        tracked = self._tracked
        slot = tracked.slot_or_add(container.key)
        tracked.last_read[slot] = now
        tracked.cgroup[slot], tracked.caller_pid[slot], tracked.init_pid[slot] = container.cgroup, container.caller_pid, container.init_pid
        tracked.init_start[slot] = _NO_START if container.init_start is None else container.init_start
        tracked.host_pidns[slot], tracked.pidns_level[slot] = container.host_pidns, container.pidns_level

    def tracked_containers(self) -> int:
        """How many containers the engine keeps state for (read lately,
        with limits)."""
        last_read = self._tracked.last_read
        return sum(1 for _key, slot in self._tracked.items() if last_read[slot] != _NEVER)

    def sysinfo(self, pid: int):
        """What ``sysinfo(2)`` should tell thread ``pid`` (a SysinfoValues),
        or None when its container has no limit (the kernel's own answer is
        right then). The same numbers as its meminfo, loadavg and uptime."""
        now = self.clock.monotonic()
        caller = self._caller(pid, now)
        if caller is None:
            return None
        container, key = caller
        self._forget_limits_if_written()
        cached = self._sysinfo_answers.get(key)
        if cached is None or now - cached[0] >= self.SYSINFO_TTL:
            cached = (now, self._sysinfo_parts(container))
            if len(self._sysinfo_answers) >= 4096:
                self._sysinfo_answers.clear()
            self._sysinfo_answers[key] = cached
        read_at, parts = cached
        if parts is None:
            return None
        self._saw(container, now)
        host, stat, values = parts
        # RAM usage is read on every call: busybox free takes "free" from
        # sysinfo and "cached" from /proc/meminfo, and a stale free next to
        # a fresh cache could make its "used" underflow. MemFree comes from
        # the function that computes the file's.
        ram_kb = kib(self._ram_usage(container, now))
        free_kb = ram_fields(host, values.totalram // 1024, ram_kb, stat)["MemFree"]
        # Between computations only RAM usage and the clock move (the
        # kernel rounds a partial second up).
        return values._replace(uptime=math.ceil(values.uptime + (now - read_at)), freeram=max(0, free_kb) * 1024)

    # The rest of a container's sysinfo answer (limits, shmem, swap, load,
    # thread count) is computed again at most this often: programs call
    # sysinfo in bursts (glibc's qsort, a JVM's start: dozens of calls), and
    # computing it reads memory.stat, the task count and the time namespace.
    SYSINFO_TTL = 0.1
    # A thread's container and time namespace, as sysinfo found them, are
    # trusted this long (a thread id is reused only after the kernel has
    # gone through all of pid_max).
    CALLER_TTL = 1.0

    def _caller(self, pid: int, now: float):
        """(container, answer key) of thread ``pid``, or None if it is gone."""
        cached = self._callers.get(pid)
        if cached is not None and now - cached[0] < self.CALLER_TTL:
            return cached[1]
        container = self.identity.container_of(pid)
        if container is None:
            return None
        # The answer depends on the container and on the caller's time
        # namespace (uptime), nothing else.
        caller = (container, (container.key, self.host.readlink(f"/proc/{pid}/ns/time")))
        if len(self._callers) >= 65536:
            self._callers.clear()
        self._callers[pid] = (now, caller)
        return caller

    # At most this many containers' RAM usage files are kept open (an fd each).
    RAM_COUNTERS_MAX = 256

    def _ram_usage(self, container: Container, now: float) -> int | None:
        """The container's RAM usage now, in bytes, from its usage file kept
        open (``CounterFile``: ~3 µs a read instead of ~20). A removed
        cgroup's file fails (ENODEV) and is opened again; any file is
        reopened after LIMITS_TTL anyway, as limits are re-read."""
        counters = self._ram_counters
        entry = counters.get(container.key)
        if entry is None or now - entry[0] >= self.LIMITS_TTL:
            if entry is not None:
                counters.pop(container.key)[1].close()
            counter = container.cgroup.ram_usage_counter()
            if counter is None:
                return container.cgroup.memory_usage(swap=False).memory
            if len(counters) >= self.RAM_COUNTERS_MAX:
                counters.pop(next(iter(counters)))[1].close()  # the oldest
            entry = counters[container.key] = (now, counter)
        value = entry[1].read()
        if value is None:
            counters.pop(container.key)[1].close()
            return container.cgroup.memory_usage(swap=False).memory
        return value

    def _sysinfo_parts(self, container: Container):
        """(the host's meminfo, the container's memory.stat, SysinfoValues
        with an unrounded uptime), or None for a container without limits."""
        from procview.views.sysinfo import sysinfo_values

        request = _Request(self, container)
        if not request.is_limited():
            return None
        # The six meminfo lines sysinfo reports, by the functions that
        # compute the file's; the host's meminfo may be 2 s old here (it
        # only caps the limit and gives the swap device's size).
        host = self._host_fact("meminfo", self._read_host_meminfo)
        memory = sysinfo_memory(host, request.memory)
        time_now = request.time
        values = sysinfo_values(memory, time_now, self._load_averages(request), request.cgroup.task_count() or 0)
        return host, request.memory.stat, values._replace(uptime=max(0.0, time_now.uptime))

    def affinity_count(self, pid: int) -> int | None:
        """How many CPUs ``sched_getaffinity(2)`` may report to thread
        ``pid``: its CPU view's count, or None outside a CPU-limited
        container (the kernel's own answer is right then)."""
        caller = self._caller(pid, self.clock.monotonic())
        if caller is None:
            return None
        view = _Request(self, caller[0]).cpu_view
        return view.count if view.limited else None

    def cpu_view(self, pid: int) -> CpuView:
        """The CPU view of ``pid``'s container (the host's for host callers)."""
        host_cpus = self.online_cpus()
        container = self.identity.container_of(pid)
        if container is None:
            return compute_cpu_view(host_cpus, None, None)
        return _Request(self, container).cpu_view

    # A container nobody has read for this long is forgotten (its stat
    # counters and load averages start afresh if it is read again).
    FORGET_AFTER = 600.0
    # A container not read for this long is checked for being gone (its
    # cgroup removed, or its init exited) at each maintenance pass; one
    # read lately is alive, and costs the pass nothing.
    GONE_CHECK_AFTER = 1.0

    def maintain(self) -> None:
        """Periodic work (the daemon calls it every few seconds): sample the
        load of every tracked container whose 5 s sample is due, drop the
        state of containers that are gone or nobody reads any more, close
        the files kept open for them (an open file of a removed cgroup
        keeps it, and its memory, in the kernel), and give the memory a
        burst of readers left free back to the kernel."""
        now = self.clock.monotonic()
        tracked = self._tracked
        for key, slot in list(tracked.items()):
            last_read = tracked.last_read[slot]
            if last_read == _NEVER:  # never read with a limit: kept for its limits' time only
                if now - tracked.limits_taken[slot] >= self.LIMITS_TTL:
                    self._forget(key)
                continue
            idle = now - last_read
            if idle >= self.FORGET_AFTER or (idle >= self.GONE_CHECK_AFTER and self._is_gone(self._last_seen(key))):
                self._forget(key)
        self.identity.forget_exited_inits()
        if self._kept is not None:
            self._kept.close_stale()
        for key in self.loads.keys_due(now):
            container = self._last_seen(key)
            census = _Request(self, container).census if container else None
            if census is not None:
                self.loads.sample(key, census, now)
        self.loads.forget_expired(now)
        for cache, ttl in (
            (self._sysinfo_answers, self.SYSINFO_TTL), (self._timens_offsets, self.LIMITS_TTL), (self._callers, self.CALLER_TTL),
        ):
            for key, entry in list(cache.items()):
                if now - entry[0] >= ttl:
                    del cache[key]
        self._drop_spare_room()
        if self._limit_writes is not None:
            # Every kept limit's directories were watched when it was read,
            # less than LIMITS_TTL ago: the older watches serve none.
            self._limit_writes.forget_unused(since=now - self.LIMITS_TTL)
        if self._kept is not None:  # a real machine (not a test's fixture tree)
            return_free_heap()

    # The tables, besides ``_tracked``, that hold an entry per container
    # (or caller) read lately: the sysinfo path's, still a tuple an entry;
    # most expire within a second (see ``maintain``).
    _PER_CONTAINER_TABLES = ("_sysinfo_answers", "_callers", "_timens_offsets", "_ram_counters")

    def _drop_spare_room(self) -> None:
        """Tables sized for the containers left: a burst of a thousand
        leaves each ~37 KB of room it no longer needs (``resized``)."""
        for name in self._PER_CONTAINER_TABLES:
            setattr(self, name, resized(getattr(self, name)))
        self._tracked.drop_spare_room()
        self.stat_history.drop_spare_room()

    def _last_seen(self, key: tuple) -> Container | None:
        """The container of ``key`` as its last read found it (None if it
        was not read with a limit lately)."""
        tracked = self._tracked
        slot = tracked.slot(key)
        if slot < 0 or tracked.last_read[slot] == _NEVER:
            return None
        start = tracked.init_start[slot]
        return Container(tracked.cgroup[slot], tracked.caller_pid[slot], tracked.init_pid[slot], None if start == _NO_START else start,
                         bool(tracked.host_pidns[slot]), tracked.pidns_level[slot], key)

    def _is_gone(self, container: Container) -> bool:
        """No request can name this container again: its cgroup was
        removed, or (in a pid namespace) its init is not running any more
        (the key holds the init's start time, so a new init is a new key)."""
        if not container.cgroup.exists():
            return True
        if container.host_pidns:
            return False  # a host process's "container" is its cgroup alone
        return self.identity.start_time(container.init_pid) != container.init_start

    def _forget(self, key: tuple) -> None:
        """Drop what is tracked for one container."""
        self._tracked.remove(key)
        self.stat_history.forget(key)
        self.loads.forget(key)
        entry = self._ram_counters.pop(key, None)
        if entry is not None:
            entry[1].close()

    def warn_once(self, kind: str, message: str, *args, **kwargs) -> None:
        if kind in self._warned:
            log.debug(message, *args, **kwargs)
            return
        self._warned.add(kind)
        log.warning(message, *args, **kwargs)

    # -- host content ----------------------------------------------------------

    # Host facts that change rarely or never, re-read at most this often.
    HOST_FACTS_TTL = 2.0

    def _host_fact(self, name: str, compute):
        now = self.clock.monotonic()
        cached = self._host_facts.get(name)
        if cached is None or now - cached[0] >= self.HOST_FACTS_TTL:
            cached = (now, compute())
            self._host_facts[name] = cached
        return cached[1]

    def _read_host_meminfo(self) -> dict[str, int]:
        return parse_meminfo(self.host.read("/proc/meminfo") or "")

    # Containers with at most this many threads have their threads'
    # /proc/TID/stat files kept open (see take_census).
    KEPT_THREADS = 32

    # A census is shared by the container's reads for one clock tick
    # (1/USER_HZ s, the unit of a task's times in /proc): readers that come
    # back to back, a benchmark or a shell loop, pay for one census per
    # tick, not one per read. The kernel's running/total counts are
    # instantaneous, LXCFS's up to 5 s old (its load thread's last sample);
    # procview's are at most one tick old, and each reader still counts
    # itself as running (``ThreadStates.seen_by``).
    CENSUS_TTL = 1.0 / USER_HZ

    def thread_states(self, container: Container, key: tuple, now: float | None = None) -> ThreadStates | None:
        """The census of ``container``'s threads (``key``: its key), taken
        at most CENSUS_TTL ago (None when its cgroup cannot be listed).
        ``now``: the request's clock reading (read here if not given)."""
        if now is None:
            now = self.clock.monotonic()
        level = container.pidns_level
        tracked = self._tracked
        slot = tracked.slot_or_add(key)
        known_pids = ()
        if tracked.census_level[slot] == level:
            taken = tracked.census_taken[slot]
            if taken <= now < taken + self.CENSUS_TTL:
                return self._kept_states(slot)
            known_pids = tracked.census_pids[slot]
        states, known_pids = self.take_census(container.cgroup, level, known_pids, (container.init_pid, container.init_start))
        tracked.census_taken[slot], tracked.census_level[slot] = now, level
        tracked.census_pids[slot] = known_pids
        self._keep_states(slot, states)
        return states

    def _keep_states(self, slot: int, states: ThreadStates | None) -> None:
        """A census's ThreadStates into the columns at ``slot``: the counts
        by reference (shared, ``_shared_census``), the states' letters too
        (a one-letter string is one of CPython's own), and the threads not
        running as a tuple, but for the common one such thread (most
        containers: one process, asleep), whose id is a number in a column."""
        tracked = self._tracked
        if states is None:
            tracked.census[slot] = None
            return
        census, not_running, letters = states
        tracked.census[slot], tracked.not_running_states[slot] = census, letters
        if len(not_running) == 1:
            tracked.lone_not_running[slot], tracked.not_running[slot] = not_running[0], None
        else:
            tracked.not_running[slot] = not_running

    def _kept_states(self, slot: int) -> ThreadStates | None:
        """The ThreadStates ``_keep_states`` kept at ``slot``."""
        tracked = self._tracked
        census = tracked.census[slot]
        if census is None:
            return None
        not_running = tracked.not_running[slot]
        if not_running is None:
            not_running = (tracked.lone_not_running[slot],)
        return ThreadStates(census, not_running, tracked.not_running_states[slot])

    def take_census(self, cgroup, level: int, known_pids: tuple[int, ...],
                    init: tuple[int, int | None] = (0, None)) -> tuple[ThreadStates | None, tuple[int, ...]]:
        """Every thread of ``cgroup`` (and its descendants) and its state,
        from /proc/TID/stat (None when the cgroup cannot be listed), and
        the pid of each in the container's namespace (``NSpid`` at
        ``level``), as flat (thread id, start time, pid there) triples: a
        thread's pid there never changes, so /proc/TID/status, twice the
        work of its stat, is read only for threads the last census did not
        see (``known_pids``, the last census's triples). At level 0 (the
        host's namespace) a thread's pid is its id: no triple is kept; nor
        for the namespace's init (``init``: its host pid and start time),
        whose pid there is 1."""
        tids = cgroup.threads()
        if tids is None:
            return None, ()
        threads = running = blocked = 0
        last_pid = 0
        not_running: list[tuple[int, str]] = []
        known = _pid_lookup(known_pids)
        kept_pids: list[int] = []
        init_tid, init_start = init
        # A small container's stat files are kept open and re-read with
        # pread, like its counters; a big one's are read by path, so that
        # its threads do not push every other container's files out.
        read = self.read_host_file if len(tids) <= self.KEPT_THREADS else self.host.read
        for tid in tids:
            text = read(f"/proc/{tid}/stat")
            stat = parse_proc_pid_stat(text) if text else None
            if stat is None:
                continue  # exited since the cgroup listed it
            if level == 0:
                ns_pid = tid
            elif tid == init_tid and stat.starttime == init_start:
                ns_pid = 1
            else:
                # A reused thread id has another start time.
                ns_pid = known.get((tid, stat.starttime))
                if ns_pid is None:
                    ns_pid = self._namespace_pid(tid, level)
                    if ns_pid is None:
                        continue  # exited since its stat was read
                kept_pids += (tid, stat.starttime, ns_pid)
            threads += 1
            state = stat.state
            if state == "R":
                running += 1
            else:
                not_running.append((tid, state))
                if state == "D":
                    blocked += 1
            last_pid = max(last_pid, ns_pid)
        not_running.sort()
        census = self._shared_census(TaskCensus(threads, running, blocked, last_pid))
        states = ThreadStates(census, tuple([tid for tid, _state in not_running]), "".join([state for _tid, state in not_running]))
        return states, tuple(kept_pids)

    # Distinct task censuses kept for sharing (at most this many).
    TASK_CENSUSES_MAX = 256

    def _shared_census(self, census: TaskCensus) -> TaskCensus:
        """``census``, or an equal one already kept: most containers' counts
        are alike (one thread, sleeping), and a census is kept for each."""
        return _one_of(self._task_censuses, census, self.TASK_CENSUSES_MAX)

    def _namespace_pid(self, tid: int, level: int) -> int | None:
        """Thread ``tid``'s pid in the pid namespace ``level`` deep (0 where
        it has none that deep), or None if it is gone."""
        text = self.host.read(f"/proc/{tid}/status")
        status = parse_proc_status(text) if text else None
        if status is None:
            return None
        return status.nspid[level] if len(status.nspid) > level else 0

    # A container's limits are read once and kept while no file in the
    # directories they came from is written (``inotify.WriteWatch``: a
    # write shows at the next open); at most this long in any case, which
    # also covers what no write announces (a cpuset narrowed by CPU
    # hotplug) and directories the kernel would not watch.
    LIMITS_TTL = 1.0

    def container_limits(self, container: Container, compute, now: float | None = None) -> tuple[MemoryLimits, CpuView]:
        """``compute()`` (the container's memory limits and CPU view, a
        pair), read again when a file of its cgroup directories was written
        since, and at least every LIMITS_TTL; the directories it came from
        are watched (``WriteWatch``) from just before each read. ``now``:
        the request's clock reading (read here if not given)."""
        if now is None:
            now = self.clock.monotonic()
        self._forget_limits_if_written()
        tracked = self._tracked
        slot = tracked.slot_or_add(container.key)
        if now - tracked.limits_taken[slot] < self.LIMITS_TTL:
            return MemoryLimits(_limit_of(tracked.memory[slot]), _limit_of(tracked.swap[slot])), tracked.cpu_view[slot]
        if self._limit_writes is not None:
            # Watch before reading: a write after the read is then seen.
            for directory in container.cgroup.limit_dirs():
                self._limit_writes.add(directory, now)
        memory, cpu_view = compute()
        tracked.limits_taken[slot] = now
        tracked.memory[slot], tracked.swap[slot] = _limit_number(memory.memory), _limit_number(memory.swap)
        tracked.cpu_view[slot] = cpu_view
        return memory, cpu_view

    # Distinct CPU views kept for sharing (at most this many).
    CPU_VIEWS_MAX = 256

    def shared_cpu_view(self, view: CpuView) -> CpuView:
        """``view``, or an equal one already kept: containers side by side
        mostly see the same CPUs (a view and its tuple of CPUs are ~200
        bytes of small objects per container otherwise)."""
        return _one_of(self._cpu_views, view, self.CPU_VIEWS_MAX)

    def _forget_limits_if_written(self) -> None:
        """Drop every kept limit (and the sysinfo answers made from them)
        when a watched cgroup directory was written: limits change rarely,
        so reading all of them again then costs little."""
        if self._limit_writes is not None and self._limit_writes.written():
            self._tracked.refill("limits_taken")
            self._sysinfo_answers.clear()

    def online_cpus(self) -> frozenset[int]:
        """The host's online CPUs (changes only with CPU hotplug)."""
        return self._host_fact("online_cpus", self.host.online_cpus)

    def host_memtotal_kb(self) -> int:
        """The host's MemTotal (changes only with memory hotplug)."""
        return self._host_fact("memtotal", lambda: parse_meminfo(self.host.read("/proc/meminfo") or "").get("MemTotal", 1 << 62))

    def overcommit_ratio(self) -> int:
        """``vm.overcommit_ratio`` (a sysctl an administrator rarely changes)."""

        def read() -> int:
            try:
                return int((self.host.read("/proc/sys/vm/overcommit_ratio") or "50").strip())
            except ValueError:
                return 50

        return self._host_fact("overcommit_ratio", read)

    def boot_epoch(self) -> int:
        """The host's boot time (epoch seconds); constant, so read once."""
        if self._boot_epoch is None:
            btime = parse_btime(self.host.read("/proc/stat") or "")
            self._boot_epoch = btime if btime is not None else round(self.clock.realtime() - self.clock.boottime())
        return self._boot_epoch

    def timens_offset(self, pid: int) -> float:
        """The boottime offset of ``pid``'s time namespace (0 outside one)."""
        timens = self.host.readlink(f"/proc/{pid}/ns/time")
        if timens is None or timens == self.own_timens:
            return 0.0
        # A namespace's offsets are fixed once a process has entered it;
        # the TTL only guards against its inode number being reused.
        now = self.clock.monotonic()
        cached = self._timens_offsets.get(timens)
        if cached is None or now - cached[0] >= self.LIMITS_TTL:
            if len(self._timens_offsets) >= 4096:
                self._timens_offsets.clear()
            offset = parse_timens_boottime_offset(self.host.read(f"/proc/{pid}/timens_offsets") or "") or 0.0
            cached = self._timens_offsets[timens] = (now, offset)
        return cached[1]

    def _host_content(self, path: str, host_text: str | None, pid: int) -> bytes:
        """The host's file, as the kernel would show it to this caller: a
        caller in a time namespace sees uptime and btime shifted by its
        boottime offset (the daemon itself reads them unshifted).
        ``host_text`` None: not read yet (or unreadable: read once more)."""
        if host_text is None:
            host_text = self.read_host_file("/" + path)
        if host_text is None:
            return b""
        if path in ("proc/uptime", "proc/stat"):
            offset = self.timens_offset(pid)
            if offset:
                host_text = _shift_boot(path, host_text, offset)
        return host_text.encode()

    # -- renderers: thin glue from a request to the pure views ----------------

    def _meminfo(self, request: "_Request", host_text: str) -> str:
        # The same numbers as swaps and node meminfo (render_meminfo's
        # work, without parsing the host's text a second time).
        # meminfo_values has every host line, each an int >= 0: the fast fill.
        scan = request.host_meminfo_scan
        if scan.layout is not None:
            return scan.layout.fill_from(request.meminfo_values)
        return replace_meminfo_values(host_text, request.meminfo_values, scan=scan)

    def _swaps(self, request: "_Request", host_text: str) -> str:
        from procview.views.swaps import render_swaps

        return render_swaps(host_text, request.swap_values)

    def _node_meminfo(self, request: "_Request", host_text: str, node: int) -> str:
        from procview.views.sys_node import render_node_meminfo

        return render_node_meminfo(host_text, node, request.meminfo_values)

    # Rendered cpuinfo texts kept, by their exact inputs (at most this many).
    CPUINFO_RENDERS_MAX = 64

    def _cpuinfo(self, request: "_Request", host_text: str) -> str:
        """``render_cpuinfo``, a pure function of the host's text (read
        afresh on every open) and the CPU view, remembered by both: the
        host's cpuinfo changes only when a CPU's clock does (``cpu MHz``;
        never on most VMs), so a text read again mostly renders the same."""
        from procview.views.cpuinfo import render_cpuinfo

        key = (host_text, request.cpu_view)
        text = self._cpuinfo_renders.get(key)
        if text is None:
            text = render_cpuinfo(host_text, request.cpu_view)
            if len(self._cpuinfo_renders) >= self.CPUINFO_RENDERS_MAX:
                self._cpuinfo_renders.clear()
            self._cpuinfo_renders[key] = text
        return text

    def _cpu_list(self, request: "_Request", host_text: str) -> str:
        from procview.views.sys_cpu import render_cpu_list

        return render_cpu_list(request.cpu_view)

    def _stat(self, request: "_Request", host_text: str) -> str:
        from procview.views.stat import render_stat

        container = request.container
        return render_stat(
            host_text,
            request.cpu_view,
            request.cpu_usage,
            request.time,
            request.census,
            self.stat_history,
            container.key,
            USER_HZ,
        )

    def _uptime(self, request: "_Request", host_text: str) -> str:
        from procview.views.uptime import render_uptime

        return render_uptime(request.time, request.cpu_view, request.cpu_busy_ns)

    def _loadavg(self, request: "_Request", host_text: str) -> str:
        from procview.views.loadavg import render_loadavg

        census = request.census
        if census is None:
            raise LookupError("no census of the container's tasks")
        return render_loadavg(self._load_averages(request), census)

    def _load_averages(self, request: "_Request"):
        """The container's load averages; a census (every thread's state)
        is taken only when the request has one or a sample is due."""
        key, now = request.container_key, self.clock.monotonic()
        needs_census = "census" in request.__dict__ or self.loads.is_due(key, now)
        return self.loads.averages(key, request.census if needs_census else None, now)

    def _diskstats(self, request: "_Request", host_text: str) -> str:
        from procview.views.diskstats import render_diskstats

        return render_diskstats(host_text, request.container.cgroup.io_stats())


# Columns' marks: a time never (``-inf``: always longer ago than any
# TTL), and a memory limit as an int64 (``_limit_number``).
_NEVER = -math.inf
_NO_START = -1  # a container in the host's pid namespace: no init start time
_UNLIMITED_LIMIT = -1
_UNKNOWN_LIMIT = -2


def _limit_number(limit) -> int:
    """A memory limit (bytes, UNLIMITED or None) as one int64."""
    if limit is None:
        return _UNKNOWN_LIMIT
    return _UNLIMITED_LIMIT if limit is UNLIMITED else limit


def _limit_of(number: int):
    """The memory limit ``_limit_number`` made ``number`` of."""
    if number == _UNKNOWN_LIMIT:
        return None
    return UNLIMITED if number == _UNLIMITED_LIMIT else number


def _one_of(kept: dict, value, most: int):
    """``value``, or the equal one ``kept`` holds already (kept from now on
    if not; at most ``most``, the table is emptied when full): one object
    for the equal values many containers would each keep."""
    found = kept.get(value)
    if found is None:
        if len(kept) >= most:
            kept.clear()
        found = kept[value] = value
    return found


def _pid_lookup(triples: tuple[int, ...]) -> dict[tuple[int, int], int]:
    """Flat (thread id, start time, pid) triples as a map from (thread id,
    start time) to pid, made for the length of one census."""
    return {(triples[i], triples[i + 1]): triples[i + 2] for i in range(0, len(triples), 3)}


class _Request:
    """What one request knows about one container; each value is read at
    most once, and only if the file being rendered needs it."""

    def __init__(self, engine: ViewEngine, container: Container, host_texts: dict[str, str | None] | None = None):
        self.engine = engine
        self.container = container
        self.cgroup = container.cgroup
        self._host_texts = dict(host_texts or {})

    @functools.cached_property
    def now(self) -> float:
        """The engine's clock when this request first asked: what the
        request keeps (limits, census, the container's last read) is
        stamped with one reading, one float for all of them."""
        return self.engine.clock.monotonic()

    def host_file(self, path: str) -> str:
        """A host file's text, read at most once per request."""
        if path not in self._host_texts:
            self._host_texts[path] = self.engine.read_host_file(path)
        return self._host_texts[path] or ""

    def is_limited(self) -> bool:
        """False for a container with no limit of any kind: it sees the host."""
        if self.container.host_pidns and self.cgroup.path == "/":
            return False
        limits = self.memory_limits
        if isinstance(limits.memory, int) and limits.memory // 1024 < self.engine.host_memtotal_kb():
            return True
        return self.cpu_view.limited

    @functools.cached_property
    def host_meminfo_scan(self) -> MeminfoScan:
        """The host's ``/proc/meminfo`` scanned once, for parsing and, for
        ``/proc/meminfo`` itself, rewriting."""
        return scan_meminfo(self.host_file("/proc/meminfo"), self.engine.meminfo_layouts)

    @functools.cached_property
    def host_meminfo(self) -> dict[str, int]:
        return self.host_meminfo_scan.values

    @functools.cached_property
    def _limits(self) -> tuple[MemoryLimits, CpuView]:
        """Memory limits and CPU view: what changes only when the cgroup is
        updated, shared by the container's requests for a second."""
        cgroup, engine = self.cgroup, self.engine
        return engine.container_limits(
            self.container,
            lambda: (cgroup.memory_limits(), engine.shared_cpu_view(compute_cpu_view(engine.online_cpus(), cgroup.cpuset(), cgroup.cpu_quota()))),
            self.now,
        )

    @functools.cached_property
    def memory_limits(self) -> MemoryLimits:
        return self._limits[0]

    @functools.cached_property
    def memory(self) -> ContainerMemory:
        cgroup = self.cgroup
        return ContainerMemory(self.memory_limits, cgroup.memory_usage(), cgroup.memory_stat())

    @functools.cached_property
    def overcommit_ratio(self) -> int:
        return self.engine.overcommit_ratio()

    @functools.cached_property
    def meminfo_values(self) -> dict[str, int]:
        from procview.views.meminfo import meminfo_values

        return meminfo_values(self.host_meminfo, self.memory, self.overcommit_ratio)

    @functools.cached_property
    def swap_values(self) -> dict[str, int]:
        """SwapTotal and SwapFree as ``meminfo_values`` has them."""
        from procview.views.meminfo import swap_values

        if "meminfo_values" in self.__dict__:
            return self.meminfo_values
        memory = ContainerMemory(self.memory_limits, self.cgroup.memory_usage(), None)
        return swap_values(self.host_meminfo, memory)

    @functools.cached_property
    def cpu_view(self) -> CpuView:
        return self._limits[1]

    @functools.cached_property
    def cpu_usage(self):
        return self.cgroup.cpu_usage()

    @functools.cached_property
    def cpu_busy_ns(self) -> int | None:
        """The CPU time the cgroup has used, user plus system: from
        ``cpu_usage`` if this request has it, else one counter (cheaper
        than per-CPU usage, more so the more CPUs the host has)."""
        if "cpu_usage" in self.__dict__:
            usage = self.cpu_usage
            return None if usage is None else usage.total.user_ns + usage.total.system_ns
        return self.cgroup.cpu_busy_ns()

    @functools.cached_property
    def time(self) -> ContainerTime:
        """Uptime, btime and age for this caller (see ContainerTime).

        The boot epoch comes from the host's ``btime`` so btime does not
        jitter between reads; the container's start from its init's start
        time; a time namespace's boottime offset shifts uptime and btime the
        way the kernel shifts every start time that caller can see.
        """
        engine, container = self.engine, self.container
        now = engine.clock.boottime()
        boot_epoch = engine.boot_epoch()
        start = 0.0 if container.init_start is None else container.init_start / USER_HZ
        age = max(0.0, now - start)
        offset = engine.timens_offset(container.caller_pid)
        if offset:
            uptime = max(0.0, now + offset)
            btime = boot_epoch - round(offset)
        else:
            uptime = age
            btime = boot_epoch + round(start)
        return ContainerTime(uptime, btime, age)

    @functools.cached_property
    def container_key(self) -> tuple:
        """``container.key``, made once (it sorts the cgroup's paths)."""
        return self.container.key

    @functools.cached_property
    def census(self) -> TaskCensus | None:
        """The container's threads as this request's caller sees them."""
        states = self.engine.thread_states(self.container, self.container_key, self.now)
        return None if states is None else states.seen_by(self.container.caller_pid)


def _kept_files_limit() -> int:
    """How many files the engine keeps open: a quarter of the fds the
    daemon may have (256 under the usual soft limit of 1024), at most 4096."""
    import resource

    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 4096
    return max(16, min(4096, soft // 4))


def _shift_boot(path: str, text: str, offset: float) -> str:
    if path == "proc/uptime":
        parsed = parse_uptime(text)
        if parsed is None:
            return text
        return f"{max(0.0, parsed.uptime + offset):.2f} {parsed.idle:.2f}\n"
    lines = []
    for line in text.splitlines():
        if line.startswith("btime "):
            btime = parse_btime(line)
            if btime is not None:
                line = f"btime {btime - round(offset)}"
        lines.append(line)
    return "\n".join(lines) + "\n"


__all__ = ["ViewEngine", "SystemClock", "UNLIMITED", "USER_HZ"]
