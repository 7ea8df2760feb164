"""The one CPU view that every file uses.

A container sees n CPUs, where n = min(|cpuset|, ceil(quota / period)): the
first n CPUs of its cpuset (in the host's numbering), renumbered 0..n-1.
cpuinfo, stat, ``cpu/online``, ``possible``, ``present`` and the ``cpuN``
directories all come from this one value, so every tool counts the same.
``capacity`` is the CPU time the container can use per second of wall time:
min(n, quota / period).
"""

from __future__ import annotations

import math
from typing import NamedTuple

from procview.cgroups import UNLIMITED, CpuQuota


class CpuView(NamedTuple):
    """What CPUs a container sees.

    ``cpus``: the real CPU numbers it sees, in order; view CPU i is
    ``cpus[i]``. ``capacity``: CPUs' worth of time it may use (a quota of
    1.5 CPUs on a 2-CPU cpuset gives n = 2, capacity = 1.5).
    ``limited``: whether the view differs from the host's CPUs at all.
    """

    cpus: tuple[int, ...]
    capacity: float
    limited: bool

    @property
    def count(self) -> int:
        return len(self.cpus)

    @property
    def online(self) -> str:
        """The ``cpu/online`` text without newline: ``0-(n-1)``."""
        return "0" if self.count == 1 else f"0-{self.count - 1}"

    def real_to_view(self) -> dict[int, int]:
        return {real: index for index, real in enumerate(self.cpus)}


def compute_cpu_view(host_cpus: frozenset[int], cpuset: frozenset[int] | None, quota) -> CpuView:
    """Build the view from the host's online CPUs, the cgroup's effective
    cpuset (None = unknown, use the host's) and its effective quota
    (CpuQuota, UNLIMITED or None)."""
    allowed = sorted((cpuset & host_cpus) if cpuset else host_cpus) or sorted(host_cpus)
    count = len(allowed)
    capacity = float(count)
    if isinstance(quota, CpuQuota) and quota.quota_us > 0 and quota.period_us > 0:
        # A quota of 0.5 CPU still needs one CPU to run on.
        count = max(1, min(count, math.ceil(quota.quota_us / quota.period_us)))
        capacity = min(float(count), quota.cpus)
    cpus = tuple(allowed[:count])
    limited = cpus != tuple(sorted(host_cpus)) or capacity < len(host_cpus)
    return CpuView(cpus, capacity, limited)


__all__ = ["CpuView", "compute_cpu_view", "UNLIMITED"]
