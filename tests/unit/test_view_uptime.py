"""/proc/uptime: "<uptime> <idle summed over the view CPUs>"."""

import math

import pytest

from procview.views._inputs import ContainerTime
from procview.views.cpuview import CpuView
from procview.views.uptime import render_uptime

SECOND = 1_000_000_000  # ns

TWO_CPUS = CpuView((0, 1), 2.0, True)
HALF_CPU = CpuView((0,), 0.5, True)


def busy(user_s: float, system_s: float) -> int:
    """The cgroup's CPU time, user plus system, in ns."""
    return int(user_s * SECOND) + int(system_s * SECOND)


def container_time(uptime: float, age: float | None = None) -> ContainerTime:
    return ContainerTime(uptime=uptime, btime=1_795_760_000, age=uptime if age is None else age)


def test_idle_is_age_times_cpus_minus_busy():
    # 100 s on 2 CPUs = 200 CPU-seconds; 30 + 10 used.
    assert render_uptime(container_time(100.0), TWO_CPUS, busy(30, 10)) == "100.00 160.00\n"


def test_unknown_usage_counts_as_idle():
    assert render_uptime(container_time(100.0), TWO_CPUS, None) == "100.00 200.00\n"


def test_idle_is_based_on_capacity_like_stat():
    # Half a CPU of quota, one view CPU: 100 s x 0.5 CPU = 50 s of capacity.
    assert render_uptime(container_time(100.0), HALF_CPU, busy(20, 10)) == "100.00 20.00\n"
    # Using the whole quota leaves no idle time (stat shows 100 % busy too).
    assert render_uptime(container_time(100.0), HALF_CPU, busy(40, 10)) == "100.00 0.00\n"


def test_fractions_of_a_second():
    assert render_uptime(container_time(12.5), TWO_CPUS, busy(0.25, 0.5)) == "12.50 24.25\n"


def test_time_namespace_uptime_with_container_age_for_idle():
    # A time namespace whose offset is not the container's age: field 1 is
    # the namespace's uptime, idle is based on the container's age.
    time = container_time(uptime=3600.75, age=10.0)
    assert render_uptime(time, TWO_CPUS, busy(4, 1)) == "3600.75 15.00\n"


def test_idle_never_negative_when_usage_exceeds_age():
    # The cgroup used 250 CPU-seconds in 100 s on 2 CPUs (a burst, or usage
    # from before the container's start).
    assert render_uptime(container_time(100.0), TWO_CPUS, busy(200, 50)) == "100.00 0.00\n"


@pytest.mark.parametrize("bad", [-5.0, math.nan, math.inf, -math.inf])
def test_odd_times_print_zero_not_garbage(bad):
    assert render_uptime(ContainerTime(bad, 0, bad), TWO_CPUS, busy(1, 1)) == "0.00 0.00\n"


def test_format_is_two_numbers_and_newline_like_the_kernel():
    text = render_uptime(container_time(1234.5), TWO_CPUS, busy(100, 20))
    uptime, idle = text.split()
    assert text.endswith("\n") and text.count("\n") == 1
    assert float(uptime) == 1234.5 and float(idle) == 2349.0
