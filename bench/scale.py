#!/usr/bin/env python3
"""N containers reading procview's files at once, against LXCFS in the same run.

    sudo .venv/bin/python bench/scale.py [--containers 10 100 1000] [--json FILE]

One run, on this machine:

1. ``procview serve`` and LXCFS (``lxcfs -f -l --enable-cfs``) on
   temporary mount points, each daemon in a cgroup of its own (its CPU time
   in ns).
2. For each N of ``--containers`` and each daemon (the order of the two
   alternates from one N to the next), N fresh "containers": N cgroups,
   each with a memory limit of its own (256 MiB + i MiB: a value from
   another container is detectable as wrong) and a CPU quota of 0.5 or 1.5
   CPU (so they see 1 or 2 CPUs), and in each one reader that is pid 1 of
   its own pid namespace. The readers are the children of one small C
   program (``scale_reader.c``, built with gcc), made with
   ``clone(CLONE_NEWPID)``, moved into their cgroups, then all released at
   once; each opens, reads to EOF and closes meminfo, stat, uptime and
   cpuinfo in turn through the daemon's mount, times every read and checks
   it against its own container (MemTotal, CPUs in stat and cpuinfo, an
   uptime no older than itself).
3. Per N and daemon: total reads/s, median and p99 latency, wrong values
   and errors; the daemon's VmRSS before, at its peak while the readers
   read (sampled every 50 ms; VmHWM too) and after the containers are gone
   (readers exited, cgroups removed, then ``--settle`` seconds: two of
   procview's maintenance passes); the daemon's CPU per read (its cgroup's
   cpuacct time over the reads); its open fds before and after, and how
   many of those are files of the removed cgroups (an fd pins a removed
   cgroup in the kernel until it is closed).

A markdown report goes to stdout (progress to stderr), the raw numbers to
``--json FILE``. Readers, daemons, mounts and cgroups are removed at the
end, on failure, on Ctrl-C and on SIGTERM. Needs root, gcc and ``lxcfs``
(Debian: ``apt-get install lxcfs``).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _util  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

DAEMONS = ("procview", "lxcfs")
LABEL = {"procview": "procview", "lxcfs": "LXCFS"}
SHARDED = "procview-sharded"  # --procview-shards K: procview serve --shards K
FILES = ("meminfo", "stat", "uptime", "cpuinfo")  # the order scale_reader.c reads them in

MiB = 1024 * 1024
BASE_LIMIT = 256 * MiB
CPU_PERIOD_US = 100000
CPU_QUOTAS_US = (50000, 150000)  # 0.5 and 1.5 CPU: containers see 1 and 2 CPUs (on a host with 2 or more)
RSS_SAMPLE_EVERY = 0.05


def log(message: str) -> None:
    print(f"scale: {message}", file=sys.stderr, flush=True)


BenchError = _util.BenchError


def container_limits(index: int, host_cpus: int) -> tuple[int, tuple[int, int], int]:
    """(memory limit, CPU quota, CPUs it must see) of container ``index``."""
    quota = CPU_QUOTAS_US[index % len(CPU_QUOTAS_US)]
    return BASE_LIMIT + index * MiB, (quota, CPU_PERIOD_US), min(host_cpus, math.ceil(quota / CPU_PERIOD_US))


def rounds_for(containers: int, reads: int, min_rounds: int) -> int:
    """Rounds of the four files per reader: about ``reads`` reads in all,
    at least ``min_rounds`` each."""
    return max(min_rounds, math.ceil(reads / (containers * len(FILES))))


def parse_reader_output(lines: list[str], containers: int) -> dict:
    """The ``C``/``L``/``W`` lines of scale_reader into the round's numbers."""
    starts, ends, latencies, wrong_examples = [], [], [], []
    wrong = errors = 0
    seen = set()
    for line in lines:
        kind, _, rest = line.partition(" ")
        if kind == "C":
            index, start, end, bad, failed = (int(v) for v in rest.split())
            seen.add(index)
            starts.append(start)
            ends.append(end)
            wrong += bad
            errors += failed
        elif kind == "L":
            latencies.extend(int(v) for v in rest.split()[1:])
        elif kind == "W" and len(wrong_examples) < 3:
            wrong_examples.append(rest[:240])
    if len(seen) != containers:
        raise BenchError(f"the readers reported {len(seen)} containers of {containers}")
    seconds = (max(ends) - min(starts)) / 1e9
    summary = _util.summarize_ns(latencies)
    return {
        "reads": len(latencies), "seconds": seconds, "reads_per_s": len(latencies) / seconds if seconds > 0 else None,
        "median_us": summary["median_us"], "p99_us": summary["p99_us"], "max_us": summary["max_us"],
        "wrong": wrong, "errors": errors, "wrong_examples": wrong_examples,
    }


