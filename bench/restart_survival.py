#!/usr/bin/env python3
"""Surviving a restart of procview serve: readers in containers through kill -9 and SIGTERM, against LXCFS.

    sudo .venv/bin/python bench/restart_survival.py [--containers 5] [--cycles 5] [--json FILE]

One run, on this machine (issue 17, part 3):

1. Two FUSE daemons on temporary mount points, each in a cgroup of its own:
   ``procview serve MOUNT --seccomp-socket SOCK`` and LXCFS
   (``lxcfs -f -l --enable-cfs MOUNT``).
2. ``--containers`` containers of each kind, each with a memory limit of
   its own (so a value from another container is seen as wrong) and a
   1-CPU quota:

   - ``run``: ``procview run -d`` (the view's binds, and sysinfo(2) through
     the supervisor, which the container's monitor hands its listener to);
   - ``v-procview`` / ``v-lxcfs``: what ``docker run -v`` does with
     LXCFS-style flags: a process in its own cgroup, mount and pid
     namespaces (``unshare``), the daemon's ``proc/*`` files and its
     ``sys/devices/system/cpu`` directory bind-mounted over its own (no
     syscall answers: no seccomp listener);
   - ``runc``: runc through ``procview-runc`` (the view's binds, and
     ``linux.seccomp.listenerPath`` in the config), with Docker 20.10's
     default seccomp profile.

3. In each, a reader (the host's ``/usr/bin/python3 -I -S``; ``/usr`` bound
   read-only where the root is not the host's) loops every ``--interval``
   seconds: open + read + close ``/proc/meminfo`` and
   ``/sys/devices/system/cpu/online``, ``sysinfo(2)`` (the call behind
   ``os.sysconf('SC_PHYS_PAGES')``: totalram x mem_unit), and
   ``pread(fd, 0)`` of a ``/proc/meminfo`` fd it opened once at its start
   and keeps. One line per round goes to a file in a host directory, with
   CLOCK_MONOTONIC timestamps (the same clock as the host's: procview run's
   time namespace offsets only the boot time).
4. ``--cycles`` times: both daemons are killed (SIGKILL to the daemon's
   pid, as a crash or the OOM killer would), and after ``--down`` seconds
   (procview's unit restarts after ``RestartSec=1s``) started again on the
   same mount point (LXCFS's dead mount detached first, as its unit's
   ``ExecStopPost`` does; procview detaches its own); then ``--between``
   seconds of reads. Then one cycle with SIGTERM, the new daemon started
   as soon as the old one exited (``systemctl restart``). Readiness:
   procview's pidfile names the new daemon (written after a real read
   through the mount); LXCFS's mount answers a read.
5. Afterwards, on the host, the reads are judged (``analyze_reads``): an
   error is a failed read or a value that is not the container's own; per
   container and cycle, the time from the daemon's readiness to its repair
   (the first good read after the cycle's last bad one), the longest gap
   between good reads, and readers that stalled (no read in a cycle's last
   second: stuck in a call; where, the host's /proc tells). The issue's
   rule: from readiness + 1 s on, zero errors for procview.

A markdown report goes to stdout (progress to stderr), the raw numbers to
``--json FILE``. Containers, daemons, mounts and cgroups are removed at the
end, on failure and on Ctrl-C. Needs root, ``unshare``, ``lxcfs``,
busybox-static and, for the ``runc`` kind, runc.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import errno
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import NamedTuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _util  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
PROCVIEW = os.path.join(BIN, "procview")
SHIM = os.path.join(BIN, "procview-runc")
DOCKER_PROFILE = os.path.join(REPO, "tests", "fixtures", "oci", "docker-20.10-config.json")

MiB = 1024 * 1024
NS = 1_000_000_000
GRACE_NS = NS  # the rule: zero errors from readiness + 1 s on
STALL_NS = NS  # a reader with no read for this long is stuck in a call

# key -> (label, the daemon it reads through, whether sysinfo is answered)
KINDS = {
    "run": ("procview run -d", "procview", True),
    "v-procview": ("-v binds, procview", "procview", False),
    "v-lxcfs": ("-v binds, LXCFS", "lxcfs", False),
    "runc": ("runc via procview-runc", "procview", True),
}
DAEMONS = ("procview", "lxcfs")
LABEL = {"procview": "procview", "lxcfs": "LXCFS"}

# What the -v kinds bind from a daemon's mount (LXCFS's documented set).
PROC_FILES = ("meminfo", "cpuinfo", "stat", "uptime", "loadavg", "swaps", "diskstats")
CPU_DIR = "sys/devices/system/cpu"
V_BINDS = [(f"proc/{name}", f"/proc/{name}") for name in PROC_FILES] + [(CPU_DIR, f"/{CPU_DIR}")]

# The host's Python in a busybox root: /usr read-only (Debian's /lib and
# /lib64 are links into it).
HOST_USR = [(src, dst) for src, dst in (("/usr", "/usr"), ("/usr/lib", "/lib"), ("/usr/lib64", "/lib64")) if os.path.isdir(src)]
PYTHON_IN_CONTAINER = ["/usr/bin/python3", "-I", "-S"]


def log(message: str) -> None:
    print(f"restart_survival: {message}", file=sys.stderr, flush=True)


BenchError = _util.BenchError


# =============================================================================
# The reader, in every container: one line per round,
#   START_NS END_NS m=MEMTOTAL_KB o=CPU_ONLINE s=SYSINFO_KB h=HELD_MEMTOTAL_KB
# a value "!N" being errno N. Standard library only.
# =============================================================================

READER = r"""
import ctypes, os, sys, time
path, interval = sys.argv[1], float(sys.argv[2])

class Sysinfo(ctypes.Structure):  # struct sysinfo, <sys/sysinfo.h>
    _fields_ = [("uptime", ctypes.c_long), ("loads", ctypes.c_ulong * 3), ("totalram", ctypes.c_ulong),
                ("freeram", ctypes.c_ulong), ("sharedram", ctypes.c_ulong), ("bufferram", ctypes.c_ulong),
                ("totalswap", ctypes.c_ulong), ("freeswap", ctypes.c_ulong), ("procs", ctypes.c_ushort),
                ("pad", ctypes.c_ushort), ("totalhigh", ctypes.c_ulong), ("freehigh", ctypes.c_ulong),
                ("mem_unit", ctypes.c_uint), ("_f", ctypes.c_char * 8)]

