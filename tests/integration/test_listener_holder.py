"""The listener holder: containers' sysinfo() and sched_getaffinity() answers
survive kills and restarts of ``procview serve``.

First the holder alone, with a real seccomp listener (a process that
loaded the view filter) and the test in the roles of runc and of a
supervisor: it answers *continue* while no supervisor is attached, hands
the listener to each supervisor that attaches, answers the call a
supervisor took and did not answer when it went, and lets the listener go
when its process exits.

Then real containers whose loop prints what ``sysinfo`` and
``sched_getaffinity`` say, over and over, while the test kills and
restarts ``procview serve`` (and the holder): a runc container started by
``procview-runc`` (as Docker would), and a ``procview run`` container.
Every line either shows the container's limits (512 MiB, 1 CPU) or the
host's (the kernel answered: the holder said *continue*); never anything
else (ENOSYS would give zeros), and the loop never stalls. After each new
daemon's readiness the container's values come back (a bounded wait, no
timed assertion).

The view's files are not bound into these containers: a killed daemon's
FUSE binds are another matter (re-attaching them, issue 17's first part).
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from procview import listener_holder, seccomp_agent, seccomp_notify, unix_socket
from procview.listener_holder import HELLO, SYNCED, parse_control
from procview.seccomp_notify import Listener

from .serve_helpers import (  # noqa: F401 (fixtures)
    host_cpus, listener_holder_pids, no_leftovers, read_log, serve_daemons, wait_until,
)
from .test_oci_shim import SHIM, runc  # noqa: F401 (fixture)
from .test_run import PROCVIEW, state_root  # noqa: F401 (fixture)
from .test_syscall_view import HOST_TOOLS

LIMIT_KB = 512 * 1024
TIMEOUT = 600  # bounds a hang only (the cgroup2 VM emulates its CPU)

needs_runc = pytest.mark.skipif(shutil.which("runc") is None, reason="needs runc (Debian package runc)")


def host_sysinfo_kb() -> int:
    """What sysinfo() says on the host: its totalram, in kB."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 1024


# -- the holder alone, with a real listener --------------------------------------------

# Loads the view filter (sysinfo and sched_getaffinity(0) go to a listener),
# sends the listener to the test and keeps no copy, as a container's command
# does; then calls sysinfo() once per line read and prints the result, the
# errno and totalram.
FILTERED = r"""
import ctypes, os, socket, sys
from procview.runtime.linux import Linux, SECCOMP_FILTER_FLAG_NEW_LISTENER
from procview.runtime.security.seccomp import build_view_filter

program = build_view_filter()
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS: a filter without CAP_SYS_ADMIN
listener = Linux().seccomp_set_filter(program, SECCOMP_FILTER_FLAG_NEW_LISTENER)
channel = socket.socket(fileno=int(sys.argv[1]))
socket.send_fds(channel, [b"listener"], [listener])
os.close(listener)
channel.close()
info = ctypes.create_string_buffer(256)
for line in sys.stdin:
    result = libc.sysinfo(info)
    print(result, ctypes.get_errno(), int.from_bytes(info.raw[32:40], sys.byteorder), flush=True)  # totalram
"""


