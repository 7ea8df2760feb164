"""Fixtures and helpers for the integration tests of ``procview serve``.

Import what a test module uses by name (pytest finds fixtures among a
module's globals)::

    from .serve_helpers import procview_mount, serve_daemons, no_leftovers, ...

- ``serve_daemons``: starts ``procview serve MOUNT --pidfile ...`` as a
  subprocess (stderr to a log file), waits for readiness (the pidfile), and
  at teardown stops every daemon still running with SIGTERM and checks that
  it exited 0, unmounted, and removed its pidfile, and that the listener
  holder it started exited by itself (nothing left to hold) with its sockets.
- ``procview_mount``: one daemon on a fresh mount point; yields its
  ``Daemon`` (``.mount`` is the mount path, ``.path(rel)`` a file in it).
- ``shared_mount``: one daemon for a whole module (same checks at its
  end), mounted below a world-traversable directory so that unprivileged
  readers can reach it.
- ``no_leftovers`` (autouse where imported): after the test *and* the
  sandbox's cleanup, no procview process (serve, listener holder) or mount
  the test made and no cgroup of its sandbox may remain.
- ``container_argv`` / ``run_in_container`` / ``start_python_in_container``:
  run a command "in a container": in a sandbox cgroup with limits, as a
  child of pid 1 of new pid and mount namespaces (``unshare``), with the
  mount's files bind-mounted over ``/proc/<file>``,
  ``/sys/devices/system/cpu`` and ``/sys/devices/system/node``, the way
  LXCFS users do. The host's ``/`` is otherwise visible, so the venv's
  Python (with psutil) runs inside.

Timeouts here only bound hangs; nothing asserts on durations.
"""

from __future__ import annotations

import glob
import json
import os
import re
import select
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import wait_until

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
PROCVIEW = str(VENV_BIN / "procview")
PYTHON = str(VENV_BIN / "python")
# For helper scripts that need only the standard library: the system's
# Python without site-packages starts several times faster than the venv's
# (it matters under emulation), and unprivileged users can run it (the
# venv's interpreter lives below /root).
STDLIB_PYTHON = ["/usr/bin/python3", "-I", "-S"] if os.access("/usr/bin/python3", os.X_OK) else [PYTHON, "-I", "-S"]

MiB = 1024 * 1024

# Generous: the cgroup2 VM emulates its CPU (~15x slower than the host).
START_TIMEOUT = 180.0
STOP_TIMEOUT = 120.0
TOOL_TIMEOUT = 240.0

PROC_FILES = ("meminfo", "cpuinfo", "stat", "uptime", "loadavg", "swaps", "diskstats")
CPU_DIR = "sys/devices/system/cpu"
NODE_DIR = "sys/devices/system/node"

# Fixed locale and width so tools print parseable numbers.
TOOL_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LC_ALL": "C",
    "LANG": "C",
    "TERM": "dumb",
    "COLUMNS": "200",
    "HOME": "/root",
}


# -- mounts and processes ---------------------------------------------------------


def mounts_at(path: str) -> list[str]:
    """Filesystem types mounted at ``path`` in this mount namespace (as
    /proc/self/mountinfo lists them, bottom of the stack first)."""
    path = os.path.abspath(path)
    types = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            if len(fields) > 4 and _unescape(fields[4]) == path:
                types.append(right.split()[0])
    return types


