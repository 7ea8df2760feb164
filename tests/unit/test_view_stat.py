"""/proc/stat: the container's CPU time, tasks and boot time.

Hand-computed expectations use hz = 100 ticks per second, so 1 s = 100
ticks, and idle per view CPU = age * 100 * capacity / n - (user + system).
"""

import re
from pathlib import Path

import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from procview.cgroups import CpuTimes, CpuUsage
from procview.views import stat
from procview.views._inputs import ContainerTime, TaskCensus
from procview.views.cpuview import CpuView
from procview.views.stat import StatHistory, render_stat
from small_objects import small_bytes_left_by

HOST = Path(__file__).resolve().parent.parent / "fixtures" / "host"
STAT_2CPU = (HOST / "stat_2cpu.txt").read_text()  # this machine's
STAT_4CPU = (HOST / "stat_4cpu.txt").read_text()  # made up, 4 CPUs

SECOND = 1_000_000_000  # ns
HZ = 100
BTIME = 1_795_760_000


def at_age(age: float) -> ContainerTime:
    return ContainerTime(uptime=age, btime=BTIME, age=age)


def v2(user_s: float, system_s: float) -> CpuUsage:
    """cgroup v2 usage: totals only."""
    return CpuUsage(CpuTimes(round(user_s * SECOND), round(system_s * SECOND)), None)


def v1(per_cpu_seconds: dict[int, tuple[float, float]]) -> CpuUsage:
    """cgroup v1 usage: per real CPU (user s, system s); total = their sum."""
    per_cpu = {cpu: CpuTimes(round(u * SECOND), round(s * SECOND)) for cpu, (u, s) in per_cpu_seconds.items()}
    total = CpuTimes(sum(t.user_ns for t in per_cpu.values()), sum(t.system_ns for t in per_cpu.values()))
    return CpuUsage(total, per_cpu)


def cpu_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("cpu")]


def line_named(text: str, name: str) -> str:
    [line] = [line for line in text.splitlines() if line.split()[0] == name]
    return line


def render(host=STAT_2CPU, *, view, usage, age=100.0, census=None, history=None, key=None):
    return render_stat(host, view, usage, at_age(age), census, history, key, hz=HZ)


# -- user and system: whose time goes on which line -------------------------


def test_v1_one_view_cpu_takes_the_hidden_cpus_time():
    # Host CPUs 0 and 1, view = real CPU 0. CPU 1's 2 s + 0.5 s also land
    # on cpu0, so the line totals the cgroup's 5 s user, 1.5 s system.
    usage = v1({0: (3, 1), 1: (2, 0.5)})
    out = render(view=CpuView((0,), 1.0, True), usage=usage)
    assert cpu_lines(out) == [
        "cpu  500 0 150 9350 0 0 0 0 0 0",  # idle = 100 s * 100 * 1.0 - 650
        "cpu0 500 0 150 9350 0 0 0 0 0 0",
    ]


def test_v1_cpuset_1_is_renumbered_cpu0():
    usage = v1({0: (1, 0), 1: (4, 2)})
    out = render(view=CpuView((1,), 1.0, True), usage=usage)
    assert cpu_lines(out) == [
        "cpu  500 0 200 9300 0 0 0 0 0 0",
        "cpu0 500 0 200 9300 0 0 0 0 0 0",
    ]
    assert "cpu1" not in out


def test_v1_view_cpus_take_their_real_cpus_time_plus_an_even_share():
    # 4-CPU host, view = real CPUs 1 and 2. Hidden: CPU 0 (1.01 s user =
    # 101 ticks, 0.5 s system = 50) and CPU 3 (nothing). 101 ticks split
    # 51 + 50; 50 split 25 + 25. age 10 s, capacity 2: 1000 ticks per line.
    usage = v1({0: (1.01, 0.5), 1: (4, 2), 2: (1, 0.25), 3: (0, 0)})
    out = render(STAT_4CPU, view=CpuView((1, 2), 2.0, True), usage=usage, age=10.0)
    assert cpu_lines(out) == [
        "cpu  601 0 275 1124 0 0 0 0 0 0",  # = the cgroup's 6.01 s and 2.75 s
        "cpu0 451 0 225 324 0 0 0 0 0 0",  # real CPU 1: 400 + 51, 200 + 25
        "cpu1 150 0 50 800 0 0 0 0 0 0",  # real CPU 2: 100 + 50, 25 + 25
    ]


