"""Which namespaces a container gets, and the time namespace's offset.

A container gets new mount, uts, ipc, pid and network namespaces (the
network one holds only loopback, up; ``--network host`` keeps the host's,
``--network bridge`` joins one made beforehand: runtime/network), a
cgroup namespace where the host has cgroup v2 (Docker's default: on v1 the
host's cgroup namespace is kept), and a **time namespace** whose boottime
offset makes the container's clock start at 0. That one offset fixes
``/proc/uptime``, ``sysinfo().uptime``, ``/proc/stat`` btime and every
process start time the container can see, together, so ``ps`` and
``uptime`` agree (a FUSE file alone cannot: see docs/view-semantics.md).

pid and time namespaces apply to the *children* of the process that
unshares them, so ``procview run`` unshares those two itself, writes the
offset, and forks pid 1; pid 1 unshares the rest for itself.
"""

from __future__ import annotations

import os
import time

from procview.runtime.linux import (
    CLONE_NEWCGROUP,
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWTIME,
    CLONE_NEWUTS,
)


def time_namespaces_supported() -> bool:
    return os.path.exists("/proc/self/ns/time")


def for_children(time_namespace: bool) -> int:
    """Flags ``procview run`` unshares before forking pid 1."""
    return CLONE_NEWPID | (CLONE_NEWTIME if time_namespace else 0)


def for_init(new_network: bool, cgroup_namespace: bool, new_ipc_uts: bool = True) -> int:
    """Flags pid 1 unshares for itself. ``new_network``: a network
    namespace of its own (``--network none``); with ``host`` it keeps the
    host's, with ``bridge`` it joins the one made for it. ``new_ipc_uts``:
    False for a pod's member, which joins its infra's (runtime/pods.py)."""
    flags = CLONE_NEWNS | (CLONE_NEWUTS | CLONE_NEWIPC if new_ipc_uts else 0)
    if new_network:
        flags |= CLONE_NEWNET
    if cgroup_namespace:
        flags |= CLONE_NEWCGROUP
    return flags


def boottime_offset_line(now_boottime: float | None = None) -> str:
    """The ``timens_offsets`` line that puts boot at this moment: uptime
    inside then counts from the container's start. (Whole seconds: the
    offset moves boottime back by the host's uptime, rounded down, so the
    container's clock starts between 0 and 1 s.)"""
    if now_boottime is None:
        now_boottime = time.clock_gettime(time.CLOCK_BOOTTIME)
    return f"boottime {-int(now_boottime)} 0\n"  # int() rounds down: boottime > 0


def set_boottime_offset(line: str) -> None:
    """Write the offset for the time namespace just unshared (allowed only
    before its first process exists)."""
    with open("/proc/self/timens_offsets", "w") as f:
        f.write(line)
