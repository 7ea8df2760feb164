"""``procview serve``: mount the view and keep it answering.

One trio nursery holds the whole daemon: pyfuse3's request loop (one
task, which reads a request that is queued, or comes within 50 µs, without
a pass through trio's scheduler: ``fuse_loop.py``), the periodic maintenance (load-average samples, forgetting containers nobody
reads), and the signal watcher. The mount point is prepared first: created
if missing, a dead procview mount (its daemon was killed: ENOTCONN) is
detached, and a live one is left alone with a clear refusal. Readiness
(pidfile, systemd's ``READY=1``) is announced only once the mount answers a
real read. SIGTERM or SIGINT unmounts and exits 0.

Once ready, it re-attaches the view in running containers whose binds of
it died with a previous daemon (``reattach.py``), then looks again, more
and more rarely.

The same loop runs the seccomp supervisor (``supervisor.py``), which
answers containers' ``sysinfo()`` and ``sched_getaffinity()`` from the
same engine, so syscalls and files agree. It attaches to the listener
holder (``listener_holder.py``, started here if none answers, before the
mount) and has every listener the holder kept before readiness is
announced: containers started after it get both, and containers that
outlived a previous daemon get their answers back from readiness on.

With ``--metrics ADDR:PORT`` the same nursery serves Prometheus' text
format at ``/metrics`` (``metrics.py``; its socket is bound before anything
is mounted, and without the option nothing of it is even imported).

With ``--shards K`` it is shard 0 of K daemons (``shards.py``): it starts
the other K-1 before its own mount and is ready once all of them answer.
A shard is this same daemon, told by ``parent_fd`` where to say it is
ready and to stop when its parent is gone.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import signal
import socket

import pyfuse3
import trio

from procview import fuse_loop, unix_socket
from procview._io import raise_fd_limit
from procview.engine import ViewEngine
from procview.fs import ProcviewFS
from procview.mounts import FSNAME, FSTYPE, filesystems_at, view_source
from procview.reattach import Reattacher, live_view, next_scan_in
from procview.shards import ShardError, ShardGroup
from procview.supervisor import DEFAULT_SOCKET, Supervisor, SupervisorError

log = logging.getLogger(__name__)

DEFAULT_MOUNTPOINT = "/var/lib/procview"
MAINTAIN_EVERY = 5.0  # seconds: load samples are due every 5 s per container (LOAD_FREQ)


class ServeError(Exception):
    """The daemon cannot start (one line for the user)."""


def prepare_mountpoint(path: str, linux=None) -> None:
    """Make ``path`` ready for a new mount, or raise ServeError."""
    mounted = filesystems_at(path)
    if not mounted:
        # (Not before: on a dead mount, stat() may fail with ENOTCONN and
        # makedirs then takes the mount point for a file in the way.)
        os.makedirs(path, exist_ok=True)
        return
    try:
        # statvfs reaches the daemon; stat may be answered from the kernel's
        # attribute cache for a while after the daemon died.
        os.statvfs(path)
        alive = True
    except OSError as exc:
        if exc.errno != errno.ENOTCONN:
            raise ServeError(f"{path}: {exc.strerror}") from None
        alive = False
    if alive:
        kind = mounted[-1]
        if kind == FSTYPE:
            raise ServeError(f"{path}: a live procview is already mounted there (stop it first)")
        raise ServeError(f"{path}: something else is mounted there ({kind})")
    # A daemon that died leaves its mount "Transport endpoint is not connected".
    log.warning("%s: detaching a dead FUSE mount (its daemon is gone)", path)
    if linux is None:
        from procview.runtime.linux import Linux

        linux = Linux()
    from procview.runtime.linux import MNT_DETACH

    linux.umount2(path, MNT_DETACH)


def notify_systemd(message: str) -> None:
    """Send ``message`` to systemd's notification socket, if there is one."""
    try:
        unix_socket.notify_systemd(message)
    except OSError as exc:
        log.warning("could not notify systemd: %s", exc)


