"""``procview stats``: what each running container uses, as ``docker stats``.

    CONTAINER ID   NAME   CPU %    MEM USAGE / LIMIT     MEM %   NET I/O       BLOCK I/O   PIDS
    8a8c28f2479a   idle   0.00%    1.855MiB / 23.54GiB   0.01%   626B / 266B   0B / 0B     4
    81e69b9afd68   burn   50.35%   1.699MiB / 64MiB      2.66%   0B / 0B       0B / 0B     2

Three layers, in the order a frame is made:

- **Samples** (the edge): ``take_sample`` reads one container's counters
  through the cgroup model (v1, hybrid and v2 alike) and its network
  namespace's ``/proc/PID/net/dev``, stamped with the monotonic clock.
- **Usage** (pure): ``usage_between(before, after)`` turns two samples
  of the same container into the numbers a row shows. The definitions:

  - CPU %: CPU time the cgroup used between the samples over the wall
    time between them, x 100. 100 % is one whole CPU (Docker's scale);
    a container busy on N CPUs shows up to N x 100 %. (Docker divides by
    the host's CPU time and multiplies by the number of online CPUs,
    which comes to the same thing.) Unknown ("--") without an earlier
    sample, or when the counter went backwards.
  - MEM USAGE: as Docker's CLI, the cgroup's memory usage minus its
    ``inactive_file`` (v1: ``memory.usage_in_bytes`` -
    ``total_inactive_file``; v2: ``memory.current`` - ``inactive_file``):
    page cache the kernel would drop first is not counted.
  - LIMIT: the effective memory limit (the tightest of the container's
    cgroup and its ancestors', so a pod's limit shows), never more than
    the host's memory: an unlimited container shows the host's total, as
    Docker's daemon does.
  - NET I/O: bytes received / sent by the interfaces of the container's
    network namespace other than ``lo``; ``0B / 0B`` with ``--network
    none``, and with ``--network host`` (the container has no network of
    its own: Docker shows the same).
  - BLOCK I/O: bytes read / written, summed over devices (v2
    ``io.stat`` rbytes/wbytes; v1 ``blkio`` ``io_service_bytes_recursive``).
  - PIDS: tasks (threads) in the cgroup, ``pids.current``, or the number
    of threads listed where there is no pids controller.

- **Rows** (pure): ``table_row`` and ``json_object`` format a usage as
  Docker does: memory in binary units (``12.5MiB``), I/O in decimal ones
  (``1.2kB``), percentages with two decimals; ``--`` for anything
  unknown, and for a whole row when a named container is not running.
"""

from __future__ import annotations

import os
import time
from collections import namedtuple

from procview.cgroups import UNLIMITED
from procview.host import parse_net_dev

INTERVAL = 1.0  # seconds between samples: the refresh period, and the window CPU % is measured over

