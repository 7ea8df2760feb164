"""Beyond files: sysinfo(), sched_getaffinity() and time inside real containers.

The fidelity matrix of issue #6, checked with the real tools: a procview
container (512 MiB, and (a) ``--cpus 1``, (b) ``--cpuset-cpus 0``, (c)
``--cpus 1 --cpuset-cpus 0-1``, where only intercepting
``sched_getaffinity`` can make affinity tools say 1) runs GNU coreutils,
procps, util-linux, glibc's getconf, busybox and Python with psutil. They
come from the host: ``/usr`` (and the venv's site-packages, for psutil)
are bind-mounted read-only into a busybox container, so no registry or
image build is needed. A control run without the supervisor shows that
the syscall checks can fail.

Also here: the supervisor's life (killed and restarted under a running
container), containers started by runc with ``linux.seccomp.listenerPath``,
and bad input (garbage on the socket, a storm of calls in one container
while another is answered, callers that die mid-call).
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import psutil
import pytest

from procview import cgroups
from procview.runtime.container import CGROUP_PARENT
from .serve_helpers import no_leftovers, procview_mount, serve_daemons  # noqa: F401 (fixtures)
from .test_run import PROCVIEW, run, state_root  # noqa: F401 (fixture)

MiB = 1 << 20
LIMIT_KB = 512 * 1024
TIMEOUT = 600  # bounds a hang only (the cgroup2 VM emulates its CPU)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SITE_PACKAGES = sorted(glob.glob(os.path.join(REPO, ".venv", "lib", "python3*", "site-packages")))[:1]

# The host's tools inside a busybox container: /usr read-only (Debian's /lib
# and /lib64 are links into it), the venv's site-packages for psutil, run
# with the system's Python (same minor version as the venv's).
HOST_TOOLS = [
    "-v", "/usr:/usr:ro", "-v", "/usr/lib:/lib:ro", "-v", "/usr/lib64:/lib64:ro",
    "-e", "LC_ALL=C", "-e", "COLUMNS=200",
] + (["-v", f"{SITE_PACKAGES[0]}:/site-packages:ro", "-e", "PYTHONPATH=/site-packages"] if SITE_PACKAGES else [])

# name -> shell command printing one value. Tools whose name says
# "busybox" are busybox's applets; the rest resolve to the host's binaries.
PROBES = {
    "/proc/cpuinfo processors": "grep -c ^processor /proc/cpuinfo",
    "getconf _NPROCESSORS_ONLN": "getconf _NPROCESSORS_ONLN",
    "getconf _NPROCESSORS_CONF": "getconf _NPROCESSORS_CONF",
    "nproc": "nproc",
    "nproc --all": "nproc --all",
    "busybox nproc": "busybox nproc",
    "lscpu CPU(s)": "lscpu | busybox sed -n 's/^CPU(s): *//p'",
    "top per-CPU rows": "top -bn1 -1 | grep -c '^%Cpu'",
    "procps free total (kB)": "free -k | busybox awk '/^Mem:/{print $2}'",
    "busybox free total (kB)": "busybox free | busybox awk '/^Mem:/{print $2}'",
    "/proc/uptime": "busybox cut -d' ' -f1 /proc/uptime",
    "busybox uptime": "busybox uptime",
    "ps -o etimes (pid 1)": "ps -o etimes= -p 1",
    "/proc/loadavg": "busybox cut -d' ' -f1-3 /proc/loadavg",
}
PYTHON_PROBES = r"""
import ctypes, os, psutil
class Sysinfo(ctypes.Structure):
    _fields_ = [("uptime", ctypes.c_long), ("loads", ctypes.c_ulong * 3), ("totalram", ctypes.c_ulong)]
info = (ctypes.c_char * 256)()
import time
# Read together, right before the call: tools take seconds in the emulated VM.
with open("/proc/uptime") as f:
    print("/proc/uptime (python)=%s" % f.read().split()[0])
