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
   container-process-state JSON and the fd as SCM_RIGHTS. At the socket
   is the listener holder (``procview/listener_holder.py``), which keeps
   the listener across restarts of ``procview serve`` and answers
   *continue* while no supervisor is attached.
4. While the container runs, ``procview run`` keeps its own copy of the fd
   and the connection, and watches the connection. If the holder goes
   away (stopped, killed) the connection reports EOF, and after
   TAKEOVER_DELAY procview run answers every notification itself with
   *continue*: the real syscall runs, nothing hangs. (The delay lets the
   supervisor, which learns of the holder's end at the same moment, give
   its copy up first: two receivers on one listener could block each
   other in the kernel.) Every second it tries the socket again and, once
   a holder answers, hands the fd over anew and stops answering.

A thread whose call the holder was answering when it was killed stays
stopped until it is killed too: the kernel keeps that notification for
whoever answers its id, and its id died with the holder. Only that one
call of that one thread is affected.
"""

from __future__ import annotations

import os
import socket
import time

from procview import DEFAULT_SECCOMP_SOCKET, seccomp_agent
from procview.seccomp_agent import hand_over  # shared with the supervisor
from procview.seccomp_notify import Listener
from procview.unix_socket import connect


DEFAULT_SOCKET = DEFAULT_SECCOMP_SOCKET


def _log_warning(text: str) -> None:
    import logging  # only when there is something to say: procview run does not import it otherwise

    logging.getLogger(__name__).warning("%s", text)


RECONNECT_EVERY = 1.0  # seconds, while no holder is answering
TAKEOVER_DELAY = 1.0  # seconds between losing the holder and answering calls ourselves (see above)


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
    message = seccomp_agent.state_message(container_id, pid, bundle, metadata=seccomp_agent.KEEPS_A_COPY)
    return AgentLink(path, agent, listener_fd, message, warn)


class AgentLink:
    """procview run's side of one container's supervision (step 4 above).

    ``fds()`` are what the caller's select loop watches, ``ready(fd)`` is
    called for each that is readable, ``timeout()`` bounds the wait,
    ``tick()`` comes after every wait.
    """

    def __init__(self, path: str, sock: socket.socket, listener_fd: int, message: bytes, warn=None):
        self.path = path
        self.message = message
        self.listener = Listener(listener_fd)
        self.warn = warn or _log_warning
        self.sock: socket.socket | None = sock
        self.finished = False  # every process with the filter has exited
        self._next_attempt = 0.0
        self._answer_from = 0.0  # when we may receive calls ourselves, once no holder has the listener
        if not hand_over(sock, message, listener_fd):
            self._lost(handed=False)

    @property
    def answering(self) -> bool:
        """True while procview run itself answers (no holder)."""
        return self.sock is None and time.monotonic() >= self._answer_from

    def fds(self) -> list[int]:
        if self.finished:
            return []
        if self.sock is not None:
            return [self.sock.fileno()]
        return [self.listener.fd] if self.answering else []

    def timeout(self) -> float | None:
        if self.sock is not None or self.finished:
            return None
        due = self._next_attempt if self.answering else min(self._next_attempt, self._answer_from)
        return max(0.0, due - time.monotonic())

    def ready(self, fd: int) -> None:
        if self.sock is not None and fd == self.sock.fileno():
            try:
                data = self.sock.recv(4096)
            except OSError:
                data = b""
            if not data:
                # The holder closes it when the container's last process
                # has exited (then so have we), or when it is stopped or dies.
                if self.listener.state()[1]:
                    self._finish()
                else:
                    self._lost()
            return
        if self.sock is None and fd == self.listener.fd:
            self.listener.let_run()

    def tick(self) -> None:
        """Called after every wait: retry the holder when due."""
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
                self.warn(f"a listener holder at {self.path} is back: sysinfo and sched_getaffinity are virtualized again")
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

    def _lost(self, handed: bool = True) -> None:
        """No holder has the listener any more (``handed``: one had it, and
        its supervisor may be letting go of its copy right now)."""
        if self.sock is not None:
            self.sock.close()
        self.sock = None
        now = time.monotonic()
        self._next_attempt = now + RECONNECT_EVERY
        self._answer_from = now + TAKEOVER_DELAY if handed else now
        self.warn(f"the listener holder at {self.path} went away: sysinfo and sched_getaffinity get the kernel's answers")


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
    "AgentLink", "connect", "hand_over", "with_view_filter", "link_listener", "wait_for_exit",
    "DEFAULT_SOCKET",
]
