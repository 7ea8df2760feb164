"""``/proc/stat`` as a container sees it.

The kernel's file (proc(5)) starts with CPU time lines, in clock ticks
(USER_HZ, 100 per second on every common architecture)::

    cpu  user nice system idle iowait irq softirq steal guest guest_nice
    cpu0 ...                       one line per online CPU
    intr <total> <count per interrupt number ...>
    ctxt <context switches since boot>
    btime <boot time, epoch seconds>
    processes <forks since boot>
    procs_running <tasks runnable now>
    procs_blocked <tasks in uninterruptible sleep now>
    softirq <total> <count per softirq kind ...>

Tools use it for three things: the number of ``cpuN`` lines is a CPU count
(glibc's ``get_nprocs`` fallback, ``top``'s rows, ``psutil.cpu_percent``'s
list, Node's ``os.cpus()``); the differences between two reads of the time
columns are CPU usage percentages (``top``, ``vmstat``, ``mpstat``); btime
is the boot time (``psutil.boot_time``, ``ps`` START).

Inside a container every line is about the container:

- n ``cpuN`` lines, one per view CPU, renumbered ``cpu0..cpu{n-1}``, the
  same CPUs that cpuinfo and ``cpu/online`` show.
- user and system are the cgroup's own CPU time. idle is what is left of
  the container's CPU capacity since it started: a container that uses its
  whole quota is 100% busy, whatever the host does (LXCFS adds the host's
  idle time instead, so a container's idle tracks the host: D2; on cgroup v2
  it shows the host's times outright: D3).
- Counters never go backwards between reads (``StatHistory``), even when a
  burst uses more than the quota for a moment (LXCFS's idle does: D1).
- The host-wide counters (intr, ctxt, softirq) are shown as zeros and the
  task counters come from the container's own tasks (LXCFS copies all of
  them from the host: D4).
"""

from __future__ import annotations

import os
import threading
from array import array
from collections.abc import Hashable

from procview.cgroups import CpuUsage
from procview.columns import Columns
from procview.views._inputs import ContainerTime, TaskCensus
from procview.views.cpuview import CpuView


def _clock_ticks_per_second() -> int:
    try:
        ticks = os.sysconf("SC_CLK_TCK")
    except (AttributeError, ValueError, OSError):
        return 100
    return ticks if ticks > 0 else 100


# The unit of /proc/stat's time columns: USER_HZ, what sysconf(_SC_CLK_TCK)
# reports to user space (fixed at 100 by the kernel ABI on x86, arm64, ...).
USER_HZ = _clock_ticks_per_second()

NANOSECONDS_PER_SECOND = 10**9

# The columns of a cpu line, in the kernel's order.
CPU_COLUMNS = (
    "user", "nice", "system", "idle", "iowait",
    "irq", "softirq", "steal", "guest", "guest_nice",
)  # fmt: skip
USER, NICE, SYSTEM, IDLE = 0, 1, 2, 3

# Lines whose whole content is a host-wide interrupt count: zeroed.
_INTERRUPT_COUNT_LINES = ("intr", "softirq")


