"""KeptFiles: kernel files kept open and re-read with pread at offset 0."""

from __future__ import annotations

import os
import shutil
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
    # vm's; kernel's two files are kept in the order they were first read.
    assert kept.paths() == ["/proc/sys/kernel/ostype", "/proc/sys/kernel/osrelease", "/proc/sys/net/core/somaxconn"]
    kept.close()
    assert _open_fds() == before


class Tree:
    """A tree as KeptFiles takes it: where a key's directory is (a cgroup
    hierarchy's ``CgroupTree`` in the daemon)."""

    def __init__(self, top: str):
        self.top = top

    def directory(self, key: str) -> str | None:
        return None if key.startswith("/outside") else self.top + key


def _trees(tmp_path, names=("memory", "cpuacct", "pids")) -> list[Tree]:
    return [Tree(str(tmp_path / name)) for name in names]


def _make(tree: Tree, key: str, files: dict[str, str]) -> None:
    os.makedirs(tree.directory(key), exist_ok=True)
    for name, text in files.items():
        with open(os.path.join(tree.directory(key), name), "w") as f:
            f.write(text)


def test_a_file_in_a_tree_is_read_and_kept_by_its_key_and_name(tmp_path):
    memory, cpuacct, _pids = _trees(tmp_path)
    _make(memory, "/box/ctr", {"memory.stat": "m\n"})
    _make(cpuacct, "/box/ctr", {"cpuacct.usage": "7\n"})
    kept = KeptFiles(limit=8)
    key = "/box/ctr"
    for _ in range(2):
        assert kept.read_in(memory, key, "memory.stat") == "m\n"
        assert kept.read_in(cpuacct, key, "cpuacct.usage") == "7\n"
    assert len(kept) == 2
    # Its files in both trees go under the one key string.
    assert list(kept._rows) == [key] and next(iter(kept._rows)) is key
    assert kept.paths() == [memory.directory(key) + "/memory.stat", cpuacct.directory(key) + "/cpuacct.usage"]
    kept.close()


def test_one_name_in_two_trees_and_a_host_directory_of_the_keys_name_are_three_files(tmp_path):
    memory, cpuacct, _pids = _trees(tmp_path)
    _make(memory, "/c", {"cgroup.procs": "1\n"})
    _make(cpuacct, "/c", {"cgroup.procs": "2\n"})
    host = tmp_path / "host"
    _make(Tree(str(host)), "/c", {"cgroup.procs": "3\n"})
    kept = KeptFiles(limit=8)
    host_key = str(host / "c")
    for _ in range(2):
        assert kept.read_in(memory, "/c", "cgroup.procs") == "1\n"
        assert kept.read_in(cpuacct, "/c", "cgroup.procs") == "2\n"
        assert kept.read(host_key + "/cgroup.procs") == "3\n"
    assert len(kept) == 3
    kept.close()


def test_a_key_the_tree_does_not_reach_reads_as_none_and_keeps_nothing(tmp_path):
    (memory,) = _trees(tmp_path, ("memory",))
    kept = KeptFiles(limit=8)
    assert kept.read_in(memory, "/outside/ctr", "memory.stat") is None
    assert kept.read_in(memory, "/absent", "memory.stat") is None
    assert len(kept) == 0 and not kept._rows


def test_a_directory_replaced_in_one_tree_closes_only_that_trees_files(tmp_path):
    memory, cpuacct, _pids = _trees(tmp_path)
    for tree in (memory, cpuacct):
        _make(tree, "/ctr", {"a": "old\n", "b": "old\n"})
    kept = KeptFiles(limit=8)
    for tree in (memory, cpuacct):
        for name in ("a", "b"):
            assert kept.read_in(tree, "/ctr", name) == "old\n"
    assert kept.close_stale() == 0
    os.rename(memory.directory("/ctr"), str(tmp_path / "holder"))  # the old inode stays in use
    _make(memory, "/ctr", {"a": "new\n", "b": "new\n"})
    assert kept.close_stale() == 2
    assert kept.paths() == [cpuacct.directory("/ctr") + "/a", cpuacct.directory("/ctr") + "/b"]
    assert kept.read_in(memory, "/ctr", "a") == "new\n"
    kept.close()


def test_a_file_of_the_key_read_least_recently_goes_first(tmp_path):
    memory, cpuacct, _pids = _trees(tmp_path)
    for key in ("/one", "/two", "/three"):
        _make(memory, key, {"memory.stat": key + "\n"})
        _make(cpuacct, key, {"cpuacct.usage": key + "\n"})
    kept = KeptFiles(limit=3)
    kept.read_in(memory, "/one", "memory.stat")
    kept.read_in(memory, "/two", "memory.stat")
    kept.read_in(cpuacct, "/one", "cpuacct.usage")  # /one read again: /two is the least recent now
    kept.read_in(memory, "/three", "memory.stat")
    # The fourth file closed /two's; /one's two files, in both trees, stay.
    assert len(kept) == 3
    assert kept.paths() == [
        memory.directory("/one") + "/memory.stat", cpuacct.directory("/one") + "/cpuacct.usage",
        memory.directory("/three") + "/memory.stat",
    ]
    assert list(kept._rows) == ["/one", "/three"]
    kept.close()