def procview_mounts() -> set[str]:
    """Mount points of every procview FUSE mount in this mount namespace."""
    points = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split()[:1] == ["fuse.procview"]:
                points.add(_unescape(left.split()[4]))
    return points


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def live_processes():
    """(pid, argv as bytes) of every process but zombies."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if state != "Z":
            yield int(entry), argv


def procview_serve_pids() -> set[int]:
    """Pids of every running ``procview serve`` process (zombies excluded),
    shards too (``python -m procview serve``)."""
    return {pid for pid, argv in live_processes() if any(a.endswith(b"procview") for a in argv[:4]) and b"serve" in argv}


def listener_holder_pids(socket_path: str | None = None) -> set[int]:
    """Pids of running listener holders (``procview listener-holder``, or
    one ``procview serve`` started), those serving ``socket_path`` if given."""
    def holder(argv):
        started_by_serve = b"procview.listener_holder" in argv
        return started_by_serve or (b"listener-holder" in argv and any(a.endswith(b"procview") for a in argv[:2]))
    return {pid for pid, argv in live_processes() if holder(argv) and (socket_path is None or socket_path.encode() in argv)}


def wait_for_holder_exit(socket_path: str, timeout: float = STOP_TIMEOUT) -> str | None:
    """Wait (bounded) for the holder at ``socket_path`` to exit and remove
    its sockets; None, or what is left (which is then killed and removed)."""
    from procview.listener_holder import supervisor_socket

    paths = (socket_path, supervisor_socket(socket_path))
    try:
        wait_until(lambda: not listener_holder_pids(socket_path) and not any(os.path.exists(p) for p in paths),
                   timeout=timeout)
        return None
    except AssertionError:
        pass
    left = f"listener holder {sorted(listener_holder_pids(socket_path))} / sockets {[p for p in paths if os.path.exists(p)]}"
    for pid in listener_holder_pids(socket_path):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for path in paths:
        if os.path.exists(path):
            os.unlink(path)
    return left


def sandbox_cgroups() -> set[str]:
    """Every ``procview-pytest*`` cgroup directory on this host."""
    found = set()
    for pattern in ("/sys/fs/cgroup/procview-pytest*", "/sys/fs/cgroup/*/procview-pytest*"):
        found.update(p for p in glob.glob(pattern) if os.path.isdir(p))
    return found


def lazy_umount(path: str) -> None:
    subprocess.run(["umount", "-l", path], capture_output=True)


def daemon_fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def daemon_fd_targets(pid: int) -> list[str]:
    """What each of the daemon's fds points to (``readlink``)."""
    targets = []
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            targets.append(os.readlink(f"/proc/{pid}/fd/{name}"))
        except OSError:
            continue  # closed meanwhile
    return targets


def daemon_files_of_gone_paths(pid: int) -> list[str]:
    """The daemon's open files whose path is gone (kept files of removed
    cgroups or exited processes, which its maintenance pass closes).
    Memory files (``/memfd:NAME (deleted)``) never had a path."""
    return [target for target in daemon_fd_targets(pid)
            if target.startswith("/") and not target.startswith("/memfd:") and not os.path.exists(target)]


def daemon_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


# -- the daemon ------------------------------------------------------------------


def read_log(path: str) -> str:
    """A daemon's log file as text so far ("" if there is none yet)."""
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


