"""procview.host: pure parsers of the host's /proc files, and HostFiles.

Samples come from the fixture trees (tests/fixtures/{v1,hybrid,v2}, whose
host files were modelled on a real 6.x kernel) and from inline strings.
"""

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from procview.host import (
    HostFiles,
    ProcStat,
    ProcStatus,
    Uptime,
    parse_btime,
    parse_meminfo,
    parse_proc_pid_stat,
    parse_proc_status,
    parse_timens_boottime_offset,
    parse_uptime,
    replace_meminfo_values,
    MeminfoLayouts,
    scan_meminfo,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
V1 = FIXTURES / "v1"


def fixture_text(relpath: str, layout: str = "v1") -> str:
    return (FIXTURES / layout / relpath).read_text()


# -- /proc/meminfo ------------------------------------------------------------------


def test_parse_meminfo():
    values = parse_meminfo(fixture_text("proc/meminfo"))
    assert values["MemTotal"] == 8142436
    assert values["MemAvailable"] == 7034516
    assert values["Active(anon)"] == 602112  # parentheses in the name
    assert values["SwapTotal"] == 2097148
    assert values["VmallocTotal"] == 34359738367  # wider than the 8-digit column
    assert values["HugePages_Total"] == 0  # no unit
    assert values["Hugepagesize"] == 2048
    assert len(values) == 55


def test_parse_meminfo_skips_odd_lines():
    text = "MemTotal:        8142436 kB\ngarbage\nFoo:   abc kB\n\nBar 12 kB\nMemFree: 1 kB\n"
    assert parse_meminfo(text) == {"MemTotal": 8142436, "MemFree": 1}


def test_parse_meminfo_of_a_node_after_removing_the_prefix():
    text = fixture_text("sys/devices/system/node/node0/meminfo")
    assert parse_meminfo(text) == {}  # "Node 0 MemTotal:" is not a meminfo name
    stripped = "\n".join(line[len("Node 0 ") :] for line in text.splitlines())
    values = parse_meminfo(stripped)
    assert values["MemTotal"] == 8142436
    assert values["MemUsed"] == 3016704
    assert values["HugePages_Surp"] == 0


HOST_MEMINFO_HEAD = (
    "MemTotal:        8142436 kB\n"
    "MemFree:         5125732 kB\n"
    "Buffers:           84320 kB\n"
    "VmallocTotal:   34359738367 kB\n"
    "HugePages_Total:       0\n"
)


def test_replace_meminfo_values_keeps_the_column():
    out = replace_meminfo_values(HOST_MEMINFO_HEAD, {"MemTotal": 512000, "MemFree": 204800, "HugePages_Total": 4})
    assert out == (
        "MemTotal:         512000 kB\n"
        "MemFree:          204800 kB\n"
        "Buffers:           84320 kB\n"
        "VmallocTotal:   34359738367 kB\n"
        "HugePages_Total:       4\n"
    )
    # Every line ends where the host's did.
    assert [len(line) for line in out.splitlines()] == [len(line) for line in HOST_MEMINFO_HEAD.splitlines()]


def test_replace_meminfo_values_wider_numbers_grow_the_line():
    out = replace_meminfo_values(HOST_MEMINFO_HEAD, {"Buffers": 12345678901234567890, "VmallocTotal": 1234})
    assert out.splitlines()[2] == "Buffers: 12345678901234567890 kB"  # one space at least
    assert out.splitlines()[3] == "VmallocTotal:          1234 kB"


def test_replace_meminfo_values_never_prints_a_negative_number():
    out = replace_meminfo_values(HOST_MEMINFO_HEAD, {"MemFree": -4096})
    assert out.splitlines()[1] == "MemFree:" + " " * 15 + "0 kB"  # same width as the host line


def test_replace_meminfo_values_keeps_unknown_names_and_the_final_newline():
    assert replace_meminfo_values(HOST_MEMINFO_HEAD, {"NoSuchField": 1}) == HOST_MEMINFO_HEAD
    no_newline = HOST_MEMINFO_HEAD.rstrip("\n")
    assert replace_meminfo_values(no_newline, {"MemTotal": 1}).endswith("HugePages_Total:       0")


def test_replace_meminfo_values_on_the_whole_host_file():
    host = fixture_text("proc/meminfo")
    out = replace_meminfo_values(host, {"MemTotal": 512000, "SwapTotal": 262144})
    assert parse_meminfo(out) == {**parse_meminfo(host), "MemTotal": 512000, "SwapTotal": 262144}
    assert out.count("\n") == host.count("\n")


def test_replace_meminfo_values_whole_file_and_line_by_line_agree():
    # The whole-file %-format (no prefix) and the per-line path (a prefix)
    # must write the same lines, a "%" in a line's tail included.
    host = fixture_text("proc/meminfo") + "Odd_Field:       7 %\n"
    values = {name: value // 3 for name, value in parse_meminfo(host).items()}
    values.update(Buffers=10**20, MemFree=-5)
    prefixed = "".join(f"P {line}\n" for line in host.splitlines())
    whole = replace_meminfo_values(host, values)
    assert whole.endswith("Odd_Field:       2 %\n")
    assert whole == replace_meminfo_values(prefixed, values, prefix="P ").replace("P ", "")
    scan = scan_meminfo(host)
    assert replace_meminfo_values(host, values, scan=scan) == whole
    assert parse_meminfo(host, scan) == parse_meminfo(host)


def test_replace_meminfo_values_node_prefix():
    host = fixture_text("sys/devices/system/node/node0/meminfo")
    out = replace_meminfo_values(host, {"MemTotal": 512000, "MemUsed": 307200, "HugePages_Total": 2}, prefix="Node 0 ")
    lines = out.splitlines()
    assert lines[0] == "Node 0 MemTotal:         512000 kB"
    assert lines[1] == "Node 0 MemFree:         5125732 kB"
    assert lines[2] == "Node 0 MemUsed:          307200 kB"
    assert "Node 0 HugePages_Total:     2" in lines
    assert [len(line) for line in lines] == [len(line) for line in host.splitlines()]


def _line_by_line(text: str, values: dict) -> str:
    """The reference rewrite: the per-line path, which a prefix selects."""
    prefixed = "".join(f"P {line}\n" for line in text.splitlines())
    out = replace_meminfo_values(prefixed, values, prefix="P ").replace("P ", "")
    return out if text.endswith("\n") else out[:-1]


@pytest.mark.parametrize(
    "relpath",
    ["v1/proc/meminfo", "hybrid/proc/meminfo", "v2/proc/meminfo", "host/meminfo.txt", "host/meminfo_swap_hugepages.txt"],
)
def test_scan_meminfo_layout_writes_what_the_line_by_line_rewrite_writes(relpath):
    host = (FIXTURES / relpath).read_text()
    scan = scan_meminfo(host)
    assert scan.layout is not None
    assert scan.values == parse_meminfo(host) and len(scan.numbers) == len(host.splitlines())
    assert scan.layout.fill(scan.numbers) == host
    for factor in (0, 3, 10**6):  # smaller, and wider than every column
        values = {name: value * factor // 7 for name, value in scan.values.items()}
        assert scan.layout.fill_from(values) == _line_by_line(host, values)
        assert replace_meminfo_values(host, values, scan=scan) == _line_by_line(host, values)


def test_scan_meminfo_a_kept_layout_serves_only_texts_of_that_layout():
    # Same length and column widths, other names: the kept layout of the
    # first text must not name the second one's lines.
    first = "DirectMap4k:      123 kB\nDirectMap2M:     4567 kB\n"
    second = "DirectMap8k:      999 kB\nDirectMap1G:     1234 kB\n"
    layouts = MeminfoLayouts()
    assert scan_meminfo(first, layouts).values == {"DirectMap4k": 123, "DirectMap2M": 4567}
    assert scan_meminfo(first.replace("123", "124"), layouts).layout is scan_meminfo(first, layouts).layout, "kept"
    scan = scan_meminfo(second, layouts)
    assert scan.values == {"DirectMap8k": 999, "DirectMap1G": 1234}
    assert scan.layout.fill_from({"DirectMap8k": 1, "DirectMap1G": 2}) == "DirectMap8k:        1 kB\nDirectMap1G:        2 kB\n"
    # A number that outgrew its column is another layout (one space, then the number).
    wide = scan_meminfo("MemTotal: 123456789012 kB\nMemFree:        5 kB", layouts)
    assert wide.layout.fill_from({"MemTotal": 1, "MemFree": 2}) == "MemTotal:            1 kB\nMemFree:        2 kB"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "MemTotal:       100 kB\nOdd line\nMemFree:\t 5 kB\n",  # a line that is not a meminfo line
        "MemTotal:       100 kB\nX:    12 kB: 5\n",  # a ":" and a number in a line's tail
        "MemTotal:\t100 kB\nMemFree:  007 kB\n",  # a tab, leading zeros: not what a template writes back
        "MemTotal:       100 kB\nMemTotal:         7 kB\n",  # a name twice: each line keeps its number
        "MemTotal:       100 %d kB\n",  # a "%" in the tail
    ],
)
def test_scan_meminfo_odd_texts_parse_and_rewrite_as_line_by_line(text):
    import re

    lines = re.findall(r"^([^:\s\n]+):([ \t]+)(\d+)(.*)$", text, re.M)
    layouts = MeminfoLayouts()
    scan = scan_meminfo(text, layouts)
    assert scan.values == {name: int(digits) for name, _, digits, _ in lines}
    values = {name: 9 for name in scan.values}  # every line rewritten (the whole-file path also respaces the others)
    assert replace_meminfo_values(text, values, scan=scan) == _line_by_line(text, values)
    assert scan_meminfo(text, layouts) == scan  # the second time (a kept layout, if any) too


_NAMES = st.sampled_from(["MemTotal", "MemFree", "DirectMap4k", "DirectMap2M", "HugePages_Total", "Odd%"])
_LINE = st.tuples(_NAMES, st.sampled_from([":", ": ", ":\t", ":       "]), st.integers(0, 10**12), st.sampled_from([" kB", "", " %d", " kB: 7"]))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.lists(_LINE, max_size=6), st.booleans()), min_size=1, max_size=6))
def test_scan_meminfo_in_any_order_of_texts_agrees_with_the_line_scan(texts):
    # Texts scanned one after another share kept layouts; each scan must
    # still answer as a scan of that text alone: its values, and the same
    # rewrite as the line-by-line path.
    import re

    layouts = MeminfoLayouts()
    for lines, final_newline in texts:
        text = "\n".join(f"{name}{sep}{number}{rest}" for name, sep, number, rest in lines) + ("\n" if final_newline and lines else "")
        found = re.findall(r"^([^:\s\n]+):([ \t]+)(\d+)(.*)$", text, re.M)
        scan = scan_meminfo(text, layouts)
        assert scan.values == {name: int(digits) for name, _, digits, _ in found}
        values = {name: 3 for name in scan.values}
        assert replace_meminfo_values(text, values, scan=scan) == _line_by_line(text, values)
        if scan.layout is not None:
            assert scan.layout.fill_from(values) == _line_by_line(text, values)


