"""procview-runc's pure parts: runc's command line and the config.json edit
(runtime/oci_shim.py)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from procview.runtime import oci_shim
from procview.runtime.oci_shim import edit_config, parse_runc_argv

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "oci" / "docker-20.10-config.json"
REPO = Path(__file__).resolve().parents[2]
VIEW = "/var/lib/procview"
SOCK = "/run/procview/seccomp.sock"
ARCHES = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]


def docker_config() -> dict:
    return json.loads(FIXTURE.read_text())


def entries_naming(seccomp: dict, name: str) -> list[dict]:
    return [e for e in seccomp["syscalls"] if name in e.get("names", [])]


# -- the command line -----------------------------------------------------------------


@pytest.mark.parametrize("argv, expected", [
    # containerd's runc shim
    (["--root", "/run/containerd/runc/moby", "--log", "/x/log.json", "--log-format", "json", "--systemd-cgroup",
      "create", "--bundle", "/b", "--pid-file", "/b/init.pid", "--console-socket", "/tmp/c.sock", "abc"],
     ("create", "/b", "abc")),
    (["run", "-b", "/b", "id1"], ("run", "/b", "id1")),
    (["run", "-bundle=/b", "id1"], ("run", "/b", "id1")),
    (["run", "--bundle=/b", "id1"], ("run", "/b", "id1")),
    (["run", "-bundle", "/b", "id1"], ("run", "/b", "id1")),
    (["run", "id1", "--bundle", "/b"], ("run", "/b", "id1")),  # urfave cli reorders flags
    (["run", "-d", "--keep", "--no-pivot", "--pid-file", "p", "--preserve-fds", "2", "id1"], ("run", "CWD", "id1")),
    (["--debug", "--criu", "/usr/sbin/criu", "--rootless=false", "run", "--console-socket=/s", "id1"], ("run", "CWD", "id1")),
    (["-log", "/l", "-root=/r", "create", "id2"], ("create", "CWD", "id2")),
    (["--debug=true", "create", "-b", "/b", "--", "id3"], ("create", "/b", "id3")),
    (["create", "-b", "/b"], ("create", "/b", None)),  # no id: runc says so
    (["run", "--help"], ("run", None, None)),
    (["run", "-h", "id"], ("run", None, None)),
    (["--root", "/r", "state", "id"], ("state", None, None)),
    (["delete", "--force", "id"], ("delete", None, None)),
    (["exec", "-t", "id", "run"], ("exec", None, None)),
    (["--root", "run", "state", "id"], ("state", None, None)),  # "run" is --root's value
    (["--version"], (None, None, None)),
    (["-v"], (None, None, None)),
    (["--help"], (None, None, None)),
    ([], (None, None, None)),
    (["--log", "/l"], (None, None, None)),
])
def test_parse_runc_argv(argv, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    expected = tuple(str(tmp_path) if v == "CWD" else v for v in expected)
    assert parse_runc_argv(argv) == expected


@pytest.mark.parametrize("argv", [
    ["--no-such-flag", "run", "id"],
    ["run", "--no-such-flag", "id"],
    ["create", "-x", "-b", "/b", "id"],
])
def test_an_unknown_flag_is_refused(argv):
    """runc refuses it too; the shim then edits nothing."""
    with pytest.raises(ValueError, match="unknown"):
        parse_runc_argv(argv)


def test_global_flag_reads_runc_global_flags_only():
    argv = ["--log=/l", "--log-format", "json", "run", "--log", "/not-global", "id"]
    assert oci_shim.global_flag(argv, "log") == "/l"
    assert oci_shim.global_flag(argv, "log-format") == "json"
    assert oci_shim.global_flag(["run", "--log", "/x", "id"], "log") is None


# -- mounts -----------------------------------------------------------------------------


def view_destinations():
    return [f"/proc/{n}" for n in oci_shim.VIEW_PROC_FILES] + ["/sys/devices/system/cpu", "/sys/devices/system/node"]


def test_docker_config_gets_the_view_mounts_appended_and_nothing_else():
    config = docker_config()
    before = copy.deepcopy(config)
    new, warnings = edit_config(config, VIEW, None)
    assert config == before  # the input is not changed
    assert warnings == []
    assert new["mounts"][: len(config["mounts"])] == config["mounts"]
    added = new["mounts"][len(config["mounts"]):]
    assert [m["destination"] for m in added] == view_destinations()
    assert added[0] == {"destination": "/proc/meminfo", "type": "bind", "source": f"{VIEW}/proc/meminfo", "options": ["bind", "rw"]}
    assert added[-1]["source"] == f"{VIEW}/sys/devices/system/node"
    # Nothing else changed: seccomp untouched without a listener.
    assert {k: v for k, v in new.items() if k != "mounts"} == {k: v for k, v in before.items() if k != "mounts"}


def test_the_users_own_mounts_win():
    config = docker_config()
    config["mounts"] += [
        {"destination": "/proc/meminfo", "type": "bind", "source": "/lxcfs/proc/meminfo", "options": ["rbind"]},
        {"destination": "/proc/uptime/", "type": "bind", "source": "/x", "options": ["rbind"]},  # spelled differently
        {"destination": "/sys/devices/system", "type": "bind", "source": "/y", "options": ["rbind"]},  # a parent
        {"destination": "/proc/stat/../cpuinfo", "type": "bind", "source": "/z", "options": ["rbind"]},
    ]
    new, _ = edit_config(config, VIEW, None)
    added = [m["destination"] for m in new["mounts"][len(config["mounts"]):]]
    assert added == ["/proc/stat", "/proc/loadavg", "/proc/swaps", "/proc/diskstats"]


def test_only_files_the_kernel_has_are_bound():
    new, _ = edit_config(docker_config(), VIEW, None, proc_files=("meminfo", "cpuinfo"))
    assert [m["destination"] for m in new["mounts"] if m["source"].startswith(VIEW)] == [
        "/proc/meminfo", "/proc/cpuinfo", "/sys/devices/system/cpu", "/sys/devices/system/node"]


def test_without_proc_or_sys_file_systems_their_part_is_left_out():
    config = docker_config()
    config["mounts"] = [m for m in config["mounts"] if m["destination"] != "/sys"]
    new, warnings = edit_config(config, VIEW, None)
    added = [m["destination"] for m in new["mounts"][len(config["mounts"]):]]
    assert added == [f"/proc/{n}" for n in oci_shim.VIEW_PROC_FILES]
    assert len(warnings) == 1 and "sysfs" in warnings[0]


def test_no_view_no_mounts():
    config = docker_config()
    new, warnings = edit_config(config, None, None)
    assert new == config and warnings == []


# -- seccomp ------------------------------------------------------------------------------


def test_docker_profile_notifies_the_two_syscalls_without_widening_it():
    config = docker_config()
    before = copy.deepcopy(config)
    new, warnings = edit_config(config, None, SOCK)
    assert warnings == [] and config == before
    old, seccomp = before["linux"]["seccomp"], new["linux"]["seccomp"]
    assert seccomp["listenerPath"] == SOCK
    assert seccomp["defaultAction"] == "SCMP_ACT_ERRNO" and seccomp["architectures"] == ARCHES
    for name in ("sysinfo", "sched_getaffinity"):
        assert [e["action"] for e in entries_naming(seccomp, name)] == ["SCMP_ACT_NOTIFY"]
    assert seccomp["syscalls"][-1] == {"names": ["sysinfo", "sched_getaffinity"], "action": "SCMP_ACT_NOTIFY"}
    # Every other syscall keeps exactly its entries; the big allow list
    # lost just the two names.
    assert seccomp["syscalls"][0]["names"] == [n for n in old["syscalls"][0]["names"] if n not in ("sysinfo", "sched_getaffinity")]
    assert seccomp["syscalls"][1:-1] == old["syscalls"][1:]
    assert {k: v for k, v in new["linux"].items() if k != "seccomp"} == {k: v for k, v in before["linux"].items() if k != "seccomp"}
    assert {k: v for k, v in new.items() if k != "linux"} == {k: v for k, v in before.items() if k != "linux"}


def test_a_denied_syscall_stays_denied():
    config = docker_config()
    seccomp = config["linux"]["seccomp"]
    seccomp["syscalls"][0]["names"].remove("sysinfo")  # now denied by defaultAction ERRNO
    new, warnings = edit_config(config, None, SOCK)
    out = new["linux"]["seccomp"]
    assert entries_naming(out, "sysinfo") == []
    assert out["syscalls"][-1] == {"names": ["sched_getaffinity"], "action": "SCMP_ACT_NOTIFY"}
    assert len(warnings) == 1 and "sysinfo" in warnings[0]


@pytest.mark.parametrize("entry", [
    {"names": ["sysinfo"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
    {"names": ["sysinfo"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
    {"names": ["sysinfo"], "action": "SCMP_ACT_LOG"},
])
def test_an_entry_that_is_not_an_unconditional_allow_keeps_the_syscall_out(entry):
    config = docker_config()
    config["linux"]["seccomp"]["syscalls"].append(entry)
    new, warnings = edit_config(config, None, SOCK)
    out = new["linux"]["seccomp"]
    assert entry in out["syscalls"]
    assert "sysinfo" not in out["syscalls"][-1]["names"]
    assert "sysinfo" in out["syscalls"][0]["names"]  # its allow entry untouched too
    assert any("sysinfo" in w for w in warnings)


def test_an_allowing_default_notifies_syscalls_no_entry_names():
    config = docker_config()
    config["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                                  "syscalls": [{"names": ["kexec_load"], "action": "SCMP_ACT_ERRNO"},
                                               {"names": ["sched_getaffinity", "getpid"], "action": "SCMP_ACT_ALLOW"}]}
    new, warnings = edit_config(config, None, SOCK)
    assert warnings == []
    assert new["linux"]["seccomp"]["syscalls"] == [
        {"names": ["kexec_load"], "action": "SCMP_ACT_ERRNO"},
        {"names": ["getpid"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["sysinfo", "sched_getaffinity"], "action": "SCMP_ACT_NOTIFY"},
    ]


def test_an_entry_left_with_no_names_is_dropped():
    config = docker_config()
    config["linux"]["seccomp"]["syscalls"].insert(1, {"names": ["sysinfo"], "action": "SCMP_ACT_ALLOW"})
    new, _ = edit_config(config, None, SOCK)
    assert all(e.get("names") for e in new["linux"]["seccomp"]["syscalls"])
    assert [e["action"] for e in entries_naming(new["linux"]["seccomp"], "sysinfo")] == ["SCMP_ACT_NOTIFY"]


def test_unconfined_gets_a_profile_that_allows_everything_but_notifies_the_two():
    config = docker_config()
    del config["linux"]["seccomp"]
    new, warnings = edit_config(config, None, SOCK, native_arches=ARCHES)
    assert warnings == []
    assert new["linux"]["seccomp"] == {
        "defaultAction": "SCMP_ACT_ALLOW", "architectures": ARCHES, "listenerPath": SOCK,
        "syscalls": [{"names": ["sysinfo", "sched_getaffinity"], "action": "SCMP_ACT_NOTIFY"}]}


def test_native_architectures_of_this_machine():
    if os.uname().machine != "x86_64":
        pytest.skip("x86_64 only")
    config = docker_config()
    del config["linux"]["seccomp"]
    new, _ = edit_config(config, None, SOCK)
    assert new["linux"]["seccomp"]["architectures"] == ARCHES


def test_another_agent_keeps_its_listener():
    config = docker_config()
    config["linux"]["seccomp"]["listenerPath"] = "/run/other-agent.sock"
    new, warnings = edit_config(config, VIEW, SOCK)
    assert new["linux"]["seccomp"] == config["linux"]["seccomp"]
    assert len(warnings) == 1 and "/run/other-agent.sock" in warnings[0]
    assert len(new["mounts"]) == len(config["mounts"]) + 9  # the mounts still come


def test_a_profile_with_no_syscalls_section():
    config = docker_config()
    config["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW"}
    new, warnings = edit_config(config, None, SOCK)
    assert warnings == []
    assert new["linux"]["seccomp"]["syscalls"] == [{"names": ["sysinfo", "sched_getaffinity"], "action": "SCMP_ACT_NOTIFY"}]
    config["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ERRNO"}
    new, warnings = edit_config(config, None, SOCK)
    assert new["linux"]["seccomp"] == {"defaultAction": "SCMP_ACT_ERRNO"} and len(warnings) == 1


@pytest.mark.parametrize("config", [[1, 2], "x", {"ociVersion": "1.0.2"}, {"linux": None}])
def test_configs_without_a_linux_section_pass_unchanged(config):
    new, warnings = edit_config(config, VIEW, SOCK)
    assert new is config and len(warnings) == 1


def test_garbled_parts_are_left_alone():
    config = docker_config()
    config["mounts"] = "nope"
    config["linux"]["seccomp"]["syscalls"] = "nope"
    new, warnings = edit_config(config, VIEW, SOCK)
    assert new == config and len(warnings) == 2


def test_the_output_is_json():
    new, _ = edit_config(docker_config(), VIEW, SOCK)
    assert json.loads(json.dumps(new)) == new


# -- the edge, without runc -----------------------------------------------------------------


def test_write_atomically_keeps_the_mode_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{}")
    os.chmod(path, 0o640)
    oci_shim.write_atomically(str(path), b'{"a": 1}\n')
    assert path.read_text() == '{"a": 1}\n'
    assert path.stat().st_mode & 0o7777 == 0o640
    assert os.listdir(tmp_path) == ["config.json"]


def test_find_runc(tmp_path):
    fake = tmp_path / "bin" / "runc"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    me = tmp_path / "me" / "runc"  # procview-runc installed under the name runc, first on PATH
    me.parent.mkdir()
    me.write_text("#!/bin/sh\n")
    me.chmod(0o755)
    path = f"{me.parent}:{fake.parent}"
    assert oci_shim.find_runc({"PATH": path}, self_path=str(me)) == str(fake)
    assert oci_shim.find_runc({"PATH": path, "PROCVIEW_RUNC": str(fake)}, self_path=str(me)) == str(fake)
    assert oci_shim.find_runc({"PATH": path, "PROCVIEW_RUNC": str(tmp_path / "none")}) is None
    assert oci_shim.find_runc({"PATH": path, "PROCVIEW_RUNC": str(me)}, self_path=str(me)) is None  # not itself


def test_log_lines_in_runcs_formats(tmp_path):
    log = tmp_path / "log.json"
    oci_shim.Log(["--log", str(log), "--log-format", "json", "run", "x"]).write("warning", 'no "view"')
    line = json.loads(log.read_text())
    assert line["level"] == "warning" and line["msg"] == 'procview-runc: no "view"' and set(line) == {"level", "msg", "time"}
    text = tmp_path / "log.txt"
    oci_shim.Log(["--log", str(text), "run", "x"]).write("warning", 'no "view"')
    assert text.read_text().endswith(' level=warning msg="procview-runc: no \\"view\\""\n')


def test_runc_missing_is_one_line_and_127(tmp_path):
    env = {"PATH": str(tmp_path), "PROCVIEW_RUNC": str(tmp_path / "runc"), "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, str(REPO / "bin" / "procview-runc"), "state", "x"],
                            env=env, capture_output=True, text=True)
    assert result.returncode == 127
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("procview-runc: runc not found"), result.stderr
    env.pop("PROCVIEW_RUNC")
    result = subprocess.run([sys.executable, str(REPO / "bin" / "procview-runc"), "state", "x"], env=env,
                            capture_output=True, text=True)
    if not (os.path.exists("/usr/sbin/runc") or os.path.exists("/usr/bin/runc")):
        assert result.returncode == 127
        assert result.stderr == "procview-runc: runc not found (apt-get install runc, or set PROCVIEW_RUNC)\n"


def test_the_pass_through_path_imports_nothing_but_the_shim():
    """state/kill/exec go straight to runc: no json, no socket, no procview
    module beyond the shim's."""
    code = ("import sys; before = set(sys.modules); import procview.runtime.oci_shim as s; "
            "s.parse_runc_argv(['--root', '/r', 'state', 'x']); s.find_runc(); "
            "print(sorted(set(sys.modules) - before))")
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd=REPO,
                         env={"PYTHONPATH": str(REPO)}).stdout
    imported = eval(out)
    assert [m for m in imported if m.startswith("procview")] == ["procview", "procview.runtime", "procview.runtime.oci_shim"]
    assert set(imported) - {"procview", "procview.runtime", "procview.runtime.oci_shim"} <= {
        "os", "os.path", "posixpath", "genericpath", "stat", "_stat", "_collections_abc"}, imported


def test_nothing_to_add_returns_the_config_itself():
    """The edge rewrites config.json only when the edit changed something."""
    config = docker_config()
    assert edit_config(config, None, None)[0] is config
    config["mounts"] += [{"destination": f"/proc/{n}", "type": "bind", "source": "/l", "options": []} for n in oci_shim.VIEW_PROC_FILES]
    config["mounts"] += [{"destination": "/sys/devices/system", "type": "bind", "source": "/l", "options": []}]
    config["linux"]["seccomp"]["listenerPath"] = "/other"
    new, warnings = edit_config(config, VIEW, SOCK)
    assert new is config and len(warnings) == 1


def test_the_shims_copies_of_the_view_and_socket_are_procview_runs():
    """The shim repeats these so that its pass-through path imports
    nothing; they must stay what procview run and procview serve use."""
    from procview import DEFAULT_SECCOMP_SOCKET
    from procview.runtime import rootfs

    assert oci_shim.VIEW_PROC_FILES == rootfs.VIEW_PROC_FILES
    assert oci_shim.VIEW_SYS_DIRS == rootfs.VIEW_SYS_DIRS
    assert oci_shim.DEFAULT_SECCOMP_SOCKET == DEFAULT_SECCOMP_SOCKET
