"""Finding the cgroup hierarchies: ``/proc/self/mountinfo`` and ``/proc/PID/cgroup``.

Never hard-coded paths: hosts mount cgroups in different places, and a daemon
may run in a mount namespace of its own.
"""

from __future__ import annotations

from collections import namedtuple

from procview.mounts import unescape as _unescape


class CgroupMount(namedtuple("CgroupMount", "version mountpoint root controllers")):
    """One mounted cgroup hierarchy.

    ``version`` is 1 or 2. ``controllers`` (a frozenset of str) are the v1
    controllers bound to it (``name=systemd`` style named hierarchies
    included); empty for v2. ``root`` is the cgroup that is the mount's root
    (``/`` normally, a sub-cgroup for a bind mount or inside a cgroup
    namespace).
    """

    __slots__ = ()


def parse_mountinfo(text: str) -> list[CgroupMount]:
    """The cgroup mounts in a mountinfo text (see proc(5), "mountinfo").

    Fields: id parent major:minor root mountpoint options [optional...] - fstype source superoptions.
    When one hierarchy is mounted several times, the first mount whose root is
    ``/`` wins (it can reach every cgroup), else the first one seen.
    """
    found: dict[frozenset[str] | str, CgroupMount] = {}
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        lparts = left.split()
        rparts = right.split()
        if len(lparts) < 5 or len(rparts) < 3:
            continue
        fstype = rparts[0]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        root = _unescape(lparts[3])
        mountpoint = _unescape(lparts[4])
        if fstype == "cgroup2":
            mount = CgroupMount(2, mountpoint, root, frozenset())
            key: frozenset[str] | str = "cgroup2"
        else:
            # Super options name the controllers among plain mount options
            # ("rw", "seclabel", "release_agent=..."): keep only known
            # controller names and named hierarchies (name=systemd).
            controllers = frozenset(
                opt for opt in rparts[2].split(",") if opt.startswith("name=") or opt in V1_CONTROLLERS
            )
            mount = CgroupMount(1, mountpoint, root, controllers)
            key = controllers
        previous = found.get(key)
        if previous is None or (previous.root != "/" and root == "/"):
            found[key] = mount
    return list(found.values())


# The kernel's v1 controllers (Documentation/admin-guide/cgroup-v1/).
V1_CONTROLLERS = frozenset(
    {
        "blkio", "cpu", "cpuacct", "cpuset", "debug", "devices", "freezer", "hugetlb",
        "memory", "misc", "net_cls", "net_prio", "perf_event", "pids", "rdma",
    }
)


class ProcCgroup(namedtuple("ProcCgroup", "hierarchy_id controllers path")):
    """One line of ``/proc/PID/cgroup``: hierarchy id (int), controllers
    (frozenset of str), path."""

    __slots__ = ()


def parse_proc_cgroup(text: str) -> list[ProcCgroup]:
    """``/proc/PID/cgroup``: ``ID:controller,list:/path`` per line.

    The v2 line is ``0::/path`` (empty controller list). Paths are relative
    to the reader's cgroup namespace root.
    """
    result = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        try:
            hid = int(parts[0])
        except ValueError:
            continue
        controllers = frozenset(c for c in parts[1].split(",") if c)
        result.append(ProcCgroup(hid, controllers, parts[2]))
    return result
