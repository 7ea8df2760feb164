"""procview.views.loadavg: the kernel's load average, per container.

Expected values are worked out by hand from the kernel's formula::

    new = (load * EXP + active * (2048 - EXP) [+ 2047 if active >= load]) // 2048

with EXP_1 = 1884 (2048 - EXP_1 = 164), EXP_5 = 2014 (34), EXP_15 = 2037 (11),
and active = tasks * 2048. Example, one busy task from 0, first minute-average
step: (0 * 1884 + 2048 * 164 + 2047) // 2048 = 337919 // 2048 = 164.
"""

from __future__ import annotations

import math
import re

import pytest

from procview.views._inputs import TaskCensus
from procview.views.loadavg import (
    FIXED_1,
    LoadAverage,
    LoadTracker,
    calc_load,
    format_load,
    render_loadavg,
)
from small_objects import small_bytes_left_by

ONE_BUSY = TaskCensus(threads=3, running=1, blocked=0, last_pid=42)
IDLE = TaskCensus(threads=3, running=0, blocked=0, last_pid=42)
LOADAVG_LINE = re.compile(r"^\d+\.\d\d \d+\.\d\d \d+\.\d\d \d+/\d+ \d+\n$")


def fixed(average: LoadAverage) -> tuple[int, int, int]:
    """The averages back in the kernel's fixed point (exact: n / 2048)."""
    values = tuple(value * FIXED_1 for value in average)
    assert all(value == int(value) for value in values)
    return tuple(int(value) for value in values)


# -- the kernel's step -------------------------------------------------------


def test_calc_load_rising_rounds_up():
    # 0*1884 + 2048*164 = 335872; +2047 = 337919; // 2048 = 164
    assert calc_load(0, 1884, 2048) == 164
    # 164*1884 + 335872 = 644848; +2047 = 646895; // 2048 = 315
    assert calc_load(164, 1884, 2048) == 315


def test_calc_load_falling_rounds_down():
    # 2048*1884 + 0 = 3858432 // 2048 = 1884 exactly
    assert calc_load(2048, 1884, 0) == 1884
    # 1884*1884 = 3549456 // 2048 = 1733 (1733*2048 = 3549184, remainder 272)
    assert calc_load(1884, 1884, 0) == 1733


def test_calc_load_reaches_its_input_exactly():
    # One step short of 1.00: 2047*2037 + 2048*11 = 4169739 + 22528 = 4192267;
    # +2047 = 4194314 // 2048 = 2048 (2048*2048 = 4194304).
    assert calc_load(2047, 2037, 2048) == 2048
    # Falling from 1/2048 to idle: 1*2037 // 2048 = 0.
    assert calc_load(1, 2037, 0) == 0


# -- tracking over time ------------------------------------------------------


def test_first_read_starts_at_zero_but_counts_are_real():
    tracker = LoadTracker()
    census = TaskCensus(threads=143, running=2, blocked=1, last_pid=4321)
    averages = tracker.averages("c1", census, now=100.0)
    assert averages == LoadAverage(0.0, 0.0, 0.0)
    # Not LXCFS's "0/1 <host pid>" (defect D8).
    assert render_loadavg(averages, census) == "0.00 0.00 0.00 2/143 4321\n"


def test_one_busy_task_for_a_minute():
    tracker = LoadTracker()
    tracker.averages("c1", ONE_BUSY, now=0.0)
    for step in range(1, 13):  # samples at 5, 10, ..., 60 s
        tracker.sample("c1", ONE_BUSY, now=5.0 * step)
    averages = tracker.averages("c1", ONE_BUSY, now=60.0)
    # Twelve rising steps from 0, worked one by one:
    #   1-min : 164 315 454 582 700 808 908 1000 1084 1162 1233 1299
    #   5-min : 34 68 101 134 166 198 229 260 290 320 349 378
    #   15-min: 11 22 33 ... 132: from 11k, (11k*2037 + 2048*11 + 2047) // 2048
    #           = 11k + 11 + (2047 - 121k) // 2048 = 11(k+1) while 121k <= 2047
    assert fixed(averages) == (1299, 378, 132)
    # The continuous curve 1 - e^(-t/T) at t = 60 s, within fixed-point rounding.
    assert averages.one == pytest.approx(1 - math.exp(-1), abs=0.005)  # 0.6343 vs 0.6321
    assert averages.five == pytest.approx(1 - math.exp(-60 / 300), abs=0.005)  # 0.1846 vs 0.1813
    assert averages.fifteen == pytest.approx(1 - math.exp(-60 / 900), abs=0.005)  # 0.0645 vs 0.0645
    # 1299+10 = 1309 -> 0.(130900>>11 = 63); 378+10 -> 0.18; 132+10 -> 0.06
    assert render_loadavg(averages, ONE_BUSY) == "0.63 0.18 0.06 1/3 42\n"


