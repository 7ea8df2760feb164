"""systemd/procview.service: its directives, ``systemd-analyze verify``, and
its commands run the way systemd runs them.

systemd is not PID 1 on the test machines (nor in the cgroup2 VM), so the
unit cannot be started for real. What can be checked without it:

- the directives the design depends on (read with a small unit-file parser);
- ``systemd-analyze verify`` (offline) accepts the unit with no warning. It
  insists that ExecStart's binary exists, and the unit names the installed
  path /usr/local/bin/procview, so a copy whose ExecStart points at this
  checkout's console script is verified;
- the unit's ExecStart, stop signal and ExecStopPost, taken from the unit
  file and pointed at a temporary mount point, behave as the unit assumes:
  READY=1 from the main process itself (Type=notify, NotifyAccess=main)
  once the mount answers, exit 0 and no mount left after SIGTERM to the main
  process only (KillMode=mixed), and after a SIGKILL (Restart=on-failure)
  ExecStopPost detaches the dead mount so the restart succeeds.

The listener holder's unit the same way: its directives, verify, and its
ExecStart run next to serve's (which waits for it rather than start one),
with a runc container whose sysinfo and sched_getaffinity answers survive
what ``systemctl restart procview`` does to serve.
"""

from __future__ import annotations

import array
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import requires_root

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "procview.service"
FORKSERVER_UNIT = REPO / "systemd" / "procview-forkserver.service"
HOLDER_UNIT = REPO / "systemd" / "procview-listener-holder.service"
CONTROLLER_UNIT = REPO / "systemd" / "procview-controller.service"
UNITS = (UNIT, FORKSERVER_UNIT, HOLDER_UNIT, CONTROLLER_UNIT)
FORKSERVER_SOCKET = "/run/procview/forkserver.sock"
INSTALLED = "/usr/local/bin/procview"  # where the unit expects the console script
MOUNTPOINT = "/var/lib/procview"
START_TIMEOUT = 180.0  # seconds; only bounds a hang (the VM is emulated, slow)

# Options that give the service its own mount namespace: its FUSE mount
# would then be invisible to the host and the containers. ProtectProc and
# ProcSubset would also hide the /proc files it reads.
MOUNT_NAMESPACE_OPTIONS = {
    "RootDirectory", "RootImage", "MountAPIVFS", "PrivateTmp", "PrivateDevices",
    "PrivateMounts", "PrivateUsers", "ProtectSystem", "ProtectHome",
    "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
    "ProtectControlGroups", "ProtectClock", "ProtectHostname", "ProtectProc", "ProcSubset",
    "ReadWritePaths", "ReadOnlyPaths", "InaccessiblePaths", "ExecPaths", "NoExecPaths",
    "TemporaryFileSystem", "BindPaths", "BindReadOnlyPaths", "MountFlags",
}


# ------------------------------------------------------------ unit file ---