class Filtered:
    """A process with the view filter; ``listener`` is the test's copy."""

    def __init__(self, tmp_path: Path):
        ours, theirs = socket.socketpair()
        self.popen = subprocess.Popen([sys.executable, "-c", FILTERED, str(theirs.fileno())], pass_fds=(theirs.fileno(),),
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(tmp_path / "filtered.err", "wb"))
        theirs.close()
        ours.settimeout(TIMEOUT)
        _msg, fds, _flags, _addr = socket.recv_fds(ours, 16, 1)
        ours.close()
        assert len(fds) == 1, "the filtered process sent no listener"
        self.listener_fd = fds[0]

    def call(self) -> None:
        """Make it call sysinfo() (the answer is read with ``result``)."""
        self.popen.stdin.write(b"\n")
        self.popen.stdin.flush()

    def result(self, timeout: float = TIMEOUT) -> tuple[int, int, int]:
        """(return value, errno, totalram) of the call; a call that hangs
        fails here (bounded)."""
        ready, _, _ = select.select([self.popen.stdout], [], [], timeout)
        assert ready, f"sysinfo() did not return within {timeout:.0f} s"
        return tuple(int(field) for field in self.popen.stdout.readline().split())

    def stop(self) -> None:
        if self.popen.stdin and not self.popen.stdin.closed:
            self.popen.stdin.close()
        if self.popen.wait(timeout=TIMEOUT) != 0:
            raise AssertionError(f"the filtered process exited {self.popen.returncode}")


def attach_supervisor(agent_path: str) -> tuple[socket.socket, memoryview, list]:
    """Attach to the holder the way procview serve does; (the link, the
    in-flight slot, the listeners handed over up to "synced", receiving
    into the slot as procview serve's do)."""
    link = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    link.connect(listener_holder.supervisor_socket(agent_path))
    link.settimeout(TIMEOUT)
    data, fds = _receive(link)
    assert parse_control(data)[0] == HELLO and len(fds) == 1, data
    slot = memoryview(mmap.mmap(fds[0], listener_holder.SLOT))
    os.close(fds[0])
    listeners = []
    while True:
        data, fds = _receive(link)
        if not fds:
            assert parse_control(data)[0] == SYNCED, data
            return link, slot, listeners
        state, index = seccomp_agent.parse(data, fds)
        listeners.append((state, Listener(fds[index], slot)))


def _receive(link):
    data, ancdata, _flags, _ = link.recvmsg(seccomp_agent.MAX_MESSAGE, socket.CMSG_SPACE(4 * seccomp_agent.MAX_FDS))
    return data, seccomp_agent.fds_of(ancdata)


def wait_readable(fd: int) -> None:
    ready, _, _ = select.select([fd], [], [], TIMEOUT)
    assert ready, "no notification came"


@pytest.fixture
def holder(tmp_path):
    """``procview listener-holder`` (the systemd unit's command) on a
    socket of the test's own; checks that SIGTERM stops it, exit 0, its
    sockets gone."""
    agent_path = str(tmp_path / "agent.sock")
    notify_path = str(tmp_path / "notify")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(TIMEOUT)
    log_path = tmp_path / "holder.log"
    with open(log_path, "wb") as log:
        popen = subprocess.Popen([PROCVIEW, "listener-holder", "--socket", agent_path], stdin=subprocess.DEVNULL,
                                 stdout=log, stderr=log, env=dict(os.environ, NOTIFY_SOCKET=notify_path))
    try:
        message = notify.recv(4096).decode()  # READY=1 once both sockets listen
        assert "READY=1" in message.split("\n"), message
        popen.agent_path, popen.log_path = agent_path, log_path
        yield popen
        popen.send_signal(signal.SIGTERM)
        assert popen.wait(timeout=TIMEOUT) == 0, read_log(log_path)
        assert not os.path.exists(agent_path) and not os.path.exists(listener_holder.supervisor_socket(agent_path))
    finally:
        notify.close()
        if popen.poll() is None:
            popen.kill()
            popen.wait()