def fds_into(pid: int, marker: str) -> int:
    """How many of ``pid``'s open fds are files whose path contains ``marker``."""
    count = 0
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return 0
    for name in names:
        try:
            if marker in os.readlink(f"/proc/{pid}/fd/{name}"):
                count += 1
        except OSError:
            continue
    return count


class RssSampler:
    """The highest VmRSS of processes (summed) while they run (a thread
    polling /proc/PID/status)."""

    def __init__(self, pids: list[int]):
        self.pids = pids
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            rss = [_util.process_memory(pid)["VmRSS_kB"] for pid in self.pids]
            if all(rss):
                self.peak_kb = max(self.peak_kb, sum(rss))
            if self._stop.wait(RSS_SAMPLE_EVERY):
                return

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


class ShardedDaemon:
    """``procview serve --shards K`` measured as one target: each container
    reads through the shard its name hashes to (``procview.mounts``, as
    ``procview run`` picks); CPU from the daemon's cgroup, which holds all
    K processes; RSS and fds summed over them."""

    def __init__(self, daemon, shards: int):
        from procview.mounts import shard_mountpoint

        self.daemon = daemon
        self.name = SHARDED
        self.shards = shards
        self.mountpoint = ":".join(shard_mountpoint(daemon.mountpoint, i) for i in range(shards))

    def mount_of(self, container: str) -> int:
        from procview.mounts import shard_index

        return shard_index(container, self.shards)

    @property
    def pids(self) -> list[int]:
        try:
            with open(f"/proc/{self.daemon.pid}/task/{self.daemon.pid}/children") as f:
                children = [int(pid) for pid in f.read().split()]
        except OSError:
            children = []
        return [self.daemon.pid] + [pid for pid in children if b"--shard-index" in _cmdline(pid)]

    def cpu(self) -> dict:
        return self.daemon.cpu()

    def memory(self) -> dict:
        readings = [_util.process_memory(pid) for pid in self.pids]
        return {key: None if any(r[key] is None for r in readings) else sum(r[key] for r in readings) for key in readings[0]}

    def check_alive(self) -> None:
        self.daemon.check_alive()
        if len(self.pids) != self.shards:
            raise BenchError(f"procview serve --shards {self.shards}: {len(self.pids)} processes: {self.daemon.log_tail()}")


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


class Readers:
    """One ``scale_reader`` and its children (one per container); killed
    with its process group on the way out."""

    def __init__(self, binary: str, mount: str, rounds: int, spec: list[tuple[int, int, int]], workdir: str):
        spec_path = os.path.join(workdir, "spec.txt")
        with open(spec_path, "w") as f:
            f.write("".join(f"{kb} {cpus} {mount}\n" for kb, cpus, mount in spec))
        self.log_path = os.path.join(workdir, "readers.log")
        with open(self.log_path, "a") as log_file:
            self.popen = subprocess.Popen([binary, mount, str(rounds), spec_path], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=log_file, text=True, start_new_session=True)

    def pids(self) -> list[int]:
        line = self.popen.stdout.readline()
        if not line.startswith("pids"):
            raise BenchError(f"scale_reader did not start its readers: {self._log_tail()}")
        return [int(p) for p in line.split()[1:]]

    def _log_tail(self) -> str:
        return _util.file_tail(self.log_path, f"exit status {self.popen.poll()}")

    def kill(self) -> None:
        _util.kill_group(self.popen)