with open("/proc/stat") as f:
    print("/proc/stat btime=%s" % next(l.split()[1] for l in f if l.startswith("btime ")))
print("time.time()=%d" % time.time())
assert ctypes.CDLL(None).sysinfo(info) == 0
print("sysinfo().uptime=%d" % Sysinfo.from_buffer(info).uptime)
print("os.sysconf SC_PHYS_PAGES (kB)=%d" % (os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 1024))
print("psutil.virtual_memory total (kB)=%d" % (psutil.virtual_memory().total // 1024))
def loadavg_file():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])
# The file, the call, the file: loads move every 5 s, so the call must
# match one of the readings around it.
print("/proc/loadavg before=%s" % loadavg_file())
print("os.getloadavg=%s" % " ".join("%.2f" % v for v in os.getloadavg()))
print("/proc/loadavg after=%s" % loadavg_file())
print("os.cpu_count=%d" % os.cpu_count())
print("os.sched_getaffinity(0)=%d" % len(os.sched_getaffinity(0)))
"""

CPU_PROBES = (
    "/proc/cpuinfo processors", "getconf _NPROCESSORS_ONLN", "getconf _NPROCESSORS_CONF", "nproc", "nproc --all",
    "busybox nproc", "lscpu CPU(s)", "top per-CPU rows", "os.cpu_count", "os.sched_getaffinity(0)",
)
MEMORY_PROBES = (
    "procps free total (kB)", "busybox free total (kB)", "os.sysconf SC_PHYS_PAGES (kB)", "psutil.virtual_memory total (kB)",
)


def probe_script() -> str:
    lines = [f"printf '%s=%s\\n' {_sh(name)} \"$({command})\"" for name, command in PROBES.items()]
    lines.append(f"python3 -c {_sh(PYTHON_PROBES)}")
    return "\n".join(lines) + "\n"


def _sh(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def run_probes(state_root, daemon, *limits: str, seccomp_socket: str | None = None) -> tuple[dict[str, str], str]:
    result = run(
        state_root, "--view", daemon.mount, "--seccomp-socket", seccomp_socket or daemon.seccomp_socket,
        "--memory", "512M", *limits, *HOST_TOOLS, "busybox", "sh", "-c", probe_script(), timeout=TIMEOUT,
    )
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return parse_probes(result.stdout), result.stdout + result.stderr


def parse_probes(stdout: str) -> dict[str, str]:
    values = {}
    for line in stdout.splitlines():
        name, sep, value = line.partition("=")
        if sep:
            values[name] = value.strip()
    return values


def check(values: dict[str, str], output: str, name: str, expected: str) -> str | None:
    got = values.get(name)
    if got != expected:
        return f"{name}: printed {got!r}, expected {expected!r}"
    return None


def assert_container_values(values: dict[str, str], output: str, time_namespace: bool = True) -> None:
    """Every probe shows the container. ``time_namespace=False`` (a
    container whose runtime gives it none, e.g. runc 1.1 under Docker)
    leaves out ``ps``'s elapsed times, which only a time namespace can make
    agree with the container's uptime (docs/view-semantics.md)."""
    problems = [check(values, output, name, "1") for name in CPU_PROBES]
    problems += [check(values, output, name, str(LIMIT_KB)) for name in MEMORY_PROBES]
    problems = [p for p in problems if p]
    # Time: the container's age everywhere, and the clocks agree.
    try:
        uptime = float(values["/proc/uptime"])
        sys_uptime = int(values["sysinfo().uptime"])
        python_uptime = float(values["/proc/uptime (python)"])
        etime = int(values["ps -o etimes (pid 1)"])
        btime, now = int(values["/proc/stat btime"]), int(values["time.time()"])
        if not 0 <= uptime < 120:
            problems.append(f"/proc/uptime: {uptime}, expected the container's age (seconds)")
        if abs(sys_uptime - python_uptime) > 2:
            problems.append(f"sysinfo().uptime {sys_uptime} disagrees with /proc/uptime {python_uptime} read just before")
        if time_namespace and not 0 <= etime <= python_uptime + 1:  # ps ran before python read the uptime
            problems.append(f"ps etimes of pid 1: {etime}, expected between 0 and the uptime {python_uptime}")
        if abs(btime + python_uptime - now) > 2:
            problems.append(f"/proc/stat btime {btime} + uptime {python_uptime} is not now ({now})")
        if not re.search(r"up\s+0 min", values["busybox uptime"]):
            problems.append(f"busybox uptime: {values['busybox uptime']!r}, expected 'up 0 min'")
        # Load: glibc's getloadavg() asks sysinfo(); it must match the file
        # read right before or right after it.
        around = (values["/proc/loadavg before"], values["/proc/loadavg after"])
        if values["os.getloadavg"] not in around:
            problems.append(f"os.getloadavg {values['os.getloadavg']!r} disagrees with /proc/loadavg {around}")
    except (KeyError, ValueError) as exc:
        problems.append(f"a time or load probe printed nothing usable ({exc})")
    assert not problems, "\n".join(problems) + f"\n--- what the container printed ---\n{output}"


