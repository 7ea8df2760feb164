"""The container's processes: the exec, the tiny init, the terminal, exit codes.

Process tree of ``procview run``::

    procview run            (host namespaces; forwards signals, relays the
     |                       terminal, waits, cleans up)
     `- [1:INIT]            pid 1 of the container: builds the rootfs, then
         |                  reaps every orphan and forwards signals (like
         |                  tini); exits with the command's status
         `- CMD             the user's command (execve)

With ``--init=false`` pid 1 execs the command itself (which then must reap
its own children and handle SIGTERM, as in Docker without ``--init``).

Exit codes follow Docker: the command's own; 128+n when it was killed by
signal n; 125 when procview failed; 126 when the command cannot be
executed (EACCES, EISDIR, ENOEXEC); 127 when it was not found.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import select
import signal
import struct
import sys
import termios
import warnings  # noqa: F401  os.execvpe imports it, after pivot_root: loaded now, while the host's stdlib is in reach

EXIT_PROCVIEW_FAILED = 125
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127

# Signals the parent and the init pass on to the command; SIGCHLD is the
# init's own business and SIGKILL/SIGSTOP cannot be caught.
FORWARDED_SIGNALS = tuple(
    s for s in (
        signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2,
        signal.SIGWINCH, signal.SIGCONT, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGALRM,
        signal.SIGPIPE,
    )
)


def exit_code_of(status: int) -> int:
    """A wait status as Docker reports it: the exit code, or 128+signal."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def exec_exit_code(err: int) -> int:
    """The exit code for a failed execve."""
    return EXIT_NOT_FOUND if err in (errno.ENOENT, errno.ENOTDIR) else EXIT_CANNOT_EXECUTE


# -- reports from the container to procview run -------------------------------
#
# One JSON line on a close-on-exec pipe. EOF without a line means the
# command was executed: execve closed the pipe.


def report(fd: int, stage: str, message: str, code: int) -> None:
    line = json.dumps({"stage": stage, "message": message, "code": code}) + "\n"
    try:
        os.write(fd, line.encode())
    except OSError:
        pass


def read_report(fd: int) -> dict | None:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 4096)
        except InterruptedError:
            continue
        if not chunk:
            break
        chunks.append(chunk)
    text = b"".join(chunks).decode(errors="replace").strip()
    if not text:
        return None
    try:
        return json.loads(text.splitlines()[0])
    except ValueError:
        return {"stage": "unknown", "message": text, "code": EXIT_PROCVIEW_FAILED}


def start_in_cgroup(cgroup, pid: int, go_w: int, report_r: int, configure=None, joins_itself: bool = False) -> dict | None:
    """The parent's half of the start handshake with a child that waits on
    ``go_w``'s pipe before it runs anything of the user's: put it in
    ``cgroup``, let it go, and wait for its report (None: it executed the
    command). If the cgroup refuses it, the child sees EOF and exits, is
    reaped, and the CgroupError is raised, unless the child had failed
    first (its report explains better); a child that reports a failure is
    reaped too. ``configure()``, if given, runs first (the cgroup's limits,
    written while the child gets ready); what it raises is handled alike.
    ``joins_itself``: the child moves itself in after "go"
    (``Cgroup.open_self_join``), so only the limits are written here."""
    try:
        if configure is not None:
            configure()
        if not joins_itself:
            cgroup.add_process(pid)
    except Exception:
        os.close(go_w)
        failure = read_report(report_r)
        os.close(report_r)
        reap(pid)
        if failure is not None:
            return failure
        raise
    try:
        os.write(go_w, b"g")
    except BrokenPipeError:
        pass  # it failed before "go" and said why in its report
    os.close(go_w)
    failure = read_report(report_r)
    os.close(report_r)
    if failure is not None:
        reap(pid)
    return failure


def reap(pid: int) -> int:
    """waitpid(pid): its wait status (0 if it was already reaped)."""
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except InterruptedError:
            continue
        except ChildProcessError:
            return 0


def exec_command(argv: list[str], env: dict[str, str], report_fd: int) -> None:
    """execve the command (PATH searched in the container's environment);
    on failure report the errno and exit with Docker's code. Never returns."""
    name = argv[0]
    try:
        os.execvpe(name, argv, env)
    except OSError as exc:
        err = exc.errno or errno.ENOENT
        if err == errno.ENOENT and "/" not in name:
            message = f'exec: "{name}": executable file not found in $PATH'
        elif "/" in name and os.path.isdir(name):
            err, message = errno.EISDIR, f"exec: {name}: is a directory"
        else:
            message = f"exec: {name}: {os.strerror(err).lower()}"
        report(report_fd, "exec", message, exec_exit_code(err))
        os._exit(exec_exit_code(err))


