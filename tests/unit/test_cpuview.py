"""compute_cpu_view: the one CPU view every file is built from.

n = min(|cpuset ∩ host CPUs|, ceil(quota / period)), at least 1; the view
CPUs are the first n of the cpuset; capacity = min(n, quota / period).
"""

import pytest

from procview.cgroups import UNLIMITED, CpuQuota
from procview.views.cpuview import CpuView, compute_cpu_view

TWO_CPUS = frozenset({0, 1})
FOUR_CPUS = frozenset({0, 1, 2, 3})


@pytest.mark.parametrize(
    "host, cpuset, quota, expected",
    [
        # No cpuset known, no quota: the host's CPUs, unchanged.
        (TWO_CPUS, None, None, CpuView((0, 1), 2.0, False)),
        # An empty cpuset (unreadable or not set) is not "no CPU".
        (TWO_CPUS, frozenset(), None, CpuView((0, 1), 2.0, False)),
        # A cpuset naming only CPUs the host does not have online.
        (TWO_CPUS, frozenset({4, 5}), None, CpuView((0, 1), 2.0, False)),
        # Explicitly no quota (cgroup v2 "max", v1 -1).
        (TWO_CPUS, TWO_CPUS, UNLIMITED, CpuView((0, 1), 2.0, False)),
        # Half a CPU still needs one CPU to run on.
        (TWO_CPUS, None, CpuQuota(50_000, 100_000), CpuView((0,), 0.5, True)),
        # 1.5 CPUs: two CPUs to run on, 1.5 CPUs' worth of time.
        (TWO_CPUS, TWO_CPUS, CpuQuota(150_000, 100_000), CpuView((0, 1), 1.5, True)),
        # A quota above the cpuset is capped by it: nothing is limited.
        (TWO_CPUS, None, CpuQuota(300_000, 100_000), CpuView((0, 1), 2.0, False)),
        # cpuset {1}: one CPU, which is real CPU 1.
        (TWO_CPUS, frozenset({1}), None, CpuView((1,), 1.0, True)),
        # cpuset {1, 3} with one CPU of quota: the first CPU of the cpuset.
        (FOUR_CPUS, frozenset({1, 3}), CpuQuota(100_000, 100_000), CpuView((1,), 1.0, True)),
        # Part of the cpuset offline on the host: only online CPUs count.
        (FOUR_CPUS, frozenset({2, 3, 7}), None, CpuView((2, 3), 2.0, True)),
        # A garbled quota (zero period or quota) is ignored, never divided by.
        (TWO_CPUS, None, CpuQuota(50_000, 0), CpuView((0, 1), 2.0, False)),
        (TWO_CPUS, None, CpuQuota(0, 100_000), CpuView((0, 1), 2.0, False)),
    ],
)
def test_compute_cpu_view(host, cpuset, quota, expected):
    assert compute_cpu_view(host, cpuset, quota) == expected


def test_view_numbering_maps_real_cpus_to_0_to_n_minus_1():
    view = compute_cpu_view(FOUR_CPUS, frozenset({1, 3}), None)
    assert view.cpus == (1, 3)
    assert view.count == 2
    assert view.real_to_view() == {1: 0, 3: 1}
    assert view.online == "0-1"


def test_one_cpu_online_is_a_single_number():
    view = compute_cpu_view(TWO_CPUS, frozenset({1}), None)
    assert view.online == "0"
