"""procview.views.sys_node: /sys/devices/system/node/nodeN/meminfo.

Host samples: ``node0_meminfo.txt`` (this VM's node 0) with
``meminfo.txt`` and ``meminfo_swap_hugepages.txt`` as /proc/meminfo.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from procview.cgroups import UNLIMITED, MemoryLimits, MemoryStat, MemoryUsage
from procview.host import parse_meminfo
from procview.views._inputs import ContainerMemory
from procview.views.meminfo import meminfo_values
from procview.views.sys_node import node_values, parse_node_meminfo, render_node_meminfo, renumber_node

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "host"
NODE_TEXT = (FIXTURES / "node0_meminfo.txt").read_text()
HOST = parse_meminfo((FIXTURES / "meminfo.txt").read_text())
SWAP_HOST = parse_meminfo((FIXTURES / "meminfo_swap_hugepages.txt").read_text())

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

STAT = MemoryStat(
    anon=100 * MiB,
    file=80 * MiB,
    shmem=8 * MiB,
    file_mapped=30 * MiB,
    file_dirty=1 * MiB,
    file_writeback=512 * KiB,
    active_anon=60 * MiB,
    inactive_anon=48 * MiB,
    active_file=40 * MiB,
    inactive_file=32 * MiB,
    unevictable=2 * MiB,
    slab_reclaimable=6 * MiB,
    slab_unreclaimable=3 * MiB,
    anon_thp=4 * MiB,
    kernel_stack=1 * MiB,
    pagetables=2 * MiB,
    swapcached=1 * MiB,
)
# 512 MiB limit, 200 MiB used.
VALUES = meminfo_values(HOST, ContainerMemory(MemoryLimits(512 * MiB, None), MemoryUsage(200 * MiB, None), STAT))

EXPECTED_NODE0 = """\
Node 0 MemTotal:         524288 kB
Node 0 MemFree:          319488 kB
Node 0 MemUsed:          204800 kB
Node 0 SwapCached:         1024 kB
Node 0 Active:           102400 kB
Node 0 Inactive:          81920 kB
Node 0 Active(anon):      61440 kB
Node 0 Inactive(anon):    49152 kB
Node 0 Active(file):      40960 kB
Node 0 Inactive(file):    32768 kB
Node 0 Unevictable:        2048 kB
Node 0 Mlocked:            2048 kB
Node 0 Dirty:              1024 kB
Node 0 Writeback:           512 kB
Node 0 FilePages:         82944 kB
Node 0 Mapped:            30720 kB
Node 0 AnonPages:        102400 kB
Node 0 Shmem:              8192 kB
Node 0 KernelStack:        1024 kB
Node 0 PageTables:         2048 kB
Node 0 SecPageTables:         0 kB
Node 0 NFS_Unstable:          0 kB
Node 0 Bounce:                0 kB
Node 0 WritebackTmp:          0 kB
Node 0 KReclaimable:       6144 kB
Node 0 Slab:               9216 kB
Node 0 SReclaimable:       6144 kB
Node 0 SUnreclaim:         3072 kB
Node 0 AnonHugePages:      4096 kB
Node 0 ShmemHugePages:        0 kB
Node 0 ShmemPmdMapped:        0 kB
Node 0 FileHugePages:         0 kB
Node 0 FilePmdMapped:         0 kB
Node 0 HugePages_Total:     0
Node 0 HugePages_Free:      0
Node 0 HugePages_Surp:      0
"""


def names_in_order(text: str) -> list[str]:
    return [line.split(":", 1)[0] for line in text.splitlines()]


def test_node0_is_the_whole_container():
    # MemUsed = 524288 - 319488; FilePages = Cached 81920 + Buffers 0 + SwapCached 1024.
    assert render_node_meminfo(NODE_TEXT, 0, VALUES) == EXPECTED_NODE0


def test_every_host_line_in_order():
    text = render_node_meminfo(NODE_TEXT, 0, VALUES)
    assert names_in_order(text) == names_in_order(NODE_TEXT)
    for host_line, line in zip(NODE_TEXT.splitlines(), text.splitlines()):
        assert len(line) == len(host_line)


def test_agrees_with_meminfo():
    node = parse_node_meminfo(render_node_meminfo(NODE_TEXT, 0, VALUES))
    for name, value in node.items():
        if name in VALUES:
            assert value == VALUES[name], name
    assert node["MemTotal"] - node["MemFree"] == node["MemUsed"]


def test_host_node_number_is_replaced():
    host_node1 = NODE_TEXT.replace("Node 0 ", "Node 1 ")
    assert render_node_meminfo(host_node1, 0, VALUES) == EXPECTED_NODE0
    text = render_node_meminfo(NODE_TEXT, 12, VALUES)
    assert all(line.startswith("Node 12 ") for line in text.splitlines())
    assert text.splitlines()[0] == "Node 12 MemTotal:         524288 kB"
    assert text == EXPECTED_NODE0.replace("Node 0 ", "Node 12 ")


def test_renumber_node_keeps_other_lines():
    assert renumber_node("Node 3 MemTotal: 5 kB\nNodeless: 1\n", 0) == "Node 0 MemTotal: 5 kB\nNodeless: 1\n"


def test_node_only_and_unknown_fields_are_clamped():
    host_node = {"MemTotal": 4810528, "HighTotal": 9000000, "LowFree": 1000, "FilePages": 9000000}
    values = {"MemTotal": 524288, "MemFree": 100000, "Cached": 600000, "SwapCached": 0, "Buffers": 0}
    assert node_values(host_node, values) == {
        "MemTotal": 524288,
        "HighTotal": 524288,
        "LowFree": 1000,
        "FilePages": 524288,
    }


def test_huge_pages_follow_meminfo():
    values = meminfo_values(SWAP_HOST, ContainerMemory(MemoryLimits(512 * MiB, None), MemoryUsage(0, None), None))
    text = render_node_meminfo(NODE_TEXT, 0, values)
    assert "Node 0 HugePages_Total:   256\n" in text
    assert "Node 0 HugePages_Free:    250\n" in text
    assert "Node 0 HugePages_Surp:      2\n" in text


def test_unlimited_container_is_host_sized():
    values = meminfo_values(HOST, ContainerMemory(MemoryLimits(UNLIMITED, None), MemoryUsage(1 * GiB, None), None))
    node = parse_node_meminfo(render_node_meminfo(NODE_TEXT, 0, values))
    assert node["MemTotal"] == 24683656  # /proc/meminfo's, not the host node's 4810528
    assert node["MemUsed"] == 1048576


def test_empty_text():
    assert render_node_meminfo("", 0, VALUES) == ""


_BYTES = st.one_of(st.none(), st.sampled_from([0, 2**63 - 4096]), st.integers(min_value=0, max_value=2**64))
_LIMIT = st.one_of(st.just(UNLIMITED), _BYTES)


@settings(max_examples=200, deadline=None)
@given(
    memory=st.builds(
        ContainerMemory,
        st.builds(MemoryLimits, _LIMIT, _LIMIT),
        st.builds(MemoryUsage, _BYTES, _BYTES),
        st.one_of(st.none(), st.builds(MemoryStat, **{field: _BYTES for field in MemoryStat._fields})),
    ),
    node=st.integers(min_value=0, max_value=1023),
)
def test_any_values_give_a_sane_node_file(memory, node):
    values = meminfo_values(SWAP_HOST, memory)
    text = render_node_meminfo(NODE_TEXT, node, values)
    assert all(line.startswith(f"Node {node} ") for line in text.splitlines())
    parsed = parse_node_meminfo(text)
    assert list(parsed) == list(parse_node_meminfo(NODE_TEXT))
    assert min(parsed.values()) >= 0
    for name, value in parsed.items():
        if not name.startswith("HugePages_"):
            assert value <= parsed["MemTotal"], name
    assert parsed["MemUsed"] + parsed["MemFree"] == parsed["MemTotal"] == values["MemTotal"]
