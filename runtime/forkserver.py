"""The fork server: ``procview run`` without paying for the imports.

A ``procview run`` process spends more time importing the runtime than
runc spends on a whole container (docs/performance.md). The imports are
the same every time, so a long-lived process can do them once and fork a
ready copy of itself per container, as Python's ``multiprocessing``
forkserver and Android's zygote do. ``procview forkserver`` is that process.

``procview run`` (the *client*) first tries the server's socket
(``/run/procview/forkserver.sock``, or ``$PROCVIEW_FORKSERVER_SOCKET``; an
empty value turns this off). If nobody listens, it runs the container
itself, as it always did. If the server takes the request:

1. The client sends its arguments, environment, working directory and
   umask, with its standard input, output and error (SCM_RIGHTS).
2. The server forks a *runner*. The runner puts the client's descriptors,
   directory, umask and environment in place and runs exactly what the
   client would have run (``procview.runtime.run_command.main``), so the container
   writes straight to the client's pipes or files.
3. The server sends the runner's pid. Every signal the client gets
   (``FORWARDED_SIGNALS``) it passes to the runner (through a pidfd),
   which passes it to the container as ``procview run`` always does.
4. When the runner exits, the server sends its exit status, and the client
   exits with it: the command's, 125, 126, 127 or 128+n, as before.

If the client dies (even by SIGKILL), the server kills its runner, whose
container dies with it (PR_SET_PDEATHSIG) and is cleaned up by the next
procview command: what killing a ``procview run`` always did. A runner
dies with the server the same way.

A runner stands in for the client only where the container could not tell
the difference (``_identity``): the same namespaces and root directory,
credentials, capabilities, no_new_privs, seccomp mode, blocked and ignored
signals, CPUs, LSM label, resource limits, nice value and OOM score; and
the same procview (checkout or installation). Otherwise the server
declines and the client runs the container itself; a client on a terminal
does not even ask (a runner could not make it its controlling terminal).
Only root may connect (the socket is 0600, and the peer's uid is
checked), and the client talks only to a server that runs as root.

The client side (``hand_over``) runs on every ``procview run``, so it
uses only built-in modules (``_socket``, ``_signal``, ``marshal``):
``socket`` and ``signal`` would import ``enum``, several milliseconds.

Frames from the server are 9 bytes: a kind (``P`` the runner's pid, ``X``
its exit status, ``D`` declined) and a signed 8-byte integer.
"""

from __future__ import annotations

import marshal
import os
import sys

import _signal
import _socket

DEFAULT_SOCKET = "/run/procview/forkserver.sock"
SOCKET_ENV = "PROCVIEW_FORKSERVER_SOCKET"
PROTOCOL = 1

# What the client forwards: procview.runtime.process.FORWARDED_SIGNALS, by number
# (a unit test keeps the two equal).
FORWARDED_SIGNALS = (
    _signal.SIGHUP, _signal.SIGINT, _signal.SIGQUIT, _signal.SIGTERM, _signal.SIGUSR1, _signal.SIGUSR2,
    _signal.SIGWINCH, _signal.SIGCONT, _signal.SIGTSTP, _signal.SIGTTIN, _signal.SIGTTOU, _signal.SIGALRM,
    _signal.SIGPIPE,
)

RUNNER_PID, EXIT_STATUS, DECLINED = b"P", b"X", b"D"
_SERVER_SIGNALS = (_signal.SIGTERM, _signal.SIGINT, _signal.SIGCHLD)  # the ones the server handles
FRAME = 9
_STDIO = (0, 1, 2)
# Which procview this is: a server runs only its own code's requests, so a
# checkout's procview run is never served by an installed server.
_CODE = os.path.dirname(os.path.abspath(__file__))
# Where the client must be what the server is, for the runner to stand in for it.
NAMESPACES = ("mnt", "pid", "net", "uts", "ipc", "cgroup", "user", "time")


def frame(kind: bytes, value: int) -> bytes:
    return kind + value.to_bytes(8, "little", signed=True)


