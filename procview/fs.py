"""The FUSE filesystem: LXCFS's layout, served from the view engine.

::

    MOUNT/proc/{meminfo,cpuinfo,stat,uptime,loadavg,swaps,diskstats}   virtual
    MOUNT/sys/devices/system/cpu/      the host's directory, seen through the caller's CPU view:
        online, possible, present      virtual, "0-(n-1)"; offline is empty
        cpu0 .. cpu{n-1}               the host's cpu<real> directories, renumbered
        everything else                passed through
    MOUNT/sys/devices/system/node/     the host's directory, the container shown as one node:
        online, possible, has_*        "0"
        node0/                         the host's node0 passed through, with
            meminfo                    virtual (the container's memory)
            cpulist, cpumap            the CPU view
            cpu0 .. cpu{n-1}           symlinks to ../../cpu/cpuN
        node1 ...                      hidden

What a name means can depend on who asks (``cpu0`` is host CPU 1 for a
container pinned to CPU 1), so those lookups are never cached by the kernel
(``entry_timeout`` 0) and every open binds its content to the caller
(``ctx.pid``) as one snapshot: a reader sees one consistent file whatever
its offsets and chunk sizes. Writes of any kind get EROFS; unknown names
ENOENT. Virtual files are 0444; passed-through files keep the host's owner
and mode, and the mount uses ``default_permissions`` so the kernel enforces
them (nothing root-only on the host becomes readable to others).
"""

from __future__ import annotations

import array
import errno
import itertools
import logging
import os
import re
import stat as statmod
from typing import NamedTuple

import pyfuse3

from procview._io import read_bytes
from procview.cgroups import format_cpulist
from procview.engine import ViewEngine
from procview.views.cpuview import CpuView

log = logging.getLogger(__name__)

CPU_DIR = "sys/devices/system/cpu"
NODE_DIR = "sys/devices/system/node"

# Host directories whose entries the view renames or hides; below them,
# host directories are passed through by path.
_MAPPED_DIRS = (CPU_DIR, NODE_DIR, f"{NODE_DIR}/node0")

# Directories of the mount that are ours alone (not the host's).
_VIRTUAL_DIRS = ("", "proc", "sys", "sys/devices", "sys/devices/system")
_PROC_FILES = ("meminfo", "cpuinfo", "stat", "uptime", "loadavg", "swaps", "diskstats")

_CPU_NAME = re.compile(r"^cpu(\d+)$")
_NODE_NAME = re.compile(r"^node(\d+)$")

# The kernel may cache names that mean the same to every caller; names in
# the CPU and node directories depend on the caller and are never cached.
_STABLE_TIMEOUT = 60.0
_CALLER_DEPENDENT_TIMEOUT = 0.0


class Entry(NamedTuple):
    """What one path of the mount is, for one caller.

    ``kind``: "dir" (ours), "file" (virtual, rendered by the engine),
    "text" (virtual, fixed text computed from the CPU view), "host" (the
    host's file or directory at ``host_path``), or "link" (a symlink to
    ``text``). ``vpath``: the path inside the mount.
    """

    kind: str
    vpath: str
    host_path: str | None = None
    text: str | None = None

    @property
    def key(self) -> tuple:
        """Inode identity: host entries by their host path (cpu0 of one
        caller and cpu1 of another can be the same directory)."""
        if self.kind == "host":
            return ("host", self.host_path)
        return (self.kind, self.vpath, self.text)


def _join(parent: str, name: str) -> str:
    if not name:
        return parent
    return f"{parent}/{name}" if parent else name


