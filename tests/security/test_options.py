"""``procview run``'s security options end to end: the view stays readable
but untouchable, a Docker-format profile file behaves like the built-in
default, ``--cap-add``/``--cap-drop``/``--user``, and bad input."""

from __future__ import annotations

import json

import pytest

from integration.serve_helpers import no_leftovers, procview_mount, serve_daemons  # noqa: F401 (fixtures)
from integration.test_run import run, state_root  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration



def _status(state_root, *options, user_cmd="grep -E '^Cap(Eff|Bnd|Prm)' /proc/self/status"):
    result = run(state_root, "--no-view", *options, "busybox", "sh", "-c", user_cmd)
    assert result.returncode == 0, result.stderr
    return dict(line.split(":\t") for line in result.stdout.splitlines())


def test_the_view_stays_readable_but_cannot_be_unmounted_or_written(state_root, procview_mount, probe):
    view = procview_mount.mount
    script = ("head -1 /proc/meminfo; cat /sys/devices/system/cpu/online; ls /sys/devices/system/node >/dev/null && echo node-ok;"
              " /probe umount /proc/meminfo; /probe umount /sys/devices/system/cpu; /probe write /proc/meminfo;"
              " /probe write /proc/uptime")
    result = run(state_root, "--view", view, "--memory", "256M", "-v", f"{probe}:/probe:ro", "busybox", "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["MemTotal:", "262144", "kB"], lines
    assert lines[2] == "node-ok"
    assert lines[3:5] == ["EPERM", "EPERM"]  # umount: refused by seccomp (and no CAP_SYS_ADMIN)
    assert lines[5] in ("EROFS", "EACCES") and lines[6] in ("EROFS", "EACCES"), lines
    control = run(state_root, "--view", view, "--privileged", "-v", f"{probe}:/probe:ro", "busybox", "sh", "-c",
                  "/probe umount /proc/meminfo")
    assert control.stdout.strip() == "ok", control


def test_a_profile_file_behaves_like_the_built_in_default(state_root, probe, tmp_path):
    """Docker's profile (the built-in one's bytes, docs/security.md) given
    as a file through --security-opt seccomp=FILE."""
    from procview.runtime.security.programs import DEFAULT_PROFILE

    profile_file = tmp_path / "docker-default.json"
    with open(DEFAULT_PROFILE, "rb") as built_in_bytes:
        profile_file.write_bytes(built_in_bytes.read())
    def table(*options):
        result = run(state_root, "--no-view", "-v", f"{probe}:/probe:ro", *options, "busybox", "/probe", "table")
        assert result.returncode == 0, result.stderr
        return dict(line.split() for line in result.stdout.splitlines())

    built_in = table()
    from_file = table("--security-opt", f"seccomp={profile_file}")
    assert from_file == built_in
    for name in ("mount", "umount2", "unshare", "setns", "pivot_root", "keyctl", "add_key", "bpf", "perf_event_open",
                 "open_by_handle_at", "reboot", "init_module", "kexec_load", "swapon", "syslog", "userfaultfd",
                 "io_uring_setup", "sethostname", "personality_bad", "socket_alg", "clone_newuts"):
        assert built_in[name] == "EPERM", (name, built_in[name])
    assert built_in["clone3"] == "ENOSYS"  # so glibc falls back to clone
    assert built_in["nr_467"] == built_in["nr_468"] == built_in["nr_500"] == "ENOSYS"  # newer than the profile
    for name in ("getpid", "socket_unix", "clone_plain", "personality_query"):
        assert built_in[name] == "0", name
    assert built_in["chroot"] == "EFAULT"  # allowed: CAP_SYS_CHROOT
    assert built_in["ptrace_peek_1"] in ("ESRCH", "EPERM")  # allowed by the filter (kernel >= 4.8)
    # With CAP_SYS_ADMIN the profile allows clone3, mount and unshare.
    admin = table("--cap-add", "sys_admin")
    assert admin["clone3"] != "ENOSYS" and admin["mount"] == "EFAULT" and admin["unshare"] == "0"
    unconfined = table("--security-opt", "seccomp=unconfined")
    assert unconfined["keyctl"] != "EPERM" and unconfined["socket_alg"] != "EPERM"


def test_cap_add_and_cap_drop(state_root):
    assert _status(state_root, "--cap-drop", "ALL")["CapEff"] == "0000000000000000"
    assert _status(state_root, "--cap-drop", "ALL")["CapBnd"] == "0000000000000000"
    chown_only = _status(state_root, "--cap-drop", "all", "--cap-add", "cap_chown")
    assert chown_only["CapEff"] == "0000000000000001"
    net_admin = int(_status(state_root, "--cap-add", "Net_Admin", "--cap-drop", "CHOWN")["CapEff"], 16)
    assert net_admin == (0xA80425FB | 1 << 12) & ~1


def test_a_non_root_user_keeps_no_capabilities(state_root):
    status = _status(state_root, "--user", "1000:1000")
    assert status["CapEff"] == status["CapPrm"] == "0000000000000000"
    assert status["CapBnd"] == "00000000a80425fb"


def test_unknown_syscall_names_are_skipped_with_a_warning(state_root, tmp_path):
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["no_such_syscall", "mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 6}],
    }))
    result = run(state_root, "--no-view", "--security-opt", f"seccomp={profile}", "busybox", "mkdir", "/x")
    assert result.returncode == 1, result
    assert "No such device or address" in result.stderr  # ENXIO (6) from the profile
    assert result.stderr.count("warning") == 1 and "no_such_syscall" in result.stderr


@pytest.mark.parametrize(
    "options, content, message",
    [
        (["--security-opt", "seccomp={profile}"], "{not json", "not valid JSON"),
        (["--security-opt", "seccomp={profile}"], '{"defaultAction": "SCMP_ACT_EXPLODE"}', "unknown action"),
        (["--security-opt", "seccomp={profile}"], '{"defaultAction": "SCMP_ACT_NOTIFY"}', "SCMP_ACT_NOTIFY"),
        (["--security-opt", "seccomp=/nonexistent/profile.json"], None, "No such file"),
        (["--security-opt", "apparmor=foo"], None, "--security-opt"),
        (["--security-opt", "no-new-privileges=maybe"], None, "true or false"),
        (["--cap-add", "SYS_ADMN"], None, "unknown capability"),
        (["--cap-drop", "chwon"], None, "unknown capability"),
    ],
)
def test_bad_security_input_is_one_line_and_exit_125(state_root, tmp_path, options, content, message):
    profile = tmp_path / "profile.json"
    if content is not None:
        profile.write_text(content)
    args = [option.format(profile=profile) for option in options]
    result = run(state_root, "--no-view", *args, "busybox", "true")
    assert result.returncode == 125, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message.lower() in result.stderr.lower(), result.stderr
    assert "Traceback" not in result.stderr
