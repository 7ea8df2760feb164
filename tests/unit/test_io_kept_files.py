"""KeptFiles: kernel files kept open and re-read with pread at offset 0."""

from __future__ import annotations

import os
import subprocess
import sys

from procview._io import KeptFiles, read_text


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_each_read_is_a_fresh_rendering_from_one_kept_fd():
    # The kernel makes a new UUID on every read of this file.
    kept = KeptFiles(limit=8)
    first = kept.read("/proc/sys/kernel/random/uuid")
    second = kept.read("/proc/sys/kernel/random/uuid")
    assert first and second and first != second
    assert len(first.strip()) == 36
    assert len(kept) == 1
    kept.close()


def test_the_same_text_as_reading_by_path():
    kept = KeptFiles(limit=8)
    assert kept.read("/proc/sys/kernel/ostype") == read_text("/proc/sys/kernel/ostype") == "Linux\n"
    kept.close()


def test_a_file_longer_than_one_read_comes_whole(tmp_path):
    path = tmp_path / "long"
    text = "".join(f"line {i}\n" for i in range(40000))  # ~350 KiB
    path.write_text(text)
    kept = KeptFiles(limit=8)
    assert kept.read(str(path)) == text
    assert kept.read(str(path)) == text
    kept.close()


def test_missing_and_undecodable_files_read_as_none_and_are_not_kept(tmp_path):
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\x00")
    kept = KeptFiles(limit=8)
    assert kept.read(str(tmp_path / "absent")) is None
    assert kept.read(str(binary)) is None
    assert len(kept) == 0


def test_a_dead_file_is_dropped_and_its_path_opened_again():
    # A process's status file fails (ESRCH) once the process is gone, as a
    # removed cgroup's files fail with ENODEV.
    child = subprocess.Popen(["sleep", "60"])
    path = f"/proc/{child.pid}/status"
    kept = KeptFiles(limit=8)
    try:
        assert f"Pid:\t{child.pid}\n" in kept.read(path)
    finally:
        child.kill()
        child.wait()
    assert kept.read(path) is None
    assert len(kept) == 0


def test_fds_stay_bounded_and_a_file_of_the_least_recently_read_directory_goes_first():
    kept = KeptFiles(limit=3)
    before = _open_fds()
    for path in ("kernel/ostype", "fs/file-max", "vm/swappiness", "kernel/ostype", "kernel/osrelease", "net/core/somaxconn"):
        assert kept.read(f"/proc/sys/{path}") is not None
    assert len(kept) == 3
    assert _open_fds() == before + 3
    # kernel was read again after fs and vm: fs's file went first, then
    # vm's; kernel's two files are kept in the order they were opened.
    assert kept.paths() == ["/proc/sys/kernel/ostype", "/proc/sys/kernel/osrelease", "/proc/sys/net/core/somaxconn"]
    kept.close()
    assert _open_fds() == before


def test_a_directorys_kept_files_are_one_small_object_each_directory(tmp_path):
    """Not a key, an fd and an inode object per file: a thousand
    containers' files would otherwise be thousands of small objects, whose
    arenas a burst leaves behind (docs/performance.md, "Scale")."""
    directories = []
    for index in range(200):
        directory = tmp_path / f"c{index}"
        directory.mkdir()
        for name in ("memory.usage_in_bytes", "memory.stat", "memory.memsw.usage_in_bytes"):
            (directory / name).write_text("1\n")
        directories.append(str(directory))
    kept = KeptFiles(limit=4096)
    kept.read_in(directories[0], "memory.stat")  # the tables exist
    blocks_before = sys.getallocatedblocks()
    for directory in directories[1:]:
        for name in ("memory.usage_in_bytes", "memory.stat", "memory.memsw.usage_in_bytes"):
            assert kept.read_in(directory, name) == "1\n"
    blocks_per_directory = (sys.getallocatedblocks() - blocks_before) / 199
    assert len(kept) == 1 + 3 * 199
    # The array and its buffer (the old form took 7: three keys, three fds
    # and an inode).
    assert blocks_per_directory <= 2.5
    kept.close()


def test_a_files_column_is_not_mistaken_for_an_fd_or_inode_of_the_same_number():
    from array import array

    from procview._io import _pair_of

    # inode 5, then (column 3, fd 5) and (column 5, fd 9)
    files = array("q", [5, 3, 5, 5, 9])
    assert _pair_of(files, 5) == 3
    assert _pair_of(files, 3) == 1
    assert _pair_of(files, 9) == 0  # only an fd is 9
    assert _pair_of(array("q", [7]), 7) == 0  # only the inode is 7
