"""seccomp: a Docker-format profile -> a BPF program the container loads.

Four steps, as youki does it (validate, translate, build, load):

1. ``parse_profile``: the JSON text -> a ``Profile`` (plain values), or a
   ``SeccompError`` naming what is wrong. Nothing is built yet, so bad
   input fails before any container exists (exit 125).
2. ``resolve``: the profile for *this* container -> ``Rule``s: the arches
   to cover, and each ``syscalls[]`` entry kept or dropped by its
   ``includes``/``excludes`` (``caps`` against the container's bounding
   set, ``arches`` against this machine's Go arch name, ``minKernel``
   against ``uname``), as Docker's ``setupSeccomp`` does. Pure.
3. ``build``: the rules -> a libseccomp filter (through pyseccomp) -> the
   classic BPF program (``seccomp_export_bpf``), as bytes. Unknown syscall
   names are skipped with one warning, as Docker does.
4. ``linux.seccomp_set_filter(program)`` in the container, right before
   ``execve`` (see ``runtime/security/__init__.py`` for where).

Building happens in ``procview run`` on the host and the container only
loads the bytes: libseccomp is never called after the fork, and its own
"set no_new_privs when loading" default (``SCMP_FLTATR_CTL_NNP``) does not
apply, because we load the program ourselves. no_new_privs is set only
when the user asks for it (``--security-opt no-new-privileges``).

ENOSYS, not EPERM, for what the profile cannot know about
---------------------------------------------------------

A profile's ``defaultAction`` (EPERM in Docker's) also answers syscalls
added to the kernel after the profile was written. glibc, Go and systemd
treat ENOSYS as "not implemented, use the old way" but EPERM as a real
error. runc patches its BPF to answer ENOSYS for syscall numbers above the
highest the profile names; libseccomp cannot express "above N", so this
module adds explicit rules instead (only when the default action denies):

- every native syscall number above the highest one the profile names, up
  to ``NATIVE_TABLE_END`` (512: on x86_64 the x32 numbers start there),
  answers ENOSYS. For Docker's profile (highest: removexattrat, 466) that
  is 467 (open_tree_attr), 468 (file_getattr), 469 (file_setattr) and
  every number a later kernel adds;
- each syscall of ``FALLBACK_SYSCALLS`` that the profile does not name at
  all (in any rule) answers ENOSYS: these are the ones libc and language
  runtimes call first and replace when they get ENOSYS. Docker's profile
  names every one of them (``clone3`` has its own ERRNO 38 rule), so for
  it this adds nothing; it matters for older or hand-written profiles.

Syscalls libseccomp 2.5.4 (Debian 12) does not know by name, but the
profile names (statmount, mseal, the *xattrat family, ...), are added by
number from ``NEWER_SYSCALLS`` on the native arch. On the sub-arches
(x86, x32 on an x86_64 host) they fall to the default action: libseccomp
can only translate numbers it knows between arches.
"""

from __future__ import annotations

import errno
import json
import os
import re
from dataclasses import dataclass, field

# Reading and caching programs lives in procview.runtime.security.programs, which a
# cache hit needs alone; its names are part of this module's interface too.
from procview.runtime.security.programs import (  # noqa: F401
    DEFAULT_PROFILE,
    FORMAT_VERSION,
    SeccompError,
    program_for,
    read_profile_text,
    view_program,
)

# -- the pure tables ------------------------------------------------------------

# Docker action name -> (libseccomp action kind, takes a number (errno/msg))
ACTIONS = {
    "SCMP_ACT_KILL": "kill_thread",
    "SCMP_ACT_KILL_THREAD": "kill_thread",
    "SCMP_ACT_KILL_PROCESS": "kill_process",
    "SCMP_ACT_TRAP": "trap",
    "SCMP_ACT_ERRNO": "errno",
    "SCMP_ACT_TRACE": "trace",
    "SCMP_ACT_LOG": "log",
    "SCMP_ACT_ALLOW": "allow",
}
# Refused with a reason: procview's supervisor answers only the calls of
# its own view filter (below), not whatever a profile sends it.
REFUSED_ACTIONS = {
    "SCMP_ACT_NOTIFY": "SCMP_ACT_NOTIFY in a profile is not supported (procview's own filter sends sysinfo and "
    "sched_getaffinity to its supervisor)",
}