def unframe(data: bytes) -> tuple[bytes, int]:
    return data[:1], int.from_bytes(data[1:FRAME], "little", signed=True)


# -- the client: part of every `procview run` ---------------------------------


def hand_over(args: list[str]) -> None:
    """Run ``procview run ARGS`` through the fork server and exit with the
    container's status. Returns (having done nothing) when no server is
    listening or it declines; the caller then runs the container itself."""
    path = os.environ.get(SOCKET_ENV, DEFAULT_SOCKET)
    if not path or any(os.isatty(fd) for fd in _STDIO):
        # A terminal: a runner, in a session of its own, could not make it
        # its controlling terminal nor be stopped by the shell's job control
        # (^Z, SIGTTIN of a background job); procview run does it itself.
        return
    conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        conn.connect(path)
        credentials = conn.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)  # struct ucred: pid, uid, gid
        if int.from_bytes(credentials[4:8], sys.byteorder) != 0:
            raise PermissionError("the socket's owner is not root")  # never hand root's stdio to anyone else
        umask = os.umask(0o022)
        os.umask(umask)
        request = marshal.dumps((PROTOCOL, _CODE, args, dict(os.environb), os.getcwdb(), umask))
        fds = b"".join(fd.to_bytes(4, sys.byteorder) for fd in _STDIO)
        message = len(request).to_bytes(4, "little") + request
        sent = conn.sendmsg([message], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fds)])
        if sent < len(message):
            conn.sendall(message[sent:])
    except OSError:  # no server, a stale socket, not root, a closed stdio fd: nothing was taken
        conn.close()
        return
    try:
        kind, pid = unframe(_receive(conn))
    except OSError:
        # The request went out: a runner may exist, so running the
        # container here as well could run it twice.
        _give_up("the fork server closed the connection before it started the container")
    if kind == DECLINED:
        conn.close()
        return
    if kind != RUNNER_PID or pid <= 1:
        _give_up("the fork server answered something else than a runner's pid")
    try:
        runner = os.pidfd_open(pid)  # signals go to this process, never to one that reuses its pid
    except OSError:  # ESRCH, or EINVAL while it is being reaped: gone, its status is on the way
        runner = None

    def forward(signum, _stack):
        try:
            if runner is not None:
                _signal.pidfd_send_signal(runner, signum)
        except ProcessLookupError:
            pass

    for signum in FORWARDED_SIGNALS:
        _signal.signal(signum, forward)
    try:
        kind, status = unframe(_receive(conn))
    except OSError:
        kind = b""
    if kind != EXIT_STATUS:
        _give_up("the fork server went away before the container's exit status came")
    os._exit(status)


def _give_up(message: str):
    os.write(2, f"procview: error: {message}\n".encode())
    os._exit(125)


def _receive(conn) -> bytes:
    """One frame (blocking; a signal's handler runs and the wait goes on)."""
    data = b""
    while len(data) < FRAME:
        chunk = conn.recv(FRAME - len(data))
        if not chunk:
            raise ConnectionResetError("the fork server closed the connection")
        data += chunk
    return data


# -- the server: `procview forkserver` -----------------------------------------


class ForkServerError(Exception):
    """The fork server cannot start (the message says why)."""


# Every module a foreground ``procview run`` imports, lazily ones included
# (the unit tests hold the run path to this list).
RUN_PATH_MODULES = (
    "procview.host", "procview.cgroups.v1", "procview.cgroups.v2", "procview.runtime.run_command", "procview.runtime.container",
    "procview.runtime.lifecycle", "procview.runtime.images", "procview.runtime.security.programs", "procview.runtime.security.devices",
    "zlib",  # the seccomp cache's file names
)


# And what ``--network bridge`` adds: pyroute2 alone takes ~150 ms to import
# (its package imports all of its modules), more than the rest of a run.
BRIDGE_PATH_MODULES = (
    "procview.runtime.network", "procview.runtime.network.links", "procview.runtime.network.nat", "procview.runtime.network.netns",
    "procview.runtime.network.names", "procview.runtime.network.ports", "procview.runtime.network.registry",
    "procview.runtime.network.responder",
)


