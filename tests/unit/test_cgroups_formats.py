"""The pure parsers of the cgroup model: kernel file formats in, plain values out.

Every parser returns None (never raises) for text it cannot make sense of;
each test below names the kernel file whose format it exercises.
"""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from procview.cgroups import UNLIMITED, CgroupMount, format_cpulist, parse_cpulist, parse_single_value
from procview.cgroups._formats import (
    FlatKeyedSelection,
    parse_blkio_recursive,
    parse_cpu_max,
    parse_cpuacct_usage_all,
    parse_flat_keyed,
    parse_nested_keyed,
    parse_percpu,
)
from procview.cgroups._mountinfo import ProcCgroup, parse_mountinfo, parse_proc_cgroup

# -- one-number files (memory.max, memory.limit_in_bytes, pids.max, cpu.cfs_quota_us)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("max\n", UNLIMITED),  # v2 memory.max / pids.max
        ("max", UNLIMITED),
        ("-1\n", UNLIMITED),  # v1 cpu.cfs_quota_us, and what v1 accepts as "no limit"
        ("9223372036854771712\n", UNLIMITED),  # v1 memory.limit_in_bytes: PAGE_COUNTER_MAX * 4096
        ("9223372036854775807\n", UNLIMITED),  # LLONG_MAX (page size not 4 KiB)
        (str(1 << 62) + "\n", UNLIMITED),  # the threshold itself
        (str((1 << 62) - 1) + "\n", (1 << 62) - 1),  # just below: still a number
        ("524288000\n", 524288000),
        ("  42\n", 42),
        ("0\n", 0),
        ("", None),
        ("\n", None),
        ("abc\n", None),
        ("12x45\n", None),
        ("-5\n", None),  # negative, and not the -1 spelling: garbage
        ("1.5\n", None),
        (None, None),
    ],
)
def test_parse_single_value(text, expected):
    result = parse_single_value(text)
    if expected is UNLIMITED or expected is None:
        assert result is expected
    else:
        assert type(result) is int and result == expected


def test_parse_single_value_keeps_unlimited_and_unknown_apart():
    # The two spellings never mix: "max" is a fact, "" is no information.
    assert parse_single_value("max") is UNLIMITED
    assert parse_single_value("") is None
    assert parse_single_value("max") is not None


# -- cpu lists (cpuset.cpus, /sys/devices/system/cpu/online)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("0-3,8\n", frozenset({0, 1, 2, 3, 8})),
        ("0-3,8,10-11", frozenset({0, 1, 2, 3, 8, 10, 11})),
        ("2\n", frozenset({2})),
        ("5-5", frozenset({5})),
        ("", frozenset()),  # v1 cpuset.cpus of a new cgroup: "not set"
        ("\n", frozenset()),
        ("3-1", None),  # reversed range: garbled
        ("a", None),
        ("0-a", None),
        ("-1", None),
        ("0-3x", None),
        (None, None),
    ],
)
def test_parse_cpulist(text, expected):
    assert parse_cpulist(text) == expected


@pytest.mark.parametrize(
    "cpus, text",
    [
        (frozenset({0, 1, 2, 5}), "0-2,5"),
        (frozenset({0, 2, 3}), "0,2-3"),
        (frozenset({7}), "7"),
        (frozenset(range(64)), "0-63"),
        (frozenset(), ""),
    ],
)
def test_format_cpulist(cpus, text):
    assert format_cpulist(cpus) == text


@given(st.frozensets(st.integers(min_value=0, max_value=4095), max_size=200))
def test_format_cpulist_round_trips_through_parse(cpus):
    assert parse_cpulist(format_cpulist(cpus)) == cpus


@given(st.frozensets(st.integers(min_value=0, max_value=4095), max_size=200))
def test_format_cpulist_is_canonical(cpus):
    # Sorted, no adjacent ranges left unmerged: formatting twice changes nothing.
    text = format_cpulist(cpus)
    assert format_cpulist(parse_cpulist(text)) == text
    assert "," not in text or all(part for part in text.split(","))


# -- v2 cpu.max


