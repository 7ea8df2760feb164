"""Plain values the engine gathers once per request and hands to renderers.

Renderers are pure: (these values, host text) -> file text. Nothing here
reads a file.
"""

from __future__ import annotations

from typing import NamedTuple

from procview.cgroups import MemoryLimits, MemoryStat, MemoryUsage


class ContainerMemory(NamedTuple):
    """A container's memory as its cgroup reports it (bytes).

    ``limits`` are effective (minimum over ancestors), not yet capped at the
    host's RAM: renderers cap them. Any part may be None (unknown).
    """

    limits: MemoryLimits
    usage: MemoryUsage
    stat: MemoryStat | None


class ContainerTime(NamedTuple):
    """Time as one caller should see it.

    ``uptime``: seconds for ``/proc/uptime`` field 1 (the container's age, or,
    for a caller in a time namespace, host uptime plus that namespace's
    boottime offset, which is what the kernel uses for its start times).
    ``btime``: epoch seconds of that "boot" (``/proc/stat`` btime).
    ``age``: seconds the container's CPU capacity has existed (the base of
    idle time in stat and uptime); equal to ``uptime`` except in a time
    namespace whose offset is not the container's age.
    """

    uptime: float
    btime: int
    age: float


class TaskCensus(NamedTuple):
    """The container's tasks at one instant.

    ``threads``: all threads; ``running``: state R; ``blocked``: state D;
    ``last_pid``: the highest pid in the container's own pid namespace
    (never a host pid when the container has its own namespace).
    """

    threads: int
    running: int
    blocked: int
    last_pid: int