def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """{section: {key: [values]}}, as systemd reads a unit file: comments
    start with # or ;, a trailing backslash continues the line, a key may
    repeat, and an empty assignment resets the list."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    logical, pending = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    for line in logical:
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{line!r} is outside any section"
        key, sep, value = line.partition("=")
        assert sep, f"not key=value: {line!r}"
        key, value = key.strip(), value.strip()
        if value:
            current.setdefault(key, []).append(value)
        else:
            current[key] = []
    return sections


def one(section: dict[str, list[str]], key: str) -> str:
    values = section.get(key, [])
    assert len(values) == 1, f"{key}= should be set exactly once, is {values}"
    return values[0]


def exec_argv(value: str) -> tuple[str, list[str]]:
    """An Exec*= value as (prefixes, argv), e.g. ('-', ['/bin/sh', ...])."""
    prefixes = ""
    while value and value[0] in "-@:+!":
        prefixes += value[0]
        value = value[1:]
    return prefixes, shlex.split(value)


def console_script() -> Path:
    """This checkout's ``procview`` console script (beside the venv's python)."""
    script = Path(sys.executable).parent / "procview"
    assert os.access(script, os.X_OK), (
        f"{script}: no procview console script beside {sys.executable} (run dev/setup)"
    )
    return script


def test_unit_directives():
    unit = parse_unit(UNIT.read_text())
    assert set(unit) == {"Unit", "Service", "Install"}
    svc = unit["Service"]

    assert one(svc, "Type") == "notify"
    assert one(svc, "NotifyAccess") == "main"
    assert one(svc, "Restart") == "on-failure"
    assert one(svc, "OOMScoreAdjust") == "-1000"
    assert one(svc, "KillMode") == "mixed"

    start = one(svc, "ExecStart")
    assert "procview serve" in start
    # The holder's own unit runs the holder: serve must not start one in its
    # cgroup, which a stop or restart kills (KillMode=mixed).
    assert exec_argv(start) == ("", [INSTALLED, "serve", "--no-spawn-holder", MOUNTPOINT])
    assert "procview-listener-holder.service" in " ".join(unit["Unit"]["Requires"]).split()
    assert "procview-listener-holder.service" in " ".join(unit["Unit"]["After"]).split()

    (stop_post,) = svc["ExecStopPost"]
    prefixes, argv = exec_argv(stop_post)
    assert prefixes == "-", "ExecStopPost's failure (nothing to unmount) must not fail the unit"
    assert f"/bin/fusermount3 -u -z {MOUNTPOINT}" in " ".join(argv)
    assert f"RequiresMountsFor={MOUNTPOINT}" in UNIT.read_text()

    before = " ".join(unit["Unit"]["Before"]).split()
    for engine in ("docker.service", "containerd.service", "podman.service", "lxc.service"):
        assert engine in before
    assert one(unit["Install"], "WantedBy") == "multi-user.target"

    namespaced = MOUNT_NAMESPACE_OPTIONS & set(svc)
    assert not namespaced, f"{sorted(namespaced)} would hide procview's mount from the host"


def _systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    assert path, (
        "systemd-analyze not found: it comes with the Debian package `systemd`, "
        "which dev/setup must install (TEST_PKGS); run sudo ./dev/setup"
    )
    return path


def _verify(analyze: str, unit: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, SYSTEMD_LOG_COLOR="0", SYSTEMD_PAGER="", LC_ALL="C")
    return subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, env=env, timeout=120)


def _installed_copies(directory: Path) -> None:
    """Every unit, its ExecStart pointed at this checkout's console script
    (verify looks a unit's dependencies up next to it)."""
    for unit in UNITS:
        text = unit.read_text()
        assert f"ExecStart={INSTALLED} " in text
        (directory / unit.name).write_text(text.replace(f"ExecStart={INSTALLED} ", f"ExecStart={console_script()} "))


@pytest.mark.parametrize("unit", UNITS, ids=lambda unit: unit.name)
def test_systemd_analyze_verify(tmp_path, unit):
    analyze = _systemd_analyze()
    _installed_copies(tmp_path)
    copy = tmp_path / unit.name  # verify wants a valid unit name

    result = _verify(analyze, copy)
    about_unit = [line for line in result.stderr.splitlines() if "procview" in line]
    assert result.returncode == 0 and not about_unit, (
        f"systemd-analyze verify {copy}: exit {result.returncode}\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )

    # The check above is only worth something if verify reports a bad
    # directive here: most of them are warnings with exit 0.
    (tmp_path / "broken").mkdir()
    _installed_copies(tmp_path / "broken")
    broken = tmp_path / "broken" / unit.name
    broken.write_text(re.sub(r"^Type=\w+", "Type=notfy", copy.read_text(), flags=re.M))
    result = _verify(analyze, broken)
    assert "notfy" in result.stderr, f"verify did not report Type=notfy:\n{result.stderr}"


def test_forkserver_unit_directives():
    unit = parse_unit(FORKSERVER_UNIT.read_text())
    svc = unit["Service"]
    assert one(svc, "Type") == "notify" and one(svc, "NotifyAccess") == "main"
    assert exec_argv(one(svc, "ExecStart")) == ("", [INSTALLED, "forkserver", "--socket", FORKSERVER_SOCKET])
    # A stop or restart signals the server alone, which waits for its
    # containers: their processes share its cgroup on v1 and hybrid hosts.
    assert one(svc, "KillMode") == "process"
    assert one(svc, "Restart") == "on-failure"
    assert "OOMScoreAdjust" not in svc, "every container would inherit it"
    assert "procview.service" in " ".join(unit["Unit"]["After"]).split()
    assert one(unit["Install"], "WantedBy") == "multi-user.target"


def test_holder_unit_directives():
    unit = parse_unit(HOLDER_UNIT.read_text())
    svc = unit["Service"]
    assert one(svc, "Type") == "notify" and one(svc, "NotifyAccess") == "main"
    # Its socket is procview serve's default: neither command names it.
    assert exec_argv(one(svc, "ExecStart")) == ("", [INSTALLED, "listener-holder"])
    assert one(svc, "Restart") == "on-failure"
    assert one(svc, "OOMScoreAdjust") == "-1000"
    # Before whatever connects to its sockets; and no namespace of its own.
    assert {"procview.service", "docker.service", "containerd.service", "podman.service"} <= set(
        " ".join(unit["Unit"]["Before"]).split())
    assert one(unit["Install"], "WantedBy") == "multi-user.target" and not MOUNT_NAMESPACE_OPTIONS & set(svc)


def test_controller_unit_directives():
    unit = parse_unit(CONTROLLER_UNIT.read_text())
    svc = unit["Service"]
    assert one(svc, "Type") == "simple"
    assert exec_argv(one(svc, "ExecStart")) == ("", [INSTALLED, "controller", "--interval", "10"])
    # The monitors it starts share its cgroup: a stop or restart must not end them.
    assert one(svc, "KillMode") == "process"
    assert one(svc, "Restart") == "on-failure"
    assert {"procview.service", "procview-listener-holder.service"} <= set(" ".join(unit["Unit"]["After"]).split())
    assert one(unit["Install"], "WantedBy") == "multi-user.target"


# ------------------------------------------- the unit's commands, run ---

class UnitCommands:
    """The unit's ExecStart and ExecStopPost with the console script and
    mount point replaced; started and stopped as systemd would."""

    def __init__(self, workdir: Path, unit: Path = UNIT, env: dict | None = None):
        workdir.mkdir(exist_ok=True)
        self.workdir = workdir
        self.env = env or {}
        self.mountpoint = os.path.realpath(workdir / "mnt")
        self.socket_path = str(workdir / "forkserver.sock")
        text = unit.read_text().replace(f"ExecStart={INSTALLED} ", f"ExecStart={console_script()} ")
        text = text.replace(MOUNTPOINT, self.mountpoint).replace(FORKSERVER_SOCKET, self.socket_path)
        svc = parse_unit(text)["Service"]
        self.start_argv = exec_argv(one(svc, "ExecStart"))[1]
        self.stop_post_argv = exec_argv(svc["ExecStopPost"][0])[1] if "ExecStopPost" in svc else None
        self.notify_path = str(workdir / "notify")
        self.proc: subprocess.Popen | None = None
        self.log = workdir / "daemon.log"
        self.messages: list[tuple[int, str]] = []  # (sender pid, datagram) since start()

    def start(self) -> int:
        """ExecStart with NOTIFY_SOCKET; returns once READY=1 arrives."""
        self.messages = []
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if os.path.exists(self.notify_path):
            os.unlink(self.notify_path)
        sock.bind(self.notify_path)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        sock.settimeout(0.5)
        self.sock = sock
        env = dict(os.environ, NOTIFY_SOCKET=self.notify_path, **self.env)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.start_argv, env=env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while not any("READY=1" in msg.split("\n") for _, msg in self.messages):
            assert self.proc.poll() is None, f"daemon exited {self.proc.returncode} before READY=1:\n{self.log_text()}"
            assert time.monotonic() < deadline, f"no READY=1 in {START_TIMEOUT} s:\n{self.log_text()}"
            self._receive()
        return self.proc.pid

    def _receive(self) -> None:
        try:
            data, ancdata, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        except socket.timeout:
            return
        sender = None
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                sender = array.array("i", payload[:12])[0]  # struct ucred: pid, uid, gid
        self.messages.append((sender, data.decode()))

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """KillMode=mixed (process, for the fork server): the signal goes to the main process only."""
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=START_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"daemon still running {START_TIMEOUT} s after {sig!r}:\n{self.log_text()}")
        while True:  # drain what it sent while stopping (STOPPING=1)
            before = len(self.messages)
            self.sock.settimeout(0.1)
            self._receive()
            if len(self.messages) == before:
                break
        self.sock.close()
        return rc

    def stop_post(self) -> int:
        """ExecStopPost (its '-' prefix: systemd ignores the exit status)."""
        return subprocess.run(self.stop_post_argv, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=120).returncode

    def mounts(self) -> list[str]:
        """Filesystem types mounted at the mount point (reads no file in it)."""
        with open("/proc/self/mountinfo") as f:
            return [line.split(" - ")[1].split()[0] for line in f
                    if line.split()[4].replace("\\040", " ") == self.mountpoint]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def cleanup(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for _ in self.mounts():
            subprocess.run(["umount", "-l", self.mountpoint], capture_output=True)


@pytest.fixture
def holder_commands(tmp_path):
    """The holder's unit's ExecStart, on a socket of the test's own (both
    commands take it from $PROCVIEW_SECCOMP_SOCKET, as a drop-in would set
    it); checks at the end that SIGTERM stopped it, exit 0, no socket left."""
    env = {"PROCVIEW_SECCOMP_SOCKET": str(tmp_path / "seccomp.sock")}
    commands = UnitCommands(tmp_path / "holder", HOLDER_UNIT, env)
    commands.start()
    try:
        yield commands
        assert commands.stop(signal.SIGTERM) == 0, commands.log_text()
        assert not os.path.exists(env["PROCVIEW_SECCOMP_SOCKET"]), "the holder left its socket"
    finally:
        commands.cleanup()


@pytest.fixture
def unit_commands(tmp_path, holder_commands):
    commands = UnitCommands(tmp_path, env=holder_commands.env)
    try:
        yield commands
    finally:
        commands.cleanup()


def _children(pid: int) -> list[str]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found += f.read().split()
    return found


@requires_root
def test_start_notify_and_stop_like_systemd(unit_commands):
    uc = unit_commands
    pid = uc.start()
    # NotifyAccess=main: systemd drops READY=1 unless the main process (the
    # one ExecStart started, no wrapper in between) sent it.
    ready = [sender for sender, msg in uc.messages if "READY=1" in msg.split("\n")]
    assert ready == [pid], f"READY=1 senders {ready}, main pid {pid}"
    assert uc.mounts() == ["fuse.procview"]
    with open(os.path.join(uc.mountpoint, "proc", "uptime")) as f:
        assert len(f.read().split()) == 2
    # KillMode=mixed signals the main process alone: nothing else to stop.
    assert _children(pid) == []

    assert uc.stop(signal.SIGTERM) == 0, uc.log_text()  # 0: Restart=on-failure leaves it stopped
    assert uc.mounts() == [], f"still mounted after SIGTERM:\n{uc.log_text()}"
    assert any("STOPPING=1" in msg for _, msg in uc.messages)

    uc.stop_post()  # nothing to clean up: must leave things as they are
    assert uc.mounts() == []
    assert os.path.isdir(uc.mountpoint)


@requires_root
def test_restart_after_kill_stop_post_detaches_dead_mount(unit_commands):
    """A SIGKILLed daemon (OOM, crash, stop timeout) leaves a dead mount;
    ExecStopPost runs before Restart=on-failure starts it again."""
    uc = unit_commands
    uc.start()
    assert uc.stop(signal.SIGKILL) == -signal.SIGKILL
    assert uc.mounts() == ["fuse.procview"]
    with pytest.raises(OSError):
        os.listdir(uc.mountpoint)  # "Transport endpoint is not connected"

    uc.stop_post()
    assert uc.mounts() == [], "ExecStopPost left the dead mount"

    uc.start()  # the restart
    assert uc.mounts() == ["fuse.procview"]
    with open(os.path.join(uc.mountpoint, "proc", "meminfo")) as f:
        assert f.read().startswith("MemTotal:")
    assert uc.stop(signal.SIGTERM) == 0, uc.log_text()
    assert uc.mounts() == []


@requires_root
def test_stop_post_leaves_other_filesystems_alone(unit_commands):
    """fusermount3 run by root unmounts anything; the guard in ExecStopPost
    limits it to procview's own mount."""
    uc = unit_commands
    os.makedirs(uc.mountpoint)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "procview-test", uc.mountpoint], check=True)
    uc.stop_post()
    assert uc.mounts() == ["tmpfs"]