libc = ctypes.CDLL(None, use_errno=True)
info = Sysinfo()

def now():
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)

def memtotal(data):
    for line in data.split(b"\n"):
        if line.startswith(b"MemTotal:"):
            return line.split()[1].decode()
    return "?"

def online(data):
    return data.decode(errors="replace").strip() or "?"

def fresh(name, parse):
    try:
        fd = os.open(name, os.O_RDONLY)
        try:
            data = os.read(fd, 65536)
        finally:
            os.close(fd)
    except OSError as e:
        return "!%d" % e.errno
    return parse(data)

def held(fd):
    try:
        return memtotal(os.pread(fd, 65536, 0))
    except OSError as e:
        return "!%d" % e.errno

def sysinfo():
    if libc.sysinfo(ctypes.byref(info)) != 0:
        return "!%d" % ctypes.get_errno()
    return str(info.totalram * info.mem_unit // 1024)

kept = os.open("/proc/meminfo", os.O_RDONLY)
out = open(path, "a", buffering=1)
while True:
    start = now()
    m = fresh("/proc/meminfo", memtotal)
    o = fresh("/sys/devices/system/cpu/online", online)
    s = sysinfo()
    h = held(kept)
    out.write("%d %d m=%s o=%s s=%s h=%s\n" % (start, now(), m, o, s, h))
    time.sleep(interval)
"""


# =============================================================================
# The analysis (pure): reads, expectations and the daemon's stops and
# readiness times in, errors, gaps and repair times out.
# =============================================================================

# What each part of a reader's line is about.
GROUPS = {
    "files": ("m", "o"),  # /proc/meminfo and cpu/online, opened for each read
    "sysinfo": ("s",),  # sysinfo(2)
    "held": ("h",),  # /proc/meminfo through the fd opened once
}


class Read(NamedTuple):
    """One round of a reader: CLOCK_MONOTONIC ns at its start and end, and
    each field's value (a string) or errno (an int)."""

    start_ns: int
    end_ns: int
    values: dict


def parse_reads(text: str) -> list[Read]:
    """A reader's lines; a malformed one (the last, cut by the reader's
    kill) is left out."""
    reads = []
    for line in text.splitlines():
        parts = line.split()
        try:
            start, end = int(parts[0]), int(parts[1])
            values = {}
            for part in parts[2:]:
                key, value = part.split("=", 1)
                values[key] = int(value[1:]) if value.startswith("!") else value
        except (IndexError, ValueError):
            continue
        if set(values) >= {"m", "o", "s", "h"}:
            reads.append(Read(start, end, values))
    return reads


def field_errors(read: Read, fields, expected: dict) -> tuple[int, int]:
    """(failed, wrong) among ``fields`` of one read: an errno, or a value
    that is not ``expected``'s (the container's own)."""
    failed = wrong = 0
    for field in fields:
        value = read.values.get(field)
        if isinstance(value, int):
            failed += 1
        elif value != expected[field]:
            wrong += 1
    return failed, wrong


def analyze_reads(reads: list[Read], fields, expected: dict, stops: list[int], readies: list[int], end_ns: int,
                  grace_ns: int = GRACE_NS, stall_ns: int = STALL_NS) -> dict:
    """How one container's reads of ``fields`` went through the daemon's
    restarts.

    ``stops[i]``: when the daemon was stopped (signal sent) in cycle i;
    ``readies[i]``: when the next one was ready; cycle i lasts until the
    next stop, the last one until ``end_ns``. Each read counts in the cycle
    its end falls in (one that began before a stop and ended after it
    belongs to the new cycle). Per cycle, the container is *broken* if some
    read failed or was wrong, and *repaired* by the first good read after
    the cycle's last bad one (None: still bad when the cycle ended). A
    reader with no read in the last ``stall_ns`` of a cycle is *stalled*
    (stuck in a call: broken, not repaired). *Late* errors are in reads
    that began at readiness + ``grace_ns`` or later (the issue's rule:
    none). The longest gap runs between two good reads, or from the last
    good one to ``end_ns``.
    """
    reads = [read for read in reads if read.end_ns <= end_ns]
    cycles: list[list[tuple[int, bool]]] = [[] for _ in stops]
    totals = {"reads": len(reads), "failed": 0, "wrong": 0, "errnos": {}, "errors_before_first_stop": 0, "late_errors": 0}
    previous_good = reads[0].start_ns if reads else None
    longest_gap = 0
    for read in reads:
        failed, wrong = field_errors(read, fields, expected)
        totals["failed"] += failed
        totals["wrong"] += wrong
        for field in fields:
            if isinstance(read.values[field], int):
                name = errno.errorcode.get(read.values[field], str(read.values[field]))
                totals["errnos"][name] = totals["errnos"].get(name, 0) + 1
        bad = failed + wrong
        cycle = bisect.bisect_right(stops, read.end_ns) - 1
        if cycle < 0:
            totals["errors_before_first_stop"] += bad
        else:
            cycles[cycle].append((read.end_ns, bool(bad)))
            if bad and read.start_ns >= readies[cycle] + grace_ns:
                totals["late_errors"] += bad
        if not bad:
            longest_gap = max(longest_gap, read.end_ns - previous_good)
            previous_good = read.end_ns
    totals["longest_gap_ns"] = None if previous_good is None else max(longest_gap, end_ns - previous_good)
    ends = stops[1:] + [end_ns]
    totals["cycles"] = [_cycle(cycle_reads, start, end, ready, stall_ns)
                        for cycle_reads, start, end, ready in zip(cycles, stops, ends, readies)]
    return totals


def _cycle(reads: list[tuple[int, bool]], start_ns: int, end_ns: int, ready_ns: int, stall_ns: int) -> dict:
    """One cycle of one container: broken? repaired when, after readiness?
    stalled?"""
    last_read = reads[-1][0] if reads else start_ns
    if end_ns - last_read > stall_ns:
        return {"broken": True, "repaired_after_ready_ns": None, "stalled": True}
    bad = [index for index, (_, failed) in enumerate(reads) if failed]
    if not bad:
        return {"broken": False, "repaired_after_ready_ns": None, "stalled": False}
    if bad[-1] == len(reads) - 1:
        return {"broken": True, "repaired_after_ready_ns": None, "stalled": False}
    return {"broken": True, "repaired_after_ready_ns": reads[bad[-1] + 1][0] - ready_ns, "stalled": False}


def _add_counts(counts) -> dict:
    total: dict = {}
    for count in counts:
        for key, value in count.items():
            total[key] = total.get(key, 0) + value
    return total


def summarize_kind(containers: list[dict]) -> dict:
    """One kind's containers (``analyze_reads`` results) together: errors
    per container, the longest gap, and per cycle the last repair after
    readiness (None if some broken container was never repaired)."""
    errors = [c["failed"] + c["wrong"] for c in containers]
    per_cycle = []
    for cycle in zip(*(c["cycles"] for c in containers)):
        broken = [c for c in cycle if c["broken"]]
        repaired = [c["repaired_after_ready_ns"] for c in broken if c["repaired_after_ready_ns"] is not None]
        per_cycle.append({
            "broken": len(broken),
            "repaired": len(repaired),
            "stalled": sum(1 for c in cycle if c["stalled"]),
            "last_repair_after_ready_ns": max(repaired) if repaired and len(repaired) == len(broken) else None,
        })
    return {
        "containers": len(containers),
        "reads": [c["reads"] for c in containers],
        "errors": errors,
        "failed": sum(c["failed"] for c in containers),
        "wrong": sum(c["wrong"] for c in containers),
        "errnos": _add_counts(c["errnos"] for c in containers),
        "errors_before_first_stop": sum(c["errors_before_first_stop"] for c in containers),
        "late_errors": sum(c["late_errors"] for c in containers),
        "longest_gap_ns": max((c["longest_gap_ns"] for c in containers if c["longest_gap_ns"] is not None), default=None),
        "stalled_readers": sum(1 for c in containers if any(cycle["stalled"] for cycle in c["cycles"])),
        "cycles": per_cycle,
    }


def rule_met(summary: dict) -> bool:
    """The issue's rule for one kind: no error before the first stop nor
    from readiness + 1 s on, every broken container repaired in every
    cycle, no reader stuck."""
    return (summary["errors_before_first_stop"] == 0 and summary["late_errors"] == 0 and summary["stalled_readers"] == 0
            and all(c["last_repair_after_ready_ns"] is not None for c in summary["cycles"] if c["broken"]))


# =============================================================================
# The daemons: each started again and again on the same mount point.
# =============================================================================


class Daemon:
    """A FUSE daemon that the benchmark stops and starts again; every
    incarnation's output is kept with the CLOCK_MONOTONIC time each line
    arrived (``lines``: (ns, incarnation, text))."""

    def __init__(self, name: str, argv: list[str], mountpoint: str, cgroup, logdir: str, ready, before_start=None):
        self.name = name
        self.argv = argv
        self.mountpoint = mountpoint
        self.cgroup = cgroup
        self.log_path = os.path.join(logdir, f"daemon-{name}.log")
        self.ready = ready  # ready(daemon) -> bool
        self.before_start = before_start
        self.popen: subprocess.Popen | None = None
        self.incarnations: list[dict] = []
        self.lines: list[tuple[int, int, str]] = []
        self._followers: list[threading.Thread] = []
        # A restart runs in a thread of its own; once the cleanup closed the
        # daemon, that thread must not start another.
        self._lock = threading.Lock()
        self._closed = False
        os.makedirs(mountpoint, exist_ok=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def start(self) -> None:
        with self._lock:
            if self._closed:
                raise BenchError(f"{self.name}: not started again, the benchmark is ending")
            self._start()

    def _start(self) -> None:
        if self.before_start:
            self.before_start(self)
        self.popen = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=lambda: self.cgroup.add_process(os.getpid()),
            cwd="/",  # "python -m" imports from the cwd first: not the checkout, not a mount point
        )
        self.incarnations.append({"pid": self.popen.pid, "started_ns": time.monotonic_ns()})
        follower = threading.Thread(target=self._follow, args=(self.popen.stdout, len(self.incarnations) - 1), daemon=True)
        follower.start()
        self._followers.append(follower)

    def _follow(self, pipe, incarnation: int) -> None:
        with open(self.log_path, "a") as log_file:
            for raw in pipe:
                stamp = time.monotonic_ns()
                text = raw.decode(errors="replace").rstrip("\n")
                self.lines.append((stamp, incarnation, text))
                log_file.write(f"{stamp} [{incarnation}] {text}\n")
                log_file.flush()
        pipe.close()

    def wait_ready(self, timeout: float = 120.0) -> int:
        """Polls readiness every 5 ms; returns when it was seen (ns)."""
        deadline = time.monotonic() + timeout
        while not self.ready(self):
            self.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name} not ready after {timeout:.0f} s: {self.log_tail()}")
            time.sleep(0.005)
        ready_ns = time.monotonic_ns()
        self.incarnations[-1]["ready_ns"] = ready_ns
        return ready_ns

    def check_alive(self) -> None:
        ended = _util.how_it_ended(self.popen)
        if ended:
            raise BenchError(f"the {self.name} daemon (pid {self.pid}) is gone ({ended}); log: {self.log_tail()}")

    def log_tail(self) -> str:
        mine = [text for _, incarnation, text in self.lines if incarnation == len(self.incarnations) - 1]
        return " | ".join(mine[-8:]) or "(no output)"

    def stop(self, sig: int, timeout: float = 30.0) -> None:
        """Sends ``sig`` and waits for the exit (SIGKILL after ``timeout``)."""
        incarnation = self.incarnations[-1]
        incarnation["stop_signal"] = signal.Signals(sig).name
        incarnation["cpu_ticks"] = _util.process_cpu_ticks(self.pid)  # (user, system) over its life
        incarnation["stopped_ns"] = time.monotonic_ns()
        self.popen.send_signal(sig)
        try:
            status = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            status = self.popen.wait()
        incarnation["exited_ns"] = time.monotonic_ns()
        incarnation["exit_status"] = status

    def restart(self, sig: int, down: float) -> None:
        """One cycle: stop with ``sig``, wait ``down`` seconds, start, wait
        for readiness."""
        self.stop(sig)
        time.sleep(down)
        self.start()
        self.wait_ready()

    def close(self) -> None:
        """At the end (or on failure): SIGTERM, SIGKILL if need be, then
        whatever is still mounted is detached and any process left in the
        daemon's cgroup (a helper it started) is killed."""
        with self._lock:
            self._closed = True
        if self.popen is not None and self.popen.poll() is None:
            self.stop(signal.SIGTERM)
        how = _util.unmount(self.mountpoint)
        if how:
            log(f"{self.name}: {how}")
        deadline = time.monotonic() + 5  # a helper the daemon started may be on its way out
        while self.cgroup.processes() and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in self.cgroup.processes() or []:
            log(f"{self.name}: killing pid {pid}, left in the daemon's cgroup")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for follower in self._followers:
            follower.join(timeout=5)

    def cycle_times(self) -> list[dict]:
        """Per restart: how it was stopped, stop → exit, stop → ready, and
        the CPU the stopped daemon used over its life (share of one CPU)."""
        out = []
        for old, new in zip(self.incarnations, self.incarnations[1:]):
            ticks = old.get("cpu_ticks")
            cpu = None if ticks is None else sum(ticks) / _util.CLK_TCK / ((old["stopped_ns"] - old["started_ns"]) / NS)
            out.append({"signal": old["stop_signal"], "stopped_ns": old["stopped_ns"], "ready_ns": new["ready_ns"],
                        "cpu_share_of_life": cpu,
                        "exit_s": (old["exited_ns"] - old["stopped_ns"]) / NS,
                        "stop_to_ready_s": (new["ready_ns"] - old["stopped_ns"]) / NS,
                        "exit_status": old["exit_status"]})
        return out


