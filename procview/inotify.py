"""Being told when a cgroup's files are written: inotify on cgroup
directories.

Every successful write(2) to a file makes the kernel queue an
``IN_MODIFY`` event for watches on the file and on its directory
(``fsnotify_modify``), on cgroupfs and cgroup2 as anywhere. So a watch on
each directory a container's limits are read from tells the daemon that
``docker update`` (or anyone) wrote a limit, before that write(2) returns:
the daemon can keep the limits it read and still show a change at the very
next open, at the price of one non-blocking read(2) per render.

Python has no inotify binding in its standard library; the three calls
are libc's, through ctypes.
"""

from __future__ import annotations

import ctypes
import os
import select
import struct
from array import array
from bisect import bisect_left

_IN_MODIFY = 0x00000002
_IN_Q_OVERFLOW = 0x00004000  # the kernel's queue was full: events were lost
# struct inotify_event: int wd; uint32_t mask, cookie, len; char name[len]
_EVENT = struct.Struct("iIII")
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC

_libc = ctypes.CDLL(None, use_errno=True)
_libc.inotify_add_watch.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
_libc.inotify_rm_watch.argtypes = (ctypes.c_int, ctypes.c_int)


class WriteWatch:
    """IN_MODIFY watches on directories, and one question: was anything in
    them written since the last ``written()``?

    Watches are known by their descriptors only: the kernel gives a
    directory already watched its watch descriptor again, so no table of
    directory strings is needed to watch each once (with a thousand
    containers, thousands of strings a burst would leave arenas for). The
    price is a syscall for a directory watched already (~3 µs on a cgroup
    directory here), paid when a container's limits are read again: once
    a second per container read, a few directories each.

    A watch is kept while someone adds it again: ``forget_unused`` stops
    the watches not added since a time, so a caller that adds a
    directory's watch each time it reads from the directory needs no list
    of its own of what it watches (the engine: none per container)."""

    def __init__(self):
        fd = _libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.fd = fd
        # The watch descriptors, ascending, and when each was last added,
        # in the same order: two arrays, no object per watch (see
        # procview/columns.py for why that matters to the daemon's RSS).
        self._wds = array("i")
        self._added = array("d")
        # poll(0) answers "nothing written" without a failing read(2) and
        # the exception Python makes of it (0.4 µs against 1.2 µs here).
        self._poller = select.poll()
        self._poller.register(fd, select.POLLIN)

    def __len__(self) -> int:
        return len(self._wds)

    def add(self, directory: str, now: float) -> int | None:
        """Watch ``directory``, added at ``now`` (a ``time.monotonic``
        reading); returns its watch descriptor (the same for a directory
        watched already), or None if the kernel refused (it vanished, or
        the user's watch limit is reached)."""
        wd = _libc.inotify_add_watch(self.fd, os.fsencode(directory), _IN_MODIFY)
        if wd < 0:
            return None
        at = bisect_left(self._wds, wd)
        if at < len(self._wds) and self._wds[at] == wd:
            self._added[at] = now
        else:
            self._wds.insert(at, wd)
            self._added.insert(at, now)
        return wd

    def forget_unused(self, since: float) -> int:
        """Stop every watch not added at or after ``since``; returns how
        many were stopped."""
        unused = [wd for wd, added in zip(self._wds, self._added) if added < since]
        for wd in unused:
            # EINVAL when the directory is gone: the kernel dropped the watch.
            _libc.inotify_rm_watch(self.fd, wd)
        if unused:  # new arrays, sized for what is left
            kept = [(wd, added) for wd, added in zip(self._wds, self._added) if added >= since]
            self._wds = array("i", [wd for wd, _added in kept])
            self._added = array("d", [added for _wd, added in kept])
        return len(unused)

    def written(self) -> bool:
        """Whether a watched directory's file was written since the last
        call (the pending events are consumed)."""
        if not self._poller.poll(0):
            return False
        seen = False
        while True:
            try:
                events = os.read(self.fd, 65536)
            except BlockingIOError:
                return seen
            except OSError:
                return True  # cannot tell: say "written", re-reading is always right
            if not events:
                return seen
            seen = seen or _any_write(events)

    def close(self) -> None:
        os.close(self.fd)
        del self._wds[:], self._added[:]


def _any_write(events: bytes) -> bool:
    """Whether a buffer of ``struct inotify_event`` holds a write, or may
    have lost one (an overflow), and not only the IN_IGNORED notes of
    watches that went away or the kernel's own notices on event counters
    (``*.events`` files: see ``is_event_counter``)."""
    offset = 0
    while offset + _EVENT.size <= len(events):
        _wd, mask, _cookie, name_len = _EVENT.unpack_from(events, offset)
        if mask & _IN_Q_OVERFLOW:
            return True
        if mask & _IN_MODIFY:
            name = events[offset + _EVENT.size:offset + _EVENT.size + name_len].rstrip(b"\0")
            if not is_event_counter(name):
                return True
        offset += _EVENT.size + name_len
    return False


def is_event_counter(name: bytes) -> bool:
    """``memory.events``, ``pids.events``, ``cgroup.events`` and their
    ``.local`` twins: read-only counters the kernel announces with
    IN_MODIFY itself whenever one moves (on every memory.high or memory.max
    breach, say). Nobody writes them and no limit is read from them, so
    they must not make the daemon read every container's limits again."""
    return name.endswith((b".events", b".events.local"))