class ViewTree:
    """Maps mount paths to entries through a caller's CPU view (pure
    except for listing host directories, which ``list_host`` does)."""

    def __init__(self, host_root: str = "/"):
        self.host_root = host_root

    def host(self, path: str) -> str:
        return os.path.join(self.host_root, path)

    def resolve(self, vpath: str, view: CpuView) -> Entry | None:
        """The entry at ``vpath`` for a caller with ``view``; None if absent."""
        if vpath in _VIRTUAL_DIRS or vpath == "proc":
            return Entry("dir", vpath)
        if vpath.startswith("proc/"):
            return Entry("file", vpath) if vpath[5:] in _PROC_FILES else None
        for top, resolver in ((CPU_DIR, self._resolve_cpu), (NODE_DIR, self._resolve_node)):
            if vpath == top:
                return Entry("host", vpath, self.host(top))
            if vpath.startswith(top + "/"):
                return resolver(vpath, vpath[len(top) + 1:].split("/"), view)
        return None

    def _resolve_cpu(self, vpath: str, parts: list[str], view: CpuView) -> Entry | None:
        name = parts[0]
        if len(parts) == 1 and name in ("online", "possible", "present"):
            return Entry("file", vpath)
        if len(parts) == 1 and name == "offline":
            return Entry("text", vpath, text="\n")  # possible == online: nothing is offline
        match = _CPU_NAME.match(name)
        if match:
            index = int(match.group(1))
            if index >= view.count:
                return None
            real = _join(f"cpu{view.cpus[index]}", "/".join(parts[1:]))
            return self._host_entry(vpath, f"{CPU_DIR}/{real}")
        return self._host_entry(vpath, f"{CPU_DIR}/{'/'.join(parts)}")

    def _resolve_node(self, vpath: str, parts: list[str], view: CpuView) -> Entry | None:
        name = parts[0]
        if len(parts) == 1 and name in ("online", "possible", "has_cpu", "has_memory", "has_normal_memory"):
            return Entry("text", vpath, text="0\n")
        match = _NODE_NAME.match(name)
        if match:
            if match.group(1) != "0":
                return None  # the container is one node
            host_node = self._first_host_node()
            if host_node is None:
                return None
            if len(parts) == 1:
                return Entry("host", vpath, self.host(f"{NODE_DIR}/{host_node}"))
            return self._resolve_node0(vpath, parts[1:], view, host_node)
        return self._host_entry(vpath, f"{NODE_DIR}/{'/'.join(parts)}")

    def _resolve_node0(self, vpath: str, parts: list[str], view: CpuView, host_node: str) -> Entry | None:
        name = parts[0]
        if len(parts) == 1:
            if name == "meminfo":
                return Entry("file", vpath)
            if name == "cpulist":
                return Entry("text", vpath, text=view.online + "\n")
            if name == "cpumap":
                return Entry("text", vpath, text=_cpumask(view.count) + "\n")
            match = _CPU_NAME.match(name)
            if match:
                return Entry("link", vpath, text=f"../../cpu/{name}") if int(match.group(1)) < view.count else None
        return self._host_entry(vpath, f"{NODE_DIR}/{host_node}/{'/'.join(parts)}")

    def _first_host_node(self) -> str | None:
        try:
            nodes = sorted((n for n in os.listdir(self.host(NODE_DIR)) if _NODE_NAME.match(n)), key=lambda n: int(n[4:]))
        except OSError:
            return None
        return nodes[0] if nodes else None

    def _host_entry(self, vpath: str, host_rel: str) -> Entry | None:
        path = self.host(host_rel)
        return Entry("host", vpath, path) if os.path.lexists(path) else None

    def child(self, parent: Entry, name: str, view: CpuView) -> Entry | None:
        """The entry ``name`` in directory ``parent``. Below the directories
        the view maps (cpu/, node/, node0/) a host directory is passed
        through by its host path: ``cpu0/topology`` is the topology of
        whichever host CPU ``cpu0`` is for this inode, whoever asks."""
        if parent.kind == "host" and parent.vpath not in _MAPPED_DIRS:
            path = os.path.join(parent.host_path, name)
            return Entry("host", _join(parent.vpath, name), path) if os.path.lexists(path) else None
        return self.resolve(_join(parent.vpath, name), view)

    def list_dir(self, entry: Entry, view: CpuView) -> list[tuple[str, Entry]]:
        """The (name, entry) pairs of directory ``entry``, sorted by name."""
        vpath = entry.vpath
        if entry.kind == "dir":
            if vpath == "":
                names = ["proc", "sys"]
            elif vpath == "proc":
                names = list(_PROC_FILES)
            elif vpath == "sys":
                names = ["devices"]
            elif vpath == "sys/devices":
                names = ["system"]
            else:
                names = ["cpu", "node"]
        else:
            names = self._host_names(entry, view)
        result = []
        for name in sorted(set(names)):
            child = self.child(entry, name, view)
            if child is not None:
                result.append((name, child))
        return result

    def _host_names(self, entry: Entry, view: CpuView) -> list[str]:
        try:
            names = os.listdir(entry.host_path)
        except OSError:
            return []
        if entry.vpath == CPU_DIR:
            names = [n for n in names if not _CPU_NAME.match(n)] + [f"cpu{i}" for i in range(view.count)]
            names += ["online", "possible", "present", "offline"]
        elif entry.vpath == NODE_DIR:
            names = [n for n in names if not _NODE_NAME.match(n)] + ["node0"]
        elif entry.vpath == f"{NODE_DIR}/node0":
            names = [n for n in names if not _CPU_NAME.match(n)] + [f"cpu{i}" for i in range(view.count)]
            names += ["meminfo", "cpulist", "cpumap"]
        return names