OPERATORS = {
    "SCMP_CMP_NE": "NE",
    "SCMP_CMP_LT": "LT",
    "SCMP_CMP_LE": "LE",
    "SCMP_CMP_EQ": "EQ",
    "SCMP_CMP_GE": "GE",
    "SCMP_CMP_GT": "GT",
    "SCMP_CMP_MASKED_EQ": "MASKED_EQ",
}

# libseccomp arch names (Docker's "SCMP_ARCH_*") -> pyseccomp.Arch attribute.
ARCHES = {
    "SCMP_ARCH_X86": "X86",
    "SCMP_ARCH_X86_64": "X86_64",
    "SCMP_ARCH_X32": "X32",
    "SCMP_ARCH_ARM": "ARM",
    "SCMP_ARCH_AARCH64": "AARCH64",
    "SCMP_ARCH_MIPS": "MIPS",
    "SCMP_ARCH_MIPS64": "MIPS64",
    "SCMP_ARCH_MIPS64N32": "MIPS64N32",
    "SCMP_ARCH_MIPSEL": "MIPSEL",
    "SCMP_ARCH_MIPSEL64": "MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32": "MIPSEL64N32",
    "SCMP_ARCH_PPC": "PPC",
    "SCMP_ARCH_PPC64": "PPC64",
    "SCMP_ARCH_PPC64LE": "PPC64LE",
    "SCMP_ARCH_S390": "S390",
    "SCMP_ARCH_S390X": "S390X",
    "SCMP_ARCH_PARISC": "PARISC",
    "SCMP_ARCH_PARISC64": "PARISC64",
    "SCMP_ARCH_RISCV64": "RISCV64",
    "SCMP_ARCH_LOONGARCH64": "LOONGARCH64",  # unknown to pyseccomp 0.1.2: refused if it is the native one
}

# uname -m -> (Go's GOARCH, libseccomp's native arch name)
MACHINES = {
    "x86_64": ("amd64", "SCMP_ARCH_X86_64"),
    "aarch64": ("arm64", "SCMP_ARCH_AARCH64"),
    "i686": ("386", "SCMP_ARCH_X86"),
    "armv7l": ("arm", "SCMP_ARCH_ARM"),
    "s390x": ("s390x", "SCMP_ARCH_S390X"),
    "ppc64le": ("ppc64le", "SCMP_ARCH_PPC64LE"),
    "riscv64": ("riscv64", "SCMP_ARCH_RISCV64"),
}

# Syscalls newer than libseccomp 2.5.4's tables, by machine. From 424 on,
# x86_64 and aarch64 share the kernel's unified numbering. (Names known
# here but absent on this machine are skipped silently, like libseccomp's
# own names of other arches' syscalls.)
NEWER_SYSCALLS = {
    "cachestat": {"x86_64": 451, "aarch64": 451},
    "fchmodat2": {"x86_64": 452, "aarch64": 452},
    "map_shadow_stack": {"x86_64": 453, "aarch64": 453},
    "futex_wake": {"x86_64": 454, "aarch64": 454},
    "futex_wait": {"x86_64": 455, "aarch64": 455},
    "futex_requeue": {"x86_64": 456, "aarch64": 456},
    "statmount": {"x86_64": 457, "aarch64": 457},
    "listmount": {"x86_64": 458, "aarch64": 458},
    "lsm_get_self_attr": {"x86_64": 459, "aarch64": 459},
    "lsm_set_self_attr": {"x86_64": 460, "aarch64": 460},
    "lsm_list_modules": {"x86_64": 461, "aarch64": 461},
    "mseal": {"x86_64": 462, "aarch64": 462},
    "setxattrat": {"x86_64": 463, "aarch64": 463},
    "getxattrat": {"x86_64": 464, "aarch64": 464},
    "listxattrat": {"x86_64": 465, "aarch64": 465},
    "removexattrat": {"x86_64": 466, "aarch64": 466},
    "open_tree_attr": {"x86_64": 467, "aarch64": 467},
    "file_getattr": {"x86_64": 468, "aarch64": 468},
    "file_setattr": {"x86_64": 469, "aarch64": 469},
    "uretprobe": {"x86_64": 335},
    "riscv_hwprobe": {"riscv64": 258},
}

