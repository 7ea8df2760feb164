"""Where procview is mounted: one reading of the mount table for the
daemon (refuse a live mount, find dead binds to re-attach), the runtime
(find the view to bind) and the demo. Light on purpose: ``procview run``
imports it on its start path."""

from __future__ import annotations

import os
import zlib
from collections import namedtuple

FSTYPE = "fuse.procview"
FSNAME = "procview"
# ``procview serve VIEW --shards K``: shard 0 is VIEW itself, shard i the
# daemon mounted at VIEW.shards/i (docs/serve.md, "Shards").
SHARDS_SUFFIX = ".shards"


class Mount(namedtuple("Mount", "mount_id parent_id device root mountpoint options fstype source")):
    """One line of ``/proc/PID/mountinfo`` (proc(5)), escapes undone.

    ``mount_id``/``parent_id``: ints (the parent of a namespace's root
    mount is outside the namespace); ``device``: the superblock's
    ``major:minor`` (a FUSE connection has its own, ``0:NN``); ``root``:
    the path inside the filesystem that is mounted here (``/proc/meminfo``
    for a bind of one file of the view); ``options``: the per-mount
    options (``ro,nosuid,...``); ``source``: the filesystem's name (FUSE:
    its ``fsname``)."""

    __slots__ = ()


def unescape(field: str) -> str:
    """A mountinfo field with its ``\\ooo`` octal escapes (space, tab,
    newline, backslash) undone."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[Mount]:
    """Every mount of a mountinfo text, in the kernel's order. Fields:
    ``id parent major:minor root mountpoint options [optional...] - fstype
    source superoptions``; lines that do not have them are skipped."""
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 6 or len(tail) < 2 or not (fields[0].isdigit() and fields[1].isdigit()):
            continue
        mounts.append(Mount(int(fields[0]), int(fields[1]), fields[2], unescape(fields[3]), unescape(fields[4]),
                            fields[5], tail[0], unescape(tail[1])))
    return mounts


def view_source(mountpoint: str) -> str:
    """The source (FUSE ``fsname``) of the view mounted at ``mountpoint``:
    ``procview:/var/lib/procview``. It names the mount point, so that a
    bind of the view in a container, whose path there says nothing of
    where it came from, still tells which view it belongs to, even after
    its daemon died (docs/serve.md, "Surviving a restart")."""
    return f"{FSNAME}:{mountpoint}"


def _own_mounts() -> list[Mount]:
    try:
        with open("/proc/self/mountinfo") as f:
            return parse_mountinfo(f.read())
    except OSError:
        return []


def filesystems_at(path: str) -> list[str]:
    """The filesystem types mounted at ``path`` in this mount namespace,
    bottom of the stack first (``/proc/self/mountinfo``, proc(5))."""
    return [mount.fstype for mount in _own_mounts() if mount.mountpoint == path]


def top_mount(mounts: list[Mount], path: str) -> Mount | None:
    """The mount at ``path`` that nothing is mounted over: the one a path
    lookup reaches. Mounts stacked at one path have the one below as their
    parent; the kernel's order alone does not tell, since a mount can be
    slid beneath another (``MOVE_MOUNT_BENEATH``)."""
    here = [mount for mount in mounts if mount.mountpoint == path]
    covered = {mount.parent_id for mount in here}
    tops = [mount for mount in here if mount.mount_id not in covered]
    return tops[-1] if tops else None


def mount_at(path: str) -> Mount | None:
    """The mount on top at ``path`` in this mount namespace, or None."""
    return top_mount(_own_mounts(), path)


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


# -- shards: which daemon serves a container ----------------------------------------


def shard_mountpoint(view: str, index: int) -> str:
    """Where shard ``index`` of the view at ``view`` is mounted: shard 0 is
    the view itself (the path LXCFS-style binds name), the others are
    ``VIEW.shards/INDEX``, beside the view (nothing can be mounted inside a
    FUSE mount it does not serve)."""
    return view if index == 0 else os.path.join(view + SHARDS_SUFFIX, str(index))


def shard_index(container_id: str, count: int) -> int:
    """The shard a container's files come from, among ``count``: a hash of
    its id that every process computes alike (CRC-32; Python's ``hash`` of
    a string changes from one process to the next)."""
    return zlib.crc32(container_id.encode()) % count if count > 1 else 0


def shard_mountpoints(mounts: list[Mount], view: str) -> list[str]:
    """The view's shards found in a mount table, shard 0 (``view``) first,
    then ``VIEW.shards/N`` in order of N: every procview mount there, live
    or not (a shard being restarted keeps its place)."""
    prefix = view + SHARDS_SUFFIX + "/"
    found = {}
    for mount in mounts:
        name = mount.mountpoint[len(prefix):]
        if mount.fstype == FSTYPE and mount.mountpoint.startswith(prefix) and name.isdigit():
            found[int(name)] = mount.mountpoint
    return [view] + [found[index] for index in sorted(found)]


def view_for_container(view: str, container_id: str) -> str:
    """The mount point a container's view is bound from: the shard its id
    hashes to, or ``view`` (shard 0) when that shard does not answer right
    now. ``view`` is a live view's real path. Every shard is a whole
    daemon that renders for whoever calls, so any choice is right; the
    hash only spreads the containers over the daemons."""
    shards = shard_mountpoints(_own_mounts(), view)
    chosen = shards[shard_index(container_id, len(shards))]
    if chosen != view and not _answers(chosen):
        return view
    return chosen


def _answers(path: str) -> bool:
    try:
        os.statvfs(path)  # reaches the daemon (ENOTCONN once it is gone)
    except OSError:
        return False
    return True
