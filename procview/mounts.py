"""Where procview is mounted: one reading of the mount table for the
daemon (refuse a live mount), the runtime (find the view to bind) and the
demo. Light on purpose: ``procview run`` imports it on its start path."""

from __future__ import annotations

import os

FSTYPE = "fuse.procview"


def filesystems_at(path: str) -> list[str]:
    """The filesystem types mounted at ``path`` in this mount namespace,
    bottom of the stack first (``/proc/self/mountinfo``, proc(5))."""
    types = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) > 4 and fields[4].replace("\\040", " ") == path:
                    types.append(right.split()[0])
    except OSError:
        pass
    return types


def is_live_procview(path: str) -> bool:
    """Whether a procview that answers is mounted at ``path`` (a dead one,
    whose daemon was killed, fails the read)."""
    path = os.path.realpath(path)
    if not filesystems_at(path)[-1:] == [FSTYPE]:
        return False
    try:
        os.statvfs(path)
    except OSError:
        return False
    return os.path.exists(os.path.join(path, "proc", "meminfo"))