def test_blocked_tasks_count_towards_load_but_not_running():
    tracker = LoadTracker()
    waiting = TaskCensus(threads=5, running=0, blocked=2, last_pid=9)
    tracker.averages("c1", waiting, now=0.0)
    tracker.sample("c1", waiting, now=5.0)
    averages = tracker.averages("c1", waiting, now=5.0)
    # active = 2 tasks = 4096: 1-min 4096*164 + 2047 = 673791 // 2048 = 328;
    # 5-min 4096*34 + 2047 = 141311 // 2048 = 68; 15-min 4096*11 + 2047 = 47103 // 2048 = 22
    assert fixed(averages) == (328, 68, 22)
    assert render_loadavg(averages, waiting) == "0.16 0.03 0.01 0/5 9\n"


def test_averages_takes_a_due_sample_itself():
    tracker = LoadTracker()
    tracker.averages("c1", ONE_BUSY, now=0.0)
    assert fixed(tracker.averages("c1", ONE_BUSY, now=4.9)) == (0, 0, 0)
    assert fixed(tracker.averages("c1", ONE_BUSY, now=5.0)) == (164, 34, 11)
    # The periodic task arrives late: the sample is already taken.
    tracker.sample("c1", ONE_BUSY, now=5.5)
    assert fixed(tracker.averages("c1", ONE_BUSY, now=6.0)) == (164, 34, 11)


def test_without_a_census_a_due_sample_waits_for_one():
    """``is_due`` tells a caller when it must pay for a census; a read
    without one never takes a step it cannot compute."""
    tracker = LoadTracker()
    assert not tracker.is_due("c1", 100.0)  # untracked
    tracker.averages("c1", None, now=0.0)
    assert not tracker.is_due("c1", 4.9)
    assert fixed(tracker.averages("c1", None, now=4.9)) == (0, 0, 0)
    assert tracker.is_due("c1", 5.0)
    assert fixed(tracker.averages("c1", None, now=5.0)) == (0, 0, 0)
    assert tracker.is_due("c1", 5.1)
    assert fixed(tracker.averages("c1", ONE_BUSY, now=5.1)) == (164, 34, 11)
    assert not tracker.is_due("c1", 5.2)


def test_missed_intervals_are_caught_up_with_the_latest_census():
    tracker = LoadTracker()
    tracker.averages("c1", IDLE, now=0.0)
    # Nobody sampled for 17 s: sample points 5, 10 and 15 were missed; all
    # three steps use this census (one busy task): 1-min 164, 315, 454;
    # 5-min 34, 68, 101; 15-min 11, 22, 33.
    tracker.sample("c1", ONE_BUSY, now=17.0)
    assert fixed(tracker.averages("c1", ONE_BUSY, now=17.0)) == (454, 101, 33)
    # The grid is kept: the next sample is due at 20, not at 22.
    assert tracker.keys_due(19.9) == []
    assert tracker.keys_due(20.0) == ["c1"]


def test_long_gap_converges_exactly():
    tracker = LoadTracker()
    tracker.averages("c1", ONE_BUSY, now=0.0)
    tracker.sample("c1", ONE_BUSY, now=100_000.0)  # 20000 missed steps
    busy = tracker.averages("c1", ONE_BUSY, now=100_000.0)
    assert fixed(busy) == (2048, 2048, 2048)
    assert render_loadavg(busy, ONE_BUSY) == "1.00 1.00 1.00 1/3 42\n"
    tracker.sample("c1", IDLE, now=200_000.0)
    assert fixed(tracker.averages("c1", IDLE, now=200_000.0)) == (0, 0, 0)