@pytest.mark.parametrize(
    "text, expected",
    [
        ("150000 100000\n", (150000, 100000)),
        ("max 100000\n", (UNLIMITED, 100000)),
        ("max", None),  # the kernel always prints two fields
        ("", None),
        ("0 100000", None),
        ("-1 100000", None),
        ("150000 0", None),
        ("lots of cpu\n", None),
        ("abc 100000", None),
        ("150000 abc", None),
        (None, None),
    ],
)
def test_parse_cpu_max(text, expected):
    assert parse_cpu_max(text) == expected


# -- flat keyed (memory.stat, cpu.stat, cpuacct.stat)


def test_parse_flat_keyed():
    text = "user 240\nsystem 60\nbroken x\nthree fields here\n\n"
    assert parse_flat_keyed(text) == {"user": 240, "system": 60}
    assert parse_flat_keyed("") == {}
    assert parse_flat_keyed(None) is None


V1_MEMORY_STAT = (  # a v1 memory.stat: each counter twice, the cgroup's own and total_*
    "cache 4096\nrss 8192\nrss_huge 0\nshmem 0\nswap 0\n"
    "hierarchical_memory_limit 536870912\n"
    "total_cache 40960\ntotal_rss 81920\ntotal_rss_huge 2097152\ntotal_shmem 4096\ntotal_swap 0\n"
)
V1_SELECTION = FlatKeyedSelection({"total_rss": "anon", "total_cache": "file", "total_rss_huge": "anon_thp", "total_shmem": "shmem"})


def test_flat_keyed_selection_reads_only_its_keys_under_their_names():
    # rss and total_rss, total_rss and total_rss_huge: a key matches whole, never a prefix.
    assert V1_SELECTION.parse(V1_MEMORY_STAT) == {"file": 40960, "anon": 81920, "anon_thp": 2097152, "shmem": 4096}
    v2 = FlatKeyedSelection({"anon": "anon", "anon_thp": "anon_thp", "file": "file"})
    assert v2.parse("anon 12288\nfile 4096\nkernel 0\nanon_thp 0\nfile_mapped 7\n") == {"anon": 12288, "file": 4096, "anon_thp": 0}


@pytest.mark.parametrize(
    "text, expected",
    [
        (None, None),  # no file
        ("", {}),
        ("garbage\n\n\x00\xff", {}),
        ("rss 5\ncache 6\n", {}),  # v1 without its total_* keys: none of the selected ones
        ("total_rss 5", {"anon": 5}),  # no final newline
        ("total_rss x\ntotal_cache 7 kB\ntotal_shmem\n", {}),  # garbled values, a third field, no value
        ("total_rss -4096\ntotal_cache +7\n", {"anon": -4096, "file": 7}),  # as int() reads them
        ("total_rss 1\ntotal_rss 2\n", {"anon": 2}),  # twice: the last line, as parse_flat_keyed
        ("  total_rss\t 3 \n", {"anon": 3}),  # blanks around, as str.split
        ("xtotal_rss 1\ntotal_rssx 2\ntotal.rss 3\n", {}),  # near misses
    ],
)
def test_flat_keyed_selection_odd_input(text, expected):
    assert V1_SELECTION.parse(text) == expected


@given(st.lists(st.tuples(st.sampled_from(["total_rss", "total_cache", "rss", "total_rss_huge", "x y", ""]), st.text("0123456789-x ", max_size=6))))
def test_flat_keyed_selection_agrees_with_parse_flat_keyed(lines):
    text = "".join(f"{key} {value}\n" for key, value in lines)
    full = parse_flat_keyed(text)
    assert V1_SELECTION.parse(text) == {name: full[key] for key, name in V1_SELECTION.names.items() if key in full}


# -- nested keyed (v2 io.stat)

IO_STAT = (
    "254:0 rbytes=49152000 wbytes=13926400 rios=1200 wios=340 dbytes=1048576 dios=3\n"
    "254:16 rbytes=40960 wbytes=0 rios=10 wios=0 dbytes=0 dios=0\n"
)


