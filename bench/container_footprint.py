"""What the view engine keeps per container, in Python's small objects.

``bench/scale.py`` shows that the daemon's RSS after 1,000 containers have
come and gone stays above its RSS after 100 (docs/performance.md, "Not yet
flat"): Python's small-object allocator keeps a 1 MiB arena as long as one
object in it lives, so the more small objects a burst of containers needs
at once, the more arenas later objects can keep. This measures that need
directly, without FUSE, LXCFS or readers: N fresh containers (cgroups with
limits, each with a process that is pid 1 of its own pid namespace), one
``ViewEngine`` in this process, every container's files (meminfo, stat,
uptime and cpuinfo; ``--files`` chooses others, e.g. loadavg) rendered
twice (the second time as a reader coming back finds its state), and
tracemalloc's count of what is still allocated (after a full garbage
collection, which also empties the free lists of tuples, floats and dicts
that keep freed objects for reuse), by size: blocks of at most
512 bytes (pymalloc's) and larger ones (``malloc``'s, which glibc gives back
at the daemon's maintenance pass). Then the containers go, the engine's
maintenance runs, and what is left is counted again (it should be nothing).

    sudo .venv/bin/python bench/container_footprint.py --containers 1000 [--top 25] [--files NAMES]

The numbers are a property of the code, not of the machine's load, so one
run is enough to compare two versions (``--procview-src DIR``: measure
another source tree, e.g. ``git archive`` of a commit).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import subprocess
import sys
import time
import tracemalloc

import _util

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The files read by default, and those ``--files`` may add: each keeps
# its own per-container state in the engine (loadavg: the load tracker).
FILES = ("meminfo", "stat", "uptime", "cpuinfo")
MORE_FILES = ("loadavg", "swaps", "diskstats")
SMALL = 512  # pymalloc serves requests up to this size


def log(message: str) -> None:
    print(f"container_footprint: {message}", file=sys.stderr, flush=True)


def start_container_init(cg) -> tuple[subprocess.Popen, int]:
    """A ``sleep`` that is pid 1 of a new pid namespace, in cgroup ``cg``;
    returns the ``unshare`` that waits for it and the sleep's host pid."""
    popen = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", "sleep", "600"], start_new_session=True)
    children = f"/proc/{popen.pid}/task/{popen.pid}/children"
    for _ in range(2000):
        with open(children) as f:
            text = f.read().split()
        if text:
            init = int(text[0])
            cg.add_process(init)
            return popen, init
        time.sleep(0.001)
    raise _util.BenchError("unshare did not start its child within 2 s")


def sizes(snapshot: tracemalloc.Snapshot) -> tuple[int, int]:
    """(bytes in blocks of at most SMALL bytes, bytes in larger blocks)."""
    small = large = 0
    for trace in snapshot.traces:
        if trace.size <= SMALL:
            small += trace.size
        else:
            large += trace.size
    return small, large


def top_sites(after: tracemalloc.Snapshot, before: tracemalloc.Snapshot, per: int, count: int) -> list[dict]:
    """The allocation sites that grew most (small and larger blocks), per container."""
    stats = after.compare_to(before, "lineno")
    rows = []
    for stat in stats[:count]:
        frame = stat.traceback[0]
        rows.append({"site": f"{_short(frame.filename)}:{frame.lineno}", "bytes_per_container": stat.size_diff / per,
                     "blocks_per_container": stat.count_diff / per})
    return rows


def _short(filename: str) -> str:
    for marker in ("/procview/", "/trio/", "/lib/python3"):
        if marker in filename:
            return filename[filename.index(marker) + 1:]
    return filename


