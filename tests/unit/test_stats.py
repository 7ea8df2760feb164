"""``procview stats``: samples read from the fixture machines (v1, hybrid,
v2: tests/fixtures/README.md), and the pure parts (usage from two samples,
docker's formatting, the frames) on handmade values."""

import json
from pathlib import Path

import pytest

from procview.cgroups import UNLIMITED, discover
from procview.host import InterfaceTraffic, parse_net_dev
from procview.runtime.lifecycle import RUNNING, SUCCEEDED, Record
from procview.runtime.stats import (
    HEADINGS,
    Entry,
    Sample,
    Usage,
    binary_size,
    cpu_percent,
    decimal_size,
    frame_lines,
    frames,
    json_object,
    memory_in_use,
    network_totals,
    percent,
    redraw,
    shown_limit,
    table_row,
    take_sample,
    usage_between,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
MiB, GiB = 1 << 20, 1 << 30
HOST_MEMORY = 8142436 * 1024  # the fixture machines' MemTotal


@pytest.fixture(params=["v1", "hybrid", "v2"])
def machine(request):
    return discover(str(FIXTURES / request.param))


# -- samples from the fixture machines -----------------------------------------------------


def test_sample_of_a_container_is_the_same_on_v1_hybrid_and_v2(machine):
    sample = take_sample(machine.cgroup("/parent/ctr"), machine, clock=lambda: 42)
    assert sample == Sample(
        taken_ns=42,
        cpu_ns=3_000_000_000,  # v1 cpuacct.usage; v2 cpu.stat user_usec + system_usec
        memory=300 * MiB,  # v1 memory.usage_in_bytes; v2 memory.current
        inactive_file=60817408,  # v1 total_inactive_file (not the local inactive_file); v2 inactive_file
        memory_limit=500 * MiB,
        network=(123456 + 1000, 65432 + 500),  # proc/200/net/dev without lo
        block=(49152000 + 40960, 13926400),  # both devices; v1 the throttle counters, not BFQ's doubled ones
        pids=5,  # pids.current
    )


def test_a_sample_is_dated_between_the_clock_readings_around_the_cpu_counter(machine):
    readings = iter([1000, 3000])
    assert take_sample(machine.cgroup("/parent/ctr"), machine, clock=lambda: next(readings)).taken_ns == 2000


def test_a_container_in_the_hosts_network_namespace_shows_no_traffic(machine):
    # sysctr's processes (300, 301) share pid 1's network namespace: --network host.
    sample = take_sample(machine.cgroup("/sysctr"), machine)
    assert sample.network == (0, 0)
    assert sample.memory_limit is UNLIMITED


def test_a_stopped_container_has_no_sample(machine):
    assert take_sample(machine.cgroup("/parent/gone"), machine) is None


def test_unknown_counters_stay_unknown(machine):
    sample = take_sample(machine.cgroup("/broken"), machine)
    usage = usage_between(sample, sample, HOST_MEMORY)
    assert (sample.memory, sample.cpu_ns, usage.memory, usage.memory_percent) == (None, None, None, None)
    assert table_row(Entry("b" * 64, "broken", None, usage))[2:5] == ("--", "-- / --", "--")  # its limit is garbled too


# -- usage from two samples (pure) --------------------------------------------------------


def sample(at_s: float, cpu_s: float | None = 0.0, memory=10 * MiB, inactive_file=None, limit=64 * MiB) -> Sample:
    return Sample(int(at_s * 1e9), None if cpu_s is None else int(cpu_s * 1e9), memory, inactive_file, limit,
                  (1200, 648), (0, 4096), 3)


def test_cpu_percent_is_cpu_time_over_wall_time_one_cpu_being_100():
    assert cpu_percent(sample(10, cpu_s=1.0), sample(11, cpu_s=1.5)) == pytest.approx(50.0)
    assert cpu_percent(sample(10), sample(12, cpu_s=3.0)) == pytest.approx(150.0)  # 1.5 CPUs busy
    assert cpu_percent(sample(10), sample(10.5)) == 0.0


def test_cpu_percent_is_unknown_without_two_comparable_samples():
    assert cpu_percent(None, sample(11)) is None
    assert cpu_percent(sample(10, cpu_s=None), sample(11)) is None
    assert cpu_percent(sample(10, cpu_s=5.0), sample(11, cpu_s=0.1)) is None  # a new cgroup (restart)
    assert cpu_percent(sample(10), sample(10, cpu_s=1.0)) is None


def test_memory_in_use_leaves_out_inactive_page_cache_as_dockers_cli():
    assert memory_in_use(300 * MiB, 60 * MiB) == 240 * MiB
    assert memory_in_use(300 * MiB, None) == 300 * MiB
    assert memory_in_use(10 * MiB, 20 * MiB) == 10 * MiB  # more inactive than usage: kept whole
    assert memory_in_use(None, 1) is None


def test_the_limit_shown_is_at_most_the_hosts_memory():
    assert shown_limit(64 * MiB, 8 * GiB) == 64 * MiB
    assert shown_limit(UNLIMITED, 8 * GiB) == 8 * GiB
    assert shown_limit(9223372036854771712, 8 * GiB) == 8 * GiB  # a "limit" above the machine
    assert shown_limit(None, 8 * GiB) is None  # unknown is not unlimited
    assert shown_limit(64 * MiB, None) == 64 * MiB


def test_usage_between_two_samples():
    usage = usage_between(sample(1, cpu_s=0.0), sample(2, cpu_s=0.25, memory=20 * MiB, inactive_file=4 * MiB), 8 * GiB)
    assert usage == Usage(pytest.approx(25.0), 16 * MiB, 64 * MiB, pytest.approx(25.0), (1200, 648), (0, 4096), 3)
    unlimited = usage_between(None, sample(2, limit=UNLIMITED), 8 * GiB)
    assert (unlimited.cpu_percent, unlimited.memory_limit) == (None, 8 * GiB)
    assert unlimited.memory_percent == pytest.approx(10 * MiB / (8 * GiB) * 100)


# -- docker's formatting (pure) -----------------------------------------------------------


@pytest.mark.parametrize("value, text", [
    (0, "0B"), (648, "648B"), (1023, "1023B"), (1024, "1KiB"), (1536, "1.5KiB"), (12.5 * MiB, "12.5MiB"),
    (1.855 * MiB, "1.855MiB"), (64 * MiB, "64MiB"), (1023.99 * MiB, "1024MiB"), (25276182528, "23.54GiB"),
])
def test_memory_sizes_in_binary_units_as_go_units_bytes_size(value, text):
    assert binary_size(int(value)) == text


@pytest.mark.parametrize("value, text", [
    (0, "0B"), (648, "648B"), (999, "999B"), (1000, "1kB"), (1200, "1.2kB"), (1234567, "1.23MB"),
    (999_700, "1e+03kB"),  # go's %.3g says so too
    (49_192_960, "49.2MB"), (10**12, "1TB"),
])
def test_io_sizes_in_decimal_units_with_three_digits(value, text):
    assert decimal_size(value) == text


def test_unknowns_and_percentages():
    assert (binary_size(None), decimal_size(None), percent(None)) == ("--", "--", "--")
    assert (percent(0.0), percent(49.996), percent(150)) == ("0.00%", "50.00%", "150.00%")


RUNNING_USAGE = Usage(49.87, int(12.5 * MiB), 64 * MiB, 19.53125, (1200, 648), (0, 4096), 5)
WEB = "3f2a9c1d0b7e" + "0" * 52


def test_table_row_as_docker_stats():
    assert table_row(Entry(WEB, "web", None, RUNNING_USAGE)) == (
        "3f2a9c1d0b7e", "web", "49.87%", "12.5MiB / 64MiB", "19.53%", "1.2kB / 648B", "0B / 4.1kB", "5")


def test_a_container_that_is_not_running_shows_dashes():
    assert table_row(Entry(WEB, "web", "web", None)) == (
        "3f2a9c1d0b7e", "web", "--", "-- / --", "--", "-- / --", "-- / --", "--")
    assert json_object(Entry(WEB, "web", "web", None))["CPUPercent"] is None


def test_json_has_dockers_keys_and_the_numbers():
    found = json_object(Entry(WEB, "web", "3f2a", RUNNING_USAGE))
    docker = {"BlockIO": "0B / 4.1kB", "CPUPerc": "49.87%", "Container": "3f2a", "ID": "3f2a9c1d0b7e",
              "MemPerc": "19.53%", "MemUsage": "12.5MiB / 64MiB", "Name": "web", "NetIO": "1.2kB / 648B", "PIDs": "5"}
    numbers = {"CPUPercent": 49.87, "MemUsageBytes": int(12.5 * MiB), "MemLimitBytes": 64 * MiB,
               "MemPercent": 19.53125, "NetRxBytes": 1200, "NetTxBytes": 648, "BlockReadBytes": 0,
               "BlockWriteBytes": 4096, "PIDCount": 5}
    assert found == {**docker, **numbers}
    assert json_object(Entry(WEB, "web", None, RUNNING_USAGE))["Container"] == "3f2a9c1d0b7e"  # none asked for


def test_frame_lines_table_and_json():
    entries = [Entry(WEB, "web", None, RUNNING_USAGE), Entry("a" * 64, "a-long-name", None, None)]
    table = frame_lines(entries, "table")
    assert table[0].split("   ")[0] == "CONTAINER ID" and table[0].endswith("PIDS")
    assert len(table) == 3
    assert table[0].index("CPU %") == table[1].index("49.87%") == table[2].index("--")  # columns line up
    assert [json.loads(line)["Name"] for line in frame_lines(entries, "json")] == ["web", "a-long-name"]
    assert frame_lines([], "table") == ["   ".join(HEADINGS)]


def test_redraw_overwrites_in_place_and_clears_what_is_left():
    assert redraw(["a", "b"], first=True) == "\033[2J\033[Ha\033[K\nb\033[K\n\033[J"
    assert redraw(["a"], first=False) == "\033[Ha\033[K\n\033[J"


# -- /proc/PID/net/dev ------------------------------------------------------------------------


def test_net_dev_parsed_and_loopback_left_out():
    text = (FIXTURES / "v2" / "proc" / "200" / "net" / "dev").read_text()
    interfaces = parse_net_dev(text)
    assert interfaces == {"lo": InterfaceTraffic(5000, 5000), "eth0": InterfaceTraffic(123456, 65432),
                          "eth1": InterfaceTraffic(1000, 500)}
    assert network_totals(interfaces) == (124456, 65932)
    assert network_totals(parse_net_dev(text.split("eth0")[0])) == (0, 0)  # --network none: lo only
    assert parse_net_dev(None) is None and network_totals(None) is None
    assert parse_net_dev("h\nh\n  bad: 1 2 3\n  eth0: x 1 2 3 4 5 6 7 8\n") == {}


# -- frames -----------------------------------------------------------------------------------


class FakeStore:
    """The records a frame reads (RecordStore's ``all`` and ``load``)."""

    def __init__(self, *records):
        self.records = {r.id: r for r in records}

    def all(self):
        return list(self.records.values())

    def load(self, container_id):
        if container_id not in self.records:
            raise ValueError("gone")
        return self.records[container_id]


def record(name: str, phase: str = RUNNING, created: float = 0.0) -> Record:
    return Record(name * 8, name, "busybox", [], created, phase=phase, pid=200, cgroup="/parent/ctr")


def test_frames_show_running_containers_newest_first_and_drop_those_that_stop(machine):
    older, newer, ended = record("older", created=1), record("newer", created=2), record("ended", SUCCEEDED, 3)
    store = FakeStore(older, newer, ended)
    stream = frames(store, machine, sleep=lambda _seconds: None)
    first = next(stream)
    assert [e.name for e in first] == ["newer", "older"]
    assert first[0].usage.cpu_percent == 0.0  # the fixture's counter does not move: 0 %, not unknown
    assert first[0].usage.memory_limit == 500 * MiB
    store.records[newer.id] = record("newer", SUCCEEDED, 2)
    assert [e.name for e in next(stream)] == ["older"]


def test_frames_keep_containers_asked_for_by_name_running_or_not(machine):
    running, ended = record("web"), record("ended", SUCCEEDED)
    store = FakeStore(running, ended)
    stream = frames(store, machine, [("ended", ended), ("web", running)], sleep=lambda _seconds: None)
    entries = next(stream)
    assert [(e.name, e.reference, e.usage is None) for e in entries] == [("ended", "ended", True), ("web", "web", False)]
    del store.records[running.id]  # removed meanwhile
    assert [(e.name, e.usage) for e in next(stream)] == [("ended", None), ("web", None)]