def test_a_containers_kept_files_are_no_small_object_however_many_trees(tmp_path):
    """Not a directory string, a key, an fd and an inode object per file,
    nor an array per key (as it was: 2 blocks) or per hierarchy (9): a
    thousand containers' files would otherwise be thousands of small
    objects, whose arenas a burst leaves behind (docs/performance.md,
    "Scale"). A row of the table, at a slot below 257 (a cached int)."""
    trees = _trees(tmp_path)
    names = {"memory": ("memory.usage_in_bytes", "memory.stat", "memory.memsw.usage_in_bytes"),
             "cpuacct": ("cpuacct.usage",), "pids": ("pids.current",)}
    keys = []
    for index in range(200):
        key = f"/c{index}"
        for tree in trees:
            _make(tree, key, {name: "1\n" for name in names[os.path.basename(tree.top)]})
        keys.append(key)
    kept = KeptFiles(limit=4096)
    for tree in trees:  # the files' numbers and columns exist
        for name in names[os.path.basename(tree.top)]:
            kept.read_in(tree, keys[0], name)
    blocks_before = sys.getallocatedblocks()
    for key in keys[1:]:
        for tree in trees:
            for name in names[os.path.basename(tree.top)]:
                assert kept.read_in(tree, key, name) == "1\n"
    blocks_per_container = (sys.getallocatedblocks() - blocks_before) / 199
    assert len(kept) == 5 * 200
    assert blocks_per_container <= 0.5  # the dict's and arrays' growth
    kept.close()


def test_a_thousand_keys_with_a_file_each_cost_about_a_slots_int_each(tmp_path):
    """A key's row is its entry in the rows' dict and its slot's int (one
    small block past 256), its fd and inode cells in arrays ``malloc``
    holds: no array per key (that form took two blocks a key)."""
    (memory,) = _trees(tmp_path, ("memory",))
    keys = [f"/c{index}" for index in range(1000)]
    for key in keys:
        _make(memory, key, {"memory.stat": "1\n"})
    kept = KeptFiles(limit=4096)
    for key in keys[:300]:  # past the cached ints, the file's columns made
        kept.read_in(memory, key, "memory.stat")
    blocks_before = sys.getallocatedblocks()
    for key in keys[300:]:
        assert kept.read_in(memory, key, "memory.stat") == "1\n"
    blocks_per_key = (sys.getallocatedblocks() - blocks_before) / 700
    assert len(kept) == 1000
    assert 0.9 <= blocks_per_key <= 1.2
    kept.close()


def test_after_a_burst_the_columns_shrink_and_the_keys_left_read_from_their_new_slots(tmp_path):
    (memory,) = _trees(tmp_path, ("memory",))
    keys = [f"/c{index}" for index in range(300)]
    for key in keys:
        _make(memory, key, {"memory.stat": key + "\n", "memory.usage_in_bytes": "1\n"})
    kept = KeptFiles(limit=4096)
    for key in keys:
        kept.read_in(memory, key, "memory.stat")
    kept.read_in(memory, keys[-1], "memory.usage_in_bytes")
    for key in keys[:-2]:  # the burst goes; the last two stay
        shutil.rmtree(memory.directory(key))
    assert kept.close_stale() == 298
    assert len(kept) == 3 and list(kept._rows) == keys[-2:]
    assert all(len(column) == 2 for column in kept._fds + kept._inodes)
    fds = _open_fds()
    for _ in range(2):  # read from the files kept at their new slots, none opened
        assert kept.read_in(memory, keys[-2], "memory.stat") == keys[-2] + "\n"
        assert kept.read_in(memory, keys[-1], "memory.stat") == keys[-1] + "\n"
        assert kept.read_in(memory, keys[-1], "memory.usage_in_bytes") == "1\n"
    assert _open_fds() == fds and len(kept) == 3
    assert kept.paths() == [memory.directory(keys[-2]) + "/memory.stat", memory.directory(keys[-1]) + "/memory.stat",
                            memory.directory(keys[-1]) + "/memory.usage_in_bytes"]
    kept.close()
    assert _open_fds() == fds - 3


def test_at_the_limit_a_keys_only_file_makes_room_for_its_next():
    # The key read least recently is the one being read: its row is freed
    # and made again for the new file.
    kept = KeptFiles(limit=1)
    before = _open_fds()
    assert kept.read("/proc/sys/kernel/ostype") == "Linux\n"
    assert kept.read("/proc/sys/kernel/osrelease")
    assert kept.paths() == ["/proc/sys/kernel/osrelease"] and len(kept) == 1
    assert _open_fds() == before + 1
    assert kept.read("/proc/sys/kernel/ostype") == "Linux\n"
    assert kept.paths() == ["/proc/sys/kernel/ostype"]
    kept.close()
    assert _open_fds() == before