def test_idle_decay_steps():
    tracker = LoadTracker()
    tracker.averages("c1", ONE_BUSY, now=0.0)
    tracker.sample("c1", ONE_BUSY, now=100_000.0)  # at 1.00 exactly
    tracker.sample("c1", IDLE, now=100_005.0)
    # 2048*EXP // 2048 = EXP for each average
    assert fixed(tracker.averages("c1", IDLE, now=100_005.0)) == (1884, 2014, 2037)
    tracker.sample("c1", IDLE, now=100_010.0)
    # 1884*1884 // 2048 = 1733; 2014*2014 // 2048 = 1980; 2037*2037 // 2048 = 2026
    assert fixed(tracker.averages("c1", IDLE, now=100_010.0)) == (1733, 1980, 2026)


def test_sample_before_due_or_for_unknown_key_does_nothing():
    tracker = LoadTracker()
    tracker.averages("c1", IDLE, now=0.0)
    tracker.sample("c1", ONE_BUSY, now=4.0)
    assert fixed(tracker.averages("c1", IDLE, now=4.0)) == (0, 0, 0)
    tracker.sample("gone", ONE_BUSY, now=10.0)
    assert "gone" not in tracker
    assert len(tracker) == 1


def test_clock_going_backwards_takes_no_step():
    tracker = LoadTracker()
    tracker.averages("c1", IDLE, now=50.0)
    tracker.sample("c1", ONE_BUSY, now=10.0)
    tracker.sample("c1", ONE_BUSY, now=float("nan"))
    tracker.sample("c1", ONE_BUSY, now=float("inf"))
    assert fixed(tracker.averages("c1", IDLE, now=50.0)) == (0, 0, 0)


def test_keys_due():
    tracker = LoadTracker()
    assert tracker.keys_due(0.0) == []
    tracker.averages("c1", IDLE, now=0.0)
    assert tracker.keys_due(4.99) == []
    assert tracker.keys_due(5.0) == ["c1"]
    tracker.sample("c1", IDLE, now=5.0)
    assert tracker.keys_due(9.0) == []
    assert tracker.keys_due(10.0) == ["c1"]


def test_two_containers_are_tracked_independently():
    tracker = LoadTracker()
    tracker.averages("busy", ONE_BUSY, now=0.0)
    tracker.averages("idle", IDLE, now=2.0)  # its grid is 7, 12, ...
    assert tracker.keys_due(5.0) == ["busy"]
    tracker.sample("busy", ONE_BUSY, now=5.0)
    assert tracker.keys_due(7.0) == ["idle"]
    tracker.sample("idle", IDLE, now=7.0)
    assert sorted(tracker.keys_due(12.0)) == ["busy", "idle"]
    tracker.sample("busy", ONE_BUSY, now=12.0)
    tracker.sample("idle", IDLE, now=12.0)
    assert fixed(tracker.averages("busy", ONE_BUSY, now=12.0)) == (315, 68, 22)
    assert fixed(tracker.averages("idle", IDLE, now=12.0)) == (0, 0, 0)


def test_containers_not_read_expire():
    tracker = LoadTracker(expire_after=600.0)
    tracker.averages("c1", ONE_BUSY, now=0.0)
    tracker.averages("c2", ONE_BUSY, now=0.0)
    tracker.averages("c2", ONE_BUSY, now=300.0)  # read again: kept longer
    # Sampling by the periodic task is not a read.
    tracker.sample("c1", ONE_BUSY, now=595.0)
    assert tracker.forget_expired(599.9) == []
    assert tracker.keys_due(600.0) == ["c2"]  # c1 is expired: no census for it
    assert tracker.forget_expired(600.0) == ["c1"]
    assert "c1" not in tracker and "c2" in tracker
    assert tracker.forget_expired(900.0) == ["c2"]
    assert len(tracker) == 0
    # Read again later: tracked anew, from zero like a fresh boot.
    assert fixed(tracker.averages("c1", ONE_BUSY, now=1000.0)) == (0, 0, 0)


