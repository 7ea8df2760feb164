"""What the engine tracks per container is dropped when the container
goes (its cgroup removed, its init exited), not only after FORGET_AFTER;
files kept open in directories that are gone are closed; the inits of
exited pid namespaces are dropped with their pidfds. Over copies of the
fixture machines (tests/fixtures/README.md)."""

from __future__ import annotations

import glob
import os
import shutil

import pytest

from procview._io import KeptFiles
from procview.engine import ViewEngine
from procview.views.loadavg import LoadTracker

from test_engine import FIXTURES, LAYOUTS, FakeClock

CONTAINER_INIT, CONTAINER_PROCESS = 200, 201


@pytest.fixture(params=LAYOUTS)
def machine(request, tmp_path):
    """A writable copy of a fixture machine, and an engine over it."""
    root = tmp_path / request.param
    shutil.copytree(os.path.join(FIXTURES, request.param), root, symlinks=True)
    return root, ViewEngine(root=str(root), clock=FakeClock())


def _read_everything(engine) -> tuple:
    for path in ("proc/stat", "proc/loadavg", "proc/meminfo"):
        engine.render(path, CONTAINER_PROCESS)
    engine.sysinfo(CONTAINER_PROCESS)
    key = engine.identity.container_of(CONTAINER_PROCESS).key
    assert engine._last_seen(key) is not None and key in engine.loads and key in engine._ram_counters
    return key


def _assert_forgotten(engine, key) -> None:
    assert key not in engine._tracked  # its last read, limits and census
    assert key not in engine.loads
    assert key not in engine.stat_history
    assert key not in engine._ram_counters


def _remove_cgroup(root) -> None:
    for directory in glob.glob(str(root / "**" / "parent" / "ctr"), recursive=True):
        shutil.rmtree(directory)


def _end_init(root) -> None:
    shutil.rmtree(root / "proc" / str(CONTAINER_INIT))  # its cgroup stays (a runtime may reuse it)


@pytest.mark.parametrize("goes", [_remove_cgroup, _end_init], ids=["cgroup removed", "init exited"])
def test_a_container_that_is_gone_is_forgotten_at_the_next_pass(machine, goes):
    root, engine = machine
    key = _read_everything(engine)
    goes(root)
    engine.clock.now += ViewEngine.GONE_CHECK_AFTER
    engine.maintain()
    _assert_forgotten(engine, key)


def test_a_live_container_stays_tracked_however_idle_until_forget_after(machine):
    _root, engine = machine
    key = _read_everything(engine)
    engine.clock.now += ViewEngine.FORGET_AFTER - 1
    engine.maintain()
    assert engine._last_seen(key) is not None and key in engine.loads
    engine.clock.now += 1
    engine.maintain()
    _assert_forgotten(engine, key)


def test_a_container_read_lately_is_not_checked(machine, monkeypatch):
    """Reads never wait for the check: containers read within
    GONE_CHECK_AFTER cost the maintenance pass nothing."""
    _root, engine = machine
    _read_everything(engine)
    checked = []
    monkeypatch.setattr(engine, "_is_gone", lambda container: checked.append(container) or False)
    engine.maintain()
    assert checked == []
    engine.clock.now += ViewEngine.GONE_CHECK_AFTER
    engine.maintain()
    assert len(checked) == 1


def test_the_inits_of_exited_namespaces_are_dropped(machine):
    root, engine = machine
    engine.render("proc/meminfo", CONTAINER_PROCESS)
    assert len(engine.identity._inits) == 1
    assert engine.identity.forget_exited_inits() == 0
    _end_init(root)
    assert engine.identity.forget_exited_inits() == 1
    assert len(engine.identity._inits) == 0


def test_load_tracker_forgets_one_key():
    tracker = LoadTracker()
    tracker.averages("a", None, 0.0)
    tracker.averages("b", None, 0.0)
    tracker.forget("a")
    tracker.forget("never tracked")
    assert "a" not in tracker and "b" in tracker


# -- KeptFiles.close_stale ------------------------------------------------------


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_files_of_a_removed_directory_are_closed_and_others_kept(tmp_path):
    gone, stays = tmp_path / "gone", tmp_path / "stays"
    for directory in (gone, stays):
        directory.mkdir()
        for name in ("a", "b"):
            (directory / name).write_text(f"{directory.name} {name}\n")
    fds_before = _open_fds()
    kept = KeptFiles(limit=8)
    for path in (gone / "a", gone / "b", stays / "a"):
        assert kept.read(str(path)) is not None
    assert len(kept) == 3
    assert kept.close_stale() == 0
    shutil.rmtree(gone)
    assert kept.close_stale() == 2
    assert len(kept) == 1
    assert kept.read(str(stays / "a")) == "stays a\n"
    kept.close()
    assert _open_fds() == fds_before


def test_files_of_a_directory_made_anew_are_closed(tmp_path):
    """A cgroup removed and made again under the same name: the old files
    are dead (ENODEV on a cgroup) and must not pin the old one."""
    directory = tmp_path / "ctr"
    directory.mkdir()
    (directory / "memory.stat").write_text("old\n")
    kept = KeptFiles(limit=8)
    assert kept.read(str(directory / "memory.stat")) == "old\n"
    holder = tmp_path / "holder"  # keeps the old inode number from being handed out again
    directory.rename(holder)
    directory.mkdir()
    (directory / "memory.stat").write_text("new\n")
    assert kept.close_stale() == 1
    assert len(kept) == 0
    assert kept.read(str(directory / "memory.stat")) == "new\n"
    kept.close()


def test_a_file_closed_as_the_oldest_leaves_no_directory_behind(tmp_path):
    kept = KeptFiles(limit=2)
    for index in range(5):
        directory = tmp_path / f"d{index}"
        directory.mkdir()
        (directory / "f").write_text("x\n")
        kept.read(str(directory / "f"))
    assert len(kept) == 2
    assert sorted(os.path.basename(d) for d in kept._rows) == ["d3", "d4"]
    kept.close()
