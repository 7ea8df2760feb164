"""KeptFiles: kernel files kept open and re-read with pread at offset 0."""

from __future__ import annotations

import os
import subprocess

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


def test_fds_stay_bounded_and_the_least_recently_read_goes_first():
    kept = KeptFiles(limit=3)
    before = _open_fds()
    for name in ("ostype", "osrelease", "hostname", "ostype", "domainname"):
        assert kept.read(f"/proc/sys/kernel/{name}") is not None
    assert len(kept) == 3
    assert _open_fds() == before + 3
    # ostype was read again after osrelease, so osrelease went first.
    assert list(kept._fds) == ["/proc/sys/kernel/hostname", "/proc/sys/kernel/ostype", "/proc/sys/kernel/domainname"]
    kept.close()
    assert _open_fds() == before