# -- pid 1 ------------------------------------------------------------------------


def run_init(child: int, signal_mask) -> None:
    """Be the container's pid 1: forward signals to ``child``, reap every
    process that ends, and exit with ``child``'s status. Never returns.

    The kernel delivers to a pid-namespace init only the signals it has a
    handler for, so without these handlers ``docker stop``-style SIGTERMs
    would be dropped. pid 1 has held them blocked since its fork (blocked
    signals are never dropped); with the handlers in place, ``signal_mask``
    unblocks them and what came meanwhile is passed on.
    """

    def forward(signum, _frame):
        try:
            os.kill(child, signum)
        except (ProcessLookupError, PermissionError):
            pass  # gone, or (dropped capabilities) no longer ours to signal

    for signum in FORWARDED_SIGNALS:
        signal.signal(signum, forward)
    signal.pthread_sigmask(signal.SIG_SETMASK, signal_mask)
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(EXIT_PROCVIEW_FAILED)
        if pid == child:
            os._exit(exit_code_of(status))


# -- the terminal -------------------------------------------------------------------


# ptmx ioctls (asm-generic/ioctls.h), which the termios module lacks.
TIOCGPTN = 0x80045430
TIOCSPTLCK = 0x40045431


def open_pty_pair() -> tuple[int, int]:
    """A pty from the container's own devpts (so ``tty`` names a device the
    container can see)."""
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))  # unlockpt
    number = struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, b"\0" * 4))[0]
    slave = os.open(f"/dev/pts/{number}", os.O_RDWR | os.O_NOCTTY)
    return master, slave


def make_controlling_terminal(slave: int) -> None:
    os.setsid()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)


def send_fd(sock: socket.socket, fd: int, tag: bytes = b"pty") -> None:
    import socket  # the sockets here come from callers that imported it already

    socket.send_fds(sock, [tag], [fd])


def receive_fd(sock: socket.socket) -> int | None:
    import socket

    try:
        _msg, fds, _flags, _addr = socket.recv_fds(sock, 16, 1)
    except OSError:
        return None
    return fds[0] if fds else None


def copy_window_size(from_fd: int, to_fd: int) -> None:
    try:
        size = fcntl.ioctl(from_fd, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(to_fd, termios.TIOCSWINSZ, size)
    except OSError:
        pass


def relay_terminal(tty_sock, forwarder, stdin_open: bool, link=None) -> None:
    """The caller's side of ``-t`` (``procview run`` and ``exec``): receive
    the pty's master from the container over ``tty_sock``, then relay our
    terminal and it until the container's side closes; our window's
    resizes (SIGWINCH, through ``forwarder``) follow."""
    master = receive_fd(tty_sock)
    tty_sock.close()
    if master is None:
        return
    relay = TerminalRelay(master)
    forwarder.on_resize = relay.resize
    try:
        with relay:
            relay.pump(stdin_open=stdin_open, link=link)
    finally:
        os.close(master)


class TerminalRelay:
    """Copies the user's terminal to the container's pty and back, in raw
    mode, until the container's side closes."""

    def __init__(self, master: int):
        self.master = master
        self.stdin = sys.stdin.fileno()
        self.stdout = sys.stdout.fileno()
        self._saved = None

    def __enter__(self):
        if os.isatty(self.stdin):
            copy_window_size(self.stdin, self.master)
            import tty  # only with a terminal

            self._saved = termios.tcgetattr(self.stdin)
            tty.setraw(self.stdin)
        return self

    def __exit__(self, *exc):
        if self._saved is not None:
            termios.tcsetattr(self.stdin, termios.TCSADRAIN, self._saved)

    def resize(self) -> None:
        if os.isatty(self.stdin):
            copy_window_size(self.stdin, self.master)

    def pump(self, stdin_open: bool = True, link=None) -> None:
        """Relay until the pty reports EOF (all container ends closed),
        serving ``link`` (a ``syscall_view.AgentLink``) meanwhile."""
        inputs = [self.master] + ([self.stdin] if stdin_open else [])
        while True:
            try:
                watched = inputs + (link.fds() if link else [])
                ready, _, _ = select.select(watched, [], [], link.timeout() if link else None)
            except InterruptedError:
                continue
            if link:
                for fd in ready:
                    if fd not in inputs:
                        link.ready(fd)
                link.tick()
            if self.master in ready:
                try:
                    data = os.read(self.master, 65536)
                except OSError:  # EIO: the slave side is gone
                    data = b""
                if not data:
                    return
                os.write(self.stdout, data)
            if self.stdin in ready:
                data = os.read(self.stdin, 65536)
                if not data:
                    inputs.remove(self.stdin)
                else:
                    os.write(self.master, data)
