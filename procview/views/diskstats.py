"""``/proc/diskstats``: the block devices a container has used, with its own I/O.

The host file has one line per block device (disks and partitions)::

    major minor name  then 11, 15 or 17 counters

11 counters up to Linux 4.17, 15 from 4.18 (discards), 17 from 5.5 (flushes);
see the kernel's ``Documentation/admin-guide/iostats.rst``. A container's
cgroup counts its I/O per device (v2 ``io.stat``, v1 ``blkio.*``), which
``procview.cgroups`` hands over as ``{(major, minor): IoStat}``.

The view keeps the host's lines for the devices the container has done I/O
on, in the host's order, with the host's name and number of columns, and puts
the container's numbers in them. Devices it has not touched are left out:
the host's counters for them are other containers' I/O.
"""

from __future__ import annotations

from procview.cgroups import IoStat

SECTOR_BYTES = 512  # diskstats counts 512-byte sectors whatever the device's block size
_NS_PER_MS = 1_000_000
_NAME_FIELDS = 3  # major, minor, name
_OLDEST_COUNTERS = 11  # the counters every kernel since 2.6 prints


def _count(value) -> int:
    """A cgroup counter as a printable count: garbled or negative is 0."""
    return value if isinstance(value, int) and value > 0 else 0


def _has_io(stat: IoStat) -> bool:
    return any(_count(value) for value in stat)


def container_counters(stat: IoStat) -> list[int]:
    """The 17 diskstats counters of the newest kernels, from a cgroup's I/O.

    Field by field (1-based, as in iostats.rst):

    1-4.   reads completed, merged, sectors (bytes / 512), ms reading;
    5-8.   the same for writes;
    9.     I/Os in progress: 0. The cgroup does not count them, and a
           request in flight now is gone by the time a tool reads again;
    10.    ms doing I/O: the container's read + write + discard time. The
           kernel counts wall time the device was busy; the cgroup only has
           per-request times, whose sum counts overlapping requests twice, so
           this can run faster than the clock (``iostat`` %util above 100);
    11.    weighted ms doing I/O: the same sum, which is what the kernel's
           field is (the sum of every request's time);
    12-15. discards completed, merged, sectors, ms;
    16-17. flushes and ms flushing: 0, the cgroup does not count flushes.

    The times come from v1's ``blkio.io_service_time``/``io_wait_time``;
    v2's ``io.stat`` has no times or merges, so those fields are 0 there.
    """
    read_ms = _count(stat.read_ns) // _NS_PER_MS
    write_ms = _count(stat.write_ns) // _NS_PER_MS
    discard_ms = _count(stat.discard_ns) // _NS_PER_MS
    busy_ms = (_count(stat.read_ns) + _count(stat.write_ns) + _count(stat.discard_ns)) // _NS_PER_MS
    return [
        _count(stat.read_ios),
        _count(stat.read_merged),
        _count(stat.read_bytes) // SECTOR_BYTES,
        read_ms,
        _count(stat.write_ios),
        _count(stat.write_merged),
        _count(stat.write_bytes) // SECTOR_BYTES,
        write_ms,
        0,  # in flight
        busy_ms,
        busy_ms,  # weighted
        _count(stat.discard_ios),
        _count(stat.discard_merged),
        _count(stat.discard_bytes) // SECTOR_BYTES,
        discard_ms,
        0,  # flushes
        0,  # ms flushing
    ]


def format_line(major: int, minor: int, name: str, counters: list[int]) -> str:
    """One line in the kernel's format (``"%4d %7d %s %lu ..."``)."""
    return f"{major:4d} {minor:7d} {name} " + " ".join(map(str, counters))


def _used_devices(io: dict[tuple[int, int], IoStat]) -> dict[tuple[str, str], IoStat]:
    """The devices with some I/O, keyed by their numbers as the kernel
    prints them (``%d``), so a host line is matched without converting
    its numbers."""
    return {(str(major), str(minor)): stat for (major, minor), stat in io.items() if _has_io(stat)}


def _container_line(host_line: str, used: dict[tuple[str, str], IoStat]) -> str | None:
    """The container's version of one host line, or None when the container
    has done no I/O on that device (or the line cannot be parsed)."""
    # Most host lines are other devices: look at the numbers only.
    head = host_line.split(None, _NAME_FIELDS)
    if len(head) <= _NAME_FIELDS:
        return None
    stat = used.get((head[0], head[1]))
    if stat is None:
        return None
    columns = len(head[_NAME_FIELDS].split())
    if columns < _OLDEST_COUNTERS:
        return None
    counters = container_counters(stat)
    # Keep the host's column count, so a tool that checks it (psutil does)
    # sees what this kernel prints; columns newer than we know stay 0.
    counters = counters[:columns] + [0] * (columns - len(counters))
    return format_line(int(head[0]), int(head[1]), head[2], counters)


def render_diskstats(host_text: str, io: dict[tuple[int, int], IoStat] | None) -> str:
    """``/proc/diskstats`` for a container.

    ``host_text``: the host's ``/proc/diskstats`` (names, device order and the
    number of columns this kernel prints). ``io``: the container's I/O per
    ``(major, minor)``, ``{}`` when it has done none, None when its cgroup's
    I/O cannot be read.

    Only devices with some non-zero count in ``io`` appear; their values are
    described in ``container_counters``. Partitions appear only if the cgroup
    reports them (cgroups count whole disks, so usually they do not).

    Both ``{}`` and None give an empty file. For None this is deliberate and
    differs from the other views' fallback to host values: the host's file
    is every other container's I/O, which LXCFS shows on cgroup v2
    (its defect D12). An empty diskstats is a valid file: tools list no disks.
    """
    used = _used_devices(io) if io else None
    if not used:
        return ""
    lines = []
    for host_line in host_text.splitlines():
        line = _container_line(host_line, used)
        if line is not None:
            lines.append(line + "\n")
    return "".join(lines)


__all__ = ["render_diskstats", "container_counters", "format_line", "SECTOR_BYTES"]