class Bench:
    def __init__(self, args: argparse.Namespace, stack: contextlib.ExitStack):
        self.args = args
        self.stack = stack
        self.results: dict = {"rounds": []}

    def setup(self) -> None:
        args = self.args
        self.tmp = tempfile.mkdtemp(prefix="procview-bench-scale-")
        self.stack.callback(_util.remove_workdir, self.tmp, args.keep_logs, log)
        self.reader = os.path.join(self.tmp, "scale_reader")
        subprocess.run(["gcc", "-O2", "-o", self.reader, os.path.join(HERE, "scale_reader.c")], check=True)
        self.cgroups = _util.BenchCgroups(self.stack, log)
        self.host_cpus = len(os.sched_getaffinity(0))
        env = _util.procview_environment(args)
        self.mounts = {d: os.path.join(self.tmp, d) for d in DAEMONS}
        specs = {
            "procview": ([sys.executable, "-m", "procview", "serve", self.mounts["procview"], "--log-level", "warning",
                          "--no-seccomp-socket"], "fuse.procview", env),
            "lxcfs": ([args.lxcfs, "-f", "-l", "--enable-cfs", "-p", os.path.join(self.tmp, "lxcfs.pid"), self.mounts["lxcfs"]],
                      "fuse.lxcfs", None),
        }
        self.daemons: dict[str, _util.Daemon] = {}
        for name, (argv, fstype, daemon_env) in specs.items():
            cg = self.cgroups.make(f"daemon-{name}")
            daemon = _util.Daemon(name, argv, self.mounts[name], fstype, cg, self.tmp, daemon_env, log)
            self.daemons[name] = daemon
            self.stack.callback(daemon.stop)
        if args.procview_shards > 1:
            name = SHARDED
            mount = os.path.join(self.tmp, name)
            argv = [sys.executable, "-m", "procview", "serve", mount, "--log-level", "warning", "--no-seccomp-socket",
                    "--shards", str(args.procview_shards)]
            daemon = _util.Daemon(name, argv, mount, "fuse.procview", self.cgroups.make(f"daemon-{name}"), self.tmp, env, log)
            self.daemons[name] = daemon
            self.stack.callback(daemon.stop)
        for daemon in self.daemons.values():
            daemon.wait_ready()
        self.targets = {name: self.daemons[name] for name in DAEMONS}
        if args.procview_shards > 1:
            self.targets[SHARDED] = ShardedDaemon(self.daemons[SHARDED], args.procview_shards)
        log("daemons ready: " + ", ".join(f"{d.name} pid {d.pid}" for d in self.daemons.values()))
        self.results["setup"] = {
            "cgroup_layout": self.cgroups.layout,
            "host_cpus": self.host_cpus,
            "daemon_pids": {name: d.pid for name, d in self.daemons.items()},
            "procview_src": os.path.abspath(args.procview_src) if args.procview_src else REPO,
            "procview_env": dict(args.procview_env),
            "settle_s": args.settle,
            "start": {name: d.memory() for name, d in self.daemons.items()},
            "procview_shards": args.procview_shards,
        }

    def round(self, containers: int, target: str) -> dict:
        """N fresh containers reading through one daemon, then gone."""
        args, daemon = self.args, self.targets[target]
        rounds = rounds_for(containers, args.reads, args.min_rounds)
        group = f"n{containers}-{target}"
        log(f"{containers} containers reading through {target}: {rounds} rounds of {len(FILES)} files each")
        before = daemon.memory()
        parent = self.cgroups.make(group)
        made, spec = [], []
        for index in range(containers):
            memory, quota, cpus = container_limits(index, self.host_cpus)
            made.append(self.cgroups.make(f"{group}/c{index}", memory, quota))
            mount = daemon.mount_of(f"{group}-c{index}") if isinstance(daemon, ShardedDaemon) else 0
            spec.append((memory // 1024, cpus, mount))
        readers = Readers(self.reader, daemon.mountpoint, rounds, spec, self.tmp)
        try:
            pids = readers.pids()
            for cg, pid in zip(made, pids):
                cg.add_process(pid)
            with RssSampler(getattr(daemon, "pids", None) or [daemon.pid]) as sampler:
                cpu_before = daemon.cpu()
                lines = self._release_and_collect(readers)
                cpu_after = daemon.cpu()
            peak = daemon.memory()
        finally:
            readers.kill()
        daemon.check_alive()
        entry = {"containers": containers, "target": target, "rounds": rounds}
        entry.update(parse_reader_output(lines, containers))
        entry["cpu_per_read_us"] = _util.cpu_delta(cpu_before, cpu_after, entry["reads"])["cgroup_us"]
        left = self.cgroups.remove(made + [parent])
        if left:
            raise BenchError(f"{len(left)} cgroups of {group} could not be removed")
        time.sleep(args.settle)
        after = daemon.memory()
        entry["memory"] = {"before": before, "peak_rss_kB": sampler.peak_kb, "peak": peak, "after": after}
        entry["fds_on_removed_cgroups"] = sum(fds_into(pid, f"{self.cgroups.base}/{group}/")
                                              for pid in getattr(daemon, "pids", None) or [daemon.pid])
        log(f"  {entry['reads_per_s']:,.0f} reads/s, median {entry['median_us']:.0f} µs, p99 {entry['p99_us']:.0f} µs, "
            f"{entry['wrong']} wrong, {entry['errors']} errors; RSS {before['VmRSS_kB']} -> {sampler.peak_kb} -> "
            f"{after['VmRSS_kB']} kB, fds {before['fds']} -> {after['fds']}")
        return entry

    @staticmethod
    def _release_and_collect(readers: Readers) -> list[str]:
        readers.popen.stdin.write("go\n")
        readers.popen.stdin.close()
        lines = []
        for line in readers.popen.stdout:
            line = line.rstrip("\n")
            if line.startswith("end"):
                if line != "end 0":
                    raise BenchError(f"scale_reader: {line.split()[1]} readers did not exit cleanly: {readers._log_tail()}")
                return lines
            lines.append(line)
        raise BenchError(f"scale_reader ended without its results: {readers._log_tail()}")

    def run(self) -> dict:
        args = self.args
        self.results["meta"] = _util.run_meta(__file__, args.argv, REPO, args.lxcfs)
        start = time.monotonic()
        self.setup()
        targets = tuple(self.targets)
        for step, containers in enumerate(args.containers):
            order = targets if step % 2 == 0 else targets[::-1]
            for target in order:
                self.results["rounds"].append(self.round(containers, target))
        self.results["end"] = {name: d.memory() for name, d in self.daemons.items()}
        self.results["meta"]["load_after"] = _util.load_snapshot()
        self.results["meta"]["seconds"] = round(time.monotonic() - start, 1)
        return self.results


# =============================================================================
# The report.
# =============================================================================


def _mib(kb) -> str:
    return "–" if kb is None else f"{kb / 1024:.1f}"


def _f(value, digits=0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _label(target: str, setup: dict) -> str:
    if target == SHARDED:
        return f"procview, {setup['procview_shards']} shards"
    return LABEL[target]


def render(results: dict) -> str:
    meta, setup = results["meta"], results["setup"]
    lines: list[str] = ["# procview with N containers reading at once", ""]
    source = "the checkout" if setup["procview_src"] == REPO else f"`{setup['procview_src']}`"
    if setup.get("procview_env"):
        source += " with " + " ".join(f"`{k}={v}`" for k, v in setup["procview_env"].items())
    lines += _util.meta_lines(meta, setup["cgroup_layout"],
                              f"procview serve from {source} ({_util.checkout_description(meta)}); "
                              f"LXCFS {meta['lxcfs_version']} (`lxcfs -f -l --enable-cfs`)")
    lines.append(f"- Containers: cgroups with memory limits 256 MiB + i MiB and CPU quotas of 0.5 / 1.5 CPU (seen as "
                 f"1 / 2 of {setup['host_cpus']} CPUs), one reader in each, pid 1 of its own pid namespace; each reads "
                 "meminfo, stat, uptime and cpuinfo in turn (open + read to EOF + close) and checks each against its "
                 "own container. \"After\": readers exited, cgroups removed, then "
                 f"{setup['settle_s']:g} s.")
    lines += ["", "| N | daemon | reads | reads/s | median µs | p99 µs | wrong | errors | CPU/read µs "
              "| RSS MiB before / peak / after | VmHWM MiB | fds before → after | fds on removed cgroups |",
              "|--:|---|--:|--:|--:|--:|--:|--:|--:|---|--:|---|--:|"]
    for e in results["rounds"]:
        m = e["memory"]
        lines.append(
            f"| {e['containers']:,} | {_label(e['target'], setup)} | {e['reads']:,} | {_f(e['reads_per_s'])} | {_f(e['median_us'])} "
            f"| {_f(e['p99_us'])} | {e['wrong']} | {e['errors']} | {_f(e['cpu_per_read_us'])} "
            f"| {_mib(m['before']['VmRSS_kB'])} / {_mib(m['peak_rss_kB'])} / {_mib(m['after']['VmRSS_kB'])} "
            f"| {_mib(m['peak']['VmHWM_kB'])} | {m['before']['fds']} → {m['after']['fds']} | {e['fds_on_removed_cgroups']} |")
    lines.append("")
    by_n: dict = {}
    for e in results["rounds"]:
        by_n.setdefault(e["containers"], {})[e["target"]] = e
    verdicts = []
    for n, pair in by_n.items():
        if "procview" in pair and "lxcfs" in pair:
            ratio = pair["procview"]["reads_per_s"] / pair["lxcfs"]["reads_per_s"]
            verdict = f"N = {n:,}: procview {ratio:.2f}× LXCFS's reads/s"
            if SHARDED in pair:
                sharded = pair[SHARDED]["reads_per_s"] / pair["lxcfs"]["reads_per_s"]
                verdict += f" ({setup['procview_shards']} shards: {sharded:.2f}×)"
            verdicts.append(verdict)
    wrong = sum(e["wrong"] for e in results["rounds"])
    lines.append("; ".join(verdicts) + f". Wrong values in all: {wrong}.")
    for e in results["rounds"]:
        for example in e["wrong_examples"]:
            lines.append(f"- wrong ({_label(e['target'], setup)}, N = {e['containers']}): `{example}`")
    lines.append("")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--containers", type=int, nargs="+", default=[10, 100, 1000], metavar="N",
                        help="numbers of containers, one round each per daemon (default 10 100 1000)")
    parser.add_argument("--reads", type=int, default=8000, help="reads per round in all, about (default 8000)")
    parser.add_argument("--min-rounds", type=int, default=5, help="rounds of the four files per reader, at least (default 5)")
    parser.add_argument("--settle", type=float, default=12.0,
                        help="seconds after the containers are gone before the daemons' RSS and fds are read (default 12: "
                             "two of procview's maintenance passes)")
    parser.add_argument("--json", metavar="FILE", help="write the raw results here")
    _util.add_procview_options(parser)
    parser.add_argument("--lxcfs", default="lxcfs", help="the LXCFS binary (default: lxcfs on PATH)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temporary directory (daemon logs)")
    parser.add_argument("--procview-shards", type=int, default=1, metavar="K",
                        help="also measure procview serve --shards K, each container reading through the shard its "
                             "name hashes to (default 1: not measured)")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if any(n < 1 or n > 10000 for n in args.containers):
        parser.error("--containers: each N must be between 1 and 10000")
    if not 1 <= args.procview_shards <= 64:
        parser.error("--procview-shards: K must be between 1 and 64")
    if args.reads < 1 or args.min_rounds < 1 or args.settle < 0:
        parser.error("--reads and --min-rounds must be at least 1, --settle at least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("scale.py: must run as root (it creates cgroups, pid namespaces and FUSE mounts, and starts LXCFS)",
              file=sys.stderr)
        return 1
    for tool, hint in ((args.lxcfs, "apt-get install -y lxcfs"), ("gcc", "apt-get install -y gcc")):
        if shutil.which(tool) is None:
            print(f"scale.py: {tool} not found ({hint})", file=sys.stderr)
            return 1
    args.lxcfs = shutil.which(args.lxcfs)
    return _util.run_and_report("scale.py", "readers, daemons, mounts and cgroups", lambda stack: Bench(args, stack).run(),
                                render, args.json, log)


if __name__ == "__main__":
    sys.exit(main())