def serve(
    mountpoint: str = DEFAULT_MOUNTPOINT,
    pidfile: str | None = None,
    engine: ViewEngine | None = None,
    seccomp_socket: str | None = DEFAULT_SOCKET,
    spawn_holder: bool = True,
    shards: int = 1,
    log_level: str = "info",
    parent_fd: int | None = None,
    metrics: tuple[str, int] | None = None,
    shard_index: int = 0,
) -> None:
    """Mount the view at ``mountpoint`` and serve until SIGTERM/SIGINT;
    with ``seccomp_socket``, also answer the sysinfo() and
    sched_getaffinity() calls of the containers handed over there (to the
    listener holder, started if none answers and ``spawn_holder``). With
    ``shards`` > 1, start and keep shards 1..K-1 (``shards.py``); as a
    shard (``parent_fd``: the line to shard 0), say READY=1 there and
    stop when it closes. With ``metrics`` (host, port), serve Prometheus'
    text format there (shard i at port + i)."""
    raise_fd_limit()  # before the engine sizes its kept files by it
    parent = _parent_line(parent_fd)
    # The mount table names real paths: a mount point given through a
    # symlink must be resolved, or a live procview there would go unseen.
    mountpoint = os.path.realpath(mountpoint)
    try:
        group = ShardGroup(mountpoint, shards, log_level, metrics)
    except ShardError as exc:
        raise ServeError(str(exc)) from None
    metrics_socket = _listen_for_metrics(metrics)  # before anything is mounted: a taken port stops us here
    try:
        prepare_mountpoint(mountpoint)
        engine = engine or ViewEngine()
        fs, supervisor_class, endpoint = _plain_or_measured(engine, metrics_socket, shard_index)
        supervisor = None
        if seccomp_socket:
            supervisor = supervisor_class(engine, socket_path=seccomp_socket, spawn_holder=spawn_holder)
            try:
                supervisor.attach()  # before the mount: a holder started here must not inherit /dev/fuse
            except SupervisorError as exc:
                raise ServeError(str(exc)) from None
        try:
            group.start()  # before the mount too, for the same reason
        except ShardError as exc:
            if supervisor is not None:
                supervisor.detach()
            raise ServeError(str(exc)) from None
        try:
            _serve_mounted(mountpoint, pidfile, fs, engine, supervisor, group, parent, endpoint)
        finally:
            group.stop()
    finally:
        if metrics_socket is not None:
            metrics_socket.close()


def _plain_or_measured(engine: ViewEngine, metrics_socket: socket.socket | None, shard_index: int):
    """(the file system, the supervisor's class, the metrics endpoint or
    None): the plain ones without --metrics, so that the read path then
    is exactly the one without metrics; the measured ones with it."""
    if metrics_socket is None:
        return ProcviewFS(engine), Supervisor, None
    from procview.metrics import MeteredFS, MeteredSupervisor, Metrics, MetricsEndpoint

    measured = Metrics(engine, shard_index)
    return (MeteredFS(engine, measured), functools.partial(MeteredSupervisor, metrics=measured),
            MetricsEndpoint(metrics_socket, measured))


def _listen_for_metrics(address: tuple[str, int] | None) -> socket.socket | None:
    """The metrics endpoint's socket, listening (None without --metrics)."""
    if address is None:
        return None
    from procview.metrics import MetricsError, listen

    try:
        return listen(*address)
    except MetricsError as exc:
        raise ServeError(str(exc)) from None


def _parent_line(fd: int | None) -> socket.socket | None:
    """A shard's line to shard 0, kept from its own children (a
    re-attaching child holding it would hide the parent's exit)."""
    if fd is None:
        return None
    try:
        line = socket.socket(fileno=fd)
    except OSError as exc:
        raise ServeError(f"--parent-fd {fd}: {exc.strerror or exc}") from None
    line.set_inheritable(False)
    return line


def _serve_mounted(mountpoint: str, pidfile: str | None, fs: ProcviewFS, engine: ViewEngine, supervisor,
                   group: ShardGroup, parent: socket.socket | None, endpoint) -> None:
    options = set(pyfuse3.default_options)  # default_permissions: the kernel checks modes
    # The source names the mount point: a bind of the view in a container
    # then tells which view it came from, even after its daemon died.
    options |= {f"fsname={_fuse_option_value(view_source(mountpoint))}", f"subtype={FSNAME}", "allow_other"}
    # Hold SIGTERM/SIGINT from here until the signal watcher runs: one that
    # arrived between the mount and the watcher would kill us with the
    # mount left behind.
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        fuse_fds_before = fuse_loop.dev_fuse_fds()
        try:
            pyfuse3.init(fs, mountpoint, options)
        except RuntimeError as exc:
            if supervisor is not None:
                supervisor.detach()
            raise ServeError(f"{mountpoint}: cannot mount: {exc}") from None
        log.info("mounted at %s", mountpoint)
        try:
            with fuse_loop.installed(fuse_loop.session_fd(fuse_fds_before)) as waiter:
                trio.run(_run, mountpoint, pidfile, engine, supervisor, waiter, group, parent, endpoint)
                if waiter is not None:
                    log.info("requests: %d read as they came, %d after a wait in trio (trio's I/O %s)",
                             waiter.queued, waiter.waits, "watched" if waiter.watches_trio else "not watched")
        finally:
            pyfuse3.close(unmount=True)
            if pidfile:
                _remove(pidfile)
            log.info("unmounted %s", mountpoint)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)