class Daemon:
    """One ``procview serve`` subprocess."""

    def __init__(self, argv: list[str], mount: str, pidfile: str | None, log_path: str, popen: subprocess.Popen,
                 seccomp_socket: str | None = None):
        self.argv = argv
        self.mount = mount
        self.pidfile = pidfile
        self.seccomp_socket = seccomp_socket  # its supervisor's socket (None: --no-seccomp-socket)
        self.log_path = log_path
        self.popen = popen
        self.stopped_by_fixture = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return read_log(self.log_path)

    def describe(self) -> str:
        return f"daemon: {shlex.join(self.argv)} (pid {self.pid}, exit {self.popen.returncode})\n--- its stderr ---\n{self.log()}---"

    def path(self, relative: str) -> str:
        return os.path.join(self.mount, relative)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Readiness = the pidfile exists and names this process."""
        deadline = time.monotonic() + timeout
        while True:
            if self.popen.poll() is not None:
                raise AssertionError(f"procview serve exited before it was ready\n{self.describe()}")
            try:
                with open(self.pidfile) as f:
                    if f.read().strip() == str(self.pid):
                        return
            except FileNotFoundError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"procview serve not ready after {timeout:.0f} s\n{self.describe()}")
            time.sleep(0.02)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Send ``sig`` and wait for the exit; returns the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise AssertionError(f"procview serve did not exit within {timeout:.0f} s of signal {sig}\n{self.describe()}")


class Daemons:
    """Starts daemons for one test and checks their shutdown at its end."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.started: list[Daemon] = []
        self._count = 0

    def start(self, mount: str | os.PathLike | None = None, pidfile: str | os.PathLike | None = "auto",
              args: tuple[str, ...] = (), env: dict | None = None, wait: bool = True,
              procview: str = PROCVIEW, cwd: str | os.PathLike | None = None) -> Daemon:
        """``procview``: the executable (another installation's, say),
        started in ``cwd``."""
        self._count += 1
        mount = str(mount if mount is not None else self.tmp_path / f"mnt{self._count}")
        if pidfile == "auto":
            pidfile = str(self.tmp_path / f"procview{self._count}.pid")
        argv = [procview, "serve", mount]
        if pidfile is not None:
            argv += ["--pidfile", str(pidfile)]
        # Each daemon its own supervisor socket, unless the test names one:
        # tests run side by side, and the default belongs to the machine.
        seccomp_socket = _option_value(args, "--seccomp-socket")
        if seccomp_socket is None and "--no-seccomp-socket" not in args:
            seccomp_socket = str(self.tmp_path / f"seccomp{self._count}.sock")
            argv += ["--seccomp-socket", seccomp_socket]
        argv += list(args)
        log_path = str(self.tmp_path / f"procview{self._count}.log")
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     env=env if env is not None else dict(os.environ), cwd=cwd)
        daemon = Daemon(argv, mount, None if pidfile is None else str(pidfile), log_path, popen, seccomp_socket)
        self.started.append(daemon)
        if wait:
            daemon.wait_ready()
        return daemon

    def close(self) -> None:
        problems = []
        for daemon in self.started:
            if daemon.popen.poll() is not None:
                continue  # the test stopped or killed it and judged that itself
            daemon.stopped_by_fixture = True
            try:
                code = daemon.stop(signal.SIGTERM)
            except AssertionError as exc:
                problems.append(str(exc))
                continue
            if code != 0:
                problems.append(f"SIGTERM: exit code {code}, expected 0\n{daemon.describe()}")
            if daemon.pidfile and os.path.exists(daemon.pidfile):
                problems.append(f"pidfile {daemon.pidfile} left behind\n{daemon.describe()}")
        # Each daemon's listener holder exits once no daemon is attached and
        # no container is left (by then the test's containers have ended).
        for socket_path in sorted({d.seccomp_socket for d in self.started if d.seccomp_socket}):
            left = wait_for_holder_exit(socket_path)
            if left:
                problems.append(f"{left} still there after the daemons stopped")
        for mount in sorted({d.mount for d in self.started}):
            left = mounts_at(mount)
            if left:
                problems.append(f"{mount} still mounted after the daemons stopped: {left}")
                for _ in left:
                    lazy_umount(mount)
        if problems:
            pytest.fail("\n\n".join(problems), pytrace=False)


def _option_value(args, name: str) -> str | None:
    args = list(args)
    for index, arg in enumerate(args):
        if arg == name and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


@pytest.fixture(autouse=True)
def no_leftovers(request, tmp_path):
    """Fails the test if it leaves behind a procview process it started, a
    procview mount under its tmp_path, or a cgroup of its sandbox. Autouse
    where imported; being autouse it is set up first and so checked last,
    after ``serve_daemons`` and ``sandbox`` have cleaned up. (Only what this
    test made is judged: other runs may share the machine, and a module's
    shared daemon outlives its tests.)"""
    running_before = procview_serve_pids() | listener_holder_pids()
    yield
    problems = []
    mine = str(tmp_path)
    ours = {pid for pid in (procview_serve_pids() | listener_holder_pids()) - running_before
            if _parent_of(pid) == os.getpid() or mine in _cmdline(pid)}
    if ours:
        problems.append(f"procview serve or listener holder processes left running: {sorted(ours)}")
        for pid in ours:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    mounts = {p for p in procview_mounts() if p == mine or p.startswith(mine + "/")}
    if mounts:
        problems.append(f"procview mounts left behind: {sorted(mounts)}")
        for point in mounts:
            lazy_umount(point)
    box = request.node.funcargs.get("sandbox")
    if box is not None:
        left = {p for p in sandbox_cgroups() if os.path.basename(p) == box.base.strip("/")}
        if left:
            problems.append(f"sandbox cgroups left behind: {sorted(left)}")
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


