"""``/proc/uptime`` as a container sees it.

The kernel's file is two numbers of seconds, ``"%lu.%02lu %lu.%02lu\\n"``:

1. uptime: time since boot (CLOCK_BOOTTIME);
2. idle: the sum, over every CPU, of the time that CPU spent idle, so on an
   idle 4-CPU machine it grows four times as fast as field 1.
"""

from __future__ import annotations

import math

from procview.views._inputs import ContainerTime
from procview.views.cpuview import CpuView

NANOSECONDS_PER_SECOND = 1e9


def render_uptime(time: ContainerTime, view: CpuView, busy_ns: int | None) -> str:
    """Render ``/proc/uptime`` for one caller.

    - Field 1, uptime = ``time.uptime``: the container's age, or its time
      namespace's view of boot, chosen by whoever built ``time`` so that it
      agrees with ``/proc/stat`` btime and the start times in
      ``/proc/PID/stat`` (LXCFS shows an uptime near 0 while start times
      still count from host boot, so ``ps`` prints absurd ages: D9).
    - Field 2, idle = ``time.age * capacity - busy``: the CPU time the
      container could have used since it started (its capacity, min(n view
      CPUs, quota/period), the same base as the idle column of
      ``/proc/stat``, so the two files agree), minus the CPU time its cgroup
      used (``busy_ns``, user + system). Like the kernel's, it is summed
      over the CPUs (LXCFS forgets to multiply, and on cgroup v2 subtracts
      nothing at all: D9). Unknown usage (None) counts as 0 busy.

    Both fields are clamped at 0: a cgroup can use more than n CPUs for a
    moment (a CFS burst) and its usage may predate ``time.age``, and a file
    that says "-0.37" breaks every parser.
    """
    uptime = _seconds(time.uptime)
    busy = 0.0 if busy_ns is None else busy_ns / NANOSECONDS_PER_SECOND
    idle = _seconds(_seconds(time.age) * view.capacity - busy)
    return "%.2f %.2f\n" % (uptime, idle)


def _seconds(value: float) -> float:
    """A printable count of seconds: never negative, never inf or nan."""
    if not math.isfinite(value) or value < 0:
        return 0.0
    return float(value)