def test_v2_totals_are_spread_evenly():
    out = render(view=CpuView((0, 1), 2.0, False), usage=v2(7.01, 3), age=50.0)
    assert cpu_lines(out) == [
        "cpu  701 0 300 8999 0 0 0 0 0 0",
        "cpu0 351 0 150 4499 0 0 0 0 0 0",  # 5000 - 501
        "cpu1 350 0 150 4500 0 0 0 0 0 0",
    ]


def test_nanoseconds_round_down_to_ticks():
    # 9.999 ms is not yet one tick; 10 ms is.
    usage = CpuUsage(CpuTimes(9_999_999, 10_000_000), None)
    out = render(view=CpuView((0,), 1.0, True), usage=usage, age=1.0)
    assert cpu_lines(out)[1] == "cpu0 0 0 1 99 0 0 0 0 0 0"


# -- idle: what is left of the capacity ------------------------------------


def test_quota_of_one_and_a_half_cpus_on_two():
    # 100 s * 1.5 CPUs = 150 s = 15000 ticks, 7500 per line; 90 s used.
    out = render(view=CpuView((0, 1), 1.5, True), usage=v2(60, 30))
    assert cpu_lines(out) == [
        "cpu  6000 0 3000 6000 0 0 0 0 0 0",
        "cpu0 3000 0 1500 3000 0 0 0 0 0 0",
        "cpu1 3000 0 1500 3000 0 0 0 0 0 0",
    ]


def test_fractional_quota_of_half_a_cpu():
    out = render(view=CpuView((0,), 0.5, True), usage=v2(20, 10))
    assert cpu_lines(out)[1] == "cpu0 2000 0 1000 2000 0 0 0 0 0 0"  # 5000 - 3000


def test_using_the_whole_quota_is_100_percent_busy():
    out = render(view=CpuView((0,), 0.5, True), usage=v2(40, 10))
    assert cpu_lines(out)[1] == "cpu0 4000 0 1000 0 0 0 0 0 0 0"


def test_no_host_time_leaks_into_idle():
    # The same container on a busy and on an idle host shows the same lines.
    busy_host = STAT_2CPU
    idle_host = STAT_2CPU.replace("cpu0 ", "cpu0 9").replace("cpu1 ", "cpu1 9")
    view, usage = CpuView((0, 1), 2.0, False), v2(3, 1)
    assert cpu_lines(render(busy_host, view=view, usage=usage)) == cpu_lines(
        render(idle_host, view=view, usage=usage)
    )


def test_unknown_usage_shows_an_idle_container():
    out = render(view=CpuView((0, 1), 1.5, True), usage=None, age=10.0)
    assert cpu_lines(out) == [
        "cpu  0 0 0 1500 0 0 0 0 0 0",
        "cpu0 0 0 0 750 0 0 0 0 0 0",
        "cpu1 0 0 0 750 0 0 0 0 0 0",
    ]


# -- monotonic counters ----------------------------------------------------


def test_a_burst_over_the_quota_never_makes_idle_go_back():
    history = StatHistory()
    view = CpuView((0,), 0.5, True)
    first = render(view=view, usage=v2(30, 10), age=100.0, history=history, key="c1")
    assert cpu_lines(first)[1] == "cpu0 3000 0 1000 1000 0 0 0 0 0 0"
    # One second later the cgroup has used 12 s more (a burst): raw idle
    # would be 5050 - 5200 < 0, i.e. 0. The 1000 already shown stays.
    second = render(view=view, usage=v2(42, 10), age=101.0, history=history, key="c1")
    assert cpu_lines(second)[1] == "cpu0 4200 0 1000 1000 0 0 0 0 0 0"
    assert cpu_lines(second)[0] == "cpu  4200 0 1000 1000 0 0 0 0 0 0"
    # Idle resumes once the capacity has caught up: 6500 - 5200 = 1300.
    third = render(view=view, usage=v2(42, 10), age=130.0, history=history, key="c1")
    assert cpu_lines(third)[1] == "cpu0 4200 0 1000 1300 0 0 0 0 0 0"
    for earlier, later in [(first, second), (second, third)]:
        for a, b in zip(cpu_lines(earlier), cpu_lines(later)):
            assert all(x <= y for x, y in zip(map(int, a.split()[1:]), map(int, b.split()[1:])))


