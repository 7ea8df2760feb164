"""Reading kernel files, the one way every module does it.

``/proc``, ``/sys`` and cgroup files are small and read whole, thousands
of times a second by the daemon: plain ``os.open``/``os.read`` costs a few
microseconds where Python's buffered text files cost several times more.
"""

from __future__ import annotations

import os

_CHUNK = 65536


def read_text(path: str) -> str | None:
    """The file's whole text, or None if it cannot be read (missing,
    permission, a process or cgroup that vanished, not UTF-8)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, _CHUNK)
        # Kernel files may come in several reads; the end is an empty read.
        if data:
            chunks = [data]
            while chunk := os.read(fd, _CHUNK):
                chunks.append(chunk)
            data = b"".join(chunks) if len(chunks) > 1 else data
        return data.decode()
    except (OSError, UnicodeDecodeError):
        return None
    finally:
        os.close(fd)


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
