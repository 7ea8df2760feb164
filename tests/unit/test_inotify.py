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
        assert watch.add(str(tmp_path), 0.0)
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
        watch.add(str(tmp_path), 0.0)
        (tmp_path / "memory.max").read_text()
        assert not watch.written()
    finally:
        watch.close()


def test_forget_unused_stops_the_watches_not_added_since(tmp_path):
    kept, dropped = tmp_path / "kept", tmp_path / "dropped"
    kept.mkdir()
    dropped.mkdir()
    watch = WriteWatch()
    try:
        kept_wd, dropped_wd = watch.add(str(kept), 1.0), watch.add(str(dropped), 1.0)
        assert kept_wd and dropped_wd and kept_wd != dropped_wd
        assert watch.add(str(kept), 5.0) == kept_wd  # added again: still used
        assert watch.forget_unused(since=5.0) == 1
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
        assert not watch.add(str(tmp_path / "gone"), 0.0)
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
        first = watch.add(str(tmp_path), 0.0)
        assert watch.add(str(tmp_path) + "/", 0.0) == first and len(watch) == 1
        watch.forget_unused(since=1.0)
        _write(tmp_path / "memory.max")
        assert len(watch) == 0 and not watch.written()
    finally:
        watch.close()


def test_watches_are_kept_in_descriptor_order_with_when_each_was_added(tmp_path):
    """Two arrays in step, searched by bisection: a descriptor added out of
    order still finds its own time."""
    directories = [tmp_path / name for name in "abcd"]
    watch = WriteWatch()
    try:
        wds = []
        for at, directory in enumerate(directories):
            directory.mkdir()
            wds.append(watch.add(str(directory), float(at)))
        assert list(watch._wds) == sorted(wds)
        watch.add(str(directories[0]), 10.0)
        assert watch.forget_unused(since=3.0) == 2  # b and c, last added at 1 and 2
        assert sorted(watch._wds) == sorted([wds[0], wds[3]])
        assert dict(zip(watch._wds, watch._added)) == {wds[0]: 10.0, wds[3]: 3.0}
    finally:
        watch.close()
