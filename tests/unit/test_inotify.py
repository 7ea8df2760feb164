"""procview.inotify.WriteWatch on a temporary directory (inotify works on
any file system; the daemon uses it on cgroup directories)."""

import struct

from procview.inotify import WriteWatch, _any_write


def _write(path, text="1"):
    with open(path, "w") as f:
        f.write(text)


def test_a_write_in_a_watched_directory_is_seen_once(tmp_path):
    (tmp_path / "memory.max").write_text("max")
    watch = WriteWatch()
    try:
        assert watch.add(str(tmp_path))
        assert not watch.written()
        _write(tmp_path / "memory.max", "268435456")
        assert watch.written()
        assert not watch.written(), "the events were consumed"
    finally:
        watch.close()


def test_reading_is_not_writing(tmp_path):
    (tmp_path / "memory.max").write_text("max")
    watch = WriteWatch()
    try:
        watch.add(str(tmp_path))
        (tmp_path / "memory.max").read_text()
        assert not watch.written()
    finally:
        watch.close()


def test_keep_only_stops_watching_the_others(tmp_path):
    kept, dropped = tmp_path / "kept", tmp_path / "dropped"
    kept.mkdir()
    dropped.mkdir()
    watch = WriteWatch()
    try:
        kept_wd, dropped_wd = watch.add(str(kept)), watch.add(str(dropped))
        assert kept_wd and dropped_wd and kept_wd != dropped_wd
        watch.keep_only({kept_wd})
        assert len(watch) == 1
        _write(dropped / "cpu.max")
        assert not watch.written()
        _write(kept / "cpu.max")
        assert watch.written()
    finally:
        watch.close()


def test_a_directory_that_does_not_exist_is_refused(tmp_path):
    watch = WriteWatch()
    try:
        assert not watch.add(str(tmp_path / "gone"))
        assert len(watch) == 0
    finally:
        watch.close()


def _event(mask: int, name: bytes = b"") -> bytes:
    padded = name + b"\0" * (16 - len(name) % 16) if name else b""
    return struct.pack("iIII", 1, mask, 0, len(padded)) + padded


def test_the_kernels_notices_on_event_counters_are_not_writes():
    assert not _any_write(_event(0x2, b"memory.events") + _event(0x2, b"cgroup.events.local"))
    assert not _any_write(_event(0x8000))  # IN_IGNORED: a watch went away
    assert _any_write(_event(0x2, b"memory.events") + _event(0x2, b"memory.max"))
    assert _any_write(_event(0x2))  # a watch on the file itself: no name
    assert _any_write(_event(0x4000))  # the queue overflowed: a write may be lost


def test_a_directory_watched_again_has_the_same_descriptor_and_one_watch(tmp_path):
    """The kernel knows a watched directory: no table of directory strings
    is needed to watch each once."""
    watch = WriteWatch()
    try:
        first = watch.add(str(tmp_path))
        assert watch.add(str(tmp_path) + "/") == first and len(watch) == 1
        watch.keep_only(set())
        _write(tmp_path / "memory.max")
        assert len(watch) == 0 and not watch.written()
    finally:
        watch.close()