# Called first and replaced on ENOSYS by glibc (clone3 -> clone,
# faccessat2 -> faccessat, fchmodat2 -> fchmodat, close_range -> a loop,
# getrandom -> /dev/urandom, statx -> fstatat, rseq: registration is
# optional), by Go and systemd (openat2, pidfd_*, epoll_pwait2,
# copy_file_range, futex_waitv) and util-linux (statmount, listmount).
FALLBACK_SYSCALLS = (
    "clone3", "faccessat2", "fchmodat2", "close_range", "openat2", "epoll_pwait2", "pidfd_open",
    "pidfd_send_signal", "pidfd_getfd", "statx", "getrandom", "copy_file_range", "rseq", "futex_waitv",
    "cachestat", "statmount", "listmount", "mseal",
)

# On x86_64 numbers from 512 are x32's (with the x32 bit), so the native
# table ends there; aarch64's is far shorter.
NATIVE_TABLE_END = 512

# -- 1. parse -----------------------------------------------------------------


@dataclass(frozen=True)
class Arg:
    index: int
    value: int
    value_two: int
    op: str  # a key of OPERATORS


@dataclass(frozen=True)
class Filter:
    caps: tuple[str, ...] = ()
    arches: tuple[str, ...] = ()
    min_kernel: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Entry:
    """One ``syscalls[]`` item of a profile."""

    names: tuple[str, ...]
    action: str
    errno_ret: int | None
    args: tuple[Arg, ...] = ()
    includes: Filter = field(default_factory=Filter)
    excludes: Filter = field(default_factory=Filter)


@dataclass(frozen=True)
class Profile:
    default_action: str
    default_errno: int | None
    arch_map: tuple[tuple[str, tuple[str, ...]], ...]  # (arch, sub-arches)
    architectures: tuple[str, ...]
    entries: tuple[Entry, ...]

    def names(self) -> frozenset[str]:
        return frozenset(name for entry in self.entries for name in entry.names)


