"""What a burst of containers and readers leaves behind in the daemon:
one copy of each container's cgroup and key however often it is read, and
tables emptied after the burst sized for what is left (an emptied dict
keeps the size it grew to). Over copies of the fixture machines
(tests/fixtures/README.md)."""

from __future__ import annotations

import os
import shutil
import sys

import pytest
import trio

from procview import identity
from procview._io import KeptFiles
from procview.engine import ViewEngine
from procview.fs import ProcviewFS, _OpenFile

from test_engine import FIXTURES, LAYOUTS, FakeClock

CONTAINER_INIT, CONTAINER_PROCESS = 200, 201
EMPTY_DICT_SIZE = sys.getsizeof({})


@pytest.fixture(params=LAYOUTS)
def machine(request, tmp_path, monkeypatch):
    """A writable copy of a fixture machine and an engine over it that
    reads the container init's cgroup again at every request."""
    monkeypatch.setattr(identity, "CGROUP_TTL", 0.0)
    root = tmp_path / request.param
    shutil.copytree(os.path.join(FIXTURES, request.param), root, symlinks=True)
    return root, ViewEngine(root=str(root), clock=FakeClock())


def test_a_container_read_again_is_handed_the_same_cgroup_and_key(machine):
    _root, engine = machine
    first = engine.identity.container_of(CONTAINER_PROCESS)
    again = engine.identity.container_of(CONTAINER_PROCESS)
    assert again.cgroup is first.cgroup
    assert again.key is first.key
    assert first.key == (first.cgroup.key, first.init_start)


def test_every_table_of_the_engine_holds_the_one_key(machine):
    _root, engine = machine
    for _ in range(3):
        for path in ("proc/stat", "proc/loadavg", "proc/meminfo"):
            engine.render(path, CONTAINER_PROCESS)
    key = engine.identity.container_of(CONTAINER_PROCESS).key
    for table in (engine._seen, engine._limits, engine.stat_history._per_cpu):
        assert [k for k in table if k is key] == list(table) == [key]


def test_an_init_moved_to_another_cgroup_is_another_container(machine):
    root, engine = machine
    before = engine.identity.container_of(CONTAINER_PROCESS)
    cgroup_file = root / "proc" / str(CONTAINER_INIT) / "cgroup"
    cgroup_file.write_text(cgroup_file.read_text().replace("/parent/ctr", "/parent"))
    after = engine.identity.container_of(CONTAINER_PROCESS)
    assert after.cgroup.path == "/parent" and before.cgroup.path == "/parent/ctr"
    assert after.key != before.key


def test_kept_files_of_a_thousand_gone_directories_leave_tables_of_nothing(tmp_path):
    kept = KeptFiles(limit=4096)
    for index in range(1000):
        directory = tmp_path / f"c{index}"
        directory.mkdir()
        (directory / "memory.stat").write_text("x\n")
        kept.read(str(directory / "memory.stat"))
        shutil.rmtree(directory)
    assert kept.close_stale() == 1000
    assert len(kept) == 0
    for table in (kept._fds, kept._dir_inodes, kept._dir_files):
        assert sys.getsizeof(table) == EMPTY_DICT_SIZE


def test_the_open_files_table_is_new_once_the_last_file_is_released():
    fs = ProcviewFS(ViewEngine(root=os.path.join(FIXTURES, "v2"), clock=FakeClock()))
    entry = fs._entry(1)
    for fh in range(1, 5001):  # a burst of files the kernel has not released yet
        fs._open_files[fh] = _OpenFile(1, entry, 1, b"x")

    async def release_all():
        for fh in range(1, 5001):
            await fs.release(fh)

    trio.run(release_all)
    assert fs._open_files == {}
    assert sys.getsizeof(fs._open_files) == EMPTY_DICT_SIZE
