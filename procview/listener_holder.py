"""The listener holder: keeps containers' seccomp listeners while ``procview serve`` comes and goes.

A container's view filter sends ``sysinfo`` and ``sched_getaffinity`` to a
*listener* fd. The kernel keeps the filter's notifications alive only as
long as some process holds that fd: when the last copy is closed, every
notified call fails with ENOSYS for the rest of the container's life. runc
and crun (``linux.seccomp.listenerPath``) hand the listener over and keep
no copy, so the process holding it must outlive ``procview serve``, which
may crash, be killed by the OOM killer, or be restarted for an upgrade.

That process is this one: small (the standard library and procview's thin
seccomp layer, no view engine, no FUSE), a single poll loop, no threads.

- It listens at the agent socket (``/run/procview/seccomp.sock``), where
  runtimes connect and send each container's listener (OCI seccomp-agent
  protocol, ``seccomp_agent.py``), and keeps every listener until its
  container is gone (the listener reports POLLHUP once the last process
  using the filter has been reaped). The runtime's connection stays open
  as long as the listener lives: procview run watches it.
- It listens at the supervisor socket (``seccomp-supervisor.sock`` next to
  it, SOCK_SEQPACKET: one record per message) for the one ``procview
  serve`` that answers the calls. To it, it sends a hello, a copy of every
  live listener (the state JSON naming only the listener, the fd as
  SCM_RIGHTS), "synced", and from then on each new listener as it comes.
- While no supervisor is attached it answers every call itself with
  CONTINUE (the real syscall runs, as without a filter), so nothing fails
  and nothing hangs. While one is attached it never receives a
  notification: two receivers on one listener can block each other in the
  kernel (the receive ioctl waits for the next call, O_NONBLOCK or not).
  The supervisor closes its end only after it has closed its copies of the
  listeners; a supervisor that died holds none.
- A supervisor killed between receiving a call and answering it leaves
  that thread stopped in the call: the kernel keeps the notification for
  whoever answers its id. So the supervisor receives its calls into a
  shared page (a memfd sent with the hello): the kernel writes each
  call's id there in the very ioctl that marks it received, the
  supervisor clears it once it has answered, and when the supervisor goes
  the holder answers the call whose id it finds there with CONTINUE.

With ``--exit-when-idle`` (a holder ``procview serve`` started) it exits
once it has neither a supervisor nor a listener; under systemd it runs as
its own unit, ``procview-listener-holder.service``, and stays.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import select
import signal
import socket
import sys
import time

from procview import DEFAULT_SECCOMP_SOCKET, seccomp_agent, unix_socket
from procview._io import raise_fd_limit
from procview.seccomp_notify import SHARED_BUFFER_SIZE, Listener, NotifyError, in_flight

log = logging.getLogger(__name__)

HELLO_TIMEOUT = 5.0  # seconds a runtime has to send its message
SEND_TIMEOUT = 5.0  # seconds a supervisor may leave a hand-over unread before it counts as gone
SWEEP_EVERY = 2.0  # seconds between looks for ended listeners while a supervisor answers
START_TIMEOUT = 120.0  # seconds a spawned holder may take to say hello (an emulated VM is slow)
SLOT = SHARED_BUFFER_SIZE  # the in-flight slot: where the supervisor receives its calls

# The holder's messages to a supervisor that are not listeners (JSON, no fd).
HELLO, BUSY, SYNCED, FAILED = "hello", "busy", "synced", "failed"


class HolderError(Exception):
    """The holder cannot start, or cannot be reached or started (one line)."""


class HolderBusy(HolderError):
    """Another supervisor is attached to the holder."""


def supervisor_socket(agent_socket: str) -> str:
    """Where a supervisor attaches, next to the agent socket:
    ``/run/procview/seccomp.sock`` -> ``/run/procview/seccomp-supervisor.sock``."""
    root, ext = os.path.splitext(agent_socket)
    return f"{root}-supervisor{ext or '.sock'}"


def control(kind: str, **fields) -> bytes:
    return json.dumps({"holder": kind, **fields}).encode()


def parse_control(message: bytes) -> tuple[str, dict]:
    """(kind, the message) of one of the holder's messages without an fd;
    ValueError if it is none."""
    try:
        fields = json.loads(message)
        kind = fields["holder"]
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"not a message of the listener holder: {message[:60]!r}") from None
    if not isinstance(kind, str):
        raise ValueError(f"not a message of the listener holder: {message[:60]!r}")
    return kind, fields


# -- the holder -------------------------------------------------------------------


class Held:
    """One container's listener, kept until its last process is gone."""

    def __init__(self, listener: Listener, message: bytes, name: str, client: socket.socket | None):
        self.listener = listener
        self.message = message  # what a supervisor receives with it
        self.name = name
        self.client = client  # the runtime's connection, open while the listener lives