# -- /proc/uptime and btime ----------------------------------------------------------


def test_parse_uptime():
    assert parse_uptime(fixture_text("proc/uptime")) == Uptime(97320.45, 370112.80)
    assert parse_uptime("497.58 904.29\n") == Uptime(497.58, 904.29)


@pytest.mark.parametrize("text", ["", "\n", "97320.45", "a b", "97320.45 x"])
def test_parse_uptime_bad_input(text):
    assert parse_uptime(text) is None


def test_parse_btime():
    assert parse_btime(fixture_text("proc/stat")) == 1732510000


@pytest.mark.parametrize("text", ["", "cpu  1 2 3 4\n", "btime\n", "btime soon\n", "xbtime 5\n"])
def test_parse_btime_bad_input(text):
    assert parse_btime(text) is None


# -- /proc/PID/stat --------------------------------------------------------------------


def test_parse_proc_pid_stat():
    assert parse_proc_pid_stat(fixture_text("proc/200/stat")) == ProcStat(200, "S", 1, 8640012)


def test_parse_proc_pid_stat_command_with_parentheses_and_spaces():
    # pid 301's command name is "worker) (x y": split after the *last* ")".
    text = fixture_text("proc/301/stat")
    assert text.startswith("301 (worker) (x y) D 300 ")
    assert parse_proc_pid_stat(text) == ProcStat(301, "D", 300, 9000420)


