"""How the daemon waits for the next FUSE request: without a pass through
trio's scheduler when one is already waiting.

pyfuse3's request loop (``pyfuse3.main``) asks ``_wait_fuse_readable``
before it reads each request from ``/dev/fuse``. pyfuse3's own version
takes a ``trio.Lock`` (one checkpoint: a pass through trio's run loop) and
then awaits ``trio.lowlevel.wait_readable`` (an ``epoll_ctl`` to re-arm the
fd, another pass, an ``epoll_wait``), even when the kernel has a request
queued already. For a read of a ``/proc`` file (OPEN, READ, READ at EOF,
RELEASE) that is four round trips through the scheduler, a large share of
the ~150 µs a read costs with no rendering at all (docs/performance.md).

``RequestWaiter`` replaces it for the one request task procview runs
(``pyfuse3.main(1, 1)``: the handlers never await, so one task answers as
fast as more would):

- a request is already queued (``poll`` with timeout 0 says so: one
  syscall): read it now, without yielding;
- none is: wait in trio as before (``wait_readable``), so the other tasks
  (the seccomp supervisor, the signal watcher, the periodic maintenance)
  run while the file system is idle;
- after ``FAIRNESS`` requests in a row without a wait, wait anyway: under a
  flood of reads the other tasks still get their turn.

The lock is not needed with one task: it only keeps several tasks from
reading the same fd at once.

``_wait_fuse_readable`` is a private name of pyfuse3 (3.5, the version
this was measured with, looks it up as a module global before every
request, which is what makes the replacement take effect). ``install`` checks that it exists and, if a future pyfuse3
drops it, leaves pyfuse3's own loop in place and says so: the view stays
right, only slower. ``tests/integration/test_fuse_loop.py`` fails when the
replacement stops being used.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
from typing import Iterator

import pyfuse3
import trio

log = logging.getLogger(__name__)

# Requests answered in a row without a pass through trio's scheduler.
FAIRNESS = 32

_PYFUSE3_HOOK = "_wait_fuse_readable"


def dev_fuse_fds() -> set[int]:
    """This process's open file descriptors on ``/dev/fuse``."""
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == "/dev/fuse":
                fds.add(int(name))
        except OSError:
            continue  # the listing's own fd, closed by now
    return fds


class RequestWaiter:
    """pyfuse3's ``_wait_fuse_readable`` for one request task on ``fd``
    (the session's ``/dev/fuse``). Counts what it did: ``queued`` requests
    were read without waiting, ``waits`` times it waited in trio."""

    def __init__(self, fd: int, fairness: int = FAIRNESS):
        self.fd = fd
        self.fairness = fairness
        self.queued = 0
        self.waits = 0
        self._in_a_row = 0
        self._poller = select.poll()
        self._poller.register(fd, select.POLLIN)

    async def __call__(self) -> bool:
        """True when a request can be read; False when the session's fd is
        being closed (``pyfuse3.terminate``) and the loop must end."""
        if self._in_a_row < self.fairness and self._poller.poll(0):
            self._in_a_row += 1
            self.queued += 1
            return True
        self._in_a_row = 0
        self.waits += 1
        try:
            await trio.lowlevel.wait_readable(self.fd)
        except trio.ClosedResourceError:
            return False
        return True


@contextlib.contextmanager
def installed(session_fd: int | None) -> Iterator[RequestWaiter | None]:
    """pyfuse3's request loop waits with a ``RequestWaiter`` on
    ``session_fd`` inside this block (run it as ``pyfuse3.main(1, 1)``).
    Yields None, and pyfuse3 keeps its own waiting, when the fd is unknown
    or this pyfuse3 has no such hook."""
    original = getattr(pyfuse3, _PYFUSE3_HOOK, None)
    if session_fd is None or not callable(original):
        log.warning("cannot replace pyfuse3's request wait (pyfuse3 %s, session fd %s): reads are slower",
                    getattr(pyfuse3, "__version__", "?"), session_fd)
        yield None
        return
    waiter = RequestWaiter(session_fd)
    setattr(pyfuse3, _PYFUSE3_HOOK, waiter)
    try:
        yield waiter
    finally:
        setattr(pyfuse3, _PYFUSE3_HOOK, original)


def session_fd(before: set[int]) -> int | None:
    """The ``/dev/fuse`` fd ``pyfuse3.init`` opened: the one that was not
    open ``before`` it (pyfuse3 does not tell)."""
    new = dev_fuse_fds() - before
    return new.pop() if len(new) == 1 else None
