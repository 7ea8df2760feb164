"""procview.views.diskstats: only the container's devices, with its own I/O.

Host samples: ``tests/fixtures/host/diskstats.txt`` is a real 6.x machine's
file (17 counters: loop0-7, vda 254:0, zram0); the 11- and 15-counter samples
below are written in the formats of kernels before 4.18 and before 5.5.
"""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from procview.cgroups import IoStat
from procview.views.diskstats import container_counters, render_diskstats

HOST_6X = (Path(__file__).parent.parent / "fixtures" / "host" / "diskstats.txt").read_text()

# Linux 4.14 style: 11 counters (14 fields).
HOST_4_14 = """\
   8       0 sda 95123 2210 5331746 61236 410221 371110 13660416 982140 0 401980 1043420
   8       1 sda1 94890 2210 5318666 61200 404017 371110 13660416 981016 0 401216 1042252
   8      16 sdb 310 0 8792 104 0 0 0 0 0 88 104
"""

# Linux 5.4 style: 15 counters (18 fields), with discards.
HOST_5_4 = """\
 259       0 nvme0n1 205611 56 12386438 41234 501238 299011 20811326 401122 0 254440 443720 1402 0 41231112 230
 259       1 nvme0n1p1 310 0 10944 51 2 0 2 0 0 60 51 0 0 0 0
"""

# Hand-computed: sectors = bytes / 512 (1048576 -> 2048, 204800 -> 400, 4096 -> 8);
# ms = ns // 1e6 (2.5 ms -> 2, 7.999999 ms -> 7, 1 ms -> 1);
# busy = (2500000 + 7999999 + 1000000) ns = 11.499999 ms -> 11.
SOME_IO = IoStat(
    read_ios=120,
    write_ios=40,
    discard_ios=2,
    read_bytes=1_048_576,
    write_bytes=204_800,
    discard_bytes=4096,
    read_merged=3,
    write_merged=5,
    discard_merged=1,
    read_ns=2_500_000,
    write_ns=7_999_999,
    discard_ns=1_000_000,
)


def test_container_counters_field_by_field():
    # fmt: off
    assert container_counters(SOME_IO) == [
        120, 3, 2048, 2,  # reads: completed, merged, sectors, ms
        40, 5, 400, 7,  # writes
        0, 11, 11,  # in flight, ms doing I/O, weighted ms
        2, 1, 8, 1,  # discards
        0, 0,  # flushes, ms flushing
    ]
    # fmt: on


def test_17_counter_host_keeps_only_the_containers_device():
    text = render_diskstats(HOST_6X, {(254, 0): SOME_IO})
    assert text == " 254       0 vda 120 3 2048 2 40 5 400 7 0 11 11 2 1 8 1 0 0\n"


def test_11_counter_host():
    text = render_diskstats(HOST_4_14, {(8, 0): SOME_IO})
    assert text == "   8       0 sda 120 3 2048 2 40 5 400 7 0 11 11\n"


def test_15_counter_host():
    text = render_diskstats(HOST_5_4, {(259, 0): SOME_IO})
    assert text == " 259       0 nvme0n1 120 3 2048 2 40 5 400 7 0 11 11 2 1 8 1\n"


def test_several_devices_in_host_order():
    io = {(8, 16): IoStat(read_ios=7, read_bytes=1536), (8, 0): IoStat(write_ios=1, write_bytes=4096)}
    assert render_diskstats(HOST_4_14, io) == (
        "   8       0 sda 0 0 0 0 1 0 8 0 0 0 0\n"
        "   8      16 sdb 7 0 3 0 0 0 0 0 0 0 0\n"
    )


def test_zero_only_and_unknown_devices_are_omitted():
    io = {
        (8, 0): IoStat(),  # listed by the cgroup but never used
        (8, 1): IoStat(read_ios=-5, read_bytes=-1),  # garbled: counts as nothing
        (9, 9): SOME_IO,  # not a device of this host
    }
    assert render_diskstats(HOST_4_14, io) == ""


