"""The analysis of bench/restart_survival.py, on fixture reader lines:
errors, late errors, repair times, gaps and stalled readers."""

from __future__ import annotations

import importlib.util
import os

import pytest

BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "restart_survival.py")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("restart_survival", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MS = 1_000_000
OWN = {"m": "204800", "o": "0", "s": "204800", "h": "204800"}  # a 200 MiB container on CPU 0
FILES = ("m", "o")


def line(start_ms: float, m="204800", o="0", s="204800", h="204800", took_ms: float = 2) -> str:
    return f"{int(start_ms * MS)} {int((start_ms + took_ms) * MS)} m={m} o={o} s={s} h={h}"


def reads_every_10_ms(bench, first_ms, last_ms, **values):
    return bench.parse_reads("\n".join(line(t, **values) for t in range(first_ms, last_ms, 10)))


def test_parse_reads_takes_values_and_errnos_and_drops_a_cut_line(bench):
    text = line(0) + "\n" + line(10, m="!107", s="!38") + "\n" + "30000000 32000000 m=2048"
    reads = bench.parse_reads(text)
    assert [r.start_ns for r in reads] == [0, 10 * MS]
    assert reads[0].values == OWN
    assert reads[1].values["m"] == 107 and reads[1].values["s"] == 38 and reads[1].values["o"] == "0"


def test_a_kill_breaks_the_reads_until_the_repair_after_readiness(bench):
    # Stopped at 1000 ms, ready at 1700 ms, repaired from 1770 ms on.
    reads = (reads_every_10_ms(bench, 0, 1000) + reads_every_10_ms(bench, 1000, 1770, m="!107", o="!107")
             + reads_every_10_ms(bench, 1770, 4000))
    result = bench.analyze_reads(reads, FILES, OWN, stops=[1000 * MS], readies=[1700 * MS], end_ns=4000 * MS)
    assert result["reads"] == 400
    assert result["failed"] == 2 * 77 and result["wrong"] == 0
    assert result["errnos"] == {"ENOTCONN": 154}
    assert result["errors_before_first_stop"] == 0 and result["late_errors"] == 0
    # The first good read ends at 1772 ms: 72 ms after readiness.
    assert result["cycles"] == [{"broken": True, "repaired_after_ready_ns": 72 * MS, "stalled": False}]
    # From the last good read before (992 ms) to the first after (1772 ms).
    assert result["longest_gap_ns"] == 780 * MS


def test_a_read_that_ends_after_the_stop_belongs_to_the_new_cycle(bench):
    reads = bench.parse_reads("\n".join([line(0), line(995, m="!103", took_ms=10), line(1010)]))
    result = bench.analyze_reads(reads, FILES, OWN, stops=[1000 * MS], readies=[1005 * MS], end_ns=1020 * MS)
    assert result["errors_before_first_stop"] == 0
    assert result["errnos"] == {"ECONNABORTED": 1}
    assert result["cycles"][0]["repaired_after_ready_ns"] == 7 * MS


def test_errors_from_readiness_plus_one_second_are_late_and_wrong_values_count(bench):
    # Ready at 500 ms; the host's MemTotal at 1490 ms (not late: it began
    # before 1500) and at 1500 ms and 1600 ms (late); cpu/online of the host at 2000 ms.
    reads = bench.parse_reads("\n".join([
        line(0), line(100, m="!107"), line(600), line(1490, m="24683772"), line(1500, m="24683772"),
        line(1600, m="24683772"), line(2000, o="0-1"), line(2100),
    ]))
    result = bench.analyze_reads(reads, FILES, OWN, stops=[100 * MS], readies=[500 * MS], end_ns=2110 * MS)
    assert result["failed"] == 1 and result["wrong"] == 4
    assert result["late_errors"] == 3
    assert result["cycles"][0]["repaired_after_ready_ns"] == 1602 * MS  # the read at 2100 ms, ending at 2102


def test_reads_that_end_bad_are_not_repaired_and_the_gap_runs_to_the_end(bench):
    # LXCFS: its binds stay dead after each restart.
    reads = (reads_every_10_ms(bench, 0, 1000) + reads_every_10_ms(bench, 1000, 5000, m="!107", o="!107"))
    result = bench.analyze_reads(reads, FILES, OWN, stops=[1000 * MS, 3000 * MS], readies=[1500 * MS, 3500 * MS],
                                 end_ns=5000 * MS)
    assert [c["repaired_after_ready_ns"] for c in result["cycles"]] == [None, None]
    assert all(c["broken"] and not c["stalled"] for c in result["cycles"])
    assert result["longest_gap_ns"] == (5000 - 992) * MS
    # Late: reads that began at 2500-2990 and 4500-4990 ms, two files each.
    assert result["late_errors"] == 2 * (50 + 50)


def test_a_reader_without_reads_at_the_end_of_a_cycle_is_stalled(bench):
    # Stuck in a call from the second stop on (a supervisor killed between
    # receiving the call and answering it).
    reads = reads_every_10_ms(bench, 0, 1000) + reads_every_10_ms(bench, 1200, 2000)
    result = bench.analyze_reads(reads, FILES, OWN, stops=[1000 * MS, 2000 * MS], readies=[1150 * MS, 2150 * MS],
                                 end_ns=6000 * MS)
    first, second = result["cycles"]
    assert first == {"broken": False, "repaired_after_ready_ns": None, "stalled": False}  # a gap, no error
    assert second == {"broken": True, "repaired_after_ready_ns": None, "stalled": True}
    assert result["longest_gap_ns"] == (6000 - 1992) * MS
    assert result["failed"] == result["wrong"] == 0


def test_only_the_fields_asked_for_are_judged(bench):
    # sysinfo after a kill of procview-runc's supervisor: ENOSYS; the files are fine.
    reads = reads_every_10_ms(bench, 0, 500) + reads_every_10_ms(bench, 500, 1000, s="!38")
    stops, readies = [500 * MS], [700 * MS]
    assert bench.analyze_reads(reads, FILES, OWN, stops, readies, 1000 * MS)["failed"] == 0
    sysinfo = bench.analyze_reads(reads, ("s",), OWN, stops, readies, 1000 * MS)
    assert sysinfo["errnos"] == {"ENOSYS": 50}
    assert sysinfo["cycles"][0]["repaired_after_ready_ns"] is None


def test_summarize_kind_takes_the_last_repair_and_judges_the_rule(bench):
    fast = reads_every_10_ms(bench, 0, 1000) + reads_every_10_ms(bench, 1000, 1600, m="!107") + reads_every_10_ms(bench, 1600, 3000)
    slow = reads_every_10_ms(bench, 0, 1000) + reads_every_10_ms(bench, 1000, 1900, m="!107") + reads_every_10_ms(bench, 1900, 3000)
    dead = reads_every_10_ms(bench, 0, 1000) + reads_every_10_ms(bench, 1000, 3000, m="!107")
    stops, readies, end = [1000 * MS], [1500 * MS], 3000 * MS

    def summary(*containers):
        return bench.summarize_kind([bench.analyze_reads(r, FILES, OWN, stops, readies, end) for r in containers])

    repaired = summary(fast, slow)
    assert repaired["cycles"] == [{"broken": 2, "repaired": 2, "stalled": 0, "last_repair_after_ready_ns": 402 * MS}]
    assert repaired["errors"] == [60, 90] and repaired["late_errors"] == 0
    assert bench.rule_met(repaired)

    one_dead = summary(fast, dead)
    assert one_dead["cycles"][0]["last_repair_after_ready_ns"] is None and one_dead["cycles"][0]["repaired"] == 1
    assert one_dead["late_errors"] == 50  # dead's reads of meminfo that began at 2500-2990 ms
    assert not bench.rule_met(one_dead)

    late = summary(reads_every_10_ms(bench, 0, 1000) + reads_every_10_ms(bench, 1000, 2600, m="!107")
                   + reads_every_10_ms(bench, 2600, 3000))
    assert late["cycles"][0]["last_repair_after_ready_ns"] == 1102 * MS and late["late_errors"] == 10
    assert not bench.rule_met(late)