_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def _fuse_option_value(value: str) -> str:
    # libfuse splits -o on commas; a backslash escapes one.
    return value.replace("\\", "\\\\").replace(",", "\\,")


async def _run(mountpoint: str, pidfile: str | None, engine: ViewEngine, supervisor, waiter, group: ShardGroup,
               parent: socket.socket | None, endpoint) -> None:
    with trio.open_signal_receiver(*_STOP_SIGNALS) as signals:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)  # held ones arrive now
        async with trio.open_nursery() as nursery:
            stop = trio.Event()
            nursery.start_soon(_stop_on_signal, signals, stop)
            if parent is not None:
                nursery.start_soon(_stop_when_parent_gone, parent, stop)
            if waiter is not None:
                nursery.start_soon(pyfuse3.main, 1, 1)  # one request task: fuse_loop.py
            else:
                nursery.start_soon(pyfuse3.main)
            nursery.start_soon(_maintain, engine)
            if endpoint is not None:
                nursery.start_soon(endpoint.serve)
                log.info("metrics at http://%s/metrics", endpoint.address)
            if supervisor is not None:
                await nursery.start(supervisor.serve)  # returns once the holder has handed over every listener
                log.info("seccomp supervisor answering the containers handed over at %s", supervisor.socket_path)
            await _wait_until_answering(mountpoint)
            if pidfile:
                _write_atomically(pidfile, f"{os.getpid()}\n")
            notify_systemd(f"READY=1\nMAINPID={os.getpid()}")
            if parent is not None:
                _tell_parent_ready(parent)
            log.info("ready")
            nursery.start_soon(group.watch)
            # Shard 0 also takes over the binds of shards it no longer runs.
            view = live_view(mountpoint, shards=None if parent is not None else len(group.shards) + 1)
            if view is None:
                log.warning("%s: cannot find this daemon's own mount: containers' binds of a previous daemon stay dead", mountpoint)
            else:
                nursery.start_soon(_reattach, Reattacher(view))
            await stop.wait()
            notify_systemd("STOPPING=1")
            nursery.cancel_scope.cancel()


async def _stop_on_signal(signals, stop: trio.Event) -> None:
    async for signum in signals:
        log.info("%s: unmounting", signal.Signals(signum).name)
        stop.set()
        return


async def _stop_when_parent_gone(parent: socket.socket, stop: trio.Event) -> None:
    """A shard stops once shard 0 is gone (its end of the line closed),
    even killed: no shard outlives the daemon that watches it."""
    while True:
        await trio.lowlevel.wait_readable(parent)
        try:
            if not parent.recv(64, socket.MSG_DONTWAIT):
                break
        except BlockingIOError:
            continue
        except OSError:
            break
    log.info("shard 0 is gone: unmounting")
    stop.set()


def _tell_parent_ready(parent: socket.socket) -> None:
    from procview.shards import READY

    try:
        parent.send(READY)
    except OSError:
        pass  # shard 0 is gone: _stop_when_parent_gone stops this shard


async def _maintain(engine: ViewEngine) -> None:
    while True:
        await trio.sleep(MAINTAIN_EVERY)
        engine.maintain()


async def _reattach(reattacher: Reattacher) -> None:
    """Repair the containers' dead binds now, then look again, more and
    more rarely (what a scan costs, and why it repeats: docs/serve.md)."""
    reported = wait = None
    while True:
        found = False
        try:
            found = await reattacher.run_once()
        except Exception as exc:  # a bug must not stop the view; said once, not at every scan
            if repr(exc) != reported:
                log.exception("reattach: the scan failed")
            reported = repr(exc)
        wait = next_scan_in(wait, found)
        await trio.sleep(wait)


async def _wait_until_answering(mountpoint: str) -> None:
    # Read a file through the mount from another thread: the request loop
    # runs in this one and must answer it.
    probe = os.path.join(mountpoint, "proc", "uptime")
    await trio.to_thread.run_sync(_read, probe)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _write_atomically(path: str, text: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