needs_two_cpus = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs a host with 2 CPUs")


@pytest.mark.parametrize("limits", [
    ("--cpus", "1"),
    ("--cpuset-cpus", "0"),
    pytest.param(("--cpus", "1", "--cpuset-cpus", "0-1"), marks=needs_two_cpus),
], ids=["cpus-1", "cpuset-0", "cpus-1-over-cpuset-0-1"])
def test_fidelity_matrix(state_root, procview_mount, limits):
    values, output = run_probes(state_root, procview_mount, *limits)
    assert_container_values(values, output)


@needs_two_cpus
def test_without_the_supervisor_the_syscall_tools_see_the_host(state_root, procview_mount, tmp_path):
    """The control: no supervisor at the socket, so busybox free's total,
    os.sysconf and the affinity tools report the host; the files still
    show the container. (Proves the matrix above can fail.)"""
    values, output = run_probes(state_root, procview_mount, "--cpus", "1", "--cpuset-cpus", "0-1",
                                seccomp_socket=str(tmp_path / "nobody.sock"))
    host_kb = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 1024
    assert int(values["busybox free total (kB)"]) > LIMIT_KB, output
    assert int(values["os.sysconf SC_PHYS_PAGES (kB)"]) == host_kb, output
    for name in ("nproc", "busybox nproc", "os.sched_getaffinity(0)"):
        assert values[name] == "2", f"{name}: {values[name]!r}\n{output}"
    assert values["procps free total (kB)"] == str(LIMIT_KB) and values["os.cpu_count"] == "1", output
    assert "no seccomp supervisor at" in output


# -- the supervisor's life ------------------------------------------------------------

SYSINFO_LOOP = r"""
import os, sys
for line in sys.stdin:
    print(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 1024, flush=True)
"""