def measure(args, stack: contextlib.ExitStack) -> dict:
    from procview.engine import ViewEngine
    from scale import container_limits

    started = time.monotonic()
    meta = _util.run_meta(__file__, args.argv, REPO, "true")
    del meta["lxcfs_version"]  # no LXCFS in this one
    cgroups = _util.BenchCgroups(stack, log)
    meta["cgroup_layout"] = cgroups.layout
    meta["procview_src"] = args.procview_src
    host_cpus = os.cpu_count() or 1
    log(f"{args.containers} containers")
    made, inits = [], []
    for index in range(args.containers):
        memory, quota, _cpus = container_limits(index, host_cpus)
        cg = cgroups.make(f"c{index}", memory, quota)
        made.append(cg)
        popen, init = start_container_init(cg)
        stack.callback(_util.kill_group, popen)
        inits.append((popen, init))

    engine = ViewEngine()
    paths = [f"proc/{name}" for name in args.files]
    # The engine's tables and the host's kept files exist before any
    # container reads: one warm-up render as the host.
    for path in paths:
        engine.render(path, os.getpid())
    tracemalloc.start()
    gc.collect()
    before = tracemalloc.take_snapshot()
    for _ in range(2):
        for _popen, init in inits:
            for path in paths:
                engine.render(path, init)
    gc.collect()
    peak = tracemalloc.take_snapshot()
    tracked = engine.tracked_containers()
    n = args.containers
    (small0, large0), (small1, large1) = sizes(before), sizes(peak)
    top = top_sites(peak, before, n, args.top)
    del peak  # a snapshot is itself traced: not to be counted as left
    for popen, _init in inits:
        _util.kill_group(popen)
    left = cgroups.remove(made)
    if left:
        raise _util.BenchError(f"{len(left)} cgroups could not be removed")
    # A killed init is reaped by the host's init, not by us: until then
    # its /proc/PID is there and the engine's kept /proc/PID/stat with it
    # (a busy machine showed ~1,000 kept files "left" now and then).
    wait_until_gone([init for _popen, init in inits])
    time.sleep(engine.GONE_CHECK_AFTER)
    engine.maintain()
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    small2, large2 = sizes(after)
    meta["load_after"] = _util.load_snapshot()
    meta["seconds"] = round(time.monotonic() - started, 1)
    return {
        "meta": meta, "containers": n, "tracked": tracked, "files": list(args.files),
        "small_bytes_per_container": (small1 - small0) / n, "large_bytes_per_container": (large1 - large0) / n,
        "small_bytes_left": small2 - small0, "large_bytes_left": large2 - large0,
        "top": top,
    }


def wait_until_gone(pids: list[int], timeout: float = 10.0) -> None:
    """Wait until no /proc/PID of ``pids`` is left (reaped), at most
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while any(os.path.exists(f"/proc/{pid}") for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def render(results: dict) -> str:
    meta, n = results["meta"], results["containers"]
    lines = ["# What the view engine keeps per container", ""]
    source = f"`{meta['procview_src']}`" if meta["procview_src"] else _util.checkout_description(meta)
    lines += _util.meta_lines(meta, meta["cgroup_layout"], f"procview's ViewEngine from {source}, in the benchmark's process")
    lines += [
        f"- {n:,} containers, each read twice ({', '.join(results['files'])}); {results['tracked']:,} tracked",
        "",
        "| per container | small blocks (≤ 512 B, pymalloc) | larger blocks (malloc) |",
        "|---|--:|--:|",
        f"| while tracked | {results['small_bytes_per_container']:,.0f} B | {results['large_bytes_per_container']:,.0f} B |",
        f"| after they are gone (all {n:,} together) | {results['small_bytes_left']:,} B | {results['large_bytes_left']:,} B |",
        "",
        "| allocation site (small and large) | bytes per container | blocks per container |",
        "|---|--:|--:|",
    ]
    lines += [f"| `{row['site']}` | {row['bytes_per_container']:,.0f} | {row['blocks_per_container']:.1f} |"
              for row in results["top"]]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--containers", type=int, default=1000, metavar="N", help="how many containers (default 1000)")
    parser.add_argument("--top", type=int, default=25, help="allocation sites listed (default 25)")
    parser.add_argument("--files", default=",".join(FILES), metavar="NAMES",
                        help=f"the /proc files read, comma-separated (default {','.join(FILES)}; "
                             f"also {', '.join(MORE_FILES)})")
    parser.add_argument("--json", metavar="FILE", help="write the raw results here")
    parser.add_argument("--procview-src", metavar="DIR", help="measure procview from this source tree")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if not 1 <= args.containers <= 10000:
        parser.error("--containers: N must be between 1 and 10000")
    args.files = [name.strip() for name in args.files.split(",") if name.strip()]
    unknown = [name for name in args.files if name not in FILES + MORE_FILES]
    if unknown or not args.files:
        parser.error(f"--files: not one of {', '.join(FILES + MORE_FILES)}: {', '.join(unknown) or '(none given)'}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("container_footprint.py: must run as root (it creates cgroups and pid namespaces)", file=sys.stderr)
        return 1
    if args.procview_src:
        sys.path.insert(0, os.path.abspath(args.procview_src))
    return _util.run_and_report("container_footprint.py", "containers and cgroups", lambda stack: measure(args, stack),
                                render, args.json, log)


if __name__ == "__main__":
    sys.exit(main())
