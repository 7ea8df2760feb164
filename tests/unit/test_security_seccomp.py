"""seccomp: parsing and validating Docker-format profiles, resolving
includes/excludes (pure), and the built program loaded in a child."""

from __future__ import annotations

import ctypes
import errno
import json
import os

import pytest

from procview.runtime.linux import PR_SET_NO_NEW_PRIVS, Linux
from procview.runtime.security import capabilities as caps
from procview.runtime.security import seccomp

# Docker's default profile, moby/profiles@cd3bed8:seccomp/default.json
# (docs/security.md): the SHA-256 of that file, byte for byte.
DOCKER_PROFILE_SHA256 = "536529b665dd0972c37bfb569f5d4ac8a53592e7b00752bc39ff063ca9864c74"
X86_64 = "x86_64"
KERNEL = (6, 18)


def default_profile():
    with open(seccomp.DEFAULT_PROFILE, "rb") as f:
        return seccomp.parse_profile(f.read())


def rules_for(resolved, name):
    return [rule for rule in resolved.rules if rule.name == name]


def test_the_built_in_profile_is_dockers_unchanged():
    import hashlib

    with open(seccomp.DEFAULT_PROFILE, "rb") as mine:
        assert hashlib.sha256(mine.read()).hexdigest() == DOCKER_PROFILE_SHA256


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ("[]", "JSON object"),
    ('{"defaultAction": "SCMP_ACT_BOOM"}', "unknown action"),
    ('{"defaultAction": "SCMP_ACT_NOTIFY"}', "SCMP_ACT_NOTIFY"),
    ('{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": "1"}', "expected an integer"),
    ('{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86"],'
     ' "archMap": [{"architecture": "SCMP_ARCH_X86_64"}]}', "cannot both"),
    ('{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_Z80"]}', "unknown architecture"),
    ('{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": [], "action": "SCMP_ACT_ALLOW"}]}', "names"),
    ('{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_NOTIFY"}]}', "NOTIFY"),
    ('{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW",'
     ' "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}', "index"),
    ('{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW",'
     ' "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_ALMOST"}]}]}', "unknown operator"),
    ('{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW",'
     ' "includes": {"minKernel": "new"}}]}', "kernel version"),
])
def test_bad_profiles_say_what_is_wrong(text, message):
    with pytest.raises(seccomp.SeccompError, match=message):
        seccomp.parse_profile(text)


def test_legacy_name_field():
    profile = seccomp.parse_profile('{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"name": "read", "action": "SCMP_ACT_ALLOW"}]}')
    assert profile.entries[0].names == ("read",)


def test_default_profile_without_sys_admin():
    resolved = seccomp.resolve(default_profile(), caps.DEFAULT, X86_64, KERNEL)
    assert resolved.arches == ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32")
    assert [(r.action, r.errno_ret) for r in rules_for(resolved, "clone3")] == [("SCMP_ACT_ERRNO", 38)]
    (clone,) = rules_for(resolved, "clone")
    assert clone.args == (seccomp.Arg(0, 0x7E020000, 0, "SCMP_CMP_MASKED_EQ"),)
    for name in ("mount", "unshare", "setns", "bpf", "keyctl", "reboot", "init_module", "open_by_handle_at"):
        assert rules_for(resolved, name) == [], name
    assert rules_for(resolved, "chroot") and rules_for(resolved, "arch_prctl") and rules_for(resolved, "ptrace")
    assert not rules_for(resolved, "s390_runtime_instr")


def test_default_profile_with_sys_admin_allows_clone_and_mount():
    resolved = seccomp.resolve(default_profile(), caps.DEFAULT | {"SYS_ADMIN"}, X86_64, KERNEL)
    assert [r.action for r in rules_for(resolved, "clone3")] == ["SCMP_ACT_ALLOW"]
    assert [r.args for r in rules_for(resolved, "clone")] == [()]
    assert rules_for(resolved, "mount")


def test_min_kernel_and_arches():
    old = seccomp.resolve(default_profile(), caps.DEFAULT, X86_64, (4, 4))
    assert rules_for(old, "ptrace") == []
    arm = seccomp.resolve(default_profile(), caps.DEFAULT, "aarch64", KERNEL)
    assert arm.arches == ("SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM")
    assert rules_for(arm, "arch_prctl") == [] and rules_for(arm, "cacheflush")


def test_conditions_on_one_argument_are_ored():
    profile = seccomp.parse_profile(json.dumps({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{
        "names": ["personality"], "action": "SCMP_ACT_ALLOW",
        "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}, {"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}],
    }]}))
    resolved = seccomp.resolve(profile, caps.DEFAULT, X86_64, KERNEL)
    assert len(rules_for(resolved, "personality")) == 2


def test_enosys_above_the_profile_and_for_fallbacks():
    resolved = seccomp.resolve(default_profile(), caps.DEFAULT, X86_64, KERNEL)
    numbers = seccomp.enosys_numbers(resolved, X86_64, highest=466)
    assert numbers[0] == 467 and numbers[-1] == seccomp.NATIVE_TABLE_END - 1
    small = seccomp.resolve(seccomp.parse_profile('{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": '
                                                  '[{"names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW"}]}'),
                            caps.DEFAULT, X86_64, KERNEL)
    numbers = seccomp.enosys_numbers(small, X86_64, highest=231)
    assert 435 in numbers and 439 in numbers and 452 in numbers  # clone3, faccessat2, fchmodat2


def test_names_libseccomp_lacks_come_from_the_table():
    assert seccomp.syscall_number("mseal", X86_64) == 462
    assert seccomp.syscall_number("read", X86_64) == 0
    assert seccomp.syscall_number("no_such_syscall", X86_64) is None