def _pidfile_names_daemon(pidfile: str):
    def ready(daemon: Daemon) -> bool:
        try:
            with open(pidfile) as f:
                return f.read().strip() == str(daemon.pid)
        except FileNotFoundError:
            return False
    return ready


def _mount_answers(daemon: Daemon) -> bool:
    if "fuse.lxcfs" not in _util.mounted_types(daemon.mountpoint):
        return False
    try:
        with open(os.path.join(daemon.mountpoint, "proc", "uptime"), "rb") as f:
            return bool(f.read())
    except OSError:
        return False


def _detach_dead_mount(daemon: Daemon) -> None:
    """What LXCFS's unit does after it stopped (``ExecStopPost=fusermount -u``):
    a new LXCFS cannot mount over its predecessor's dead mount."""
    _util.unmount(daemon.mountpoint)


def reattach_lines(daemon: Daemon, incarnation: int) -> list[tuple[int, str]]:
    """What an incarnation logged about re-attaching (repairs and failures),
    with the time each line arrived."""
    return [(stamp, text) for stamp, number, text in daemon.lines
            if number == incarnation and "re-attach" in text]


# =============================================================================
# The containers.
# =============================================================================


class Container(NamedTuple):
    kind: str
    name: str
    limit: int  # bytes
    output: str  # the reader's file, on the host