def test_device_numbers_match_whatever_their_width():
    # The kernel pads to %4d %7d; wider numbers (a dynamic major, a large
    # minor) push the columns right, and a line is found by its numbers.
    host = (
        "   8       0 sda 1 2 3 4 5 6 7 8 9 10 11\n"
        "10000 12345678 big0 1 2 3 4 5 6 7 8 9 10 11\n"
        " 259 1 nvme0n1p1 1 2 3 4 5 6 7 8 9 10 11\n"
    )
    io = {(10000, 12345678): IoStat(read_ios=2), (259, 1): IoStat(write_ios=3), (8, 1): IoStat(read_ios=1)}
    assert render_diskstats(host, io) == (
        "10000 12345678 big0 2 0 0 0 0 0 0 0 0 0 0\n"
        " 259       1 nvme0n1p1 0 0 0 0 3 0 0 0 0 0 0\n"
    )


def test_sectors_are_whole_512_byte_units():
    io = {(8, 16): IoStat(read_ios=1, read_bytes=1000)}
    assert render_diskstats(HOST_4_14, io) == "   8      16 sdb 1 0 1 0 0 0 0 0 0 0 0\n"


def test_unknown_or_no_io_gives_an_empty_file():
    # None: the cgroup's I/O is unreadable; the host file would show every
    # other container's I/O (LXCFS defect D12), so the file is empty.
    assert render_diskstats(HOST_6X, None) == ""
    assert render_diskstats(HOST_6X, {}) == ""


def test_odd_host_lines_are_skipped_and_new_columns_are_zero():
    host = (
        "garbage\n"
        "   8       0 sda 1 2 3\n"  # too few counters
        "   x       0 sdz 1 2 3 4 5 6 7 8 9 10 11\n"  # not a device number
        "   8      32 sdc 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19\n"  # a future kernel
    )
    io = {(8, 0): SOME_IO, (8, 32): IoStat(read_ios=4)}
    assert render_diskstats(host, io) == "   8      32 sdc 4 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"


def test_large_values_do_not_wrap():
    huge = IoStat(read_ios=2**40, read_ns=2**33 * 1_000_000)  # > 2^32 ms
    text = render_diskstats(HOST_4_14, {(8, 0): huge})
    assert text == f"   8       0 sda {2**40} 0 0 {2**33} 0 0 0 0 0 {2**33} {2**33}\n"


@pytest.mark.parametrize("host", [HOST_6X, HOST_4_14, HOST_5_4], ids=["17", "11", "15"])
def test_psutil_reads_only_the_containers_devices(host, tmp_path, monkeypatch):
    devices = {"vda": (254, 0), "sda": (8, 0), "nvme0n1": (259, 0)}
    name = next(name for name in devices if f" {name} " in host)
    (tmp_path / "diskstats").write_text(render_diskstats(host, {devices[name]: SOME_IO}))
    monkeypatch.setattr(psutil, "PROCFS_PATH", str(tmp_path))
    counters = psutil.disk_io_counters(perdisk=True, nowrap=False)
    assert list(counters) == [name]
    disk = counters[name]
    assert (disk.read_count, disk.write_count) == (120, 40)
    assert (disk.read_bytes, disk.write_bytes) == (1_048_576, 204_800)
    assert (disk.read_time, disk.write_time, disk.busy_time) == (2, 7, 11)
    assert (disk.read_merged_count, disk.write_merged_count) == (3, 5)


def test_psutil_reads_an_empty_file_as_no_disks(tmp_path, monkeypatch):
    (tmp_path / "diskstats").write_text(render_diskstats(HOST_6X, {}))
    monkeypatch.setattr(psutil, "PROCFS_PATH", str(tmp_path))
    assert psutil.disk_io_counters(perdisk=True, nowrap=False) == {}