def test_unknown_names_warn_once():
    warnings = []
    profile = seccomp.parse_profile('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": '
                                    '[{"names": ["bogus_a", "bogus_b", "mkdir"], "action": "SCMP_ACT_ERRNO"}]}')
    seccomp.build(seccomp.resolve(profile, caps.DEFAULT, X86_64, KERNEL), X86_64, warnings.append)
    assert len(warnings) == 1 and "bogus_a" in warnings[0] and "bogus_b" in warnings[0]


def _in_child_with(program: bytes, probes: dict) -> dict:
    """Load ``program`` in a forked child (no_new_privs first, so no
    privilege is needed) and return {probe: errno} for raw syscalls."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            linux = Linux()
            linux.prctl(PR_SET_NO_NEW_PRIVS, 1)
            linux.seccomp_set_filter(program)
            libc = ctypes.CDLL(None, use_errno=True)
            result = {}
            for name, (number, *args) in probes.items():
                ctypes.set_errno(0)
                rc = libc.syscall(ctypes.c_long(number), *[ctypes.c_long(a) for a in args])
                result[name] = ctypes.get_errno() if rc == -1 else 0
            os.write(write_end, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    data = b""
    while chunk := os.read(read_end, 65536):
        data += chunk
    os.close(read_end)
    os.waitpid(pid, 0)
    return json.loads(data)


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="syscall numbers below are x86_64's")
def test_the_built_program_behaves_like_docker():
    text, source = seccomp.read_profile_text(None)
    program = seccomp.program_for(text, source, caps.DEFAULT)
    got = _in_child_with(program, {
        "getpid": (39,), "mount": (165, 0, 0, 0, 0, 0), "unshare": (272, 0), "keyctl": (250, -1),
        "clone3": (435, 0, 0), "open_tree_attr": (467, -1, 0, 0, 0, 0), "file_getattr": (468, -1, 0, 0, 0, 0),
        "socket_af_alg": (41, 38, 5, 0), "personality_bad": (135, 0x1234), "uname": (63, 0),
    })
    assert got["getpid"] == 0
    assert got["mount"] == got["unshare"] == got["keyctl"] == got["socket_af_alg"] == got["personality_bad"] == errno.EPERM
    assert got["clone3"] == got["open_tree_attr"] == got["file_getattr"] == errno.ENOSYS
    assert got["uname"] == errno.EFAULT  # allowed: the kernel sees the NULL pointer


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="syscall numbers below are x86_64's")
def test_custom_default_errno():
    program = seccomp.build(seccomp.resolve(seccomp.parse_profile(json.dumps({
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": errno.ENXIO,
        "syscalls": [{"names": ["exit_group", "exit", "write", "getpid", "read"], "action": "SCMP_ACT_ALLOW"}],
    })), caps.DEFAULT, os.uname().machine, KERNEL), os.uname().machine)
    got = _in_child_with(program, {"getpid": (39,), "getppid": (110,)})
    assert got == {"getpid": 0, "getppid": errno.ENXIO}


def test_cache_is_keyed_by_profile_and_caps(tmp_path):
    text, source = seccomp.read_profile_text(None)
    first = seccomp.program_for(text, source, caps.DEFAULT, cache_dir=str(tmp_path))
    assert len(os.listdir(tmp_path)) == 1
    assert seccomp.program_for(text, source, caps.DEFAULT, cache_dir=str(tmp_path)) == first
    admin = seccomp.program_for(text, source, caps.DEFAULT | {"SYS_ADMIN"}, cache_dir=str(tmp_path))
    assert admin != first and len(os.listdir(tmp_path)) == 2


def test_a_cache_hit_is_an_exact_match_of_the_inputs(tmp_path, monkeypatch):
    # Every input lands in one file, as a CRC-32 collision would have it:
    # each lookup either finds its own program or rebuilds, never another's.
    from procview.runtime.security import programs

    monkeypatch.setattr(programs, "_cache_path", lambda cache_dir, inputs: os.path.join(cache_dir, "same.bpf"))
    text, source = seccomp.read_profile_text(None)
    plain = seccomp.program_for(text, source, caps.DEFAULT)
    admin = seccomp.program_for(text, source, caps.DEFAULT | {"SYS_ADMIN"})
    assert plain != admin
    for _ in range(2):
        assert seccomp.program_for(text, source, caps.DEFAULT, cache_dir=str(tmp_path)) == plain
        assert seccomp.program_for(text, source, caps.DEFAULT | {"SYS_ADMIN"}, cache_dir=str(tmp_path)) == admin
    assert os.listdir(tmp_path) == ["same.bpf"]
    inputs = programs.cache_inputs(text, caps.DEFAULT | {"SYS_ADMIN"}, os.uname().machine, os.uname().release)
    assert programs._read_cache(str(tmp_path), inputs) == admin
    with open(tmp_path / "same.bpf", "r+b") as f:  # damaged: a byte of the stored profile changed
        f.seek(100)
        f.write(b"#")
    assert programs._read_cache(str(tmp_path), inputs) is None
    assert seccomp.program_for(text, source, caps.DEFAULT | {"SYS_ADMIN"}, cache_dir=str(tmp_path)) == admin


def test_a_libseccomp_that_cannot_be_loaded_is_a_seccomp_error(monkeypatch):
    """pyseccomp raises RuntimeError (or ImportError) when find_library
    fails: one SeccompError (one line, exit 125), never a traceback."""
    import sys

    from procview.runtime.security import seccomp

    monkeypatch.setitem(sys.modules, "pyseccomp", None)  # importing it now raises ImportError
    with pytest.raises(seccomp.SeccompError, match="libseccomp cannot be loaded"):
        seccomp.build_view_filter()
