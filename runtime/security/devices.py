"""The devices a container may open: the devices cgroup.

Only the standard nodes exist in the container's ``/dev`` (null, zero,
full, random, urandom, tty, the devpts ptys), but CAP_MKNOD (one of
Docker's 14) lets the container make any node, e.g. ``b 8:0``, the host's
disk. The cgroup is what stops it from opening one.

The rules are runc's: deny everything, then allow ``mknod`` of any node
(``c *:* m``, ``b *:* m``: making one is harmless, opening is not) and
read/write/mknod of the standard devices. ``--privileged`` leaves the
cgroup allowing everything, as Docker does.

- cgroup v1: ``devices.deny`` ``a``, then each rule to ``devices.allow``,
  in the devices controller's directory of the container's cgroup.
- cgroup v2 has no devices files: the same rules as an eBPF program of
  type ``BPF_PROG_TYPE_CGROUP_DEVICE`` attached to the container's cgroup
  (``device_program`` assembles it; runc does the same). It is attached
  before pid 1 joins the cgroup, applies to every process of the cgroup
  and its children, and goes away with the cgroup.
"""

from __future__ import annotations

import os
import struct

# (type, major, minor, access); None is the "*" wildcard.
ALLOWED = (
    ("c", None, None, "m"),
    ("b", None, None, "m"),
    ("c", 1, 3, "rwm"),  # null
    ("c", 1, 5, "rwm"),  # zero
    ("c", 1, 7, "rwm"),  # full
    ("c", 1, 8, "rwm"),  # random
    ("c", 1, 9, "rwm"),  # urandom
    ("c", 5, 0, "rwm"),  # tty
    ("c", 5, 1, "rwm"),  # console
    ("c", 5, 2, "rwm"),  # ptmx
    ("c", 136, None, "rwm"),  # pts/*
)


class DeviceError(OSError):
    pass


def cgroup_v1_lines(rules=ALLOWED) -> list[str]:
    """``devices.allow`` lines: ``c 1:3 rwm``, ``c *:* m``."""
    star = lambda value: "*" if value is None else str(value)  # noqa: E731
    return [f"{kind} {star(major)}:{star(minor)} {access}" for kind, major, minor, access in rules]


def restrict(cgroup, linux) -> None:
    """Apply the rules to ``cgroup`` (a procview cgroup, already created,
    with no process in it yet)."""
    if cgroup.version == 1:
        directory = cgroup._dir("devices")  # noqa: SLF001 - the v1 backend has no devices method (yet)
        if directory is None:
            raise DeviceError(0, "the devices controller is not mounted")
        _write(os.path.join(directory, "devices.deny"), ["a"])
        _write(os.path.join(directory, "devices.allow"), cgroup_v1_lines())
    else:
        directory = cgroup._dir()  # noqa: SLF001
        if directory is None:
            raise DeviceError(0, "no cgroup2 hierarchy is mounted")
        linux.bpf_attach_device_filter(directory, device_program())


def _write(path: str, lines: list[str]) -> None:
    """Each line by its own write(2), which is how the kernel takes one
    rule, through one open file: pid 1 waits for these rules before it
    joins the cgroup, so they are on the start's critical path."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise DeviceError(exc.errno, f"{path}: {exc.strerror}") from None
    try:
        for line in lines:
            os.write(fd, line.encode())
    except OSError as exc:
        raise DeviceError(exc.errno, f"{path}: {line!r}: {exc.strerror}") from None
    finally:
        os.close(fd)


# -- the eBPF program (cgroup v2) ----------------------------------------------------
#
# The kernel calls it with struct bpf_cgroup_dev_ctx { u32 access_type;
# u32 major; u32 minor; } in r1; access_type is (access << 16) | type,
# type BPF_DEVCG_DEV_BLOCK 1 / CHAR 2, access MKNOD 1 | READ 2 | WRITE 4.
# It returns 1 to allow, 0 to deny (EPERM).

DEV_BLOCK, DEV_CHAR = 1, 2
ACC_MKNOD, ACC_READ, ACC_WRITE = 1, 2, 4
_TYPES = {"b": DEV_BLOCK, "c": DEV_CHAR}
_ACCESS = {"m": ACC_MKNOD, "r": ACC_READ, "w": ACC_WRITE}

# Opcodes (linux/bpf.h, linux/bpf_common.h).
_LDX_W = 0x61  # BPF_LDX | BPF_MEM | BPF_W
_MOV64_K = 0xB7  # BPF_ALU64 | BPF_MOV | BPF_K
_MOV64_X = 0xBF
_AND64_K = 0x57
_RSH64_K = 0x77
_JNE_K = 0x55  # BPF_JMP | BPF_JNE | BPF_K
_EXIT = 0x95


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def device_program(rules=ALLOWED) -> bytes:
    """The rules as eBPF: r2 = type, r3 = access, r4 = major, r5 = minor;
    one block per rule that jumps past itself on any mismatch and
    returns 1 at its end; 0 after the last."""
    head = [
        _insn(_LDX_W, 2, 1, 0),  # r2 = ctx->access_type
        _insn(_MOV64_X, 3, 2),  # r3 = r2
        _insn(_AND64_K, 2, imm=0xFFFF),  # r2 = type
        _insn(_RSH64_K, 3, imm=16),  # r3 = access
        _insn(_LDX_W, 4, 1, 4),  # r4 = ctx->major
        _insn(_LDX_W, 5, 1, 8),  # r5 = ctx->minor
    ]
    body = []
    for kind, major, minor, access in rules:
        allowed = sum(_ACCESS[a] for a in access)
        block = []  # the jumps are patched to the block's end below
        block.append(("jne", 2, _TYPES[kind]))
        if allowed != ACC_MKNOD | ACC_READ | ACC_WRITE:
            # access must be a subset of allowed: (access & ~allowed) == 0
            block.append(("mov", 0, 3))
            block.append(("and", 0, ~allowed & 0xFFFF))
            block.append(("jne", 0, 0))
        if major is not None:
            block.append(("jne", 4, major))
        if minor is not None:
            block.append(("jne", 5, minor))
        block.append(("ret", 1))
        size = len(block) + 1  # "ret" is two instructions
        for i, item in enumerate(block):
            op = item[0]
            if op == "jne":
                body.append(_insn(_JNE_K, item[1], off=size - i - 1, imm=item[2]))
            elif op == "mov":
                body.append(_insn(_MOV64_X, item[1], item[2]))
            elif op == "and":
                body.append(_insn(_AND64_K, item[1], imm=item[2]))
            elif op == "ret":
                body.append(_insn(_MOV64_K, 0, imm=item[1]))
                body.append(_insn(_EXIT))
    tail = [_insn(_MOV64_K, 0, imm=0), _insn(_EXIT)]
    return b"".join(head + body + tail)


def evaluate(rules, kind: str, major: int, minor: int, access: str) -> bool:
    """What the rules decide (a model of both mechanisms, for tests)."""
    wanted = {_ACCESS[a] for a in access}
    for rule_kind, rule_major, rule_minor, rule_access in rules:
        if rule_kind != kind or (rule_major is not None and rule_major != major):
            continue
        if rule_minor is not None and rule_minor != minor:
            continue
        if wanted <= {_ACCESS[a] for a in rule_access}:
            return True
    return False


__all__ = ["ALLOWED", "DeviceError", "cgroup_v1_lines", "restrict", "device_program", "evaluate"]
