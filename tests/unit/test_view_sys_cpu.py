"""sys/devices/system/cpu/{online,possible,present}: "0-(n-1)"."""

import pytest

from procview.cgroups import CpuQuota
from procview.views.cpuview import CpuView, compute_cpu_view
from procview.views.sys_cpu import render_cpu_list


@pytest.mark.parametrize(
    "view, expected",
    [
        (CpuView((0,), 0.5, True), "0\n"),
        (CpuView((1,), 1.0, True), "0\n"),  # real CPU 1 is the container's CPU 0
        (CpuView((0, 1), 1.5, True), "0-1\n"),
        (CpuView((2, 5, 19), 3.0, True), "0-2\n"),  # LXCFS would print "2,5,19"
        (CpuView(tuple(range(64)), 64.0, False), "0-63\n"),
    ],
)
def test_render_cpu_list(view, expected):
    assert render_cpu_list(view) == expected


def test_quota_limits_the_list_like_every_other_file():
    # cpuset 0-3, quota 1.5 CPUs: n = 2.
    view = compute_cpu_view(frozenset(range(4)), frozenset(range(4)), CpuQuota(150_000, 100_000))
    assert render_cpu_list(view) == "0-1\n"