def _cpumask(count: int) -> str:
    """A sysfs CPU mask (``cpumap``): hex, in comma-separated 32-bit words."""
    value = (1 << count) - 1
    words = []
    while True:
        words.append(f"{value & 0xFFFFFFFF:08x}")
        value >>= 32
        if not value:
            break
    return ",".join(reversed(words))


class OpenFiles:
    """The files open through the mount, by file handle: each one's
    snapshot, and what it takes to render it again (its entry and inode,
    the pid that opened it; ``started``: a read at offset 0 has been
    served, so the next read at 0 starts a new snapshot).

    Kept in tables indexed by the handle, not as an object per open file.
    The kernel sends RELEASE as a background request, a dozen in flight at
    a time, so while many readers keep the daemon busy it holds thousands
    of files their readers have closed (17,940 with 1,000 containers in
    ``bench/scale.py``). An object, a handle and a pid per file took ~150
    bytes each from Python's small-object allocator, whose 1 MiB arenas
    are given back only when wholly empty, and a few objects allocated
    later keep most of them from ever being so (docs/performance.md,
    "Scale"). The tables are one allocation each, dropped when the last
    file is released after a burst; a released handle is handed out again."""

    # Tables longer than this are made anew when the last file is released.
    SMALL = 64

    def __init__(self):
        self._start_afresh()

    def _start_afresh(self) -> None:
        # Handles start at 1: slot 0 is never used.
        self.data: list[bytes | None] = [None]
        self.entries: list[Entry | None] = [None]
        self.inodes = array.array("Q", [0])
        self.pids = array.array("i", [0])
        self.started = bytearray(1)
        self._released = array.array("L")
        self._count = 0

    def add(self, inode: int, entry: Entry, pid: int, data: bytes) -> int:
        """A new open file; returns its handle."""
        self._count += 1
        if self._released:
            fh = self._released.pop()
            self.data[fh], self.entries[fh], self.inodes[fh], self.pids[fh] = data, entry, inode, pid
            return fh
        self.data.append(data)
        self.entries.append(entry)
        self.inodes.append(inode)
        self.pids.append(pid)
        self.started.append(0)
        return len(self.data) - 1

    def snapshot(self, fh: int) -> bytes | None:
        """The open file's snapshot, None if ``fh`` is not open."""
        return self.data[fh] if 0 < fh < len(self.data) else None

    def release(self, fh: int) -> None:
        if self.snapshot(fh) is None:
            return
        self.data[fh] = self.entries[fh] = None
        self.started[fh] = 0
        self._count -= 1
        if self._count == 0 and len(self.data) > self.SMALL:
            self._start_afresh()  # the end of a burst: tables as small as before it
        else:
            self._released.append(fh)

    def __len__(self) -> int:
        return self._count