def test_without_history_the_burst_shows_as_it_is():
    view = CpuView((0,), 0.5, True)
    out = render(view=view, usage=v2(42, 10), age=101.0)
    assert cpu_lines(out)[1] == "cpu0 4200 0 1000 0 0 0 0 0 0 0"


def test_history_needs_a_key():
    history = StatHistory()
    view = CpuView((0,), 0.5, True)
    render(view=view, usage=v2(30, 10), history=history, key=None)
    out = render(view=view, usage=v2(42, 10), age=101.0, history=history, key=None)
    assert cpu_lines(out)[1] == "cpu0 4200 0 1000 0 0 0 0 0 0 0"


def test_history_is_per_container():
    history = StatHistory()
    view = CpuView((0,), 0.5, True)
    render(view=view, usage=v2(30, 10), history=history, key="c1")
    other = render(view=view, usage=v2(42, 10), age=101.0, history=history, key="c2")
    assert cpu_lines(other)[1] == "cpu0 4200 0 1000 0 0 0 0 0 0 0"


def test_a_new_cpu_count_starts_afresh():
    history = StatHistory()
    render(view=CpuView((0, 1), 2.0, False), usage=v2(30, 10), history=history, key="c1")
    out = render(view=CpuView((0,), 1.0, True), usage=v2(1, 1), age=1.0, history=history, key="c1")
    assert cpu_lines(out)[1] == "cpu0 100 0 100 0 0 0 0 0 0 0"


def test_forget_starts_afresh():
    history = StatHistory()
    view = CpuView((0,), 0.5, True)
    render(view=view, usage=v2(30, 10), census=TaskCensus(5, 1, 0, 900), history=history, key="c1")
    history.forget("c1")
    history.forget("never-seen")  # harmless
    out = render(view=view, usage=v2(1, 1), age=4.0, census=TaskCensus(2, 1, 0, 7), history=history, key="c1")
    assert cpu_lines(out)[1] == "cpu0 100 0 100 0 0 0 0 0 0 0"
    assert line_named(out, "processes") == "processes 7"


def test_monotonic_is_element_wise_max():
    history = StatHistory()
    assert history.monotonic("k", [[5, 0, 1], [2, 0, 2]]) == [[5, 0, 1], [2, 0, 2]]
    assert history.monotonic("k", [[4, 1, 1], [3, 0, 0]]) == [[5, 1, 1], [3, 0, 2]]
    assert history.monotonic("k", [[1, 1, 1]]) == [[1, 1, 1]]  # CPU count changed


# -- the other lines -------------------------------------------------------


def test_other_lines_in_the_hosts_order_with_container_values():
    out = render(view=CpuView((0,), 1.0, True), usage=v2(1, 1), census=TaskCensus(12, 3, 1, 57))
    names = [line.split()[0] for line in out.splitlines()]
    assert names == [
        "cpu", "cpu0", "intr", "ctxt", "btime", "processes", "procs_running", "procs_blocked", "softirq",
    ]  # fmt: skip
    assert line_named(out, "ctxt") == "ctxt 0"
    assert line_named(out, "btime") == f"btime {BTIME}"
    assert line_named(out, "processes") == "processes 57"
    assert line_named(out, "procs_running") == "procs_running 3"
    assert line_named(out, "procs_blocked") == "procs_blocked 1"
    assert out.endswith("\n") and not out.endswith("\n\n")


