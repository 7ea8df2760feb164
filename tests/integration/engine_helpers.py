"""What the tests' private container engines share: dockerd
(docker_helpers.py), containerd (containerd_helpers.py) and podman
(podman_helpers.py).

Fixtures (import them by name): ``module_dir``, a short directory under
/tmp for a test module's daemons, and ``view``, the module's ``procview
serve`` with a supervisor socket of its own; ``second_runtime``, a
wrapper that points the shim at a second view (``SECOND_VIEW``) that a
test starts and stops itself (``check_a_stopped_view``).

What a container sees: ``PROBE`` prints busybox ``free -m``'s total
(sysinfo, answered by the supervisor), ``nproc`` (sched_getaffinity, the
supervisor too), ``/proc/meminfo``'s MemTotal and
``/sys/devices/system/cpu/online`` (the view's files) as ``key=value``
lines; ``values`` reads them, ``view_values`` is what they are with the
view, ``assert_host_values`` checks they are the host's.

An engine daemon started by a test lives in a directory of its own and
must leave nothing behind, even after a failure, a hang or a kill:

- ``start_daemon``: its own session, its output to a log file;
- ``running(daemon)``: start, yield, always close; fail afterwards if the
  cleanup had to force something;
- ``wait_until_ready``: polls the daemon's own client until it answers
  (the timeout only bounds a hang; a daemon that exits fails at once);
- ``stop_daemon``: SIGTERM, SIGKILL if it ignores it;
- ``sweep``, after the daemon is stopped, in this order: processes whose
  command line names the daemon's directory (its containerd, the runc
  shims, which outlive their daemon by design) are killed; whatever is
  still mounted below the directory is unmounted lazily; the containers'
  parent cgroup is emptied (SIGKILL) and removed, in every hierarchy; the
  ``HostPaths`` the daemon made outside its directory are removed; the
  directory goes last, unless a mount survived (never recursively into a
  mount).

Every cleanup step returns the problems it met as strings, so that a test
module cleans up everything first and fails with all of them afterwards.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

import pytest

from .serve_helpers import Daemons, host_meminfo_kib, live_processes

REPO = Path(__file__).resolve().parents[2]
SHIM = str(REPO / ".venv" / "bin" / "procview-runc")
PROCVIEW = str(REPO / ".venv" / "bin" / "procview")

START_TIMEOUT = 600.0  # the cgroup2 VM emulates its CPU: a daemon's start takes long there
STOP_TIMEOUT = 120.0
RUN_TIMEOUT = 600.0


# -- what a container sees ---------------------------------------------------------

PROBE = ("free -m | awk '/^Mem:/{print \"free=\" $2}'; "
         "echo nproc=$(nproc); "
         "echo meminfo=$(head -1 /proc/meminfo | awk '{print $2}'); "
         "echo online=$(cat /sys/devices/system/cpu/online)")


def values(stdout: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in stdout.splitlines() if "=" in line)


def view_values(memory_mib: int) -> dict[str, str]:
    """What ``PROBE`` prints in a container with the view, ``memory_mib``
    MiB of memory and one CPU (CPU 0)."""
    return {"free": str(memory_mib), "nproc": "1", "meminfo": str(memory_mib * 1024), "online": "0"}


def host_free_mib() -> int:
    """busybox free's total on the host: sysinfo's totalram in MiB."""
    import ctypes

    class Sysinfo(ctypes.Structure):
        _fields_ = [("uptime", ctypes.c_long), ("loads", ctypes.c_ulong * 3), ("totalram", ctypes.c_ulong),
                    ("pad", ctypes.c_char * 200)]
    info = Sysinfo()
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.sysinfo(ctypes.byref(info)) == 0
    return info.totalram >> 20  # mem_unit is 1 on 64-bit hosts with this much RAM


def host_nproc() -> int:
    return len(os.sched_getaffinity(0))


def assert_host_values(got: dict[str, str]) -> None:
    """``PROBE``'s ``values`` are the host's: no view, no supervisor."""
    assert abs(int(got["free"]) - host_free_mib()) <= 1, got  # busybox rounds
    assert got["meminfo"] == str(host_meminfo_kib()), got
    assert got["nproc"] == str(host_nproc()), got


def missing_tool(tools: tuple[str, ...], package: str) -> str | None:
    """None if every tool is there (a name on PATH or an executable path),
    else why the tests cannot run."""
    for tool in tools:
        if shutil.which(tool) is None and not os.access(tool, os.X_OK):
            return f"needs {tool} (Debian package {package})"
    return None


# -- a daemon's life ---------------------------------------------------------------


def start_daemon(argv: list[str], env: dict[str, str], log_path: str) -> subprocess.Popen:
    """Starts a daemon with its output appended to ``log_path``."""
    with open(log_path, "ab") as log:
        # Its own session: a signal to the test's process group does not reach it.
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)


def wait_until_ready(popen: subprocess.Popen, ready: Callable[[], bool], name: str,
                     describe: Callable[[], str], timeout: float = START_TIMEOUT) -> None:
    """Polls ``ready()`` (the daemon's client answering) until it is true."""
    deadline = time.monotonic() + timeout
    while True:
        if popen.poll() is not None:
            raise AssertionError(f"{name} exited ({popen.returncode}) before it answered\n{describe()}")
        if ready():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} did not answer within {timeout:.0f} s\n{describe()}")
        time.sleep(0.2)


