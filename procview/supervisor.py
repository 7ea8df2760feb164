"""The seccomp supervisor: ``procview serve`` answers sysinfo() and sched_getaffinity().

A runtime hands over a container's seccomp listener fd on a unix socket
(``/run/procview/seccomp.sock`` by default) with the OCI seccomp-agent
protocol, as runc and crun do for ``linux.seccomp.listenerPath`` and
``procview run`` does for its own containers: one message carrying the
``ContainerProcessState`` JSON and, as SCM_RIGHTS, the fds its ``fds``
list names; the listener is the one named ``seccompFd``.

From then on one trio task per listener waits for notifications and
answers each from the view engine, with the numbers the files show
(``views/sysinfo.py``):

- ``sysinfo``: the container's struct written to the caller's buffer;
- ``sched_getaffinity(0, ...)``: the real syscall made for the caller
  (so its EINVAL and byte count are the kernel's), the mask cut to the
  container's CPU count;
- anything else, a caller outside any limited container, another
  architecture, a thread this namespace cannot see: *continue*, i.e. the
  real syscall runs.

Every listener has its own task. After an answer it watches its listener
for FOLLOW_UP_WAIT (30 µs) before it parks: calls come in bursts (a JVM
asking for its CPU count, a tool reading sysinfo in a loop), and catching
the next one while the process is still on the CPU answers it in ~47 µs
instead of ~128 (a parked daemon wakes with cold caches, and trio's turn
costs its own; docs/performance.md). It is the trade the kernel's halt-polling and adaptive
mutexes make: at most 30 µs of CPU after an answer no call follows. A
burst gets at most BURST_ANSWERS answers per turn of the event loop, so a
container calling sysinfo in a tight loop cannot starve another
container's calls, nor the FUSE requests. A listener ends
when its last process exits (the kernel reports POLLHUP). The connection
that brought it stays open as long as the listener lives: ``procview run``
takes its EOF as "the supervisor is gone" and falls back.

Bad input (garbage, no fd, an fd that is not a listener, a client that
sends nothing) costs one log line and that connection, nothing else. A
client that connects and closes without sending a byte is a liveness
probe (``procview-runc``, a second daemon) and is dropped silently.
"""

from __future__ import annotations

import array
import json
import logging
import os
import socket
import time

import trio

from procview import DEFAULT_SECCOMP_SOCKET, seccomp_notify, unix_socket
from procview.views.sysinfo import cut_mask, pack_sysinfo

log = logging.getLogger(__name__)

DEFAULT_SOCKET = DEFAULT_SECCOMP_SOCKET
HELLO_TIMEOUT = 5.0  # seconds a client has to send its message
MAX_MESSAGE = 64 * 1024  # the state JSON (runc's carries annotations)
MAX_FDS = 16
FOLLOW_UP_WAIT = 30e-6  # seconds a listener is watched after an answer (see above)
BURST_ANSWERS = 16  # answers per turn of the event loop, at most


class SupervisorError(Exception):
    """The supervisor cannot start (one line for the user)."""