@requires_root
def test_forkserver_unit_starts_serves_and_stops_like_systemd(tmp_path):
    """The fork server's ExecStart: READY=1 from the main process once it
    listens; a procview run through it is run by its child; SIGTERM to it
    alone (KillMode=process) stops it, exit 0, its socket gone."""
    uc = UnitCommands(tmp_path, FORKSERVER_UNIT)
    try:
        pid = uc.start()
        assert [sender for sender, msg in uc.messages if "READY=1" in msg.split("\n")] == [pid]
        env = dict(os.environ, PROCVIEW_FORKSERVER_SOCKET=uc.socket_path)
        state_root = tmp_path / "state"
        run = subprocess.Popen([str(console_script()), "run", "--rm", "--no-view", "--root", str(state_root),
                                "busybox", "sh", "-c", "echo started; sleep 1; exit 7"],
                               env=env, stdout=subprocess.PIPE, text=True)
        assert run.stdout.readline() == "started\n"
        assert len(_children(pid)) == 1, "the container's runner is not the fork server's child"
        assert run.wait(timeout=120) == 7
        assert uc.stop(signal.SIGTERM) == 0, uc.log_text()
        assert not os.path.exists(uc.socket_path)
    finally:
        uc.cleanup()


# ---------------------- the holder's unit next to procview.service ---