def test_a_dead_supervisor_never_stalls_a_call_and_a_restarted_one_takes_over(state_root, serve_daemons, tmp_path):
    socket_path = str(tmp_path / "agent.sock")
    daemon = serve_daemons.start(args=("--seccomp-socket", socket_path))
    container = subprocess.Popen(
        [PROCVIEW, "run", "--root", state_root, "-i", "--view", daemon.mount, "--seccomp-socket", socket_path,
         "--memory", "512M", *HOST_TOOLS, "busybox", "python3", "-c", SYSINFO_LOOP],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    host_kb = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 1024

    def ask() -> int:
        container.stdin.write("\n")
        container.stdin.flush()
        line = container.stdout.readline()  # a stalled call would hang here (the test's timeout ends it)
        assert line, f"the container ended: {container.stderr.read()}"
        return int(line)

    try:
        assert ask() == LIMIT_KB
        daemon.stop(signal.SIGKILL)
        assert ask() == host_kb  # the listener holder answered "continue": the real syscall ran
        restarted = serve_daemons.start(daemon.mount, args=("--seccomp-socket", socket_path))
        # Readiness means the holder has handed every listener to the new daemon.
        assert ask() == LIMIT_KB
        assert restarted.alive()
    finally:
        container.stdin.close()
        assert container.wait(timeout=TIMEOUT) == 0
    # procview run never noticed: its connection is to the holder, which stayed.
    assert container.stderr.read() == ""
    assert "the supervisor is gone" in daemon.log(), daemon.log()  # the holder logs where its daemon did


def test_a_limit_written_shows_at_the_next_sysinfo_call(state_root, procview_mount):
    # The supervisor keeps a container's sysinfo answer for a moment and
    # its limits longer; a write to the cgroup (docker update) must drop
    # both at once (the engine watches the cgroup directories: inotify).
    container = subprocess.Popen(
        [PROCVIEW, "run", "--root", state_root, "-i", "--view", procview_mount.mount,
         "--seccomp-socket", procview_mount.seccomp_socket, "--memory", "512M", *HOST_TOOLS,
         "busybox", "python3", "-c", SYSINFO_LOOP],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )

    def ask() -> int:
        container.stdin.write("\n")
        container.stdin.flush()
        line = container.stdout.readline()
        assert line, f"the container ended: {container.stderr.read()}"
        return int(line)

    try:
        assert ask() == LIMIT_KB
        # The container's python3 (procview run's own command line names the script too).
        caller = next(p for p in psutil.process_iter(["cmdline"])
                      if (p.info["cmdline"] or [])[:3] == ["python3", "-c", SYSINFO_LOOP])
        cgroup = cgroups.discover().cgroup_of(caller.pid)
        # Write limits only to a container's own cgroup, never to whatever
        # cgroup a mismatched process is in (the test runner's, say).
        assert cgroup.path.startswith(f"{CGROUP_PARENT}/"), cgroup.path
        for mib in (384, 256, 448, 320):
            cgroup.set_memory_limit(mib * 1024 * 1024)
            assert ask() == mib * 1024, f"after writing {mib} MiB"
    finally:
        container.stdin.close()
        assert container.wait(timeout=TIMEOUT) == 0, container.stderr.read()


# -- runc with listenerPath: the OCI seccomp agent protocol --------------------------


@pytest.mark.skipif(shutil.which("runc") is None, reason="needs runc (Debian package runc)")
def test_runc_containers_get_the_same_answers(procview_mount, state_root, tmp_path):
    """A container started by runc whose seccomp profile sends sysinfo and
    sched_getaffinity to ``listenerPath`` = procview's socket: busybox free
    and nproc inside show its 512 MiB and its 1-CPU quota (no cpuset)."""
    from procview.runtime.images import ImageStore

    image = ImageStore(state_root).ensure_busybox()
    bundle = tmp_path / "bundle"
    rootfs = bundle / "rootfs"
    shutil.copytree(image.layers[-1], rootfs, symlinks=True)
    for directory in ("proc", "sys", "dev", "tmp"):
        (rootfs / directory).mkdir(exist_ok=True)
    subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True)
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["terminal"] = False
    config["process"]["args"] = ["sh", "-c", "busybox free | busybox awk '/^Mem:/{print $2}'; busybox nproc"]
    config["root"]["readonly"] = False
    config["linux"]["resources"] = {"memory": {"limit": 512 * MiB}, "cpu": {"quota": 100000, "period": 100000}}
    config["linux"]["cgroupsPath"] = f"/procview-pytest-runc-{os.getpid()}"
    config["mounts"] += [
        {"destination": f"/proc/{name}", "type": "bind", "source": procview_mount.path(f"proc/{name}"), "options": ["bind", "ro"]}
        for name in ("meminfo", "cpuinfo", "stat", "uptime", "loadavg")
    ]
    config["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": procview_mount.seccomp_socket,
        "architectures": ["SCMP_ARCH_X86_64"] if os.uname().machine == "x86_64" else [],
        "syscalls": [{"names": ["sysinfo", "sched_getaffinity"], "action": "SCMP_ACT_NOTIFY"}],
    }
    (bundle / "config.json").write_text(json.dumps(config))
    name = f"procview-pytest-{os.getpid()}"
    try:
        result = subprocess.run(["runc", "run", "--bundle", str(bundle), name], capture_output=True, text=True, timeout=TIMEOUT)
    finally:
        subprocess.run(["runc", "delete", "--force", name], capture_output=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(LIMIT_KB), "1"], result.stdout + result.stderr
    assert "supervising container" in open(procview_mount.log_path).read()


