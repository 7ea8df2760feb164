"""Helpers for the benchmarks in bench/ (standard
library only: the measuring workers import this module inside their cgroups
and pid namespaces).

- percentiles of a sample list;
- process and mount housekeeping (daemon CPU time, mount table, unmount);
- decoding an ``strace -f -y -xx -s 8`` log into syscalls and FUSE requests;
- the cProfile wrapper the profiled procview daemon runs in;
- FUSE daemons on temporary mount points, each in a cgroup of its own (CPU
  time, RSS, fds), and the run's cgroups (``procview.cgroups``, imported
  only by the parent);
- a one-paragraph description of the machine, and the report's header;
- a run that cleans up after itself on failure, Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- statistics ------------------------------------------------------------------


def add_procview_options(parser) -> None:
    """``--procview-src`` and ``--procview-env``: which procview the
    benchmark's procview daemons run, and in what environment."""
    parser.add_argument("--procview-src", metavar="DIR",
                        help="run the procview daemons from this source tree (PYTHONPATH) to measure a change")
    parser.add_argument("--procview-env", metavar="NAME=VALUE", action="append", default=[], type=_env_item,
                        help="set NAME=VALUE in the procview daemons' environment only (LXCFS and the readers keep "
                             "theirs), e.g. an allocator: PYTHONMALLOC=malloc LD_PRELOAD=...; repeatable")


