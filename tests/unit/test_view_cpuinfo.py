"""/proc/cpuinfo: the view CPUs' blocks, renumbered, topology consistent."""

from pathlib import Path

import pytest

from procview.views.cpuinfo import render_cpuinfo
from procview.views.cpuview import CpuView

HOST = Path(__file__).resolve().parent.parent / "fixtures" / "host"


def host_text(name: str) -> str:
    return (HOST / name).read_text()


def view_of(*cpus: int) -> CpuView:
    return CpuView(tuple(cpus), float(len(cpus)), True)


def field_values(text: str, name: str) -> list[str]:
    """Every value of field ``name``, in order."""
    values = []
    for line in text.splitlines():
        field, colon, value = line.partition(":")
        if colon and field.strip() == name:
            values.append(value.strip())
    return values


# -- this machine's x86 cpuinfo (2 CPUs, one package, 2 cores) -------------


def test_x86_view_of_real_cpu_1_is_cpu_0_alone():
    text = host_text("cpuinfo_x86_2cpu.txt")
    cpu1_block = text.split("\n\n")[1]
    assert "processor\t: 1" in cpu1_block and "siblings\t: 2" in cpu1_block
    expected = (
        cpu1_block.replace("processor\t: 1", "processor\t: 0")
        .replace("siblings\t: 2", "siblings\t: 1")
        .replace("cpu cores\t: 2", "cpu cores\t: 1")
        + "\n\n"
    )
    assert render_cpuinfo(text, view_of(1)) == expected


def test_x86_whole_host_view_is_the_host_text():
    text = host_text("cpuinfo_x86_2cpu.txt")
    assert render_cpuinfo(text, CpuView((0, 1), 2.0, False)) == text


# -- made-up 1-package, 2-core, 4-thread host ------------------------------
# cpu0 and cpu2 are the two threads of core 0; cpu1 and cpu3 of core 1.


def test_ht_view_of_cpus_2_and_3_is_two_threads_on_two_cores():
    out = render_cpuinfo(host_text("cpuinfo_x86_4cpu_ht.txt"), view_of(2, 3))
    assert field_values(out, "processor") == ["0", "1"]
    assert field_values(out, "siblings") == ["2", "2"]
    assert field_values(out, "cpu cores") == ["2", "2"]
    # What the blocks say about the real CPUs is the host's.
    assert field_values(out, "core id") == ["0", "1"]
    assert field_values(out, "apicid") == ["1", "3"]
    assert field_values(out, "cpu MHz") == ["2899.874", "800.046"]
    # Host formatting: tabs, one blank line after each block.
    assert out.startswith("processor\t: 0\nvendor_id\t: GenuineIntel\n")
    assert "\n\nprocessor\t: 1\n" in out
    assert out.endswith("power management:\n\n") and out.count("\n\n") == 2


def test_ht_view_of_both_threads_of_one_core_is_one_core():
    out = render_cpuinfo(host_text("cpuinfo_x86_4cpu_ht.txt"), view_of(0, 2))
    assert field_values(out, "processor") == ["0", "1"]
    assert field_values(out, "siblings") == ["2", "2"]
    assert field_values(out, "cpu cores") == ["1", "1"]


def test_ht_view_of_one_thread():
    out = render_cpuinfo(host_text("cpuinfo_x86_4cpu_ht.txt"), view_of(3))
    assert field_values(out, "processor") == ["0"]
    assert field_values(out, "siblings") == ["1"]
    assert field_values(out, "cpu cores") == ["1"]
    assert field_values(out, "initial apicid") == ["3"]


def test_ht_whole_host():
    text = host_text("cpuinfo_x86_4cpu_ht.txt")
    assert render_cpuinfo(text, CpuView((0, 1, 2, 3), 4.0, False)) == text


def test_two_packages_count_per_package():
    blocks = [
        f"processor\t: {cpu}\nphysical id\t: {package}\nsiblings\t: 2\ncore id\t\t: {core}\ncpu cores\t: 2\n"
        for cpu, package, core in [(0, 0, 0), (1, 0, 1), (2, 1, 0), (3, 1, 1)]
    ]
    out = render_cpuinfo("\n".join(blocks), view_of(1, 2, 3))
    assert out == (
        "processor\t: 0\nphysical id\t: 0\nsiblings\t: 1\ncore id\t\t: 1\ncpu cores\t: 1\n\n"
        "processor\t: 1\nphysical id\t: 1\nsiblings\t: 2\ncore id\t\t: 0\ncpu cores\t: 2\n\n"
        "processor\t: 2\nphysical id\t: 1\nsiblings\t: 2\ncore id\t\t: 1\ncpu cores\t: 2\n"
    )


