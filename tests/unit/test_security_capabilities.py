"""Capabilities: names, Docker's add/drop rules, the drop sequence (with a
recording fake of runtime.linux), and the order of ``confine``."""

from __future__ import annotations

import pytest

from procview.runtime import security
from procview.runtime.linux import PR_CAP_AMBIENT, PR_CAPBSET_DROP, PR_CAPBSET_READ, PR_SET_NO_NEW_PRIVS
from procview.runtime.security import capabilities as caps
from procview.runtime.security import devices

ALL_CAPS = caps.known(40)


class FakeLinux:
    """Records calls; the bounding set starts full."""

    def __init__(self):
        self.calls = []

    def prctl(self, option, arg2=0, arg3=0):
        self.calls.append(("prctl", option, arg2))
        return 1 if option == PR_CAPBSET_READ else 0

    def capset(self, effective, permitted, inheritable):
        self.calls.append(("capset", effective, permitted, inheritable))

    def seccomp_set_filter(self, program, flags=0):
        self.calls.append(("seccomp", program, flags))
        return 42 if flags else 0  # the kernel returns the listener fd


def test_docker_default_mask():
    assert caps.mask(caps.DEFAULT) == 0xA80425FB
    assert caps.names_of(0xA80425FB) == caps.DEFAULT


@pytest.mark.parametrize("name, want", [
    ("chown", "CHOWN"), ("CAP_SYS_ADMIN", "SYS_ADMIN"), ("cap_net_raw", "NET_RAW"), ("Sys_Ptrace", "SYS_PTRACE"),
    ("all", "ALL"), ("ALL", "ALL"),
])
def test_normalize(name, want):
    assert caps.normalize(name) == want


@pytest.mark.parametrize("name", ["SYS_ADMN", "CAP_", "", "CAP_ALL", "chwon"])
def test_unknown_names_are_errors(name):
    with pytest.raises(caps.CapabilityError, match="unknown capability"):
        caps.normalize(name)


@pytest.mark.parametrize("add, drop, privileged, want", [
    ((), (), False, caps.DEFAULT),
    (("NET_ADMIN",), ("CHOWN",), False, (caps.DEFAULT | {"NET_ADMIN"}) - {"CHOWN"}),
    (("CHOWN",), ("CHOWN",), False, caps.DEFAULT),  # added after dropping, as Docker
    (("ALL",), ("MKNOD",), False, ALL_CAPS - {"MKNOD"}),
    ((), ("ALL",), False, frozenset()),
    (("KILL",), ("ALL",), False, {"KILL"}),
    (("ALL",), ("ALL",), False, ALL_CAPS),  # add ALL wins; "ALL" in drop names no real capability
    ((), (), True, ALL_CAPS),
])
def test_container_set_follows_docker(add, drop, privileged, want):
    assert caps.container_set(add, drop, privileged, all_caps=ALL_CAPS) == frozenset(want)


def test_drop_bounding_drops_every_cap_not_kept():
    linux = FakeLinux()
    caps.drop_bounding(linux, caps.DEFAULT, last_cap=40)
    dropped = {arg for name, option, arg in linux.calls if option == PR_CAPBSET_DROP}
    assert dropped == {caps.NUMBERS[n] for n in ALL_CAPS - caps.DEFAULT}


@pytest.mark.parametrize("root, value", [(True, 0xA80425FB), (False, 0)])
def test_set_process_caps(root, value):
    linux = FakeLinux()
    caps.set_process_caps(linux, caps.DEFAULT, root=root)
    assert linux.calls[0] == ("capset", value, value, 0)
    assert linux.calls[1][:2] == ("prctl", PR_CAP_AMBIENT)


@pytest.mark.parametrize("nnp", [False, True])
def test_confine_order_is_runcs(monkeypatch, nnp):
    linux = FakeLinux()
    monkeypatch.setattr(caps, "_last_cap", lambda: 40)
    for name in ("setgroups", "setgid", "setuid"):
        monkeypatch.setattr(security.os, name, lambda value, name=name: linux.calls.append((name,)))
    plan = security.SecurityPlan(caps=caps.DEFAULT, seccomp=b"\0" * 8, no_new_privs=nnp)
    security.confine(linux, plan, 0, 0, [])
    steps = []
    for call in linux.calls:
        step = {PR_SET_NO_NEW_PRIVS: "nnp", PR_CAPBSET_DROP: "bounding"}.get(call[1]) if call[0] == "prctl" else call[0]
        if step and (not steps or steps[-1] != step):
            steps.append(step)
    if nnp:
        assert steps == ["nnp", "bounding", "setgroups", "setgid", "setuid", "capset", "seccomp"]
    else:
        assert steps == ["seccomp", "bounding", "setgroups", "setgid", "setuid", "capset"]