def _env_item(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return name, value


def procview_environment(args) -> dict:
    """The procview daemons' environment: ours, the source tree on
    PYTHONPATH, and every ``--procview-env``."""
    env = dict(os.environ)
    if args.procview_src:
        env["PYTHONPATH"] = os.path.abspath(args.procview_src) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(args.procview_env)
    return env


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list (p99 of 2000
    samples is the 1980th smallest)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def median(sorted_values: list[float]) -> float:
    n = len(sorted_values)
    if n == 0:
        return float("nan")
    mid = n // 2
    return sorted_values[mid] if n % 2 else (sorted_values[mid - 1] + sorted_values[mid]) / 2


def summarize_ns(samples: list[int]) -> dict:
    """Median, p99, mean, min and max of nanosecond samples, in µs."""
    values = sorted(samples)
    return {
        "n": len(values),
        "median_us": median(values) / 1000,
        "p99_us": percentile(values, 0.99) / 1000,
        "mean_us": (sum(values) / len(values) / 1000) if values else float("nan"),
        "min_us": values[0] / 1000 if values else float("nan"),
        "max_us": values[-1] / 1000 if values else float("nan"),
    }


# -- processes and mounts ----------------------------------------------------------


def process_cpu_ticks(pid: int) -> tuple[int, int] | None:
    """(utime, stime) of a whole process (all its threads, living and dead)
    from /proc/PID/stat, in clock ticks (1/CLK_TCK s)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return int(fields[11]), int(fields[12])


def mounted_types(path: str) -> list[str]:
    """File system types mounted exactly at ``path`` (top of the stack last)."""
    types = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            if len(fields) > 4 and _unescape_mount(fields[4]) == path:
                types.append(right.split()[0])
    return types


def _unescape_mount(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts_below(path: str) -> list[str]:
    """Mount points at ``path`` or below it, in this mount namespace."""
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = _unescape_mount(line.split()[4])
            if point == path or point.startswith(path.rstrip("/") + "/"):
                points.append(point)
    return points


def remove_workdir(path: str, keep: bool, log) -> None:
    """``rm -r`` of a benchmark's temporary directory, unless asked to keep
    it, or something is still mounted below it (never recurse into a
    mount)."""
    mounted = mounts_below(path)
    if mounted:
        log(f"still mounted below {path}: {', '.join(mounted)}; leaving it in place")
    elif keep:
        log(f"logs kept in {path}")
    else:
        shutil.rmtree(path, ignore_errors=True)


def unmount(path: str) -> str | None:
    """Detach whatever FUSE mounts remain at ``path``; returns what was done."""
    done = None
    for _ in range(8):  # a mount point can hold a stack of mounts
        if not mounted_types(path):
            return done
        for argv in (["fusermount3", "-u", "-z", path], ["umount", "-l", path]):
            try:
                if subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10).returncode == 0:
                    done = " ".join(argv)
                    break
            except (OSError, subprocess.TimeoutExpired):
                continue
        else:
            return done
    return done


def how_it_ended(popen: subprocess.Popen) -> str | None:
    """"exit status N" or "killed by signal N"; None while it runs."""
    status = popen.poll()
    if status is None:
        return None
    return f"killed by signal {-status}" if status < 0 else f"exit status {status}"


def file_tail(path: str, empty: str, size: int = 1500) -> str:
    """The last ``size`` characters of a log file, or ``empty`` if it has
    none (or cannot be read)."""
    try:
        with open(path, errors="replace") as f:
            return f.read()[-size:].strip() or empty
    except OSError:
        return empty


def kill_group(popen: subprocess.Popen) -> None:
    """SIGKILL the process group ``popen`` leads (a session of its own) if
    it still runs, reap it and close its pipes."""
    if popen.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.wait()
    for stream in (popen.stdin, popen.stdout):
        if stream is None:
            continue
        with contextlib.suppress(OSError, ValueError):
            stream.close()


def tracer_of_all_threads(pid: int) -> set[int]:
    """TracerPid of every thread of ``pid`` (empty set if it is gone)."""
    tracers = set()
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return tracers
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("TracerPid:"):
                        tracers.add(int(line.split()[1]))
                        break
        except OSError:
            continue
    return tracers


# -- strace ---------------------------------------------------------------------

# include/uapi/linux/fuse.h
FUSE_OPCODES = {
    1: "LOOKUP", 2: "FORGET", 3: "GETATTR", 4: "SETATTR", 5: "READLINK", 6: "SYMLINK", 8: "MKNOD",
    9: "MKDIR", 10: "UNLINK", 11: "RMDIR", 12: "RENAME", 13: "LINK", 14: "OPEN", 15: "READ", 16: "WRITE",
    17: "STATFS", 18: "RELEASE", 20: "FSYNC", 21: "SETXATTR", 22: "GETXATTR", 23: "LISTXATTR",
    24: "REMOVEXATTR", 25: "FLUSH", 26: "INIT", 27: "OPENDIR", 28: "READDIR", 29: "RELEASEDIR",
    30: "FSYNCDIR", 31: "GETLK", 32: "SETLK", 33: "SETLKW", 34: "ACCESS", 35: "CREATE", 36: "INTERRUPT",
    37: "BMAP", 38: "DESTROY", 39: "IOCTL", 40: "POLL", 41: "NOTIFY_REPLY", 42: "BATCH_FORGET",
    43: "FALLOCATE", 44: "READDIRPLUS", 45: "RENAME2", 46: "LSEEK", 47: "COPY_FILE_RANGE", 52: "STATX",
}

# The order requests of one open+read+close arrive in (for display).
FUSE_ORDER = ["LOOKUP", "GETATTR", "OPEN", "READ", "FLUSH", "RELEASE"]

STRACE_ARGS = ["-f", "-qq", "-y", "-xx", "-s", "8"]

# With -xx every string, fd paths included, is printed as \xNN escapes.
_FUSE_FD = "<" + "".join(f"\\x{b:02x}" for b in b"/dev/fuse")
_LINE = re.compile(r"^(\d+)\s+(?:<\.\.\. ([\w]+) resumed>(.*)|([\w]+)\((.*))$")
_HEAD_BYTES = re.compile(r'"((?:\\x[0-9a-f]{2}){8})')
_RESULT = re.compile(r"\)\s+=\s+(-?\d+)")


def parse_strace(path: str) -> dict:
    """Syscalls and FUSE requests in an ``strace -f -y -xx -s 8 -o`` log.

    Every syscall is counted once, where it starts (an ``<unfinished ...>``
    line, not its ``resumed`` half). A ``read`` of ``/dev/fuse`` that
    returned data is one FUSE request; its opcode is bytes 4-7 of the
    request header (``struct fuse_in_header``), little-endian.
    """
    syscalls: collections.Counter = collections.Counter()
    requests: collections.Counter = collections.Counter()
    pending_fuse_read: set[str] = set()
    tasks: set[str] = set()
    with open(path, errors="replace") as f:
        for line in f:
            match = _LINE.match(line.rstrip("\n"))
            if not match:
                continue  # signals, exits
            tid, resumed_name, resumed_rest, name, rest = match.groups()
            tasks.add(tid)
            if resumed_name is not None:
                if resumed_name == "read" and tid in pending_fuse_read:
                    pending_fuse_read.discard(tid)
                    _count_request(resumed_rest, requests)
                continue
            syscalls[name] += 1
            if name == "read" and _FUSE_FD in rest.split(",", 1)[0]:
                if rest.endswith("<unfinished ...>"):
                    pending_fuse_read.add(tid)
                else:
                    _count_request(rest, requests)
    return {"syscalls": dict(syscalls), "requests": dict(requests), "tasks": len(tasks)}


def _count_request(text: str, requests: collections.Counter) -> None:
    result = _RESULT.search(text)
    if result is None or int(result.group(1)) <= 0:
        return  # EAGAIN, EINTR, ENODEV at unmount
    head = _HEAD_BYTES.search(text)
    if head is None:
        requests["?"] += 1
        return
    raw = bytes(int(h, 16) for h in head.group(1).split("\\x")[1:])
    opcode = int.from_bytes(raw[4:8], "little")
    requests[FUSE_OPCODES.get(opcode, f"op{opcode}")] += 1


# -- the profiled procview daemon ---------------------------------------------------

# Run as: python -c PROFILED_DAEMON MOUNTPOINT PIDFILE OUT
# SIGUSR1 starts a fresh cProfile (and creates OUT.on); SIGUSR2 stops it and
# writes the stats to OUT. The signal handlers run in the main thread, the one
# that runs trio and every FUSE request, so the profile sees all request work.
PROFILED_DAEMON = r"""
import cProfile, logging, os, signal, sys
from procview.daemon import serve

mountpoint, pidfile, out = sys.argv[1:4]
state = {"profile": None}

def start(signum, frame):
    profile = cProfile.Profile()
    state["profile"] = profile
    profile.enable()
    open(out + ".on", "w").close()

def stop(signum, frame):
    profile = state.pop("profile", None)
    state["profile"] = None
    if profile is None:
        return
    profile.disable()
    profile.dump_stats(out + ".tmp")
    os.replace(out + ".tmp", out)

signal.signal(signal.SIGUSR1, start)
signal.signal(signal.SIGUSR2, stop)
logging.basicConfig(level=logging.WARNING, format="procview(profiled): %(levelname)s: %(message)s")
serve(mountpoint, pidfile, seccomp_socket=None)
"""


def profile_summary(stats_path: str, reads: int, repo: str, top: int = 12) -> dict:
    """The profile of ``reads`` reads: total self time per read, the
    functions with the most self time, and procview's functions by
    cumulative time (µs per read, and share of all profiled time)."""
    import pstats

    stats = pstats.Stats(stats_path).stats  # {(file, line, name): (cc, nc, tt, ct, callers)}
    # cProfile times wall clock: the event loop's epoll wait for the next
    # request is idle time, not work, and is left out of the shares.
    idle_keys = [k for k in stats if k[0] == "~" and "epoll" in k[2] and "poll" in k[2]]
    idle = sum(stats[k][2] for k in idle_keys)
    stats = {k: v for k, v in stats.items() if k not in idle_keys}
    total = sum(entry[2] for entry in stats.values())

    def label(key):
        filename, line, name = key
        if filename == "~":
            return name
        for prefix in (repo.rstrip("/") + "/", sys.prefix + "/lib/", sys.base_prefix + "/lib/"):
            if filename.startswith(prefix):
                filename = filename[len(prefix):]
                break
        return f"{filename}:{line}({name})"

    def row(key, seconds, calls):
        return {"function": label(key), "us_per_read": seconds / reads * 1e6, "share": seconds / total if total else 0.0,
                "calls_per_read": calls / reads}

    by_self = sorted(stats.items(), key=lambda item: item[1][2], reverse=True)[:top]
    own = [(k, v) for k, v in stats.items() if "/procview/" in k[0] and "/bench/" not in k[0]]
    by_cum = sorted(own, key=lambda item: item[1][3], reverse=True)[:top]
    return {
        "reads": reads,
        "profiled_us_per_read": total / reads * 1e6,
        "idle_us_per_read": idle / reads * 1e6,
        "self": [row(k, v[2], v[1]) for k, v in by_self],
        "cumulative": [row(k, v[3], v[1]) for k, v in by_cum],
    }


# -- the machine ---------------------------------------------------------------------


def machine_description() -> dict:
    cpu_model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            mem_kb = int(f.readline().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kb = 0
    os_name = "?"
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    os_name = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return {
        "os": os_name,
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
    }


def load_snapshot() -> dict:
    """Load average and CPU pressure: how busy the machine was (other
    work on the same vCPUs shows here)."""
    snapshot = {"time": time.time()}
    try:
        with open("/proc/loadavg") as f:
            snapshot["loadavg"] = " ".join(f.read().split()[:3])
    except OSError:
        pass
    try:
        with open("/proc/pressure/cpu") as f:
            snapshot["cpu_pressure"] = f.readline().strip()
    except OSError:
        pass
    return snapshot


def command_output(argv: list[str]) -> str | None:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (result.stdout or result.stderr).strip() if result.returncode == 0 else None


def run_meta(script: str, argv: list[str], repo: str, lxcfs: str) -> dict:
    """What a report prints with its numbers: the command as typed (from
    the checkout), the date, the machine, LXCFS's version, procview's
    commit, and how busy the machine was before."""
    here = os.getcwd()
    return {
        "command": " ".join(["sudo", os.path.relpath(sys.executable, here), os.path.relpath(os.path.abspath(script), here)]
                            + [shlex.quote(a) for a in argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_description(),
        "lxcfs_version": (command_output([lxcfs, "--version"]) or "?").strip('"'),
        "procview_commit": command_output(["git", "-C", repo, "rev-parse", "--short", "HEAD"]),
        "procview_tree_dirty": bool(command_output(["git", "-C", repo, "status", "--porcelain", "--", "procview"])),
        "load_before": load_snapshot(),
    }


def meta_lines(meta: dict, cgroup_layout: str, software: str) -> list[str]:
    """The report's first lines: command, date, machine, ``software``
    (what ran: procview's checkout, LXCFS...), machine load."""
    machine = meta["machine"]
    lb, la = meta["load_before"], meta.get("load_after", {})
    return [
        f"- Command: `{meta['command']}`",
        f"- Date: {meta['date']}; run time {meta.get('seconds', '?')} s",
        f"- Machine: {machine['os']}, kernel {machine['kernel']}, {machine['cpus']} vCPUs ({machine['cpu_model']}), "
        f"{machine['memory_gib']} GiB, cgroup layout {cgroup_layout}; Python {machine['python']}",
        f"- {software}",
        f"- Machine load (other work on the same vCPUs shows here): before {lb.get('loadavg', '?')} "
        f"(PSI cpu {lb.get('cpu_pressure', '?')}), after {la.get('loadavg', '?')} (PSI cpu {la.get('cpu_pressure', '?')})",
    ]


def checkout_description(meta: dict) -> str:
    return f"checkout at {meta['procview_commit'] or '?'}" + (
        " with uncommitted changes in procview/" if meta["procview_tree_dirty"] else "")


# -- FUSE daemons and the cgroups of a benchmark --------------------------------------


class Daemon:
    """A FUSE daemon on its own mount point, in its own (unlimited) cgroup
    so its CPU time, threads and children included, can be read in ns.
    ``log``: where its stop reports a mount it had to detach."""

    def __init__(self, name: str, argv: list[str], mountpoint: str, fstype: str, cgroup, logdir: str, env=None, log=None):
        self.name = name
        self.mountpoint = mountpoint
        self.fstype = fstype
        self.cgroup = cgroup
        self.log = log or (lambda message: None)
        self.log_path = os.path.join(logdir, f"daemon-{name}.log")
        os.makedirs(mountpoint, exist_ok=True)
        with open(self.log_path, "w") as log_file:
            self.popen = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=lambda: cgroup.add_process(os.getpid()), env=env,
                cwd="/",  # "python -m/-c" import from the cwd first: not the checkout, not our mount points
            )
        self.pid = self.popen.pid

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until the mount is there and answers a read."""
        deadline = time.monotonic() + timeout
        while self.fstype not in mounted_types(self.mountpoint):
            self.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name}: not mounted at {self.mountpoint} after {timeout:.0f} s: {self.log_tail()}")
            time.sleep(0.05)
        with open(os.path.join(self.mountpoint, "proc", "uptime"), "rb") as f:
            f.read()

    def check_alive(self) -> None:
        ended = how_it_ended(self.popen)
        if ended:
            raise BenchError(f"the {self.name} daemon (pid {self.pid}) is gone ({ended}); log: {self.log_tail()}")

    def log_tail(self) -> str:
        return file_tail(self.log_path, "(empty)")

    def cpu(self) -> dict:
        """CPU time so far, in µs: utime and stime of the process
        (/proc/PID/stat, clock ticks) and user and system time of its cgroup
        (cpuacct, ns: threads and forked helpers included)."""
        ticks = process_cpu_ticks(self.pid)
        if ticks is None:
            self.check_alive()
            raise BenchError(f"cannot read /proc/{self.pid}/stat")
        usage = self.cgroup.cpu_usage()
        tick_us = 1e6 / CLK_TCK
        return {
            "stat_us": (ticks[0] + ticks[1]) * tick_us,
            "stat_user_us": ticks[0] * tick_us,
            "stat_sys_us": ticks[1] * tick_us,
            "cgroup_us": None if usage is None else (usage.total.user_ns + usage.total.system_ns) / 1000,
            "cgroup_user_us": None if usage is None else usage.total.user_ns / 1000,
            "cgroup_sys_us": None if usage is None else usage.total.system_ns / 1000,
        }

    def memory(self) -> dict:
        """VmRSS and VmHWM (its peak RSS so far) in KiB, and open fds."""
        self.check_alive()
        return process_memory(self.pid)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)  # both unmount on SIGTERM
            try:
                self.popen.wait(timeout=15)  # LXCFS joins its 5 s loadavg thread
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        how = unmount(self.mountpoint)
        if how:
            self.log(f"{self.name}: {how}")


def process_memory(pid: int) -> dict:
    """``VmRSS_kB``, ``VmHWM_kB`` (/proc/PID/status) and ``fds`` (entries
    of /proc/PID/fd) of a process; missing values are None."""
    found = {"VmRSS_kB": None, "VmHWM_kB": None, "fds": None}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                name, _, value = line.partition(":")
                if f"{name}_kB" in found:
                    found[f"{name}_kB"] = int(value.split()[0])
        found["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, ValueError, IndexError):
        pass
    return found


def cpu_delta(before: dict, after: dict, per: float) -> dict:
    """CPU used between two ``Daemon.cpu()`` readings, divided by ``per``."""
    return {key: None if before[key] is None or after[key] is None else (after[key] - before[key]) / per for key in before}


def cpu_stat(cg) -> dict:
    """The cgroup's cpu.stat (throttling counters)."""
    try:
        directory = cg._dir("cpu") if cg.version == 1 else cg._dir()
        with open(os.path.join(directory, "cpu.stat")) as f:
            return {k: int(v) for k, v in (line.split() for line in f if len(line.split()) == 2)}
    except (OSError, TypeError, ValueError):
        return {}


def remove_cgroup(cg, log, timeout: float = 15.0) -> bool:
    """Remove one cgroup, waiting for its exited tasks to leave it; says
    (and returns False) if it could not."""
    from procview.cgroups import CgroupError

    deadline = time.monotonic() + timeout
    while True:
        try:
            cg.remove()
            return True
        except CgroupError as exc:
            if time.monotonic() > deadline:
                log(f"could not remove cgroup {cg.path}: {exc}")
                return False
            time.sleep(0.05)  # tasks leave their cgroups asynchronously after exit


class BenchCgroups:
    """The cgroups of one run, below ``/procview-bench-XXXXXXXX`` (made
    through ``procview.cgroups``, so v1, hybrid and v2 hosts all work).
    Whatever is left is removed deepest first when ``stack`` unwinds,
    after the processes in them (registered later, so stopped first)."""

    def __init__(self, stack: contextlib.ExitStack, log):
        import uuid

        from procview import cgroups

        self._cgroups = cgroups
        self.hierarchies = cgroups.discover()
        self.layout = self.hierarchies.layout.value
        self.base = f"/procview-bench-{uuid.uuid4().hex[:8]}"
        self.log = log
        self._made: list = []
        stack.callback(self.remove_all)
        self.make("")

    def make(self, name: str, memory: int | None = None, cpu_quota: tuple[int, int] | None = None):
        """``BASE/name`` with a memory limit (bytes) and a CPU quota
        ((quota µs, period µs)) if given."""
        cg = self.hierarchies.cgroup(f"{self.base}/{name}" if name else self.base)
        self._made.append(cg)
        cg.create()
        if memory is not None:
            cg.set_memory_limit(memory)
        if cpu_quota is not None:
            cg.set_cpu_quota(self._cgroups.CpuQuota(*cpu_quota))
        return cg

    def remove(self, cgs: list) -> list:
        """Remove these (their processes gone); returns those that stay."""
        left = [cg for cg in cgs if not remove_cgroup(cg, self.log)]
        gone = {id(cg) for cg in cgs} - {id(cg) for cg in left}
        self._made = [cg for cg in self._made if id(cg) not in gone]
        return left

    def remove_all(self) -> None:
        for cg in reversed(self._made):
            remove_cgroup(cg, self.log)
        self._made = []


# -- a run that cleans up ------------------------------------------------------------


class BenchError(Exception):
    """The benchmark cannot go on (one line for the user)."""


class Interrupted(BaseException):
    """SIGTERM or SIGHUP: clean up as for Ctrl-C."""


def run_and_report(prog: str, what: str, run, render, json_path: str | None, log) -> int:
    """Runs ``run(stack)``, then prints ``render(results)`` (markdown, on
    stdout) and writes the results to ``json_path``; returns the exit
    status (1: a ``BenchError``, said in one line; 130: Ctrl-C, SIGTERM or
    SIGHUP). Whatever ``run`` registered on the ``contextlib.ExitStack``
    it gets is undone in every case, and no second Ctrl-C cuts that short
    (the cleanup is bounded by timeouts). ``what``: what the cleanup
    removes, for the message."""
    results = _run_cleaning_up(prog, what, run, log)
    if isinstance(results, int):
        return results
    print(render(results))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(results, f, indent=1)
        log(f"raw results in {json_path}")
    return 0


def _run_cleaning_up(prog: str, what: str, run, log) -> dict | int:

    def interrupted(signum, frame):
        raise Interrupted(signum)

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    stack = contextlib.ExitStack()
    try:
        with stack:
            try:
                return run(stack)
            finally:
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
                log("cleaning up")
    except (KeyboardInterrupt, Interrupted):
        print(f"{prog}: interrupted; {what} removed", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    finally:
        # A Ctrl-C pressed during the cleanup is dropped, not raised now.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
