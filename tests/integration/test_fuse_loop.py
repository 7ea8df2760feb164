"""The daemon's request loop (procview/fuse_loop.py) under readers in
several containers at once: every read is its own container's, and the
loop really reads queued requests without a pass through trio's scheduler
(if a pyfuse3 update made the replacement inert, the count says so)."""

from __future__ import annotations

import json
import re
import subprocess

from .serve_helpers import (  # noqa: F401  (fixtures: no_leftovers is autouse)
    STDLIB_PYTHON,
    TOOL_ENV,
    MiB,
    no_leftovers,
    procview_mount,
    serve_daemons,
)

# Reads meminfo and uptime through the mount READS times each, after a
# line on stdin (so all readers start together); prints the MemTotal
# values it saw (kB, counted) and the number of uptime texts that did not
# parse.
READER = r"""
import collections, json, sys
mount, reads = sys.argv[1], int(sys.argv[2])
sys.stdin.readline()
totals, bad_uptime = collections.Counter(), 0
for _ in range(reads):
    with open(mount + "/proc/meminfo") as f:
        totals[f.read().split("\n", 1)[0].split()[1]] += 1
    with open(mount + "/proc/uptime") as f:
        parts = f.read().split()
    if len(parts) != 2 or float(parts[0]) < 0:
        bad_uptime += 1
print(json.dumps({"totals": totals, "bad_uptime": bad_uptime}), flush=True)
"""

READS = 400
LIMITS_MIB = (192, 224, 256)


def test_readers_in_three_containers_at_once_each_see_their_own(sandbox, procview_mount):
    readers = []
    for index, mib in enumerate(LIMITS_MIB):
        cg = sandbox.cgroup(f"reader{index}", memory=mib * MiB, cpus=1)
        started = sandbox.start(cg, STDLIB_PYTHON + ["-c", READER, procview_mount.mount, str(READS)], pidns=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=TOOL_ENV, text=True)
        readers.append((mib, started.popen))
    for _mib, popen in readers:
        popen.stdin.write("go\n")
        popen.stdin.flush()
    for mib, popen in readers:
        out, _ = popen.communicate(timeout=120)
        assert popen.returncode == 0, out
        seen = json.loads(out)
        assert seen == {"totals": {str(mib * 1024): READS}, "bad_uptime": 0}, f"the {mib} MiB container read {seen}"

    assert procview_mount.stop() == 0
    counts = re.search(r"requests: (\d+) read as they came, (\d+) after a wait in trio \(trio's I/O (\w+ ?\w*)\)",
                       procview_mount.log())
    assert counts, f"no request count in the daemon's log:\n{procview_mount.log()}"
    queued, waited, trio_io = int(counts[1]), int(counts[2]), counts[3]
    assert trio_io == "watched", "trio's epoll fd was not found: other tasks wait longer during reads"
    # 3 readers x 400 x 2 files x 4 requests each (OPEN, READ, READ at EOF,
    # RELEASE): with three readers and the RELEASE of each close queued as
    # the next OPEN comes, a share of them is waiting when the loop asks.
    assert queued + waited >= len(LIMITS_MIB) * READS * 2 * 4
    assert queued > 0, "the replaced wait never found a queued request: is pyfuse3's hook still used?"