def test_parse_proc_pid_stat_command_ending_in_parenthesis():
    text = "1234 ((sd-pam)) S 1233 1233 1233 0 -1 1077936448 52 0 0 0 0 0 0 0 20 0 1 0 2877 26984448 1082 " + " ".join(["0"] * 30)
    assert parse_proc_pid_stat(text) == ProcStat(1234, "S", 1233, 2877)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "123 (no closing parenthesis S 1",
        "abc (x) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5",
        "1 (init) S 0 0",  # truncated before starttime
        "1 (init) S x 0 0 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5",
    ],
)
def test_parse_proc_pid_stat_bad_input(text):
    assert parse_proc_pid_stat(text) is None


# -- /proc/PID/status ----------------------------------------------------------------------


def test_parse_proc_status():
    assert parse_proc_status(fixture_text("proc/301/status")) == ProcStatus("D", 300, (301, 7))
    assert parse_proc_status(fixture_text("proc/200/status")) == ProcStatus("S", 1, (200, 1))
    assert parse_proc_status(fixture_text("proc/1/status")) == ProcStatus("S", 0, (1,))


def test_parse_proc_status_before_nspid():
    # Kernels before 4.1 have no NSpid line.
    assert parse_proc_status("Name:\tsh\nState:\tZ (zombie)\nTgid:\t7\nPid:\t7\nPPid:\t1\n") == ProcStatus("Z", 1, ())