def _parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rpartition(")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.fixture
def serve_daemons(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root (mounts a FUSE file system)")
    daemons = Daemons(tmp_path)
    try:
        yield daemons
    finally:
        daemons.close()


@pytest.fixture
def procview_mount(serve_daemons):
    """A running ``procview serve``; its ``Daemon`` (``.mount``: the path)."""
    return serve_daemons.start()


@pytest.fixture(scope="module")
def shared_mount():
    """One ``procview serve`` for a whole module (for tests about what the
    view says, not about the daemon's life), checked like ``serve_daemons``
    at the end of the module. It is mounted below a fresh directory under
    /tmp that every user may enter (pytest's tmp_path is 0700, so an
    unprivileged reader could not even reach a mount below it)."""
    if os.geteuid() != 0:
        pytest.skip("needs root (mounts a FUSE file system)")
    import tempfile

    public = tempfile.mkdtemp(prefix="procview-pytest-shared-", dir="/tmp")
    os.chmod(public, 0o755)
    work = Path(tempfile.mkdtemp(prefix="procview-pytest-shared-work-", dir="/tmp"))
    daemons = Daemons(work)
    try:
        yield daemons.start(os.path.join(public, "mnt"))
    finally:
        try:
            daemons.close()
        finally:
            for name in os.listdir(public):
                os.rmdir(os.path.join(public, name))  # the mount point: never recursively into a mount
            os.rmdir(public)
            for name in os.listdir(work):
                os.unlink(work / name)
            os.rmdir(work)


# -- containers --------------------------------------------------------------------

# Runs as pid 1 of the new pid namespace, in the new mount namespace:
# bind-mounts the view over the host's files (one `mount -a` over a small
# fstab: one process instead of nine, which counts under emulation), then
# runs the command.
_CONTAINER_SCRIPT = r"""
mount -a -T "$1" || { echo "container: the bind mounts failed" >&2; exit 125; }
shift
"$@"
"""

# What a container bind-mounts from the view (source below the mount -> target).
BINDS = [(f"proc/{name}", f"/proc/{name}") for name in PROC_FILES] + [
    (CPU_DIR, f"/{CPU_DIR}"),
    (NODE_DIR, f"/{NODE_DIR}"),
]

_fstab_dir: str | None = None


def _fstab_escape(path: str) -> str:
    return path.replace("\\", "\\134").replace(" ", "\\040").replace("\t", "\\011").replace("\n", "\\012")


def container_fstab(mount: str) -> str:
    """An fstab of the bind mounts from ``mount`` (written once per mount,
    in a private temporary directory removed when the test process exits)."""
    global _fstab_dir
    if _fstab_dir is None:
        import atexit
        import shutil
        import tempfile

        _fstab_dir = tempfile.mkdtemp(prefix="procview-pytest-fstab-")
        atexit.register(shutil.rmtree, _fstab_dir, True)
    path = os.path.join(_fstab_dir, re.sub(r"[^A-Za-z0-9]", "_", mount) + ".fstab")
    if not os.path.exists(path):
        with open(path + ".tmp", "w") as f:
            for source, target in BINDS:
                f.write(f"{_fstab_escape(os.path.join(mount, source))} {_fstab_escape(target)} none bind 0 0\n")
        os.replace(path + ".tmp", path)
    return path


def container_argv(mount: str, argv: list[str], binds: bool = True) -> list[str]:
    """``argv`` as pid 1's child in new pid + mount namespaces (fresh /proc),
    with the view at ``mount`` bind-mounted over the host's files."""
    unshare = ["unshare", "--pid", "--fork", "--kill-child", "--mount", "--propagation", "private", "--mount-proc"]
    if not binds:
        return unshare + ["sh", "-c", '"$@"', "container"] + list(argv)
    return unshare + ["sh", "-c", _CONTAINER_SCRIPT, "container", container_fstab(mount)] + list(argv)


@dataclass
class ToolRun:
    """A finished command; ``str()`` of it is an assertion message."""

    argv: list[str]
    rc: int
    out: str
    err: str
    where: str = "container"

    def __str__(self) -> str:
        return (f"command ({self.where}): {shlex.join(self.argv)}\nexit code: {self.rc}\n"
                f"--- stdout ---\n{self.out}--- stderr ---\n{self.err}---")

    def ok(self) -> "ToolRun":
        assert self.rc == 0, f"command failed\n{self}"
        return self


def run_in_container(sandbox, cg, mount: str, argv: list[str], input: str | None = None, env: dict | None = None,
                     binds: bool = True, timeout: float = TOOL_TIMEOUT) -> ToolRun:
    """Run ``argv`` in a container of cgroup ``cg`` that sees the view at
    ``mount``; wait for it and return what it printed."""
    full = container_argv(mount, argv, binds)
    started = sandbox.start(cg, full, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env if env is not None else TOOL_ENV, text=True)
    try:
        out, err = started.popen.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(started.popen.pid, signal.SIGKILL)
        out, err = started.popen.communicate()
        raise AssertionError(f"timed out after {timeout:.0f} s\n{ToolRun(list(argv), -9, out, err)}")
    return ToolRun(list(argv), started.popen.returncode, out, err)


def enter_root_cgroup() -> None:
    """preexec_fn: move into the root cgroup, where a host process has no
    limits (the test runner's own cgroup might have some), so it must see
    the host's numbers."""
    from procview import cgroups

    cgroups.discover().cgroup("/").add_process(os.getpid())


def run_on_host(argv: list[str], timeout: float = TOOL_TIMEOUT, **kwargs) -> ToolRun:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    return ToolRun(list(argv), proc.returncode, proc.stdout, proc.stderr, where="host")


class LineProcess:
    """A long-running process (in a container) spoken to in lines of JSON:
    it prints one line per request it reads from stdin."""

    def __init__(self, started, argv: list[str]):
        self.started = started
        self.popen: subprocess.Popen = started.popen
        self.argv = argv
        self._buffer = b""

    def send(self, message) -> None:
        self.popen.stdin.write((json.dumps(message) + "\n").encode())
        self.popen.stdin.flush()

    def receive(self, timeout: float = TOOL_TIMEOUT):
        deadline = time.monotonic() + timeout
        fd = self.popen.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no answer within {timeout:.0f} s from {shlex.join(self.argv)}\n{self._stderr()}")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise AssertionError(f"{shlex.join(self.argv)} exited (code {self.popen.wait()}) without answering; "
                                         f"got {self._buffer!r}\n{self._stderr()}")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            return json.loads(line)
        except ValueError:
            raise AssertionError(f"not JSON from {shlex.join(self.argv)}: {line!r}\n{self._stderr()}") from None

    def request(self, message, timeout: float = TOOL_TIMEOUT):
        self.send(message)
        return self.receive(timeout)

    def _stderr(self) -> str:
        if self.popen.poll() is None:
            return "(still running)"
        return "--- stderr ---\n" + self.popen.stderr.read().decode(errors="replace")

    def close(self, timeout: float = TOOL_TIMEOUT) -> None:
        try:
            self.popen.stdin.close()
        except OSError:
            pass
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()


# For start_python_in_container: answers each request with the first line
# of /proc/meminfo as the container reads it, or "errno N".
MEMINFO_FIRST_LINE = r"""
import json, sys
def read():
    try:
        with open("/proc/meminfo") as f:
            return f.read().split("\n", 1)[0]
    except OSError as e:
        return f"errno {e.errno}"
for line in sys.stdin:
    print(json.dumps(read()), flush=True)
"""


def start_python_in_container(sandbox, cg, mount: str, code: str, args: list[str] = (), binds: bool = True,
                              **popen_kwargs) -> LineProcess:
    """Start a stdlib-only Python (``STDLIB_PYTHON``) running ``code`` in a
    container; talk to it with ``LineProcess.request``."""
    argv = STDLIB_PYTHON + ["-c", code] + [str(a) for a in args]
    full = container_argv(mount, argv, binds)
    started = sandbox.start(cg, full, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=TOOL_ENV, **popen_kwargs)
    return LineProcess(started, argv)


# -- parsing ----------------------------------------------------------------------------


def meminfo_kib(text: str, key: str = "MemTotal") -> int:
    match = re.search(rf"^(?:Node \d+ )?{key}:\s+(\d+) kB$", text, re.M)
    assert match, f"no {key} line in:\n{text}"
    return int(match.group(1))


def host_meminfo_kib(key: str = "MemTotal") -> int:
    with open("/proc/meminfo") as f:
        return meminfo_kib(f.read(), key)


def cpuinfo_processors(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"^processor\s*:\s*(\d+)$", text, re.M)]


