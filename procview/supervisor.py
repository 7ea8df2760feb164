"""The seccomp supervisor: ``procview serve`` answers sysinfo() and sched_getaffinity().

Runtimes hand over a container's seccomp listener fd on a unix socket
(``/run/procview/seccomp.sock`` by default) with the OCI seccomp-agent
protocol (``seccomp_agent.py``), as runc and crun do for
``linux.seccomp.listenerPath`` and ``procview run`` does for its own
containers. That socket belongs to the *listener holder*
(``listener_holder.py``), a small process that keeps every listener for
as long as its container lives, so that the listeners outlive this
daemon. The supervisor attaches to the holder (starting one if none
answers) and receives a copy of every live listener from it, then each
new one as it comes; when the holder goes, it gives its copies up and
attaches to the next holder.

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
when its last process exits (the kernel reports POLLHUP).

Calls are received into the holder's in-flight slot, a shared page: if
this daemon dies between receiving a call and answering it, the holder
finds the call's id there and answers it (continue).
The link to the holder is closed only after every listener task has
closed its copy: the holder answers calls itself once the link is gone,
and two receivers on one listener could block each other in the kernel.
"""

from __future__ import annotations

import logging
import mmap
import os
import socket
import time

import trio

from procview import DEFAULT_SECCOMP_SOCKET, listener_holder, seccomp_agent, seccomp_notify, unix_socket
from procview.views.sysinfo import cut_mask, pack_sysinfo

log = logging.getLogger(__name__)

DEFAULT_SOCKET = DEFAULT_SECCOMP_SOCKET
FOLLOW_UP_WAIT = 30e-6  # seconds a listener is watched after an answer (see above)
BURST_ANSWERS = 16  # answers per turn of the event loop, at most
REATTACH_EVERY = 1.0  # seconds between attempts to reach a holder after the last one went


class SupervisorError(Exception):
    """The supervisor cannot start (one line for the user)."""


class _Supervised:
    """One listener this daemon answers: its fd, the state the runtime
    sent with it, and the cancel scope of its task."""

    def __init__(self, fd: int, state: dict):
        self.fd = fd
        self.state = state
        self.name = seccomp_agent.describe(state)
        self.scope = trio.CancelScope()
        self.ended = False  # its task has closed the fd