class StatHistory:
    """Per-container memory of the counters last shown, so they never decrease.

    A /proc/stat reader computes usage as the difference between two reads;
    a counter that goes down gives it a negative or absurd percentage. The
    values behind our counters can go down: idle is derived
    (capacity - busy), and a burst over the quota makes busy outrun the
    capacity for a moment. So for each container (``key``) we remember what
    we last showed and show the element-wise maximum of that and the new
    values: a stalled counter is honest, a shrinking one is not.

    The engine calls ``forget(key)`` when a container goes away (or is
    replaced by a new one with the same key, whose counters start again),
    and ``drop_spare_room()`` at its maintenance. Safe to share between
    threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # What was last shown, in columns (procview/columns.py: no object
        # per container but its key's slot, which a burst of containers
        # would leave in arenas the daemon then keeps). A container's row:
        # its processes count, its number of CPU lines, and each CPU's
        # counters in turn (int64s: the kernel's counters are u64
        # nanoseconds at most, far fewer ticks). Rows of as many counters
        # share a table, one per width (a column has one width); each
        # container is in one table, and moves only when its CPU count
        # does. Width 0: no CPU lines shown yet.
        self._tables: dict[int, Columns] = {}

    def monotonic(self, key: Hashable, per_cpu_columns: list[list[int]]) -> list[list[int]]:
        """Per-CPU columns that are >= every earlier result for ``key``.

        Returns the element-wise max of the last result and
        ``per_cpu_columns`` and remembers it. When the number of CPUs (or of
        columns) differs from last time, the old lines describe other CPUs:
        start again from ``per_cpu_columns``. (Every line has the same
        number of columns, as cpu lines do.)
        """
        return self.shown(key, per_cpu_columns, None)[0]

    def shown(self, key: Hashable, per_cpu_columns: list[list[int]], forks: int | None) -> tuple[list[list[int]], int]:
        """``monotonic(key, per_cpu_columns)`` and ``processes(key, forks)``
        at once: what a read of /proc/stat shows, for one lock and one
        look-up of ``key``'s row."""
        new = [value for columns in per_cpu_columns for value in columns]
        width = len(new)
        with self._lock:
            table = self._tables.get(width)
            slot = table.slot(key) if table is not None else -1
            if slot < 0 or table.cpus[slot] != len(per_cpu_columns):
                table, slot = self._start_again(key, len(per_cpu_columns), new)
            else:
                counters = table.counters
                for index, value in enumerate(new, slot * width):
                    if value > counters[index]:
                        counters[index] = value
            processes = table.processes
            if forks is not None and forks > processes[slot]:
                processes[slot] = forks
            lines, start, counters = [], slot * width, table.counters
            for columns in per_cpu_columns:
                lines.append(counters[start : start + len(columns)].tolist())
                start += len(columns)
            return lines, processes[slot]

    def processes(self, key: Hashable, forks: int | None) -> int:
        """The ``processes`` count to show: never below the last one shown
        for ``key`` (a pid counter that wraps would otherwise go down), 1
        when nothing is known."""
        with self._lock:
            table, slot = self._find(key)
            if table is None:  # no CPU lines shown yet: a row of none
                table = self._table(0)
                slot = table.add(key)
            processes = table.processes
            if forks is not None and forks > processes[slot]:
                processes[slot] = forks
            return processes[slot]

    def forget(self, key: Hashable) -> None:
        with self._lock:
            self._forget(key)

    def drop_spare_room(self) -> None:
        """After containers were forgotten: tables sized for what is left
        (their slots numbered again), and none of rows nobody has."""
        with self._lock:
            for width, table in list(self._tables.items()):
                if table:
                    table.drop_spare_room()
                else:
                    del self._tables[width]

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return self._find(key)[0] is not None

    # -- internals, under the lock -------------------------------------------

    def _table(self, width: int) -> Columns:
        """The table of rows of ``width`` counters (made if none)."""
        table = self._tables.get(width)
        if table is None:
            table = self._tables[width] = Columns(processes=("q", 1), cpus=("q", 0), counters=("q", 0, width))
        return table

    def _start_again(self, key: Hashable, cpus: int, counters: list[int]) -> tuple[Columns, int]:
        """A row for ``key`` of these counters as they are (its processes
        count kept), in the table of rows as wide: (table, slot)."""
        processes = self._forget(key)
        width = len(counters)
        table = self._table(width)
        slot = table.add(key)
        table.processes[slot], table.cpus[slot] = processes, cpus
        table.counters[slot * width : slot * width + width] = array("q", counters)
        return table, slot

    def _find(self, key: Hashable) -> tuple[Columns | None, int]:
        """The table that has ``key``'s row, and its slot there."""
        for table in self._tables.values():
            slot = table.slot(key)
            if slot >= 0:
                return table, slot
        return None, -1

    def _forget(self, key: Hashable) -> int:
        """Drop ``key``'s row; returns its processes count (1 if none)."""
        table, slot = self._find(key)
        if table is None:
            return 1
        processes = table.processes[slot]
        table.remove(key)
        return processes