# -- formatting --------------------------------------------------------------


@pytest.mark.parametrize(
    "fixed_point, text",
    [
        (0, "0.00"),
        (10, "0.00"),  # 0.00488 + 0.00488 -> 20/2048 -> 2000 >> 11 = 0
        (11, "0.01"),  # 0.00537 + 0.00488 -> 21/2048 -> 2100 >> 11 = 1
        (1299, "0.63"),
        (2037, "0.99"),  # 2047/2048 -> 204700 >> 11 = 99
        (2038, "1.00"),  # 2048/2048
        (21504, "10.50"),  # 10.5 * 2048 + 10 = 21514: int 10, (1034*100) >> 11 = 50
    ],
)
def test_format_load_rounds_like_the_kernel(fixed_point, text):
    assert format_load(fixed_point / FIXED_1) == text


def test_render_clamps_nonsense():
    census = TaskCensus(threads=1, running=4, blocked=-3, last_pid=-1)
    text = render_loadavg(LoadAverage(-1.0, float("nan"), float("inf")), census)
    assert text == "0.00 0.00 0.00 4/4 0\n"


def test_render_format():
    census = TaskCensus(threads=143, running=2, blocked=0, last_pid=4321)
    text = render_loadavg(LoadAverage(0.52, 0.58, 12.25), census)
    assert LOADAVG_LINE.match(text)
    assert text == "0.52 0.58 12.25 2/143 4321\n"


# -- what the tracker keeps per container ------------------------------------


def test_the_tracker_keeps_no_object_per_container_but_its_slot():
    """A thousand containers' averages and times are numbers in the
    tracker's columns (malloc'd blocks): what is left in small objects per
    container is at most its slot's int (ints up to 256 are shared), not
    a record with its averages' tuple and floats (about 250 bytes)."""
    tracker = LoadTracker()
    keys = [("container", n) for n in range(1000)]

    def track_and_sample_each():
        for key in keys:
            tracker.averages(key, ONE_BUSY, now=0.0)
            tracker.averages(key, ONE_BUSY, now=5.0)  # one sample each

    assert small_bytes_left_by(track_and_sample_each) <= 1000 * 32  # a slot's int: 32 bytes
    assert fixed(tracker.averages(keys[7], ONE_BUSY, now=5.0)) == (164, 34, 11)


def test_forget_expired_packs_the_columns_a_burst_left():
    tracker = LoadTracker(expire_after=600.0)
    for n in range(1000):
        tracker.averages(n, ONE_BUSY, now=0.0)
    for n in range(0, 1000, 100):  # ten stay read, and sampled
        tracker.averages(n, ONE_BUSY, now=300.0)
    assert len(tracker.forget_expired(600.0)) == 990
    assert len(tracker._tracked.next_sample) == 10 and len(tracker._tracked.averages) == 10 * 3
    # Each survivor's averages and grid kept: 60 samples at 5..300 s, one more due at 605.
    expected = tracker.averages(0, ONE_BUSY, now=600.0)
    assert fixed(expected) != (0, 0, 0)
    for n in range(0, 1000, 100):
        assert tracker.averages(n, ONE_BUSY, now=600.0) == expected
        assert not tracker.is_due(n, 604.9) and tracker.is_due(n, 605.0)


def test_a_forgotten_container_read_again_starts_from_zero():
    tracker = LoadTracker()
    tracker.averages("c1", ONE_BUSY, now=0.0)
    tracker.averages("c2", IDLE, now=0.0)
    tracker.sample("c1", ONE_BUSY, now=5.0)
    tracker.forget("c1")
    tracker.forget("never tracked")  # harmless
    assert "c1" not in tracker and len(tracker) == 1
    assert fixed(tracker.averages("c1", ONE_BUSY, now=6.0)) == (0, 0, 0)
    assert tracker.keys_due(10.9) == ["c2"] and sorted(tracker.keys_due(11.0)) == ["c1", "c2"]
