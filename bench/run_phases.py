#!/usr/bin/env python3
"""Where the time of one `procview run --rm --no-view busybox true` goes.

    sudo .venv/bin/python bench/run_phases.py [--runs 20] [--json FILE]

Each run is traced with ``strace -f --seccomp-bpf`` on a handful of marker
syscalls only (execve, clone, unshare, write, mkdir, rmdir, exit_group), so
the tracing costs little: the total stays close to ``run_latency.py``'s.
From the markers, per run:

- start -> records: the interpreter's start, the imports, the options (up
  to the first mkdir, the record store's);
- -> fork: the record, the image, the seccomp program, the bundle, the
  cgroup, up to ``unshare(CLONE_NEWPID|CLONE_NEWTIME)`` right before the fork;
- fork -> go: the parent writes the cgroup's limits while pid 1 sets up its
  namespaces and root filesystem, until the parent writes "g";
- go -> exec: pid 1 joins the cgroup, pivot_root, masked paths, the command's
  process confines itself, until ``execve("/bin/true")``;
- exec -> exit: the command; exit -> cleanup: pid 1's exit and teardown,
  until the first rmdir; cleanup -> end: cgroups, bundle, record, and the
  process's own exit.

Prints the median of each phase over the runs. Needs root and strace.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

PYTHON = sys.executable
MARKERS = "execve,clone,write,exit_group,unshare,rmdir,mkdir"
PHASES = ("records", "fork", "go", "exec", "exit", "cleanup", "end")


def phases_of(trace: str) -> dict[str, float]:
    """Seconds from the start to each marker, read from one strace log."""
    lines = trace.splitlines()
    main, start = lines[0].split()[0], float(lines[0].split()[1])
    marks: dict[str, float] = {}
    for line in lines:
        pid, at = line.split()[0], float(line.split()[1]) - start

        def first(name: str) -> None:
            marks.setdefault(name, at)

        if pid == main and "mkdir(" in line:
            first("records")
        elif pid == main and "unshare(CLONE_NEWTIME" in line:
            first("fork")
        elif pid == main and '"g", 1' in line:
            first("go")
        elif 'execve("/bin/true"' in line:
            first("exec")
        elif pid != main and "exit_group" in line:
            first("exit")
        elif pid == main and "rmdir(" in line:
            first("cleanup")
        elif pid == main and "+++ exited" in line:
            first("end")
    missing = [name for name in PHASES if name not in marks]
    if missing:
        raise RuntimeError(f"markers not found in the trace: {', '.join(missing)}")
    return marks


def one_run(log: str) -> dict[str, float]:
    subprocess.run(["strace", "-f", "--seccomp-bpf", "-ttt", "-e", f"trace={MARKERS}", "-o", log,
                    PYTHON, "-m", "procview", "run", "--rm", "--no-view", "--network", "none", "busybox", "true"],
                   check=True, stdout=subprocess.DEVNULL,
                   # In-process: a fork server's runner is not the traced process's child.
                   env=dict(os.environ, PROCVIEW_FORKSERVER_SOCKET=""))
    with open(log) as f:
        return phases_of(f.read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--json", help="write every run's marks here")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run_phases.py: needs root (procview run does)")
    with tempfile.TemporaryDirectory() as scratch:
        one_run(os.path.join(scratch, "warm-up.log"))
        runs = [one_run(os.path.join(scratch, "run.log")) for _ in range(args.runs)]
    print(f"procview run --rm --no-view busybox true, {args.runs} runs, median of each phase:\n")
    print("| phase | ms |\n|---|--:|")
    previous = None
    for name in PHASES:
        median = statistics.median(run[name] - (run[previous] if previous else 0.0) for run in runs)
        print(f"| {previous or 'start'} → {name} | {median * 1e3:.1f} |")
        previous = name
    print(f"| total | {statistics.median(run['end'] for run in runs) * 1e3:.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(runs, f, indent=1)


if __name__ == "__main__":
    main()
