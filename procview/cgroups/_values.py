"""Plain values that travel between the cgroup model and the views.

Two spellings matter and are never mixed:

- ``UNLIMITED`` ("max"): the kernel says there is no limit at this level.
- ``None``: unknown. The file is missing, unreadable, empty or garbled; the
  caller falls back to the host's value for that field.
"""

from __future__ import annotations

from typing import NamedTuple


class _Unlimited:
    """The one "no limit" value (cgroup v2 ``max``, v1 ``-1`` or 2^63-ish)."""

    _instance: "_Unlimited | None" = None

    def __new__(cls) -> "_Unlimited":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNLIMITED"

    def __reduce__(self):
        return (_Unlimited, ())


UNLIMITED = _Unlimited()

# A limit as read from one cgroup level: bytes/count, UNLIMITED, or None (unknown).
Limit = "int | _Unlimited | None"


def min_limit(values) -> "int | _Unlimited | None":
    """The effective limit of several levels: the smallest known number.

    UNLIMITED levels do not restrict; unknown (None) levels are skipped.
    Returns UNLIMITED when every known level is unlimited and None when no
    level is known at all.
    """
    result: "int | _Unlimited | None" = None
    for value in values:
        if value is None:
            continue
        if value is UNLIMITED:
            if result is None:
                result = UNLIMITED
            continue
        if result is None or result is UNLIMITED or value < result:
            result = value
    return result


class CpuQuota(NamedTuple):
    """CFS bandwidth: ``quota_us`` of CPU time every ``period_us``."""

    quota_us: int
    period_us: int

    @property
    def cpus(self) -> float:
        """The quota as a number of CPUs (0.5 = half a CPU)."""
        return self.quota_us / self.period_us


class MemoryLimits(NamedTuple):
    """Effective limits over a cgroup and all its ancestors, in bytes.

    ``swap`` is swap alone (not memory+swap), whatever the cgroup version.
    """

    memory: "int | _Unlimited | None"
    swap: "int | _Unlimited | None"


class MemoryUsage(NamedTuple):
    """Current use in bytes; ``swap`` is swap alone, None when not accounted."""

    memory: int | None
    swap: int | None


class MemoryStat(NamedTuple):
    """``memory.stat``, normalised to one set of names for v1 and v2.

    Each field is bytes, or None when this kernel/version does not report it.
    v1 values come from the hierarchical ``total_*`` keys; v2 keys are
    hierarchical already.
    """

    anon: int | None = None
    file: int | None = None
    shmem: int | None = None
    file_mapped: int | None = None
    file_dirty: int | None = None
    file_writeback: int | None = None
    active_anon: int | None = None
    inactive_anon: int | None = None
    active_file: int | None = None
    inactive_file: int | None = None
    unevictable: int | None = None
    slab_reclaimable: int | None = None
    slab_unreclaimable: int | None = None
    anon_thp: int | None = None
    file_thp: int | None = None
    shmem_thp: int | None = None
    kernel_stack: int | None = None
    pagetables: int | None = None
    sec_pagetables: int | None = None
    percpu: int | None = None
    vmalloc: int | None = None
    swapcached: int | None = None
    zswap: int | None = None
    zswapped: int | None = None


class CpuTimes(NamedTuple):
    """CPU time in nanoseconds."""

    user_ns: int
    system_ns: int


class CpuUsage(NamedTuple):
    """CPU time used by a cgroup (and its descendants).

    ``per_cpu`` maps a real (host) CPU number to its times when the kernel
    reports a per-CPU split (v1 cpuacct); None on v2, which has totals only.
    """

    total: CpuTimes
    per_cpu: dict[int, CpuTimes] | None


class IoStat(NamedTuple):
    """Block I/O of a cgroup on one device (``major:minor``)."""

    read_ios: int = 0
    write_ios: int = 0
    discard_ios: int = 0
    read_bytes: int = 0
    write_bytes: int = 0
    discard_bytes: int = 0
    read_merged: int = 0
    write_merged: int = 0
    discard_merged: int = 0
    read_ns: int = 0
    write_ns: int = 0
    discard_ns: int = 0
