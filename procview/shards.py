"""``procview serve --shards K``: K whole daemons, so the view answers on K cores.

One FUSE connection is answered by one process: its requests arrive in
whatever process reads ``/dev/fuse`` next, and an OPEN leaves its snapshot
(the rendered text every later READ of that open continues) in the process
that answered it, so two processes cannot share one connection. CPython
runs Python code on one core per process. So a view that must use more
cores is K connections, each its own daemon on its own mount:

- shard 0 is ``procview serve`` itself, mounted at the view's path (the
  path LXCFS-style binds name), and the only one that answers syscalls
  (there is one listener holder, and it hands listeners to one daemon);
- shard i (1 <= i < K) is a child ``procview serve`` mounted at
  ``VIEW.shards/i`` (``mounts.shard_mountpoint``), with no syscalls;
- ``procview run`` and ``procview-runc`` bind each container's files from
  the shard its id hashes to (``mounts.view_for_container``).

Each shard renders for whoever calls, so any shard gives every container
its own values; the hash only spreads the load. Each shard re-attaches
the binds of its own mount after a restart, as a lone daemon does.

This module is the parent's side: start the shards and wait until each
answers, start again one that dies, stop them all. Parent and shard talk
over one socketpair per shard, as systemd and a ``Type=notify`` service
do: the shard writes ``READY=1`` once its mount answers, and the parent's
end closing (the parent exited, even killed) tells the shard to stop, so
no shard outlives its parent.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time

import trio

from procview.mounts import SHARDS_SUFFIX, shard_mountpoint

log = logging.getLogger(__name__)

MAX_SHARDS = 64
READY = b"READY=1\n"
START_TIMEOUT = 180.0  # seconds; bounds a hang only (an emulated VM starts Python slowly)
STOP_TIMEOUT = 30.0  # seconds after SIGTERM before SIGKILL
# A shard that exits after answering for STEADY_AFTER seconds is started
# again at once; one that exits sooner, after RESTART_DELAYS[n-1] for its
# n-th quick exit in a row, so a shard that cannot start does not spin.
STEADY_AFTER = 60.0
RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)


class ShardError(Exception):
    """A shard could not start (one line for the user)."""


def shard_argv(index: int, mountpoint: str, log_level: str, parent_fd: int, metrics: str | None = None) -> list[str]:
    """The command line of shard ``index``: a whole ``procview serve`` on
    its own mount, without syscalls (shard 0 answers those), told which
    inherited fd is its line to the parent (-P: the working directory
    must not shadow the package), and where to serve its own metrics."""
    argv = [sys.executable, "-P", "-m", "procview", "serve", mountpoint, "--no-seccomp-socket", "--log-level", log_level,
            "--shard-index", str(index), "--parent-fd", str(parent_fd)]
    return argv + ["--metrics", metrics] if metrics else argv


def restart_delay(quick_exits: int) -> float:
    """Seconds to wait before starting a shard again after ``quick_exits``
    quick exits in a row (0: it had been answering a while)."""
    return 0.0 if quick_exits == 0 else RESTART_DELAYS[min(quick_exits, len(RESTART_DELAYS)) - 1]


class Shard:
    """One child daemon: its process and the parent's end of its line."""

    def __init__(self, index: int, mountpoint: str, metrics: str | None = None):
        self.index = index
        self.mountpoint = mountpoint
        self.metrics = metrics  # where it serves its metrics (ADDR:PORT), if anywhere
        self.process: subprocess.Popen | None = None
        self.line: socket.socket | None = None  # the parent's end
        self.ready = False
        self.quick_exits = 0  # exits in a row, each within STEADY_AFTER of its start

    def __str__(self) -> str:
        return f"shard {self.index} ({self.mountpoint})"

    def spawn(self, log_level: str) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)  # one message, one recv
        env = dict(os.environ)
        env.pop("NOTIFY_SOCKET", None)  # systemd hears from shard 0 alone
        try:
            self.process = subprocess.Popen(
                shard_argv(self.index, self.mountpoint, log_level, theirs.fileno(), self.metrics),
                stdin=subprocess.DEVNULL, pass_fds=(theirs.fileno(),), env=env,
                # Its own session: a terminal's ^C reaches the parent alone,
                # which then stops the shards in order.
                start_new_session=True,
            )
        except OSError as exc:
            ours.close()
            raise ShardError(f"{self}: cannot start: {exc.strerror or exc}") from None
        finally:
            theirs.close()
        self.line, self.ready = ours, False

    def take_ready(self) -> bool | None:
        """Read what the shard wrote: True once it said READY=1, False if
        its end closed first (it exited), None if it said nothing yet."""
        try:
            data = self.line.recv(64, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return None
        except OSError:
            return False
        if not data:
            return False
        self.ready = self.ready or READY in data
        return True if self.ready else None

    def exit_status(self) -> str:
        """How the shard's process ended (it has ended, or is about to)."""
        code = self.process.wait()
        return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit {code}"

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)

    def close_line(self) -> None:
        if self.line is not None:
            self.line.close()
            self.line = None


