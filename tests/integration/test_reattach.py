"""Surviving a restart of ``procview serve`` (issue 17, part 1): containers
that bound the view's files read them again once a new daemon is up on the
same mount point, without a restart of the container.

Each test starts a daemon, containers that bind its files and read them in
a loop, kills the daemon with SIGKILL (the reads then fail with ENOTCONN),
starts a new one on the same mount point, and waits (the timeout only bounds
a hang) until the container's reads succeed again with its own limits:

- a detached ``procview run`` container;
- a runc container whose ``config.json`` binds the view LXCFS-style (one
  file read-only, the whole ``sys/devices/system/cpu`` directory);
- namespaces the repair must leave alone: a tmpfs file bound over the
  view's bind (a user's mount on top: not touched), and binds of another
  daemon of the same mount point that answer (its own namespace, and a
  container of it): never entered, as the new daemon's debug log shows.
"""

from __future__ import annotations

import json
import os
import re
import subprocess

from .serve_helpers import (  # noqa: F401 (fixtures)
    MEMINFO_FIRST_LINE,
    MiB,
    PROCVIEW,
    no_leftovers,
    serve_daemons,
    start_python_in_container,
    wait_until,
)
from .test_forkserver import ForkServer
from .test_lifecycle import pv, root  # noqa: F401 (fixture)
from .test_oci_shim import runc  # noqa: F401 (fixture)
from .test_run import state_root  # noqa: F401 (fixture)

TIMEOUT = 300  # bounds a hang only (the cgroup2 VM emulates its CPU)
DEBUG = ("--log-level", "debug")

# A reader loop for busybox sh: one line per round, numbered, with the first
# line of /proc/meminfo and the CPUs /sys/devices/system/cpu/online lists, or
# the errors.
READER = r"""
i=0
while :; do
  i=$((i+1))
  if m=$(head -1 /proc/meminfo 2>&1) && c=$(cat /sys/devices/system/cpu/online 2>&1); then
    echo "read $i ok $m | online $c"
  else
    echo "read $i failed: $m $c"
  fi
  sleep 0.2
done
"""


class Reads:
    """The reader's output so far, from ``text()`` (a log or a file)."""

    def __init__(self, text):
        self.text = text

    def lines(self) -> list[tuple[int, str]]:
        found = re.findall(r"^read (\d+) (.*)$", self.text(), re.M)
        return [(int(number), rest) for number, rest in found]

    def last_number(self) -> int:
        lines = self.lines()
        return lines[-1][0] if lines else 0

    def after(self, number: int, pattern: str) -> str | None:
        """The first read after ``number`` that matches ``pattern``."""
        return next((rest for n, rest in self.lines() if n > number and re.search(pattern, rest)), None)

    def wait_for(self, number: int, pattern: str) -> str:
        try:
            return wait_until(lambda: self.after(number, pattern), timeout=TIMEOUT, interval=0.2)
        except AssertionError:
            raise AssertionError(f"no read after #{number} matched {pattern!r}; the reads:\n{self.text()[-3000:]}") from None


def own_limit(kib: int, online: str) -> str:
    return rf"ok MemTotal:\s+{kib} kB \| online {online}$"


NOT_CONNECTED = r"failed: .*Transport endpoint is not connected"


def kill_9(daemon) -> None:
    daemon.popen.kill()
    daemon.popen.wait(timeout=TIMEOUT)


def terminate(daemon) -> None:
    assert daemon.stop() == 0, daemon.describe()


def restart(serve_daemons, dead, args=()) -> object:
    """A new daemon on ``dead``'s mount point and supervisor socket, as a
    service manager would start it."""
    return serve_daemons.start(dead.mount, args=("--seccomp-socket", dead.seccomp_socket, *args))


def mount_table(pid: int) -> str:
    with open(f"/proc/{pid}/mountinfo") as f:
        return f.read()


def top_at(pid: int, path: str):
    from procview.mounts import parse_mountinfo, top_mount

    return top_mount(parse_mountinfo(mount_table(pid)), path)


def namespace_of(pid: int) -> int:
    return os.stat(f"/proc/{pid}/ns/mnt").st_ino


# -- procview run ------------------------------------------------------------------------------