# -- bad input ------------------------------------------------------------------------

STORM = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None)
buffer = (ctypes.c_char * 256)()
calls = 0
while not os.path.exists("/shared/stop") and calls < 100000:
    libc.sysinfo(buffer)
    calls += 1
    if calls == 1000:
        open("/shared/storming", "w").close()
print(calls, flush=True)
"""


def test_a_storm_in_one_container_does_not_stall_another(state_root, procview_mount, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    args = ["--view", procview_mount.mount, "--seccomp-socket", procview_mount.seccomp_socket, "--memory", "512M",
            *HOST_TOOLS, "-v", f"{shared}:/shared"]
    storm = subprocess.Popen([PROCVIEW, "run", "--root", state_root, *args, "busybox", "python3", "-c", STORM],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (shared / "storming").exists():
            assert storm.poll() is None, storm.communicate()
            assert time.monotonic() < deadline, "the storm never started"
            time.sleep(0.05)
        # The quiet container, with another limit, while the storm runs.
        quiet = run(state_root, "--view", procview_mount.mount, "--seccomp-socket", procview_mount.seccomp_socket,
                    "--memory", "256M", "busybox", "sh", "-c",
                    "for i in 1 2 3 4 5 6 7 8 9 10; do busybox free | busybox awk '/^Mem:/{print $2}'; done",
                    timeout=TIMEOUT)
        storm_running = storm.poll() is None
    finally:
        (shared / "stop").touch()
        out, err = storm.communicate(timeout=TIMEOUT)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.split() == [str(256 * 1024)] * 10, quiet.stdout
    assert storm.returncode == 0, err
    assert storm_running or int(out) == 100000, "the storm ended early"
    assert int(out) >= 1000
    print(f"storm: {int(out)} sysinfo calls answered while the quiet container ran")
    assert procview_mount.alive()


def test_callers_killed_mid_call_and_garbage_on_the_socket_cost_nothing(state_root, procview_mount):
    def not_a_listener(client):
        with open("/dev/null", "rb") as null:
            socket.send_fds(client, [json.dumps({"fds": ["seccompFd"]}).encode()], [null.fileno()])

    # Garbage, a message without an fd, an fd that is not a listener.
    for send in (
        lambda client: client.sendall(b"garbage"),
        lambda client: client.sendall(json.dumps({"fds": ["seccompFd"]}).encode()),
        not_a_listener,
    ):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(procview_mount.seccomp_socket)
            send(client)
            client.shutdown(socket.SHUT_WR)
            assert client.recv(16) == b""  # dropped
    # Processes killed while their sysinfo is being answered.
    churn = run(state_root, "--view", procview_mount.mount, "--seccomp-socket", procview_mount.seccomp_socket,
                "--memory", "512M", "busybox", "sh", "-c",
                "i=0; while [ $i -lt 200 ]; do busybox free >/dev/null & kill -9 $! 2>/dev/null; i=$((i+1)); done; wait; "
                "busybox free | busybox awk '/^Mem:/{print $2}'", timeout=TIMEOUT)
    assert churn.returncode == 0, churn.stderr
    assert churn.stdout.split() == [str(LIMIT_KB)], churn.stdout
    assert procview_mount.alive()
    log = open(procview_mount.log_path).read()
    assert log.count("a message without an fd; dropped") == 2, log
    assert log.count("the seccompFd is not a seccomp listener; dropped") == 1, log