def _metrics_of_shard(metrics: tuple[str, int] | None, index: int) -> str | None:
    """Where shard ``index`` serves its metrics: each shard has its own
    counts and its own port, shard 0's + ``index`` (docs/metrics.md)."""
    if metrics is None:
        return None
    from procview.metrics import shard_address

    try:
        return shard_address(*metrics, index)
    except ValueError as exc:
        raise ShardError(f"--metrics {exc}") from None


class ShardGroup:
    """Shards 1..K-1 of the view at ``view``, started, watched and stopped
    by shard 0 (``procview serve`` itself)."""

    def __init__(self, view: str, count: int, log_level: str = "info", metrics: tuple[str, int] | None = None):
        if not 1 <= count <= MAX_SHARDS:
            raise ShardError(f"--shards: {count} is not between 1 and {MAX_SHARDS}")
        self.view = view
        self.log_level = log_level
        self.shards = [Shard(index, shard_mountpoint(view, index), _metrics_of_shard(metrics, index))
                       for index in range(1, count)]

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start every shard and wait until each answers; on a failure stop
        the others and raise ShardError (the shard said why on stderr)."""
        if not self.shards:
            return
        os.makedirs(self.view + SHARDS_SUFFIX, mode=0o755, exist_ok=True)
        try:
            for shard in self.shards:
                shard.spawn(self.log_level)
            self._wait_all_ready(timeout)
        except BaseException:
            self.stop()
            raise
        log.info("%d shards ready: %s", len(self.shards), ", ".join(s.mountpoint for s in self.shards))

    def _wait_all_ready(self, timeout: float) -> None:
        import select

        deadline = time.monotonic() + timeout
        waiting = {shard.line.fileno(): shard for shard in self.shards}
        poller = select.poll()
        for fd in waiting:
            poller.register(fd, select.POLLIN)
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ShardError(f"{next(iter(waiting.values()))}: not ready after {timeout:.0f} s")
            for fd, _events in poller.poll(left * 1000):
                shard = waiting[fd]
                said = shard.take_ready()
                if said is False:
                    raise ShardError(f"{shard}: did not start ({shard.exit_status()}; its error is above)")
                if said:
                    poller.unregister(fd)
                    del waiting[fd]

    async def watch(self) -> None:
        """Start again any shard that exits, until cancelled (the parent is
        stopping: ``stop`` ends them)."""
        async with trio.open_nursery() as nursery:
            for shard in self.shards:
                nursery.start_soon(self._keep_running, shard)

    async def _keep_running(self, shard: Shard) -> None:
        while True:
            ready_since = time.monotonic() if shard.ready else None
            while shard.take_ready() is not False:  # READY=1, then nothing until its end closes
                await trio.lowlevel.wait_readable(shard.line)
                if ready_since is None and shard.ready:
                    ready_since = time.monotonic()
                    log.info("%s: ready again", shard)
            status = await trio.to_thread.run_sync(shard.exit_status)
            shard.close_line()
            steady = ready_since is not None and time.monotonic() - ready_since >= STEADY_AFTER
            shard.quick_exits = 0 if steady else shard.quick_exits + 1
            delay = restart_delay(shard.quick_exits)
            log.warning("%s: exited (%s); starting it again%s", shard, status, f" in {delay:.0f} s" if delay else "")
            await trio.sleep(delay)
            while True:
                try:
                    shard.spawn(self.log_level)
                    break
                except ShardError as exc:
                    log.error("%s", exc)
                    shard.quick_exits += 1
                    await trio.sleep(restart_delay(shard.quick_exits))

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM every shard (each unmounts, as a lone daemon does), wait,
        SIGKILL what is left after ``timeout``; remove the shards' empty
        mount points."""
        if not self.shards:
            return
        for shard in self.shards:
            shard.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for shard in self.shards:
            if shard.process is None:
                continue
            try:
                shard.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s: still running %.0f s after SIGTERM: killing it", shard, timeout)
                shard.process.kill()
                shard.process.wait()
            shard.close_line()
        for path in [shard.mountpoint for shard in self.shards] + [self.view + SHARDS_SUFFIX]:
            try:
                os.rmdir(path)
            except OSError:
                pass  # not empty, or a dead mount a killed shard left: the next serve detaches it