def _remove_cgroup_dirs(base: str) -> list[str]:
    """rmdir, deepest first, every directory of cgroup ``base`` in every
    hierarchy (runc makes its parents in every v1 controller, and removes
    only its own); returns those that could not be removed."""
    left = []
    for top in glob.glob(f"/sys/fs/cgroup/{base.strip('/')}") + glob.glob(f"/sys/fs/cgroup/*/{base.strip('/')}"):
        for directory, _dirs, _files in sorted(os.walk(top), key=lambda entry: -entry[0].count("/")):
            for _ in range(100):  # tasks leave their cgroups asynchronously after exit
                try:
                    os.rmdir(directory)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)
            else:
                left.append(directory)
    return left


class Bench:
    def __init__(self, args: argparse.Namespace, stack: contextlib.ExitStack):
        self.args = args
        self.stack = stack
        self.containers: list[Container] = []
        self.results: dict = {}

    # -- setup ----------------------------------------------------------------

    def setup(self) -> None:
        from procview import cgroups

        args = self.args
        self.tmp = tempfile.mkdtemp(prefix="procview-bench-restart-")
        os.chmod(self.tmp, 0o755)
        self.stack.callback(_util.remove_workdir, self.tmp, args.keep_logs, log)
        self.out = os.path.join(self.tmp, "readers")
        os.makedirs(self.out)
        self.state_root = os.path.join(self.tmp, "state")
        self.runc_root = os.path.join(self.tmp, "runc")
        self.mounts = {"procview": os.path.join(self.tmp, "procview"), "lxcfs": os.path.join(self.tmp, "lxcfs")}
        self.socket = os.path.join(self.tmp, "seccomp.sock")
        self.pidfile = os.path.join(self.tmp, "procview.pid")

        hier = cgroups.discover()
        self.layout = hier.layout.value
        self.base = f"/procview-bench-restart-{uuid.uuid4().hex[:8]}"
        self.stack.callback(self._remove_cgroups)
        self.hier = hier

        self.daemons = {
            "procview": Daemon(
                "procview",
                [sys.executable, "-m", "procview", "serve", self.mounts["procview"], "--pidfile", self.pidfile,
                 "--seccomp-socket", self.socket, "--log-level", "info"],
                self.mounts["procview"], self._cgroup("daemon-procview"), self.tmp, _pidfile_names_daemon(self.pidfile)),
            "lxcfs": Daemon(
                "lxcfs", [args.lxcfs, "-f", "-l", "--enable-cfs", "-p", os.path.join(self.tmp, "lxcfs.pid"), self.mounts["lxcfs"]],
                self.mounts["lxcfs"], self._cgroup("daemon-lxcfs"), self.tmp, _mount_answers, before_start=_detach_dead_mount),
        }
        for daemon in self.daemons.values():
            self.stack.callback(daemon.close)
            daemon.start()
        for daemon in self.daemons.values():
            daemon.wait_ready()
        log("daemons ready: " + ", ".join(f"{d.name} pid {d.pid}" for d in self.daemons.values()))

        # Each container a limit of its own: 200 MiB, 208 MiB, ... across kinds.
        limits = iter(range(200 * MiB, 10**12, 8 * MiB))
        for kind in args.kinds:
            for index in range(args.containers):
                self.containers.append(Container(kind, f"{kind}-{index}", next(limits),
                                                 os.path.join(self.out, f"{kind}-{index}.log")))
        starters = {"run": self._start_run, "v-procview": self._start_v, "v-lxcfs": self._start_v, "runc": self._start_runc}
        if "run" in args.kinds:
            self.stack.callback(self._remove_run_containers)
        if "runc" in args.kinds:
            self.stack.callback(self._remove_runc_containers)
            self._prepare_runc()
        self.v_processes: list[subprocess.Popen] = []
        self.stack.callback(self._kill_v_processes)
        for container in self.containers:
            log(f"starting {container.name} ({container.limit // MiB} MiB)")
            starters[container.kind](container)

    def _cgroup(self, name: str, memory: int | None = None):
        from procview import cgroups

        cg = self.hier.cgroup(f"{self.base}/{name}")
        cg.create()
        if memory is not None:
            cg.set_memory_limit(memory)
            cg.set_cpu_quota(cgroups.CpuQuota(100000, 100000))
        return cg

    def _reader_argv(self, output: str) -> list[str]:
        return PYTHON_IN_CONTAINER + ["-c", READER, output, str(self.args.interval)]

    # procview run -d: the view, and the supervisor through its monitor.
    def _start_run(self, container: Container) -> None:
        volumes = [arg for src, dst in HOST_USR for arg in ("-v", f"{src}:{dst}:ro")] + ["-v", f"{self.out}:/out"]
        argv = [PROCVIEW, "run", "--root", self.state_root, "-d", "--network", "none", "--name", container.name,
                "--view", self.mounts["procview"], "--seccomp-socket", self.socket,
                "--memory", str(container.limit), "--cpus", "1", *volumes, "busybox",
                *self._reader_argv(f"/out/{os.path.basename(container.output)}")]
        env = dict(os.environ, PROCVIEW_FORKSERVER_SOCKET="")  # this checkout's code, not a fork server's
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
        if result.returncode != 0:
            raise BenchError(f"procview run {container.name} failed ({result.returncode}): {result.stderr.strip()}")

    def _remove_run_containers(self) -> None:
        names = [c.name for c in self.containers if c.kind == "run"]
        subprocess.run([PROCVIEW, "rm", "--root", self.state_root, "-f", *names], capture_output=True, timeout=120)
        left = subprocess.run([PROCVIEW, "ps", "--root", self.state_root, "-a", "-q"], capture_output=True, text=True,
                              timeout=60).stdout.split()
        if left:
            log(f"procview run containers left: {left}")

    # -v binds: unshare + bind mounts, the way LXCFS users do it.
    def _start_v(self, container: Container) -> None:
        daemon = KINDS[container.kind][1]
        cg = self._cgroup(container.name, container.limit)
        fstab = os.path.join(self.tmp, f"{daemon}.fstab")
        if not os.path.exists(fstab):
            with open(fstab, "w") as f:
                for source, target in V_BINDS:
                    f.write(f"{os.path.join(self.mounts[daemon], source)} {target} none bind 0 0\n")
        script = 'mount -a -T "$1" || exit 125; shift; "$@"'
        argv = ["unshare", "--pid", "--fork", "--kill-child", "--mount", "--propagation", "private", "--mount-proc",
                "sh", "-c", script, "container", fstab, *self._reader_argv(container.output)]
        with open(os.path.join(self.tmp, f"{container.name}.err"), "w") as err:
            popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True,
                                     preexec_fn=lambda: cg.add_process(os.getpid()))
        self.v_processes.append(popen)

    def _kill_v_processes(self) -> None:
        for popen in self.v_processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGKILL)
            popen.wait()

    # runc through procview-runc: the binds and listenerPath go into config.json.
    def _prepare_runc(self) -> None:
        from procview.runtime.images import ImageStore

        self.busybox_layer = ImageStore(self.state_root).ensure_busybox().layers[-1]
        with open(DOCKER_PROFILE) as f:
            self.docker_seccomp = json.load(f)["linux"]["seccomp"]
        if os.uname().machine != "x86_64":
            self.docker_seccomp["architectures"] = []

    def _start_runc(self, container: Container) -> None:
        bundle = os.path.join(self.tmp, "bundles", container.name)
        rootfs = os.path.join(bundle, "rootfs")
        shutil.copytree(self.busybox_layer, rootfs, symlinks=True)
        for directory in ("proc", "sys", "dev", "tmp", "out", "usr", "lib", "lib64"):
            os.makedirs(os.path.join(rootfs, directory), exist_ok=True)
        subprocess.run(["runc", "spec", "--bundle", bundle], check=True)
        with open(os.path.join(bundle, "config.json")) as f:
            config = json.load(f)
        config["process"]["terminal"] = False
        config["process"]["args"] = self._reader_argv(f"/out/{os.path.basename(container.output)}")
        config["root"]["readonly"] = False
        config["mounts"] += [{"destination": dst, "type": "bind", "source": src, "options": ["rbind", "ro"]}
                             for src, dst in HOST_USR]
        config["mounts"].append({"destination": "/out", "type": "bind", "source": self.out, "options": ["rbind", "rw"]})
        config["linux"]["cgroupsPath"] = f"{self.base}/{container.name}"
        config["linux"]["resources"] = {"memory": {"limit": container.limit}, "cpu": {"quota": 100000, "period": 100000}}
        config["linux"]["seccomp"] = self.docker_seccomp
        with open(os.path.join(bundle, "config.json"), "w") as f:
            json.dump(config, f)
        env = dict(os.environ, PROCVIEW_VIEW=self.mounts["procview"], PROCVIEW_SECCOMP_SOCKET=self.socket)
        # Output to a file, not a pipe: the container's init inherits it.
        with open(os.path.join(self.tmp, f"{container.name}.err"), "w") as err:
            result = subprocess.run([SHIM, "--root", self.runc_root, "run", "-d", "--bundle", bundle, container.name],
                                    stdin=subprocess.DEVNULL, stdout=err, stderr=err, timeout=120, env=env)
        if result.returncode != 0:
            with open(os.path.join(self.tmp, f"{container.name}.err")) as f:
                raise BenchError(f"procview-runc run {container.name} failed ({result.returncode}): {f.read().strip()}")

    def _remove_runc_containers(self) -> None:
        for container in self.containers:
            if container.kind == "runc":
                subprocess.run(["runc", "--root", self.runc_root, "delete", "--force", container.name],
                               capture_output=True, timeout=60)

    def _remove_cgroups(self) -> None:
        left = _remove_cgroup_dirs(self.base)
        if left:
            log(f"could not remove cgroups: {left}")

    # -- the run ------------------------------------------------------------------

    def wait_for_readers(self, timeout: float = 120.0) -> dict:
        """Until every container has read its own values (fails otherwise):
        each daemon shows each container its own limit before any stop."""
        deadline = time.monotonic() + timeout
        pending = list(self.containers)
        first_good = {}
        while pending:
            for container in list(pending):
                reads = parse_reads(_read_text(container.output))
                fields = self.fields_of(container.kind)
                good = [r for r in reads if field_errors(r, fields, self.expected(container)) == (0, 0)]
                if good:
                    first_good[container.name] = good[0].values
                    pending.remove(container)
            if pending and time.monotonic() > deadline:
                container = pending[0]
                last = _read_text(container.output).strip().splitlines()[-1:] or ["no read yet"]
                raise BenchError(f"{container.name} does not read its own values (MemTotal {container.limit // 1024} kB, "
                                 f"cpu/online 0) after {timeout:.0f} s; its last read: {last[0]}; "
                                 f"{_read_text(os.path.join(self.tmp, container.name + '.err')).strip()[-500:]}")
            for daemon in self.daemons.values():
                daemon.check_alive()
            time.sleep(0.1)
        return first_good

    def cycles(self) -> None:
        args = self.args
        plan = [signal.SIGKILL] * args.cycles + [signal.SIGTERM] * (1 if args.sigterm else 0)
        for number, sig in enumerate(plan, 1):
            time.sleep(args.between)
            # After a crash the service manager waits (procview's unit:
            # RestartSec=1s); "systemctl restart" starts the new one at once.
            down = args.down if sig == signal.SIGKILL else 0.0
            log(f"cycle {number}/{len(plan)}: {sig.name} to both daemons, {down} s down, start again")
            threads = [threading.Thread(target=self._restart, args=(daemon, sig, down)) for daemon in self.daemons.values()]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            if self.failures:
                raise BenchError(self.failures[0])
        time.sleep(args.between)

    def _restart(self, daemon: Daemon, sig: int, down: float) -> None:
        try:
            daemon.restart(sig, down)
        except BaseException as exc:  # reported by the main thread
            self.failures.append(f"{daemon.name}: {exc}")

    def expected(self, container: Container) -> dict:
        kib = str(container.limit // 1024)
        return {"m": kib, "o": "0", "s": kib, "h": kib}

    def fields_of(self, kind: str) -> tuple:
        answers_sysinfo = KINDS[kind][2]
        return GROUPS["files"] + GROUPS["held"] + (GROUPS["sysinfo"] if answers_sysinfo else ())

    def analyze(self, end_ns: int) -> dict:
        by_kind = {}
        for kind in self.args.kinds:
            daemon = self.daemons[KINDS[kind][1]]
            times = daemon.cycle_times()
            stops, readies = [c["stopped_ns"] for c in times], [c["ready_ns"] for c in times]
            groups = {}
            for group, fields in GROUPS.items():
                if group == "sysinfo" and not KINDS[kind][2]:
                    continue
                per_container = {}
                for container in self.containers:
                    if container.kind == kind:
                        reads = parse_reads(_read_text(container.output))
                        per_container[container.name] = analyze_reads(reads, fields, self.expected(container), stops,
                                                                      readies, end_ns)
                groups[group] = {"summary": summarize_kind(list(per_container.values())), "containers": per_container}
            by_kind[kind] = groups
        return by_kind

    def run(self) -> dict:
        args = self.args
        self.failures: list[str] = []
        self.results["meta"] = _util.run_meta(__file__, args.argv, REPO, args.lxcfs)
        self.results["meta"].update({
            "runc_version": (_util.command_output(["runc", "--version"]) or "?").splitlines()[0],
            "options": {"containers": args.containers, "cycles": args.cycles, "sigterm": args.sigterm,
                        "interval_s": args.interval, "down_s": args.down, "between_s": args.between,
                        "kinds": args.kinds, "grace_s": GRACE_NS / NS},
        })
        start = time.monotonic()
        self.setup()
        first = self.wait_for_readers()
        log("every container reads its own values; restart cycles begin")
        self.cycles()
        end_ns = time.monotonic_ns()
        self.results["meta"]["load_after"] = _util.load_snapshot()
        self.results["setup"] = {
            "cgroup_layout": self.layout,
            "containers": [{"kind": c.kind, "name": c.name, "memory_limit": c.limit, "first_good_read": first[c.name],
                            "reader_at_end": reader_state(os.path.basename(c.output))}
                           for c in self.containers],
        }
        self.results["daemons"] = {}
        for name, daemon in self.daemons.items():
            entry = {"cycles": daemon.cycle_times()}
            if name == "procview":
                for number, cycle in enumerate(entry["cycles"], 1):
                    lines = reattach_lines(daemon, number)
                    cycle["reattach_lines"] = [{"after_ready_s": (stamp - cycle["ready_ns"]) / NS, "text": text}
                                               for stamp, text in lines]
            self.results["daemons"][name] = entry
        self.results["kinds"] = self.analyze(end_ns)
        self.results["meta"]["seconds"] = round(time.monotonic() - start, 1)
        return self.results


# The x86_64 numbers of the calls a reader makes (elsewhere, or others: numbers).
SYSCALL_NAMES = ({0: "read", 1: "write", 3: "close", 17: "pread64", 99: "sysinfo", 230: "clock_nanosleep", 257: "openat"}
                 if os.uname().machine == "x86_64" else {})


def reader_state(output_name: str) -> list[dict]:
    """Where each thread of the reader writing ``output_name`` is, seen from
    the host: the call it is in (/proc/TID/syscall) and the kernel function
    it waits in (wchan). A stalled reader shows what holds it."""
    states = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            if not argv[0].endswith(b"python3") or not any(arg.endswith(b"/" + output_name.encode()) for arg in argv):
                continue
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/syscall") as f:
                    call = f.read().split()[0]
                with open(f"/proc/{pid}/task/{tid}/wchan") as f:
                    wchan = f.read().strip()
                number = int(call) if call.lstrip("-").isdigit() else None
                states.append({"pid": int(pid), "tid": int(tid), "syscall": SYSCALL_NAMES.get(number, call), "wchan": wchan})
        except OSError:
            continue
    return states


def _read_text(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


# =============================================================================
# The report.
# =============================================================================


def _s(ns) -> str:
    return "–" if ns is None else f"{ns / NS:.2f}"


def _percent(share) -> str:
    return "–" if share is None else f"{share * 100:.0f} %"


def _span(values: list[int]) -> str:
    return f"{min(values)}" if min(values) == max(values) else f"{min(values)}–{max(values)}"


def _repairs(cycles: list[dict]) -> str:
    """Each cycle's last repair after readiness, s ("–": nothing broke)."""
    cells = []
    for cycle in cycles:
        if not cycle["broken"]:
            cells.append("–")
        elif cycle["last_repair_after_ready_ns"] is None:
            stalled = f", {cycle['stalled']} stalled" if cycle["stalled"] else ""
            cells.append(f"never ({cycle['repaired']}/{cycle['broken']}{stalled})")
        else:
            cells.append(_s(cycle["last_repair_after_ready_ns"]))
    return ", ".join(cells)


def _stalled_containers(kinds: dict) -> set[str]:
    return {name for groups in kinds.values() for name, container in groups["files"]["containers"].items()
            if any(cycle["stalled"] for cycle in container["cycles"])}


def _errnos(summary: dict) -> str:
    """" (ENOTCONN ×12)": what the failed reads gave."""
    counts = ", ".join(f"{name} ×{count}" for name, count in sorted(summary["errnos"].items()))
    return f" ({counts})" if counts else ""


def render(results: dict) -> str:
    meta, options = results["meta"], results["meta"]["options"]
    lines: list[str] = []
    add = lines.append
    add("# Surviving a restart of procview serve")
    add("")
    lines += _util.meta_lines(meta, results["setup"]["cgroup_layout"],
                              f"procview from the {_util.checkout_description(meta)}; LXCFS {meta['lxcfs_version']} "
                              f"(`lxcfs -f -l --enable-cfs`); {meta['runc_version']}")
    signals = ["SIGKILL"] * options["cycles"] + (["SIGTERM"] if options["sigterm"] else [])
    add(f"- {options['containers']} containers per kind, each with its own memory limit and a 1-CPU quota; a read "
        f"every {options['interval_s'] * 1000:.0f} ms in each; cycles: {', '.join(signals)}; each daemon started again "
        f"{options['down_s']} s after a SIGKILL's exit, at once after a SIGTERM's; {options['between_s']} s of reads "
        "between cycles")
    add("")

    kinds = results["kinds"]
    add("## Files: open + read + close of /proc/meminfo and /sys/devices/system/cpu/online")
    add("")
    add("An error is a failed read or a value that is not the container's own (MemTotal = its limit, cpu/online `0`). "
        "*Late*: in reads that began at readiness + 1 s or later (the issue's rule for procview: none). Repair: the "
        "first good read after a cycle's last bad one, counted from the new daemon's readiness, the last container's "
        "per cycle; `never (k/n)`: k of the n broken containers were repaired. A reader with no read in the last "
        "second of a cycle is *stalled* (stuck in a call).")
    add("")
    add("| Kind | containers | reads per container | errors per container | failed reads (errno) | wrong values "
        "| late errors | stalled readers | longest gap without a good read, s | readiness → last repair, s, per cycle |")
    add("|---|--:|--:|--:|--:|--:|--:|--:|--:|---|")
    for kind, groups in kinds.items():
        s = groups["files"]["summary"]
        add(f"| {KINDS[kind][0]} | {s['containers']} | {_span(s['reads'])} | {_span(s['errors'])} "
            f"| {s['failed']}{_errnos(s)} | {s['wrong']} | {s['late_errors']} | {s['stalled_readers']} | {_s(s['longest_gap_ns'])} "
            f"| {_repairs(s['cycles'])} |")
    add("")

    with_sysinfo = {kind: groups["sysinfo"] for kind, groups in kinds.items() if "sysinfo" in groups}
    if with_sysinfo:
        add("## sysinfo(2): totalram × mem_unit (what `os.sysconf('SC_PHYS_PAGES')` multiplies out) = the limit")
        add("")
        add("The `-v` kinds have no seccomp listener: the kernel answers them (the host's RAM), not judged.")
        add("")
        add("| Kind | errors per container | failed calls (errno) | wrong values (the host's RAM) | late errors "
            "| longest gap without a good answer, s | readiness → last repair, s, per cycle |")
        add("|---|--:|--:|--:|--:|--:|---|")
        for kind, group in with_sysinfo.items():
            s = group["summary"]
            add(f"| {KINDS[kind][0]} | {_span(s['errors'])} | {s['failed']}{_errnos(s)} | {s['wrong']} | {s['late_errors']} "
                f"| {_s(s['longest_gap_ns'])} | {_repairs(s['cycles'])} |")
        add("")

    stuck = [(c["name"], state) for c in results["setup"]["containers"] for state in c["reader_at_end"]
             if c["name"] in _stalled_containers(kinds)]
    if stuck:
        add("Stalled readers at the end, seen from the host (/proc/TID/syscall, wchan): " + "; ".join(
            f"{name}: in {state['syscall']}, waiting in {state['wchan']}" for name, state in stuck) + ".")
        add("")

    add("## A /proc/meminfo fd opened once and read again at offset 0 (as `free -s`, `top`)")
    add("")
    add("An open file belongs to the FUSE connection it was opened through: no re-attach can bring it back; the "
        "reader must open the file again.")
    add("")
    add("| Kind | errors per container | broken from cycle | repaired in a cycle |")
    add("|---|--:|---|---|")
    for kind, groups in kinds.items():
        s = groups["held"]["summary"]
        broken = next((i + 1 for i, c in enumerate(s["cycles"]) if c["broken"]), None)
        repaired = sum(1 for c in s["cycles"] if c["broken"] and c["last_repair_after_ready_ns"] is not None)
        add(f"| {KINDS[kind][0]} | {_span(s['errors'])} | {broken or '–'} | {repaired} of {len(s['cycles'])} cycles |")
    add("")

    add("## The daemons' restarts")
    add("")
    add("CPU before: the CPU time of the daemon that was stopped, over its life (start to the signal), as a share of "
        "one CPU: how busy the readers kept it. "
        "Stop → ready: from the signal to readiness of the new daemon (procview: its pidfile names it, written after a "
        "read through the mount; LXCFS: its mount answers a read), polled every 5 ms. Re-attach: the new procview's "
        "`re-attached the view` log lines (one per repaired mount namespace), the last one's time after readiness "
        "(stamped as it arrived on the daemon's stderr).")
    add("")
    add("| Cycle | signal | procview's CPU before, % of one | procview exit, s | procview stop → ready, s "
        "| re-attach lines | last at ready +, s | LXCFS's CPU before | LXCFS exit, s | LXCFS stop → ready, s |")
    add("|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    pv_cycles, lx_cycles = results["daemons"]["procview"]["cycles"], results["daemons"]["lxcfs"]["cycles"]
    for number, (pv, lx) in enumerate(zip(pv_cycles, lx_cycles), 1):
        repaired = [line for line in pv["reattach_lines"] if "re-attached the view" in line["text"]]
        failed = len(pv["reattach_lines"]) - len(repaired)
        last = f"{max(line['after_ready_s'] for line in repaired):.2f}" if repaired else "–"
        add(f"| {number} | {pv['signal']} | {_percent(pv['cpu_share_of_life'])} | {pv['exit_s']:.2f} "
            f"| {pv['stop_to_ready_s']:.2f} | {len(repaired)}{f' (+{failed} failures)' if failed else ''} | {last} "
            f"| {_percent(lx['cpu_share_of_life'])} | {lx['exit_s']:.2f} | {lx['stop_to_ready_s']:.2f} |")
    add("")

    add("## Verdict")
    add("")
    add("The rule: no error before the first stop nor from readiness + 1 s on, every broken container repaired in "
        "every cycle, no reader stuck.")
    add("")
    for kind, groups in kinds.items():
        parts = []
        for group in ("files", "sysinfo"):
            if group in groups:
                s = groups[group]["summary"]
                never = sum(1 for c in s["cycles"] if c["broken"] and c["last_repair_after_ready_ns"] is None)
                state = f"{s['late_errors']} late errors"
                if never:
                    state += f", not repaired in {never} of {len(s['cycles'])} cycles"
                if s["stalled_readers"]:
                    state += f", {s['stalled_readers']} reader(s) stalled"
                if s["errors_before_first_stop"]:
                    state += f", {s['errors_before_first_stop']} errors before the first stop"
                parts.append(f"{group}: {state}")
        met = all(rule_met(groups[g]["summary"]) for g in ("files", "sysinfo") if g in groups)
        add(f"- {KINDS[kind][0]}: {'; '.join(parts)} — {'met' if met else 'NOT met'}"
            + (" (LXCFS has no repair)" if KINDS[kind][1] == "lxcfs" else ""))
    return "\n".join(lines)


# =============================================================================


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--containers", type=int, default=5, help="containers per kind (default 5)")
    parser.add_argument("--cycles", type=int, default=5, help="kill -9 + restart cycles (default 5)")
    parser.add_argument("--no-sigterm", dest="sigterm", action="store_false",
                        help="leave out the last cycle, a SIGTERM restart (what systemctl restart does)")
    parser.add_argument("--interval", type=float, default=0.01, help="seconds between a reader's rounds (default 0.01)")
    parser.add_argument("--down", type=float, default=1.0,
                        help="seconds from a killed daemon's exit to its new start (default 1, procview's unit's RestartSec)")
    parser.add_argument("--between", type=float, default=4.0, help="seconds of reads after each restart (default 4)")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS), metavar="KIND",
                        help=f"container kinds (default: all of {', '.join(KINDS)})")
    parser.add_argument("--lxcfs", default="lxcfs", help="the LXCFS binary (default: lxcfs on PATH)")
    parser.add_argument("--json", metavar="FILE", help="write the raw results here")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temporary directory (daemon logs, reads)")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.containers < 1 or args.cycles < 0:
        parser.error("--containers must be at least 1, --cycles at least 0")
    if args.between <= GRACE_NS / NS:
        parser.error("--between must be more than 1 (the issue's grace after readiness)")
    if args.interval <= 0 or args.down < 0:
        parser.error("--interval must be positive, --down not negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("restart_survival.py: must run as root (it mounts FUSE file systems, starts containers and LXCFS)",
              file=sys.stderr)
        return 1
    missing = [tool for tool in ("unshare", args.lxcfs) + (("runc",) if "runc" in args.kinds else ()) if shutil.which(tool) is None]
    if missing:
        print(f"restart_survival.py: not found: {', '.join(missing)} (Debian: apt-get install -y util-linux lxcfs runc; "
              "or leave a kind out with --kinds)", file=sys.stderr)
        return 1
    args.lxcfs = shutil.which(args.lxcfs)

    return _util.run_and_report("restart_survival.py", "containers, daemons, mounts and cgroups", lambda stack: Bench(args, stack).run(),
                                render, args.json, log)


if __name__ == "__main__":
    sys.exit(main())