def parse_profile(text: str | bytes, source: str = "profile") -> Profile:
    """Validate a Docker-format profile; every problem is a SeccompError."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise SeccompError(f"{source}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SeccompError(f"{source}: a profile is a JSON object")
    default_action = _action(data.get("defaultAction"), f"{source}: defaultAction")
    default_errno = _optional_int(data.get("defaultErrnoRet"), f"{source}: defaultErrnoRet")
    if data.get("archMap") and data.get("architectures"):
        raise SeccompError(f"{source}: 'architectures' and 'archMap' cannot both be given")
    arch_map = []
    for i, item in enumerate(data.get("archMap") or []):
        where = f"{source}: archMap[{i}]"
        if not isinstance(item, dict):
            raise SeccompError(f"{where}: expected an object")
        arch = _arch(item.get("architecture"), where)
        subs = tuple(_arch(sub, where) for sub in (item.get("subArchitectures") or []))
        arch_map.append((arch, subs))
    architectures = tuple(_arch(a, f"{source}: architectures") for a in (data.get("architectures") or []))
    syscalls = data.get("syscalls") or []
    if not isinstance(syscalls, list):
        raise SeccompError(f"{source}: 'syscalls' must be a list")
    entries = tuple(_entry(item, f"{source}: syscalls[{i}]") for i, item in enumerate(syscalls))
    return Profile(default_action, default_errno, tuple(arch_map), architectures, entries)


def _entry(item, where: str) -> Entry:
    if not isinstance(item, dict):
        raise SeccompError(f"{where}: expected an object")
    names = item.get("names")
    if names is None and item.get("name"):
        names = [item["name"]]  # the legacy single-name form
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise SeccompError(f"{where}: 'names' must be a non-empty list of syscall names")
    action = _action(item.get("action"), f"{where}: action")
    errno_ret = _optional_int(item.get("errnoRet"), f"{where}: errnoRet")
    if errno_ret is not None and ACTIONS[action] not in ("errno", "trace"):
        raise SeccompError(f"{where}: errnoRet is only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE")
    args = []
    for j, arg in enumerate(item.get("args") or []):
        at = f"{where}: args[{j}]"
        if not isinstance(arg, dict):
            raise SeccompError(f"{at}: expected an object")
        index = _optional_int(arg.get("index"), f"{at}: index")
        if index is None or not 0 <= index <= 5:
            raise SeccompError(f"{at}: index must be 0 to 5")
        op = arg.get("op")
        if op not in OPERATORS:
            raise SeccompError(f"{at}: unknown operator {op!r} (expected one of {', '.join(OPERATORS)})")
        value = _optional_int(arg.get("value"), f"{at}: value") or 0
        value_two = _optional_int(arg.get("valueTwo"), f"{at}: valueTwo") or 0
        if not (0 <= value < 1 << 64 and 0 <= value_two < 1 << 64):
            raise SeccompError(f"{at}: values must fit in 64 bits")
        args.append(Arg(index, value, value_two, op))
    return Entry(
        tuple(names), action, errno_ret, tuple(args),
        _filter(item.get("includes"), f"{where}: includes"), _filter(item.get("excludes"), f"{where}: excludes"),
    )


def _filter(item, where: str) -> Filter:
    if not item:
        return Filter()
    if not isinstance(item, dict):
        raise SeccompError(f"{where}: expected an object")
    caps = item.get("caps") or []
    arches = item.get("arches") or []
    if not isinstance(caps, list) or not isinstance(arches, list):
        raise SeccompError(f"{where}: 'caps' and 'arches' are lists")
    min_kernel = item.get("minKernel")
    if min_kernel is not None:
        min_kernel = parse_kernel_version(str(min_kernel), where)
    return Filter(tuple(c.upper().removeprefix("CAP_") for c in caps), tuple(arches), min_kernel)


def _action(name, where: str) -> str:
    if name in REFUSED_ACTIONS:
        raise SeccompError(f"{where}: {REFUSED_ACTIONS[name]}")
    if name not in ACTIONS:
        raise SeccompError(f"{where}: unknown action {name!r}")
    return name


def _arch(name, where: str) -> str:
    if name not in ARCHES:
        raise SeccompError(f"{where}: unknown architecture {name!r}")
    return name


def _optional_int(value, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise SeccompError(f"{where}: expected an integer, got {value!r}")
    return value


def parse_kernel_version(text: str, where: str = "kernel version") -> tuple[int, ...]:
    """``"4.8"`` -> (4, 8); ``"6.18.44-fc-v782"`` -> (6, 18, 44)."""
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not match:
        raise SeccompError(f"{where}: invalid kernel version {text!r}")
    return tuple(int(part) for part in match.groups() if part is not None)


# -- 2. resolve (pure) ------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One syscall name with an action and the argument conditions that
    must all hold."""

    name: str
    action: str
    errno_ret: int | None
    args: tuple[Arg, ...] = ()


@dataclass(frozen=True)
class Resolved:
    default_action: str
    default_errno: int | None
    arches: tuple[str, ...]  # native first
    rules: tuple[Rule, ...]
    named: frozenset[str]  # every name the profile mentions, kept or not


def resolve(profile: Profile, caps: frozenset[str], machine: str, kernel: tuple[int, ...]) -> Resolved:
    """The profile's rules that apply to a container with bounding set
    ``caps`` on ``machine`` running ``kernel`` (Docker's setupSeccomp)."""
    goarch, native = MACHINES.get(machine, (machine, None))
    if profile.arch_map:
        arches: tuple[str, ...] = ()
        for arch, subs in profile.arch_map:
            if arch == native:
                arches = (arch, *subs)
                break
    else:
        arches = profile.architectures
    if native is not None and native in arches:
        arches = (native, *(a for a in arches if a != native))
    rules = []
    for entry in profile.entries:
        if not _applies(entry, caps, goarch, kernel):
            continue
        for name in entry.names:
            rules.extend(_rules_for(name, entry))
    return Resolved(profile.default_action, profile.default_errno, tuple(dict.fromkeys(arches)), tuple(rules), profile.names())


def _applies(entry: Entry, caps: frozenset[str], goarch: str, kernel: tuple[int, ...]) -> bool:
    inc, exc = entry.includes, entry.excludes
    if inc.caps and not all(cap in caps for cap in inc.caps):
        return False
    if inc.arches and goarch not in inc.arches:
        return False
    if inc.min_kernel is not None and kernel < inc.min_kernel:
        return False
    if exc.caps and any(cap in caps for cap in exc.caps):
        return False
    if exc.arches and goarch in exc.arches:
        return False
    if exc.min_kernel is not None and kernel >= exc.min_kernel:
        return False
    return True


