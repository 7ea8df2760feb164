"""Docker-style resource options -> cgroup limits (through procview.cgroups).

Parsing is pure and raises ``LimitError`` with one line for the user; the
runtime turns that into exit code 125 before anything is created.

Defaults, as Docker's where it has one:

- ``--memory`` without ``--memory-swap``: as much swap as memory (Docker's
  "memory-swap = 2 x memory"); ``--memory-swap -1``: unlimited swap;
  ``--memory-swap N``: N is memory *plus* swap, so swap = N - memory.
- ``--cpus N``: a CFS quota of N CPUs per ``--cpu-period`` (100 ms), **and**,
  unless ``--cpuset-cpus`` is given, a cpuset of the first ceil(N) CPUs, so
  that tools that ask the kernel which CPUs they may use
  (``sched_getaffinity``: ``nproc``, ``os.sched_getaffinity``, the JVM)
  count the same CPUs as the files of the view. This differs from Docker,
  which sets only the quota.
- ``--pids-limit`` 0 or -1: unlimited.
"""

from __future__ import annotations

import re
from collections import namedtuple

from procview.cgroups import UNLIMITED, Cgroup, CgroupError, CpuQuota, format_cpulist, parse_cpulist

DEFAULT_CPU_PERIOD = 100_000  # µs
MIN_MEMORY = 6 * 1024 * 1024  # Docker's minimum: 6 MiB
MIN_CPU_QUOTA = 1000  # µs, the kernel's minimum

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_SIZE = re.compile(r"^(\d+(?:\.\d+)?) ?([kmgtp]?)i?b?$", re.IGNORECASE)


class LimitError(ValueError):
    """A resource option that cannot be applied (one line for the user)."""


_LIMIT_FIELDS = (
    "memory",  # bytes
    "swap",  # bytes of swap alone, or UNLIMITED
    "cpu_quota",  # a CpuQuota
    "cpuset",  # a frozenset of host CPU numbers
    "pids",  # a count, or UNLIMITED
)


class Limits(namedtuple("Limits", _LIMIT_FIELDS, defaults=(None,) * len(_LIMIT_FIELDS))):
    """What to write to the container's cgroup; None = leave unset."""

    __slots__ = ()


def parse_bytes(text: str, option: str) -> int:
    """``512M``, ``1g``, ``1.5GiB``, ``1048576`` (binary units, as Docker's RAMInBytes)."""
    match = _SIZE.match(text.strip())
    if not match:
        raise LimitError(f"invalid {option} {text!r}: expected a size such as 512M or 1g")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def parse_limits(
    host_cpus: frozenset[int],
    memory: str | None = None,
    memory_swap: str | None = None,
    cpus: str | None = None,
    cpu_period: int | None = None,
    cpu_quota: int | None = None,
    cpuset_cpus: str | None = None,
    pids_limit: int | None = None,
) -> Limits:
    """Validate Docker-style options against this host and return Limits."""
    memory_bytes = None
    if memory is not None:
        memory_bytes = parse_bytes(memory, "--memory")
        if memory_bytes < MIN_MEMORY:
            raise LimitError(f"invalid --memory {memory!r}: the minimum is 6MB")
    swap = _parse_swap(memory_bytes, memory_swap)
    quota = _parse_quota(host_cpus, cpus, cpu_period, cpu_quota)
    cpuset = None
    if cpuset_cpus is not None:
        cpuset = parse_cpulist(cpuset_cpus)
        if not cpuset:
            raise LimitError(f"invalid --cpuset-cpus {cpuset_cpus!r}: expected a CPU list such as 0-1,3")
        if not cpuset <= host_cpus:
            raise LimitError(
                f"invalid --cpuset-cpus {cpuset_cpus!r}: this host's CPUs are {format_cpulist(host_cpus)}"
            )
    elif quota is not None:
        # Size the cpuset to the quota so affinity-based tools agree (see above).
        cpus = -(-quota.quota_us // quota.period_us)  # ceil, in integers
        cpuset = frozenset(sorted(host_cpus)[:cpus])
    pids = None
    if pids_limit is not None:
        pids = UNLIMITED if pids_limit <= 0 else pids_limit
    return Limits(memory_bytes, swap, quota, cpuset, pids)


def _parse_swap(memory_bytes: int | None, memory_swap: str | None):
    if memory_swap is None:
        return memory_bytes  # Docker: as much swap as memory (None if no memory limit)
    if memory_swap.strip() == "-1":
        return UNLIMITED
    if memory_bytes is None:
        raise LimitError("--memory-swap needs --memory as well")
    total = parse_bytes(memory_swap, "--memory-swap")
    if total < memory_bytes:
        raise LimitError("--memory-swap must be at least --memory (it is memory plus swap)")
    return total - memory_bytes


def _parse_quota(host_cpus, cpus: str | None, period: int | None, quota: int | None) -> CpuQuota | None:
    if cpus is not None and quota is not None:
        raise LimitError("--cpus and --cpu-quota cannot be used together")
    period = DEFAULT_CPU_PERIOD if period is None else period
    if not 1000 <= period <= 1_000_000:
        raise LimitError(f"invalid --cpu-period {period}: must be between 1000 and 1000000 µs")
    if cpus is not None:
        try:
            value = float(cpus)
        except ValueError:
            raise LimitError(f"invalid --cpus {cpus!r}: expected a number such as 1.5") from None
        available = len(host_cpus)
        if not 0.01 <= value <= available:  # also false for nan
            raise LimitError(
                f"invalid --cpus {cpus!r}: the range is 0.01 to {available}.00, as there are only {available} CPUs available"
            )
        return CpuQuota(max(MIN_CPU_QUOTA, round(value * period)), period)
    if quota is not None:
        if quota == -1:
            return None
        if quota < MIN_CPU_QUOTA:
            raise LimitError(f"invalid --cpu-quota {quota}: the minimum is {MIN_CPU_QUOTA} µs")
        return CpuQuota(quota, period)
    return None


def apply_limits(cgroup: Cgroup, limits: Limits) -> list[str]:
    """Write ``limits`` to a created cgroup. Returns warnings (limits this
    kernel cannot apply, e.g. swap without swap accounting)."""
    warnings = []
    if limits.cpuset is not None:
        cgroup.set_cpuset(limits.cpuset)
    if limits.memory is not None:
        cgroup.set_memory_limit(limits.memory)
    if limits.swap is not None and limits.memory is not None:
        try:
            cgroup.set_swap_limit(limits.swap)
        except CgroupError as exc:
            warnings.append(f"swap limit not applied: {exc.reason}")
    if limits.cpu_quota is not None:
        cgroup.set_cpu_quota(limits.cpu_quota)
    if limits.pids is not None:
        cgroup.set_pids_limit(limits.pids)
    return warnings