def render_stat(
    host_text: str,
    view: CpuView,
    usage: CpuUsage | None,
    time: ContainerTime,
    census: TaskCensus | None,
    history: StatHistory | None = None,
    key: Hashable | None = None,
    hz: int = USER_HZ,
) -> str:
    """Render ``/proc/stat`` for one container.

    CPU lines (``cpu`` total first, then ``cpu0..cpu{n-1}``, n = view.count),
    placed where the host's CPU lines were. For view CPU i:

    - user, system: the cgroup's CPU time (nanoseconds * hz // 10**9).
      cgroup v1 (``usage.per_cpu`` known): real CPU ``view.cpus[i]``'s own
      time, plus an even share of the time the cgroup spent on real CPUs
      outside the view (a cpuset wider than a quota-limited view, or CPUs
      since removed), so the lines add up to the cgroup's total, up to
      rounding to whole ticks. cgroup v2 (``per_cpu`` None: ``cpu.stat``
      has totals only): ``usage.total`` spread evenly over the n lines.
      Unknown usage (None): 0.
    - idle: ``time.age * hz * view.capacity / n - (user + system)``, at
      least 0. The container's capacity (its quota, or its CPUs) since it
      started, minus what it used: a container using its whole quota is
      100% busy, and no host time leaks in.
    - nice, iowait, irq, softirq, steal, guest, guest_nice: 0. cgroups do
      not account them per container: cgroup v1 cpuacct and v2 cpu.stat
      split time into user and system only, and a cgroup's user time
      already includes the time of its niced tasks.
    - With ``history`` and ``key``: each column is at least what was last
      shown for ``key`` (see ``StatHistory``). Without them the values are
      as computed.

    The ``cpu`` total line is the column sums of the per-CPU lines (after
    that maximum, so it never decreases either).

    The other lines keep the host's order; unknown lines are kept as they are:

    - ``intr`` and ``softirq``: all zeros, as many columns as the host's
      line (parsers index the columns by interrupt number). Linux counts
      interrupts per CPU, never per cgroup, and a container's share cannot
      be derived; a host count of millions would say the container did work
      it did not do (LXCFS copies the host's: D4).
    - ``ctxt``: 0, for the same reason (context switches are counted per
      task and per CPU, not per cgroup).
    - ``btime``: ``time.btime``, the boot time that agrees with this
      caller's /proc/uptime and /proc/PID/stat start times.
    - ``processes``: forks since boot. Approximated by ``census.last_pid``,
      the highest pid allocated in the container's pid namespace (pids are
      handed out in order, so this counts the forks there until pid_max
      wraps); never below the last value shown for ``key``. Without a
      census: the last value shown, or 1.
    - ``procs_running``: ``census.running``, at least 1 (the reader itself
      is running as the kernel writes this line); 1 without a census.
    - ``procs_blocked``: ``census.blocked``; 0 without a census.

    Never raises; never prints a negative number.
    """
    host_lines = (host_text or "").splitlines()
    per_cpu = _per_cpu_columns(view, usage, time, hz)
    forks = census.last_pid if census is not None else None
    if history is not None and key is not None:
        per_cpu, forks = history.shown(key, per_cpu, forks)
    task_counts = _task_counts(census, forks)

    cpu_lines = _cpu_lines(per_cpu)
    out: list[str] = []
    cpu_lines_placed = False
    for line in host_lines:
        if not _is_cpu_line(line):
            out.append(_container_line(line, time, task_counts))
        elif not cpu_lines_placed:  # the host's cpu lines are replaced as a whole
            out.extend(cpu_lines)
            cpu_lines_placed = True
    if not cpu_lines_placed:  # odd host text without cpu lines: put ours first
        out = cpu_lines + out
    return "\n".join(out) + "\n"


# -- cpu lines ------------------------------------------------------------


def _per_cpu_columns(view: CpuView, usage: CpuUsage | None, time: ContainerTime, hz: int) -> list[list[int]]:
    """The ten columns of each view CPU's line, before the history maximum."""
    count = view.count
    if count == 0:
        return []
    user, system = _busy_ticks(view, usage, hz)
    capacity_ticks = _capacity_ticks_per_cpu(view, time, hz)
    lines = []
    for i in range(count):
        columns = [0] * len(CPU_COLUMNS)
        columns[USER] = user[i]
        columns[SYSTEM] = system[i]
        columns[IDLE] = max(0, capacity_ticks - user[i] - system[i])
        lines.append(columns)
    return lines


