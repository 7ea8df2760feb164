"""Reading kernel files, the one way every module does it.

``/proc``, ``/sys`` and cgroup files are small and read whole, thousands
of times a second by the daemon: plain ``os.open``/``os.read`` costs a few
microseconds where Python's buffered text files cost several times more.
"""

from __future__ import annotations

import array
import os
import sys

_CHUNK = 65536


def read_bytes(path: str) -> bytes:
    """The file's whole content; raises OSError (a passed-through file's
    error goes back to its reader as it is)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(fd, _CHUNK)
        # Kernel files may come in several reads; the end is an empty read.
        if data:
            chunks = [data]
            while chunk := os.read(fd, _CHUNK):
                chunks.append(chunk)
            data = b"".join(chunks) if len(chunks) > 1 else data
        return data
    finally:
        os.close(fd)


def read_text(path: str) -> str | None:
    """The file's whole text, or None if it cannot be read (missing,
    permission, a process or cgroup that vanished, not UTF-8)."""
    try:
        return read_bytes(path).decode()
    except (OSError, UnicodeDecodeError):
        return None


def replace_file(path: str, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all: into ``path.new``,
    then renamed over ``path``, so a reader sees the old text or the new,
    never part of one. (Not durable: no fsync; for state that a crash may
    lose but never garble.)"""
    with open(path + ".new", "w") as f:
        f.write(text)
    os.rename(path + ".new", path)


def remove_file(path: str) -> None:
    """Unlink ``path``; nothing if it is gone already."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def remove_tree(path: str) -> None:
    """Remove a directory tree, ignoring errors, like ``shutil.rmtree(path,
    ignore_errors=True)``: bottom up, through directory fds, symlinks
    removed and never followed.

    Not shutil itself: importing it loads the zlib, bz2 and lzma libraries,
    ~4 ms of every ``procview run`` (docs/performance.md), which removes a
    container's directory at its end."""
    try:
        for _, dirs, files, dir_fd in os.fwalk(path, topdown=False):
            for name in files:
                _ignoring_errors(os.unlink, name, dir_fd=dir_fd)
            for name in dirs:  # a symlink to a directory is listed here too
                if not _ignoring_errors(os.rmdir, name, dir_fd=dir_fd):
                    _ignoring_errors(os.unlink, name, dir_fd=dir_fd)
    except OSError:  # ``path`` itself is missing or unreadable
        return
    _ignoring_errors(os.rmdir, path)


def _ignoring_errors(call, *args, **kwargs) -> bool:
    try:
        call(*args, **kwargs)
        return True
    except OSError:
        return False