def test_non_numeric_topology_values_are_left_alone():
    text = "processor\t: 0\nphysical id\t: 0\nsiblings\t: many\n\nprocessor\t: 1\nphysical id\t: 0\nsiblings\t: many\n"
    assert render_cpuinfo(text, view_of(1)) == "processor\t: 0\nphysical id\t: 0\nsiblings\t: many\n"


# -- aarch64 (Raspberry Pi 4: no topology fields, trailing board lines) ----


def test_aarch64_keeps_its_trailing_hardware_lines():
    out = render_cpuinfo(host_text("cpuinfo_aarch64.txt"), view_of(2))
    assert out == (
        "processor\t: 0\n"
        "BogoMIPS\t: 108.00\n"
        "Features\t: fp asimd evtstrm crc32 cpuid\n"
        "CPU implementer\t: 0x41\n"
        "CPU architecture: 8\n"
        "CPU variant\t: 0x0\n"
        "CPU part\t: 0xd08\n"
        "CPU revision\t: 3\n"
        "\n"
        "Hardware\t: BCM2835\n"
        "Revision\t: c03114\n"
        "Serial\t\t: 10000000a1b2c3d4\n"
        "Model\t\t: Raspberry Pi 4 Model B Rev 1.4\n"
    )


def test_aarch64_two_cpus():
    out = render_cpuinfo(host_text("cpuinfo_aarch64.txt"), view_of(1, 3))
    assert field_values(out, "processor") == ["0", "1"]
    assert field_values(out, "Hardware") == ["BCM2835"]
    assert "siblings" not in out


# -- s390x (summary block first, then "cpu number" blocks) -----------------


def test_s390x_summary_and_cpu_blocks_follow_the_view():
    out = render_cpuinfo(host_text("cpuinfo_s390x.txt"), view_of(1, 3))
    assert field_values(out, "# processors") == ["2"]
    summary = [line for line in out.splitlines() if line.startswith("processor ")]
    assert summary == [
        "processor 0: version = 00,  identification = 2D3C58,  machine = 8561",
        "processor 1: version = 00,  identification = 2D3C58,  machine = 8561",
    ]
    assert field_values(out, "cpu number") == ["0", "1"]
    assert field_values(out, "address") == ["1", "3"]  # the real CPUs'
    assert field_values(out, "siblings") == ["2", "2"]
    assert field_values(out, "cpu cores") == ["2", "2"]
    assert out.startswith("vendor_id       : IBM/S390\n# processors    : 2\n")
    assert out.endswith("cpu MHz static  : 5200\n")


def test_s390x_dropping_the_last_cpu_keeps_the_final_newline():
    out = render_cpuinfo(host_text("cpuinfo_s390x.txt"), view_of(0))
    assert field_values(out, "# processors") == ["1"]
    assert field_values(out, "cpu number") == ["0"]
    assert out.endswith("\ncpu MHz static  : 5200\n")


# -- odd input: never raise, never show no CPU -----------------------------


@pytest.mark.parametrize("text", ["", "\n", "some unknown format\nwith: fields\n"])
def test_text_without_cpu_blocks_is_returned_unchanged(text):
    assert render_cpuinfo(text, view_of(0)) == text


def test_view_cpus_missing_from_the_text_gives_the_host_text():
    text = host_text("cpuinfo_x86_2cpu.txt")
    assert render_cpuinfo(text, view_of(5)) == text


def test_blocks_come_in_view_order():
    text = "processor\t: 0\nmodel\t: a\n\nprocessor\t: 1\nmodel\t: b\n\nprocessor\t: 2\nmodel\t: c\n"
    out = render_cpuinfo(text, CpuView((2, 0), 2.0, True))
    assert out == "processor\t: 0\nmodel\t: c\n\nprocessor\t: 1\nmodel\t: a\n"
