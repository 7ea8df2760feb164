"""procview.views.meminfo: the container's /proc/meminfo.

Host samples (tests/fixtures/host/):

- ``meminfo.txt``: a 2-vCPU VM, 24683656 kB RAM, no swap, no huge pages.
- ``meminfo_swap_hugepages.txt``: the same machine with an 8 GiB swap
  partition (262144 kB used) and a pool of 512 huge pages of 2 MiB
  (Free 500, Rsvd 10, Surp 4); CommitLimit as the kernel computes it.

Every expected number below is worked out by hand in kB (1 MiB = 1024 kB).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from procview.cgroups import UNLIMITED, MemoryLimits, MemoryStat, MemoryUsage
from procview.host import parse_meminfo
from procview.views._inputs import ContainerMemory
from procview.views.meminfo import effective_memory_kb, meminfo_values, render_meminfo, swap_values

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "host"
HOST_TEXT = (FIXTURES / "meminfo.txt").read_text()
SWAP_HOST_TEXT = (FIXTURES / "meminfo_swap_hugepages.txt").read_text()
HOST = parse_meminfo(HOST_TEXT)
SWAP_HOST = parse_meminfo(SWAP_HOST_TEXT)

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
HOST_TOTAL_KB = 24683656

# Lines that may legitimately exceed MemTotal: address space, a machine
# constant, swap, commit accounting (RAM + swap) and page counts.
NOT_CAPPED_AT_MEMTOTAL = {
    "VmallocTotal",
    "Hugepagesize",
    "SwapTotal",
    "SwapFree",
    "Zswapped",
    "CommitLimit",
    "Committed_AS",
    "HugePages_Total",
    "HugePages_Free",
    "HugePages_Rsvd",
    "HugePages_Surp",
}

# A cgroup v2 memory.stat: every key reported.
V2_STAT = MemoryStat(
    anon=100 * MiB,
    file=80 * MiB,
    shmem=8 * MiB,
    file_mapped=30 * MiB,
    file_dirty=1 * MiB,
    file_writeback=512 * KiB,
    active_anon=60 * MiB,
    inactive_anon=48 * MiB,
    active_file=40 * MiB,
    inactive_file=32 * MiB,
    unevictable=2 * MiB,
    slab_reclaimable=6 * MiB,
    slab_unreclaimable=3 * MiB,
    anon_thp=4 * MiB,
    file_thp=0,
    shmem_thp=0,
    kernel_stack=1 * MiB,
    pagetables=2 * MiB,
    sec_pagetables=0,
    percpu=256 * KiB,
    vmalloc=128 * KiB,
    swapcached=0,
    zswap=0,
    zswapped=0,
)

# A cgroup v1 memory.stat (total_* keys): no slab, kernel or zswap counters.
V1_STAT = MemoryStat(
    anon=300 * MiB,
    file=200 * MiB,
    shmem=16 * MiB,
    file_mapped=50 * MiB,
    file_dirty=2 * MiB,
    file_writeback=0,
    active_anon=200 * MiB,
    inactive_anon=116 * MiB,
    active_file=120 * MiB,
    inactive_file=64 * MiB,
    unevictable=0,
    anon_thp=0,
    swapcached=4 * MiB,
)


def container(memory_limit=UNLIMITED, swap_limit=None, usage=None, swap_usage=None, stat=None) -> ContainerMemory:
    return ContainerMemory(MemoryLimits(memory_limit, swap_limit), MemoryUsage(usage, swap_usage), stat)


def names_in_order(text: str) -> list[str]:
    return [line.split(":", 1)[0] for line in text.splitlines()]


# -- a v2 container with every counter -------------------------------------

V2_CONTAINER = container(512 * MiB, UNLIMITED, 200 * MiB, 0, V2_STAT)

V2_EXPECTED = {
    "MemTotal": 524288,  # the 512 MiB limit
    "MemFree": 319488,  # 524288 - 204800 used
    "MemAvailable": 399360,  # 319488 + 40960 + 32768 active/inactive file + 6144 reclaimable slab
    "Buffers": 0,
    "Cached": 81920,
    "SwapCached": 0,
    "Active": 102400,  # 61440 anon + 40960 file
    "Inactive": 81920,  # 49152 anon + 32768 file
    "Active(anon)": 61440,
    "Inactive(anon)": 49152,
    "Active(file)": 40960,
    "Inactive(file)": 32768,
    "Unevictable": 2048,
    "Mlocked": 2048,  # min(host 10812, Unevictable 2048)
    "SwapTotal": 0,  # swap unlimited, but the host has none
    "SwapFree": 0,
    "Zswap": 0,
    "Zswapped": 0,
    "Dirty": 1024,
    "Writeback": 512,
    "AnonPages": 102400,
    "Mapped": 30720,
    "Shmem": 8192,
    "KReclaimable": 6144,
    "Slab": 9216,  # 6144 + 3072
    "SReclaimable": 6144,
    "SUnreclaim": 3072,
    "KernelStack": 1024,
    "PageTables": 2048,
    "SecPageTables": 0,
    "NFS_Unstable": 0,
    "Bounce": 0,
    "WritebackTmp": 0,
    "CommitLimit": 262144,  # 524288 * 50 / 100 + 0 swap
    "Committed_AS": 110592,  # 102400 anon + 8192 shmem + 0 swap
    "VmallocTotal": 34359738367,  # address space: the host's
    "VmallocUsed": 128,
    "VmallocChunk": 0,
    "Percpu": 256,
    "AnonHugePages": 4096,
    "ShmemHugePages": 0,
    "ShmemPmdMapped": 0,
    "FileHugePages": 0,
    "FilePmdMapped": 0,
    "Balloon": 0,
    "HugePages_Total": 0,
    "HugePages_Free": 0,
    "HugePages_Rsvd": 0,
    "HugePages_Surp": 0,
    "Hugepagesize": 2048,
    "Hugetlb": 0,
    # The host maps 27262976 kB = 52 * 524288: each line / 52, and the one
    # kB rounding leaves over goes to the largest fraction (4k: 393.85).
    "DirectMap4k": 394,
    "DirectMap2M": 39936,
    "DirectMap1G": 483958,
}


def test_v2_container_every_field():
    assert meminfo_values(HOST, V2_CONTAINER) == V2_EXPECTED


def test_render_keeps_every_host_line_in_order_and_column():
    text = render_meminfo(HOST_TEXT, V2_CONTAINER)
    assert names_in_order(text) == names_in_order(HOST_TEXT)
    assert parse_meminfo(text) == V2_EXPECTED
    # Every new number fits the host's column: the lines end where they did.
    for host_line, line in zip(HOST_TEXT.splitlines(), text.splitlines()):
        assert len(line) == len(host_line), (host_line, line)
    assert "MemTotal:         524288 kB\n" in text
    assert "HugePages_Total:       0\n" in text
    assert text.endswith("DirectMap1G:      483958 kB\n")


# -- a v1 container: no slab or kernel counters, no swap accounting ---------


def test_v1_container_without_swap_accounting():
    # 1 GiB limit, 600 MiB used, v1 booted with swapaccount=0 on a host
    # that has 8 GiB of swap.
    memory = container(1 * GiB, None, 600 * MiB, None, V1_STAT)
    values = meminfo_values(SWAP_HOST, memory)
    assert values["MemTotal"] == 1048576
    assert values["MemFree"] == 434176  # 1048576 - 614400
    # No slab counter on v1: MemAvailable = 434176 + 122880 + 65536 file LRU.
    assert values["MemAvailable"] == 622592
    assert values["Cached"] == 204800
    assert values["SwapCached"] == 4096
    assert values["AnonPages"] == 307200
    assert values["Active"] == 327680  # 204800 + 122880
    assert values["Inactive"] == 184320  # 118784 + 65536
    assert values["Mlocked"] == 0  # Unevictable 0 bounds it
    # Not reported on v1: 0, never the host's number.
    not_on_v1 = ("Slab", "SReclaimable", "SUnreclaim", "KReclaimable", "KernelStack", "PageTables", "Percpu")
    for name in not_on_v1 + ("VmallocUsed", "Zswap"):
        assert values[name] == 0, name
    # Swap not accounted: the host's 8 GiB is not the container's.
    assert values["SwapTotal"] == 0
    assert values["SwapFree"] == 0
    # (1048576 - Hugetlb 1048576) * 50 / 100 + 0: the host's whole 1 GiB
    # pool of huge pages fits in the 1 GiB and leaves nothing to commit.
    assert values["HugePages_Total"] == 512
    assert values["Hugetlb"] == 1048576
    assert values["CommitLimit"] == 0
    assert values["Committed_AS"] == 323584  # 307200 + 16384 + 0


# -- MemTotal: the effective limit ----------------------------------------


@pytest.mark.parametrize(
    ("limit", "expected_kb"),
    [
        (UNLIMITED, HOST_TOTAL_KB),
        (None, HOST_TOTAL_KB),  # unknown
        (0, HOST_TOTAL_KB),  # LXCFS's reading: a 0 limit is no limit
        (2**63 - 4096, HOST_TOTAL_KB),  # v1's "unlimited" number
        (64 * GiB, HOST_TOTAL_KB),  # above the host's RAM
        (HOST_TOTAL_KB * KiB, HOST_TOTAL_KB),
        (HOST_TOTAL_KB * KiB - 4096, HOST_TOTAL_KB - 4),
        (1 * GiB, 1048576),
        (1 * GiB + 1023, 1048576),  # whole kB, rounded down
        (512, HOST_TOTAL_KB),  # under 1 kB: 0 kB, read as no limit
        (-1, HOST_TOTAL_KB),  # garbled
    ],
)
def test_effective_memory_kb(limit, expected_kb):
    assert effective_memory_kb(limit, HOST_TOTAL_KB) == expected_kb
    assert meminfo_values(HOST, container(limit))["MemTotal"] == expected_kb


def test_unlimited_without_memory_stat():
    memory = container(UNLIMITED, UNLIMITED, 1 * GiB, 0, None)
    values = meminfo_values(HOST, memory)
    assert values["MemTotal"] == HOST_TOTAL_KB
    assert values["MemFree"] == 23635080  # 24683656 - 1048576
    assert values["MemAvailable"] == 23635080  # nothing known to be reclaimable
    assert values["Cached"] == 0
    assert values["AnonPages"] == 0
    assert values["Mlocked"] == 0
    # Same machine size: the host's own CommitLimit.
    assert values["CommitLimit"] == 12341828
    assert values["Committed_AS"] == 0
    # 24683656 / 27262976 of each: 18542.41, 1880200.36, 22784913.23 + 1 kB leftover.
    assert (values["DirectMap4k"], values["DirectMap2M"], values["DirectMap1G"]) == (18543, 1880200, 22784913)


# -- MemFree and MemAvailable ----------------------------------------------


def test_usage_above_limit_leaves_nothing_free():
    # The kernel may overshoot the limit while it reclaims.
    memory = container(512 * MiB, None, 600 * MiB, None, V2_STAT)
    values = meminfo_values(HOST, memory)
    assert values["MemFree"] == 0
    assert values["MemAvailable"] == 79872  # 0 + 40960 + 32768 + 6144


def test_usage_unknown_uses_host_free_capped():
    limited = meminfo_values(HOST, container(512 * MiB, None, None, None, V2_STAT))
    assert limited["MemFree"] == 524288  # min(host 24006024, 524288)
    assert limited["MemAvailable"] == 524288
    unlimited = meminfo_values(HOST, container(UNLIMITED, None, None, None, None))
    assert unlimited["MemFree"] == 24006024  # the host's


def test_available_is_capped_at_total():
    # Reclaimable counters larger than the limit (stale or garbled).
    stat = MemoryStat(active_file=400 * MiB, inactive_file=400 * MiB, slab_reclaimable=100 * MiB)
    values = meminfo_values(HOST, container(512 * MiB, None, 100 * MiB, None, stat))
    assert values["MemFree"] == 421888
    assert values["MemAvailable"] == 524288


def test_available_never_counts_shmem():
    # 300 MiB of tmpfs sits in Cached and on the anon LRU lists: it cannot
    # be dropped, only swapped.
    stat = MemoryStat(
        file=310 * MiB,
        shmem=300 * MiB,
        active_anon=300 * MiB,
        active_file=6 * MiB,
        inactive_file=4 * MiB,
    )
    values = meminfo_values(HOST, container(512 * MiB, None, 320 * MiB, None, stat))
    assert values["MemFree"] == 196608
    assert values["MemAvailable"] == 206848  # 196608 + 10240, not + 317440
    assert values["Cached"] == 317440
    assert values["Shmem"] == 307200


# -- memory.stat fields ------------------------------------------------------


def test_memory_stat_unknown_shows_zero_not_host():
    values = meminfo_values(HOST, container(512 * MiB, None, 200 * MiB, None, None))
    from_stat = ("Cached", "Active", "Inactive", "Dirty", "AnonPages", "Mapped", "Shmem", "Slab", "KernelStack")
    for name in from_stat + ("PageTables", "Percpu", "VmallocUsed", "Mlocked", "Unevictable"):
        assert values[name] == 0, name
    assert values["Buffers"] == 0
    assert values["MemAvailable"] == values["MemFree"] == 319488


def test_anon_pages_without_anon_key():
    # anon unreported: the anon LRU lists minus the shmem on them.
    stat = MemoryStat(active_anon=60 * MiB, inactive_anon=48 * MiB, shmem=8 * MiB)
    values = meminfo_values(HOST, container(512 * MiB, None, 200 * MiB, None, stat))
    assert values["AnonPages"] == 102400  # 61440 + 49152 - 8192


def test_stat_counters_are_capped_at_memtotal():
    stat = MemoryStat(file=2 * GiB, anon=3 * GiB, active_file=2 * GiB, kernel_stack=5 * GiB)
    values = meminfo_values(HOST, container(1 * GiB, None, 1 * GiB, None, stat))
    for name in ("Cached", "AnonPages", "Active", "Active(file)", "KernelStack"):
        assert values[name] == 1048576, name


def test_negative_counters_read_as_zero():
    stat = MemoryStat(file=-4096, anon=-1, active_file=-MiB)
    values = meminfo_values(HOST, container(512 * MiB, None, -MiB, -1, stat))
    assert min(values.values()) >= 0
    assert values["MemFree"] == 524288
    assert values["Cached"] == 0


# -- swap -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("swap_limit", "swap_usage", "swap_total", "swap_free"),
    [
        (1 * GiB, 100 * MiB, 1048576, 946176),
        (UNLIMITED, 100 * MiB, 8388604, 8286204),  # the host's swap
        (16 * GiB, 0, 8388604, 8388604),  # capped at the host's swap
        (2**63 - 4096, 0, 8388604, 8388604),
        (0, 0, 0, 0),  # swap forbidden
        (1 * GiB, 2 * GiB, 1048576, 0),  # over the limit: full, not wrapped
        (1 * GiB, None, 1048576, 1048576),  # use unknown: counted as none
        (None, 100 * MiB, 0, 0),  # not accounted: no share to show
    ],
)
def test_swap_total_and_free(swap_limit, swap_usage, swap_total, swap_free):
    values = meminfo_values(SWAP_HOST, container(4 * GiB, swap_limit, 1 * GiB, swap_usage, V2_STAT))
    assert (values["SwapTotal"], values["SwapFree"]) == (swap_total, swap_free)


def test_swap_of_host_without_swap_is_zero():
    values = meminfo_values(HOST, container(4 * GiB, 1 * GiB, 1 * GiB, 0, V2_STAT))
    assert (values["SwapTotal"], values["SwapFree"]) == (0, 0)


def test_zswapped_is_capped_at_swap_total():
    stat = V2_STAT._replace(zswap=10 * MiB, zswapped=2 * GiB)
    values = meminfo_values(SWAP_HOST, container(4 * GiB, 1 * GiB, 1 * GiB, 1 * GiB, stat))
    assert values["Zswap"] == 10240
    assert values["Zswapped"] == 1048576


# -- CommitLimit, Committed_AS ---------------------------------------------


def test_commit_limit_and_committed():
    # 4 GiB RAM, 1 GiB swap of which 100 MiB used; the 1 GiB huge page
    # pool fits, and the kernel leaves huge pages out of the commit limit.
    memory = container(4 * GiB, 1 * GiB, 1 * GiB, 100 * MiB, V2_STAT)
    values = meminfo_values(SWAP_HOST, memory)
    assert values["CommitLimit"] == 2621440  # (4194304 - 1048576) * 50 / 100 + 1048576
    assert values["Committed_AS"] == 212992  # 102400 anon + 8192 shmem + 102400 swap
    assert meminfo_values(SWAP_HOST, memory, overcommit_ratio=100)["CommitLimit"] == 4194304
    assert meminfo_values(SWAP_HOST, memory, overcommit_ratio=0)["CommitLimit"] == 1048576
    assert meminfo_values(SWAP_HOST, memory, overcommit_ratio=-5)["CommitLimit"] == 2621440


def test_committed_as_capped_at_ram_plus_swap():
    stat = MemoryStat(anon=512 * MiB, shmem=512 * MiB)
    values = meminfo_values(SWAP_HOST, container(512 * MiB, 1 * GiB, 512 * MiB, 1 * GiB, stat))
    assert values["Committed_AS"] == 1572864  # not 524288 + 524288 + 1048576


# -- huge pages ---------------------------------------------------------------


def test_huge_page_pool_that_fits_is_kept():
    values = meminfo_values(SWAP_HOST, container(4 * GiB))
    assert [values[f"HugePages_{n}"] for n in ("Total", "Free", "Rsvd", "Surp")] == [512, 500, 10, 4]
    assert values["Hugetlb"] == 1048576
    assert values["Hugepagesize"] == 2048


def test_huge_page_pool_too_big_is_scaled_down():
    # 512 MiB holds 256 pages of 2 MiB: half the pool.
    values = meminfo_values(SWAP_HOST, container(512 * MiB))
    assert [values[f"HugePages_{n}"] for n in ("Total", "Free", "Rsvd", "Surp")] == [256, 250, 5, 2]
    assert values["Hugetlb"] == 524288
    assert values["CommitLimit"] == 0  # all RAM is huge pages, no swap


def test_hugetlb_with_other_page_sizes_is_capped():
    # Two 1 GiB pages besides the 2 MiB pool: Hugetlb 3145728 on the host.
    text = SWAP_HOST_TEXT.replace("Hugetlb:         1048576 kB", "Hugetlb:         3145728 kB")
    values = meminfo_values(parse_meminfo(text), container(2 * GiB))
    assert values["HugePages_Total"] == 512
    assert values["Hugetlb"] == 2097152  # 1048576 + min(2097152, 2097152 - 1048576)
    values = meminfo_values(parse_meminfo(text), container(8 * GiB))
    assert values["Hugetlb"] == 3145728


# -- DirectMap and the generic clamp -----------------------------------------


@pytest.mark.parametrize("limit", [1 * GiB, 512 * MiB, 3 * GiB + 4096, UNLIMITED])
def test_direct_map_adds_up_to_memtotal(limit):
    values = meminfo_values(HOST, container(limit))
    direct = [values["DirectMap4k"], values["DirectMap2M"], values["DirectMap1G"]]
    assert sum(direct) == values["MemTotal"]
    # The host's proportions, to within the 1 kB of rounding.
    for value, host_value in zip(direct, (20480, 2076672, 25165824)):
        assert abs(value - host_value * values["MemTotal"] / 27262976) < 1


def test_direct_map_one_gib():
    values = meminfo_values(HOST, container(1 * GiB))
    # 787.69, 79872, 967916.31 + 1 kB leftover to the 4k line.
    assert (values["DirectMap4k"], values["DirectMap2M"], values["DirectMap1G"]) == (788, 79872, 967916)


GENERIC_HOST_TEXT = """\
MemTotal:       16384000 kB
MemFree:         8000000 kB
Bounce:              120 kB
WritebackTmp:    2000000 kB
CmaTotal:        4194304 kB
CmaFree:          100000 kB
Unaccepted:      9999999 kB
HardwareCorrupted:     4 kB
VmallocChunk:   34359738367 kB
"""


def test_other_fields_are_clamped_to_memtotal():
    values = meminfo_values(parse_meminfo(GENERIC_HOST_TEXT), container(1 * GiB, None, 0))
    assert values == {
        "MemTotal": 1048576,
        "MemFree": 1048576,
        "Bounce": 120,
        "WritebackTmp": 1048576,
        "CmaTotal": 1048576,
        "CmaFree": 100000,
        "Unaccepted": 1048576,
        "HardwareCorrupted": 4,
        "VmallocChunk": 1048576,
    }


def test_no_memory_amount_exceeds_memtotal():
    for host in (HOST, SWAP_HOST):
        for memory in (V2_CONTAINER, container(256 * MiB, 1 * GiB, 300 * MiB, 0, V1_STAT), container(UNLIMITED)):
            values = meminfo_values(host, memory)
            for name, value in values.items():
                if name not in NOT_CAPPED_AT_MEMTOTAL:
                    assert value <= values["MemTotal"], name


# -- odd input ---------------------------------------------------------------


def test_host_without_memtotal_is_left_alone():
    text = "MemFree:         8000000 kB\nBuffers:            1248 kB\n"
    assert render_meminfo(text, V2_CONTAINER) == text
    assert render_meminfo("", V2_CONTAINER) == ""


def test_missing_parts_of_container_memory():
    memory = ContainerMemory(None, None, None)
    values = meminfo_values(HOST, memory)
    assert values["MemTotal"] == HOST_TOTAL_KB
    assert values["MemFree"] == 24006024
    assert values["SwapTotal"] == 0


# -- read by psutil ----------------------------------------------------------


@pytest.fixture
def procfs(tmp_path):
    """A fake /proc for psutil, as psutil's own tests swap PROCFS_PATH."""
    (tmp_path / "vmstat").write_text("pswpin 0\npswpout 0\n")
    saved = psutil.PROCFS_PATH
    psutil.PROCFS_PATH = str(tmp_path)
    try:
        yield tmp_path
    finally:
        psutil.PROCFS_PATH = saved