@pytest.mark.parametrize("host", [STAT_2CPU, STAT_4CPU])
@pytest.mark.parametrize("name", ["intr", "softirq"])
def test_interrupt_lines_are_zeros_with_the_hosts_column_count(host, name):
    out = render(host, view=CpuView((0,), 1.0, True), usage=None)
    columns = line_named(out, name).split()[1:]
    assert len(columns) == len(line_named(host, name).split()[1:])
    assert set(columns) == {"0"}


def test_without_a_census_the_reader_itself_runs():
    out = render(view=CpuView((0,), 1.0, True), usage=None, census=None)
    assert line_named(out, "processes") == "processes 1"
    assert line_named(out, "procs_running") == "procs_running 1"
    assert line_named(out, "procs_blocked") == "procs_blocked 0"


def test_procs_running_counts_the_reader():
    out = render(view=CpuView((0,), 1.0, True), usage=None, census=TaskCensus(4, 0, 2, 30))
    assert line_named(out, "procs_running") == "procs_running 1"
    assert line_named(out, "procs_blocked") == "procs_blocked 2"


def test_processes_never_decrease_and_survive_a_missing_census():
    history = StatHistory()
    view = CpuView((0,), 1.0, True)
    out = render(view=view, usage=None, census=TaskCensus(4, 1, 0, 300), history=history, key="c1")
    assert line_named(out, "processes") == "processes 300"
    out = render(view=view, usage=None, census=None, history=history, key="c1")
    assert line_named(out, "processes") == "processes 300"
    # pid_max wrapped: the highest pid is lower, the fork count is not.
    out = render(view=view, usage=None, census=TaskCensus(4, 1, 0, 12), history=history, key="c1")
    assert line_named(out, "processes") == "processes 300"
    out = render(view=view, usage=None, census=TaskCensus(4, 1, 0, 301), history=history, key="c1")
    assert line_named(out, "processes") == "processes 301"


def test_unknown_host_lines_are_kept():
    host = STAT_2CPU.replace("ctxt ", "future_counter 7 8\nctxt ")
    out = render(host, view=CpuView((0,), 1.0, True), usage=None)
    assert "\nfuture_counter 7 8\nctxt 0\n" in out


def test_host_text_without_cpu_lines_gets_them_first():
    out = render("btime 5\n", view=CpuView((0,), 1.0, True), usage=None, age=1.0)
    assert out == f"cpu  0 0 0 100 0 0 0 0 0 0\ncpu0 0 0 0 100 0 0 0 0 0 0\nbtime {BTIME}\n"


def test_empty_host_text_gives_cpu_lines_only():
    out = render("", view=CpuView((0,), 1.0, True), usage=None, age=1.0)
    assert out == "cpu  0 0 0 100 0 0 0 0 0 0\ncpu0 0 0 0 100 0 0 0 0 0 0\n"


def test_odd_times_never_raise_or_go_negative():
    time = ContainerTime(uptime=float("nan"), btime=-1, age=float("nan"))
    out = render_stat(STAT_2CPU, CpuView((0,), 1.0, True), v2(1, 1), time, None, hz=HZ)
    assert cpu_lines(out)[1] == "cpu0 100 0 100 0 0 0 0 0 0 0"
    assert line_named(out, "btime") == line_named(STAT_2CPU, "btime")  # the host's
    assert "-" not in out


def test_usage_backwards_is_clamped_at_zero():
    usage = CpuUsage(CpuTimes(-5 * SECOND, 2 * SECOND), None)
    out = render(view=CpuView((0,), 1.0, True), usage=usage, age=10.0)
    assert cpu_lines(out)[1] == "cpu0 0 0 200 800 0 0 0 0 0 0"


def test_user_hz_is_the_systems_clock_tick():
    import os

    assert stat.USER_HZ == os.sysconf("SC_CLK_TCK")


# -- parsed as the tools parse it ------------------------------------------


