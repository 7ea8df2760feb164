#!/usr/bin/env python3
"""Cost of an intercepted sysinfo(2) / sched_getaffinity(2), against the native call.

    sudo .venv/bin/python bench/syscall_latency.py [--rounds 5] [--calls 2000] [--starts 40] [--json FILE]

It starts its own ``procview serve`` (a temporary mount point and
supervisor socket) and compiles ``bench/syscall_probe.c`` statically. Each
round runs, in turn (so drift hits all alike):

- **native**: the probe on the host;
- **container, kernel answers**: the probe in ``procview run --memory 512M
  --cpus 1 --cpuset-cpus 0-1`` whose ``--seccomp-socket`` names nobody, so
  no view filter is loaded (the same container minus the supervisor);
- **container, supervisor answers**: the same with procview's supervisor.

The probe times ``--calls`` calls one by one (clock_gettime around each)
and reports median, p90, p99 and the first call; then 300 sysinfo calls
2 ms apart, each finding the supervisor parked (a lone call's latency). The supervisor's CPU time
(utime+stime from /proc/PID/stat) over the intercepted runs, divided by the
calls, is its CPU per call.

Then the start-up effect: in each kind of container, ``--starts`` runs of
``python3 -I -S -c pass`` (the host's interpreter through a read-only
``/usr`` volume; glibc's qsort makes it call sysinfo during start-up) and of
the probe's ``once`` mode (exec + one sysinfo + exit), timed from inside.

Needs root, gcc with static libc (``libc6-dev``), busybox-static.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _util import machine_description, median, percentile, process_cpu_ticks  # noqa: E402

PYTHON = sys.executable
PROCVIEW = os.path.join(os.path.dirname(PYTHON), "procview")
HOST_TOOLS = ["-v", "/usr:/usr:ro", "-v", "/usr/lib:/lib:ro", "-v", "/usr/lib64:/lib64:ro"]
LIMITS = ["--memory", "512M", "--cpus", "1", "--cpuset-cpus", "0-1"]

# Runs inside the container: times N starts of a command (ns, one per line).
STARTS = r"""
import subprocess, sys, time
argv = sys.argv[2:]
for _ in range(int(sys.argv[1])):
    start = time.perf_counter_ns()
    subprocess.run(argv, check=True)
    print(time.perf_counter_ns() - start)