class ProcviewFS(pyfuse3.Operations):
    """pyfuse3 operations over a ViewTree and a ViewEngine."""

    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, engine: ViewEngine, tree: ViewTree | None = None):
        super().__init__()
        self.engine = engine
        self.tree = tree or ViewTree(engine.host.root)
        # Inodes are handed out once per distinct entry and never reused, so
        # a stale kernel reference can never point at another file. The
        # table is bounded by the number of distinct paths served (the proc
        # files plus the cpu and node trees of sysfs).
        self._inodes: dict[tuple, int] = {}
        self._entries: dict[int, Entry] = {pyfuse3.ROOT_INODE: Entry("dir", "")}
        self._inodes[Entry("dir", "").key] = pyfuse3.ROOT_INODE
        self._next_inode = itertools.count(pyfuse3.ROOT_INODE + 1)
        self._next_dir_fh = itertools.count(1)
        self._open_files = OpenFiles()
        self._open_dirs: dict[int, list[tuple[str, Entry]]] = {}

    # -- inodes and attributes ---------------------------------------------------

    def _inode(self, entry: Entry) -> int:
        inode = self._inodes.get(entry.key)
        if inode is None:
            inode = next(self._next_inode)
            self._inodes[entry.key] = inode
            self._entries[inode] = entry
        return inode

    def _entry(self, inode: int) -> Entry:
        entry = self._entries.get(inode)
        if entry is None:
            raise self._error(errno.ENOENT)
        return entry

    def _attributes(self, inode: int, entry: Entry) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = inode
        attr.generation = 0
        timeout = _CALLER_DEPENDENT_TIMEOUT if is_caller_dependent(entry.vpath) else _STABLE_TIMEOUT
        attr.entry_timeout = timeout
        attr.attr_timeout = timeout
        if entry.kind == "host":
            try:
                st = os.lstat(entry.host_path)
            except OSError as exc:
                raise self._error(exc.errno or errno.ENOENT) from None
            for name in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_atime_ns", "st_mtime_ns", "st_ctime_ns"):
                setattr(attr, name, getattr(st, name))
            # No write bit ever: the view is read-only.
            attr.st_mode &= ~(statmod.S_IWUSR | statmod.S_IWGRP | statmod.S_IWOTH)
        else:
            if entry.kind == "dir":
                attr.st_mode = statmod.S_IFDIR | 0o555
                attr.st_nlink = 2
            elif entry.kind == "link":
                attr.st_mode = statmod.S_IFLNK | 0o777
                attr.st_nlink = 1
                attr.st_size = len(entry.text or "")
            else:
                attr.st_mode = statmod.S_IFREG | 0o444
                attr.st_nlink = 1
                attr.st_size = 0  # like /proc: the size is known only when read
            attr.st_uid = attr.st_gid = 0
        attr.st_blksize = 4096
        return attr

    def _error(self, code: int) -> pyfuse3.FUSEError:
        """The error a request is answered with (``metrics.MeteredFS``
        counts them here: only failing requests come this way)."""
        return pyfuse3.FUSEError(code)

    def _view(self, pid: int) -> CpuView:
        return self.engine.cpu_view(pid)

    # -- lookups -------------------------------------------------------------

    async def lookup(self, parent_inode, name, ctx):
        parent = self._entry(parent_inode)
        name_str = os.fsdecode(name)
        if name_str == ".":
            return await self.getattr(parent_inode, ctx)
        if "/" in name_str or name_str == "..":
            raise self._error(errno.ENOENT)
        vpath = _join(parent.vpath, name_str)
        view = self._view(ctx.pid) if is_caller_dependent(vpath) else _NO_VIEW
        entry = self.tree.child(parent, name_str, view)
        if entry is None:
            raise self._error(errno.ENOENT)
        inode = self._inode(entry)
        return self._attributes(inode, entry)

    async def getattr(self, inode, ctx=None):
        return self._attributes(inode, self._entry(inode))

    async def readlink(self, inode, ctx):
        entry = self._entry(inode)
        if entry.kind == "link":
            return os.fsencode(entry.text)
        if entry.kind == "host":
            try:
                return os.fsencode(os.readlink(entry.host_path))
            except OSError as exc:
                raise self._error(exc.errno or errno.EINVAL) from None
        raise self._error(errno.EINVAL)

    async def forget(self, inode_list):
        return  # inodes are never reused (see __init__)

    async def statfs(self, ctx):
        stats = pyfuse3.StatvfsData()
        stats.f_bsize = stats.f_frsize = 4096
        stats.f_namemax = 255
        return stats

    # -- directories -------------------------------------------------------------

    async def opendir(self, inode, ctx):
        entry = self._entry(inode)
        if entry.kind not in ("dir", "host"):
            raise self._error(errno.ENOTDIR)
        if entry.kind == "host" and not os.path.isdir(entry.host_path):
            raise self._error(errno.ENOTDIR)
        # The listing depends on the caller: take it now, while we know who asks.
        fh = next(self._next_dir_fh)
        self._open_dirs[fh] = self.tree.list_dir(entry, self._view(ctx.pid))
        return fh

    async def readdir(self, fh, start_id, token):
        listing = self._open_dirs.get(fh)
        if listing is None:
            raise self._error(errno.EBADF)
        # The offset of an entry is its index + 1 in a listing fixed at opendir.
        for index in range(start_id, len(listing)):
            name, entry = listing[index]
            try:
                attr = self._attributes(self._inode(entry), entry)
            except pyfuse3.FUSEError:
                continue  # vanished from the host since the listing was taken
            if not pyfuse3.readdir_reply(token, os.fsencode(name), attr, index + 1):
                break

    async def releasedir(self, fh):
        self._open_dirs.pop(fh, None)

    # -- files -------------------------------------------------------------------

    async def open(self, inode, flags, ctx):
        entry = self._entry(inode)
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise self._error(errno.EROFS)
        if entry.kind == "dir":
            raise self._error(errno.EISDIR)
        # One snapshot per open, rendered for this caller.
        data = self._snapshot(entry, ctx.pid)
        fh = self._open_files.add(inode, entry, ctx.pid, data)
        _announce_size(inode, data)
        return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False)

    def _snapshot(self, entry: Entry, pid: int) -> bytes:
        """The file's text as ``pid`` sees it now (one render)."""
        if entry.kind == "file":
            return self.engine.render(entry.vpath, pid)
        if entry.kind == "text":
            return (entry.text or "").encode()
        if entry.kind == "host":
            # A host directory never gets here (the kernel sends OPENDIR for
            # it), unless the host replaced a file by one since the lookup:
            # EISDIR then.
            try:
                return read_bytes(entry.host_path)
            except OSError as exc:
                raise self._error(exc.errno or errno.EIO) from None
        raise self._error(errno.ELOOP)

    async def read(self, fh, off, size):
        files = self._open_files
        data = files.snapshot(fh)
        if data is None:
            raise self._error(errno.EBADF)
        if off == 0:
            if files.started[fh]:
                # A reader that goes back to the start of a file it keeps
                # open (top, free -s, vmstat N: pread at 0, or lseek + read)
                # asks for the numbers again, as it would from the kernel's
                # /proc: a fresh snapshot, rendered for whoever opened it.
                # Reads past 0 continue one snapshot, never a mix of two.
                data = files.data[fh] = self._snapshot(files.entries[fh], files.pids[fh])
                _announce_size(files.inodes[fh], data)
            files.started[fh] = 1
        return data[off:off + size]

    async def release(self, fh):
        self._open_files.release(fh)

    async def flush(self, fh):
        # ENOSYS tells the kernel never to send FLUSH again: one request
        # less on every close.
        raise pyfuse3.FUSEError(errno.ENOSYS)

    # -- everything that would change something ----------------------------------

    async def setattr(self, inode, attr, fields, fh, ctx):
        raise self._error(errno.EROFS)

    async def write(self, fh, off, buf):
        raise self._error(errno.EROFS)

    async def create(self, parent_inode, name, mode, flags, ctx):
        raise self._error(errno.EROFS)

    async def mkdir(self, parent_inode, name, mode, ctx):
        raise self._error(errno.EROFS)

    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        raise self._error(errno.EROFS)

    async def unlink(self, parent_inode, name, ctx):
        raise self._error(errno.EROFS)

    async def rmdir(self, parent_inode, name, ctx):
        raise self._error(errno.EROFS)

    async def symlink(self, parent_inode, name, target, ctx):
        raise self._error(errno.EROFS)

    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        raise self._error(errno.EROFS)

    async def link(self, inode, new_parent_inode, new_name, ctx):
        raise self._error(errno.EROFS)

    async def setxattr(self, inode, name, value, ctx):
        raise self._error(errno.EROFS)

    async def removexattr(self, inode, name, ctx):
        raise self._error(errno.EROFS)


