"""procview.views.swaps: the container's /proc/swaps.

Host samples: ``swaps.txt`` (no swap, header only) and
``swaps_with_device.txt`` (an 8 GiB partition ``/dev/vda2``, 262144 kB
used), whose meminfo is ``meminfo_swap_hugepages.txt``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from procview.cgroups import UNLIMITED, MemoryLimits, MemoryStat, MemoryUsage
from procview.host import parse_meminfo
from procview.views._inputs import ContainerMemory
from procview.views.meminfo import meminfo_values
from procview.views.swaps import KERNEL_HEADER, render_swaps, swap_line

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "host"
SWAPS_NONE = (FIXTURES / "swaps.txt").read_text()
SWAPS_DEVICE = (FIXTURES / "swaps_with_device.txt").read_text()
SWAP_HOST = parse_meminfo((FIXTURES / "meminfo_swap_hugepages.txt").read_text())

MiB = 1024 * 1024
GiB = 1024 * MiB
HEADER = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority"


def test_fixture_header_is_the_kernels():
    assert SWAPS_NONE == HEADER + "\n"
    assert KERNEL_HEADER == HEADER


def test_one_virtual_device_and_no_host_device():
    text = render_swaps(SWAPS_DEVICE, {"SwapTotal": 1048576, "SwapFree": 946176})
    assert text == HEADER + "\n" + "none" + " " * 36 + "virtual\t1048576\t\t102400\t\t0\n"
    assert "/dev/vda2" not in text
    assert "8388604" not in text


def test_columns_split_like_the_kernels():
    line = render_swaps(SWAPS_DEVICE, {"SwapTotal": 1048576, "SwapFree": 946176}).splitlines()[1]
    assert line.split() == ["none", "virtual", "1048576", "102400", "0"]
    # Filename column padded to 40, as the kernel pads paths.
    assert line.index("virtual") == 40


def test_no_swap_gives_header_only():
    assert render_swaps(SWAPS_DEVICE, {"SwapTotal": 0, "SwapFree": 0}) == HEADER + "\n"
    assert render_swaps(SWAPS_NONE, {"SwapTotal": 0, "SwapFree": 0}) == HEADER + "\n"
    assert render_swaps(SWAPS_NONE, {}) == HEADER + "\n"


def test_header_comes_from_kernel_when_host_text_is_odd():
    expected = HEADER + "\nnone" + " " * 36 + "virtual\t4096\t\t0\t\t0\n"
    assert render_swaps("", {"SwapTotal": 4096, "SwapFree": 4096}) == expected
    assert render_swaps("garbage\n", {"SwapTotal": 4096, "SwapFree": 4096}) == expected


def test_full_swap_and_garbled_free():
    assert render_swaps(SWAPS_NONE, {"SwapTotal": 4096, "SwapFree": 0}).endswith("virtual\t4096\t\t4096\t\t0\n")
    # SwapFree above SwapTotal or negative never yields a negative or wrapped Used.
    assert render_swaps(SWAPS_NONE, {"SwapTotal": 4096, "SwapFree": 9999}).endswith("virtual\t4096\t\t0\t\t0\n")
    assert render_swaps(SWAPS_NONE, {"SwapTotal": 4096, "SwapFree": -1}).endswith("virtual\t4096\t\t4096\t\t0\n")


@pytest.mark.parametrize(
    ("size", "used", "expected"),
    [
        (9_999_999, 0, "none" + " " * 36 + "virtual\t9999999\t\t0\t\t0"),
        # 8 digits: the kernel drops the extra tab.
        (10_000_000, 10_000_000, "none" + " " * 36 + "virtual\t10000000\t10000000\t0"),
    ],
)
def test_swap_line_tabs(size, used, expected):
    assert swap_line("none", "virtual", size, used, 0) == expected


def test_swap_line_long_path():
    path = "/" + "x" * 45
    assert swap_line(path, "file", 1, 0, -2) == path + " file\t1\t\t0\t\t-2"


def test_agrees_with_meminfo():
    # 4 GiB RAM, 1 GiB swap limit, 100 MiB swapped out.
    memory = ContainerMemory(MemoryLimits(4 * GiB, 1 * GiB), MemoryUsage(1 * GiB, 100 * MiB), MemoryStat())
    values = meminfo_values(SWAP_HOST, memory)
    fields = render_swaps(SWAPS_DEVICE, values).splitlines()[1].split()
    assert fields == ["none", "virtual", "1048576", "102400", "0"]
    assert int(fields[2]) == values["SwapTotal"]
    assert int(fields[2]) - int(fields[3]) == values["SwapFree"]


def test_unaccounted_swap_shows_no_device():
    memory = ContainerMemory(MemoryLimits(4 * GiB, None), MemoryUsage(1 * GiB, None), None)
    assert render_swaps(SWAPS_DEVICE, meminfo_values(SWAP_HOST, memory)) == HEADER + "\n"


def test_unlimited_swap_is_the_hosts_size_not_its_use():
    # The host has used 262144 kB; the container has used 0: its own use shows.
    memory = ContainerMemory(MemoryLimits(4 * GiB, UNLIMITED), MemoryUsage(1 * GiB, 0), None)
    line = render_swaps(SWAPS_DEVICE, meminfo_values(SWAP_HOST, memory)).splitlines()[1]
    assert line.split() == ["none", "virtual", "8388604", "0", "0"]