def cpuinfo_blocks(text: str) -> dict[int, dict[str, str]]:
    """processor number -> {field: value} of each block of a cpuinfo."""
    blocks = {}
    for chunk in text.strip().split("\n\n"):
        fields = dict((k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in chunk.splitlines()))
        if "processor" in fields:
            blocks[int(fields["processor"])] = fields
    return blocks


def identifying_fields(blocks: dict[int, dict[str, str]]) -> list[str]:
    """cpuinfo fields whose value differs between the host's CPUs (apicid,
    core id...), ignoring those the view rewrites or that change by
    themselves: they tell which host CPU a block came from."""
    skip = {"processor", "cpu MHz", "siblings", "cpu cores", "bogomips", "BogoMIPS"}
    keys = set().union(*(b.keys() for b in blocks.values())) - skip
    return sorted(k for k in keys if len({b.get(k) for b in blocks.values()}) > 1)


def stat_cpu_lines(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"^cpu(\d+) ", text, re.M)]


def host_cpus() -> list[int]:
    from procview.cgroups import parse_cpulist

    with open("/sys/devices/system/cpu/online") as f:
        return sorted(parse_cpulist(f.read()))


def walk_no_follow(top: str):
    """(relative path, lstat) of everything below ``top``, not following
    symlinks."""
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            yield os.path.relpath(full, top), os.lstat(full)