def _rules_for(name: str, entry: Entry) -> list[Rule]:
    # As runc: conditions on different arguments are ANDed in one rule;
    # several on the same argument become one rule each (ORed), since a
    # syscall's argument cannot equal two values at once.
    indexes = [arg.index for arg in entry.args]
    if len(set(indexes)) == len(indexes):
        return [Rule(name, entry.action, entry.errno_ret, entry.args)]
    return [Rule(name, entry.action, entry.errno_ret, (arg,)) for arg in entry.args]


# -- 3. build (libseccomp) ----------------------------------------------------------


def _libseccomp():
    """pyseccomp, or a SeccompError: it finds libseccomp with
    ``ctypes.util.find_library``, which runs ``ldconfig`` and fails with a
    RuntimeError when that does (missing library, a killed subprocess)."""
    try:
        import pyseccomp
    except (ImportError, RuntimeError, OSError) as exc:
        from procview.native import cannot_load

        raise SeccompError(cannot_load("libseccomp", exc)) from None
    return pyseccomp


def action_value(action: str, errno_ret: int | None, default_errno: int | None = None) -> int:
    """The libseccomp action code for a Docker action name."""
    pyseccomp = _libseccomp()

    kind = ACTIONS[action]
    if kind == "errno":
        number = errno_ret if errno_ret is not None else (default_errno if default_errno is not None else errno.EPERM)
        return pyseccomp.ERRNO(number)
    if kind == "trace":
        return pyseccomp.TRACE(errno_ret or 0)
    return {
        "kill_thread": pyseccomp.KILL_THREAD,
        "kill_process": pyseccomp.KILL_PROCESS,
        "trap": pyseccomp.TRAP,
        "log": pyseccomp.LOG,
        "allow": pyseccomp.ALLOW,
    }[kind]


def syscall_number(name: str, machine: str) -> int | None:
    """The native number of ``name``: libseccomp's, else NEWER_SYSCALLS';
    None when unknown. Negative: libseccomp's name of another arch's call."""
    pyseccomp = _libseccomp()

    number = pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name)
    if number != -1:  # __NR_SCMP_ERROR
        return number
    if name in NEWER_SYSCALLS:
        return NEWER_SYSCALLS[name].get(machine, -1)
    return None


def build(resolved: Resolved, machine: str, warn=None) -> bytes:
    """Compile ``resolved`` into a classic BPF program (bytes)."""
    pyseccomp = _libseccomp()

    warn = warn or (lambda message: None)
    default = action_value(resolved.default_action, resolved.default_errno)
    native = MACHINES.get(machine, (None, None))[1]
    if not resolved.arches:
        sub_arches: tuple[str, ...] = ()
        with_native = True
    else:
        with_native = resolved.arches[0] == native
        sub_arches = tuple(a for a in resolved.arches if a != native)

    native_filter = _new_filter(pyseccomp, default)
    sub_filter = None
    if sub_arches:
        sub_filter = _new_filter(pyseccomp, default)
        for arch in sub_arches:
            _add_arch(pyseccomp, sub_filter, arch)
        sub_filter.remove_arch(pyseccomp.Arch.NATIVE)

    unknown = []
    highest = -1
    for name in sorted(resolved.named):
        number = syscall_number(name, machine)
        if number is None:
            unknown.append(name)
        elif number >= 0:
            highest = max(highest, number)
    if unknown:
        warn(f"seccomp: skipping syscalls this machine's libseccomp does not know: {', '.join(unknown)}")

    for rule in resolved.rules:
        number = syscall_number(rule.name, machine)
        if number is None:
            continue
        action = action_value(rule.action, rule.errno_ret, resolved.default_errno)
        if action == default:
            continue  # libseccomp refuses a rule that repeats the default
        args = [pyseccomp.Arg(a.index, getattr(pyseccomp, OPERATORS[a.op]), a.value, a.value_two) for a in rule.args]
        if with_native and number != -1:
            _add_rule(native_filter, action, number, args, rule.name)
        if sub_filter is not None and pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, rule.name) != -1:
            _add_rule(sub_filter, action, pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, rule.name), args, rule.name)

    enosys = pyseccomp.ERRNO(errno.ENOSYS)
    if with_native and ACTIONS[resolved.default_action] not in ("allow", "log") and default != enosys:
        for number in enosys_numbers(resolved, machine, highest):
            _add_rule(native_filter, enosys, number, [], str(number))

    if not with_native:
        native_filter = sub_filter
    elif sub_filter is not None:
        native_filter.merge(sub_filter)
    return _export(native_filter)