def test_a_procview_run_container_reads_its_view_again_after_each_restart(root, serve_daemons):
    daemon = serve_daemons.start()
    started = pv(root, "run", "-d", "--view", daemon.mount, "--seccomp-socket", daemon.seccomp_socket,
                 "--memory", "256M", "--cpus", "1", "busybox", "sh", "-c", READER)
    assert started.returncode == 0, started.stderr
    container = started.stdout.strip()
    try:
        reads = Reads(lambda: pv(root, "logs", container).stdout)
        reads.wait_for(0, own_limit(256 * 1024, "0"))
        (record,) = json.loads(pv(root, "inspect", container).stdout)
        inode = namespace_of(record["pid"])

        # A crash, then a clean stop: both leave the binds dead; each new daemon
        # repairs the binds of the one before (the second time, binds it made).
        for stop in (kill_9, terminate):
            stop(daemon)
            reads.wait_for(reads.last_number(), NOT_CONNECTED)
            daemon = restart(serve_daemons, daemon)
            reads.wait_for(reads.last_number(), own_limit(256 * 1024, "0"))

            repaired = wait_until(lambda: _repair_lines(daemon.log(), inode), timeout=TIMEOUT)  # logged once the child is done
            assert len(repaired) == 1, f"one line per repaired namespace\n{daemon.describe()}"
            assert re.search(r"\(pid \d+ \(\S+\), cgroup /\S+\)", repaired[0]), f"the line names the container: {repaired[0]}"
            assert sorted(_repaired_paths(daemon.log(), inode)) == sorted(
                [f"/proc/{name}" for name in ("meminfo", "cpuinfo", "stat", "uptime", "loadavg", "swaps", "diskstats")]
                + ["/sys/devices/system/cpu", "/sys/devices/system/node"]), repaired[0]
    finally:
        # Before the daemons' teardown: the listener holder stays as long
        # as a container's listener lives, and the teardown checks it left.
        pv(root, "rm", "-f", container)