def test_parse_nested_keyed_io_stat():
    assert parse_nested_keyed(IO_STAT) == {
        "254:0": {"rbytes": "49152000", "wbytes": "13926400", "rios": "1200", "wios": "340", "dbytes": "1048576", "dios": "3"},
        "254:16": {"rbytes": "40960", "wbytes": "0", "rios": "10", "wios": "0", "dbytes": "0", "dios": "0"},
    }


def test_parse_nested_keyed_odd_lines():
    # A bare name gives an empty mapping; items without "=" are dropped.
    assert parse_nested_keyed("8:0\n8:16 rbytes=1 junk\n\n") == {"8:0": {}, "8:16": {"rbytes": "1"}}
    assert parse_nested_keyed("") == {}
    assert parse_nested_keyed(None) is None


# -- v1 blkio.*_recursive

BLKIO_SERVICED = """254:16 Read 10
254:16 Write 0
254:16 Sync 10
254:16 Async 0
254:16 Discard 0
254:16 Total 10
254:0 Read 1200
254:0 Write 340
254:0 Sync 1458
254:0 Async 85
254:0 Discard 3
254:0 Total 1543
Total 1553
"""


def test_parse_blkio_recursive():
    assert parse_blkio_recursive(BLKIO_SERVICED) == {
        (254, 16): {"read": 10, "write": 0, "sync": 10, "async": 0, "discard": 0, "total": 10},
        (254, 0): {"read": 1200, "write": 340, "sync": 1458, "async": 85, "discard": 3, "total": 1543},
    }


def test_parse_blkio_recursive_idle_and_garbage():
    # A cgroup that did no I/O prints only the grand total (as on this host).
    assert parse_blkio_recursive("Total 0\n") == {}
    assert parse_blkio_recursive("8:0 Read many\nx:y Read 1\n") == {}
    assert parse_blkio_recursive(None) is None


# -- v1 cpuacct


def test_parse_cpuacct_usage_all():
    text = "cpu user system\n0 1210000000 290000000\n1 790000000 210000000\n"
    assert parse_cpuacct_usage_all(text) == {0: (1210000000, 290000000), 1: (790000000, 210000000)}
    assert parse_cpuacct_usage_all("cpu user system\n") is None
    assert parse_cpuacct_usage_all("cpu user system\nzero one two\n") is None
    assert parse_cpuacct_usage_all(None) is None


def test_parse_percpu():
    # The kernel ends the line with a space.
    assert parse_percpu("1500000000 1000000000 500000000 0 \n") == [1500000000, 1000000000, 500000000, 0]
    assert parse_percpu("") is None
    assert parse_percpu("a b c d\n") is None
    assert parse_percpu(None) is None


# -- /proc/self/mountinfo

