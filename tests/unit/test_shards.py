"""The pure parts of ``procview serve --shards``: where each shard is
mounted, which shard serves a container, how a shard is started and how
soon it is started again (the daemons themselves: tests/integration/test_shards.py)."""

from __future__ import annotations

import zlib
from collections import Counter

import pytest

from procview import mounts
from procview.mounts import FSTYPE, Mount, shard_index, shard_mountpoint, shard_mountpoints, view_for_container
from procview.shards import MAX_SHARDS, RESTART_DELAYS, ShardError, ShardGroup, restart_delay, shard_argv

VIEW = "/var/lib/procview"


def mount(point: str, fstype: str = FSTYPE, mount_id: int = 30) -> Mount:
    return Mount(mount_id, 1, "0:50", "/", point, "rw", fstype, f"procview:{point}")


def test_shard_0_is_the_view_and_the_others_sit_beside_it():
    assert shard_mountpoint(VIEW, 0) == VIEW
    assert shard_mountpoint(VIEW, 1) == "/var/lib/procview.shards/1"
    assert shard_mountpoint(VIEW, 12) == "/var/lib/procview.shards/12"


def test_the_shard_of_a_container_is_the_same_in_every_process():
    container = "7c54ec7ee7afa727aa37262e3968b2b67e235b85e225c8b399630136feb86469"
    assert shard_index(container, 3) == zlib.crc32(container.encode()) % 3
    assert shard_index(container, 1) == 0 and shard_index("", 4) == 0


def test_ids_spread_evenly_over_the_shards():
    counts = Counter(shard_index(f"{n:064x}", 4) for n in range(4000))
    assert sorted(counts) == [0, 1, 2, 3]
    assert all(900 <= c <= 1100 for c in counts.values()), counts


def test_the_mount_table_lists_the_shards_in_order_after_the_view():
    table = [
        mount("/var/lib/procview.shards/2", mount_id=33),
        mount(VIEW, mount_id=31),
        mount("/var/lib/procview.shards/10", mount_id=34),
        mount("/var/lib/procview.shards/1", mount_id=32),
        mount("/var/lib/procview.shards/x"),  # not a shard's name
        mount("/var/lib/procview.shards/3", fstype="tmpfs"),  # not procview
        mount("/var/lib/procview2.shards/4"),  # another view's shard
    ]
    assert shard_mountpoints(table, VIEW) == [VIEW, "/var/lib/procview.shards/1", "/var/lib/procview.shards/2",
                                              "/var/lib/procview.shards/10"]
    assert shard_mountpoints([], VIEW) == [VIEW], "without shards the view alone"


def _ids_by_shard(count: int) -> dict[int, str]:
    ids = {}
    for n in range(100):
        ids.setdefault(shard_index(f"c{n}", count), f"c{n}")
    return ids


def test_a_container_goes_to_its_shard_or_to_the_view_when_that_shard_does_not_answer(monkeypatch):
    table = [mount(VIEW), mount("/var/lib/procview.shards/1")]
    answering = {VIEW, "/var/lib/procview.shards/1"}
    monkeypatch.setattr(mounts, "_own_mounts", lambda: table)
    monkeypatch.setattr(mounts, "_answers", lambda path: path in answering)
    ids = _ids_by_shard(2)
    assert view_for_container(VIEW, ids[0]) == VIEW
    assert view_for_container(VIEW, ids[1]) == "/var/lib/procview.shards/1"
    answering.discard("/var/lib/procview.shards/1")  # being started again
    assert view_for_container(VIEW, ids[1]) == VIEW


def test_a_shard_is_a_serve_without_syscalls_that_knows_its_parent():
    argv = shard_argv(2, "/v.shards/2", "debug", 7)
    assert argv[1:6] == ["-P", "-m", "procview", "serve", "/v.shards/2"]
    assert "--no-seccomp-socket" in argv
    assert argv[argv.index("--parent-fd") + 1] == "7" and argv[argv.index("--shard-index") + 1] == "2"
    assert argv[argv.index("--log-level") + 1] == "debug"


def test_a_shard_that_keeps_dying_is_started_again_ever_more_slowly():
    assert restart_delay(0) == 0.0, "after a steady run: at once"
    delays = [restart_delay(n) for n in range(1, 10)]
    assert delays == sorted(delays) and delays[0] > 0
    assert delays[-1] == RESTART_DELAYS[-1], "and never slower than the last step"


@pytest.mark.parametrize("count", [0, -1, MAX_SHARDS + 1])
def test_a_shard_count_out_of_range_is_refused(count):
    with pytest.raises(ShardError, match="--shards"):
        ShardGroup(VIEW, count)


def test_one_shard_starts_no_child():
    group = ShardGroup(VIEW, 1)
    assert group.shards == []
    group.start()  # nothing to start, nothing made
    group.stop()