def test_psutil_reads_the_container(procfs):
    (procfs / "meminfo").write_text(render_meminfo(HOST_TEXT, V2_CONTAINER))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no field psutil needs is missing
        memory = psutil.virtual_memory()
    assert memory.total == 524288 * KiB
    assert memory.available == 399360 * KiB
    assert memory.free == 319488 * KiB
    assert memory.used == (524288 - 399360) * KiB
    assert memory.percent == 23.8  # 124928 / 524288
    assert memory.buffers == 0
    assert memory.cached == (81920 + 6144) * KiB  # Cached + SReclaimable
    assert memory.shared == 8192 * KiB
    assert memory.slab == 9216 * KiB


def test_psutil_reads_container_swap(procfs):
    memory = container(4 * GiB, 1 * GiB, 1 * GiB, 100 * MiB, V2_STAT)
    (procfs / "meminfo").write_text(render_meminfo(SWAP_HOST_TEXT, memory))
    swap = psutil.swap_memory()
    assert swap.total == 1048576 * KiB
    assert swap.used == 102400 * KiB
    assert swap.free == 946176 * KiB


# -- properties ---------------------------------------------------------------

_BYTES = st.one_of(
    st.none(),
    st.sampled_from([0, 1, 4096, 2**63 - 4096, 2**64 - 1]),
    st.integers(min_value=0, max_value=2**64),
)
_LIMIT = st.one_of(st.just(UNLIMITED), _BYTES)
_STAT = st.one_of(st.none(), st.builds(MemoryStat, **{field: _BYTES for field in MemoryStat._fields}))
_MEMORY = st.builds(
    ContainerMemory,
    st.builds(MemoryLimits, _LIMIT, _LIMIT),
    st.builds(MemoryUsage, _BYTES, _BYTES),
    _STAT,
)
_PSUTIL_LINE = re.compile(rb"^\S+:\s+\d+( kB)?$")