def stop_daemon(popen: subprocess.Popen | None, name: str, timeout: float = STOP_TIMEOUT) -> list[str]:
    if popen is None or popen.poll() is not None:
        return []
    popen.send_signal(signal.SIGTERM)
    try:
        popen.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.wait()
        return [f"{name} ignored SIGTERM for {timeout:.0f} s: killed"]
    return []


@contextlib.contextmanager
def running(daemon):
    """Starts ``daemon``, yields it, and always closes it; a test that
    passed fails afterwards if the cleanup had to force something."""
    problems = []
    try:
        daemon.start()
        yield daemon
    finally:
        problems = daemon.close()
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


@pytest.fixture(scope="module")
def module_dir(request):
    """A fresh directory below /tmp for a test module's daemons (not
    pytest's deep tmp dirs: a unix socket's path is short), /tmp/pv-docker-*
    for test_docker.py. The daemons empty it when they close; what is left
    is removed here without ever descending into a mount still mounted
    (rmdir fails on it instead)."""
    engine = request.module.__name__.rpartition(".")[2].removeprefix("test_")
    directory = Path(tempfile.mkdtemp(prefix=f"pv-{engine}-", dir="/tmp"))
    yield directory
    for path in sorted(directory.rglob("*"), key=lambda p: len(str(p)), reverse=True):
        if path.is_dir() and not path.is_symlink():
            path.rmdir()
        else:
            path.unlink()
    directory.rmdir()


@pytest.fixture(scope="module")
def view(module_dir):
    """One ``procview serve`` for a test module's engine: the view at
    DIR/view, the supervisor at DIR/serve/seccomp.sock (the machine's
    default socket is not a test's); its ``Daemon``."""
    daemons = Daemons(module_dir / "serve")
    (module_dir / "serve").mkdir()
    try:
        yield daemons.start(str(module_dir / "view"), args=("--seccomp-socket", str(module_dir / "serve" / "seccomp.sock")))
    finally:
        daemons.close()


# A second runtime, for the test that stops its view.
SECOND_RUNTIME = "procview-view2"
SECOND_VIEW = "view2"
SECOND_SOCKET = "seccomp2.sock"


@pytest.fixture(scope="module")
def second_runtime(module_dir):
    """The path of a wrapper to register as ``SECOND_RUNTIME``: the shim
    with ``PROCVIEW_VIEW`` and ``PROCVIEW_SECCOMP_SOCKET`` set to the second
    view, the other way to point it at a view than the engine's
    environment."""
    wrapper = module_dir / f"procview-runc-{SECOND_VIEW}"
    wrapper.write_text("#!/bin/sh\n"
                       f"PROCVIEW_VIEW={module_dir / SECOND_VIEW} PROCVIEW_SECCOMP_SOCKET={module_dir / SECOND_SOCKET} "
                       f"exec {SHIM} \"$@\"\n")
    wrapper.chmod(0o755)
    yield str(wrapper)
    wrapper.unlink()


