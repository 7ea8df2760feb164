"""``/proc/loadavg``: a container's own load averages, computed the kernel's way.

How the kernel does it (``kernel/sched/loadavg.c``): every ``LOAD_FREQ``
(5 s) it counts the *active* tasks, those running (state R) plus those in
uninterruptible sleep (state D, usually waiting for I/O), and folds that count
into three exponentially decaying averages::

    avg = (avg * EXP + active * (FIXED_1 - EXP)) / FIXED_1

in fixed point with ``FSHIFT`` = 11 fractional bits (``FIXED_1`` = 2048 is
1.0). ``EXP_n`` = 2048 / e^(5 s / n min): 1884, 2014 and 2037 for the 1-, 5-
and 15-minute averages. After one minute of one busy task the 1-minute
average is about 1 - 1/e = 0.63, not 1.00: it is a moving average.

The kernel keeps one set of averages for the whole machine. A container
needs its own, so ``LoadTracker`` keeps one set per container, fed with a
``TaskCensus`` of that container's tasks. It tracks only containers that are
read (a container nobody asks about costs nothing) and forgets one that has
not been read for a while (LXCFS instead scans every container's tasks every
5 s from a thread, which stalls with hundreds of containers).

Time is passed in (monotonic seconds), never read here, so tests can drive
the clock; all state lives in the ``LoadTracker`` instance.
"""

from __future__ import annotations

import functools
import math
from array import array
from typing import NamedTuple

from procview.columns import Columns
from procview.views._inputs import TaskCensus

# The kernel's fixed-point constants (include/linux/sched/loadavg.h).
FSHIFT = 11
FIXED_1 = 1 << FSHIFT  # 1.0 in fixed point
EXP_1 = 1884  # FIXED_1 / exp(5 s / 1 min)
EXP_5 = 2014  # FIXED_1 / exp(5 s / 5 min)
EXP_15 = 2037  # FIXED_1 / exp(5 s / 15 min)
_DECAYS = (EXP_1, EXP_5, EXP_15)
_AVERAGES = len(_DECAYS)  # 1-, 5- and 15-minute


class LoadAverage(NamedTuple):
    """The 1-, 5- and 15-minute load averages (tasks; 1.0 = one busy task).

    Values made by ``LoadTracker`` are exact multiples of 1/2048 (the
    kernel's fixed point), so they round-trip to fixed point without loss.
    """

    one: float
    five: float
    fifteen: float


# A container's averages before its first sample (shared by all of them).
_NO_LOAD = LoadAverage(0.0, 0.0, 0.0)


def calc_load(load: int, exp: int, active: int) -> int:
    """One 5-second step of one average, exactly as the kernel's
    ``calc_load``: ``load`` and ``active`` are fixed point (active tasks
    times FIXED_1), ``exp`` is one of the EXP_* decay factors.

    The kernel rounds up while the load is rising and down while it falls,
    so a constantly busy container reaches exactly 1.00 and an idle one
    exactly 0.00 instead of stopping one step short.
    """
    new_load = load * exp + active * (FIXED_1 - exp)
    if active >= load:
        new_load += FIXED_1 - 1
    return new_load // FIXED_1


def active_tasks(census: TaskCensus) -> int:
    """Tasks that count towards load: running (R) plus blocked (D), as the
    kernel counts them; a garbled negative count counts as none."""
    return max(0, census.running) + max(0, census.blocked)


