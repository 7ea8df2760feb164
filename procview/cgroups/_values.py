"""Plain values that travel between the cgroup model and the views.

Two spellings matter and are never mixed:

- ``UNLIMITED`` ("max"): the kernel says there is no limit at this level.
- ``None``: unknown. The file is missing, unreadable, empty or garbled; the
  caller falls back to the host's value for that field.
"""

from __future__ import annotations

# collections.namedtuple, not typing.NamedTuple: this module is on
# ``procview run``'s start path, where importing typing and checking each
# annotated field cost ~8 ms (docs/performance.md). Field types are in the
# docstrings.
from collections import namedtuple


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


class CpuQuota(namedtuple("CpuQuota", "quota_us period_us")):
    """CFS bandwidth: ``quota_us`` of CPU time every ``period_us`` (ints, µs)."""

    __slots__ = ()

    @property
    def cpus(self) -> float:
        """The quota as a number of CPUs (0.5 = half a CPU)."""
        return self.quota_us / self.period_us


class MemoryLimits(namedtuple("MemoryLimits", "memory swap")):
    """Effective limits over a cgroup and all its ancestors: each bytes,
    UNLIMITED, or None (unknown).

    ``swap`` is swap alone (not memory+swap), whatever the cgroup version.
    """

    __slots__ = ()


class MemoryUsage(namedtuple("MemoryUsage", "memory swap")):
    """Current use in bytes (int or None); ``swap`` is swap alone, None when
    not accounted."""

    __slots__ = ()


_MEMORY_STAT_FIELDS = (
    "anon", "file", "shmem", "file_mapped", "file_dirty", "file_writeback",
    "active_anon", "inactive_anon", "active_file", "inactive_file",
    "unevictable", "slab_reclaimable", "slab_unreclaimable", "anon_thp",
    "file_thp", "shmem_thp", "kernel_stack", "pagetables", "sec_pagetables",
    "percpu", "vmalloc", "swapcached", "zswap", "zswapped",
)


class MemoryStat(namedtuple("MemoryStat", _MEMORY_STAT_FIELDS, defaults=(None,) * len(_MEMORY_STAT_FIELDS))):
    """``memory.stat``, normalised to one set of names for v1 and v2.

    Each field is bytes, or None when this kernel/version does not report it.
    v1 values come from the hierarchical ``total_*`` keys; v2 keys are
    hierarchical already.
    """

    __slots__ = ()


class CpuTimes(namedtuple("CpuTimes", "user_ns system_ns")):
    """CPU time in nanoseconds (ints)."""

    __slots__ = ()


class CpuUsage(namedtuple("CpuUsage", "total per_cpu")):
    """CPU time used by a cgroup (and its descendants).

    ``total`` is a CpuTimes. ``per_cpu`` maps a real (host) CPU number to its
    CpuTimes when the kernel reports a per-CPU split (v1 cpuacct); None on
    v2, which has totals only.
    """

    __slots__ = ()


_IO_STAT_FIELDS = (
    "read_ios", "write_ios", "discard_ios", "read_bytes", "write_bytes",
    "discard_bytes", "read_merged", "write_merged", "discard_merged",
    "read_ns", "write_ns", "discard_ns",
)


class IoStat(namedtuple("IoStat", _IO_STAT_FIELDS, defaults=(0,) * len(_IO_STAT_FIELDS))):
    """Block I/O of a cgroup on one device (``major:minor``): counts,
    bytes and nanoseconds (ints, 0 when not reported)."""

    __slots__ = ()