def enosys_numbers(resolved: Resolved, machine: str, highest: int) -> list[int]:
    """The native numbers answered ENOSYS (see the module docstring)."""
    numbers = set(range(highest + 1, NATIVE_TABLE_END)) if highest >= 0 else set()
    for name in FALLBACK_SYSCALLS:
        if name in resolved.named:
            continue
        number = syscall_number(name, machine)
        if number is not None and number >= 0:
            numbers.add(number)
    return sorted(numbers)


def _new_filter(pyseccomp, default: int):
    flt = pyseccomp.SyscallFilter(default)
    flt.set_attr(pyseccomp.Attr.ACT_BADARCH, default)
    flt.set_attr(pyseccomp.Attr.CTL_NNP, 0)  # we set no_new_privs ourselves, only when asked
    try:
        flt.set_attr(pyseccomp.Attr.CTL_OPTIMIZE, 2)  # a binary tree of syscall numbers
    except OSError:
        pass
    return flt


def _add_arch(pyseccomp, flt, arch: str) -> None:
    value = getattr(pyseccomp.Arch, ARCHES[arch], None)
    if value is None:
        raise SeccompError(f"seccomp: architecture {arch} is not supported by this libseccomp binding")
    try:
        if not flt.exist_arch(value):
            flt.add_arch(value)
    except OSError as exc:
        raise SeccompError(f"seccomp: cannot add architecture {arch}: {exc.strerror}") from None


def _add_rule(flt, action: int, number: int, args, name: str) -> None:
    try:
        flt.add_rule(action, number, *args)
    except OSError as exc:
        raise SeccompError(f"seccomp: cannot add the rule for {name}: {exc.strerror}") from None


def _export(flt) -> bytes:
    fd = os.memfd_create("seccomp-bpf", os.MFD_CLOEXEC)
    try:
        with os.fdopen(os.dup(fd), "rb") as handle:
            flt.export_bpf(handle)
        size = os.lseek(fd, 0, os.SEEK_END)
        return os.pread(fd, size, 0)
    finally:
        os.close(fd)


# -- the view filter: sysinfo and sched_getaffinity go to the supervisor ------------
#
# A second, tiny filter next to the profile's, loaded with
# SECCOMP_FILTER_FLAG_NEW_LISTENER so that the kernel hands back a listener
# fd (which procview run passes on to ``procview serve``). The kernel runs
# every filter and takes the strictest answer, so the profile still rules:
# a profile that denies sysinfo wins over NOTIFY.
#
# - ``sysinfo`` is always sent.
# - ``sched_getaffinity`` only for pid 0 (the calling thread: what nproc,
#   glibc, Python, Node and the JVM ask). A non-zero pid names a thread in
#   the caller's pid namespace, which the supervisor cannot see directly;
#   the kernel answers it, with the real mask (the runtime's cpuset).
# - Other architectures (x86 and x32 on an x86_64 host) are left alone:
#   their ``struct sysinfo`` has another layout.

def build_view_filter() -> bytes:
    """The view filter as a classic BPF program (bytes)."""
    pyseccomp = _libseccomp()

    flt = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    flt.set_attr(pyseccomp.Attr.CTL_NNP, 0)  # as for the profile: no_new_privs only when asked
    flt.add_rule(pyseccomp.NOTIFY, "sysinfo")
    flt.add_rule(pyseccomp.NOTIFY, "sched_getaffinity", pyseccomp.Arg(0, pyseccomp.EQ, 0))
    return _export(flt)


__all__ = [
    "SeccompError", "Profile", "Entry", "Arg", "Filter", "Rule", "Resolved", "parse_profile", "resolve", "build",
    "program_for", "read_profile_text", "build_view_filter", "view_program", "action_value", "syscall_number", "enosys_numbers", "parse_kernel_version",
    "ACTIONS", "OPERATORS", "ARCHES", "MACHINES", "NEWER_SYSCALLS", "FALLBACK_SYSCALLS", "DEFAULT_PROFILE",
]
