"""How the daemon waits for the next FUSE request: without a pass through
trio's scheduler when one is queued or about to be.

pyfuse3's request loop (``pyfuse3.main``) asks ``_wait_fuse_readable``
before it reads each request from ``/dev/fuse``. pyfuse3's own version
takes a ``trio.Lock`` (one checkpoint: a pass through trio's run loop) and
then awaits ``trio.lowlevel.wait_readable`` (an ``epoll_ctl`` to re-arm the
fd, another pass, an ``epoll_wait``), even when the kernel has a request
queued already. A read of a ``/proc`` file is four requests (OPEN, READ,
READ at EOF, RELEASE), so four such round trips, and in each the daemon's
CPU goes idle until the reader's next request wakes it: on a virtual
machine waking an idle vCPU is dear (docs/performance.md).

``RequestWaiter`` replaces it for the one request task procview runs
(``pyfuse3.main(1, 1)``: the handlers never await, so one task answers as
fast as more would):

- a request is queued, or comes within ``SPIN`` (50 µs) while nothing
  else is ready in trio: read it now, without yielding. A reader's next
  request usually follows the answer to its last within a few µs (it is
  the same ``open``/``read``/``close`` going on), so the daemon asks
  ``poll`` with timeout 0 in a loop that long instead of sleeping;
- nothing comes, or trio has I/O for another task (trio's own epoll fd
  is in the same ``poll``): wait in trio as before (``wait_readable``),
  so the other tasks (the seccomp supervisor, the signal watcher) run at
  once and the daemon sleeps while the file system is idle. An idle
  daemon spins once, for 50 µs, after its last request;
- after ``FAIRNESS`` requests in a row without a wait, wait anyway: under a
  flood of reads the other tasks, and trio's timers, still get their turn.

The lock is not needed with one task: it only keeps several tasks from
reading the same fd at once.

Two private names are used, each checked, each with a fallback that keeps
the view right and only slower: pyfuse3's ``_wait_fuse_readable`` (3.5,
the version this was measured with, looks it up as a module global before
every request, which is what makes the replacement take effect; without
it pyfuse3's own loop runs) and trio's epoll object (without it the spin
watches ``/dev/fuse`` alone, and other tasks wait at most ``FAIRNESS``
requests). ``tests/integration/test_fuse_loop.py`` fails when either
stops being used.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import time
from typing import Iterator

import pyfuse3
import trio

log = logging.getLogger(__name__)

# Requests answered in a row without a pass through trio's scheduler.
FAIRNESS = 32
# How long to look for the next request before sleeping in trio (seconds).
SPIN = 50e-6

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
    were read without a pass through trio, ``waits`` times it waited in
    trio; ``watches_trio`` says whether trio's own I/O can end a spin."""

    def __init__(self, fd: int, fairness: int = FAIRNESS, spin: float = SPIN):
        self.fd = fd
        self.fairness = fairness
        self.spin = spin
        self.queued = 0
        self.waits = 0
        self.watches_trio: bool | None = None  # known inside trio.run
        self._in_a_row = 0
        self._poller = select.poll()
        self._poller.register(fd, select.POLLIN)

    async def __call__(self) -> bool:
        """True when a request can be read; False when the session's fd is
        being closed (``pyfuse3.terminate``) and the loop must end."""
        if self.watches_trio is None:
            self._watch_trio()
        if self._in_a_row < self.fairness and self._request_comes():
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

    def _request_comes(self) -> bool:
        """Whether a request is queued or comes within ``spin``, and no
        other fd trio watches is ready first."""
        poll, fd = self._poller.poll, self.fd
        deadline = time.perf_counter() + self.spin
        while True:
            ready = poll(0)
            if ready:
                return len(ready) == 1 and ready[0][0] == fd
            if time.perf_counter() > deadline:
                return False

    def _watch_trio(self) -> None:
        epoll_fd = _trio_epoll_fd()
        self.watches_trio = epoll_fd is not None
        if epoll_fd is None:
            log.warning("cannot see trio's epoll fd: other tasks may wait up to %d requests", self.fairness)
        else:
            # Readable when any fd a trio task waits for is (trio arms each
            # with EPOLLONESHOT, so a handled one does not count again).
            self._poller.register(epoll_fd, select.POLLIN)


def _trio_epoll_fd() -> int | None:
    """The epoll fd of the running trio loop (a private attribute of
    trio's Linux I/O manager), or None."""
    try:
        from trio._core._run import GLOBAL_RUN_CONTEXT

        return GLOBAL_RUN_CONTEXT.runner.io_manager._epoll.fileno()
    except (AttributeError, ImportError, RuntimeError, ValueError):
        return None


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
