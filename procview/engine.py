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
import re
import time
from typing import Callable

from procview.cgroups import UNLIMITED, Hierarchies, discover
from procview.host import (
    HostFiles,
    parse_btime,
    parse_meminfo,
    parse_proc_status,
    replace_meminfo_values,
    parse_timens_boottime_offset,
    parse_uptime,
)
from procview.identity import Container, Identity
from procview.views._inputs import ContainerMemory, ContainerTime, TaskCensus
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

    def __init__(self, root: str = "/", clock=None, hierarchies: Hierarchies | None = None):
        from procview.views.loadavg import LoadTracker
        from procview.views.stat import StatHistory

        self.host = HostFiles(root)
        self.hierarchies = hierarchies or discover(root)
        self.identity = Identity(self.hierarchies, self.host)
        self.clock = clock or SystemClock()
        self.own_timens = self.host.readlink("/proc/self/ns/time")
        self.stat_history = StatHistory()
        self.loads = LoadTracker()
        # key -> (container, last read) of every container read lately: the
        # periodic maintenance samples their load and forgets idle ones.
        self._seen: dict[tuple, tuple[Container, float]] = {}
        self._warned: set[str] = set()
        self._boot_epoch: int | None = None
        self._host_facts: dict[str, tuple[float, object]] = {}

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
        host_text = self.host.read("/" + path)
        try:
            container = self.identity.container_of(pid)
            if container is None:
                return self._host_content(path, host_text, pid)
            request = _Request(self, container, {"/" + path: host_text})
            if not request.is_limited():
                return self._host_content(path, host_text, pid)
            self._seen[container.key] = (container, self.clock.monotonic())
            renderer: Callable = getattr(self, method)
            if match:
                text = renderer(request, host_text or "", int(match.group(1)))
            else:
                text = renderer(request, host_text or "")
            return text.encode()
        except Exception:  # a view must never take the daemon down
            self.warn_once(f"render:{path}", "rendering %s for pid %d failed; serving the host's file", path, pid, exc_info=True)
            return self._host_content(path, host_text, pid)

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

    def maintain(self) -> None:
        """Periodic work (the daemon calls it every few seconds): sample the
        load of every tracked container whose 5 s sample is due, and drop the
        state of containers nobody reads any more."""
        now = self.clock.monotonic()
        for key in self.loads.keys_due(now):
            entry = self._seen.get(key)
            census = _Request(self, entry[0]).census if entry else None
            if census is not None:
                self.loads.sample(key, census, now)
        self.loads.forget_expired(now)
        for key, (_container, last_read) in list(self._seen.items()):
            if now - last_read >= self.FORGET_AFTER:
                del self._seen[key]
                self.stat_history.forget(key)

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
        return parse_timens_boottime_offset(self.host.read(f"/proc/{pid}/timens_offsets") or "") or 0.0

    def _host_content(self, path: str, host_text: str | None, pid: int) -> bytes:
        """The host's file, as the kernel would show it to this caller: a
        caller in a time namespace sees uptime and btime shifted by its
        boottime offset (the daemon itself reads them unshifted)."""
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
        return replace_meminfo_values(host_text, request.meminfo_values)

    def _swaps(self, request: "_Request", host_text: str) -> str:
        from procview.views.swaps import render_swaps

        return render_swaps(host_text, request.meminfo_values)

    def _node_meminfo(self, request: "_Request", host_text: str, node: int) -> str:
        from procview.views.sys_node import render_node_meminfo

        return render_node_meminfo(host_text, node, request.meminfo_values)

    def _cpuinfo(self, request: "_Request", host_text: str) -> str:
        from procview.views.cpuinfo import render_cpuinfo

        return render_cpuinfo(host_text, request.cpu_view)

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

        return render_uptime(request.time, request.cpu_view, request.cpu_usage)

    def _loadavg(self, request: "_Request", host_text: str) -> str:
        from procview.views.loadavg import render_loadavg

        census = request.census
        if census is None:
            raise LookupError("no census of the container's tasks")
        key = request.container.key
        averages = self.loads.averages(key, census, self.clock.monotonic())
        return render_loadavg(averages, census)

    def _diskstats(self, request: "_Request", host_text: str) -> str:
        from procview.views.diskstats import render_diskstats

        return render_diskstats(host_text, request.container.cgroup.io_stats())


class _Request:
    """What one request knows about one container; each value is read at
    most once, and only if the file being rendered needs it."""

    def __init__(self, engine: ViewEngine, container: Container, host_texts: dict[str, str | None] | None = None):
        self.engine = engine
        self.container = container
        self.cgroup = container.cgroup
        self._host_texts = dict(host_texts or {})

    def host_file(self, path: str) -> str:
        """A host file's text, read at most once per request."""
        if path not in self._host_texts:
            self._host_texts[path] = self.engine.host.read(path)
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
    def host_meminfo(self) -> dict[str, int]:
        return parse_meminfo(self.host_file("/proc/meminfo"))

    @functools.cached_property
    def memory_limits(self):
        return self.cgroup.memory_limits()

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
    def cpu_view(self) -> CpuView:
        return compute_cpu_view(self.engine.online_cpus(), self.cgroup.cpuset(), self.cgroup.cpu_quota())

    @functools.cached_property
    def cpu_usage(self):
        return self.cgroup.cpu_usage()

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
    def census(self) -> TaskCensus | None:
        """The container's threads, read from the cgroup and /proc/TID/status."""
        tids = self.cgroup.threads()
        if tids is None:
            return None
        threads = running = blocked = 0
        last_pid = 0
        level = self.container.pidns_level
        host = self.engine.host
        caller = self.container.caller_pid
        for tid in tids:
            text = host.read(f"/proc/{tid}/status")
            status = parse_proc_status(text) if text else None
            if status is None:
                continue  # exited since the cgroup listed it
            threads += 1
            if tid == caller or status.state == "R":
                # The reader is running as far as it knows: it is inside
                # read(), though it waits on FUSE (state D) while we render.
                running += 1
            elif status.state == "D":
                blocked += 1
            if len(status.nspid) > level:
                last_pid = max(last_pid, status.nspid[level])
        return TaskCensus(threads, running, blocked, last_pid)


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