def errno_of(call, *args) -> int | None:
    """The errno ``call(*args)`` fails with, None if it succeeds."""
    try:
        result = call(*args)
    except OSError as exc:
        return exc.errno
    if isinstance(result, int) and call is os.open:
        os.close(result)
    return None


__all__ = [
    "MiB", "PROCVIEW", "PYTHON", "STDLIB_PYTHON", "BINDS", "PROC_FILES", "CPU_DIR", "NODE_DIR", "TOOL_ENV",
    "Daemon", "Daemons", "ToolRun", "LineProcess",
    "serve_daemons", "procview_mount", "shared_mount", "no_leftovers",
    "container_argv", "container_fstab", "run_in_container", "run_on_host", "enter_root_cgroup", "start_python_in_container",
    "MEMINFO_FIRST_LINE",
    "mounts_at", "procview_mounts", "live_processes", "procview_serve_pids", "listener_holder_pids",
    "wait_for_holder_exit", "sandbox_cgroups", "lazy_umount",
    "daemon_fd_count", "daemon_rss_kib",
    "meminfo_kib", "host_meminfo_kib", "cpuinfo_processors", "cpuinfo_blocks", "identifying_fields", "stat_cpu_lines", "host_cpus", "walk_no_follow",
    "errno_of", "wait_until",
]