def rendered_for_tools(view: CpuView) -> str:
    usage = v1({0: (3, 1), 1: (2, 0.5), 2: (1, 1), 3: (0, 0)})
    census = TaskCensus(9, 2, 0, 41)
    return render_stat(STAT_4CPU, view, usage, at_age(100.0), census, hz=stat.USER_HZ)


@pytest.mark.parametrize(
    "view", [CpuView((0,), 0.5, True), CpuView((1, 2), 1.5, True), CpuView((0, 1, 2, 3), 4.0, False)]
)
def test_psutil_reads_n_cpus_and_the_container_counters(view, tmp_path, monkeypatch):
    text = rendered_for_tools(view)
    (tmp_path / "stat").write_text(text)
    monkeypatch.setattr(psutil, "PROCFS_PATH", str(tmp_path))
    per_cpu = psutil.cpu_times(percpu=True)
    assert len(per_cpu) == view.count
    expected_user = [int(line.split()[1]) / stat.USER_HZ for line in cpu_lines(text)[1:]]
    assert [times.user for times in per_cpu] == expected_user
    assert psutil.cpu_times().idle == int(cpu_lines(text)[0].split()[4]) / stat.USER_HZ
    assert psutil.boot_time() == BTIME
    cpu_stats = psutil.cpu_stats()
    assert (cpu_stats.ctx_switches, cpu_stats.interrupts, cpu_stats.soft_interrupts) == (0, 0, 0)


def procps_parse(text: str) -> dict:
    """/proc/stat the way procps-ng's library reads it: sscanf of the "cpu "
    line (10 numbers), then the "cpuN" lines that follow it, up to the first
    other line; then strstr() for each named counter and sscanf of one
    number after it."""
    lines = text.split("\n")
    assert re.fullmatch(r"cpu  \d+( \d+){9}", lines[0])
    result = {"cpu": [int(v) for v in lines[0].split()[1:]], "cpus": []}
    for line in lines[1:]:
        match = re.fullmatch(r"cpu(\d+)((?: \d+){10})", line)
        if not match:
            break
        assert int(match.group(1)) == len(result["cpus"])
        result["cpus"].append([int(v) for v in match.group(2).split()])
    for name in ["intr", "ctxt", "btime", "processes", "procs_running", "procs_blocked"]:
        match = re.search(r"(?:^|\n)" + name + r" (\d+)", text)
        assert match, name
        result[name] = int(match.group(1))
    return result


@pytest.mark.parametrize("view", [CpuView((0,), 0.5, True), CpuView((1, 2), 1.5, True)])
def test_procps_reads_n_cpus_and_the_counters(view):
    parsed = procps_parse(rendered_for_tools(view))
    assert len(parsed["cpus"]) == view.count
    assert parsed["cpu"] == [sum(column) for column in zip(*parsed["cpus"])]
    assert (parsed["intr"], parsed["ctxt"], parsed["btime"]) == (0, 0, BTIME)
    assert (parsed["processes"], parsed["procs_running"], parsed["procs_blocked"]) == (41, 2, 0)


# -- properties ------------------------------------------------------------

views = st.integers(min_value=1, max_value=4).flatmap(
    lambda n: st.tuples(
        st.just(n),
        st.floats(min_value=0.01, max_value=n, allow_nan=False),
        st.permutations(range(4)).map(lambda cpus: tuple(sorted(cpus[:n]))),
    )
).map(lambda t: CpuView(t[2], round(t[1], 4), True))

