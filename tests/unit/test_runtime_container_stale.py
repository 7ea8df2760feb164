"""``container.cleanup_stale``: what a killed ``procview run`` left goes;
what a live one is making stays (runtime/container.py)."""

import fcntl
import os
import time

from procview.runtime.container import UNLOCKED_GRACE, cleanup_stale


def _make(containers, name, lock=True, age=0.0):
    path = containers / name
    path.mkdir(parents=True)
    if lock:
        (path / "lock").write_text("")
    (path / "merged").mkdir()
    if age:
        then = time.time() - age
        os.utime(path, (then, then))
    return path


def test_a_directory_being_claimed_is_left_alone(tmp_path):
    # _claim_directory creates the lock file, then locks it: in between,
    # another run's cleanup must not take the directory for stale.
    claiming = _make(tmp_path, ".new-abc")
    cleanup_stale(str(tmp_path), hierarchies=None)
    assert claiming.exists()


def test_unlocked_leftovers_go_once_old_and_locked_ones_stay(tmp_path):
    abandoned_claim = _make(tmp_path, ".new-old", age=UNLOCKED_GRACE + 5)
    killed = _make(tmp_path, "killed")
    killed_before_lock = _make(tmp_path, "early", lock=False, age=UNLOCKED_GRACE + 5)
    just_started = _make(tmp_path, "young", lock=False)
    live = _make(tmp_path, "live")
    fd = os.open(live / "lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        cleanup_stale(str(tmp_path), hierarchies=None)
    finally:
        os.close(fd)
    assert not abandoned_claim.exists() and not killed.exists() and not killed_before_lock.exists()
    assert just_started.exists() and live.exists()