"""


# Calls made one by one with a pause between them find the supervisor
# parked (no burst): the latency of a lone call, as in a process that
# calls sysinfo once at start.
SPACED_CALLS, SPACED_GAP_US = 300, 2000


def build_probe(workdir: str) -> str:
    probe = os.path.join(workdir, "syscall_probe")
    subprocess.run(["gcc", "-O2", "-static", "-o", probe, os.path.join(HERE, "syscall_probe.c")], check=True)
    return probe


class Serve:
    """``procview serve`` on a temporary mount point, with its supervisor."""

    def __init__(self, workdir: str):
        self.mount = os.path.join(workdir, "mnt")
        self.socket = os.path.join(workdir, "seccomp.sock")
        pidfile = os.path.join(workdir, "serve.pid")
        self.popen = subprocess.Popen(
            [PROCVIEW, "serve", self.mount, "--pidfile", pidfile, "--seccomp-socket", self.socket, "--log-level", "warning"]
        )
        deadline = time.monotonic() + 60
        while not os.path.exists(pidfile):
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("procview serve did not start")
            time.sleep(0.02)

    def cpu_ticks(self) -> int:
        user, system = process_cpu_ticks(self.popen.pid)
        return user + system

    def stop(self) -> None:
        self.popen.send_signal(signal.SIGTERM)
        self.popen.wait(timeout=60)


def container(serve: Serve, socket_path: str, probe: str, argv: list[str]) -> str:
    result = subprocess.run(
        [PROCVIEW, "run", "--rm", "--network", "none", *LIMITS, "--view", serve.mount, "--seccomp-socket", socket_path,
         "-v", f"{probe}:/probe:ro", *HOST_TOOLS, "busybox", *argv],
        capture_output=True, text=True, timeout=600,
    )
    if result.returncode != 0:
        raise SystemExit(f"container failed ({result.returncode}): {result.stderr}")
    return result.stdout


def probe_calls(run, probe: str, call: str, calls: int, gap_us: int = 0) -> dict:
    median_ns, p90, p99, first = (int(v) for v in run([probe, call, str(calls), str(gap_us)]).split())
    return {"median_us": median_ns / 1000, "p90_us": p90 / 1000, "p99_us": p99 / 1000, "first_us": first / 1000}


def native(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def start_times(run, starts: int, argv: list[str]) -> list[float]:
    output = run(["python3", "-I", "-S", "-c", STARTS, str(starts), *argv])
    return [int(line) / 1e6 for line in output.split()]


def summary_ms(samples: list[float]) -> dict:
    values = sorted(samples)
    return {"n": len(values), "median_ms": median(values), "p90_ms": percentile(values, 0.9), "min_ms": values[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--starts", type=int, default=40)
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (procview serve and procview run)")
    if shutil.which("gcc") is None:
        raise SystemExit("needs gcc and libc6-dev (a static probe is compiled)")

    workdir = tempfile.mkdtemp(prefix="procview-bench-syscall-")
    os.chmod(workdir, 0o755)
    serve = None
    try:
        probe = build_probe(workdir)
        serve = Serve(workdir)
        nobody = os.path.join(workdir, "nobody.sock")
        # kind -> (how to run a command there, the probe's path there)
        kinds = {
            "native": (native, probe),
            "container, kernel answers": (lambda argv: container(serve, nobody, probe, argv), "/probe"),
            "container, supervisor answers": (lambda argv: container(serve, serve.socket, probe, argv), "/probe"),
        }
        # (label, syscall, calls per round, microseconds between calls)
        patterns = [("sysinfo", "sysinfo", args.calls, 0), ("getaffinity", "getaffinity", args.calls, 0),
                    (f"sysinfo, {SPACED_GAP_US} µs apart", "sysinfo", SPACED_CALLS, SPACED_GAP_US)]
        calls: dict = {label: {kind: [] for kind in kinds} for label, *_ in patterns}
        cpu_ticks = intercepted = 0
        for round_ in range(args.rounds):
            for label, call, count, gap_us in patterns:
                for kind, (run, probe_path) in kinds.items():
                    before = serve.cpu_ticks()
                    calls[label][kind].append(probe_calls(run, probe_path, call, count, gap_us))
                    if kind.endswith("supervisor answers") and not gap_us:
                        cpu_ticks += serve.cpu_ticks() - before
                        intercepted += count
            print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)

        starts = {}
        for kind, (run, probe_path) in kinds.items():
            starts[kind] = {
                "python3 -I -S -c pass": summary_ms(start_times(run, args.starts, ["python3", "-I", "-S", "-c", "pass"])),
                "probe once (exec + 1 sysinfo)": summary_ms(start_times(run, args.starts, [probe_path, "once"])),
            }
    finally:
        if serve is not None:
            serve.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    clk_tck = os.sysconf("SC_CLK_TCK")
    results = {
        "machine": machine_description(),
        "command": " ".join(["sudo .venv/bin/python bench/syscall_latency.py", *sys.argv[1:]]),
        "calls": {
            call: {kind: _median_of_rounds(rounds) for kind, rounds in by_kind.items()} for call, by_kind in calls.items()
        },
        # Includes the daemon's other work in those seconds (FUSE reads of
        # the container's start, load sampling): an upper bound.
        "supervisor_cpu_us_per_call": cpu_ticks / clk_tck * 1e6 / intercepted if intercepted else None,
        "starts": starts,
    }
    print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


def _median_of_rounds(rounds: list[dict]) -> dict:
    """Each figure: the median over the rounds of that round's figure."""
    return {key: round(median(sorted(r[key] for r in rounds)), 2) for key in rounds[0]}


if __name__ == "__main__":
    sys.exit(main())
