"""A limit written between two opens shows at the second open.

The daemon keeps a container's limits between reads (reading them means a
file per controller and per level of the hierarchy) and watches the
directories they came from for writes (procview/inotify.py). These tests
change limits the way ``docker update`` does, by writing the cgroup's
files, and read again at once: faster than any time-based cache would
notice. Each read is its own open, through the mount, from a process that
is pid 1 of its own pid namespace in the container's cgroup."""

from __future__ import annotations

import subprocess

from procview import cgroups

from .serve_helpers import (  # noqa: F401  (fixtures: no_leftovers is autouse)
    STDLIB_PYTHON,
    TOOL_ENV,
    LineProcess,
    MiB,
    meminfo_kib,
    no_leftovers,
    procview_mount,
    serve_daemons,
)

# Reads the file named by each request line; answers its text (or "errno N").
READ_PATH = r"""
import json, sys
for line in sys.stdin:
    try:
        with open(json.loads(line)) as f:
            print(json.dumps(f.read()), flush=True)
    except OSError as e:
        print(json.dumps(f"errno {e.errno}"), flush=True)
"""


def _reader(sandbox, cg) -> LineProcess:
    argv = STDLIB_PYTHON + ["-c", READ_PATH]
    started = sandbox.start(cg, argv, pidns=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=TOOL_ENV)
    return LineProcess(started, argv)


def test_a_memory_limit_written_shows_at_the_next_open(sandbox, procview_mount):
    cg = sandbox.cgroup("container", memory=256 * MiB)
    reader = _reader(sandbox, cg)
    meminfo = procview_mount.path("proc/meminfo")
    assert meminfo_kib(reader.request(meminfo)) == 256 * 1024
    for mib in (200, 256, 180, 300, 190, 240, 210, 260):
        cg.set_memory_limit(mib * MiB)
        assert meminfo_kib(reader.request(meminfo)) == mib * 1024, f"after writing {mib} MiB"


def test_a_parents_limit_written_shows_at_the_childs_next_open(sandbox, procview_mount):
    parent = sandbox.cgroup("pod", memory=512 * MiB)
    child = sandbox.cgroup("pod/container", memory=384 * MiB)
    reader = _reader(sandbox, child)
    meminfo = procview_mount.path("proc/meminfo")
    assert meminfo_kib(reader.request(meminfo)) == 384 * 1024
    for mib, shown in ((256, 256), (448, 384), (320, 320), (1024, 384)):
        parent.set_memory_limit(mib * MiB)
        assert meminfo_kib(reader.request(meminfo)) == shown * 1024, f"after writing {mib} MiB to the parent"


def test_a_cpu_quota_written_shows_at_the_next_open(sandbox, procview_mount):
    cg = sandbox.cgroup("container", memory=256 * MiB, cpus=1)
    reader = _reader(sandbox, cg)
    online = procview_mount.path("sys/devices/system/cpu/online")
    assert reader.request(online) == "0\n"
    for cpus, shown in ((2, "0-1\n"), (1, "0\n"), (2, "0-1\n"), (0.5, "0\n")):
        cg.set_cpu_quota(cgroups.CpuQuota(int(cpus * 100000), 100000))
        assert reader.request(online) == shown, f"after a quota of {cpus} CPUs"
