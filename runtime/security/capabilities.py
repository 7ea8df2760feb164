"""Capabilities: which ones a container keeps, and how it drops the rest.

Docker's default set is 14 capabilities (``DEFAULT``), in the bounding,
permitted and effective sets; the inheritable and ambient sets are empty.
``--cap-add``/``--cap-drop`` change it the way Docker's
``TweakCapabilities`` does:

- ``--cap-add ALL``: every capability except those dropped;
- else ``--cap-drop ALL``: only those added;
- else the default set, minus the dropped, plus the added.

``--privileged`` is every capability. Names are accepted with or without
the ``CAP_`` prefix, in any case; an unknown name is an error.

Dropping (``drop_to``, in the container, before ``execve``): the bounding
set first (``PR_CAPBSET_DROP`` for every capability not kept; this needs
CAP_SETPCAP, so it comes while we still have everything), then the user's
ids, then capset(2) for permitted/effective/inheritable, then the ambient
set is cleared. A non-root user ends with empty permitted and effective
sets, as in Docker (no ambient capabilities are given).
"""

from __future__ import annotations

from procview.runtime.linux import PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, PR_CAPBSET_DROP, PR_CAPBSET_READ

# linux/capability.h, by number.
NAMES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK",
    "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN",
    "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE",
    "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND",
    "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)
NUMBERS = {name: number for number, name in enumerate(NAMES)}

# Docker's default (moby daemon/pkg/oci/caps/defaults.go): mask 0xa80425fb.
DEFAULT = frozenset({
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP",
    "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
})

ALL = "ALL"


class CapabilityError(ValueError):
    """An unknown capability name (the message names it)."""


def normalize(name: str) -> str:
    """``cap_sys_admin``, ``SYS_ADMIN``, ``Sys_Admin`` -> ``SYS_ADMIN``;
    ``all`` -> ``ALL``. Raises CapabilityError for anything else."""
    upper = name.strip().upper()
    if upper == ALL:
        return ALL
    bare = upper.removeprefix("CAP_")
    if bare not in NUMBERS:
        raise CapabilityError(f"unknown capability: {name!r}")
    return bare


def known(last_cap: int | None = None) -> frozenset[str]:
    """Every capability the running kernel knows (``cap_last_cap``)."""
    if last_cap is None:
        last_cap = _last_cap()
    return frozenset(NAMES[: last_cap + 1])


def container_set(add=(), drop=(), privileged: bool = False, all_caps: frozenset[str] | None = None) -> frozenset[str]:
    """The capability names the container keeps (Docker's rules, see the
    module docstring). Raises CapabilityError for an unknown name."""
    everything = known() if all_caps is None else all_caps
    add = [normalize(name) for name in add]
    drop = [normalize(name) for name in drop]
    if privileged:
        return everything
    if ALL in add:
        return frozenset(everything - set(drop))
    if ALL in drop:
        return frozenset(add) & everything
    return frozenset((DEFAULT - set(drop)) | set(add)) & everything


def mask(names) -> int:
    """The kernel's bit mask of a set of names."""
    value = 0
    for name in names:
        value |= 1 << NUMBERS[name]
    return value


def names_of(value: int) -> frozenset[str]:
    return frozenset(name for number, name in enumerate(NAMES) if value >> number & 1)


def drop_bounding(linux, keep: frozenset[str], last_cap: int | None = None) -> None:
    """PR_CAPBSET_DROP every capability not in ``keep`` (and still there)."""
    if last_cap is None:
        last_cap = _last_cap()
    for number in range(last_cap + 1):
        if NAMES[number] in keep:
            continue
        if linux.prctl(PR_CAPBSET_READ, number):
            linux.prctl(PR_CAPBSET_DROP, number)


def set_process_caps(linux, keep: frozenset[str], root: bool) -> None:
    """Permitted and effective = ``keep`` for root, nothing for another
    user; inheritable and ambient empty."""
    value = mask(keep) if root else 0
    linux.capset(value, value, 0)
    try:
        linux.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError:
        pass  # kernels before 4.3 have no ambient set, so nothing to clear


def bounding_set_of_this_process() -> frozenset[str]:
    """What procview itself may hand out (``CapBnd`` of /proc/self/status)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapBnd:"):
                return names_of(int(line.split()[1], 16))
    return known()


def _last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return min(int(f.read()), len(NAMES) - 1)
    except (OSError, ValueError):
        return len(NAMES) - 1


__all__ = [
    "NAMES", "NUMBERS", "DEFAULT", "ALL", "CapabilityError", "normalize", "known", "container_set", "mask", "names_of",
    "drop_bounding", "set_process_caps", "bounding_set_of_this_process",
]