@settings(max_examples=300, deadline=None)
@given(
    host_text=st.sampled_from([HOST_TEXT, SWAP_HOST_TEXT, GENERIC_HOST_TEXT]),
    memory=_MEMORY,
    ratio=st.integers(min_value=-10, max_value=1000),
)
def test_any_cgroup_values_give_a_sane_file(host_text, memory, ratio):
    text = render_meminfo(host_text, memory, ratio)
    values = parse_meminfo(text)
    # Every host line is still there, and every line parses as psutil parses it.
    assert names_in_order(text) == names_in_order(host_text)
    for line in text.encode().splitlines():
        assert _PSUTIL_LINE.match(line), line
        int(line.split()[1])
    assert values == meminfo_values(parse_meminfo(host_text), memory, ratio)
    assert all(isinstance(v, int) and v >= 0 for v in values.values())
    total = values["MemTotal"]
    assert 0 < total <= parse_meminfo(host_text)["MemTotal"]
    assert values["MemFree"] <= values.get("MemAvailable", values["MemFree"]) <= total
    for name, value in values.items():
        if name not in NOT_CAPPED_AT_MEMTOTAL:
            assert value <= total, name
    if "SwapTotal" in values:
        assert values["SwapFree"] <= values["SwapTotal"] <= parse_meminfo(host_text)["SwapTotal"]


