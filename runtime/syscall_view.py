"""The view beyond files: hand the container's seccomp listener to procview serve.

``sysinfo(2)`` and ``sched_getaffinity(2)`` cannot be fixed by a file. The
container's command loads a small *view filter* (``security/seccomp.py``)
that sends both calls to a listener fd, and ``procview serve`` answers
them from the container's cgroup (``procview/supervisor.py``). This
module is the runtime's part:

1. Before the fork, ``connect`` to the supervisor's socket
   (``/run/procview/seccomp.sock``). Nobody there: warn once, load no view
   filter, and the kernel answers those calls as usual.
2. The command loads the filter right before ``execve`` and sends the
   listener fd to ``procview run`` over a socketpair, then closes its copy
   (a container process must never hold its own listener).
3. ``procview run`` passes it on the OCI seccomp-agent way (what runc and
   crun do for ``linux.seccomp.listenerPath``): one message with the
   container-process-state JSON and the fd as SCM_RIGHTS.
4. While the container runs, ``procview run`` keeps its own copy of the fd
   and the connection, and watches the connection. If the supervisor goes
   away (stopped, crashed, restarting) the connection reports EOF and
   procview run answers every notification itself with *continue*: the
   real syscall runs, nothing hangs. Every second it tries to reach a
   supervisor again and, once one answers, hands the fd over anew and
   stops answering.

A thread whose call the supervisor had already received when it died stays
stopped until it is killed: the kernel keeps that notification for
whoever answers it, and its id died with the supervisor. Only that one call
of that one thread is affected.
"""

from __future__ import annotations

import json
import os
import socket
import time

from procview import DEFAULT_SECCOMP_SOCKET
from procview.seccomp_notify import Listener


DEFAULT_SOCKET = DEFAULT_SECCOMP_SOCKET


def _log_warning(text: str) -> None:
    import logging  # only when there is something to say: procview run does not import it otherwise

    logging.getLogger(__name__).warning("%s", text)
OCI_VERSION = "1.0.2"
SECCOMP_FD_NAME = "seccompFd"  # the OCI name of the listener in "fds"
RECONNECT_EVERY = 1.0  # seconds, while no supervisor is answering


def connect(path: str) -> socket.socket | None:
    """A connection to the supervisor at ``path``, or None."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    return sock


def state_message(container_id: str, pid: int, bundle: str, status: str = "running") -> bytes:
    """The OCI ``ContainerProcessState`` a seccomp agent receives."""
    state = {
        "ociVersion": OCI_VERSION,
        "fds": [SECCOMP_FD_NAME],
        "pid": pid,
        "metadata": "",
        "state": {
            "ociVersion": OCI_VERSION, "id": container_id, "status": status, "pid": pid, "bundle": bundle,
            "annotations": {},
        },
    }
    return json.dumps(state).encode()


def with_view_filter(security, root: str):
    """``security`` (a SecurityPlan) with the view filter added (built once
    per machine, cached under ``root``). Raises SeccompError or OSError."""
    from procview.runtime.security.programs import view_program

    return security._replace(view_filter=view_program(cache_dir=os.path.join(root, "seccomp")))


def link_listener(listener_parent: socket.socket, agent: socket.socket, path: str, container_id: str, pid: int,
                  bundle: str, warn) -> "AgentLink | None":
    """Receive the listener fd the command sent before its execve (step 2)
    and hand it to the supervisor (step 3); the returned link owns
    ``agent`` from then on. None if no fd came."""
    from procview.runtime.process import receive_fd

    listener_parent.settimeout(5.0)  # sent before execve, which has happened
    listener_fd = receive_fd(listener_parent)
    if listener_fd is None:
        warn("the seccomp listener did not arrive: sysinfo() and sched_getaffinity() are not virtualized")
        agent.close()
        return None
    return AgentLink(path, agent, listener_fd, state_message(container_id, pid, bundle), warn)


def hand_over(sock: socket.socket, message: bytes, fd: int) -> bool:
    try:
        socket.send_fds(sock, [message], [fd])
        return True
    except OSError:
        return False


class AgentLink:
    """procview run's side of one container's supervision (step 4 above).

    ``fds()`` are what the caller's select loop watches, ``ready(fd)`` is
    called for each that is readable, ``timeout()`` bounds the wait.
    """

    def __init__(self, path: str, sock: socket.socket, listener_fd: int, message: bytes, warn=None):
        self.path = path
        self.message = message
        self.listener = Listener(listener_fd)
        self.warn = warn or _log_warning
        self.sock: socket.socket | None = sock
        self.finished = False  # every process with the filter has exited
        self._next_attempt = 0.0
        if not hand_over(sock, message, listener_fd):
            self._lost()

    @property
    def answering(self) -> bool:
        """True while procview run itself answers (no supervisor)."""
        return self.sock is None

    def fds(self) -> list[int]:
        if self.finished:
            return []
        return [self.listener.fd] if self.sock is None else [self.sock.fileno()]

    def timeout(self) -> float | None:
        if self.sock is not None or self.finished:
            return None
        return max(0.0, self._next_attempt - time.monotonic())

    def ready(self, fd: int) -> None:
        if self.sock is not None and fd == self.sock.fileno():
            try:
                data = self.sock.recv(4096)
            except OSError:
                data = b""
            if not data:
                # The supervisor closes it when the container's last
                # process has exited (then so have we), or when it dies.
                if self.listener.state()[1]:
                    self._finish()
                else:
                    self._lost()
            return
        if self.sock is None and fd == self.listener.fd:
            self._answer_continue()

    def tick(self) -> None:
        """Called after every wait: retry the supervisor when due."""
        if self.finished:
            return
        if self.sock is None and self.listener.state()[1]:
            self._finish()
            return
        if self.sock is None and time.monotonic() >= self._next_attempt:
            self._next_attempt = time.monotonic() + RECONNECT_EVERY
            sock = connect(self.path)
            if sock is not None and hand_over(sock, self.message, self.listener.fd):
                self.sock = sock
                self.warn(f"seccomp supervisor at {self.path} is back: sysinfo and sched_getaffinity are virtualized again")
            elif sock is not None:
                sock.close()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.listener.close()

    def _finish(self) -> None:
        self.finished = True
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _lost(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None
        self._next_attempt = time.monotonic() + RECONNECT_EVERY
        self.warn(f"seccomp supervisor at {self.path} went away: sysinfo and sched_getaffinity get the kernel's answers")

    def _answer_continue(self) -> None:
        pending, _gone = self.listener.state()
        if not pending:
            return
        notification = self.listener.receive()
        if notification is not None:
            self.listener.respond(notification.id, continue_=True)


def wait_for_exit(pid: int, link: AgentLink | None) -> int:
    """waitpid(pid) while serving ``link``; the wait status."""
    import select

    pidfd = os.pidfd_open(pid)
    try:
        while True:
            watched = [pidfd] + (link.fds() if link else [])
            try:
                ready, _, _ = select.select(watched, [], [], link.timeout() if link else None)
            except InterruptedError:
                continue
            if pidfd in ready:
                break
            for fd in ready:
                link.ready(fd)
            if link:
                link.tick()
    finally:
        os.close(pidfd)
    from procview.runtime.process import reap

    return reap(pid)


__all__ = [
    "AgentLink", "connect", "state_message", "hand_over", "with_view_filter", "link_listener", "wait_for_exit",
    "DEFAULT_SOCKET",
]
