"""Container security: capabilities, no_new_privs, seccomp, masked and
read-only paths, and the devices cgroup, with Docker's defaults.

``default_profile.json`` is Docker's default seccomp profile, unchanged:
a byte-for-byte copy of ``moby/profiles@cd3bed8:seccomp/default.json``
(13,470 bytes, sha256
``536529b665dd0972c37bfb569f5d4ac8a53592e7b00752bc39ff063ca9864c74``), the profile ``docker run``
applies. Replace it only with a newer copy of the same file.

Modules: ``capabilities`` (which caps, and dropping them), ``seccomp``
(profile -> BPF), ``paths`` (masked and read-only paths), ``devices``
(the devices cgroup, v1 files or a v2 eBPF program).

Where each step happens (runc's order, ``standard_init_linux.go``)
-----------------------------------------------------------------

On the host (``procview run``), before anything starts: ``plan`` checks
the options and the profile and compiles the seccomp program, so bad
input fails with exit 125 and nothing left behind; ``devices.restrict``
writes the device rules into the new cgroup before pid 1 joins it.

In pid 1, after ``pivot_root``: masked and read-only paths.

In the command's process, after the fork and before ``execve``
(``confine``), in this order:

1. no_new_privs, if asked (``--security-opt no-new-privileges``);
2. seccomp, if no_new_privs is off: loading a filter without it needs
   CAP_SYS_ADMIN, so it must come before the capabilities are dropped;
3. the bounding set (``PR_CAPBSET_DROP``), then the user's groups, gid and
   uid, then permitted/effective/inheritable (capset) and ambient;
4. seccomp, if no_new_privs is on: as late as possible, so the filter
   need not allow what procview itself does before ``execve``.

The init (pid 1) is confined too
--------------------------------

pid 1 is procview's Python init; it only waits for children and forwards
signals. After forking the command it runs the same ``confine`` (same
bounding set, capabilities, user, no_new_privs and seccomp filter: as
Docker's ``--init`` process, which is just another container process),
and makes itself non-dumpable. Otherwise it would be the one process in
the container with every capability and no filter, and the container's
processes, sharing its uid, could ``ptrace`` it (the default profile
allows ptrace on kernels >= 4.8) and make it do what they may not.
Non-dumpable, it cannot be traced or have its memory read by a process
without CAP_SYS_PTRACE, even one with the same uid and capabilities.
"""

from __future__ import annotations

import os
from collections import namedtuple

from procview.runtime.linux import PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS
from procview.runtime.security import capabilities, paths  # imported now: pid 1 uses them after pivot_root

UNCONFINED = "unconfined"


class SecurityError(ValueError):
    """Bad security options or profile (one line, exit 125)."""


class SecurityOptions(namedtuple("SecurityOptions", "seccomp no_new_privileges", defaults=(None, False))):
    """``--security-opt`` values, parsed. ``seccomp``: a profile path,
    UNCONFINED, or None (the default profile)."""

    __slots__ = ()


_PLAN_DEFAULTS = {
    "caps": capabilities.DEFAULT,  # bounding set (names); root's permitted and effective
    "seccomp": None,  # a BPF program (bytes); None: unconfined
    "no_new_privs": False,
    "mask_paths": True,  # masked and read-only paths
    "privileged": False,
    # The view filter (sysinfo, sched_getaffinity -> procview's supervisor;
    # runtime/syscall_view.py); None: the kernel answers them.
    "view_filter": None,
}


class SecurityPlan(namedtuple("SecurityPlan", _PLAN_DEFAULTS, defaults=_PLAN_DEFAULTS.values())):
    """What the container gets (plain values: crosses the fork)."""

    __slots__ = ()


def parse_security_opts(values) -> SecurityOptions:
    """``seccomp=PROFILE.json``, ``seccomp=unconfined``,
    ``no-new-privileges`` and ``no-new-privileges=true|false`` (also with
    ``:`` instead of ``=``, as Docker still accepts)."""
    seccomp, nnp = None, False
    for value in values:
        key, sep, arg = value.partition("=")
        if not sep:
            key, sep, arg = value.partition(":")
        if key == "no-new-privileges":
            if not sep:
                nnp = True
            elif arg.lower() in ("true", "false"):
                nnp = arg.lower() == "true"
            else:
                raise SecurityError(f"invalid --security-opt {value!r}: no-new-privileges takes true or false")
        elif key == "seccomp" and sep and arg:
            seccomp = arg
        else:
            raise SecurityError(
                f"invalid --security-opt {value!r}: expected seccomp=PROFILE.json, seccomp=unconfined or no-new-privileges"
            )
    return SecurityOptions(seccomp, nnp)


