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
    """Kernel files kept open (by path, or by a cgroup's directory and the
    file's name) and re-read with ``pread`` from offset 0, which makes the
    kernel render them afresh (a seq_file restarts at offset 0): the same
    text as ``read_text``, without the
    path walk, open and close of every read (for a cgroup's
    ``memory.usage_in_bytes`` ~7 µs a read becomes ~1 µs here, for
    ``memory.stat`` ~14 µs becomes ~7).

    Only for files of the kernel's pseudo file systems (proc, cgroupfs):
    a kept fd follows the *file*, not the path, which is what a removed
    cgroup needs (its files fail with ENODEV, and the path is opened
    again, finding a new cgroup of the same name if there is one), but a
    regular file replaced by rename would keep its old text.

    At most ``limit`` files are kept (a file of the directory read least
    recently is closed first), so fds stay bounded however many containers
    come and go, and the host files every render reads are never the ones
    closed.
    Files of directories that are gone are closed by ``close_stale``: an
    open file of a removed cgroup pins that cgroup in the kernel (a
    "dying" cgroup, with its memory) until it is closed."""

    def __init__(self, limit: int):
        self.limit = max(1, limit)
        # directory -> its kept files as one array of 64-bit numbers: the
        # directory's inode when its first file was kept (a directory
        # removed, or made again under the same name, has another inode or
        # none), then a (name's column, fd) pair per kept file. One object
        # per directory, not a key, an fd and an inode object per file:
        # with a thousand containers this table holds thousands of
        # directories, and every small object a burst of them leaves behind
        # can keep one of Python's 1 MiB arenas from being freed. A cgroup's
        # files are kept by the directory string the cgroup keeps.
        self._dirs: dict[str, array.array] = {}
        # file name -> its column: the few dozen names of kernel files
        # procview reads (meminfo, memory.stat, stat, ...), each stored once.
        self._columns: dict[str, int] = {}
        self._count = 0

    def read(self, path: str) -> str | None:
        """The file's whole text now, or None, as ``read_text``."""
        directory, _, name = path.rpartition("/")
        return self._read(directory, name, path)

    def read_in(self, directory: str, name: str) -> str | None:
        """The text of file ``name`` of ``directory`` (a string the caller
        keeps, as a cgroup keeps its directories), as ``read``."""
        return self._read(directory, name, directory + "/" + name)

    def _read(self, directory: str, name: str, path: str) -> str | None:
        column = self._columns.get(name)
        if column is None:
            column = self._columns[name] = len(self._columns)
        files = self._dirs.pop(directory, None)
        if files is not None:
            self._dirs[directory] = files  # now the most recently read (a dict keeps insertion order)
            at = _pair_of(files, column)
            if at:
                text = _pread_text(files[at + 1])
                if text is not None:
                    return text
                # ENODEV (a removed cgroup), ESRCH (a process gone): the
                # kept file is dead; the path may name a new one.
                self._close_pair(directory, files, at)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        text = _pread_text(fd)
        if text is None:
            os.close(fd)
            return None
        if self._count >= self.limit:
            self._close_oldest()
        files = self._dirs.get(directory)
        if files is None:
            # Stat'ed after the file was opened: if the directory was
            # replaced in between, the next close_stale closes a live file,
            # which is only opened again.
            self._dirs[directory] = array.array("q", [_inode(directory), column, fd])
        else:
            files += array.array("q", [column, fd])
        self._count += 1
        return text

    def close_stale(self) -> int:
        """Close the kept files whose directory is gone or is another one
        now (one ``stat`` per directory); returns how many were closed.
        For periodic maintenance: reads never pay for it."""
        stale = [d for d, files in self._dirs.items() if files[0] == _NO_INODE or _inode(d) != files[0]]
        closed = 0
        for directory in stale:
            files = self._dirs.pop(directory)
            for fd in files[2::2]:
                os.close(fd)
            closed += (len(files) - 1) // 2
        self._count -= closed
        if stale:
            self._dirs = resized(self._dirs)
        return closed

    def _close_oldest(self) -> None:
        """Close the first kept file of the directory read least recently."""
        directory, files = next(iter(self._dirs.items()))
        self._close_pair(directory, files, 1)

    def _close_pair(self, directory: str, files: array.array, at: int) -> None:
        os.close(files[at + 1])
        del files[at:at + 2]
        self._count -= 1
        if len(files) == 1:
            del self._dirs[directory]

    def __len__(self) -> int:
        return self._count

    def paths(self) -> list[str]:
        """The kept files' paths, those of the directory read least
        recently first."""
        names = {column: name for name, column in self._columns.items()}
        return [f"{directory}/{names[column]}" for directory, files in self._dirs.items() for column in files[1::2]]

    def close(self) -> None:
        for files in self._dirs.values():
            for fd in files[2::2]:
                os.close(fd)
        self._dirs.clear()
        self._count = 0


_NO_INODE = -1  # a directory that could not be stat'ed: closed by the next close_stale


def _pair_of(files: array.array, column: int) -> int:
    """Where the (column, fd) pair of ``column`` starts in a directory's
    kept files, 0 if that file is not kept (a directory keeps a handful)."""
    at = 0
    while True:
        try:
            at = files.index(column, at + 1)
        except ValueError:
            return 0
        if at % 2:  # a column, not an fd or the inode that equals it
            return at


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
