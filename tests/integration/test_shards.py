"""``procview serve --shards K``: K whole daemons, their life, and which
one each container's files come from (issue 18, more than one core).

Every test starts real daemons on real FUSE mounts; the containers are
``procview run`` containers, LXCFS-style binds in namespaces of the test,
or an OCI bundle edited by ``procview-runc``'s own code."""

from __future__ import annotations

import json
import os
import signal
import subprocess

from procview.mounts import parse_mountinfo, shard_index, shard_mountpoint, top_mount, view_source

from .conftest import wait_until
from .serve_helpers import (  # noqa: F401 (fixtures)
    PROCVIEW,
    container_argv,
    live_processes,
    mounts_at,
    no_leftovers,
    procview_mounts,
    run_in_container,
    serve_daemons,
)
from .test_lifecycle import pv, root  # noqa: F401 (fixture)
from .test_reattach import NOT_CONNECTED, READER, Reads, own_limit
from .test_run import state_root  # noqa: F401 (fixture)

TIMEOUT = 300  # bounds a hang only (the cgroup2 VM emulates its CPU)


def shard_pids(daemon) -> dict[int, int]:
    """Shard index -> pid of the shards ``daemon`` (shard 0) runs now."""
    found = {}
    for pid, argv in live_processes():
        if b"--shard-index" in argv and daemon.mount.encode() + b".shards/" in b" ".join(argv):
            found[int(argv[argv.index(b"--shard-index") + 1])] = pid
    return found


def shard_mounts(daemon) -> set[str]:
    return {point for point in procview_mounts() if point.startswith(daemon.mount + ".shards/")}


def source_of(pid: int, path: str) -> str:
    with open(f"/proc/{pid}/mountinfo") as f:
        mount = top_mount(parse_mountinfo(f.read()), path)
    assert mount is not None, f"nothing mounted at {path} in pid {pid}'s namespace"
    return mount.source


def test_each_shard_is_a_whole_daemon_and_all_stop_with_shard_0(serve_daemons, sandbox):
    daemon = serve_daemons.start(args=("--shards", "3"))
    points = [shard_mountpoint(daemon.mount, i) for i in range(3)]
    assert shard_mounts(daemon) == set(points[1:]), daemon.describe()
    assert sorted(shard_pids(daemon)) == [1, 2], daemon.describe()
    # Each shard renders for whoever reads: a container bound from any of
    # them sees its own limit.
    for index, point in enumerate(points):
        cg = sandbox.cgroup(f"c{index}", memory=(200 + 8 * index) * 2**20)
        head = run_in_container(sandbox, cg, point, ["head", "-1", "/proc/meminfo"]).ok()
        assert head.out.split()[1:2] == [str((200 + 8 * index) * 1024)], f"{point}\n{head}"

    assert daemon.stop() == 0, daemon.describe()
    assert shard_pids(daemon) == {} and shard_mounts(daemon) == set(), daemon.describe()
    assert not os.path.exists(daemon.mount + ".shards"), "the shards' mount points are removed at a clean stop"


def test_a_killed_shard_is_started_again_and_its_containers_read_again(serve_daemons, sandbox, tmp_path):
    daemon = serve_daemons.start(args=("--shards", "2", "--log-level", "debug"))
    shard = shard_mountpoint(daemon.mount, 1)
    cg = sandbox.cgroup("reader", memory=224 * 2**20, cpuset={0})
    output = tmp_path / "reads"
    with open(output, "w") as out:
        sandbox.start(cg, container_argv(shard, ["sh", "-c", READER]), stdout=out, stderr=subprocess.STDOUT)
    reads = Reads(output.read_text)
    reads.wait_for(0, own_limit(224 * 1024, "0"))

    (old_pid,) = shard_pids(daemon).values()
    os.kill(old_pid, signal.SIGKILL)
    # Shard 0 sees it go, starts it again, and the new shard re-attaches
    # the container's binds of its mount; the reader sees its own values
    # again without doing anything.
    new_pid = wait_until(lambda: [p for p in shard_pids(daemon).values() if p != old_pid], timeout=TIMEOUT)[0]
    after = reads.last_number()
    reads.wait_for(after, own_limit(224 * 1024, "0"))
    assert "shard 1 (" in daemon.log() and "exited (killed by SIGKILL); starting it again" in daemon.log(), daemon.describe()
    assert new_pid != old_pid and shard_mounts(daemon) == {shard}


def test_shards_stop_when_shard_0_is_killed_and_a_new_serve_takes_the_mounts_back(serve_daemons):
    daemon = serve_daemons.start(args=("--shards", "3"))
    pids = set(shard_pids(daemon).values())
    daemon.popen.kill()
    daemon.popen.wait(timeout=TIMEOUT)
    # Each shard sees its line to shard 0 close, and unmounts and exits.
    wait_until(lambda: not (pids & {pid for pid, _ in live_processes()}), timeout=TIMEOUT)
    assert shard_mounts(daemon) == set(), daemon.describe()
    assert mounts_at(daemon.mount) == ["fuse.procview"], "shard 0's own mount is left dead, as a lone daemon's"

    again = serve_daemons.start(daemon.mount, args=("--shards", "3"))
    assert sorted(shard_pids(again)) == [1, 2] and len(shard_mounts(again)) == 2, again.describe()
    assert mounts_at(daemon.mount) == ["fuse.procview"], "the dead mount was replaced, not stacked on"