def plan(cap_add=(), cap_drop=(), privileged: bool = False, security_opts=(), cache_dir: str | None = None, warn=None) -> SecurityPlan:
    """Check the options and compile the seccomp program (on the host,
    before anything starts). Raises SecurityError."""
    from procview.runtime.security import programs  # not seccomp: its compiler is needed only on a cache miss

    warn = warn or (lambda message: None)
    options = parse_security_opts(security_opts)
    try:
        wanted = capabilities.container_set(cap_add, cap_drop, privileged)
    except capabilities.CapabilityError as exc:
        raise SecurityError(str(exc)) from None
    available = capabilities.bounding_set_of_this_process()
    explicit = {capabilities.normalize(n) for n in cap_add} - {capabilities.ALL}
    missing = sorted((wanted - available) & explicit)
    if missing:
        warn(f"procview itself lacks {', '.join('CAP_' + n for n in missing)}: the container cannot have it")
    caps = wanted & available
    program = None
    if not privileged and options.seccomp != UNCONFINED:
        try:
            text, source = programs.read_profile_text(options.seccomp)
            program = programs.program_for(text, source, caps, warn=warn, cache_dir=cache_dir)
        except programs.SeccompError as exc:
            raise SecurityError(str(exc)) from None
    return SecurityPlan(caps, program, options.no_new_privileges, not privileged, privileged)


def apply_paths(linux, security: SecurityPlan) -> None:
    """In pid 1 after pivot_root: masked and read-only paths (or, with
    ``--privileged``, a writable /sys)."""
    if security.mask_paths:
        paths.mask_paths(linux)
        paths.make_read_only(linux)
    if security.privileged:
        paths.unmask_sys(linux)


def confine(linux, security: SecurityPlan, uid: int, gid: int, groups: list[int]) -> int | None:
    """Become the container's user with the container's privileges, in
    runc's order (see the module docstring). Call right before execve.

    Returns the view filter's listener fd (the caller hands it to the
    supervisor and closes it before execve), or None without one. The
    view filter goes in before the profile's, so a profile that does not
    allow ``seccomp(2)`` cannot stop it from loading."""
    if security.no_new_privs:
        linux.prctl(PR_SET_NO_NEW_PRIVS, 1)
    listener = None
    if not security.no_new_privs:
        listener = _load_filters(linux, security)
    capabilities.drop_bounding(linux, security.caps)
    os.setgroups(groups)
    os.setgid(gid)
    os.setuid(uid)
    capabilities.set_process_caps(linux, security.caps, root=uid == 0)
    if security.no_new_privs:
        listener = _load_filters(linux, security)
    return listener


def _load_filters(linux, security: SecurityPlan) -> int | None:
    from procview.runtime.linux import SECCOMP_FILTER_FLAG_NEW_LISTENER

    listener = None
    if security.view_filter is not None:
        listener = linux.seccomp_set_filter(security.view_filter, SECCOMP_FILTER_FLAG_NEW_LISTENER)
    if security.seccomp is not None:
        linux.seccomp_set_filter(security.seccomp)
    return listener


def confine_init(linux, security: SecurityPlan, uid: int, gid: int, groups: list[int]) -> None:
    """The same for pid 1 after it forked the command, non-dumpable."""
    linux.prctl(PR_SET_DUMPABLE, 0)
    # pid 1 makes no calls worth a view: it gets no view filter (a second
    # listener nobody would read).
    confine(linux, security._replace(view_filter=None), uid, gid, groups)
    try:
        linux.prctl(PR_SET_DUMPABLE, 0)  # a uid change resets it to fs.suid_dumpable
    except OSError:
        pass


__all__ = [
    "SecurityError", "SecurityOptions", "SecurityPlan", "UNCONFINED", "parse_security_opts", "plan", "apply_paths",
    "confine", "confine_init",
]
