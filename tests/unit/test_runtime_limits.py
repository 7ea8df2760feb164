"""Docker-style resource options (runtime/limits.py)."""

from __future__ import annotations

import pytest

from procview.cgroups import UNLIMITED, CpuQuota
from procview.runtime.limits import LimitError, Limits, apply_limits, parse_bytes, parse_limits

TWO_CPUS = frozenset({0, 1})
MiB = 1 << 20


@pytest.mark.parametrize(
    "text, value",
    [("512M", 512 * MiB), ("512m", 512 * MiB), ("1g", 1 << 30), ("1GiB", 1 << 30), ("1.5g", 3 << 29),
     ("1048576", 1 << 20), ("64k", 64 << 10), ("100b", 100), ("2 G", 2 << 30)],
)
def test_sizes_parse_as_docker_does(text, value):
    assert parse_bytes(text, "--memory") == value


@pytest.mark.parametrize("text", ["abc", "", "12x", "-5M", "1.2.3g", "M"])
def test_bad_sizes_are_refused_with_the_option_named(text):
    with pytest.raises(LimitError, match="--memory"):
        parse_bytes(text, "--memory")


def test_memory_alone_gets_as_much_swap_as_memory():
    assert parse_limits(TWO_CPUS, memory="512M") == Limits(memory=512 * MiB, swap=512 * MiB)


def test_memory_swap_is_memory_plus_swap():
    assert parse_limits(TWO_CPUS, memory="512M", memory_swap="768M").swap == 256 * MiB
    assert parse_limits(TWO_CPUS, memory="512M", memory_swap="512M").swap == 0
    assert parse_limits(TWO_CPUS, memory="512M", memory_swap="-1").swap is UNLIMITED


@pytest.mark.parametrize(
    "options, message",
    [({"memory": "0"}, "minimum is 6MB"), ({"memory": "5M"}, "minimum"), ({"memory": "abc"}, "--memory"),
     ({"memory": "512M", "memory_swap": "256M"}, "at least --memory"), ({"memory_swap": "1g"}, "needs --memory")],
)
def test_bad_memory_options(options, message):
    with pytest.raises(LimitError, match=message):
        parse_limits(TWO_CPUS, **options)


def test_cpus_set_a_quota_and_a_cpuset_of_ceil_cpus():
    limits = parse_limits(TWO_CPUS, cpus="1")
    assert limits.cpu_quota == CpuQuota(100000, 100000)
    assert limits.cpuset == frozenset({0})
    half = parse_limits(TWO_CPUS, cpus="0.5")
    assert half.cpu_quota == CpuQuota(50000, 100000) and half.cpuset == frozenset({0})
    assert parse_limits(TWO_CPUS, cpus="1.5").cpuset == TWO_CPUS


def test_cpuset_cpus_overrides_the_default_pinning():
    limits = parse_limits(TWO_CPUS, cpus="1", cpuset_cpus="1")
    assert limits.cpuset == frozenset({1}) and limits.cpu_quota == CpuQuota(100000, 100000)


def test_cpu_period_and_quota():
    assert parse_limits(TWO_CPUS, cpu_period=50000, cpu_quota=25000).cpu_quota == CpuQuota(25000, 50000)
    assert parse_limits(TWO_CPUS, cpus="1", cpu_period=50000).cpu_quota == CpuQuota(50000, 50000)


@pytest.mark.parametrize(
    "options, message",
    [({"cpus": "-1"}, "range is 0.01 to 2.00"), ({"cpus": "99"}, "only 2 CPUs"), ({"cpus": "x"}, "--cpus"),
     ({"cpus": "nan"}, "--cpus"), ({"cpuset_cpus": "5"}, "this host's CPUs are 0-1"), ({"cpuset_cpus": "3-1"}, "CPU list"),
     ({"cpu_quota": 10}, "minimum"), ({"cpus": "1", "cpu_quota": 50000}, "together"), ({"cpu_period": 10}, "--cpu-period")],
)
def test_bad_cpu_options(options, message):
    with pytest.raises(LimitError, match=message):
        parse_limits(TWO_CPUS, **options)


def test_pids_limit():
    assert parse_limits(TWO_CPUS, pids_limit=100).pids == 100
    assert parse_limits(TWO_CPUS, pids_limit=0).pids is UNLIMITED
    assert parse_limits(TWO_CPUS, pids_limit=-1).pids is UNLIMITED


class RecordingCgroup:
    """Records what the runtime writes (youki's TestManager idea)."""

    def __init__(self, swap_error=None):
        self.calls = []
        self.swap_error = swap_error

    def set_cpuset(self, cpus):
        self.calls.append(("cpuset", cpus))

    def set_memory_limit(self, limit):
        self.calls.append(("memory", limit))

    def set_swap_limit(self, limit):
        if self.swap_error:
            raise self.swap_error
        self.calls.append(("swap", limit))

    def set_cpu_quota(self, quota):
        self.calls.append(("quota", quota))

    def set_pids_limit(self, limit):
        self.calls.append(("pids", limit))


def test_apply_writes_cpuset_first_and_memory_before_swap():
    cg = RecordingCgroup()
    apply_limits(cg, parse_limits(TWO_CPUS, memory="512M", cpus="1", pids_limit=50))
    assert cg.calls == [
        ("cpuset", frozenset({0})), ("memory", 512 * MiB), ("swap", 512 * MiB),
        ("quota", CpuQuota(100000, 100000)), ("pids", 50),
    ]


def test_swap_the_kernel_cannot_limit_is_a_warning():
    from procview.cgroups import CgroupError

    cg = RecordingCgroup(swap_error=CgroupError("memory.memsw.limit_in_bytes", 1, "swap accounting is off"))
    warnings = apply_limits(cg, parse_limits(TWO_CPUS, memory="512M"))
    assert warnings == ["swap limit not applied: swap accounting is off"]
    assert ("memory", 512 * MiB) in cg.calls