def preload() -> None:
    """Import everything a foreground ``procview run`` imports, load the
    libraries it loads and compile the image references' patterns, so that
    every runner starts with them; the same for ``--network bridge``'s
    modules and libnftables, where they are installed."""
    import importlib

    import re

    for name in RUN_PATH_MODULES:
        importlib.import_module(name)
    try:
        for name in BRIDGE_PATH_MODULES:
            importlib.import_module(name)
        from procview.runtime.network import nat

        nat._libnftables()  # dlopen it once
    except Exception:  # noqa: BLE001 - pyroute2 or libnftables missing: a runner says so itself, as without a server
        pass
    from procview.runtime.images import store
    from procview.runtime.security import programs

    programs._libseccomp_version()  # dlopen libseccomp once
    for pattern in store.PATTERNS:
        re.compile(pattern)  # into re's cache, which every runner inherits


def serve(path: str = DEFAULT_SOCKET, ready=None) -> int:
    """Listen at ``path`` and fork a runner per request until SIGTERM or
    SIGINT; then stop listening, wait for the runners still running, and
    return 0. A second SIGTERM/SIGINT returns at once. ``ready``: called
    once the socket listens (tests, the CLI's message)."""
    import select
    import signal
    import socket

    from procview import unix_socket

    preload()
    try:
        listener = unix_socket.listen(path, "fork server")
    except unix_socket.ListenError as exc:
        raise ForkServerError(str(exc)) from None
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    stopping = False

    def on_stop(_signum, _stack):
        nonlocal stopping
        if stopping:
            raise KeyboardInterrupt
        stopping = True

    previous = {signum: signal.signal(signum, on_stop) for signum in (signal.SIGTERM, signal.SIGINT)}
    # SIGCHLD needs a handler, even one that does nothing, for the kernel to
    # deliver it and Python to write the wakeup fd the loop polls.
    previous[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    server = _Server(listener, socket, (wake_r, wake_w))
    poller = select.poll()
    poller.register(listener, select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    listening = True  # the listener is polled (not while out of descriptors)
    watched = {}  # fd -> connection of a client whose runner runs
    if ready is not None:
        ready()
    try:
        while not (stopping and not server.runners):
            if stopping and listener.fileno() != -1:  # stop taking requests; let the runners finish
                _unlink(path)  # new clients now run their containers themselves
                server.decline_waiting()  # and so do those already queued
                if listening:
                    poller.unregister(listener)
                listener.close()
            for fd, _events in poller.poll():
                if fd == wake_r:
                    _drain(wake_r)
                elif fd == listener.fileno():
                    try:
                        conn = server.accept()
                    except OSError:  # out of descriptors: wait until a runner's are freed
                        poller.unregister(listener)
                        listening = False
                        continue
                    if conn is not None:
                        watched[conn.fileno()] = conn
                        poller.register(conn, select.POLLIN)
                elif fd in watched:
                    server.client_gone(watched.pop(fd))
                    poller.unregister(fd)
            for conn in server.reap():
                if watched.pop(conn.fileno(), None) is not None:
                    poller.unregister(conn)
                conn.close()
                if not listening and listener.fileno() != -1:
                    poller.register(listener, select.POLLIN)
                    listening = True
    except KeyboardInterrupt:
        pass
    finally:
        signal.set_wakeup_fd(-1)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if listener.fileno() != -1:
            _unlink(path)
            listener.close()
        os.close(wake_r)
        os.close(wake_w)
        server.close()
    return 0


class _Server:
    """The runners and the client connection each one answers to."""

    def __init__(self, listener, socket_module, private_fds):
        self.listener = listener
        self.socket = socket_module
        self.private_fds = private_fds  # the server's own, closed in every runner
        self.runners = {}  # runner pid -> the client's connection
        self.pid = os.getpid()

    def accept(self):
        """Take one request; the connection, while its runner runs. Raises
        OSError when no connection can be accepted (out of descriptors)."""
        conn, _ = self.listener.accept()
        try:
            request, fds = self._request(conn)
        except (OSError, ValueError, EOFError, TypeError, IndexError):
            _decline(conn)  # a client that sent too little, or fds that did not all arrive
            return None
        # The server's signals stay blocked across the fork until the runner
        # has put its own handlers in place: a runner must never run one of
        # the server's (the second SIGINT's KeyboardInterrupt would unwind it
        # into the server's loop).
        blocked = _signal.pthread_sigmask(_signal.SIG_BLOCK, _SERVER_SIGNALS)
        try:
            pid = os.fork() if request is not None else None
        except OSError:  # out of processes or memory: the client can still try
            pid = None
        if pid == 0:
            _become_runner(self, conn, request, fds, blocked)  # never returns
        _signal.pthread_sigmask(_signal.SIG_SETMASK, blocked)
        for fd in fds:
            os.close(fd)
        if pid is None:
            _decline(conn)
            return None
        self.runners[pid] = conn
        try:
            conn.sendall(frame(RUNNER_PID, pid))
        except OSError:  # the client is gone already
            self.kill(pid)
        return conn

    def decline_waiting(self) -> None:
        """Decline every connection queued on the listener (stopping)."""
        self.listener.setblocking(False)
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:  # BlockingIOError: none left (or none can be taken)
                return
            _decline(conn)

    def _request(self, conn):
        """(request, fds): the client's request, or None when the server
        must decline it; raises when it is no request at all."""
        socket = self.socket
        conn.settimeout(2.0)  # a client sends everything at once
        credentials = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)  # struct ucred: pid, uid, gid
        peer, uid = (int.from_bytes(credentials[at:at + 4], sys.byteorder) for at in (0, 4))
        data, fds, _flags, _address = socket.recv_fds(conn, 65536, len(_STDIO), socket.MSG_CMSG_CLOEXEC)
        try:
            if uid != 0 or len(fds) != len(_STDIO) or len(data) < 4:
                raise ValueError("not a procview run request")
            size = int.from_bytes(data[:4], "little")
            while len(data) < 4 + size:
                chunk = conn.recv(4 + size - len(data))
                if not chunk:
                    raise EOFError("the client went away")
                data += chunk
            request = marshal.loads(data[4:4 + size])
            # The server's own side is read again each time: a renice or
            # taskset of the server changes what its runners inherit.
            if request[:2] != (PROTOCOL, _CODE) or _identity(peer) != _identity(self.pid):
                return None, fds
            return request[2:], fds
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        finally:
            conn.settimeout(None)

    def client_gone(self, conn) -> None:
        """A client said something or went away: either way it no longer
        waits for its container (clients only listen), so its runner dies
        as a killed ``procview run`` would."""
        for pid, runner_conn in self.runners.items():
            if runner_conn is conn:
                self.kill(pid)
                return

    def kill(self, pid: int) -> None:
        try:
            os.kill(pid, _signal.SIGKILL)
        except ProcessLookupError:
            pass

    def reap(self) -> list:
        """Collect exited runners; send each one's status to its client.
        The connections that are done."""
        from procview.runtime.process import exit_code_of

        done = []
        while self.runners:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            conn = self.runners.pop(pid, None)
            if conn is None:
                continue
            try:
                conn.sendall(frame(EXIT_STATUS, exit_code_of(status)))
            except OSError:
                pass  # the client is gone
            done.append(conn)
        return done

    def close(self) -> None:
        for conn in self.runners.values():
            conn.close()


def _decline(conn) -> None:
    """The client runs its container itself."""
    try:
        conn.sendall(frame(DECLINED, 0))
    except OSError:
        pass
    conn.close()


def _become_runner(server: _Server, conn, request, fds, signal_mask) -> None:
    """In the forked child: become the client's ``procview run`` and run
    it. Never returns."""
    try:
        from procview.runtime.linux import PR_SET_PDEATHSIG, Linux

        args, environ, cwd, umask = request
        # Dies with the server, as a container dies with its procview run:
        # its clients then exit 125 at once, never wait on a runner nobody
        # reaps. (Detached containers' monitors are nobody's child: they live on.)
        Linux().prctl(PR_SET_PDEATHSIG, _signal.SIGKILL)
        if os.getppid() != server.pid:
            os._exit(125)  # the server died before the line above
        os.setsid()  # out of the server's process group: its signals are not ours
        for signum in (_signal.SIGTERM, _signal.SIGCHLD):
            _signal.signal(signum, _signal.SIG_DFL)
        _signal.signal(_signal.SIGINT, _signal.default_int_handler)  # as in a fresh interpreter
        _signal.set_wakeup_fd(-1)
        _signal.pthread_sigmask(_signal.SIG_SETMASK, signal_mask)
        server.listener.close()
        for fd in server.private_fds:
            os.close(fd)
        for other in (conn, *server.runners.values()):
            other.close()  # only the server answers clients: its death is theirs to see
        for target, fd in zip(_STDIO, fds):
            os.dup2(fd, target)  # inheritable: the container gets them
        for fd in fds:
            if fd not in _STDIO:
                os.close(fd)
        os.chdir(cwd)
        os.umask(umask)
        os.environb.clear()
        os.environb.update(environ)
        sys.argv = ["procview", "run", *args]
        _fresh_stdio()
        from procview.runtime import run_command

        run_command.main(args)
    except BaseException as exc:  # noqa: BLE001 - a runner must never return into the server
        try:
            os.write(2, f"procview: error: {exc}\n".encode(errors="replace"))
        finally:
            os._exit(125)
    os._exit(125)


def _fresh_stdio() -> None:
    """``sys.stdin/stdout/stderr`` as a new interpreter would open them on
    the client's descriptors (a terminal's output is line-buffered)."""
    encoding = sys.stdout.encoding if sys.stdout else "utf-8"
    sys.stdin = open(0, "r", encoding=encoding, closefd=False)
    sys.stdout = open(1, "w", buffering=1 if os.isatty(1) else -1, encoding=encoding, closefd=False)
    sys.stderr = open(2, "w", buffering=1, encoding=encoding, errors="backslashreplace", closefd=False)


# What a runner inherits from the server where the in-process run would have
# had the client's, from /proc/PID/status: credentials and capabilities,
# no_new_privs and seccomp (a confined root must stay confined), blocked and
# ignored signals (nohup), the CPUs and memory nodes it may use (taskset).
_STATUS_FIELDS = ("Uid", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp",
                  "SigBlk", "SigIgn", "Cpus_allowed_list", "Mems_allowed_list")


def _identity(pid: int) -> tuple:
    """Everything that must be the same in the client and the server for a
    runner to stand in for the client: what its paths, pids and devices
    mean (namespaces, root directory) and what it may do and how it runs
    (``_STATUS_FIELDS``, the LSM label, resource limits, nice value and
    scheduling policy, OOM score adjustment). None where a file is missing
    (no LSM, a namespace this kernel does not have)."""
    from procview._io import read_text

    ids = []
    for name in NAMESPACES:
        try:
            ids.append(os.stat(f"/proc/{pid}/ns/{name}").st_ino)
        except FileNotFoundError:
            ids.append(None)
    root = os.stat(f"/proc/{pid}/root")
    status = dict(line.split(":", 1) for line in (read_text(f"/proc/{pid}/status") or "").splitlines() if ":" in line)
    stat_fields = (read_text(f"/proc/{pid}/stat") or ")").rsplit(")", 1)[1].split()
    return (*ids, root.st_dev, root.st_ino, *(status.get(field, "").strip() for field in _STATUS_FIELDS),
            read_text(f"/proc/{pid}/attr/current"), read_text(f"/proc/{pid}/limits"),
            read_text(f"/proc/{pid}/oom_score_adj"), stat_fields[16:17], stat_fields[38:39])  # nice, policy


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