# A view for paths that do not depend on the caller (saves the identity work).
_NO_VIEW = CpuView((), 0.0, False)


def is_caller_dependent(vpath: str) -> bool:
    """Whether the name ``vpath`` means something different to different
    callers: the ``cpuN`` entries of cpu/ and node0/, and node0's CPU list
    and mask. The kernel must never cache these (entry timeout 0); every
    other name of the mount means the same to everyone and is cached."""
    parent, _, name = vpath.rpartition("/")
    if parent == CPU_DIR:
        return _CPU_NAME.match(name) is not None
    if parent == f"{NODE_DIR}/node0":
        return _CPU_NAME.match(name) is not None or name in ("cpulist", "cpumap")
    return False


def _announce_size(inode: int, data: bytes) -> None:
    """Make the kernel's idea of the file's size at least ``len(data)``.

    read() on a direct_io file ignores the size, but sendfile() and
    splice() (busybox ``cat`` uses sendfile) go through the page cache,
    which stops at the inode's size: with a size of 0 they read nothing.
    Storing the snapshot's last byte at its offset grows the size (the
    kernel drops the stored page when the open completes, since we do not
    keep the cache); a short read shrinks it back to the real end. The size
    is per inode, not per open: a sendfile reader racing another
    container's open of the same file can see the other's length (see
    docs/serve.md).
    """
    if not data:
        return
    try:
        pyfuse3.notify_store(inode, len(data) - 1, data[-1:])
    except OSError as exc:
        log.debug("notify_store(%d) failed: %s", inode, exc)


__all__ = ["ProcviewFS", "ViewTree", "Entry", "format_cpulist"]
