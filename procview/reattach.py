"""Re-attaching the view in running containers after its daemon restarted.

A container binds files of the view over its own (``/var/lib/procview/proc/meminfo``
on ``/proc/meminfo``), and the kernel ties each bind to the FUSE connection
it was made from. When ``procview serve`` dies (kill -9, the OOM killer, a
crash), its connection dies with it; a new daemon's mount is a new
connection, and the old binds answer ENOTCONN for as long as their
containers live (LXCFS's most reported defect, D14). This module finds those
dead binds and puts a bind of the same path of the live mount in their place,
inside each container's mount namespace, changing nothing else there.

1. **Find** (in the daemon; no FUSE request, so it cannot block on a dead or
   hung file system): every mount namespace once, by the inode of
   ``/proc/PID/ns/mnt``, except the daemon's own and the host's (pid 1's);
   in each one's mountinfo, the mounts of *this* view (FUSE source
   ``procview:MOUNTPOINT``, see ``mounts.view_source``) on another
   connection than the live one (another ``major:minor``) that nothing is
   mounted on or below (``stale_binds``, pure).
2. **Repair** (in a child process, ``python -m procview.reattach``): for
   each such namespace, check that the bind is dead (``statvfs`` through
   ``/proc/PID/root`` says ENOTCONN; one that answers is another daemon's
   and stays); a namespace with no dead bind is never entered. Then clone
   the same path of the live mount (``open_tree(OPEN_TREE_CLONE)``, here, in
   the daemon's namespace), give the clone the old bind's options (``ro``...,
   ``mount_setattr``), enter the namespace (``setns``) and the process's root,
   check that the dead bind is still the one on top there, slide the clone
   beneath it (``MOVE_MOUNT_BENEATH``, Linux 6.5) and detach the dead one: no
   read ever falls through to the file below. Before 6.5: detach, then attach
   (for microseconds the container sees the file below, the host's).

Why a child: ``setns(CLONE_NEWNS)`` is refused to a process that shares its
filesystem context with other threads, and the daemon has threads (trio's
workers); and the daemon must keep answering FUSE requests while the child
looks up paths of the live mount. The child is a fresh interpreter, not a
fork of a threaded process.

The child reads a plan (JSON) on stdin and writes one JSON line per
namespace on stdout; the daemon logs one line per repaired namespace, naming
the container (its first pid, command and cgroup).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sys
import tempfile
import time
from collections import namedtuple

from procview.mounts import FSTYPE, SHARDS_SUFFIX, Mount, mount_at, parse_mountinfo, top_mount, view_source
from procview.runtime import linux as kernel

log = logging.getLogger(__name__)

# Seconds between scans: the first at readiness repairs what a previous
# daemon left; later ones are a net for namespaces that raced the first
# (copied from one not yet repaired, say), so they thin out: 1 s after a scan
# that found something, doubling up to a minute after ones that did not.
RESCAN_SOON = 1.0
RESCAN_AT_MOST = 60.0
REPAIR_TIMEOUT = 60.0  # seconds: bounds a child stuck on a hung file system (another FUSE daemon)
ANSWERING_RECHECK = 60.0  # seconds before a bind that answered (another daemon's) is checked again


class LiveView(namedtuple("LiveView", "mountpoint source device shards", defaults=(None,))):
    """This daemon's mount: its path, its FUSE source and its connection's
    ``major:minor``; for shard 0 of ``procview serve --shards K``, K (it
    adopts the binds of shards K and above, see ``is_retired_shard``)."""

    __slots__ = ()


class Repair(namedtuple("Repair", "inode pid binds")):
    """One mount namespace to repair: its inode, the pid it was found
    through, and its stale binds (``Mount`` records, as that pid sees them)."""

    __slots__ = ()

    def to_json(self) -> dict:
        return {"inode": self.inode, "pid": self.pid, "binds": [bind._asdict() for bind in self.binds]}

    @classmethod
    def from_json(cls, data: dict) -> "Repair":
        return cls(data["inode"], data["pid"], [Mount(**bind) for bind in data["binds"]])


# -- pure: what to repair, and with what --------------------------------------------


def stale_binds(mounts: list[Mount], view: LiveView) -> list[Mount]:
    """The mounts of ``view`` (by source) on another connection than the
    live one, that nothing is mounted on or below: a mount over one hides
    it (and is the user's), and one below would go with it when it is
    detached. Whether each is dead is the child's question (it takes a
    FUSE request)."""
    parents = {mount.parent_id for mount in mounts}
    return [
        mount for mount in mounts
        if mount.fstype == FSTYPE and (mount.source == view.source or is_retired_shard(mount.source, view))
        and mount.device != view.device and mount.mount_id not in parents
    ]


def is_retired_shard(source: str, view: LiveView) -> bool:
    """Whether ``source`` is a shard of ``view`` that no daemon will serve
    again: numbered K or above, ``view`` being shard 0 of K (serve was
    started again with fewer shards). Shard 0 re-attaches such binds to
    itself; a shard below K re-attaches its own."""
    if view.shards is None:
        return False
    prefix = f"{view.source}{SHARDS_SUFFIX}/"
    index = source[len(prefix):]
    return source.startswith(prefix) and index.isdigit() and int(index) >= view.shards


def may_hold_stale_binds(mountinfo_text: str) -> bool:
    """A quick look at the raw text before parsing it: some line is a
    procview mount (most namespaces have none). Not the view's source: how
    the kernel escapes it has changed (newer kernels escape ``#`` too)."""
    return f" - {FSTYPE} " in mountinfo_text


def still_stale(mounts: list[Mount], bind: Mount) -> bool:
    """Whether ``bind`` is still the mount on top at its path, with nothing
    below it, in the namespace's table as read again after entering it: a
    container may have changed its mounts since the scan."""
    top = top_mount(mounts, bind.mountpoint)
    return (
        top is not None and (top.mount_id, top.device, top.root, top.source) == (bind.mount_id, bind.device, bind.root, bind.source)
        and not any(mount.parent_id == top.mount_id for mount in mounts)
    )


def next_scan_in(previous: float | None, found: bool) -> float:
    """Seconds until the next scan, after one that ``found`` something to
    repair or not (``previous``: the last wait; None after the first scan)."""
    if found or previous is None:
        return RESCAN_SOON
    return min(previous * 2, RESCAN_AT_MOST)


def clone_source(view_mountpoint: str, root: str) -> str:
    """The path of the live mount that replaces a bind of ``root`` (the
    path inside the view that the old bind showed)."""
    inside = root.strip("/")
    return os.path.join(view_mountpoint, inside) if inside else view_mountpoint


# Per-mount options (mountinfo's words) -> mount_setattr's bits, and mount(2)'s flags.
_MOUNT_ATTRS = {"ro": kernel.MOUNT_ATTR_RDONLY, "nosuid": kernel.MOUNT_ATTR_NOSUID, "nodev": kernel.MOUNT_ATTR_NODEV,
                "noexec": kernel.MOUNT_ATTR_NOEXEC, "nodiratime": kernel.MOUNT_ATTR_NODIRATIME,
                "nosymfollow": kernel.MOUNT_ATTR_NOSYMFOLLOW}
_MS_FLAGS = {"ro": kernel.MS_RDONLY, "nosuid": kernel.MS_NOSUID, "nodev": kernel.MS_NODEV, "noexec": kernel.MS_NOEXEC,
             "noatime": kernel.MS_NOATIME, "nodiratime": kernel.MS_NODIRATIME, "relatime": kernel.MS_RELATIME}


def mount_attributes(options: str) -> tuple[int, int]:
    """(attr_set, attr_clr) for ``mount_setattr`` that give a mount the
    per-mount options of mountinfo's ``options`` (``ro,nosuid,nodev,relatime``)."""
    words = set(options.split(","))
    attr_set = sum(value for word, value in _MOUNT_ATTRS.items() if word in words)
    attr_clr = sum(value for word, value in _MOUNT_ATTRS.items() if word not in words)
    # mountinfo names noatime or relatime; neither means strictatime.
    atime = kernel.MOUNT_ATTR_NOATIME if "noatime" in words else 0 if "relatime" in words else kernel.MOUNT_ATTR_STRICTATIME
    return attr_set | atime, attr_clr | kernel.MOUNT_ATTR__ATIME


def remount_flags(options: str) -> int:
    """The ``mount(MS_REMOUNT | MS_BIND)`` flags for the same options, for
    kernels without ``mount_setattr`` (before 5.12)."""
    words = set(options.split(","))
    return kernel.MS_REMOUNT | kernel.MS_BIND | sum(value for word, value in _MS_FLAGS.items() if word in words)


def namespace_inode(link: str) -> int | None:
    """``mnt:[4026531840]`` (the link ``/proc/PID/ns/mnt``) -> 4026531840."""
    if link.startswith("mnt:[") and link.endswith("]") and link[5:-1].isdigit():
        return int(link[5:-1])
    return None


# -- the daemon's side: find the namespaces ----------------------------------------


def live_view(mountpoint: str, shards: int | None = None) -> LiveView | None:
    """This daemon's view at ``mountpoint``, from its own mount table (None
    if the top mount there is not a procview: nothing to re-attach to);
    ``shards``: K, for shard 0 of K."""
    mount = mount_at(mountpoint)
    if mount is None or mount.fstype != FSTYPE:
        return None
    return LiveView(mountpoint, view_source(mountpoint), mount.device, shards)


def mount_namespaces(proc: str = "/proc") -> dict[int, int]:
    """Every mount namespace a process is in: inode -> its lowest pid (a
    container's init, usually). Processes that vanish are skipped."""
    found: dict[int, int] = {}
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            inode = namespace_inode(os.readlink(f"{proc}/{entry}/ns/mnt"))
        except OSError:
            continue
        pid = int(entry)
        if inode is not None and (inode not in found or pid < found[inode]):
            found[inode] = pid
    return found


def find_repairs(view: LiveView, skip: set[int], proc: str = "/proc") -> list[Repair]:
    """The namespaces (except those in ``skip``) whose mount table holds
    stale binds of ``view``."""
    repairs = []
    for inode, pid in sorted(mount_namespaces(proc).items()):
        if inode in skip:
            continue
        try:
            with open(f"{proc}/{pid}/mountinfo") as f:
                text = f.read()
        except OSError:
            continue  # the process is gone: so is the namespace, or another pid will show it next time
        if not may_hold_stale_binds(text):
            continue
        binds = stale_binds(parse_mountinfo(text), view)
        if binds:
            repairs.append(Repair(inode, pid, binds))
    return repairs


def never_entered(proc: str = "/proc") -> set[int]:
    """The namespaces never to enter: the daemon's own (its mounts are its
    own business: ``prepare_mountpoint``) and the host's, pid 1's."""
    inodes = set()
    for pid in ("self", "1"):
        try:
            inode = namespace_inode(os.readlink(f"{proc}/{pid}/ns/mnt"))
        except OSError:
            continue
        if inode is not None:
            inodes.add(inode)
    return inodes


def describe_process(pid: int, proc: str = "/proc") -> str:
    """``pid 4242 (nginx), cgroup /system.slice/docker-1f2e....scope``:
    what names a container in a log line, whatever started it."""
    from procview.cgroups import parse_proc_cgroup

    try:
        with open(f"{proc}/{pid}/comm") as f:
            comm = f.read().strip()
        with open(f"{proc}/{pid}/cgroup") as f:
            lines = parse_proc_cgroup(f.read())
    except OSError:
        return f"pid {pid} (gone)"
    # The memory controller's cgroup (v1, hybrid), else the unified one's (v2):
    # on a hybrid host, the unified hierarchy may hold no container at all.
    paths = [line.path for line in lines if "memory" in line.controllers] or [line.path for line in lines if not line.controllers]
    return f"pid {pid} ({comm}), cgroup {paths[0] if paths else '?'}"


class Reattacher:
    """The daemon's part: scan, hand the namespaces to a child, log what it
    did. Remembers what it failed at (logged once, never retried: the
    failure is the container's state, and retrying could stack mounts) and
    binds that answered (another daemon's: checked again after a while)."""

    # The child: a fresh interpreter (-P: the daemon's working directory must
    # not shadow the package).
    CHILD = (sys.executable, "-P", "-m", "procview.reattach")

    def __init__(self, view: LiveView, proc: str = "/proc", child: tuple[str, ...] = CHILD, timeout: float = REPAIR_TIMEOUT):
        self.view = view
        self.proc = proc
        self.child = child
        self.timeout = timeout
        self._failed: set[tuple[int, int]] = set()  # (namespace inode, mount id)
        self._answering: dict[tuple[int, int], float] = {}  # (inode, mount id) -> when to check again
        self.unsupported = False  # the kernel has no open_tree (before 5.2): no scans any more

    def plan(self) -> list[Repair]:
        """The repairs to hand to the child now (a scan of /proc)."""
        if self.unsupported:
            return []
        now = time.monotonic()
        self._answering = {key: until for key, until in self._answering.items() if until > now}
        plan = []
        for repair in find_repairs(self.view, never_entered(self.proc), self.proc):
            binds = [bind for bind in repair.binds
                     if (repair.inode, bind.mount_id) not in self._failed and (repair.inode, bind.mount_id) not in self._answering]
            if binds:
                plan.append(repair._replace(binds=binds))
        return plan

    async def run_once(self) -> bool:
        """One scan and, if it found anything, one child to repair it;
        whether it found anything."""
        import trio

        started = time.monotonic()
        plan = self.plan()
        log.debug("reattach: scanned /proc in %.1f ms, %d mount namespace(s) to check",
                  (time.monotonic() - started) * 1000, len(plan))
        if not plan:
            return False
        request = json.dumps({"view": self.view.mountpoint, "namespaces": [repair.to_json() for repair in plan]}).encode()
        # The child's lines go to a file, not a pipe: what it did before a
        # hang or a crash is still there to read.
        with tempfile.TemporaryFile() as results:
            with trio.move_on_after(self.timeout) as timeout:
                child = await trio.run_process(self.child, stdin=request, stdout=results, capture_stderr=True, check=False)
            results.seek(0)
            output = results.read().decode(errors="replace")
        reported = set()
        for line in output.splitlines():
            try:
                outcome = json.loads(line)
                self._report(outcome)
                reported.add(outcome["inode"])
            except (ValueError, KeyError, TypeError):
                log.warning("reattach: unexpected output from the repair: %r", line)
        if timeout.cancelled_caught:
            reason = f"the repair did not finish within {self.timeout:g} s"
        elif child.returncode != 0:
            last = (child.stderr.decode(errors="replace").strip().splitlines() or ["no message"])[-1]
            reason = f"the repair failed (exit {child.returncode}): {last}"
        else:
            return True
        for repair in plan:
            if repair.inode not in reported:
                self._report({"inode": repair.inode, "pid": repair.pid, "gone": False, "entered": False, "answering": [],
                              "repaired": [], "failed": [(bind.mount_id, bind.mountpoint, None, reason) for bind in repair.binds]})
        return True

    def _report(self, outcome: dict) -> None:
        inode, pid = outcome["inode"], outcome["pid"]
        where = f"mount namespace mnt:[{inode}]"
        if outcome["gone"]:
            log.debug("reattach: %s (pid %d) is gone", where, pid)
            return
        for mount_id, mountpoint in outcome["answering"]:
            self._answering[(inode, mount_id)] = time.monotonic() + ANSWERING_RECHECK
            log.debug("reattach: %s (pid %d): %s answers (another daemon's connection): left alone",
                      where, pid, mountpoint)
        if outcome["entered"]:
            log.debug("reattach: entered %s (pid %d)", where, pid)
        if outcome["repaired"]:
            log.info("re-attached the view in %s (%s): %s", where, describe_process(pid, self.proc),
                     ", ".join(outcome["repaired"]))
        failures: dict[str, list[str]] = {}  # reason -> mount points: one line per namespace
        for mount_id, mountpoint, number, reason in outcome["failed"]:
            if number == errno.ENOSYS and not self.unsupported:
                self.unsupported = True
                log.warning("this kernel cannot re-attach the view in containers (open_tree and move_mount: "
                            "Linux 5.2 or later): their binds of a previous daemon stay dead until they restart")
            if self.unsupported:
                return
            self._failed.add((inode, mount_id))
            failures.setdefault(reason, []).append(mountpoint)
        if failures:
            log.warning("cannot re-attach the view in %s (%s): %s", where, describe_process(pid, self.proc),
                        "; ".join(f"{', '.join(points)}: {reason}" for reason, points in failures.items()))


# -- the child's side: enter and replace (syscalls) --------------------------------


DEAD_ERRNOS = (errno.ENOTCONN, errno.ECONNABORTED)  # a FUSE connection whose daemon is gone, or aborted


def connection_answers(path: str) -> bool | None:
    """Whether the FUSE mount reached through ``path`` answers: True, False
    (dead), None (cannot tell: the path is gone or unreachable)."""
    try:
        os.statvfs(path)  # stat may be answered from the kernel's cache; statfs always asks
    except OSError as exc:
        return False if exc.errno in DEAD_ERRNOS else None
    return True


def replace(linux, clone: int, bind: Mount) -> None:
    """Put the detached mount ``clone`` in the place of ``bind`` (in the
    current namespace): beneath it, then the dead one goes."""
    detach = kernel.MNT_DETACH | kernel.UMOUNT_NOFOLLOW
    try:
        linux.move_mount(clone, bind.mountpoint, kernel.MOVE_MOUNT_BENEATH)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        # Before Linux 6.5 (or where a mount cannot go beneath): detach,
        # then attach. In between, the container sees what is below.
        linux.umount2(bind.mountpoint, detach)
        linux.move_mount(clone, bind.mountpoint)
        return
    linux.umount2(bind.mountpoint, detach)


CLONE_FLAGS = kernel.OPEN_TREE_CLONE | kernel.OPEN_TREE_CLOEXEC | kernel.AT_SYMLINK_NOFOLLOW


def clone_like(linux, view_mountpoint: str, bind: Mount) -> tuple[int, bool]:
    """A detached clone of the live mount's path for ``bind``, with the
    bind's options; and whether they still need a remount after attaching
    it (no ``mount_setattr``: Linux before 5.12)."""
    # Never through a symlink: the clone is the path named, inside the view.
    fd = linux.open_tree(clone_source(view_mountpoint, bind.root), CLONE_FLAGS)
    try:
        linux.mount_setattr(fd, *mount_attributes(bind.options))
    except OSError as exc:
        if exc.errno != errno.ENOSYS:
            os.close(fd)
            raise
        return fd, True
    return fd, False


def repair_namespace(linux, view_mountpoint: str, repair: Repair, home: int, proc: int) -> dict:
    """Repair one namespace (see the module's docstring, step 2). ``home``:
    an fd of the child's own mount namespace, to come back to; ``proc``: an
    fd of the host's /proc (inside, /proc is the container's)."""
    outcome = {"inode": repair.inode, "pid": repair.pid, "gone": False, "entered": False, "answering": [],
               "repaired": [], "failed": []}
    try:
        namespace = os.open(f"/proc/{repair.pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        root = os.open(f"/proc/{repair.pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        outcome["gone"] = True
        return outcome
    clones: dict[int, tuple[Mount, int, bool]] = {}
    try:
        if os.fstat(namespace).st_ino != repair.inode:
            outcome["gone"] = True  # the pid was reused
            return outcome
        for bind in repair.binds:
            answers = connection_answers(f"/proc/{repair.pid}/root{bind.mountpoint}")
            if answers:
                outcome["answering"].append((bind.mount_id, bind.mountpoint))
            elif answers is False:
                try:
                    clones[bind.mount_id] = (bind, *clone_like(linux, view_mountpoint, bind))
                except OSError as exc:
                    outcome["failed"].append((bind.mount_id, bind.mountpoint, exc.errno, f"cloning the live view: {exc.strerror}"))
        if not clones:
            return outcome  # no dead bind: never entered
        outcome["entered"] = True
        linux.setns(namespace, kernel.CLONE_NEWNS)
        try:
            os.fchdir(root)
            os.chroot(".")  # paths as the pid sees them, as its mountinfo writes them
            with open(f"{os.getpid()}/mountinfo", opener=lambda path, flags: os.open(path, flags, dir_fd=proc)) as f:
                mounts = parse_mountinfo(f.read())
            for bind, clone, remount in clones.values():
                if not still_stale(mounts, bind):
                    continue  # changed since the scan: the next scan sees what is there now
                try:
                    replace(linux, clone, bind)
                    if remount:
                        linux.mount(None, bind.mountpoint, None, remount_flags(bind.options))
                except OSError as exc:
                    outcome["failed"].append((bind.mount_id, bind.mountpoint, exc.errno, exc.strerror or str(exc)))
                else:
                    outcome["repaired"].append(bind.mountpoint)
        finally:
            linux.setns(home, kernel.CLONE_NEWNS)  # back to the daemon's namespace and root
    finally:
        for _bind, clone, _remount in clones.values():
            os.close(clone)
        os.close(namespace)
        os.close(root)
    return outcome


def main() -> int:
    """The child: a plan on stdin, one JSON line per namespace on stdout."""
    plan = json.load(sys.stdin)
    linux = kernel.Linux()
    home = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    proc = os.open("/proc", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    for item in plan["namespaces"]:
        outcome = repair_namespace(linux, plan["view"], Repair.from_json(item), home, proc)
        print(json.dumps(outcome), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