def test_after_a_crash_serve_with_fewer_shards_takes_over_the_binds_of_the_shards_it_no_longer_runs(
        serve_daemons, sandbox, tmp_path):
    daemon = serve_daemons.start(args=("--shards", "3"))
    cg = sandbox.cgroup("reader", memory=232 * 2**20, cpuset={0})
    output = tmp_path / "reads"
    with open(output, "w") as out:
        sandbox.start(cg, container_argv(shard_mountpoint(daemon.mount, 2), ["sh", "-c", READER]), stdout=out,
                      stderr=subprocess.STDOUT)
    reads = Reads(output.read_text)
    reads.wait_for(0, own_limit(232 * 1024, "0"))
    pids = set(shard_pids(daemon).values())
    daemon.popen.kill()
    daemon.popen.wait(timeout=TIMEOUT)
    wait_until(lambda: not (pids & {pid for pid, _ in live_processes()}), timeout=TIMEOUT)
    reads.wait_for(reads.last_number(), NOT_CONNECTED)

    # Two shards now: no daemon serves shard 2 again, so shard 0 binds its
    # own files over the container's dead ones.
    again = serve_daemons.start(daemon.mount, args=("--shards", "2", "--log-level", "debug"))
    reads.wait_for(reads.last_number(), own_limit(232 * 1024, "0"))
    assert "reattach" in again.log(), again.describe()


def test_procview_run_binds_each_container_from_the_shard_its_id_hashes_to(root, serve_daemons):
    daemon = serve_daemons.start(args=("--shards", "3"))
    seen = set()
    for _ in range(4):
        started = pv(root, "run", "-d", "--view", daemon.mount, "--seccomp-socket", daemon.seccomp_socket,
                     "--memory", "200M", "busybox", "sleep", "600")
        assert started.returncode == 0, started.stderr
        container = started.stdout.strip()
        try:
            (record,) = json.loads(pv(root, "inspect", container).stdout)
            expected = shard_mountpoint(daemon.mount, shard_index(container, 3))
            for path in ("/proc/meminfo", "/sys/devices/system/cpu"):
                assert source_of(record["pid"], path) == view_source(expected), (container, path)
            inside = pv(root, "exec", container, "head", "-1", "/proc/meminfo")
            assert inside.stdout.split()[1:2] == [str(200 * 1024)], inside
            seen.add(expected)
        finally:
            # Before the daemons' teardown, which waits for the listener
            # holder: it stays while a container's listener lives.
            pv(root, "rm", "-f", container)
    assert seen, "at least one container ran"


def test_procview_runc_binds_from_the_shard_of_the_container_id(serve_daemons, tmp_path):
    from procview.runtime.oci_shim import prepare_bundle

    daemon = serve_daemons.start(args=("--shards", "3"))
    # One id for each shard, found by the same hash.
    ids = {}
    for n in range(100):
        ids.setdefault(shard_index(f"ctr-{n}", 3), f"ctr-{n}")
    assert sorted(ids) == [0, 1, 2]

    class Log:
        def write(self, level, message):
            raise AssertionError(f"{level}: {message}")

    env = {"PROCVIEW_VIEW": daemon.mount, "PROCVIEW_SECCOMP_SOCKET": daemon.seccomp_socket}
    for index, container_id in ids.items():
        bundle = tmp_path / container_id
        bundle.mkdir()
        config = {"ociVersion": "1.0.2", "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                                                    {"destination": "/sys", "type": "sysfs", "source": "sysfs"}],
                  "linux": {}}
        (bundle / "config.json").write_text(json.dumps(config))
        prepare_bundle(str(bundle), Log(), env=env, container_id=container_id)
        edited = json.loads((bundle / "config.json").read_text())
        sources = {m["destination"]: m["source"] for m in edited["mounts"]}
        expected = shard_mountpoint(daemon.mount, index)
        assert sources["/proc/meminfo"] == f"{expected}/proc/meminfo", edited["mounts"]
        assert sources["/sys/devices/system/cpu"] == f"{expected}/sys/devices/system/cpu", edited["mounts"]


def test_a_shard_that_cannot_start_stops_serve_with_one_line(serve_daemons, tmp_path):
    mount = tmp_path / "view"
    blocker = f"{mount}.shards/1"
    os.makedirs(blocker)
    subprocess.run(["mount", "-t", "tmpfs", "blocker", blocker], check=True)
    try:
        daemon = serve_daemons.start(mount, args=("--shards", "2"), wait=False)
        assert daemon.popen.wait(timeout=TIMEOUT) == 1, daemon.describe()
        log = daemon.log()
        assert "shard 1" in log and "something else is mounted there (tmpfs)" in log, log
        assert "Error: shard 1 (" in log and "did not start" in log, log
        assert "Traceback" not in log, log
        assert mounts_at(blocker) == ["tmpfs"] and mounts_at(str(mount)) == [], "nothing of procview stays mounted"
        assert shard_pids(daemon) == {}
    finally:
        subprocess.run(["umount", blocker], check=True)


def test_shards_out_of_range_is_a_usage_error(tmp_path):
    for count in ("0", "65", "many"):
        result = subprocess.run([PROCVIEW, "serve", str(tmp_path / "v"), "--shards", count], capture_output=True, text=True,
                                timeout=TIMEOUT)
        assert result.returncode == 2, result
        assert "Invalid value for '--shards'" in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert not os.path.exists(tmp_path / "v"), "nothing is made for a refused command"