steps = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=50, allow_nan=False),  # seconds later
        st.lists(st.integers(min_value=0, max_value=30 * SECOND), min_size=8, max_size=8),  # ns more, per CPU
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=200, deadline=None)
@given(view=views, start_age=st.floats(min_value=0, max_value=1e6, allow_nan=False), steps=steps, v2_mode=st.booleans())
def test_no_column_ever_decreases_and_nothing_is_negative(view, start_age, steps, v2_mode):
    history = StatHistory()
    age = start_age
    used = [0] * 8  # user ns and system ns of real CPUs 0..3
    previous = None
    for seconds_later, more in steps:
        age += seconds_later
        used = [u + m for u, m in zip(used, more)]
        per_cpu = {cpu: CpuTimes(used[2 * cpu], used[2 * cpu + 1]) for cpu in range(4)}
        total = CpuTimes(sum(used[0::2]), sum(used[1::2]))
        usage = CpuUsage(total, None if v2_mode else per_cpu)
        out = render_stat(STAT_4CPU, view, usage, at_age(age), None, history, "k", hz=HZ)
        lines = [[int(v) for v in line.split()[1:]] for line in cpu_lines(out)]
        assert len(lines) == view.count + 1
        assert all(value >= 0 for line in lines for value in line)
        assert lines[0] == [sum(column) for column in zip(*lines[1:])]
        if previous is not None:
            for old, new in zip(previous, lines):
                assert all(a <= b for a, b in zip(old, new)), (old, new)
        previous = lines


@settings(max_examples=200, deadline=None)
@given(
    view=views,
    age=st.floats(min_value=0, max_value=1e6, allow_nan=False),
    user=st.integers(min_value=0, max_value=10**15),
    system=st.integers(min_value=0, max_value=10**15),
)
def test_busy_plus_idle_is_the_capacity_unless_over_quota(view, age, user, system):
    out = render_stat(STAT_4CPU, view, CpuUsage(CpuTimes(user, system), None), at_age(age), None, hz=HZ)
    for line in cpu_lines(out)[1:]:
        u, _, s, idle = (int(v) for v in line.split()[1:5])
        capacity = int(age * HZ * view.capacity / view.count)
        assert idle == max(0, capacity - u - s)
    total = [int(v) for v in cpu_lines(out)[0].split()[1:]]
    assert total[0] == user * HZ // SECOND and total[2] == system * HZ // SECOND


# -- what the history keeps per container ----------------------------------


def _two_cpu_lines(n: int) -> list[list[int]]:
    return [[100_000 + n, 0, 50_000 + n, 900_000 + n, 0, 0, 0, 0, 0, 0] for _cpu in range(2)]


def test_the_history_keeps_no_object_per_container_but_its_slot():
    """A thousand containers' counters are rows in one table's arrays
    (malloc'd blocks): what is left in small objects per container is at
    most its slot's int (ints up to 256 are shared), not an array of its
    own (an object and, below 512 bytes, its buffer: 253 bytes here)."""
    history = StatHistory()
    keys = [("container", n) for n in range(1000)]
    lines = [_two_cpu_lines(n) for n in range(1000)]

    def show_each_once():
        for key, per_cpu in zip(keys, lines):
            history.monotonic(key, per_cpu)
            history.processes(key, 4000)

    assert small_bytes_left_by(show_each_once) <= 1000 * 32  # a slot's int: 32 bytes
    assert history.monotonic(keys[7], lines[0]) == lines[7] and history.processes(keys[7], None) == 4000


def test_drop_spare_room_packs_the_rows_a_burst_left():
    history = StatHistory()
    for n in range(1000):
        history.monotonic(n, _two_cpu_lines(n))
        history.processes(n, n)
    history.processes("no cpu lines yet", 5)
    for n in range(1000):
        if n % 100:
            history.forget(n)
    history.forget("no cpu lines yet")
    history.drop_spare_room()
    (table,) = history._tables.values()  # no empty table of rows without CPU lines
    assert len(table.counters) == 10 * 20 and len(table.processes) == 10
    for n in range(0, 1000, 100):  # each survivor's row kept whole
        assert history.monotonic(n, _two_cpu_lines(0)) == _two_cpu_lines(n)
        assert history.processes(n, None) == max(1, n)
        assert n in history


def test_a_new_cpu_count_moves_the_row_and_keeps_processes():
    history = StatHistory()
    assert history.processes("c1", 300) == 300  # before any CPU line
    history.monotonic("c1", _two_cpu_lines(5))
    assert history.monotonic("c1", [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]) == [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]
    assert history.processes("c1", 12) == 300
    assert [len(table) for table in history._tables.values()] == [0, 0, 1]  # in one table only
    history.forget("c1")
    assert "c1" not in history and history.processes("c1", None) == 1