# This machine's cgroup lines (kernel 6.18, hybrid).
HYBRID_LINES = """32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""


def test_parse_mountinfo_hybrid_lines():
    assert parse_mountinfo(HYBRID_LINES) == [
        CgroupMount(1, "/sys/fs/cgroup/cpu", "/", frozenset({"cpu"})),
        CgroupMount(1, "/sys/fs/cgroup/cpuacct", "/", frozenset({"cpuacct"})),
        CgroupMount(1, "/sys/fs/cgroup/systemd", "/", frozenset({"name=systemd"})),
        CgroupMount(2, "/sys/fs/cgroup/unified", "/", frozenset()),
    ]


def test_parse_mountinfo_options_optional_fields_and_non_cgroup_lines():
    text = (
        "21 27 0:20 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw\n"
        "28 21 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:8 - tmpfs tmpfs ro,mode=755\n"
        "29 28 0:24 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:9 master:3 - cgroup cgroup "
        "rw,xattr,release_agent=/lib/systemd/systemd-cgroups-agent,name=systemd\n"
        "31 28 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,cpu,cpuacct\n"
        "33 28 0:28 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,cpuset,clone_children\n"
        "34 28 0:29 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,net_cls,net_prio\n"
        "35 28 0:30 / /dev/cpuset rw,relatime - cgroup none rw,cpuset,noprefix,cpuset_v2_mode\n"
        "garbage line without separator\n"
        "36 28 0:31 / - cgroup\n"
    )
    mounts = parse_mountinfo(text)
    assert [(m.mountpoint, m.controllers) for m in mounts] == [
        ("/sys/fs/cgroup/systemd", frozenset({"name=systemd"})),
        ("/sys/fs/cgroup/cpu,cpuacct", frozenset({"cpu", "cpuacct"})),
        ("/sys/fs/cgroup/cpuset", frozenset({"cpuset"})),
        ("/sys/fs/cgroup/net_cls,net_prio", frozenset({"net_cls", "net_prio"})),
    ]


def test_parse_mountinfo_unescapes_octal():
    text = (
        "37 28 0:32 / /sys/fs/cgroup/blk\\040io rw,relatime - cgroup cgroup rw,blkio\n"
        "38 28 0:33 /a\\134b /mnt/tab\\011here rw,relatime - cgroup cgroup rw,pids\n"
    )
    mounts = parse_mountinfo(text)
    assert mounts[0].mountpoint == "/sys/fs/cgroup/blk io"
    assert mounts[1].mountpoint == "/mnt/tab\there"
    assert mounts[1].root == "/a\\b"


def test_parse_mountinfo_prefers_the_mount_of_the_whole_hierarchy():
    # A container's bind mount of a sub-cgroup comes first here; the mount of
    # the hierarchy root, which reaches every cgroup, must still win.
    text = (
        "512 27 0:29 /parent/ctr /var/lib/lxc/ctr/rootfs/sys/fs/cgroup/memory rw,relatime - cgroup memory rw,memory\n"
        "34 27 0:29 / /cg/memory rw,relatime - cgroup memory rw,memory\n"
        "35 27 0:29 / /elsewhere/memory rw,relatime - cgroup memory rw,memory\n"
        "611 26 0:26 /parent/ctr /run/ctr/sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw,nsdelegate\n"
    )
    mounts = parse_mountinfo(text)
    assert mounts == [
        CgroupMount(1, "/cg/memory", "/", frozenset({"memory"})),
        CgroupMount(2, "/run/ctr/sys/fs/cgroup", "/parent/ctr", frozenset()),
    ]


def test_parse_mountinfo_selinux_seclabel_is_not_a_controller():
    # On SELinux hosts (Fedora, RHEL/CentOS 7) the security module adds
    # "seclabel" to the super options: "... - cgroup cgroup rw,seclabel,memory".
    # It is not a controller (the kernel never has a "seclabel" subsystem).
    # MODEL BUG: _V1_NON_CONTROLLER_OPTIONS lacks "seclabel".
    text = (
        "26 25 0:21 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:9 - cgroup cgroup "
        "rw,seclabel,xattr,release_agent=/usr/lib/systemd/systemd-cgroups-agent,name=systemd\n"
        "35 30 0:31 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:7 - cgroup cgroup rw,seclabel,memory\n"
    )
    assert [m.controllers for m in parse_mountinfo(text)] == [frozenset({"name=systemd"}), frozenset({"memory"})]


def test_parse_mountinfo_nothing_mounted():
    assert parse_mountinfo("") == []
    assert parse_mountinfo("22 27 0:21 / /proc rw,relatime - proc proc rw\n") == []


# -- /proc/PID/cgroup


def test_parse_proc_cgroup_hybrid():
    text = "9:name=systemd:/parent/ctr\n2:cpuacct:/parent/ctr\n10:net_cls,net_prio:/\n0::/parent/ctr\n"
    assert parse_proc_cgroup(text) == [
        ProcCgroup(9, frozenset({"name=systemd"}), "/parent/ctr"),
        ProcCgroup(2, frozenset({"cpuacct"}), "/parent/ctr"),
        ProcCgroup(10, frozenset({"net_cls", "net_prio"}), "/"),
        ProcCgroup(0, frozenset(), "/parent/ctr"),
    ]


def test_parse_proc_cgroup_odd_lines():
    # A path may itself hold ":" (systemd escapes little); bad lines are skipped.
    text = "0::/system.slice/a:b.service\nx:cpu:/\nno colons\n"
    assert parse_proc_cgroup(text) == [ProcCgroup(0, frozenset(), "/system.slice/a:b.service")]