class Incoming:
    """A runtime's connection whose message is still arriving."""

    def __init__(self, conn: socket.socket, deadline: float):
        self.conn = conn
        self.deadline = deadline
        self.data = bytearray()
        self.fds: list[int] = []


class ListenerHolder:
    """The poll loop: both listening sockets, the supervisor's link, the
    runtimes' connections and, while no supervisor answers, the listeners."""

    def __init__(self, agent: socket.socket, supervisors: socket.socket, exit_when_idle: bool = False):
        self.agent = agent
        self.supervisors = supervisors
        self.exit_when_idle = exit_when_idle
        self.supervisor: socket.socket | None = None
        self.held: set[Held] = set()
        self.incoming: dict[int, Incoming] = {}
        self.answered = 0  # calls answered with CONTINUE (tests, logs)
        self._slot_fd = os.memfd_create("procview-in-flight", os.MFD_CLOEXEC)
        os.ftruncate(self._slot_fd, SLOT)
        self._slot = mmap.mmap(self._slot_fd, SLOT)
        self._next_sweep = 0.0

    # -- the loop --

    def run(self, stop_fd: int | None = None) -> None:
        """Serve until ``stop_fd`` is readable (a signal arrived) or, with
        ``exit_when_idle``, until there is nothing left to hold."""
        while not self._idle():
            handlers = self._watched(stop_fd)
            poller = select.poll()
            for fd, (events, _handler) in handlers.items():
                poller.register(fd, events)
            ready = poller.poll(self._timeout_ms())
            for fd, events in ready:
                if fd == stop_fd:
                    return
                if fd in handlers:
                    handlers[fd][1](events)
            self._expire(time.monotonic())

    def _idle(self) -> bool:
        return self.exit_when_idle and self.supervisor is None and not self.held and not self.incoming

    def _watched(self, stop_fd: int | None) -> dict:
        """fd -> (poll events, handler) for this turn."""
        watched = {
            self.agent.fileno(): (select.POLLIN, lambda _e: self._accept_runtime()),
            self.supervisors.fileno(): (select.POLLIN, lambda _e: self._accept_supervisor()),
        }
        if stop_fd is not None:
            watched[stop_fd] = (select.POLLIN, None)
        if self.supervisor is not None:
            watched[self.supervisor.fileno()] = (select.POLLIN, lambda _e: self._supervisor_spoke())
        for incoming in self.incoming.values():
            watched[incoming.conn.fileno()] = (select.POLLIN, lambda _e, i=incoming: self._read(i))
        for held in self.held:
            if held.client is not None:
                watched[held.client.fileno()] = (select.POLLIN, lambda _e, h=held: self._client_spoke(h))
            if self.supervisor is None:
                # POLLHUP comes whatever is asked for: the container is gone.
                watched[held.listener.fd] = (select.POLLIN, lambda e, h=held: self._listener_ready(h, e))
        return watched

    def _timeout_ms(self) -> int:
        deadlines = [i.deadline for i in self.incoming.values()]
        if self.supervisor is not None and self.held:
            deadlines.append(self._next_sweep)
        if not deadlines:
            return -1
        return max(0, int((min(deadlines) - time.monotonic()) * 1000) + 1)

    def _expire(self, now: float) -> None:
        for incoming in [i for i in self.incoming.values() if i.deadline <= now]:
            log.warning("seccomp socket: a client sent nothing for %.0f s; dropped", HELLO_TIMEOUT)
            self._drop(incoming)
        if self.supervisor is not None and now >= self._next_sweep:
            # The supervisor answers the calls, so the listeners are not
            # polled (each call would wake this process too): look for
            # the ended ones now and then.
            self._next_sweep = now + SWEEP_EVERY
            self._end_the_ended()

    def _end_the_ended(self) -> None:
        for held in [h for h in self.held if h.listener.state()[1]]:
            self._end(held)

    # -- runtimes (the agent socket) --

    def _accept_runtime(self) -> None:
        conn = _accept(self.agent)
        if conn is None:
            return
        conn.setblocking(False)
        self.incoming[conn.fileno()] = Incoming(conn, time.monotonic() + HELLO_TIMEOUT)

    def _read(self, incoming: Incoming) -> None:
        if self.incoming.get(incoming.conn.fileno()) is not incoming:
            return  # dropped earlier in this turn
        try:
            data, ancdata, _flags, _ = incoming.conn.recvmsg(seccomp_agent.MAX_MESSAGE - len(incoming.data),
                                                            socket.CMSG_SPACE(seccomp_agent.MAX_FDS * 4))
        except BlockingIOError:
            return
        except OSError as exc:
            log.warning("seccomp socket: a client failed: %s", exc.strerror or exc)
            self._drop(incoming)
            return
        incoming.fds += seccomp_agent.fds_of(ancdata)
        incoming.data += data
        complete = seccomp_agent.complete_json(bytes(incoming.data))
        if data and not complete and len(incoming.data) < seccomp_agent.MAX_MESSAGE:
            return  # more to come
        del self.incoming[incoming.conn.fileno()]
        self._take(incoming)

    def _take(self, incoming: Incoming) -> None:
        """Keep the listener a runtime sent (or drop what is not one)."""
        conn, fds = incoming.conn, incoming.fds
        if not incoming.data and not fds:
            # Connected and closed: a liveness probe (procview-runc's check
            # before it adds listenerPath, a second holder's stale-socket
            # check). Nothing to say.
            log.debug("seccomp socket: a probe (connected, sent nothing, closed)")
            conn.close()
            return
        try:
            state, index = seccomp_agent.parse(bytes(incoming.data), fds)
            if not seccomp_agent.is_listener(fds[index]):
                raise ValueError("the seccompFd is not a seccomp listener")
        except ValueError as exc:
            log.warning("seccomp socket: %s; dropped", exc)
            seccomp_agent.close_all(fds)
            conn.close()
            return
        seccomp_agent.close_all(fds, keep=fds[index])
        held = Held(Listener(fds[index]), seccomp_agent.listener_only(state), seccomp_agent.describe(state), conn)
        self.held.add(held)
        log.info("holding the listener of %s", held.name)
        if self.supervisor is not None:
            self._hand(held)

    def _drop(self, incoming: Incoming) -> None:
        self.incoming.pop(incoming.conn.fileno(), None)
        seccomp_agent.close_all(incoming.fds)
        incoming.conn.close()

    def _client_spoke(self, held: Held) -> None:
        """A runtime's connection became readable: runc closes its end
        right after sending (and so does a procview run that exited).
        Nothing else is expected on it."""
        if held.client is None or held not in self.held:
            return  # closed earlier in this turn
        try:
            data = held.client.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            held.client.close()
            held.client = None

    # -- the listeners --

    def _listener_ready(self, held: Held, events: int) -> None:
        if self.supervisor is not None or held not in self.held:
            return  # a supervisor attached earlier in this turn: it alone receives now
        if events & select.POLLIN:
            try:
                if held.listener.let_run():
                    self.answered += 1
            except NotifyError as exc:
                log.warning("%s: %s; dropped", held.name, exc)
                self._end(held)
                return
        if events & (select.POLLHUP | select.POLLERR | select.POLLNVAL) and not held.listener.state()[0]:
            self._end(held)

    def _end(self, held: Held) -> None:
        self.held.discard(held)
        held.listener.close()
        if held.client is not None:
            held.client.close()  # procview run takes its EOF, with the listener gone, as "finished"
        log.info("%s ended", held.name)

    # -- the supervisor (the private socket) --

    def _accept_supervisor(self) -> None:
        conn = _accept(self.supervisors)
        if conn is not None:
            self.attach(conn)

    def attach(self, conn: socket.socket) -> None:
        """Make ``conn`` the supervisor: hello, every live listener, synced.
        Refused (busy) while another live supervisor is attached."""
        if self.supervisor is not None:
            if _peer_alive(self.supervisor):
                log.warning("a second supervisor tried to attach; refused (one procview serve at a time)")
                _send_quietly(conn, control(BUSY, pid=os.getpid()))
                conn.close()
                return
            self._detach()
        conn.settimeout(SEND_TIMEOUT)
        self._slot[:] = bytes(SLOT)
        try:
            socket.send_fds(conn, [control(HELLO, pid=os.getpid())], [self._slot_fd])
        except OSError as exc:
            log.warning("a supervisor attached and went at once (%s)", exc.strerror or exc)
            conn.close()
            return
        self.supervisor = conn
        self._next_sweep = time.monotonic() + SWEEP_EVERY
        for held in list(self.held):
            if not self._hand(held):
                return
        if _send_quietly(conn, control(SYNCED, listeners=len(self.held))):
            log.info("a supervisor attached: it answers the calls of %d containers", len(self.held))
        else:
            self._detach()

    def _hand(self, held: Held) -> bool:
        """Send the supervisor a copy of ``held``'s listener; False (and
        detached) if it cannot take it."""
        try:
            socket.send_fds(self.supervisor, [held.message], [held.listener.fd])
            return True
        except OSError as exc:
            log.warning("handing %s to the supervisor failed (%s): it counts as gone", held.name, exc.strerror or exc)
            self._detach()
            return False

    def _supervisor_spoke(self) -> None:
        """The supervisor sends nothing: readable means it has gone."""
        if self.supervisor is None:
            return
        try:
            data = self.supervisor.recv(4096, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._detach()

    def _detach(self) -> None:
        self.supervisor.close()
        self.supervisor = None
        self._answer_in_flight()
        self._end_the_ended()
        if self.held:
            log.warning("the supervisor is gone: the calls of %d containers run unchanged (continue) until one attaches",
                        len(self.held))

    def _answer_in_flight(self) -> None:
        """Answer CONTINUE to the call a supervisor had received but not
        answered when it went (its id is in the slot; ids are random per
        listener, so only its own listener knows it)."""
        notification_id = in_flight(self._slot)
        self._slot[:] = bytes(SLOT)
        if not notification_id:
            return
        for held in self.held:
            if held.listener.id_valid(notification_id):
                held.listener.respond(notification_id, continue_=True)
                log.info("%s: answered the call its supervisor had taken when it went", held.name)
                return

    def close(self) -> None:
        for incoming in list(self.incoming.values()):
            self._drop(incoming)
        for held in list(self.held):
            self._end(held)
        if self.supervisor is not None:
            self.supervisor.close()
            self.supervisor = None
        self._slot.close()
        os.close(self._slot_fd)


def _accept(listening: socket.socket) -> socket.socket | None:
    try:
        return listening.accept()[0]
    except OSError:  # the client gave up already
        return None


def _peer_alive(conn: socket.socket) -> bool:
    """Whether the other end of ``conn`` is still there (no HUP, no EOF waiting)."""
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    return not poller.poll(0)  # the supervisor never sends: anything readable is its end


def _send_quietly(conn: socket.socket, message: bytes) -> bool:
    try:
        conn.send(message)
        return True
    except OSError:
        return False


# -- the daemon ---------------------------------------------------------------------


def bind(agent_path: str) -> tuple[socket.socket, socket.socket]:
    """The agent socket and the supervisor socket, both listening (a stale
    one replaced, a live one refused: HolderError)."""
    try:
        agent = unix_socket.listen(agent_path, "listener holder")
    except unix_socket.ListenError as exc:
        raise HolderError(str(exc)) from None
    try:
        supervisors = unix_socket.listen(supervisor_socket(agent_path), "listener holder", kind=socket.SOCK_SEQPACKET)
    except unix_socket.ListenError as exc:
        agent.close()
        _remove(agent_path)
        raise HolderError(str(exc)) from None
    return agent, supervisors


def serve(agent_path: str = DEFAULT_SECCOMP_SOCKET, supervisor_fd: int | None = None, exit_when_idle: bool = False,
          ready=None) -> None:
    """Hold listeners at ``agent_path`` until SIGTERM or SIGINT (or, with
    ``exit_when_idle``, until nothing is left to hold). ``supervisor_fd``:
    a connection to the ``procview serve`` that started this holder, its
    first supervisor. Raises HolderError if it cannot listen."""
    first = socket.socket(fileno=supervisor_fd) if supervisor_fd is not None else None
    try:
        agent, supervisors = bind(agent_path)
    except HolderError as exc:
        if first is not None:  # the procview serve that started us learns why
            _send_quietly(first, control(FAILED, message=str(exc)))
        raise
    raise_fd_limit()  # two fds a container: its listener, its runtime's connection
    stop_r, stop_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    previous = {signum: signal.signal(signum, lambda *_: None) for signum in (signal.SIGTERM, signal.SIGINT)}
    previous_wakeup = signal.set_wakeup_fd(stop_w)
    holder = ListenerHolder(agent, supervisors, exit_when_idle)
    try:
        log.info("holding seccomp listeners at %s (supervisors attach at %s)", agent_path, supervisor_socket(agent_path))
        if first is not None:
            holder.attach(first)
        if ready is not None:
            ready()
        holder.run(stop_r)
    finally:
        # The paths first: from here on a new holder may bind them.
        _remove(agent_path)
        _remove(supervisor_socket(agent_path))
        holder.close()
        agent.close()
        supervisors.close()
        signal.set_wakeup_fd(previous_wakeup)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        os.close(stop_r)
        os.close(stop_w)
    log.info("stopped")


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# -- the supervisor's side: reach a holder, or start one ------------------------------


class Attached:
    """A supervisor's link to a holder, after its hello: ``link`` (the
    SOCK_SEQPACKET connection) and ``slot`` (the in-flight memfd)."""

    def __init__(self, link: socket.socket, slot_fd: int, pid: int, process=None):
        self.link = link
        self.slot_fd = slot_fd
        self.pid = pid
        self.process = process  # the holder, if this supervisor started it


def attach(agent_path: str, spawn: bool, log_level: str = "info") -> Attached | None:
    """Attach to the holder at ``agent_path``; with ``spawn``, start one if
    none answers. None if none answers and ``spawn`` is false. Raises
    HolderBusy (another supervisor is attached) or HolderError."""
    link = unix_socket.connect(supervisor_socket(agent_path), socket.SOCK_SEQPACKET)
    process = None
    if link is None:
        if not spawn:
            return None
        link, process = _spawn(agent_path, log_level)
    try:
        kind, fields, fds = _greeting(link)
        if kind == FAILED and process is not None:
            process.wait()
            # Another holder may have won a race to the socket: use it.
            again = unix_socket.connect(supervisor_socket(agent_path), socket.SOCK_SEQPACKET)
            if again is None:
                raise HolderError(f"the listener holder could not start: {fields.get('message', '?')}")
            link.close()
            link, process = again, None
            kind, fields, fds = _greeting(link)
        if kind == BUSY:
            raise HolderBusy(f"another procview serve is attached to the listener holder at {agent_path}")
        if kind != HELLO or len(fds) != 1:
            seccomp_agent.close_all(fds)
            raise HolderError(f"the listener holder at {agent_path} said {kind!r}, not hello")
    except BaseException:
        link.close()
        raise
    link.settimeout(None)
    return Attached(link, fds[0], int(fields.get("pid", 0)), process)


def _spawn(agent_path: str, log_level: str):
    """Start a holder in a session of its own (a kill of this process, or
    of its process group, leaves it), already attached to us through a
    socketpair; it exits once it has nothing left to hold."""
    import subprocess  # only here: the holder itself never starts a process

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    argv = [sys.executable, "-I", "-m", "procview.listener_holder", "--socket", agent_path,
            "--supervisor-fd", str(theirs.fileno()), "--exit-when-idle", "--log-level", log_level]
    try:
        # close_fds (the default) keeps /dev/fuse and the listeners out of it.
        # Not systemd's business: only the unit's own main process notifies it.
        env = {name: value for name, value in os.environ.items() if name not in ("NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC")}
        process = subprocess.Popen(argv, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   cwd="/", env=env, start_new_session=True)
    except OSError as exc:
        ours.close()
        raise HolderError(f"cannot start the listener holder: {exc.strerror or exc}") from None
    finally:
        theirs.close()
    log.info("started a listener holder (pid %d) at %s", process.pid, agent_path)
    return ours, process


def _greeting(link: socket.socket) -> tuple[str, dict, list[int]]:
    """The holder's first message: (kind, fields, fds)."""
    link.settimeout(START_TIMEOUT)
    try:
        data, ancdata, _flags, _ = link.recvmsg(seccomp_agent.MAX_MESSAGE, socket.CMSG_SPACE(seccomp_agent.MAX_FDS * 4))
    except OSError as exc:
        raise HolderError(f"the listener holder did not answer: {exc.strerror or exc}") from None
    fds = seccomp_agent.fds_of(ancdata)
    if not data:
        seccomp_agent.close_all(fds)
        raise HolderError("the listener holder went away before it said hello")
    try:
        kind, fields = parse_control(data)
    except ValueError as exc:
        seccomp_agent.close_all(fds)
        raise HolderError(str(exc)) from None
    return kind, fields, fds


# -- the command --------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m procview.listener_holder``: how ``procview serve``
    starts a holder (``procview listener-holder`` is the same, for
    systemd and people)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="procview listener-holder",
        description="Keep containers' seccomp listeners across restarts of procview serve: runtimes hand them over "
                    "at the socket; the procview serve attached to it answers their calls, and while none is the "
                    "kernel does. Stops on SIGTERM or SIGINT, giving its listeners up. See docs/serve.md.")
    parser.add_argument("--socket", default=os.environ.get("PROCVIEW_SECCOMP_SOCKET") or DEFAULT_SECCOMP_SOCKET,
                        help="where runtimes hand over listeners (procview serve's --seccomp-socket; "
                             "default $PROCVIEW_SECCOMP_SOCKET or %(default)s)")
    parser.add_argument("--supervisor-fd", type=int, default=None,
                        help="a connection to the procview serve that started it (its first supervisor)")
    parser.add_argument("--exit-when-idle", action="store_true",
                        help="exit once no supervisor is attached and no listener is held")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    options = parser.parse_args(argv)
    setup_logging(options.log_level)
    try:
        serve(options.socket, options.supervisor_fd, options.exit_when_idle,
              ready=notify_ready if options.supervisor_fd is None else None)
    except HolderError as exc:
        log.error("%s", exc)
        return 1
    return 0


def setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), stream=sys.stderr,
                        format="procview listener holder: %(levelname)s: %(message)s")


def notify_ready() -> None:
    """READY=1 to systemd (Type=notify), once both sockets listen."""
    try:
        unix_socket.notify_systemd(f"READY=1\nMAINPID={os.getpid()}")
    except OSError as exc:
        log.warning("could not notify systemd: %s", exc)


if __name__ == "__main__":
    sys.exit(main())