class LoadTracker:
    """Kernel-style exponentially decaying load averages, one per tracked container.

    Only containers that are read are tracked (track on first render); a
    container not read for ``expire_after`` seconds is dropped.

    Keys are whatever identifies a container to the caller (a cgroup path,
    say); they only need to be hashable. Who calls what:

    - every read of ``/proc/loadavg`` calls ``averages()`` with a fresh census;
    - the daemon's periodic task calls ``keys_due()`` and, for each key, takes
      a census and calls ``sample()``, so the averages keep decaying on time
      while nobody reads;
    - the same task calls ``forget_expired()`` now and then.

    A sample due when ``averages()`` is called is taken there and then from
    its census, so reads never see a stale value even if the periodic task is
    late. When several intervals were missed (no census for 17 s: three
    steps), each missed step is applied with the latest census, as if the
    container's task counts had not changed meanwhile: the approximation the
    kernel itself makes for CPUs that slept through sample points (its
    ``calc_load_n``). The remainder of a partial interval is kept, so samples
    stay on a 5-second grid.
    """

    INTERVAL = 5.0  # seconds between samples, as the kernel's LOAD_FREQ

    def __init__(self, expire_after: float = 600.0):
        self.expire_after = expire_after
        # Per tracked container, in columns (procview/columns.py: no object
        # per container but its key's slot, which a burst of containers
        # would leave in arenas the daemon then keeps): its three averages,
        # when its next sample is due, when it was last read. The averages
        # are kept as the floats a read returns: each is a whole number of
        # 1/2048ths, so the kernel's fixed point is recovered exactly.
        self._tracked = Columns(averages=("d", 0.0, _AVERAGES), next_sample=("d", 0.0), last_read=("d", 0.0))

    def averages(self, key, census: TaskCensus | None, now: float) -> LoadAverage:
        """Called on every read: starts tracking ``key`` if new, feeds
        ``census`` as the latest sample and returns the current averages.
        Costs a dict lookup unless a sample is due. ``census`` may be None
        when ``is_due`` said no sample is due (a census costs a read of
        every thread's status, which a frequent caller should not pay)."""
        tracked = self._tracked
        slot = tracked.slot(key)
        if slot < 0:
            # Like the kernel at boot: the averages start at 0 and the
            # first sample is taken one interval after tracking starts.
            slot = tracked.add(key)
            tracked.next_sample[slot] = now + self.INTERVAL
            tracked.last_read[slot] = now
            return _NO_LOAD
        if now > tracked.last_read[slot]:
            tracked.last_read[slot] = now
        if now >= tracked.next_sample[slot]:  # the cheap test first: a read is frequent
            self._catch_up(slot, census, now)
        # Made at each read: short-lived, not kept (an idle container's
        # are the shared zeros).
        averages, start = tracked.averages, slot * _AVERAGES
        one, five, fifteen = averages[start], averages[start + 1], averages[start + 2]
        return LoadAverage(one, five, fifteen) if one or five or fifteen else _NO_LOAD

    def is_due(self, key, now: float) -> bool:
        """Whether ``averages(key, ...)`` at ``now`` needs a census."""
        slot = self._tracked.slot(key)
        return slot >= 0 and now >= self._tracked.next_sample[slot] and math.isfinite(now)

    def keys_due(self, now: float) -> list:
        """Keys whose next 5-second sample is due (expired keys excluded:
        nobody reads them, so they are not worth a census)."""
        next_sample = self._tracked.next_sample
        return [
            key
            for key, slot in self._tracked.items()
            if now >= next_sample[slot] and not self._expired(slot, now)
        ]

    def sample(self, key, census: TaskCensus, now: float) -> None:
        """Take the sample(s) due for ``key`` by ``now``: one 5-second step,
        or several if intervals were missed. Does nothing if no sample is due
        or ``key`` is not tracked (it may have expired since ``keys_due``)."""
        slot = self._tracked.slot(key)
        if slot >= 0:
            self._catch_up(slot, census, now)

    def forget_expired(self, now: float) -> list:
        """Stop tracking containers not read for ``expire_after`` seconds;
        return the keys dropped. Then the columns are sized for the
        containers left (the room a burst of them left)."""
        expired = [key for key, slot in self._tracked.items() if self._expired(slot, now)]
        for key in expired:
            self._tracked.remove(key)
        self._tracked.drop_spare_room()
        return expired

    def forget(self, key) -> None:
        """Stop tracking ``key`` (its container is gone)."""
        self._tracked.remove(key)

    def __len__(self) -> int:
        return len(self._tracked)

    def __contains__(self, key) -> bool:
        return key in self._tracked

    # -- internals: a tracked container by its slot, good for one call -----

    def _expired(self, slot: int, now: float) -> bool:
        return now - self._tracked.last_read[slot] >= self.expire_after

    def _catch_up(self, slot: int, census: TaskCensus | None, now: float) -> None:
        steps = self._steps_due(slot, now)
        if steps and census is not None:
            averages, start = self._tracked.averages, slot * _AVERAGES
            loads = tuple([int(value * FIXED_1) for value in averages[start : start + _AVERAGES]])
            decayed = _decay(loads, active_tasks(census) * FIXED_1, steps)
            averages[start : start + _AVERAGES] = array("d", [load / FIXED_1 for load in decayed])
            self._tracked.next_sample[slot] += steps * self.INTERVAL

    def _steps_due(self, slot: int, now: float) -> int:
        """Whole sample points passed by ``now`` (0 if none; a clock that
        went backwards or is not finite takes no step)."""
        next_sample = self._tracked.next_sample[slot]
        if not math.isfinite(now) or now < next_sample:
            return 0
        return 1 + int((now - next_sample) // self.INTERVAL)


def _decay(loads: tuple[int, int, int], active: int, steps: int) -> tuple[int, int, int]:
    """Apply ``steps`` kernel steps with the same ``active`` (fixed point).

    With a constant input the kernel's rounding reaches ``active`` exactly and
    then stays there, so the loop stops early: a long gap costs at most a few
    thousand steps, never one per missed interval.
    """
    for _ in range(steps):
        if all(load == active for load in loads):
            break
        loads = tuple(calc_load(load, exp, active) for load, exp in zip(loads, _DECAYS))
    return loads


# -- rendering ---------------------------------------------------------------


def _to_fixed(value: float) -> int:
    """A load as the kernel's fixed point; nonsense (negative, NaN, inf) is 0."""
    if not math.isfinite(value) or value <= 0:
        return 0
    return round(value * FIXED_1)


def format_load(value: float) -> str:
    """One average as ``/proc/loadavg`` prints it: the kernel's ``LOAD_INT``
    and ``LOAD_FRAC`` after adding ``FIXED_1/200`` (10, i.e. half of 0.01,
    so the truncation to 2 decimals rounds)."""
    fixed = _to_fixed(value) + FIXED_1 // 200
    whole = fixed >> FSHIFT
    hundredths = ((fixed & (FIXED_1 - 1)) * 100) >> FSHIFT
    return f"{whole}.{hundredths:02d}"


@functools.lru_cache(maxsize=4096)
def format_loads(averages: LoadAverage) -> str:
    """The three averages as ``/proc/loadavg`` prints them, remembered:
    a container's averages change once per 5 s sample, and its file may be
    read thousands of times in between."""
    return " ".join([format_load(value) for value in averages])


def render_loadavg(averages: LoadAverage, census: TaskCensus) -> str:
    """``/proc/loadavg`` for a container, e.g. ``0.52 0.58 0.59 2/143 4321``.

    Fields (the kernel's ``loadavg_proc_show``):

    1-3. the 1-, 5- and 15-minute load averages from ``LoadTracker``, 2
         decimals rounded the kernel's way (``format_load``);
    4.   ``running/threads``: the container's tasks in state R, and all its
         threads, from ``census`` right now, so even the first read (when
         the averages are still 0) shows real counts, not LXCFS's ``0/1``;
    5.   the last pid: ``census.last_pid``, a pid of the container's own pid
         namespace (the kernel also prints the reader's namespace's last
         pid; LXCFS printed a host pid here).

    Counts below 0 are printed as 0; ``threads`` is at least ``running``
    (the two are counted a moment apart and a tool may divide one by the
    other).
    """
    running = max(0, census.running)
    threads = max(running, census.threads)
    last_pid = max(0, census.last_pid)
    return f"{format_loads(averages)} {running}/{threads} {last_pid}\n"


__all__ = [
    "LoadAverage",
    "LoadTracker",
    "calc_load",
    "active_tasks",
    "format_load",
    "format_loads",
    "render_loadavg",
    "FSHIFT",
    "FIXED_1",
    "EXP_1",
    "EXP_5",
    "EXP_15",
]