HEADINGS = ("CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "BLOCK I/O", "PIDS")
UNKNOWN = "--"

# go-units' abbreviations, as Docker prints sizes.
_BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")
_DECIMAL_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")


class Sample(namedtuple("Sample", "taken_ns cpu_ns memory inactive_file memory_limit network block pids")):
    """One container's counters at one moment. ``taken_ns``: the monotonic
    clock when ``cpu_ns`` was read; ``memory``: the cgroup's memory
    usage and ``inactive_file`` its inactive page cache, in bytes;
    ``memory_limit``: bytes, UNLIMITED or None; ``network``: (received,
    sent) bytes; ``block``: (read, written) bytes; ``pids``: tasks. Every
    field but ``taken_ns`` may be None: unknown."""

    __slots__ = ()


class Usage(namedtuple("Usage", "cpu_percent memory memory_limit memory_percent network block pids")):
    """What one row shows, as numbers (None: unknown): ``cpu_percent``
    (100 = one CPU), ``memory`` and ``memory_limit`` in bytes,
    ``memory_percent``, ``network`` (received, sent) and ``block`` (read,
    written) byte pairs, ``pids``."""

    __slots__ = ()


class Entry(namedtuple("Entry", "id name reference usage")):
    """One container of a frame: its id and name, the NAME it was asked
    for by (None when all are shown), and its Usage (None: not running)."""

    __slots__ = ()


# -- usage: pure ------------------------------------------------------------------------


def cpu_percent(before: Sample | None, after: Sample) -> float | None:
    """CPU time used between two samples over the wall time between them,
    x 100 (100 = one whole CPU)."""
    if before is None or before.cpu_ns is None or after.cpu_ns is None:
        return None
    used, elapsed = after.cpu_ns - before.cpu_ns, after.taken_ns - before.taken_ns
    if used < 0 or elapsed <= 0:
        return None  # a new cgroup under the same name (a restart), or a clock that did not move
    return used / elapsed * 100.0


def memory_in_use(usage: int | None, inactive_file: int | None) -> int | None:
    """Docker's CLI's memory usage: the cgroup's, less the inactive page
    cache, which the kernel reclaims first (when it is smaller)."""
    if usage is None:
        return None
    if inactive_file is not None and inactive_file < usage:
        return usage - inactive_file
    return usage


def shown_limit(limit, host_memory: int | None) -> int | None:
    """The memory limit a row shows: the cgroup's effective limit, at most
    the host's memory (so "unlimited" shows the host's total)."""
    if limit is None:
        return None
    if limit is UNLIMITED:
        return host_memory
    return limit if host_memory is None else min(limit, host_memory)


def usage_between(before: Sample | None, after: Sample, host_memory: int | None) -> Usage:
    """One row's numbers from two samples of a container (``before``: None
    when there is no earlier one; then CPU % is unknown)."""
    memory = memory_in_use(after.memory, after.inactive_file)
    limit = shown_limit(after.memory_limit, host_memory)
    percent = memory / limit * 100.0 if memory is not None and limit else None
    return Usage(cpu_percent(before, after), memory, limit, percent, after.network, after.block, after.pids)


def block_totals(io_stats) -> tuple[int, int] | None:
    """(read, written) bytes over every device of ``Cgroup.io_stats()``."""
    if io_stats is None:
        return None
    return sum(s.read_bytes for s in io_stats.values()), sum(s.write_bytes for s in io_stats.values())


def network_totals(interfaces) -> tuple[int, int] | None:
    """(received, sent) bytes over the interfaces of ``parse_net_dev``
    but the loopback, whose traffic never leaves the container."""
    if interfaces is None:
        return None
    others = [traffic for name, traffic in interfaces.items() if name != "lo"]
    return sum(t.received for t in others), sum(t.sent for t in others)


# -- formatting: pure -------------------------------------------------------------------


def _size(value: float, base: float, units: tuple[str, ...], digits: int) -> str:
    """go-units' CustomSize: divide by ``base`` while it is at least
    ``base``, then ``%.<digits>g`` (Python's %g and Go's agree)."""
    unit = 0
    while value >= base and unit < len(units) - 1:
        value /= base
        unit += 1
    return f"{value:.{digits}g}{units[unit]}"


def binary_size(value: int | None) -> str:
    """Memory as Docker prints it (go-units ``BytesSize``): ``12.5MiB``."""
    return UNKNOWN if value is None else _size(float(value), 1024.0, _BINARY_UNITS, 4)


def decimal_size(value: int | None) -> str:
    """I/O as Docker prints it (go-units ``HumanSizeWithPrecision(n, 3)``): ``1.2kB``."""
    return UNKNOWN if value is None else _size(float(value), 1000.0, _DECIMAL_UNITS, 3)


def percent(value: float | None) -> str:
    return UNKNOWN if value is None else f"{value:.2f}%"


def _pair(values, size) -> str:
    return f"{UNKNOWN} / {UNKNOWN}" if values is None else f"{size(values[0])} / {size(values[1])}"


def columns(entry: Entry) -> dict[str, str]:
    """The row's texts under Docker's ``{{json .}}`` keys."""
    usage = entry.usage
    texts = {"ID": entry.id[:12], "Name": entry.name, "Container": entry.reference or entry.id[:12]}
    if usage is None:
        return {**texts, "CPUPerc": UNKNOWN, "MemUsage": f"{UNKNOWN} / {UNKNOWN}", "MemPerc": UNKNOWN,
                "NetIO": f"{UNKNOWN} / {UNKNOWN}", "BlockIO": f"{UNKNOWN} / {UNKNOWN}", "PIDs": UNKNOWN}
    return {
        **texts,
        "CPUPerc": percent(usage.cpu_percent),
        "MemUsage": _pair((usage.memory, usage.memory_limit), binary_size),
        "MemPerc": percent(usage.memory_percent),
        "NetIO": _pair(usage.network, decimal_size),
        "BlockIO": _pair(usage.block, decimal_size),
        "PIDs": UNKNOWN if usage.pids is None else str(usage.pids),
    }


def table_row(entry: Entry) -> tuple[str, ...]:
    """The row under ``HEADINGS``."""
    texts = columns(entry)
    return tuple(texts[key] for key in ("ID", "Name", "CPUPerc", "MemUsage", "MemPerc", "NetIO", "BlockIO", "PIDs"))


def json_object(entry: Entry) -> dict:
    """Docker's ``{{json .}}`` keys (texts, as the table has them), plus
    the numbers themselves for scripts (null when unknown or not running):
    CPUPercent, MemUsageBytes, MemLimitBytes, MemPercent, NetRxBytes,
    NetTxBytes, BlockReadBytes, BlockWriteBytes, PIDCount."""
    usage = entry.usage or Usage(None, None, None, None, None, None, None)
    network, block = usage.network or (None, None), usage.block or (None, None)
    return {
        **columns(entry),
        "CPUPercent": usage.cpu_percent,
        "MemUsageBytes": usage.memory,
        "MemLimitBytes": usage.memory_limit,
        "MemPercent": usage.memory_percent,
        "NetRxBytes": network[0],
        "NetTxBytes": network[1],
        "BlockReadBytes": block[0],
        "BlockWriteBytes": block[1],
        "PIDCount": usage.pids,
    }


def frame_lines(entries: list[Entry], fmt: str) -> list[str]:
    """A frame as lines: a table under ``HEADINGS`` (``table``), or one
    JSON object per container (``json``)."""
    if fmt == "json":
        import json

        return [json.dumps(json_object(entry), sort_keys=True) for entry in entries]
    from procview.runtime.images.commands import table_lines

    return table_lines([HEADINGS, *(table_row(entry) for entry in entries)])


# Terminal control (ECMA-48): home the cursor, erase to the end of the line,
# erase to the end of the screen, erase the whole screen.
_HOME, _ERASE_LINE, _ERASE_BELOW, _ERASE_SCREEN = "\033[H", "\033[K", "\033[J", "\033[2J"


def redraw(lines: list[str], first: bool) -> str:
    """What redraws a frame in place on a terminal: from the top left,
    each line erased to its end, then the rest of the screen (a frame
    with fewer lines leaves nothing of the last). Overwriting instead of
    clearing first keeps the screen from flickering; the first frame
    clears the screen, as ``docker stats`` does."""
    return (_ERASE_SCREEN if first else "") + _HOME + "".join(line + _ERASE_LINE + "\n" for line in lines) + _ERASE_BELOW


# -- sampling: the edge -----------------------------------------------------------------


def take_sample(cgroup, hierarchies, clock=time.monotonic_ns) -> Sample | None:
    """The counters of the container in ``cgroup``, or None when its
    cgroup is gone (it stopped)."""
    if not cgroup.exists():
        return None
    # The moment of the CPU counter: between the clock readings around it
    # (a preempted reader would otherwise date it up to a slice early).
    started_ns = clock()
    cpu_ns = cgroup.cpu_busy_ns()
    taken_ns = (started_ns + clock()) // 2
    stat = cgroup.memory_stat()
    return Sample(
        taken_ns=taken_ns,
        cpu_ns=cpu_ns,
        memory=cgroup.memory_usage(swap=False).memory,
        inactive_file=None if stat is None else stat.inactive_file,
        memory_limit=cgroup.memory_limits().memory,
        network=_network(cgroup, hierarchies),
        block=block_totals(cgroup.io_stats()),
        pids=cgroup.task_count(),
    )


def _network(cgroup, hierarchies) -> tuple[int, int] | None:
    """(received, sent) of the network namespace the cgroup's processes
    are in (all of a container's share one), through the first of them."""
    pids = cgroup.processes()
    if not pids:
        return None
    pid = min(pids)
    if _same_namespace(hierarchies, pid, 1, "net"):
        return (0, 0)  # --network host: no network of its own, as Docker shows it
    return network_totals(parse_net_dev(hierarchies.read_proc(f"{pid}/net/dev")))


def _same_namespace(hierarchies, pid: int, other: int, kind: str) -> bool:
    try:
        mine = os.readlink(hierarchies.host_path(f"/proc/{pid}/ns/{kind}"))
        theirs = os.readlink(hierarchies.host_path(f"/proc/{other}/ns/{kind}"))
    except OSError:
        return False
    return mine == theirs


def host_memory(hierarchies) -> int | None:
    """The host's RAM in bytes (``MemTotal``), what an unlimited container
    may use."""
    from procview.host import parse_meminfo

    text = hierarchies.read_proc("meminfo")
    total = None if text is None else parse_meminfo(text).get("MemTotal")
    return None if total is None else total * 1024


# -- frames: records in, entries out, once a second -------------------------------------


def frames(store, hierarchies, wanted=None, interval: float = INTERVAL, sleep=time.sleep):
    """The entries of one frame every ``interval`` seconds, for ever: each
    frame's CPU % is measured over the ``interval`` before it, so the
    first comes after one interval too. ``wanted``: [(NAME, record)] as
    asked for, each shown in every frame (running or not); None: every running
    container, as ``ps`` orders them, one that stops dropping out and one
    that starts coming in (its first frame's CPU % unknown)."""
    memory = host_memory(hierarchies)
    before = {key: sample for _reference, _record, key, sample in _sample_all(store, hierarchies, wanted)}
    while True:
        sleep(interval)
        sampled = _sample_all(store, hierarchies, wanted)
        yield [Entry(record.id, record.name, reference,
                     None if sample is None else usage_between(before.get(key), sample, memory))
               for reference, record, key, sample in sampled]
        before = {key: sample for _reference, _record, key, sample in sampled}


def _sample_all(store, hierarchies, wanted):
    """[(NAME or None, record, key, Sample or None)] for the containers of
    a frame. A sample is keyed by the container and its pid 1, so a
    restarted container's new cgroup is never compared with the old one's."""
    from procview.runtime.lifecycle import RUNNING

    if wanted is None:
        records = [r for r in store.all() if r.phase == RUNNING and r.cgroup]
        records.sort(key=lambda r: r.created, reverse=True)
        shown = [(None, record) for record in records]
    else:
        shown = [(reference, _reloaded(store, record)) for reference, record in wanted]
    found = []
    for reference, record in shown:
        running = record.phase == RUNNING and record.cgroup
        sample = take_sample(hierarchies.cgroup(record.cgroup), hierarchies) if running else None
        found.append((reference, record, (record.id, record.pid), sample))
    return found


def _reloaded(store, record):
    """The record as it is now; a removed one as it was, ended."""
    from procview.runtime.lifecycle import UNKNOWN

    try:
        return store.load(record.id)
    except ValueError:
        record.phase = UNKNOWN
        return record
