#!/usr/bin/env python3
"""Read latency of procview's files: native /proc vs procview vs LXCFS.

    sudo .venv/bin/python bench/read_latency.py [--iterations 2000] [--json FILE]

One run, on this machine, of everything the comparison needs:

1. A child cgroup with 256 MiB of memory and a CPU quota of 0.5 CPU
   (through ``procview.cgroups``) and, in it, a measuring process that is
   pid 1 of its own pid namespace (``unshare --pid --fork``), like a
   container's init. Both daemons must show it ``MemTotal: 262144 kB``; the
   check is printed.
2. Three FUSE daemons, each on a temporary mount point and in a cgroup of
   its own: ``procview serve``, LXCFS (``lxcfs -f -l --enable-cfs``) and a
   second procview running under cProfile (used only in step 6).
3. Latency: each sample is ``os.open`` + ``os.read(64 KiB)`` until EOF +
   ``os.close``; per file and target, 50 warm-ups then ``--iterations``
   timed samples, taken in rounds of ``--chunk`` samples that rotate the
   order of native, procview and LXCFS so that drift hits all three alike.
4. Daemon CPU per read: utime+stime of the daemon (``/proc/PID/stat``) and
   the CPU time of the cgroup it runs in (cpuacct, nanoseconds), before and
   after ``--cpu-reads`` reads.
5. ``strace -f -p DAEMON`` during ``--strace-reads`` reads: syscalls per
   read, and FUSE requests per read by opcode (decoded from the request
   headers the daemon reads from /dev/fuse).
6. cProfile inside the profiled procview daemon during ``--profile-reads``
   reads: where procview's Python time goes, per request.
With ``--metrics-overhead``, also a second ``procview serve`` started
with ``--metrics 127.0.0.1:PORT``, and a step 8: the reader's latency
through both procview daemons (rounds rotating the order, as in step 3)
and each one's CPU per read, so the cost of recording metrics is measured
against no metrics in the same run.

7. Throughput: 8 readers, each pid 1 of its own pid namespace in its own
   limited cgroup, each reading ``/proc/meminfo`` ``--concurrent-reads``
   times at once; total reads/s per target.

A markdown report goes to stdout (progress to stderr), the raw numbers to
``--json FILE``. Daemons, mounts, namespaces and cgroups are removed at the
end, on failure and on Ctrl-C. Needs root, ``unshare``, ``lxcfs`` (Debian:
``apt-get install lxcfs``) and, for step 5, ``strace``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _util  # noqa: E402  (stdlib only; the workers import it too)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (short name, path relative to the root of each target)
FILES = (
    ("meminfo", "proc/meminfo"),
    ("stat", "proc/stat"),
    ("uptime", "proc/uptime"),
    ("cpuinfo", "proc/cpuinfo"),
    ("loadavg", "proc/loadavg"),
    ("swaps", "proc/swaps"),
    ("diskstats", "proc/diskstats"),
    ("cpu/online", "sys/devices/system/cpu/online"),
    # Not a view: the host's file passed through, each daemon's floor (for
    # procview at 5ce4c74 also a lookup that computes the caller's CPU view).
    ("cpu/kernel_max", "sys/devices/system/cpu/kernel_max"),
)
TARGETS = ("native", "procview", "lxcfs")
DAEMONS = ("procview", "lxcfs")
LABEL = {"native": "native", "procview": "procview", "lxcfs": "LXCFS"}
# The files whose medians the issue wants at or below LXCFS's.
TARGET_FILES = ("meminfo", "stat", "uptime", "cpuinfo")

MiB = 1024 * 1024
MEMORY_LIMIT = 256 * MiB
CPU_QUOTA_US, CPU_PERIOD_US = 50000, 100000
CONCURRENT_READERS = 8

READ_SIZE = 64 * 1024


def _free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def log(message: str) -> None:
    print(f"read_latency: {message}", file=sys.stderr, flush=True)


BenchError = _util.BenchError
Daemon = _util.Daemon


# =============================================================================
# The measuring worker: runs inside a limited cgroup (and pid namespace), reads
# JSON commands on stdin, answers one JSON line each on stdout. Standard
# library only, and nothing but the loop while a loop runs.
# =============================================================================


def _loop(path: str, count: int, out: list | None) -> None:
    open_, read, close, clock, flags = os.open, os.read, os.close, time.perf_counter_ns, os.O_RDONLY
    if out is None:
        for _ in range(count):
            fd = open_(path, flags)
            while read(fd, READ_SIZE):
                pass
            close(fd)
        return
    append = out.append
    for _ in range(count):
        start = clock()
        fd = open_(path, flags)
        while read(fd, READ_SIZE):
            pass
        close(fd)
        append(clock() - start)


def _worker_hello(cmd: dict) -> dict:
    with open("/proc/self/status") as f:
        nspid = next((line.split()[1:] for line in f if line.startswith("NSpid:")), [])
    with open("/proc/self/cgroup") as f:
        cgroup = f.read()
    return {"pid": os.getpid(), "nspid": [int(p) for p in nspid], "cgroup": cgroup}


def _worker_check(cmd: dict) -> dict:
    result = {}
    for target, paths in cmd["targets"].items():
        seen = {}
        with open(paths["meminfo"]) as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    seen["MemTotal_kB"] = int(line.split()[1])
        with open(paths["cpuinfo"]) as f:
            seen["cpuinfo_processors"] = sum(1 for line in f if line.startswith("processor"))
        with open(paths["online"]) as f:
            seen["cpu_online"] = f.read().strip()
        result[target] = seen
    return result


def _worker_latency(cmd: dict) -> dict:
    targets, files = cmd["targets"], cmd["files"]
    iterations, warmup, chunk = cmd["iterations"], cmd["warmup"], cmd["chunk"]
    samples: dict = {name: {t: [] for t in targets} for name, _ in files}
    for name, paths in files:
        for target in targets:
            _loop(paths[target], warmup, None)
    rounds = -(-iterations // chunk)
    for r in range(rounds):
        count = min(chunk, iterations - r * chunk)
        shift = r % len(targets)
        order = targets[shift:] + targets[:shift]
        for name, paths in files:
            for target in order:
                _loop(paths[target], count, samples[name][target])
    # What the clock and the loop cost by themselves (an empty sample).
    clock = time.perf_counter_ns
    empty = []
    for _ in range(2000):
        start = clock()
        empty.append(clock() - start)
    empty.sort()
    return {"samples": samples, "empty_sample_ns": empty[len(empty) // 2]}


def _worker_reads(cmd: dict) -> dict:
    start = time.monotonic_ns()
    _loop(cmd["path"], cmd["n"], None)
    return {"start_ns": start, "end_ns": time.monotonic_ns()}


WORKER_COMMANDS = {"hello": _worker_hello, "check": _worker_check, "latency": _worker_latency, "reads": _worker_reads}


def worker_main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "exit":
            return 0
        try:
            reply = WORKER_COMMANDS[cmd["cmd"]](cmd)
        except Exception:
            reply = {"error": traceback.format_exc()}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
    return 0


# =============================================================================
# The orchestrating parent.
# =============================================================================


class Worker:
    """A measuring process in ``cgroup``; with ``pidns`` it is pid 1 of a
    new pid namespace (``unshare --pid --fork --kill-child``)."""

    def __init__(self, name: str, cgroup, pidns: bool, logdir: str):
        self.name = name
        argv = [sys.executable, os.path.abspath(__file__), "--worker"]
        if pidns:
            argv = ["unshare", "--pid", "--fork", "--kill-child"] + argv
        self.log_path = os.path.join(logdir, f"worker-{name}.log")
        with open(self.log_path, "w") as log_file:
            self.popen = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log_file,
                text=True,
                start_new_session=True,
                preexec_fn=lambda: cgroup.add_process(os.getpid()),
            )

    def send(self, cmd: dict) -> None:
        try:
            self.popen.stdin.write(json.dumps(cmd) + "\n")
            self.popen.stdin.flush()
        except BrokenPipeError:
            raise BenchError(f"worker {self.name} died: {self._log_tail()}") from None

    def receive(self) -> dict:
        line = self.popen.stdout.readline()
        if not line:
            raise BenchError(f"worker {self.name} died: {self._log_tail()}")
        reply = json.loads(line)
        if "error" in reply:
            raise BenchError(f"worker {self.name} failed:\n{reply['error']}")
        return reply

    def call(self, cmd: dict) -> dict:
        self.send(cmd)
        return self.receive()

    def _log_tail(self) -> str:
        return _util.file_tail(self.log_path, f"exit status {self.popen.poll()}", 2000)

    def close(self) -> None:
        if self.popen.poll() is None:
            try:
                self.popen.stdin.write(json.dumps({"cmd": "exit"}) + "\n")
                self.popen.stdin.flush()
                self.popen.wait(timeout=2)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass
        _util.kill_group(self.popen)


class Bench:
    def __init__(self, args: argparse.Namespace, stack: contextlib.ExitStack):
        self.args = args
        self.stack = stack
        self.files = [(name, rel) for name, rel in FILES if name in args.files]
        self.results: dict = {"files": [name for name, _ in self.files]}

    # -- setup ----------------------------------------------------------------

    def setup(self) -> None:
        args = self.args
        self.tmp = tempfile.mkdtemp(prefix="procview-bench-")
        self.stack.callback(_util.remove_workdir, self.tmp, args.keep_logs, log)
        self.mounts = {"native": "/", "procview": os.path.join(self.tmp, "procview"), "lxcfs": os.path.join(self.tmp, "lxcfs"),
                       "profiled": os.path.join(self.tmp, "procview-profiled")}

        tree = _util.BenchCgroups(self.stack, log)
        self.layout = tree.layout
        base = self.base_path = tree.base
        quota = (CPU_QUOTA_US, CPU_PERIOD_US)

        def cgroup(path, limited):
            return tree.make(path, MEMORY_LIMIT, quota) if limited else tree.make(path)

        self.reader_cg = cgroup("reader", True)
        daemon_cgs = {name: cgroup(f"daemon-{name}", False) for name in ("procview", "lxcfs", "profiled", "metrics")}

        env = _util.procview_environment(args)
        self.daemons: dict[str, Daemon] = {}
        specs = {
            # Files only: the syscall supervisor is benchmarked by syscall_latency.py.
            "procview": ([sys.executable, "-m", "procview", "serve", self.mounts["procview"], "--log-level", "warning",
                          "--no-seccomp-socket"],
                         "fuse.procview", env),
            "lxcfs": ([args.lxcfs, "-f", "-l", "--enable-cfs", "-p", os.path.join(self.tmp, "lxcfs.pid"), self.mounts["lxcfs"]],
                      "fuse.lxcfs", None),
        }
        if args.metrics_overhead:
            self.mounts["metrics"] = os.path.join(self.tmp, "procview-metrics")
            specs["metrics"] = (specs["procview"][0][:4] + [self.mounts["metrics"]] + specs["procview"][0][5:]
                                + ["--metrics", f"127.0.0.1:{_free_loopback_port()}"], "fuse.procview", env)
        if not args.skip_profile:
            self.profile_out = os.path.join(self.tmp, "profile.pstats")
            specs["profiled"] = ([sys.executable, "-c", _util.PROFILED_DAEMON, self.mounts["profiled"],
                                  os.path.join(self.tmp, "profiled.pid"), self.profile_out], "fuse.procview", env)
        for name, (argv, fstype, daemon_env) in specs.items():
            daemon = Daemon(name, argv, self.mounts[name], fstype, daemon_cgs[name], self.tmp, daemon_env, log)
            self.daemons[name] = daemon
            self.stack.callback(daemon.stop)
        for daemon in self.daemons.values():
            daemon.wait_ready()
        log("daemons ready: " + ", ".join(f"{d.name} pid {d.pid}" for d in self.daemons.values()))

        self.workers: list[Worker] = []
        self.reader = self._worker("reader", self.reader_cg)
        if not args.skip_concurrency:
            self.concurrent = [self._worker(f"c{i}", cgroup(f"c{i}", True)) for i in range(CONCURRENT_READERS)]

        self.results["setup"] = {
            "cgroup_layout": self.layout,
            "reader_cgroup": f"{base}/reader",
            "memory_limit": MEMORY_LIMIT,
            "cpu_quota": f"{CPU_QUOTA_US}/{CPU_PERIOD_US}",
            "pid_namespace": not args.no_pidns,
            "daemon_pids": {name: d.pid for name, d in self.daemons.items()},
            "procview_src": os.path.abspath(args.procview_src) if args.procview_src else REPO,
            "procview_env": dict(args.procview_env),
        }

    def _worker(self, name: str, cg) -> Worker:
        worker = Worker(name, cg, not self.args.no_pidns, self.tmp)
        self.workers.append(worker)
        self.stack.callback(worker.close)
        return worker

    def paths(self, rel: str, targets=TARGETS) -> dict:
        return {t: os.path.join(self.mounts[t], rel) for t in targets}

    def alive(self) -> None:
        for daemon in self.daemons.values():
            daemon.check_alive()

    # -- 1. who the reader is, and what it sees --------------------------------

    def check(self) -> None:
        hello = self.reader.call({"cmd": "hello"})
        targets = {t: {"meminfo": os.path.join(self.mounts[t], "proc/meminfo"),
                       "cpuinfo": os.path.join(self.mounts[t], "proc/cpuinfo"),
                       "online": os.path.join(self.mounts[t], "sys/devices/system/cpu/online")} for t in TARGETS}
        seen = self.reader.call({"cmd": "check", "targets": targets})
        expected = MEMORY_LIMIT // 1024
        ok = all(seen[d]["MemTotal_kB"] == expected for d in DAEMONS)
        self.results["check"] = {"reader": hello, "seen": seen, "expected_MemTotal_kB": expected, "ok": ok}
        if not ok:
            raise BenchError(f"the daemons do not show the reader its container (MemTotal {expected} kB expected): {seen}")
        if not self.args.skip_concurrency:
            for worker in self.concurrent:
                worker.call({"cmd": "hello"})

    # -- 3. latency ---------------------------------------------------------------

    def latency(self) -> None:
        args = self.args
        total = len(self.files) * len(TARGETS) * (args.iterations + args.warmup)
        log(f"latency: {total} samples ({args.iterations} per file and target, rounds of {args.chunk})")
        before = _util.cpu_stat(self.reader_cg)
        reply = self.reader.call({
            "cmd": "latency",
            "targets": list(TARGETS),
            "files": [[name, self.paths(rel)] for name, rel in self.files],
            "iterations": args.iterations, "warmup": args.warmup, "chunk": args.chunk,
        })
        after = _util.cpu_stat(self.reader_cg)
        self.alive()
        summary = {name: {t: _util.summarize_ns(reply["samples"][name][t]) for t in TARGETS} for name, _ in self.files}
        self.results["latency"] = summary
        self.results["latency_meta"] = {
            "empty_sample_us": reply["empty_sample_ns"] / 1000,
            "reader_throttled_periods": after.get("nr_throttled", 0) - before.get("nr_throttled", 0),
        }
        if args.json_samples:
            self.results["latency_samples_ns"] = reply["samples"]

    # -- 4. daemon CPU per read -----------------------------------------------------

    def daemon_cpu(self) -> None:
        args = self.args
        n = args.cpu_reads
        log(f"daemon CPU: {n} reads per file and daemon")
        before = {d: self.daemons[d].cpu() for d in DAEMONS}
        start = time.monotonic()
        time.sleep(args.idle_seconds)
        seconds = time.monotonic() - start
        idle = {d: _util.cpu_delta(before[d], self.daemons[d].cpu(), seconds) for d in DAEMONS}  # µs per s
        per_file = {}
        for index, (name, rel) in enumerate(self.files):
            per_file[name] = {}
            order = DAEMONS if index % 2 == 0 else DAEMONS[::-1]
            for d in order:
                daemon = self.daemons[d]
                path = os.path.join(self.mounts[d], rel)
                self.reader.call({"cmd": "reads", "path": path, "n": 20})
                c0 = daemon.cpu()
                reply = self.reader.call({"cmd": "reads", "path": path, "n": n})
                entry = _util.cpu_delta(c0, daemon.cpu(), n)  # µs per read
                entry["reads"] = n
                entry["wall_us_per_read"] = (reply["end_ns"] - reply["start_ns"]) / 1000 / n
                per_file[name][d] = entry
        self.alive()
        self.results["daemon_cpu"] = {"idle_us_per_s": idle, "idle_seconds": seconds, "files": per_file}

    # -- 5. strace: syscalls and FUSE requests per read ------------------------------

    def strace(self) -> None:
        args = self.args
        strace = shutil.which("strace")
        if strace is None:
            log("strace not found (apt-get install -y strace): skipping syscall and FUSE request counts")
            self.results["strace"] = {"skipped": "strace not installed"}
            return
        n = args.strace_reads
        log(f"strace: {n} reads per file and daemon")
        out = {}
        for name, rel in self.files:
            out[name] = {}
            for d in DAEMONS:
                daemon = self.daemons[d]
                path = os.path.join(self.mounts[d], rel)
                self.reader.call({"cmd": "reads", "path": path, "n": 20})
                trace = os.path.join(self.tmp, f"strace-{d}-{name.replace('/', '_')}.txt")
                with open(os.path.join(self.tmp, "strace.log"), "a") as strace_log:
                    tracer = subprocess.Popen([strace, *_util.STRACE_ARGS, "-o", trace, "-p", str(daemon.pid)],
                                              stdout=strace_log, stderr=strace_log, start_new_session=True)
                try:
                    deadline = time.monotonic() + 20
                    while _util.tracer_of_all_threads(daemon.pid) != {tracer.pid}:
                        if tracer.poll() is not None or time.monotonic() > deadline:
                            raise BenchError(f"strace could not attach to {d} (pid {daemon.pid}); see {self.tmp}/strace.log")
                        time.sleep(0.02)
                    self.reader.call({"cmd": "reads", "path": path, "n": n})
                finally:
                    if tracer.poll() is None:
                        tracer.send_signal(signal.SIGINT)
                    try:
                        tracer.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        tracer.kill()
                        tracer.wait()
                parsed = _util.parse_strace(trace)
                out[name][d] = {
                    "reads": n,
                    "syscalls_per_read": sum(parsed["syscalls"].values()) / n,
                    "syscalls": {k: v / n for k, v in sorted(parsed["syscalls"].items(), key=lambda kv: -kv[1])},
                    "fuse_requests_per_read": sum(parsed["requests"].values()) / n,
                    "fuse_requests": {k: v / n for k, v in parsed["requests"].items()},
                    "tasks_traced": parsed["tasks"],
                }
        self.alive()
        self.results["strace"] = out

    # -- 6. cProfile inside a procview daemon ------------------------------------------

    def profile(self) -> None:
        n = self.args.profile_reads
        daemon = self.daemons["profiled"]
        log(f"profile: {n} reads per file through the profiled procview")
        out = {}
        for name, rel in self.files:
            path = os.path.join(self.mounts["profiled"], rel)
            self.reader.call({"cmd": "reads", "path": path, "n": 20})
            for leftover in (self.profile_out, self.profile_out + ".on"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(leftover)
            os.kill(daemon.pid, signal.SIGUSR1)
            self._wait_for(self.profile_out + ".on", daemon)
            self.reader.call({"cmd": "reads", "path": path, "n": n})
            os.kill(daemon.pid, signal.SIGUSR2)
            self._wait_for(self.profile_out, daemon)
            out[name] = _util.profile_summary(self.profile_out, n, self.results["setup"]["procview_src"])
        self.results["profile"] = out

    def _wait_for(self, path: str, daemon: Daemon, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not os.path.exists(path):
            daemon.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"{daemon.name}: {path} did not appear")
            time.sleep(0.01)

    # -- 7. eight readers in eight cgroups ------------------------------------------------

    def concurrency(self) -> None:
        n = self.args.concurrent_reads
        log(f"concurrency: {CONCURRENT_READERS} readers x {n} reads of meminfo per target")
        out = {}
        for target in ("native",) + DAEMONS:
            path = os.path.join(self.mounts[target], "proc/meminfo")
            for worker in self.concurrent:
                worker.call({"cmd": "reads", "path": path, "n": 20})
            daemon = self.daemons.get(target)
            c0 = daemon.cpu() if daemon else None
            for worker in self.concurrent:
                worker.send({"cmd": "reads", "path": path, "n": n})
            replies = [worker.receive() for worker in self.concurrent]
            start = min(r["start_ns"] for r in replies)
            end = max(r["end_ns"] for r in replies)
            total = n * len(replies)
            entry = {"readers": len(replies), "reads": total, "seconds": (end - start) / 1e9,
                     "reads_per_s": total / ((end - start) / 1e9)}
            if daemon:
                entry["cpu_per_read"] = _util.cpu_delta(c0, daemon.cpu(), total)
            out[target] = entry
        self.alive()
        self.results["concurrency"] = out

    # -- the run -----------------------------------------------------------------------

    # -- 8. what --metrics costs ------------------------------------------------------

    def metrics_overhead(self) -> None:
        """Latency and daemon CPU per read through procview without and
        with ``--metrics``, in the same rotating rounds."""
        args = self.args
        targets = ["procview", "metrics"]
        log(f"metrics overhead: {args.iterations} samples per file, without and with --metrics")
        reply = self.reader.call({
            "cmd": "latency", "targets": targets,
            "files": [[name, self.paths(rel, targets)] for name, rel in self.files],
            "iterations": args.iterations, "warmup": args.warmup, "chunk": args.chunk,
        })
        out = {}
        for index, (name, rel) in enumerate(self.files):
            out[name] = {t: _util.summarize_ns(reply["samples"][name][t]) for t in targets}
            for d in (targets if index % 2 == 0 else targets[::-1]):
                daemon, path = self.daemons[d], os.path.join(self.mounts[d], rel)
                c0 = daemon.cpu()
                self.reader.call({"cmd": "reads", "path": path, "n": args.cpu_reads})
                out[name][d]["cpu"] = _util.cpu_delta(c0, daemon.cpu(), args.cpu_reads)
        self.alive()
        self.results["metrics_overhead"] = out

    def run(self) -> dict:
        args = self.args
        self.results["meta"] = _util.run_meta(__file__, args.argv, REPO, args.lxcfs)
        start = time.monotonic()
        self.setup()
        self.check()
        self.latency()
        self.daemon_cpu()
        if not args.skip_strace:
            self.strace()
        if not args.skip_profile:
            self.profile()
        if not args.skip_concurrency:
            self.concurrency()
        if args.metrics_overhead:
            self.metrics_overhead()
        self.results["meta"]["load_after"] = _util.load_snapshot()
        self.results["meta"]["seconds"] = round(time.monotonic() - start, 1)
        return self.results


# =============================================================================
# The report.
# =============================================================================


def _f(value, digits=1) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def render(results: dict) -> str:
    meta, setup = results["meta"], results["setup"]
    lines: list[str] = []
    add = lines.append
    add("# procview read latency")
    add("")
    source = "the checkout" if setup["procview_src"] == REPO else f"`{setup['procview_src']}`"
    if setup.get("procview_env"):
        source += " with " + " ".join(f"`{k}={v}`" for k, v in setup["procview_env"].items())
    lines += _util.meta_lines(meta, setup["cgroup_layout"],
                              f"procview daemons run from {source} ({_util.checkout_description(meta)}); "
                              f"LXCFS {meta['lxcfs_version']} (`lxcfs -f -l --enable-cfs`)")
    check = results["check"]
    reader = check["reader"]
    who = (f"pid 1 of its own pid namespace (NSpid {' '.join(map(str, reader['nspid']))})" if setup["pid_namespace"]
           else f"pid {reader['pid']} in the host pid namespace")
    add(f"- Reader: {who}, in cgroup `{setup['reader_cgroup']}` (memory limit {setup['memory_limit'] // MiB} MiB, "
        f"CPU quota {setup['cpu_quota']} µs)")
    seen = check["seen"]
    add("- What the reader sees: " + "; ".join(
        f"{LABEL[t]} MemTotal {seen[t]['MemTotal_kB']} kB, {seen[t]['cpuinfo_processors']} processor(s) in cpuinfo, "
        f"cpu/online {seen[t]['cpu_online']}" for t in TARGETS)
        + (" — both daemons show the container's view" if check["ok"] else " — NOT the container's view"))
    add("")

    lat = results.get("latency")
    cpu = results.get("daemon_cpu", {}).get("files", {})
    if lat:
        lm = results["latency_meta"]
        n = next(iter(next(iter(lat.values())).values()))["n"]
        add("## Latency of open + read(64 KiB) until EOF + close, µs")
        add("")
        add(f"{n} samples per file and target after warm-ups, taken in rounds that rotate the order of the targets. "
            f"An empty sample (two clock reads) costs {lm['empty_sample_us']:.2f} µs; the reader's cgroup was "
            f"throttled in {lm['reader_throttled_periods']} CFS periods. CPU per read: the daemon's utime+stime "
            "(/proc/PID/stat) over the reads of the next section.")
        add("")
        add("| File | native median | native p99 | procview median | procview p99 | LXCFS median | LXCFS p99 "
            "| procview ÷ LXCFS | procview CPU/read | LXCFS CPU/read |")
        add("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
        for name in results["files"]:
            row = lat[name]
            cells = [name]
            for t in TARGETS:
                cells += [_f(row[t]["median_us"]), _f(row[t]["p99_us"])]
            cells.append(f"{row['procview']['median_us'] / row['lxcfs']['median_us']:.2f}×")
            for d in DAEMONS:
                c = cpu.get(name, {}).get(d)
                cells.append(_f(c["stat_us"], 0) if c else "–")
            add("| " + " | ".join(cells) + " |")
        add("")
        verdicts = []
        for name in TARGET_FILES:
            if name in lat:
                ok = lat[name]["procview"]["median_us"] <= lat[name]["lxcfs"]["median_us"]
                verdicts.append(f"{name} median {'met' if ok else 'NOT met'}")
        for name in TARGET_FILES:
            c = cpu.get(name)
            if c and c["procview"]["cgroup_us"] is not None and c["lxcfs"]["cgroup_us"] is not None:
                ok = c["procview"]["cgroup_us"] <= c["lxcfs"]["cgroup_us"]
                verdicts.append(f"{name} CPU/read {'met' if ok else 'NOT met'}")
        add("Targets (procview at or below LXCFS; CPU judged on the cgroup's ns count): " + ", ".join(verdicts) + ".")
        add("")

    if cpu:
        dc = results["daemon_cpu"]
        first = next(iter(next(iter(cpu.values())).values()))
        add("## Daemon CPU per read, µs")
        add("")
        add(f"{first['reads']} reads per file and daemon. `stat`: utime + stime of the daemon process (/proc/PID/stat, "
            f"in clock ticks of {1000 // _util.CLK_TCK} ms, the split between the two sampled by the kernel); `cgroup`: "
            "the CPU time of the cgroup the daemon runs alone in (cpuacct, ns; threads and forked helpers included). "
            "`wall`: elapsed time per read in the reader.")
        add("")
        add("| File | procview stat (user + sys) | procview cgroup | procview wall | LXCFS stat (user + sys) | LXCFS cgroup | LXCFS wall |")
        add("|---|--:|--:|--:|--:|--:|--:|")
        for name in results["files"]:
            cells = [name]
            for d in DAEMONS:
                c = cpu[name][d]
                cells += [f"{_f(c['stat_us'], 0)} ({_f(c['stat_user_us'], 0)} + {_f(c['stat_sys_us'], 0)})",
                          _f(c["cgroup_us"], 0), _f(c["wall_us_per_read"], 0)]
            add("| " + " | ".join(cells) + " |")
        add("")
        idle = dc["idle_us_per_s"]
        add(f"Idle, over {dc['idle_seconds']:.1f} s with no reader: " + "; ".join(
            f"{LABEL[d]} {_f(idle[d]['cgroup_us'], 0)} µs of CPU per second" for d in DAEMONS) + ".")
        add("")

    mo = results.get("metrics_overhead")
    if mo:
        add("## procview with `--metrics` against without, µs")
        add("")
        add("Both daemons in this run, the samples in rotating rounds; CPU per read from the daemons' cgroups "
            "(cpuacct, ns) over the reads after them.")
        add("")
        add("| File | without median | with median | with ÷ without | without p99 | with p99 | CPU/read without | CPU/read with |")
        add("|---|--:|--:|--:|--:|--:|--:|--:|")
        for name in results["files"]:
            without, with_ = mo[name]["procview"], mo[name]["metrics"]
            add(f"| {name} | {_f(without['median_us'])} | {_f(with_['median_us'])} | "
                f"{with_['median_us'] / without['median_us']:.3f} | {_f(without['p99_us'])} | {_f(with_['p99_us'])} | "
                f"{_f(without['cpu']['cgroup_us'], 0)} | {_f(with_['cpu']['cgroup_us'], 0)} |")
        add("")

    st = results.get("strace")
    if st and "skipped" not in st:
        first = next(iter(st.values()))
        add("## FUSE requests and daemon syscalls per open+read+close (`strace -f -p DAEMON`)")
        add("")
        add(f"{first['procview']['reads']} warm reads per file and daemon. Requests are decoded from the request headers "
            "the daemon reads from /dev/fuse; syscalls are those of every traced task (threads and forked helpers, "
            "background work included), the five most frequent shown.")
        add("")
        add("| File | procview requests | procview syscalls | LXCFS requests | LXCFS syscalls |")
        add("|---|---|---|---|---|")
        for name in results["files"]:
            cells = [name]
            for d in DAEMONS:
                e = st[name][d]
                cells.append(f"{e['fuse_requests_per_read']:.2f}: {_requests(e['fuse_requests'])}")
                cells.append(f"{e['syscalls_per_read']:.1f}: {_top(e['syscalls'])}")
            add("| " + " | ".join(cells) + " |")
        add("")

    prof = results.get("profile")
    if prof:
        first = next(iter(prof.values()))
        add("## Where procview's Python time goes (cProfile in a second procview daemon)")
        add("")
        add(f"{first['reads']} reads per file. cProfile slows everything down, so read the shares, not the µs. The "
            "event loop's wait for the next request (epoll) is left out. Left: the functions with the most self time; "
            "right: procview's functions by cumulative time.")
        add("")
        for name in results["files"]:
            p = prof[name]
            add(f"### {name}: {p['profiled_us_per_read']:,.0f} µs of profiled work per read")
            add("")
            add("| self time | µs/read | share | calls/read | cumulative, procview's functions | µs/read | share | calls/read |")
            add("|---|--:|--:|--:|---|--:|--:|--:|")
            rights = p["cumulative"] + [None] * max(0, len(p["self"]) - len(p["cumulative"]))
            for a, b in zip(p["self"], rights):
                cells = [f"`{a['function']}`", _f(a["us_per_read"]), f"{a['share']:.0%}", _f(a["calls_per_read"])]
                cells += ([f"`{b['function']}`", _f(b["us_per_read"]), f"{b['share']:.0%}", _f(b["calls_per_read"])]
                          if b else ["", "", "", ""])
                add("| " + " | ".join(cells) + " |")
            add("")

    conc = results.get("concurrency")
    if conc:
        add(f"## {CONCURRENT_READERS} concurrent readers, each pid 1 of its own pid namespace in its own limited cgroup, "
            "reading /proc/meminfo")
        add("")
        add("| Target | reads | seconds | reads/s | daemon CPU/read (cgroup, µs) |")
        add("|---|--:|--:|--:|--:|")
        for target, e in conc.items():
            cpu_cell = _f(e["cpu_per_read"]["cgroup_us"], 0) if "cpu_per_read" in e else "–"
            add(f"| {LABEL[target]} | {e['reads']} | {e['seconds']:.2f} | {e['reads_per_s']:,.0f} | {cpu_cell} |")
        add("")
    return "\n".join(lines)


def _requests(per_read: dict) -> str:
    order = {name: i for i, name in enumerate(_util.FUSE_ORDER)}
    items = sorted(per_read.items(), key=lambda kv: (order.get(kv[0], 99), kv[0]))
    return ", ".join(f"{k} {v:.2f}" for k, v in items if v >= 0.005) or "none"


def _top(per_read: dict, count: int = 5) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in list(per_read.items())[:count])


# =============================================================================


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=2000, help="timed samples per file and target (default 2000)")
    parser.add_argument("--warmup", type=int, default=50, help="untimed reads per file and target first (default 50)")
    parser.add_argument("--chunk", type=int, default=100, help="samples per target before switching target (default 100)")
    parser.add_argument("--cpu-reads", type=int, default=2000, help="reads per file and daemon for daemon CPU (default 2000)")
    parser.add_argument("--idle-seconds", type=float, default=2.0, help="idle time to measure background CPU (default 2)")
    parser.add_argument("--strace-reads", type=int, default=200, help="reads per file and daemon under strace (default 200)")
    parser.add_argument("--profile-reads", type=int, default=500, help="reads per file under cProfile (default 500)")
    parser.add_argument("--concurrent-reads", type=int, default=1000, help="reads per concurrent reader (default 1000)")
    parser.add_argument("--files", nargs="+", default=[name for name, _ in FILES], choices=[name for name, _ in FILES],
                        metavar="FILE", help="files to measure (default: all)")
    parser.add_argument("--json", metavar="FILE", help="write the raw results here")
    parser.add_argument("--json-samples", action="store_true", help="include every latency sample in the JSON")
    _util.add_procview_options(parser)
    parser.add_argument("--lxcfs", default="lxcfs", help="the LXCFS binary (default: lxcfs on PATH)")
    parser.add_argument("--no-pidns", action="store_true", help="readers stay in the host pid namespace")
    parser.add_argument("--skip-strace", action="store_true")
    parser.add_argument("--skip-profile", action="store_true")
    parser.add_argument("--skip-concurrency", action="store_true")
    parser.add_argument("--metrics-overhead", action="store_true",
                        help="also run a procview serve --metrics and compare it with the plain one (step 8)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temporary directory (daemon logs, traces)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    for name in ("iterations", "chunk", "cpu_reads", "strace_reads", "profile_reads", "concurrent_reads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main()
    if os.geteuid() != 0:
        print("read_latency.py: must run as root (it creates cgroups, mounts FUSE file systems and starts LXCFS)",
              file=sys.stderr)
        return 1
    lxcfs = shutil.which(args.lxcfs)
    if lxcfs is None:
        print(f"read_latency.py: {args.lxcfs} not found (Debian: apt-get install -y lxcfs)", file=sys.stderr)
        return 1
    args.lxcfs = lxcfs
    if not args.no_pidns and shutil.which("unshare") is None:
        print("read_latency.py: unshare not found (util-linux); use --no-pidns", file=sys.stderr)
        return 1

    return _util.run_and_report("read_latency.py", "daemons, mounts and cgroups", lambda stack: Bench(args, stack).run(),
                                render, args.json, log)


if __name__ == "__main__":
    sys.exit(main())