def test_the_holder_answers_alone_hands_over_to_each_supervisor_and_rescues_a_taken_call(holder, tmp_path):
    host_kb = host_sysinfo_kb()
    filtered = Filtered(tmp_path)
    try:
        # The test as runc: hand the listener over, keep no copy.
        runtime = unix_socket.connect(holder.agent_path)
        assert seccomp_agent.hand_over(runtime, seccomp_agent.state_message("c0ffee", filtered.popen.pid, "/b"),
                                       filtered.listener_fd)
        os.close(filtered.listener_fd)
        runtime.close()

        # No supervisor: the holder answers continue, the kernel's sysinfo runs.
        filtered.call()
        result, _errno, total = filtered.result()
        assert (result, total // 1024) == (0, host_kb)  # mem_unit is 1 on 64-bit hosts

        # A supervisor attaches: it gets the listener and it alone answers.
        link, slot, listeners = attach_supervisor(holder.agent_path)
        ((state, listener),) = listeners
        assert state["state"]["id"] == "c0ffee" and state["fds"] == ["seccompFd"]
        filtered.call()
        wait_readable(listener.fd)
        notification = listener.receive()
        assert listener.respond(notification.id, 0, errno.EPERM)  # an answer only a supervisor gives
        assert filtered.result()[:2] == (-1, errno.EPERM)
        assert seccomp_notify.in_flight(slot) == 0  # answered: nothing in flight

        # It takes a call (the kernel puts its id in the shared slot) and dies
        # before answering: the holder answers that call (continue) rather
        # than leave the thread stopped in it for good.
        filtered.call()
        wait_readable(listener.fd)
        notification = listener.receive()
        assert seccomp_notify.in_flight(slot) == notification.id != 0
        listener.close()
        slot.release()
        link.close()
        result, _errno, total = filtered.result()  # (errno is left from the call before: a success keeps it)
        assert (result, total // 1024) == (0, host_kb)
        wait_until(lambda: "answered the call its supervisor had taken" in read_log(holder.log_path), timeout=TIMEOUT)

        # The next supervisor gets the same listener again.
        link, slot, listeners = attach_supervisor(holder.agent_path)
        assert [s["state"]["id"] for s, _listener in listeners] == ["c0ffee"]
        for _state, copy in listeners:
            copy.close()
        slot.release()
        link.close()
    finally:
        filtered.stop()
    # Its process gone, the listener reports POLLHUP and the holder lets it go.
    wait_until(lambda: "container c0ffee (pid" in read_log(holder.log_path)
               and " ended" in read_log(holder.log_path), timeout=TIMEOUT)


# -- containers, while procview serve is killed and restarted ----------------------------


class Output:
    """What a container's loop printed (to a file) so far: one line
    ``<sysinfo total in kB> <CPUs sched_getaffinity shows>`` per turn.
    Each value is the container's or the host's (the kernel's answer); a
    line printed while a daemon came or went may have one of each."""

    def __init__(self, path: Path, container: tuple[int, int], host: tuple[int, int], describe):
        self.path = path
        self.meanings = {container: "container", host: "host"}
        self.allowed = list(zip(container, host))  # per field
        self.describe = describe  # for messages: the container's stderr and the daemons' logs

    def values(self) -> list[tuple[int, ...]]:
        text = self.path.read_text(errors="replace") if self.path.exists() else ""
        complete = text[: text.rfind("\n") + 1]
        values = []
        for number, line in enumerate(complete.splitlines()):
            try:
                value = tuple(int(field) for field in line.split())
            except ValueError:
                value = ()
            if len(value) != 2 or any(v not in allowed for v, allowed in zip(value, self.allowed)):
                raise AssertionError(f"line {number + 1} of the container's loop: {line!r}; each value must be the "
                                     f"container's or the host's {self.allowed}\n{self.describe()}")
            values.append(value)
        return values

    def wait_for(self, meaning: str, after: int) -> int:
        """Wait (bounded) for a line meaning ``meaning`` past the first
        ``after``; every line must be valid. Returns how many lines there are."""
        def seen():
            values = self.values()
            return any(self.meanings.get(v) == meaning for v in values[after:]) and len(values)
        try:
            return wait_until(seen, timeout=TIMEOUT)
        except AssertionError:
            raise AssertionError(f"no {meaning} values in the container's loop past line {after} "
                                 f"(it printed {len(self.values())})\n{self.describe()}") from None


def restart_cycles(daemons, mount: str, socket_path: str, daemon, outputs, signals) -> object:
    """Stop the daemon with each of ``signals`` in turn; while it is down
    every loop gets the kernel's answers, after the next daemon's readiness
    its own again. Returns the last daemon."""
    for sig in signals:
        marks = [output.wait_for("container", 0) for output in outputs]
        code = daemon.stop(sig)
        assert code == (0 if sig == signal.SIGTERM else -sig), daemon.describe()
        marks = [output.wait_for("host", mark) for output, mark in zip(outputs, marks)]
        daemon = daemons.start(mount, args=("--seccomp-socket", socket_path))  # returns at readiness
        for output, mark in zip(outputs, marks):
            output.wait_for("container", mark)
    return daemon


RUNC_LOOP = ("while [ ! -e /stop ]; do "
             "echo \"$(busybox free | busybox awk '/^Mem:/{print $2}') $(busybox nproc)\"; done")


# busybox free takes total and free from sysinfo(), buff/cache from
# /proc/meminfo, and prints used = total - free - buff/cache in a fixed-width
# column: the host's cache next to the container's total makes it underflow
# into a 17-digit number that runs into the total. The view's meminfo would
# go dead with its daemon (re-attaching FUSE binds is another part of issue
# 17), so a plain file with no cache stands in for it.
STILL_MEMINFO = "".join(f"{key}:{0:>16} kB\n" for key in (
    "MemTotal", "MemFree", "MemAvailable", "Buffers", "Cached", "SwapCached", "Shmem", "SReclaimable", "SwapTotal",
    "SwapFree"))


class RuncLoop:
    """A runc container started by procview-runc (Docker's default seccomp
    profile, 512 MiB, a 1-CPU quota, no cpuset, no view: the shim adds the
    notify rules and listenerPath alone), its loop's output in a file."""

    def __init__(self, runc, tmp_path: Path, socket_path: str, describe):
        """``describe()``: what to add to a failure's message (the daemons' logs)."""
        self.bundle = runc.bundle(["sh", "-c", RUNC_LOOP])
        meminfo = tmp_path / "meminfo"
        meminfo.write_text(STILL_MEMINFO)
        config = json.loads((self.bundle / "config.json").read_text())
        config["mounts"].append({"destination": "/proc/meminfo", "type": "bind", "source": str(meminfo),
                                 "options": ["bind", "ro"]})
        (self.bundle / "config.json").write_text(json.dumps(config))
        (tmp_path / "no-view").mkdir(exist_ok=True)
        env = dict(os.environ, PROCVIEW_VIEW=str(tmp_path / "no-view"), PROCVIEW_SECCOMP_SOCKET=socket_path)
        self.name = f"procview-pytest-holder-{os.getpid()}"
        runc.ids.append(self.name)
        self.runc = runc
        self.out, self.err = tmp_path / "runc.out", tmp_path / "runc.err"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.popen = subprocess.Popen([SHIM, "--root", runc.root, "run", "--bundle", str(self.bundle), self.name],
                                          stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
        self.output = Output(self.out, (LIMIT_KB, 1), (host_sysinfo_kb(), len(host_cpus())),
                             lambda: f"--- runc's stderr ---\n{read_log(self.err)}\n{describe()}")

    def stop(self) -> None:
        (self.bundle / "rootfs" / "stop").touch()
        try:
            assert self.popen.wait(timeout=TIMEOUT) == 0, read_log(self.err)
        finally:
            if self.popen.poll() is None:
                self.runc.delete(self.name)
                self.popen.wait()


PY_LOOP = r"""
import os, time
while not os.path.exists("/shared/stop"):
    print(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 1024, len(os.sched_getaffinity(0)), flush=True)
    time.sleep(0.002)
"""


class RunLoop:
    """A ``procview run`` container (512 MiB, 1 CPU by quota over a cpuset
    of every CPU) whose Python loop asks sysconf (sysinfo) and
    sched_getaffinity, its output in a file."""

    def __init__(self, state_root: str, tmp_path: Path, mount: str, socket_path: str, describe):
        self.shared = tmp_path / "shared"
        self.shared.mkdir()
        cpus = host_cpus()
        self.out, self.err = tmp_path / "run.out", tmp_path / "run.err"
        argv = [PROCVIEW, "run", "--rm", "--root", state_root, "--view", mount, "--seccomp-socket", socket_path,
                "--memory", "512M", "--cpus", "1", "--cpuset-cpus", ",".join(map(str, cpus)), *HOST_TOOLS,
                "-v", f"{self.shared}:/shared", "busybox", "python3", "-c", PY_LOOP]
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        self.output = Output(self.out, (LIMIT_KB, 1), (host_sysinfo_kb(), len(cpus)),
                             lambda: f"--- procview run's stderr ---\n{read_log(self.err)}\n{describe()}")

    def stderr(self) -> str:
        return read_log(self.err)

    def stop(self) -> None:
        (self.shared / "stop").touch()
        try:
            assert self.popen.wait(timeout=TIMEOUT) == 0, self.stderr()
        finally:
            if self.popen.poll() is None:
                self.popen.kill()
                self.popen.wait()


def logs_of(daemons):
    """A ``describe`` for the loops: every daemon's command line and log."""
    return lambda: "\n".join(daemon.describe() for daemon in daemons.started)


@needs_runc
def test_a_runc_container_keeps_its_answers_across_kills_and_restarts_of_procview_serve(runc, serve_daemons, tmp_path):
    """kill -9 three times in a row, then SIGTERM (what ``systemctl
    restart`` sends): never ENOSYS, never a stall, the container's values
    back after each readiness."""
    socket_path, mount = str(tmp_path / "agent.sock"), str(tmp_path / "view")
    daemon = serve_daemons.start(mount, args=("--seccomp-socket", socket_path))
    (holder_pid,) = listener_holder_pids(socket_path)
    loop = RuncLoop(runc, tmp_path, socket_path, logs_of(serve_daemons))
    try:
        daemon = restart_cycles(serve_daemons, mount, socket_path, daemon, [loop.output],
                                [signal.SIGKILL, signal.SIGKILL, signal.SIGKILL, signal.SIGTERM])
        assert listener_holder_pids(socket_path) == {holder_pid}  # one holder all along
    finally:
        loop.stop()
    assert len(loop.output.values()) > 0
    log = serve_daemons.started[0].log()  # the holder logs where the daemon that started it did
    assert log.count("the supervisor is gone") == 4 and log.count("a supervisor attached") == 5, log


def test_a_procview_run_container_keeps_its_answers_across_kills_and_restarts_of_procview_serve(
        state_root, serve_daemons, tmp_path):
    socket_path, mount = str(tmp_path / "agent.sock"), str(tmp_path / "view")
    daemon = serve_daemons.start(mount, args=("--seccomp-socket", socket_path))
    loop = RunLoop(state_root, tmp_path, mount, socket_path, logs_of(serve_daemons))
    try:
        restart_cycles(serve_daemons, mount, socket_path, daemon, [loop.output], [signal.SIGKILL, signal.SIGKILL, signal.SIGTERM])
    finally:
        loop.stop()
    # Its connection is to the holder, which stayed: procview run never had
    # to answer anything itself.
    assert loop.stderr() == ""


@needs_runc
def test_when_the_holder_itself_is_killed_procview_serve_keeps_runcs_listeners_and_procview_run_its_own(
        runc, state_root, serve_daemons, tmp_path):
    """kill -9 of the holder while procview serve runs: serve keeps the
    runc container's listener (it has the only copy left) and hands it to
    the holder it starts next; procview run answers its own for a moment
    and hands it over again. Then a kill -9 of serve: the new holder has
    both, and the daemon after it answers both."""
    socket_path, mount = str(tmp_path / "agent.sock"), str(tmp_path / "view")
    daemon = serve_daemons.start(mount, args=("--seccomp-socket", socket_path))
    runc_loop = RuncLoop(runc, tmp_path, socket_path, logs_of(serve_daemons))
    run_loop = RunLoop(state_root, tmp_path, mount, socket_path, logs_of(serve_daemons))
    try:
        runc_mark, run_mark = runc_loop.output.wait_for("container", 0), run_loop.output.wait_for("container", 0)
        (first_holder,) = listener_holder_pids(socket_path)
        os.kill(first_holder, signal.SIGKILL)
        wait_until(lambda: listener_holder_pids(socket_path) - {first_holder}, timeout=TIMEOUT)  # serve started another
        wait_until(lambda: "is back" in run_loop.stderr(), timeout=TIMEOUT)  # procview run handed it over again
        run_loop.output.wait_for("container", len(run_loop.output.values()))
        runc_values = runc_loop.output.values()
        assert set(runc_values[runc_mark:]) == {(LIMIT_KB, 1)}, "the runc container lost its answers"
        # The new holder has both listeners: serve can be killed and restarted again.
        restart_cycles(serve_daemons, mount, socket_path, daemon, [runc_loop.output, run_loop.output], [signal.SIGKILL])
    finally:
        run_loop.stop()
        runc_loop.stop()
    assert "went away" in run_loop.stderr() and "is back" in run_loop.stderr(), run_loop.stderr()
    assert "1 listeners given up to the procview run that keeps them, 1 kept here" in daemon.log(), daemon.log()


# -- bad input and the daemon's choices ----------------------------------------------


@pytest.mark.parametrize("where, says", [
    ("live", "another listener holder is listening there"),
    ("/proc/1/no/such/dir/s.sock", "cannot listen"),
])
def test_a_holder_that_cannot_listen_says_why_in_one_line(holder, where, says):
    path = holder.agent_path if where == "live" else where
    result = subprocess.run([PROCVIEW, "listener-holder", "--socket", path], capture_output=True, text=True,
                            timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1 and says in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert holder.poll() is None  # the live one is untouched


def test_a_second_procview_serve_on_the_same_holder_is_refused(serve_daemons, tmp_path):
    socket_path = str(tmp_path / "agent.sock")
    first = serve_daemons.start(args=("--seccomp-socket", socket_path))
    second = serve_daemons.start(args=("--seccomp-socket", socket_path), wait=False)
    assert second.popen.wait(timeout=TIMEOUT) == 1, second.describe()
    assert "another procview serve is attached to the listener holder" in second.log(), second.describe()
    assert first.alive() and len(listener_holder_pids(socket_path)) == 1


def test_without_spawning_serve_waits_for_a_holder_and_is_ready_once_attached(serve_daemons, tmp_path):
    """As under systemd (--no-spawn-holder): no holder, no readiness; the
    holder's unit starts one, serve attaches and gets ready."""
    socket_path = str(tmp_path / "agent.sock")
    daemon = serve_daemons.start(args=("--seccomp-socket", socket_path, "--no-spawn-holder"), wait=False)
    wait_until(lambda: "waiting for one" in daemon.log(), timeout=TIMEOUT)
    assert not os.path.exists(daemon.pidfile) and not listener_holder_pids(socket_path), daemon.describe()
    with open(tmp_path / "holder.log", "wb") as log:
        holder = subprocess.Popen([PROCVIEW, "listener-holder", "--socket", socket_path], stdin=subprocess.DEVNULL,
                                  stdout=log, stderr=log)
    try:
        daemon.wait_ready()
        assert daemon.stop(signal.SIGTERM) == 0, daemon.describe()
        assert holder.poll() is None  # not one serve started: it stays after serve is gone
    finally:
        holder.send_signal(signal.SIGTERM)
        assert holder.wait(timeout=TIMEOUT) == 0