def _busy_ticks(view: CpuView, usage: CpuUsage | None, hz: int) -> tuple[list[int], list[int]]:
    """(user ticks, system ticks) of each view CPU."""
    count = view.count
    if usage is None:
        return [0] * count, [0] * count
    if usage.per_cpu is None:
        return (
            _spread_evenly(_ticks(usage.total.user_ns, hz), count),
            _spread_evenly(_ticks(usage.total.system_ns, hz), count),
        )
    shown = set(view.cpus)
    hidden = [times for cpu, times in usage.per_cpu.items() if cpu not in shown]
    hidden_user = _spread_evenly(_ticks(sum(t.user_ns for t in hidden), hz), count)
    hidden_system = _spread_evenly(_ticks(sum(t.system_ns for t in hidden), hz), count)
    user, system = [], []
    for i, real_cpu in enumerate(view.cpus):
        own = usage.per_cpu.get(real_cpu)
        user.append((_ticks(own.user_ns, hz) if own else 0) + hidden_user[i])
        system.append((_ticks(own.system_ns, hz) if own else 0) + hidden_system[i])
    return user, system


def _capacity_ticks_per_cpu(view: CpuView, time: ContainerTime, hz: int) -> int:
    """CPU time, in ticks, that one view CPU line stands for: the
    container's capacity since it started, shared by its n lines."""
    age = time.age if time.age > 0 else 0.0  # also turns nan into 0
    try:
        return max(0, int(age * hz * view.capacity / view.count))
    except (OverflowError, ValueError):  # inf or nan capacity
        return 0


def _ticks(nanoseconds: int, hz: int) -> int:
    return max(0, nanoseconds) * hz // NANOSECONDS_PER_SECOND


def _spread_evenly(total: int, count: int) -> list[int]:
    """``total`` split into ``count`` whole shares that add up to it; the
    first CPUs take the remainder. Each share grows with the total, so
    spreading keeps counters rising."""
    share, remainder = divmod(total, count)
    return [share + (1 if i < remainder else 0) for i in range(count)]


def _cpu_lines(per_cpu: list[list[int]]) -> list[str]:
    totals = [sum(column) for column in zip(*per_cpu)] or [0] * len(CPU_COLUMNS)
    # The kernel pads the total's label to the width of "cpuN".
    lines = [_format_cpu_line("cpu ", totals)]
    lines += [_format_cpu_line(f"cpu{i}", columns) for i, columns in enumerate(per_cpu)]
    return lines


def _format_cpu_line(label: str, columns: list[int]) -> str:
    return label + " " + " ".join(str(max(0, value)) for value in columns)


def _is_cpu_line(line: str) -> bool:
    label = line.split(maxsplit=1)[0] if line.strip() else ""
    return label.startswith("cpu") and (label == "cpu" or label[3:].isdigit())


# -- other lines ----------------------------------------------------------


def _task_counts(census: TaskCensus | None, forks: int | None) -> dict[str, int]:
    """The task lines' values (see ``render_stat``)."""
    running, blocked = (census.running, census.blocked) if census is not None else (1, 0)
    return {
        "processes": max(1, forks or 0),
        "procs_running": max(1, running),
        "procs_blocked": max(0, blocked),
    }


def _container_line(line: str, time: ContainerTime, task_counts: dict[str, int]) -> str:
    """One non-cpu host line, rewritten for the container."""
    fields = line.split()
    if not fields:
        return line
    name = fields[0]
    if name in _INTERRUPT_COUNT_LINES:
        return " ".join([name] + ["0"] * max(1, len(fields) - 1))
    if name == "ctxt":
        return "ctxt 0"
    if name == "btime":
        btime = _whole_seconds(time.btime)
        return f"btime {btime}" if btime is not None else line  # odd input: the host's
    if name in task_counts:
        return f"{name} {task_counts[name]}"
    return line


def _whole_seconds(value: float) -> int | None:
    """``value`` as whole seconds; None when it is negative, inf or nan."""
    try:
        seconds = int(value)
    except (OverflowError, TypeError, ValueError):
        return None
    return seconds if seconds >= 0 else None
