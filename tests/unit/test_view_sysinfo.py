"""sysinfo(2) and sched_getaffinity(2) answers: the struct and the mask."""

from __future__ import annotations

import ctypes

import pytest

from procview.views._inputs import ContainerTime
from procview.views.loadavg import LoadAverage
from procview.views.sysinfo import (
    SI_LOAD_SHIFT, Sysinfo, SysinfoValues, cut_mask, mask_cpus, pack_sysinfo, sysinfo_values, unpack_sysinfo,
)

MEMINFO_KB = {"MemTotal": 524288, "MemFree": 500000, "Shmem": 12, "Buffers": 0, "SwapTotal": 1024, "SwapFree": 1000}


def test_the_struct_is_the_c_librarys():
    """Same size as glibc's struct, and the kernel fills it through ours."""
    libc = ctypes.CDLL(None, use_errno=True)
    info = Sysinfo()
    assert libc.sysinfo(ctypes.byref(info)) == 0
    assert ctypes.sizeof(Sysinfo) == (112 if ctypes.sizeof(ctypes.c_long) == 8 else 64)
    assert info.mem_unit >= 1 and info.totalram > 0 and info.procs > 0 and info.uptime > 0
    assert info.freeram <= info.totalram


def test_values_come_from_meminfo_time_and_load():
    values = sysinfo_values(MEMINFO_KB, ContainerTime(41.2, 0, 41.2), LoadAverage(0.5, 1.0, 2048 / 2048), threads=7)
    assert values == SysinfoValues(
        uptime=42, loads=(1 << 15, 1 << 16, 1 << 16), totalram=524288 * 1024, freeram=500000 * 1024,
        sharedram=12 * 1024, bufferram=0, totalswap=1024 * 1024, freeswap=1000 * 1024, procs=7,
    )


@pytest.mark.parametrize("load, fixed", [(0.0, 0), (-1.0, 0), (float("nan"), 0), (float("inf"), 0), (1 / 2048, 32)])
def test_loads_convert_the_kernels_way(load, fixed):
    """avenrun (11 fractional bits) << 5 = SI_LOAD_SHIFT's 16; nonsense is 0."""
    values = sysinfo_values(MEMINFO_KB, ContainerTime(0, 0, 0), LoadAverage(load, load, load), threads=1)
    assert values.loads == (fixed, fixed, fixed)


def test_missing_lines_and_silly_counts_are_clamped():
    values = sysinfo_values({"MemTotal": -5}, ContainerTime(-3.0, 0, 0), LoadAverage(0, 0, 0), threads=10**6)
    assert values.totalram == 0 and values.freeram == 0 and values.uptime == 0
    assert values.procs == 0xFFFF


def test_pack_and_unpack_round_trip():
    values = SysinfoValues(7, (1, 2, 3), 10, 9, 8, 7, 6, 5, 4)
    data = pack_sysinfo(values)
    assert len(data) == ctypes.sizeof(Sysinfo)
    assert unpack_sysinfo(data) == values
    assert Sysinfo.from_buffer_copy(data).mem_unit == 1
    assert SI_LOAD_SHIFT == 16


@pytest.mark.parametrize("cpus, count, kept", [
    ([0, 1], 1, [0]),
    ([1, 3, 9], 2, [1, 3]),          # real numbers stay: only the count changes
    ([5], 1, [5]),
    ([0, 1], 4, [0, 1]),             # never adds CPUs
    ([63, 64, 100], 2, [63, 64]),    # across unsigned longs
    ([], 2, []),
])
def test_cut_mask_keeps_the_first_cpus(cpus, count, kept):
    mask = bytearray(16)
    for cpu in cpus:
        mask[cpu // 8] |= 1 << (cpu % 8)
    out = cut_mask(bytes(mask), count)
    assert len(out) == 16 and mask_cpus(out) == kept