def check_a_stopped_view(run: Callable, serve_daemons, module_dir: Path) -> None:
    """``run(*args)``: the engine runs a container (``args``: run's
    options, the image and the command) and returns the CompletedProcess.
    A container of ``SECOND_RUNTIME`` gets its view while the view runs, and
    still starts, on the host's values, once its ``procview serve`` has
    stopped."""
    daemon = serve_daemons.start(str(module_dir / SECOND_VIEW), args=("--seccomp-socket", str(module_dir / SECOND_SOCKET)))
    probe = ("--runtime", SECOND_RUNTIME, "-m", "512m", "--cpus", "1", "busybox", "sh", "-c", PROBE)
    result = run(*probe)
    assert result.returncode == 0, result.stderr
    assert values(result.stdout) == view_values(512), result.stdout + result.stderr
    assert daemon.stop() == 0, daemon.describe()
    result = run(*probe)
    assert result.returncode == 0, result.stderr
    assert_host_values(values(result.stdout))


def export_busybox(archive: str, state_root: str) -> None:
    """The built-in busybox image of ``procview image export``, as a
    ``docker save`` archive (which ``docker load``, ``ctr images import``
    and ``podman load`` read)."""
    export = subprocess.run([PROCVIEW, "image", "export", "busybox", archive, "--root", state_root],
                            capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert export.returncode == 0, export.stderr


# -- what is left behind -------------------------------------------------------------


def pids_naming(path: str) -> list[int]:
    """Pids (zombies and this process excluded) whose command line names
    ``path`` or something below it."""
    exact, below = path.encode(), (path.rstrip("/") + "/").encode()
    return [pid for pid, argv in live_processes()
            if pid != os.getpid() and any(arg == exact or below in arg for arg in argv)]


def kill_naming(path: str, what: str) -> list[str]:
    """SIGKILL every process naming ``path`` until none is left."""
    for _ in range(100):
        left = pids_naming(path)
        if not left:
            return []
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    return [f"processes of {what} survive SIGKILL: {left}"]


def mounts_below(path: str) -> list[str]:
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point == path or point.startswith(path + "/"):
                points.append(point)
    return points


def unmount_below(path: str) -> None:
    """Lazily unmounts everything below ``path``, deepest first."""
    for point in sorted(mounts_below(path), reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


def cgroup_dirs(name: str) -> list[str]:
    """The cgroup ``/name`` in every hierarchy (cgroup v2, or each v1
    controller and the hybrid's unified tree)."""
    return glob.glob(f"/sys/fs/cgroup/{name}") + glob.glob(f"/sys/fs/cgroup/*/{name}")


def remove_cgroup_tree(name: str) -> list[str]:
    """Kills whatever still runs in cgroup ``/name`` or below (a container
    whose shim was killed), then removes it, deepest first."""
    problems = []
    for top in cgroup_dirs(name):
        subtree = sorted((d for d, _, _ in os.walk(top)), key=len, reverse=True)
        for directory in subtree:
            with contextlib.suppress(OSError):
                for pid in Path(directory, "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
        for directory in subtree:
            # A killed process leaves its cgroup a moment after it is reaped.
            for _ in range(50):
                try:
                    os.rmdir(directory)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)
            else:
                problems.append(f"cgroup {directory} cannot be removed")
    return problems


class HostPaths:
    """Directories a daemon creates outside its own directory whatever its
    configuration (hard-coded in the engine), each with the files it may
    still hold once the daemon is gone. Those that did not exist when the
    daemon started are removed again."""

    def __init__(self, allowed: dict[str, set[str]]):
        self.allowed = allowed
        self.existed = {path for path in allowed if os.path.lexists(path)}

    def remove_new(self, who: str) -> list[str]:
        problems = []
        for path, allowed in self.allowed.items():
            if path in self.existed or not os.path.isdir(path):
                continue
            files = [os.path.relpath(os.path.join(d, f), path) for d, _, fs in os.walk(path) for f in fs]
            if set(files) <= allowed:
                shutil.rmtree(path, ignore_errors=True)
            else:
                problems.append(f"{path}, made by {who}, holds {files}: left in place")
        return problems


def sweep(directory: Path, cgroup_parent: str, host_paths: HostPaths, who: str) -> list[str]:
    """Everything a stopped daemon may have left (see the module's
    docstring), removed; returns what had to be forced or stays."""
    problems = kill_naming(str(directory), f"{who}'s directory")
    unmount_below(str(directory))
    problems += remove_cgroup_tree(cgroup_parent)
    problems += host_paths.remove_new(who)
    if mounts_below(str(directory)):
        problems.append(f"mounts below {directory} survive a lazy umount: {mounts_below(str(directory))}")
    else:
        shutil.rmtree(directory, ignore_errors=True)
    return problems