from .test_listener_holder import RuncLoop, needs_runc  # noqa: E402
from .test_oci_shim import runc  # noqa: E402,F401 (fixture)
from .test_run import state_root  # noqa: E402,F401 (fixture)


@requires_root
def test_holder_unit_starts_notifies_and_stops_like_systemd(holder_commands):
    """Its ExecStart: READY=1 from the main process once both sockets
    listen; SIGTERM (the fixture's end): exit 0, sockets gone."""
    ready = [sender for sender, msg in holder_commands.messages if "READY=1" in msg.split("\n")]
    assert ready == [holder_commands.proc.pid]
    socket_path = holder_commands.env["PROCVIEW_SECCOMP_SOCKET"]
    assert os.path.exists(socket_path) and os.path.exists(socket_path.replace(".sock", "-supervisor.sock"))


@requires_root
@needs_runc
def test_a_restart_of_procview_service_keeps_the_holder_and_the_containers_answers(
        unit_commands, holder_commands, runc, tmp_path):
    """What ``systemctl restart procview`` does, step by step: SIGTERM to
    serve alone (KillMode=mixed; then SIGKILL to whatever is left in its
    cgroup: nothing, serve started no holder), ExecStopPost, ExecStart. And
    a crash: SIGKILL, ExecStopPost, ExecStart (Restart=on-failure). The
    holder, in its own unit, lives through both; a runc container's calls
    get the kernel's answers meanwhile and its own after each READY=1."""
    socket_path = holder_commands.env["PROCVIEW_SECCOMP_SOCKET"]
    serve_pid = unit_commands.start()
    assert _children(serve_pid) == []  # --no-spawn-holder: the holder is not in procview.service's cgroup
    loop = RuncLoop(runc, tmp_path, socket_path, lambda: f"--- serve ---\n{unit_commands.log_text()}\n"
                                                           f"--- holder ---\n{holder_commands.log_text()}")
    try:
        mark = loop.output.wait_for("container", 0)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            assert unit_commands.stop(sig) == (0 if sig == signal.SIGTERM else -signal.SIGKILL), unit_commands.log_text()
            unit_commands.stop_post()
            mark = loop.output.wait_for("host", mark)
            assert holder_commands.proc.poll() is None, holder_commands.log_text()
            serve_pid = unit_commands.start()  # READY=1: the holder has handed the listener over
            assert _children(serve_pid) == []
            mark = loop.output.wait_for("container", mark)
    finally:
        loop.stop()
    assert unit_commands.stop(signal.SIGTERM) == 0, unit_commands.log_text()