def test_parse_proc_status_a_command_name_cannot_fake_a_line():
    # The kernel escapes a newline in the name as backslash-n; a name that
    # spells a field is not at the start of a line.
    text = "Name:\tPPid:\t9\\nState:\tZ\nUmask:\t0022\nState:\tS (sleeping)\nPPid:\t1\nNSpid:\t7\t1\n"
    assert parse_proc_status(text) == ProcStatus("S", 1, (7, 1))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Name:\tsh\nState:\tS (sleeping)\n",  # no PPid
        "State:\tS (sleeping)\nPPid:\tone\n",
        "State:\tS (sleeping)\nPPid:\t1\nNSpid:\t7\tx\n",
        "PPid:\t1\nNSpid:\t7\n",  # no State
    ],
)
def test_parse_proc_status_bad_input(text):
    assert parse_proc_status(text) is None


# -- /proc/PID/timens_offsets --------------------------------------------------------------


def test_parse_timens_boottime_offset():
    assert parse_timens_boottime_offset(fixture_text("proc/200/timens_offsets")) == -86400.0
    assert parse_timens_boottime_offset(fixture_text("proc/1/timens_offsets")) == 0.0
    # Seconds and nanoseconds add: -86401 s + 0.5 s.
    assert parse_timens_boottime_offset("monotonic 0 0\nboottime -86401 500000000\n") == -86400.5
    # The clock may be given by number (7 = CLOCK_BOOTTIME).
    assert parse_timens_boottime_offset("1 0 0\n7 3600 0\n") == 3600.0


@pytest.mark.parametrize("text", ["", "monotonic 5 0\n", "boottime x 0\n", "boottime 5\n"])
def test_parse_timens_boottime_offset_bad_input(text):
    assert parse_timens_boottime_offset(text) is None


# -- HostFiles ------------------------------------------------------------------------------


def test_host_files_reads_below_root():
    host = HostFiles(str(V1))
    assert host.read("/proc/uptime") == "97320.45 370112.80\n"
    assert host.read("/proc/no-such-file") is None
    assert host.path("/proc/stat") == os.path.join(str(V1), "proc/stat")
    assert HostFiles("/").path("/proc/stat") == "/proc/stat"


def test_host_files_readlink_of_namespace_links():
    host = HostFiles(str(V1))
    assert host.readlink("/proc/200/ns/pid") == "pid:[4026532200]"
    assert host.readlink("/proc/200/ns/time") == "time:[4026532205]"
    # /proc/self is a link to the daemon's own pid (50), in the host namespaces.
    assert host.readlink("/proc/self/ns/pid") == "pid:[4026531836]"
    assert host.readlink("/proc/self/ns/time") == "time:[4026531834]"
    assert host.readlink("/proc/4242/ns/pid") is None


def test_host_files_online_cpus():
    assert HostFiles(str(V1)).online_cpus() == frozenset({0, 1, 2, 3})


def test_host_files_online_cpus_falls_back_to_cpu_count(tmp_path):
    assert HostFiles(str(tmp_path)).online_cpus() == frozenset(range(os.cpu_count() or 1))


# -- the fixture processes agree with themselves ----------------------------------------------

# pid: (state, ppid, NSpid, starttime, pid namespace, time namespace)
FIXTURE_PROCESSES = {
    1: ("S", 0, (1,), 11, "pid:[4026531836]", "time:[4026531834]"),
    50: ("S", 1, (50,), 612, "pid:[4026531836]", "time:[4026531834]"),
    100: ("S", 1, (100,), 845, "pid:[4026531836]", "time:[4026531834]"),
    200: ("S", 1, (200, 1), 8640012, "pid:[4026532200]", "time:[4026532205]"),
    201: ("R", 200, (201, 2), 8640131, "pid:[4026532200]", "time:[4026532205]"),
    210: ("S", 200, (210, 5), 8652345, "pid:[4026532200]", "time:[4026532205]"),
    300: ("S", 1, (300, 1), 9000050, "pid:[4026532300]", "time:[4026531834]"),
    301: ("D", 300, (301, 7), 9000420, "pid:[4026532300]", "time:[4026531834]"),
}


@pytest.mark.parametrize("layout", ["v1", "hybrid", "v2"])
@pytest.mark.parametrize("pid", sorted(FIXTURE_PROCESSES))
def test_fixture_processes(layout, pid):
    state, ppid, nspid, starttime, pid_ns, time_ns = FIXTURE_PROCESSES[pid]
    host = HostFiles(str(FIXTURES / layout))
    assert parse_proc_status(host.read(f"/proc/{pid}/status")) == ProcStatus(state, ppid, nspid)
    assert parse_proc_pid_stat(host.read(f"/proc/{pid}/stat")) == ProcStat(pid, state, ppid, starttime)
    assert host.readlink(f"/proc/{pid}/ns/pid") == pid_ns
    assert host.readlink(f"/proc/{pid}/ns/time") == time_ns
    # Started before "now" (uptime 97320.45 s at 100 ticks/s).
    assert starttime < 9732045