@pytest.mark.parametrize("nnp", [False, True])
def test_the_view_filter_loads_first_with_a_listener_and_never_in_init(monkeypatch, nnp):
    """The view filter goes in before the profile's (a profile need not
    allow seccomp(2)), asks the kernel for a listener, and confine returns
    that fd; pid 1 gets no view filter."""
    from procview.runtime.linux import SECCOMP_FILTER_FLAG_NEW_LISTENER

    monkeypatch.setattr(caps, "_last_cap", lambda: 40)
    for name in ("setgroups", "setgid", "setuid"):
        monkeypatch.setattr(security.os, name, lambda value: None)
    plan = security.SecurityPlan(caps=caps.DEFAULT, seccomp=b"P" * 8, no_new_privs=nnp, view_filter=b"V" * 8)
    linux = FakeLinux()
    assert security.confine(linux, plan, 0, 0, []) == 42
    loads = [call[1:] for call in linux.calls if call[0] == "seccomp"]
    assert loads == [(b"V" * 8, SECCOMP_FILTER_FLAG_NEW_LISTENER), (b"P" * 8, 0)]
    init = FakeLinux()
    security.confine_init(init, plan, 0, 0, [])
    assert [call[1:] for call in init.calls if call[0] == "seccomp"] == [(b"P" * 8, 0)]
    assert security.confine(FakeLinux(), security.SecurityPlan(caps=caps.DEFAULT), 0, 0, []) is None


@pytest.mark.parametrize("values, seccomp, nnp", [
    ([], None, False),
    (["no-new-privileges"], None, True),
    (["no-new-privileges=true"], None, True),
    (["no-new-privileges:false"], None, False),
    (["seccomp=unconfined"], "unconfined", False),
    (["seccomp=/p.json", "no-new-privileges"], "/p.json", True),
])
def test_security_opts(values, seccomp, nnp):
    assert security.parse_security_opts(values) == security.SecurityOptions(seccomp, nnp)


@pytest.mark.parametrize("value", ["seccomp", "seccomp=", "apparmor=x", "no-new-privileges=yes", "label=disable"])
def test_bad_security_opts(value):
    with pytest.raises(security.SecurityError):
        security.parse_security_opts([value])


def test_device_rules_as_cgroup_v1_lines():
    lines = devices.cgroup_v1_lines()
    assert lines[:2] == ["c *:* m", "b *:* m"]
    assert "c 1:3 rwm" in lines and "c 136:* rwm" in lines and "c 5:2 rwm" in lines


@pytest.mark.parametrize("kind, major, minor, access, allowed", [
    ("c", 1, 3, "rw", True), ("c", 136, 7, "rw", True), ("b", 8, 0, "m", True), ("c", 10, 229, "m", True),
    ("b", 8, 0, "r", False), ("b", 254, 0, "rw", False), ("c", 10, 229, "rw", False), ("c", 1, 1, "r", False),
])
def test_device_rules(kind, major, minor, access, allowed):
    assert devices.evaluate(devices.ALLOWED, kind, major, minor, access) is allowed


def test_device_program_is_whole_instructions():
    program = devices.device_program()
    assert len(program) % 8 == 0 and program[-8] == 0x95  # ends with exit


def test_masked_paths_add_each_cpus_thermal_throttle_directory(tmp_path):
    from procview.runtime.security import paths

    cpus = tmp_path / "sys/devices/system/cpu"
    for name in ("cpu0/thermal_throttle", "cpu10/thermal_throttle", "cpu1", "cpufreq/thermal_throttle"):
        (cpus / name).mkdir(parents=True)
    (cpus / "cpu2").mkdir()
    (cpus / "cpu2" / "thermal_throttle").write_text("")  # a file is masked too (with /dev/null)
    assert paths.masked_paths(str(tmp_path)) == [
        *paths.MASKED_PATHS,
        "/sys/devices/system/cpu/cpu0/thermal_throttle",
        "/sys/devices/system/cpu/cpu10/thermal_throttle",
        "/sys/devices/system/cpu/cpu2/thermal_throttle",
    ]
    assert paths.masked_paths(str(tmp_path / "nowhere")) == list(paths.MASKED_PATHS)