class Supervisor:
    """Answers the view syscalls of every listener handed to it."""

    def __init__(self, engine, socket_path: str = DEFAULT_SOCKET, notify=seccomp_notify):
        self.engine = engine
        self.socket_path = socket_path
        self.notify = notify
        self.sysinfo_nr = notify.syscall_number("sysinfo")
        self.getaffinity_nr = notify.syscall_number("sched_getaffinity")
        self.native_arch = notify.native_arch()
        self.listeners = 0  # live listeners (tests and logs)
        self.answered = 0

    # -- the socket -------------------------------------------------------------

    def bind(self) -> socket.socket:
        """The listening socket at ``socket_path``: a stale one (its daemon
        died) is replaced, a live one refused."""
        try:
            return unix_socket.listen(self.socket_path, "supervisor")
        except unix_socket.ListenError as exc:
            raise SupervisorError(str(exc)) from None

    async def serve(self, sock: socket.socket, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Accept runtimes until cancelled; removes the socket at the end."""
        listening = trio.socket.from_stdlib_socket(sock)
        try:
            async with trio.open_nursery() as nursery:
                task_status.started()
                while True:
                    conn, _ = await listening.accept()
                    nursery.start_soon(self._client, conn)
        finally:
            listening.close()
            try:
                os.unlink(self.socket_path)
            except FileNotFoundError:
                pass

    async def _client(self, conn) -> None:
        with conn:
            with trio.move_on_after(HELLO_TIMEOUT) as scope:
                try:
                    message, fds = await _receive_with_fds(conn)
                except OSError as exc:
                    log.warning("seccomp socket: a client failed: %s", exc.strerror or exc)
                    return
            if scope.cancelled_caught:
                log.warning("seccomp socket: a client sent nothing for %.0f s; dropped", HELLO_TIMEOUT)
                return
            if not message and not fds:
                # Connected and closed: a liveness probe (procview-runc's
                # check before it adds listenerPath, a second daemon's
                # stale-socket check). Nothing to say.
                log.debug("seccomp socket: a probe (connected, sent nothing, closed)")
                return
            try:
                name, listener_fd = self._listener_of(message, fds)
            except ValueError as exc:
                log.warning("seccomp socket: %s; dropped", exc)
                for fd in fds:
                    os.close(fd)
                return
            for fd in fds:
                if fd != listener_fd:
                    os.close(fd)
            await self.supervise(listener_fd, name, conn)

    def _listener_of(self, message: bytes, fds: list[int]) -> tuple[str, int]:
        """(a name for logs, the listener fd) from one agent message."""
        if not fds:
            raise ValueError("a message without an fd")
        try:
            state = json.loads(message)
            names = state["fds"]
            if not isinstance(names, list):
                raise TypeError(names)
            index = names.index("seccompFd")
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ValueError("not an OCI container process state naming a seccompFd") from None
        if index >= len(fds):
            raise ValueError(f"'fds' names {len(names)} fds but {len(fds)} came")
        if not _is_listener(fds[index]):
            raise ValueError("the seccompFd is not a seccomp listener")
        inner = state.get("state") if isinstance(state.get("state"), dict) else {}
        name = f"container {str(inner.get('id', '?'))[:12]} (pid {state.get('pid', '?')})"
        return name, fds[index]

    # -- one listener -----------------------------------------------------------

    async def supervise(self, fd: int, name: str, conn=None) -> None:
        """Answer ``fd``'s notifications until its processes are gone."""
        try:
            listener = self.notify.Listener(fd)
        except OSError as exc:
            os.close(fd)
            log.warning("seccomp: %s: %s", name, exc)
            return
        self.listeners += 1
        log.info("seccomp: supervising %s", name)
        try:
            while True:
                try:
                    await trio.lowlevel.wait_readable(listener.fd)
                except OSError as exc:  # epoll refuses it: not a listener after all
                    log.warning("seccomp: %s: cannot wait on its fd (%s); dropped", name, exc.strerror or exc)
                    return
                pending, gone = listener.state()
                answers = 0
                deadline = 0.0
                while True:
                    if pending:
                        try:
                            notification = listener.receive()
                        except OSError as exc:
                            log.warning("seccomp: %s: not a listener (%s); dropped", name, exc.strerror or exc)
                            return
                        if notification is not None:
                            self.answer(listener, notification)
                        answers += 1
                        deadline = time.perf_counter() + FOLLOW_UP_WAIT
                    elif gone:
                        return
                    if answers == 0 or answers >= BURST_ANSWERS or time.perf_counter() >= deadline:
                        break
                    pending, gone = listener.state()
                # wait_readable always parks the task until the next turn of
                # the loop, so other listeners and FUSE requests go in between.
        finally:
            self.listeners -= 1
            listener.close()
            log.info("seccomp: %s ended", name)

    def answer(self, listener, notification) -> None:
        """Answer one notification; never raises, never leaves it waiting."""
        try:
            self._answer(listener, notification)
        except Exception:  # noqa: BLE001 - a bug here must not stall the caller
            # The first failure of each syscall with its traceback; then
            # quietly (a caller in a loop would flood the log).
            self.engine.warn_once(f"seccomp:{notification.syscall}", "seccomp: answering syscall %d of thread %d "
                                  "failed; the kernel answers it", notification.syscall, notification.pid, exc_info=True)
            try:
                listener.respond(notification.id, continue_=True)
            except OSError:
                pass

    def _answer(self, listener, notification) -> None:
        self.answered += 1
        if notification.pid == 0 or notification.arch != self.native_arch:
            listener.respond(notification.id, continue_=True)
        elif notification.syscall == self.sysinfo_nr:
            self._sysinfo(listener, notification)
        elif notification.syscall == self.getaffinity_nr:
            self._sched_getaffinity(listener, notification)
        else:
            listener.respond(notification.id, continue_=True)

    def _sysinfo(self, listener, notification) -> None:
        values = self.engine.sysinfo(notification.pid)
        if values is None:
            listener.respond(notification.id, continue_=True)
            return
        error = self.notify.write_target(listener, notification, notification.args[0], pack_sysinfo(values))
        listener.respond(notification.id, 0, error)

    def _sched_getaffinity(self, listener, notification) -> None:
        target, length, address = notification.args[0] & 0xFFFFFFFF, notification.args[1] & 0xFFFFFFFF, notification.args[2]
        count = self.engine.affinity_count(notification.pid) if target == 0 else None
        if count is None:
            # A pid in the caller's own namespace, or no CPU limit: the
            # kernel's answer.
            listener.respond(notification.id, continue_=True)
            return
        result, mask = self.notify.real_sched_getaffinity(notification.pid, length)
        if result < 0:
            listener.respond(notification.id, 0, -result)
            return
        error = self.notify.write_target(listener, notification, address, cut_mask(mask, count))
        listener.respond(notification.id, result, error)


async def _receive_with_fds(conn) -> tuple[bytes, list[int]]:
    """One message and the fds that came with it (up to EOF or MAX_MESSAGE)."""
    chunks: list[bytes] = []
    fds: list[int] = []
    size = 0
    while size < MAX_MESSAGE:
        data, ancdata, _flags, _addr = await conn.recvmsg(MAX_MESSAGE - size, socket.CMSG_SPACE(MAX_FDS * 4))
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                received = array.array("i")
                received.frombytes(payload[: len(payload) - len(payload) % received.itemsize])
                fds.extend(received)
        if not data:
            break
        chunks.append(data)
        size += len(data)
        if _complete_json(b"".join(chunks)):
            break
    return b"".join(chunks), fds


def _is_listener(fd: int) -> bool:
    """Whether ``fd`` is a seccomp user-notification listener (the kernel
    names its anonymous inode so)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:seccomp notify"
    except OSError:
        return False


def _complete_json(data: bytes) -> bool:
    try:
        json.loads(data)
        return True
    except ValueError:
        return False


__all__ = ["Supervisor", "SupervisorError", "DEFAULT_SOCKET"]
