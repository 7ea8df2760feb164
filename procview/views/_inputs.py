"""Plain values the engine gathers once per request and hands to renderers.

Renderers are pure: (these values, host text) -> file text. Nothing here
reads a file.
"""

from __future__ import annotations

from bisect import bisect_left
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


class ThreadStates(NamedTuple):
    """A census of a container's threads, the same for every reader.

    ``census`` counts each thread by the state the kernel gave it;
    ``not_running`` holds the id of every thread not in state R, in
    ascending order, and ``states`` their states, one letter each in the
    same order, so that ``seen_by`` can count the reader itself as
    running. (A sorted tuple and a string, not a dict: the engine keeps a
    census per container, and a dict is ten times the memory of the one
    thread most containers have; a bisection finds a reader as fast.)
    """

    census: TaskCensus
    not_running: tuple[int, ...]
    states: str

    def seen_by(self, reader: int) -> TaskCensus:
        """The census thread ``reader`` should see: it counts itself as
        running, as the kernel counts a task reading ``/proc/loadavg``,
        though while its file is rendered it waits on FUSE (state D or
        S). A reader the census did not see (not in the container, or
        started since) is not counted."""
        census = self.census
        not_running = self.not_running
        index = bisect_left(not_running, reader)
        if index == len(not_running) or not_running[index] != reader:
            return census  # running already, or not one of the census's threads
        threads, running, blocked, last_pid = census
        return TaskCensus(threads, running + 1, blocked - (self.states[index] == "D"), last_pid)
