"""``sysinfo(2)`` and ``sched_getaffinity(2)``: the answers no file can give.

busybox ``free`` and ``uptime``, glibc's ``_SC_PHYS_PAGES`` and
``getloadavg()`` (so Python's ``os.sysconf`` and ``os.getloadavg``, the
JVM's RAM) ask ``sysinfo(2)``; ``nproc``, ``os.sched_getaffinity``, Node
and the JVM ask ``sched_getaffinity(2)``. The supervisor
(``procview/supervisor.py``) catches both calls with seccomp user
notification and answers with what this module computes, from the very
numbers the files show:

- ``sysinfo``: totalram/freeram/sharedram/bufferram/totalswap/freeswap are
  meminfo's MemTotal, MemFree, Shmem, Buffers, SwapTotal and SwapFree (the
  same ``meminfo_values`` the file renders), so busybox ``free``, which
  mixes ``sysinfo`` with ``/proc/meminfo``, can never underflow; ``loads``
  are ``/proc/loadavg``'s averages; ``uptime`` is ``/proc/uptime``'s;
  ``procs`` counts the container's threads as the kernel counts the host's.
- ``sched_getaffinity``: the thread's real mask, cut to the first n CPUs,
  n being the container's CPU view. The CPU numbers stay real (a process
  may pass them back to ``sched_setaffinity``); only the count changes.

Pure: values in, bytes out.
"""

from __future__ import annotations

import ctypes
import math
from typing import NamedTuple

from procview.views._inputs import ContainerTime
from procview.views.loadavg import LoadAverage

# sysinfo's loads are fixed point with 16 fractional bits (SI_LOAD_SHIFT);
# the kernel shifts its 11-bit avenrun left by 5, so a LoadTracker value
# (a multiple of 1/2048) converts without loss.
SI_LOAD_SHIFT = 16


class Sysinfo(ctypes.Structure):
    """``struct sysinfo`` of this machine (include/uapi/linux/sysinfo.h).

    ctypes lays it out with the C compiler's rules, so padding after
    ``pad`` and the size (112 bytes on 64-bit Linux) are right by
    construction. ``_f`` pads to 64 bytes on 32-bit machines; on 64-bit
    it is empty.
    """

    _fields_ = [
        ("uptime", ctypes.c_long),
        ("loads", ctypes.c_ulong * 3),
        ("totalram", ctypes.c_ulong),
        ("freeram", ctypes.c_ulong),
        ("sharedram", ctypes.c_ulong),
        ("bufferram", ctypes.c_ulong),
        ("totalswap", ctypes.c_ulong),
        ("freeswap", ctypes.c_ulong),
        ("procs", ctypes.c_ushort),
        ("pad", ctypes.c_ushort),
        ("totalhigh", ctypes.c_ulong),
        ("freehigh", ctypes.c_ulong),
        ("mem_unit", ctypes.c_uint),
        ("_f", ctypes.c_char * max(0, 20 - 2 * ctypes.sizeof(ctypes.c_long) - ctypes.sizeof(ctypes.c_int))),
    ]


class SysinfoValues(NamedTuple):
    """What ``sysinfo(2)`` tells one container (memory in bytes)."""

    uptime: int
    loads: tuple[int, int, int]  # fixed point, SI_LOAD_SHIFT fractional bits
    totalram: int
    freeram: int
    sharedram: int
    bufferram: int
    totalswap: int
    freeswap: int
    procs: int


def sysinfo_values(meminfo_kb: dict[str, int], time: ContainerTime, loads: LoadAverage, threads: int) -> SysinfoValues:
    """The container's ``sysinfo`` from the values its files show.

    ``meminfo_kb``: the container's meminfo lines (kB), as rendered;
    ``time``: its ContainerTime; ``loads``: its load averages; ``threads``:
    how many threads its cgroup holds.
    """

    def memory(name: str) -> int:
        return max(0, meminfo_kb.get(name, 0)) * 1024

    return SysinfoValues(
        # The kernel rounds a partial second up (kernel/sys.c do_sysinfo).
        uptime=math.ceil(max(0.0, time.uptime)),
        loads=tuple(_to_si_load(value) for value in loads),
        totalram=memory("MemTotal"),
        freeram=memory("MemFree"),
        sharedram=memory("Shmem"),
        bufferram=memory("Buffers"),
        totalswap=memory("SwapTotal"),
        freeswap=memory("SwapFree"),
        # A 16-bit field: the kernel truncates, we saturate.
        procs=min(max(0, threads), 0xFFFF),
    )


def _to_si_load(value: float) -> int:
    if not math.isfinite(value) or value <= 0:
        return 0
    return round(value * (1 << SI_LOAD_SHIFT))


def pack_sysinfo(values: SysinfoValues) -> bytes:
    """``values`` as the bytes of a ``struct sysinfo`` (``mem_unit`` 1:
    amounts in bytes, as a 64-bit kernel reports them)."""
    info = Sysinfo()
    info.uptime = values.uptime
    for index, load in enumerate(values.loads):
        info.loads[index] = load
    info.totalram = values.totalram
    info.freeram = values.freeram
    info.sharedram = values.sharedram
    info.bufferram = values.bufferram
    info.totalswap = values.totalswap
    info.freeswap = values.freeswap
    info.procs = values.procs
    info.mem_unit = 1
    return bytes(info)


def unpack_sysinfo(data: bytes) -> SysinfoValues:
    """The inverse of ``pack_sysinfo`` (tests, benchmarks, ``procview show``)."""
    info = Sysinfo.from_buffer_copy(data.ljust(ctypes.sizeof(Sysinfo), b"\0"))
    unit = info.mem_unit or 1
    return SysinfoValues(
        info.uptime, tuple(info.loads), info.totalram * unit, info.freeram * unit, info.sharedram * unit,
        info.bufferram * unit, info.totalswap * unit, info.freeswap * unit, info.procs,
    )


# -- sched_getaffinity ------------------------------------------------------------


def cut_mask(mask: bytes, count: int) -> bytes:
    """``mask`` (a CPU bitmask as the kernel copies it out: unsigned longs,
    CPU i at bit i % 8 of byte i // 8 on a little-endian machine) with only
    its first ``count`` set CPUs kept."""
    out = bytearray(len(mask))
    kept = 0
    for index, byte in enumerate(mask):
        if kept >= count:
            break
        for bit in range(8):
            if byte & (1 << bit):
                out[index] |= 1 << bit
                kept += 1
                if kept >= count:
                    break
    return bytes(out)


def mask_cpus(mask: bytes) -> list[int]:
    """The CPU numbers set in ``mask``."""
    return [index * 8 + bit for index, byte in enumerate(mask) for bit in range(8) if byte & (1 << bit)]


__all__ = ["Sysinfo", "SysinfoValues", "sysinfo_values", "pack_sysinfo", "unpack_sysinfo", "cut_mask", "mask_cpus", "SI_LOAD_SHIFT"]