class CounterFile:
    """A kernel file that holds one number, kept open and re-read with
    ``pread`` at offset 0 (which makes the kernel render it afresh).

    For the hottest read of the daemon, a cgroup's RAM usage on every
    intercepted ``sysinfo``: opening a cgroup file costs ~20 µs here (the
    path walk through kernfs), re-reading an open one ~3 µs."""

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    def read(self) -> int | None:
        """The number now, or None (the cgroup was removed: ENODEV)."""
        try:
            return int(os.pread(self.fd, 64, 0))
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class KeptFiles:
    """Kernel files kept open and re-read with ``pread`` from offset 0,
    which makes the kernel render them afresh (a seq_file restarts at
    offset 0): the same text as ``read_text``, without the path walk, open
    and close of every read (for a cgroup's ``memory.usage_in_bytes``
    ~7 µs a read becomes ~1 µs here, for ``memory.stat`` ~14 µs becomes ~7).

    A file is named by its path (``read``: the host's files, /proc/meminfo,
    /proc/TID/stat), or by a *tree*, a *key* in it and the file's name
    (``read_in``: a cgroup's counters, by its hierarchy's ``CgroupTree``,
    the cgroup's path and the file's name). A tree is any hashable object
    whose ``directory(key)`` says where the key's directory is; it is asked
    only when a file must be opened, or checked by ``close_stale``.

    Only for files of the kernel's pseudo file systems (proc, cgroupfs):
    a kept fd follows the *file*, not the path, which is what a removed
    cgroup needs (its files fail with ENODEV, and the path is opened
    again, finding a new cgroup of the same name if there is one), but a
    regular file replaced by rename would keep its old text.

    At most ``limit`` files are kept (the key read least recently loses a
    file first, of its files the one procview ever read first: a cgroup's
    files in all its hierarchies, or a host directory's files, go
    together), so fds stay bounded however many containers come and go,
    and the host files every render reads are never the ones closed.
    Files whose directory is gone or was replaced are closed by
    ``close_stale``: an open file of a removed cgroup pins that cgroup in
    the kernel (a "dying" cgroup, with its memory) until it is closed."""

    def __init__(self, limit: int):
        from procview.columns import Columns  # here: columns.py imports this module

        self.limit = max(1, limit)
        # Every file procview reads has a number: its tree and name (the
        # few dozen kernel files procview reads, meminfo, memory.stat,
        # cpuacct.usage, ..., in each tree), numbered at its first read.
        # The host's files are in tree None, whose key is the directory.
        self._numbers: dict[object, dict[str, int]] = {}  # tree -> {name -> number}
        self._named: list[tuple[object, str]] = []  # number -> (tree, name)
        # The kept files, a table: a row per key, the keys in the order
        # they were read (least recently first), and two columns per file
        # number: ``fd<number>``, the file's fd in that key's directory (-1:
        # not kept), and ``inode<number>``, the inode the directory had when
        # the file was opened (a directory removed, or made again under the
        # same name, has another or none). A key is a string its owner
        # keeps anyway: a cgroup's path (one key for its files in every
        # hierarchy), a host file's directory. So a container's kept files
        # cost a dict entry and a slot's int, no object of their own: with
        # a thousand containers, every small object a burst of them leaves
        # behind can keep one of Python's 1 MiB arenas from being freed
        # (procview/columns.py).
        self._rows = Columns(files=("H", 0))  # files: how many the key keeps
        # The fd and inode columns by file number (the same arrays as the
        # rows': ``drop_spare_room`` packs them in place).
        self._fds: list[array.array] = []
        self._inodes: list[array.array] = []
        self._count = 0

    def read(self, path: str) -> str | None:
        """The file's whole text now, or None, as ``read_text``."""
        directory, _, name = path.rpartition("/")
        return self._read(None, directory, name, path)

    def read_in(self, tree, key: str, name: str) -> str | None:
        """The text of file ``name`` of directory ``tree.directory(key)``,
        as ``read``; kept under ``key`` (a string the caller keeps, as a
        cgroup keeps its path), so no directory string is kept."""
        return self._read(tree, key, name, None)

    def _read(self, tree, key: str, name: str, path: str | None) -> str | None:
        try:
            number = self._numbers[tree][name]
        except KeyError:
            number = self._number(tree, name)
        slot = self._rows.slot_as_latest(key)  # now the most recently read
        if slot >= 0:
            fd = self._fds[number][slot]
            if fd >= 0:
                text = _pread_text(fd)
                if text is not None:
                    return text
                # ENODEV (a removed cgroup), ESRCH (a process gone): the
                # kept file is dead; the path may name a new one.
                self._close_file(key, slot, number)
        directory = _directory_of(tree, key)
        if directory is None:  # a cgroup the tree's mount does not reach
            return None
        try:
            fd = os.open(path or directory + "/" + name, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        text = _pread_text(fd)
        if text is None:
            os.close(fd)
            return None
        if self._count >= self.limit:
            self._close_oldest()  # which may be the key's own row: its slot is asked for again
        slot = self._rows.slot_or_add(key)
        self._fds[number][slot] = fd
        # Stat'ed after the file was opened: if the directory was replaced
        # in between, the next close_stale closes a live file, which is
        # only opened again.
        self._inodes[number][slot] = _inode(directory)
        self._rows.files[slot] += 1
        self._count += 1
        return text

    def _number(self, tree, name: str) -> int:
        """The number of file ``name`` of ``tree``, given at its first read,
        and its two columns."""
        numbers = self._numbers.setdefault(tree, {})
        number = numbers[name] = len(self._named)
        self._named.append((tree, name))
        self._rows.add_column(f"fd{number}", "i", -1)
        self._rows.add_column(f"inode{number}", "q", _NO_INODE)
        self._take_columns()
        return number

    def _take_columns(self) -> None:
        rows = self._rows
        self._fds = [getattr(rows, f"fd{number}") for number in range(len(self._named))]
        self._inodes = [getattr(rows, f"inode{number}") for number in range(len(self._named))]

    def close_stale(self) -> int:
        """Close the kept files whose directory is gone or is another one
        now (one ``stat`` per key and tree); returns how many were closed.
        For periodic maintenance: reads never pay for it."""
        closed = 0
        emptied = []
        for key, slot in self._rows.items():
            inodes = {}  # tree -> the inode of its directory of ``key`` now
            for number, fds in enumerate(self._fds):
                if fds[slot] < 0:
                    continue
                tree = self._named[number][0]
                if tree not in inodes:
                    inodes[tree] = _inode(_directory_of(tree, key))
                inode = self._inodes[number][slot]
                if inode == _NO_INODE or inode != inodes[tree]:
                    os.close(fds[slot])
                    fds[slot] = -1
                    self._rows.files[slot] -= 1
                    closed += 1
            if not self._rows.files[slot]:
                emptied.append(key)
        for key in emptied:
            self._rows.remove(key)
        self._count -= closed
        # The rows and columns sized for the keys left (after a burst of
        # containers the arrays would keep their room).
        self._rows.drop_spare_room()
        return closed

    def _close_oldest(self) -> None:
        """Close the first kept file of the key read least recently."""
        key, slot = next(iter(self._rows.items()))
        number = next(number for number, fds in enumerate(self._fds) if fds[slot] >= 0)
        self._close_file(key, slot, number)

    def _close_file(self, key: str, slot: int, number: int) -> None:
        """Close file ``number`` of ``key`` (at ``slot``), and free the
        key's row if that was its last."""
        fds = self._fds[number]
        os.close(fds[slot])
        fds[slot] = -1
        self._count -= 1
        self._rows.files[slot] -= 1
        if not self._rows.files[slot]:
            self._rows.remove(key)

    def __len__(self) -> int:
        return self._count

    def paths(self) -> list[str]:
        """The kept files' paths, those of the key read least recently
        first."""
        return [
            f"{_directory_of(tree, key)}/{name}"
            for key, slot in self._rows.items()
            for number, fds in enumerate(self._fds) if fds[slot] >= 0
            for tree, name in (self._named[number],)
        ]

    def close(self) -> None:
        for _key, slot in self._rows.items():
            for fds in self._fds:
                if fds[slot] >= 0:
                    os.close(fds[slot])
        self._rows.clear()  # the columns emptied in place: self._fds still names them
        self._count = 0


_NO_INODE = -1  # a directory that could not be stat'ed: closed by the next close_stale


def _directory_of(tree, key: str) -> str | None:
    """The directory of ``key`` in ``tree``; tree None: ``key`` is one."""
    return key if tree is None else tree.directory(key)


def resized(table: dict) -> dict:
    """``table``, or a copy of it when the copy is smaller. A dict keeps
    the room it grew to after its entries are removed (~37 KB a table once
    it held a thousand containers, from ``malloc``, until the process
    ends); a copy is sized for what is left. For periodic maintenance:
    O(entries)."""
    copy = dict(table)
    return copy if sys.getsizeof(copy) < sys.getsizeof(table) else table


def _inode(path: str) -> int:
    """The inode number of ``path`` as a signed 64-bit number (the kept
    files' arrays hold int64; only equality matters), _NO_INODE if gone."""
    try:
        inode = os.stat(path).st_ino
    except OSError:
        return _NO_INODE
    return inode - (1 << 64) if inode >= 1 << 63 else inode


def _pread_text(fd: int) -> str | None:
    """The whole text of open file ``fd`` from offset 0, or None."""
    try:
        data = os.pread(fd, _CHUNK, 0)
        # As read_text: the end is an empty read (a seq_file at the offset
        # it stopped at continues the same rendering).
        if data:
            chunks, offset = [data], len(data)
            while chunk := os.pread(fd, _CHUNK, offset):
                chunks.append(chunk)
                offset += len(chunk)
            data = b"".join(chunks) if len(chunks) > 1 else data
        return data.decode()
    except (OSError, UnicodeDecodeError):
        return None


_malloc_trim = None  # glibc's malloc_trim, found on first use; False where there is none


def return_free_heap() -> None:
    """Give the C heap's free pages back to the kernel (glibc's
    ``malloc_trim(0)``, ~0.2 ms). A burst of readers leaves tens of MiB of
    freed snapshots in the heap, which glibc keeps mapped (and counted in
    RSS) unless asked; a no-op with another libc."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            import ctypes

            _malloc_trim = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


def raise_fd_limit() -> None:
    """Raise the soft limit on open files to the hard one. A daemon holds
    fds per container (listeners, kept files, runtimes' connections), and
    the soft limit (1024 under systemd, whose hard one is 524288) is sized
    for programs that use select(); procview's daemons poll."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard != resource.RLIM_INFINITY:  # Linux caps it at fs.nr_open anyway
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
