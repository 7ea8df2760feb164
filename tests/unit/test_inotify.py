"""procview.inotify.WriteWatch on a temporary directory (inotify works on
any file system; the daemon uses it on cgroup directories)."""

from procview.inotify import WriteWatch


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
        assert watch.add(str(kept)) and watch.add(str(dropped))
        watch.keep_only({str(kept)})
        assert len(watch) == 1 and watch.watching(str(kept))
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