@given(
    host=st.sampled_from([HOST, SWAP_HOST, parse_meminfo(GENERIC_HOST_TEXT), {"SwapTotal": 4096, "SwapFree": 1024}]),
    memory=_MEMORY,
)
def test_swap_values_alone_are_meminfos(host, memory):
    # /proc/swaps computes them without memory.stat: the same numbers.
    full = meminfo_values(host, memory)
    assert swap_values(host, memory) == {"SwapTotal": full.get("SwapTotal", 0), "SwapFree": full.get("SwapFree", 0)}


# -- the daemon's fast path writes what the reference functions write ---------

_FIXTURE_MACHINES = Path(__file__).resolve().parent.parent / "fixtures"


class _StillClock:
    @staticmethod
    def boottime():
        return 97320.45

    @staticmethod
    def realtime():
        return 1732510000 + 97320.45

    @staticmethod
    def monotonic():
        return 1000.0


@pytest.mark.parametrize("layout", ["v1", "hybrid", "v2"])
@pytest.mark.parametrize("pid", [50, 200, 210])  # the limited containers
def test_engine_meminfo_is_the_line_by_line_rewrite_of_meminfo_values(layout, pid):
    # The engine fills a kept template from its per-request scan; the
    # reference is render_meminfo's numbers written back line by line
    # (the path a prefix selects), from the same host text and cgroup.
    from procview.engine import ViewEngine, _Request
    from procview.host import replace_meminfo_values

    engine = ViewEngine(root=str(_FIXTURE_MACHINES / layout), clock=_StillClock())
    host_text = (_FIXTURE_MACHINES / layout / "proc" / "meminfo").read_text()
    request = _Request(engine, engine.identity.container_of(pid))
    assert request.is_limited()
    values = meminfo_values(parse_meminfo(host_text), request.memory, engine.overcommit_ratio())
    prefixed = "".join(f"P {line}\n" for line in host_text.splitlines())
    expected = replace_meminfo_values(prefixed, values, prefix="P ").replace("P ", "")
    for _ in range(2):  # a kept layout the second time
        assert engine.render("proc/meminfo", pid).decode() == expected
    assert render_meminfo(host_text, request.memory, engine.overcommit_ratio()) == expected