def test_everything_else_keeps_working_while_the_daemon_is_down_and_after(root, serve_daemons, tmp_path, monkeypatch):
    """Issue 17, part 4: a detached container and its monitor, ``ps``,
    ``exec``, ``logs``, ``stop`` and the fork server need no daemon, and a
    new daemon changes nothing for them but the view coming back."""
    daemon = serve_daemons.start()
    server = ForkServer(str(tmp_path / "forkserver.sock"))
    view = ("--view", daemon.mount, "--seccomp-socket", daemon.seccomp_socket)
    container = None
    try:
        assert "listening" in server.proc.stderr.readline()
        monkeypatch.setenv("PROCVIEW_FORKSERVER_SOCKET", server.socket_path)
        started = pv(root, "run", "-d", *view, "--memory", "256M", "busybox", "sh", "-c",
                     "echo up; trap 'echo got TERM; exit 3' TERM; while :; do sleep 0.1; done")
        assert started.returncode == 0, started.stderr
        container = started.stdout.strip()
        wait_until(lambda: "up" in pv(root, "logs", container).stdout, timeout=TIMEOUT)

        kill_9(daemon)
        assert container[:12] in pv(root, "ps").stdout
        exec_while_down = pv(root, "exec", container, "echo", "exec works")
        assert (exec_while_down.returncode, exec_while_down.stdout) == (0, "exec works\n"), exec_while_down.stderr

        daemon = restart(serve_daemons, daemon)
        wait_until(lambda: re.search(r"MemTotal:\s+262144 kB",
                                     pv(root, "exec", container, "head", "-1", "/proc/meminfo").stdout), timeout=TIMEOUT)
        # A new container, run by a runner of the same fork server (seen
        # while it waits for its stdin), gets the new view.
        fresh = subprocess.Popen([PROCVIEW, "run", "--root", root, "-i", "--rm", *view, "--memory", "128M", "--cpus", "1",
                                  "busybox", "sh", "-c", "read go; head -1 /proc/meminfo; free -m | awk '/^Mem:/{print $2}'; nproc"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_until(lambda: server.runners(), timeout=TIMEOUT)
        finally:
            out, err = fresh.communicate("go\n", timeout=TIMEOUT)
        assert fresh.returncode == 0, err
        assert re.fullmatch(r"MemTotal:\s+131072 kB\n128\n1\n", out), out

        stopped = pv(root, "stop", container)
        assert stopped.returncode == 0, stopped.stderr
        assert "got TERM" in pv(root, "logs", container).stdout
    finally:
        if container:
            pv(root, "rm", "-f", container)
        server.stop()


# -- runc with LXCFS-style binds ----------------------------------------------------------------


def test_a_runc_container_with_lxcfs_style_binds_reads_again_after_kill_9(runc, serve_daemons, tmp_path):
    first = serve_daemons.start()
    bundle = runc.bundle(["sh", "-c", READER])
    config = json.loads((bundle / "config.json").read_text())
    # What `docker run -v VIEW/proc/meminfo:/proc/meminfo:ro -v VIEW/sys/devices/system/cpu:/sys/devices/system/cpu`
    # puts in config.json.
    config["mounts"] += [
        {"destination": "/proc/meminfo", "type": "bind", "source": first.path("proc/meminfo"), "options": ["rbind", "ro"]},
        {"destination": "/sys/devices/system/cpu", "type": "bind", "source": first.path("sys/devices/system/cpu"),
         "options": ["rbind", "rw"]},
    ]
    (bundle / "config.json").write_text(json.dumps(config))
    name = f"procview-pytest-reattach-{os.getpid()}"
    runc.ids.append(name)
    output = tmp_path / "reader.out"
    with open(output, "w") as out:
        created = subprocess.run(["runc", "--root", runc.root, "run", "-d", "--bundle", str(bundle), name],
                                 stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=TIMEOUT)
    assert created.returncode == 0, output.read_text()
    state = json.loads(subprocess.run(["runc", "--root", runc.root, "state", name], capture_output=True, text=True,
                                      timeout=TIMEOUT).stdout)
    reads = Reads(output.read_text)
    reads.wait_for(0, own_limit(512 * 1024, "0"))
    assert top_at(state["pid"], "/proc/meminfo").options.startswith("ro,")

    kill_9(first)
    reads.wait_for(reads.last_number(), NOT_CONNECTED)
    second = restart(serve_daemons, first)
    reads.wait_for(reads.last_number(), own_limit(512 * 1024, "0"))

    meminfo, cpu = top_at(state["pid"], "/proc/meminfo"), top_at(state["pid"], "/sys/devices/system/cpu")
    live = top_at(os.getpid(), second.mount)
    assert meminfo.device == cpu.device == live.device, mount_table(state["pid"])
    assert meminfo.options.startswith("ro,") and cpu.options.startswith("rw,"), "the binds keep their options"
    wait_until(lambda: _repair_lines(second.log(), namespace_of(state["pid"])), timeout=TIMEOUT)


# -- what the repair leaves alone -----------------------------------------------------------------

# A tmpfs file bound over the view's bind of /proc/meminfo: the user's mount
# on top, which the repair must not touch (nor the bind it covers).
COVERED = r"""
mount --bind "$1/proc/meminfo" /proc/meminfo
mount -t tmpfs -o size=64k procview-pytest-fake "$2"
echo 'MemTotal: 1 kB (fake)' > "$2/meminfo"
mount --bind "$2/meminfo" /proc/meminfo
echo ready
exec sleep 600
"""

# A container of the other daemon: a bind of its meminfo.
OTHERS = r"""
mount --bind "$1/proc/meminfo" /proc/meminfo
echo ready
exec sleep 600
"""

# procview serve in a mount namespace of its own, where the view's mount
# point is made free first: a second daemon of the same mount point.
NESTED = """#!/bin/sh
exec unshare --mount --propagation private /bin/sh -c 'umount -l "$2" && exec "$0" "$@"' {procview} "$@"
"""

def start_namespace(sandbox, cg, argv, *args):
    """``argv`` (ending in a script that prints ``ready``) as a process of
    the sandbox; returns its pid once it is ready."""
    started = sandbox.start(cg, [*argv, "container", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = started.popen.stdout.readline()
    assert line.strip() == "ready", f"{argv}: {line}{started.popen.stdout.read() if started.popen.poll() is not None else ''}"
    return started.popen.pid


def test_the_repair_leaves_other_mounts_and_live_binds_alone(sandbox, serve_daemons, tmp_path):
    first = serve_daemons.start()
    cg = sandbox.cgroup("ctr", memory=192 * MiB)
    # A: a container with every bind of the view (its pid 1's child reads).
    reader = start_python_in_container(sandbox, cg, first.mount, MEMINFO_FIRST_LINE)
    assert re.fullmatch(r"MemTotal:\s+196608 kB", reader.request("read")), "the view before the kill"
    # B: the view's bind of /proc/meminfo under a tmpfs file.
    fake = tmp_path / "fake"
    fake.mkdir()
    private = ["unshare", "--mount", "--propagation", "private", "sh", "-c"]
    covered = start_namespace(sandbox, cg, private + [COVERED], first.mount, str(fake))
    covering = top_at(covered, "/proc/meminfo")
    assert covering.fstype == "tmpfs"

    kill_9(first)
    assert reader.request("read") == "errno 107"  # ENOTCONN
    second = restart(serve_daemons, first, DEBUG)
    wait_until(lambda: re.fullmatch(r"MemTotal:\s+196608 kB", reader.request("read")), timeout=TIMEOUT)

    # B was entered (its copy of the view's mount point was dead too) but its
    # /proc/meminfo is as it was: the same tmpfs file on top, and the dead
    # bind below it still there. (The daemon logs once the child is done
    # with every namespace; A's reads come back before that.)
    repaired = wait_until(lambda: _repaired_paths(second.log(), namespace_of(covered)), timeout=TIMEOUT)
    assert repaired == [first.mount], second.describe()
    assert top_at(covered, "/proc/meminfo") == covering, mount_table(covered)
    with open(f"/proc/{covered}/root/proc/meminfo") as f:
        assert f.read() == "MemTotal: 1 kB (fake)\n"
    below = [m for m in _parse(mount_table(covered)) if m.mountpoint == "/proc/meminfo" and m.fstype == "fuse.procview"]
    assert len(below) == 1 and below[0].mount_id == covering.parent_id and below[0].device != top_at(os.getpid(), second.mount).device

    # C: a second daemon of the same mount point, in a namespace of its own,
    # and D, a container of it. Their binds of the view are on another
    # connection that answers: the new daemon must check them and never enter.
    wrapper = tmp_path / "nested-procview"
    wrapper.write_text(NESTED.format(procview=PROCVIEW))
    wrapper.chmod(0o755)
    nested = serve_daemons.start(first.mount, procview=str(wrapper), args=DEBUG)
    others = start_namespace(sandbox, cg, ["nsenter", f"--mount=/proc/{nested.pid}/ns/mnt"] + private + [OTHERS], first.mount)
    theirs = top_at(others, "/proc/meminfo")
    untouched = {namespace_of(nested.pid): "its own namespace", namespace_of(others): "its container"}
    for inode, what in untouched.items():
        lines = wait_until(lambda: _lines_about(second.log(), inode), timeout=TIMEOUT)  # its next scan
        assert "entered" not in lines and "re-attached" not in lines, f"the second daemon's {what} was entered:\n{lines}"
        assert "answers (another daemon's connection): left alone" in lines, lines
    assert top_at(others, "/proc/meminfo") == theirs, "a live bind of another daemon was replaced"
    assert top_at(nested.pid, first.mount).device == theirs.device
    # And the other daemon never entered the namespaces the new one serves.
    assert "entered" not in _lines_about(nested.log(), namespace_of(reader.started.pid)), nested.describe()
    reader.close()


def _parse(text):
    from procview.mounts import parse_mountinfo

    return parse_mountinfo(text)


def _lines_about(log: str, inode: int) -> str:
    return "\n".join(line for line in log.splitlines() if f"mnt:[{inode}]" in line)


def _repair_lines(log: str, inode: int) -> list[str]:
    return [line for line in log.splitlines() if "re-attached the view" in line and f"mnt:[{inode}]" in line]


def _repaired_paths(log: str, inode: int) -> list[str]:
    lines = _repair_lines(log, inode)
    return lines[0].rsplit("): ", 1)[1].split(", ") if lines else []
