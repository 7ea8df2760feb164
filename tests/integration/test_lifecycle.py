"""Detached containers: run -d, ps, inspect, logs, stop, kill, rm, with real
monitors and containers. Each test ends with nothing left: no monitor, no
container directory, no cgroup (the ``state_root`` fixture checks the last
two)."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import signal
import subprocess
import time

import pytest

from .pty_helpers import run_on_pty
from .test_run import PROCVIEW, state_root  # noqa: F401 (fixture)

TIMEOUT = 300  # bounds a hang only


def pv(state_root, *args, timeout=TIMEOUT):
    """``procview COMMAND --root STATE_ROOT ARGS...`` (the root right after
    the command: run and exec take everything after NAME as its command)."""
    return subprocess.run([PROCVIEW, args[0], "--root", state_root, *args[1:]],
                          capture_output=True, text=True, timeout=timeout)


def detach(state_root, *args) -> str:
    result = pv(state_root, "run", "-d", "--no-view", *args)
    assert result.returncode == 0, result.stderr
    container_id = result.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", container_id), result.stdout
    return container_id


def records(state_root) -> list[dict]:
    result = pv(state_root, "ps", "-a", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def wait_for(predicate, what: str, timeout: float = TIMEOUT):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def monitors(state_root) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if b"-d" in argv and state_root.encode() in argv:
                found.append(int(entry))
    return found


@pytest.fixture
def root(state_root):
    yield state_root
    # Whatever a test left running is stopped, then everything must be gone.
    for record in records(state_root):
        pv(state_root, "rm", "-f", record["id"])
    wait_for(lambda: monitors(state_root) == [], "the monitors to exit", 60)
    assert records(state_root) == []


LOOP = "echo started; trap 'echo got TERM; exit 3' TERM; trap 'echo got USR1' USR1; while :; do sleep 0.1; done"


def test_run_ps_logs_stop_rm(root):
    container_id = detach(root, "--name", "web", "busybox", "sh", "-c", LOOP)
    wait_for(lambda: "started" in pv(root, "logs", "web").stdout, "the first line of output")
    ps = pv(root, "ps")
    assert ps.returncode == 0 and container_id[:12] in ps.stdout and re.search(r"Up \d+ seconds\s+web", ps.stdout), ps.stdout
    (record,) = json.loads(pv(root, "inspect", container_id[:8]).stdout)
    assert record["name"] == "web" and record["phase"] == "Running" and record["pid"] > 0

    stop = pv(root, "stop", "-t", "30", "web")
    assert stop.returncode == 0 and stop.stdout.strip() == "web", stop.stderr
    (record,) = records(root)
    assert record["phase"] == "Failed" and record["exit_code"] == 3  # its TERM trap's status
    assert "got TERM" in pv(root, "logs", "web").stdout
    assert "Exited (3)" in pv(root, "ps", "-a").stdout and "web" not in pv(root, "ps").stdout

    rm = pv(root, "rm", "web")
    assert rm.returncode == 0 and records(root) == []


def test_kill_signals_and_exit_codes(root):
    detach(root, "--name", "k", "busybox", "sh", "-c", LOOP)
    wait_for(lambda: "started" in pv(root, "logs", "k").stdout, "the container to start")
    assert pv(root, "kill", "-s", "USR1", "k").returncode == 0
    wait_for(lambda: "got USR1" in pv(root, "logs", "k").stdout, "the USR1 trap")
    assert pv(root, "kill", "k").returncode == 0  # SIGKILL by default
    wait_for(lambda: records(root)[0]["phase"] != "Running", "the container to end")
    assert records(root)[0]["exit_code"] == 137
    assert pv(root, "kill", "k").returncode == 125  # not running any more


def test_succeeded_failed_logs_and_rm_flag(root):
    detach(root, "--name", "ok", "busybox", "sh", "-c", "echo out; echo err >&2")
    detach(root, "--name", "bad", "busybox", "sh", "-c", "exit 4")
    detach(root, "--rm", "--name", "gone", "busybox", "true")
    wait_for(lambda: {r["name"]: r["phase"] for r in records(root)} == {"ok": "Succeeded", "bad": "Failed"},
             "both to end and the --rm one to be removed")
    phases = {r["name"]: (r["phase"], r["exit_code"]) for r in records(root)}
    assert phases == {"ok": ("Succeeded", 0), "bad": ("Failed", 4)}
    logs = pv(root, "logs", "ok").stdout
    assert "out" in logs and "err" in logs
    follow = pv(root, "logs", "-f", "bad")  # an ended container: returns at once
    assert follow.returncode == 0


def test_bad_input_is_one_line_and_disturbs_nobody(root):
    detach(root, "--name", "busy", "busybox", "sh", "-c", LOOP)
    for args, words in (
        (("run", "-d", "--no-view", "--name", "busy", "busybox", "true"), "already in use"),
        (("run", "-d", "--no-view", "--name", "bad name", "busybox", "true"), "invalid container name"),
        (("run", "-d", "-t", "--no-view", "busybox", "true"), "cannot be combined"),
        (("run", "-d", "--no-view", "sha256:" + "0" * 64), "no such image"),  # an ID: never pulled
        (("stop", "nosuch"), "no such container"),
        (("logs", "nosuch"), "no such container"),
        (("inspect", "nosuch"), "no such container"),
        (("rm", "busy"), "is running"),
        (("kill", "-s", "NOPE", "busy"), "unknown signal"),
    ):
        result = pv(root, *args)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 125, (args, result)
        assert len(lines) == 1 and words in lines[0], (args, result.stderr)
    (record,) = records(root)
    assert record["name"] == "busy" and record["phase"] == "Running"


def test_a_killed_monitor_leaves_unknown_and_rm_f_cleans_everything(root):
    container_id = detach(root, "--name", "orphan", "busybox", "sh", "-c", LOOP)
    (record,) = records(root)
    os.kill(record["monitor_pid"], signal.SIGKILL)
    wait_for(lambda: records(root)[0]["phase"] == "Unknown", "the record to turn Unknown")
    assert "Unknown" in pv(root, "ps").stdout
    # Its pid 1 died with the monitor (PDEATHSIG); the bundle and cgroup stay until rm -f.
    assert os.path.isdir(os.path.join(root, "containers", container_id))
    rm = pv(root, "rm", "-f", "orphan")
    assert rm.returncode == 0, rm.stderr
    assert records(root) == [] and not os.path.exists(os.path.join(root, "containers", container_id))


def test_a_corrupt_state_file_is_reported_and_the_others_work(root):
    good = detach(root, "--name", "good", "busybox", "true")
    broken = detach(root, "--name", "broken", "busybox", "true")
    wait_for(lambda: all(r["phase"] == "Succeeded" for r in records(root)), "both to end")
    with open(os.path.join(root, "records", broken, "state.json"), "w") as f:
        f.write('{"id": "trunc')
    ps = pv(root, "ps", "-a")
    assert ps.returncode == 0 and "unreadable state" in ps.stderr and "Unknown" in ps.stdout
    assert good[:12] in ps.stdout and pv(root, "logs", "good").returncode == 0
    assert pv(root, "rm", "-f", broken[:12]).returncode == 0
    assert [r["name"] for r in records(root)] == ["good"]


def test_twenty_containers_at_once(root):
    names = [f"c{i}" for i in range(20)]
    with concurrent.futures.ThreadPoolExecutor(11) as pool:
        starting = pool.map(lambda name: detach(root, "--name", name, "busybox", "sh", "-c", LOOP), names)
        # While they start, no record may look orphaned: each is locked by
        # its monitor-to-be before anyone can see it.
        seen = [r["phase"] for _ in range(5) for r in records(root)]
        ids = list(starting)
    assert "Unknown" not in seen, seen
    assert len(set(ids)) == 20
    listed = pv(root, "ps")
    assert all(name in listed.stdout.split() for name in names), listed.stdout
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        stops = list(pool.map(lambda name: pv(root, "stop", "-t", "60", name), names))
    assert all(result.returncode == 0 for result in stops), [r.stderr for r in stops if r.returncode]
    assert {r["phase"] for r in records(root)} == {"Failed"}  # exit 3 from the trap
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        removed = list(pool.map(lambda name: pv(root, "rm", name), names))
    assert all(result.returncode == 0 for result in removed)
    assert records(root) == []


def test_an_oom_kill_is_reported_and_a_plain_kill_is_not(root):
    # 64 MiB limit; the shell builds a 128 MiB string: the kernel's OOM killer ends it.
    detach(root, "--name", "hog", "--memory", "64M", "--memory-swap", "64M", "busybox", "sh", "-c",
           "x=$(head -c 134217728 /dev/zero | tr '\\0' a); echo survived")
    detach(root, "--name", "plain", "busybox", "sleep", "600")
    assert pv(root, "kill", "plain").returncode == 0
    wait_for(lambda: all(r["phase"] != "Running" for r in records(root)), "both to end")
    by_name = {r["name"]: r for r in records(root)}
    assert by_name["plain"]["exit_code"] == 137 and by_name["plain"]["oom_killed"] is False
    assert by_name["hog"]["oom_killed"] is True, by_name["hog"]
    assert "survived" not in pv(root, "logs", "hog").stdout


def test_restart_policies(root):
    detach(root, "--name", "flaky", "--restart", "on-failure:2", "busybox", "sh", "-c", "echo run; exit 1")
    wait_for(lambda: records(root)[0]["phase"] == "Failed", "the retries to end")
    (record,) = records(root)
    assert record["restart_count"] == 2 and record["exit_code"] == 1 and record["restart_policy"] == "on-failure:2"
    assert pv(root, "logs", "flaky").stdout.split() == ["run", "run", "run"]
    assert pv(root, "rm", "flaky").returncode == 0

    detach(root, "--name", "forever", "--restart", "always", "busybox", "sh", "-c", "echo run; sleep 0.2")
    wait_for(lambda: records(root)[0]["restart_count"] >= 2, "two restarts")
    stop = pv(root, "stop", "-t", "30", "forever")
    assert stop.returncode == 0, stop.stderr
    count = records(root)[0]["restart_count"]
    time.sleep(1.0)  # stopped by the user: never restarted again
    (record,) = records(root)
    assert record["restart_count"] == count and record["phase"] in ("Succeeded", "Failed")

    for args, words in ((("--restart", "sometimes"), "invalid restart policy"),
                        (("--restart", "always", "--rm"), "conflicting options")):
        result = pv(root, "run", "-d", "--no-view", *args, "busybox", "true")
        assert result.returncode == 125 and words in result.stderr, result
    result = pv(root, "run", "--no-view", "--restart", "always", "busybox", "true")
    assert result.returncode == 125 and "needs -d" in result.stderr


def test_exec_joins_the_container(root):
    detach(root, "--name", "box", "--hostname", "boxhost", "-e", "FOO=bar", "--memory", "256M",
           "--cap-drop", "NET_RAW", "busybox", "sh", "-c",
           "grep -E '^Cap(Eff|Bnd)' /proc/self/status; grep ^Seccomp: /proc/self/status; sleep 600")
    wait_for(lambda: "Seccomp" in pv(root, "logs", "box").stdout, "the container's own status lines")
    own = pv(root, "logs", "box").stdout.split("\n")[:3]
    result = pv(root, "exec", "box", "sh", "-c",
                "grep -E '^Cap(Eff|Bnd)' /proc/self/status; grep ^Seccomp: /proc/self/status;"
                " echo pid=$$ host=$(hostname) FOO=$FOO; head -1 /proc/meminfo; ls /proc | grep -c '^[0-9]'")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:3] == own, (lines, own)  # same capabilities and seccomp filter mode
    assert re.fullmatch(r"pid=\d+ host=boxhost FOO=bar", lines[3]), lines[3]
    assert int(lines[3].split()[0][4:]) < 50  # a pid of the container's namespace
    assert int(lines[5]) < 20  # it sees the container's processes, not the host's

    # The same cgroups as pid 1, in every hierarchy (on v1 the joiner moved
    # itself through the tasks files; on v2 procview moved it).
    groups = pv(root, "exec", "box", "sh", "-c", "cat /proc/self/cgroup; echo --; cat /proc/1/cgroup")
    mine, theirs = groups.stdout.split("--\n")
    assert mine == theirs, groups.stdout
    assert "/procview/" in mine or mine.strip() == "0::/", groups.stdout

    assert pv(root, "exec", "box", "sh", "-c", "exit 7").returncode == 7
    missing = pv(root, "exec", "box", "nosuchcommand")
    assert missing.returncode == 127 and "executable file not found" in missing.stderr
    piped = subprocess.run([PROCVIEW, "exec", "--root", root, "-i", "box", "cat"], input="hello\n",
                           capture_output=True, text=True, timeout=TIMEOUT)
    assert piped.stdout == "hello\n", piped.stderr
    who = pv(root, "exec", "-u", "1000:1000", "-w", "/tmp", "-e", "X=1", "box", "sh", "-c", "id -u; pwd; echo $X")
    assert who.stdout.split() == ["1000", "/tmp", "1"], who.stderr

    assert pv(root, "stop", "-t", "1", "box").returncode == 0
    stopped = pv(root, "exec", "box", "true")
    assert stopped.returncode == 125 and "is not running" in stopped.stderr


def test_exec_with_a_terminal(root):
    """exec -it: a pty of the container's devpts, with our window size; its
    input and output relayed, and its exit status returned."""
    detach(root, "--name", "term", "busybox", "sh", "-c", LOOP)
    wait_for(lambda: "started" in pv(root, "logs", "term").stdout, "the container to start")
    code, text = run_on_pty([PROCVIEW, "exec", "--root", root, "-it", "term", "sh", "-c",
                             "tty; stty size; echo TERM=$TERM; read line; echo got:$line; exit 5"],
                            41, 137, reply=(b"TERM=", b"typed\r"))
    assert code == 5, text
    assert re.search(r"^/dev/pts/\d+\r?$", text, re.M) and "41 137" in text and "TERM=xterm" in text, text
    assert "got:typed" in text, text


def test_hooks(root):
    detach(root, "--name", "hooked", "--post-start", "echo hooked > /tmp/hook", "--pre-stop", "echo pre-stop ran",
           "busybox", "sh", "-c", LOOP)
    assert pv(root, "exec", "hooked", "cat", "/tmp/hook").stdout == "hooked\n"
    assert pv(root, "stop", "-t", "30", "hooked").returncode == 0
    logs = pv(root, "logs", "hooked").stdout
    assert logs.index("pre-stop ran") < logs.index("got TERM"), logs  # the hook, then SIGTERM

    failing = pv(root, "run", "-d", "--no-view", "--name", "bad", "--post-start", "exit 3", "busybox", "sleep", "600")
    assert failing.returncode == 125 and "post-start hook failed: exit 3" in failing.stderr, failing
    wait_for(lambda: {r["name"]: r["phase"] for r in records(root)}.get("bad") == "Failed", "the hook's container to die")

    slow = detach(root, "--name", "slow", "--pre-stop", "sleep 600", "busybox", "sleep", "600")
    assert pv(root, "stop", "-t", "2", "slow").returncode == 0  # the hook takes the whole grace period: SIGKILL
    assert {r["id"]: r["exit_code"] for r in records(root)}[slow] == 137


def test_prune_removes_ended_containers_then_unused_layers(root, tmp_path):
    import shutil
    import tarfile

    # An image of its own (a rootfs tar with a static busybox), so that its
    # layer can become unused while a container still holds it.
    rootfs = tmp_path / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    busybox = shutil.which("busybox") or "/bin/busybox"
    shutil.copy(busybox, rootfs / "bin" / "busybox")
    (rootfs / "bin" / "sh").symlink_to("busybox")
    (rootfs / "bin" / "sleep").symlink_to("busybox")
    with tarfile.open(tmp_path / "rootfs.tar", "w") as tar:
        tar.add(rootfs, arcname=".")
    imported = subprocess.run([PROCVIEW, "image", "import", "--root", root, str(tmp_path / "rootfs.tar"), "--name", "mini:1"],
                              capture_output=True, text=True, timeout=TIMEOUT)
    assert imported.returncode == 0, imported.stderr

    detach(root, "--name", "done", "busybox", "true")
    detach(root, "--name", "holder", "mini:1", "sleep", "600")
    wait_for(lambda: {r["name"]: r["phase"] for r in records(root)}.get("done") == "Succeeded", "'done' to end")
    removed = subprocess.run([PROCVIEW, "image", "rm", "--root", root, "mini:1"], capture_output=True, text=True)
    assert removed.returncode == 0, removed.stderr  # its layer stays: 'holder' uses it
    first = pv(root, "prune")
    assert first.returncode == 0 and "Deleted layers: 0" in first.stdout, first
    assert [r["name"] for r in records(root)] == ["holder"]
    assert pv(root, "stop", "-t", "1", "holder").returncode == 0
    second = pv(root, "prune")
    assert second.returncode == 0 and "Deleted layers: 1" in second.stdout, second
    reclaimed = re.search(r"Total reclaimed space: ([\d.]+)MB", second.stdout)
    assert reclaimed and float(reclaimed.group(1)) > 0.5, second.stdout  # busybox is about 2 MB
    assert records(root) == []


def test_foreground_containers_have_records_too(root):
    """docker run without -d: ps shows it while it runs, ps -a after; --rm
    forgets it; exec and stop reach it through its record."""
    foreground = subprocess.Popen([PROCVIEW, "run", "--root", root, "--no-view", "--name", "fg", "busybox", "sh", "-c", LOOP],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: re.search(r"Up \d+ seconds?\s+fg", pv(root, "ps").stdout), "ps to list the foreground container")
        (record,) = records(root)
        assert record["phase"] == "Running" and record["monitor_pid"] == foreground.pid
        inside = pv(root, "exec", "fg", "sh", "-c", "echo from-exec > /proof; hostname")
        assert inside.returncode == 0 and inside.stdout.strip() == record["id"][:12], inside.stderr
        taken = pv(root, "run", "--no-view", "--name", "fg", "busybox", "true")
        assert taken.returncode == 125 and "already in use" in taken.stderr
        assert pv(root, "stop", "-t", "30", "fg").returncode == 0
        assert foreground.wait(TIMEOUT) == 3  # its TERM trap's status, as procview run's own
    finally:
        foreground.kill()
        foreground.wait()
    (record,) = records(root)
    assert record["phase"] == "Failed" and record["exit_code"] == 3
    assert "A /proof" in pv(root, "diff", "fg").stdout.splitlines()
    assert "ran in the foreground" in pv(root, "logs", "fg").stderr
    assert pv(root, "run", "--rm", "--no-view", "busybox", "true").returncode == 0
    assert [r["name"] for r in records(root)] == ["fg"]


def test_a_killed_foreground_rm_run_is_forgotten_by_the_next_command(root):
    foreground = subprocess.Popen([PROCVIEW, "run", "--root", root, "--no-view", "--rm", "--name", "doomed",
                                   "busybox", "sh", "-c", LOOP], stdout=subprocess.PIPE, text=True)
    assert foreground.stdout.readline().strip() == "started"
    foreground.kill()
    foreground.wait()
    wait_for(lambda: [r["phase"] for r in records(root)] == ["Unknown"], "the record to lose its monitor")
    assert pv(root, "run", "--rm", "--no-view", "busybox", "true").returncode == 0
    assert records(root) == []


def test_start_runs_an_ended_container_again_with_its_layer(root):
    container_id = detach(root, "--name", "again", "busybox", "sh", "-c", "echo run >> /runs; cat /runs; exec sleep 600")
    assert pv(root, "stop", "-t", "2", "again").returncode == 0
    started = pv(root, "start", "again")
    assert started.returncode == 0 and started.stdout == "again\n", started.stderr
    (record,) = records(root)
    assert record["id"] == container_id and record["phase"] == "Running"
    wait_for(lambda: pv(root, "logs", "again").stdout.count("run") == 3, "the second run's output")  # 1 + 2 lines
    running = pv(root, "start", "again")
    assert running.returncode == 125 and running.stderr == "procview: error: container again is already running\n"
    unknown = pv(root, "start", "nobody")
    assert unknown.returncode == 125 and unknown.stderr.count("\n") == 1
    assert pv(root, "rm", "-f", "again").returncode == 0