class Supervisor:
    """Answers the view syscalls of every listener the holder hands it."""

    def __init__(self, engine, socket_path: str = DEFAULT_SOCKET, notify=seccomp_notify, spawn_holder: bool = True):
        self.engine = engine
        self.socket_path = socket_path
        self.notify = notify
        self.spawn_holder = spawn_holder  # start a holder when none answers (not under systemd: it has its own unit)
        self.sysinfo_nr = notify.syscall_number("sysinfo")
        self.getaffinity_nr = notify.syscall_number("sched_getaffinity")
        self.native_arch = notify.native_arch()
        self.listeners = 0  # live listeners (tests and logs)
        self.answered = 0
        self._slot = bytearray(listener_holder.SLOT)  # where calls are received: the holder's shared page once attached
        self._attached: listener_holder.Attached | None = None
        self._holders_started = []  # holders this daemon started (reaped once they exit)

    # -- the holder -------------------------------------------------------------

    def attach(self) -> None:
        """Attach to the holder at ``socket_path`` (or start one), waiting
        for one to answer when this daemon may not start it. Raises
        SupervisorError for a holder that serves another supervisor, or
        one that cannot be started."""
        attached = self._find_holder()
        if attached is None:
            log.warning("no listener holder at %s yet (procview-listener-holder.service); waiting for one",
                        self.socket_path)
            while attached is None:
                time.sleep(REATTACH_EVERY)
                attached = self._find_holder()
        self._use(attached)

    def detach(self) -> None:
        """Close the link to the holder before ``serve`` ran (the mount
        failed): the holder answers its listeners itself again."""
        if self._attached is not None:
            self._attached.link.close()
            self._attached = None

    def _find_holder(self) -> listener_holder.Attached | None:
        """One attempt (blocking: a holder started here is waited for);
        None if no holder answers and none may be started."""
        self._holders_started = [p for p in self._holders_started if p.poll() is None]  # reap the exited
        try:
            return listener_holder.attach(self.socket_path, self.spawn_holder, _log_level())
        except listener_holder.HolderError as exc:
            raise SupervisorError(str(exc)) from None

    def _use(self, attached: listener_holder.Attached) -> None:
        """Take ``attached`` as the holder (in the thread that answers calls:
        the in-flight slot changes here)."""
        if attached.process is not None:
            self._holders_started.append(attached.process)
        try:
            # The old page stays mapped while listeners of the last holder
            # still receive into it (until they are handed to this one).
            self._slot = memoryview(mmap.mmap(attached.slot_fd, listener_holder.SLOT))
        finally:
            os.close(attached.slot_fd)
        self._attached = attached
        log.info("attached to the listener holder (pid %d) at %s", attached.pid, self.socket_path)

    async def serve(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Supervise the holder's listeners until cancelled; ``started``
        once the holder has handed over every listener it held. When the
        holder goes, attach to the next one (``attach`` must have
        succeeded once)."""
        try:
            async with trio.open_nursery() as nursery:
                orphans: list[_Supervised] = []
                while True:
                    orphans = self._hand_back(orphans)
                    supervised = await self._follow(nursery, task_status)
                    task_status = trio.TASK_STATUS_IGNORED
                    self._attached.link.close()  # the holder is gone: nobody to order this against
                    self._attached = None
                    orphans = self._holder_gone(supervised + orphans)
                    await self._reattach()
        finally:
            # Only now that every listener task has closed its copy: the
            # holder starts answering the calls itself when the link closes.
            if self._attached is not None:
                self._attached.link.close()

    async def _follow(self, nursery, task_status) -> list[_Supervised]:
        """Supervise each listener the holder sends until it closes the
        link; the listeners it brought."""
        link = trio.socket.from_stdlib_socket(self._attached.link)
        supervised = []
        while True:
            try:
                data, ancdata, _flags, _ = await link.recvmsg(seccomp_agent.MAX_MESSAGE,
                                                               socket.CMSG_SPACE(seccomp_agent.MAX_FDS * 4))
            except OSError:
                data, ancdata = b"", []
            fds = seccomp_agent.fds_of(ancdata)
            if not data and not fds:
                return supervised  # the holder is gone
            if fds:
                entry = _supervised(data, fds)
                if entry is not None:
                    supervised = [e for e in supervised if not e.ended] + [entry]  # ended containers are forgotten
                    nursery.start_soon(self._supervise, entry)
            elif _is_synced(data):
                task_status.started()
                task_status = trio.TASK_STATUS_IGNORED

    async def _supervise(self, entry: _Supervised) -> None:
        try:
            with entry.scope:
                await self.supervise(entry.fd, entry.name)
        finally:
            entry.ended = True

    def _holder_gone(self, supervised: list[_Supervised]) -> list[_Supervised]:
        """The holder died or was stopped, and its copies with it. A
        listener whose runtime keeps a copy (procview run) is given up: that
        runtime answers it after a delay and hands it to the next holder
        (both answering would risk blocking each other in the kernel).
        Any other listener (runc's, crun's) now lives in this daemon alone:
        it stays supervised, and goes to the next holder. Returns those."""
        alive = [e for e in supervised if not e.ended]
        orphans = [e for e in alive if not seccomp_agent.keeps_a_copy(e.state)]
        for entry in alive:
            if entry not in orphans:
                entry.scope.cancel()
        log.warning("the listener holder at %s went away: %d listeners given up to the procview run that keeps "
                    "them, %d kept here until the next holder takes them", self.socket_path,
                    len(alive) - len(orphans), len(orphans))
        return orphans

    def _hand_back(self, orphans: list[_Supervised]) -> list[_Supervised]:
        """Hand the listeners the last holder took with it to the new one,
        the way a runtime hands one over; it passes them back to us. Those
        it did not take (it failed, or went too) are returned."""
        kept = []
        for entry in orphans:
            if entry.ended:
                continue
            sock = unix_socket.connect(self.socket_path)
            if sock is not None and seccomp_agent.hand_over(sock, seccomp_agent.listener_only(entry.state), entry.fd):
                entry.scope.cancel()  # our old copy; the holder's comes back on the link
            else:
                log.warning("%s: the new listener holder did not take it; kept here", entry.name)
                kept.append(entry)
            if sock is not None:
                sock.close()
        return kept

    async def _reattach(self) -> None:
        said = False
        while True:
            try:  # in a thread: starting a holder waits for its hello
                attached = await trio.to_thread.run_sync(self._find_holder, abandon_on_cancel=True)
            except SupervisorError as exc:
                attached = None
                if not said:
                    log.warning("%s; trying again every %.0f s", exc, REATTACH_EVERY)
                    said = True
            if attached is not None:
                self._use(attached)
                return
            await trio.sleep(REATTACH_EVERY)

    # -- one listener -----------------------------------------------------------

    async def supervise(self, fd: int, name: str) -> None:
        """Answer ``fd``'s notifications until its processes are gone."""
        try:
            listener = self.notify.Listener(fd, self._slot)
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

    def answer(self, listener, notification) -> str:
        """Answer one notification; never raises, never leaves it waiting.
        Says how: "view" (the container's own value, or the errno the
        kernel would give), "kernel" (the real syscall runs), "failed" (a
        bug; the real syscall runs)."""
        try:
            return self._answer(listener, notification)
        except Exception:  # noqa: BLE001 - a bug here must not stall the caller
            # The first failure of each syscall with its traceback; then
            # quietly (a caller in a loop would flood the log).
            self.engine.warn_once(f"seccomp:{notification.syscall}", "seccomp: answering syscall %d of thread %d "
                                  "failed; the kernel answers it", notification.syscall, notification.pid, exc_info=True)
            try:
                listener.respond(notification.id, continue_=True)
            except OSError:
                pass
            return "failed"

    def _answer(self, listener, notification) -> str:
        self.answered += 1
        if notification.pid == 0 or notification.arch != self.native_arch:
            listener.respond(notification.id, continue_=True)
            return "kernel"
        if notification.syscall == self.sysinfo_nr:
            return self._sysinfo(listener, notification)
        if notification.syscall == self.getaffinity_nr:
            return self._sched_getaffinity(listener, notification)
        listener.respond(notification.id, continue_=True)
        return "kernel"

    def _sysinfo(self, listener, notification) -> str:
        values = self.engine.sysinfo(notification.pid)
        if values is None:
            listener.respond(notification.id, continue_=True)
            return "kernel"
        error = self.notify.write_target(listener, notification, notification.args[0], pack_sysinfo(values))
        listener.respond(notification.id, 0, error)
        return "view"

    def _sched_getaffinity(self, listener, notification) -> str:
        target, length, address = notification.args[0] & 0xFFFFFFFF, notification.args[1] & 0xFFFFFFFF, notification.args[2]
        count = self.engine.affinity_count(notification.pid) if target == 0 else None
        if count is None:
            # A pid in the caller's own namespace, or no CPU limit: the
            # kernel's answer.
            listener.respond(notification.id, continue_=True)
            return "kernel"
        result, mask = self.notify.real_sched_getaffinity(notification.pid, length)
        if result < 0:
            listener.respond(notification.id, 0, -result)
            return "view"
        error = self.notify.write_target(listener, notification, address, cut_mask(mask, count))
        listener.respond(notification.id, result, error)
        return "view"


def _supervised(message: bytes, fds: list[int]) -> _Supervised | None:
    """The listener in one of the holder's messages (it checked it; a bad
    one would be a bug: logged and dropped)."""
    try:
        state, index = seccomp_agent.parse(message, fds)
        if not seccomp_agent.is_listener(fds[index]):
            raise ValueError("the seccompFd is not a seccomp listener")
    except ValueError as exc:
        log.warning("listener holder: %s; dropped", exc)
        seccomp_agent.close_all(fds)
        return None
    seccomp_agent.close_all(fds, keep=fds[index])
    return _Supervised(fds[index], state)


def _log_level() -> str:
    """This daemon's log level, for a holder it starts."""
    return logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()


def _is_synced(message: bytes) -> bool:
    try:
        return listener_holder.parse_control(message)[0] == listener_holder.SYNCED
    except ValueError:
        return False


__all__ = ["Supervisor", "SupervisorError", "DEFAULT_SOCKET"]
