"""KeptFiles over a real cgroup: the daemon keeps a container's counter
files open and re-reads them with pread; a cgroup removed and made anew
at the same path must show the new cgroup's numbers, never the old one's
and never an error."""

from __future__ import annotations

import subprocess
import sys

from procview import cgroups
from procview._io import KeptFiles

from .conftest import _remove_with_retry

MiB = 1024 * 1024

# Touches 64 MiB (bytes(n) would be untouched calloc'd pages), says so, waits.
HOG = "data = b'x' * (64 << 20); print('ready', flush=True); import sys; sys.stdin.read()"


def test_a_cgroup_removed_and_made_anew_is_read_afresh(sandbox):
    kept = KeptFiles(limit=64)
    hierarchies = cgroups.discover()
    hierarchies.read_cgroup_file = kept.read_in  # as the view engine does
    cg = sandbox.cgroup("kept", memory=256 * MiB)
    watched = hierarchies.cgroup(f"{sandbox.base}/kept")  # the same cgroup, read through KeptFiles
    hog = sandbox.start(cg, [sys.executable, "-c", HOG], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert hog.popen.stdout.readline().strip() == b"ready"
    used = watched.memory_usage(swap=False).memory
    assert used is not None and used >= 64 * MiB, used
    assert watched.memory_stat() is not None
    kept_before = len(kept)
    assert kept_before >= 2  # the usage file and memory.stat

    hog.popen.kill()
    hog.popen.wait()
    _remove_with_retry(cg)
    # The kept files now fail (ENODEV) and the path is gone: unknown, not
    # the old numbers.
    assert watched.memory_usage(swap=False).memory is None
    assert len(kept) < kept_before

    cg.create()
    cg.set_memory_limit(128 * MiB)
    fresh = watched.memory_usage(swap=False).memory
    assert fresh is not None and fresh < 8 * MiB, fresh  # the new, empty cgroup
    kept.close()
