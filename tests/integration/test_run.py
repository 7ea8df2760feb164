"""`procview run` end to end: real containers from the built-in busybox image
(crun-style: run a container, check what it sees)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from procview import cgroups

from .pty_helpers import run_on_pty

PROCVIEW = os.path.join(os.path.dirname(sys.executable), "procview")
MiB = 1 << 20


@pytest.fixture
def state_root(tmp_path_factory):
    """A state root on a filesystem overlayfs accepts as upper (tmpfs /tmp in the VM)."""
    root = tmp_path_factory.mktemp("procview-root")
    yield str(root)
    leftovers = os.listdir(os.path.join(root, "containers")) if os.path.isdir(os.path.join(root, "containers")) else []
    cgroups_left = _procview_cgroups()
    if leftovers or cgroups_left:
        # A failed test may leave a killed run's container: the next
        # command removes it, so that the failure is all that remains.
        subprocess.run([PROCVIEW, "run", "--root", str(root), "--rm", "--no-view", "busybox", "true"],
                       capture_output=True, timeout=120, env={**os.environ, "PROCVIEW_FORKSERVER_SOCKET": ""})
    assert leftovers == [], f"container directories left behind: {leftovers}"
    assert cgroups_left == [], "container cgroups left behind"


def _procview_cgroups():
    found = []
    for base, _dirs, _files in os.walk("/sys/fs/cgroup"):
        if os.path.basename(base) == "procview" or "/procview/" in base:
            found.append(base)
    return found


def run(state_root, *args, timeout=120, **kwargs):
    return subprocess.run(
        [PROCVIEW, "run", "--root", state_root, *args], capture_output=True, text=True, timeout=timeout, **kwargs
    )


def test_container_sees_its_own_world(state_root):
    result = run(state_root, "--no-view", "busybox", "sh", "-c",
                 "echo pid=$$; hostname; cat /etc/hostname; ls /dev; cat /proc/uptime; grep -c . /proc/mounts; id -u")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "pid=2"  # pid 1 is procview's init
    assert re.fullmatch(r"[0-9a-f]{12}", lines[1]) and lines[2] == lines[1]
    for device in ("null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "mqueue", "ptmx", "fd"):
        assert device in lines, (device, result.stdout)
    uptime = float(next(l for l in lines if re.fullmatch(r"\d+\.\d\d \d+\.\d\d", l)).split()[0])
    assert uptime < 60  # the time namespace starts the container's clock at 0
    assert lines[-1] == "0"


def test_exit_codes_follow_docker(state_root):
    assert run(state_root, "--no-view", "busybox", "true").returncode == 0
    assert run(state_root, "--no-view", "busybox", "sh", "-c", "exit 3").returncode == 3
    missing = run(state_root, "--no-view", "busybox", "nonexistent-command")
    assert missing.returncode == 127
    assert missing.stderr.strip() == 'procview: error: exec: "nonexistent-command": executable file not found in $PATH'
    directory = run(state_root, "--no-view", "busybox", "/etc")
    assert directory.returncode == 126 and "is a directory" in directory.stderr
    killed = run(state_root, "--no-view", "busybox", "sh", "-c", "kill -9 $$")
    assert killed.returncode == 137


@pytest.mark.parametrize(
    "args, message",
    [
        # An ID is never pulled (a missing name is: tests/integration/test_pull.py).
        (["sha256:" + "0" * 64, "true"], "no such image"),
        (["--memory", "abc", "busybox", "true"], "--memory"),
        (["--memory", "0", "busybox", "true"], "minimum"),
        (["--cpus", "-1", "busybox", "true"], "--cpus"),
        (["--cpus", "99", "busybox", "true"], "CPUs available"),
        (["--cpuset-cpus", "64", "busybox", "true"], "this host's CPUs"),
        (["-v", "/nonexistent-procview-test:/data", "busybox", "true"], "does not exist"),
        (["--no-such-flag", "busybox", "true"], "no such option"),
        # Failures inside pid 1, reported back over its pipe:
        (["-u", "nosuchuser", "busybox", "true"], "unable to find user nosuchuser"),
        (["-w", "/etc/passwd/below-a-file", "busybox", "true"], "workdir"),
    ],
)
def test_bad_input_is_one_line_and_exit_125(state_root, args, message):
    result = run(state_root, "--no-view", *args)
    assert result.returncode == 125, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message.lower() in result.stderr.lower(), result.stderr
    assert "Traceback" not in result.stderr


def test_limits_reach_the_cgroup(state_root):
    script = "cat /proc/self/cgroup; nproc"
    result = run(state_root, "--no-view", "--memory", "64M", "--cpus", "0.5", "--pids-limit", "40", "busybox", "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "1"  # the cpuset sized to the quota
    # In every hierarchy procview manages (v1: pid 1 moved itself through
    # each ``tasks`` file; v2: the cgroup namespace's root, "/").
    memberships = dict(line.split(":", 2)[1:] for line in result.stdout.splitlines()[:-1])
    if memberships.keys() == {""}:
        assert memberships[""] == "/", result.stdout
    else:
        for controllers in ("memory", "cpu,cpuacct", "cpu", "cpuacct", "cpuset", "pids", "devices", "freezer", "blkio"):
            if controllers in memberships:
                assert memberships[controllers].startswith("/procview/"), (controllers, result.stdout)


def test_fork_bomb_stops_at_the_pids_limit(state_root):
    # The bomb runs in a subshell (busybox sh gives up when fork fails); the
    # count uses only shell builtins, since no fork is left by then.
    result = run(state_root, "--no-view", "--pids-limit", "20", "busybox", "sh", "-c",
                 "(for i in $(seq 1 60); do sleep 5 & done) 2>/dev/null; set -- /proc/[0-9]*; echo $#")
    assert result.returncode == 0, result.stderr
    assert 15 <= int(result.stdout.split()[-1]) <= 20, result.stdout


def test_volumes_and_read_only(state_root, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "in").write_text("from the host\n")
    result = run(state_root, "--no-view", "-v", f"{data}:/data", "-v", f"{data}:/ro:ro", "busybox", "sh", "-c",
                 "cat /data/in; echo out > /data/out; touch /ro/x 2>&1; echo rc=$?")
    assert result.returncode == 0, result.stderr
    assert "from the host" in result.stdout
    assert (data / "out").read_text() == "out\n"
    assert "Read-only file system" in result.stdout and "rc=1" in result.stdout
    assert not (data / "x").exists()
    readonly = run(state_root, "--no-view", "--read-only", "busybox", "sh", "-c", "touch /x 2>&1; echo rc=$?")
    assert "Read-only file system" in readonly.stdout


def test_environment_workdir_user_hostname(state_root, tmp_path):
    env_file = tmp_path / "env"
    env_file.write_text("# comment\nFROM_FILE=1\n")
    result = run(state_root, "--no-view", "-e", "A=b", "--env-file", str(env_file), "-w", "/work/dir", "-u", "65534",
                 "--hostname", "box", "busybox", "sh", "-c", "echo $A $FROM_FILE; pwd; id -u; hostname")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["b", "1", "/work/dir", "65534", "box"]


def test_private_network_has_only_loopback_and_host_network_is_the_hosts(state_root):
    private = run(state_root, "--no-view", "busybox", "sh", "-c", "ls /sys/class/net; cat /sys/class/net/lo/operstate; cat /sys/class/net/lo/flags")
    names = private.stdout.split()
    assert names[0] == "lo" and len([n for n in names if not n.startswith(("0x", "unknown", "up", "down"))]) == 1
    assert int(names[-1], 16) & 1  # IFF_UP
    host = run(state_root, "--no-view", "--net", "host", "busybox", "hostname")
    assert host.stdout.strip() == os.uname().nodename


def test_zombies_are_reaped(state_root):
    result = run(state_root, "--no-view", "busybox", "sh", "-c", "(sleep 0.2 &); sleep 1.5; ps -o stat | grep -c Z")
    assert result.stdout.strip() == "0", result.stdout


def test_sigterm_reaches_the_command(state_root):
    proc = subprocess.Popen([PROCVIEW, "run", "--root", state_root, "--no-view", "busybox", "sh", "-c", "echo started; exec sleep 100"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "started\n"
    time.sleep(0.2)  # let sh exec sleep
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143


def test_a_signal_to_pid_1_while_it_sets_up_is_not_lost(state_root):
    """The kernel drops a signal sent to a pid-namespace init that has no
    handler for it, and pid 1 installs its handlers only once the command
    runs. So pid 1 holds the signals it passes on blocked from its fork
    (blocked signals are never dropped) and passes on, once ready, what
    came meanwhile: SIGTERM sent the moment pid 1 exists still ends the
    command (143), never leaves it running."""
    import psutil

    assert run(state_root, "--no-view", "--rm", "busybox", "true").returncode == 0  # busybox and seccomp built
    proc = subprocess.Popen([PROCVIEW, "run", "--root", state_root, "--no-view", "--rm", "busybox", "sleep", "100"])
    try:
        our_pidns = os.readlink("/proc/self/ns/pid")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pid1 = [child.pid for child in psutil.Process(proc.pid).children() if _pid_namespace(child.pid) != our_pidns]
            if pid1:
                break
            time.sleep(0.0005)
        os.kill(pid1[0], signal.SIGTERM)  # pid 1, still setting up (a few ms here)
        assert proc.wait(timeout=30) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _pid_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def test_sigkill_of_procview_run_is_cleaned_up_by_the_next_command(state_root):
    proc = subprocess.Popen([PROCVIEW, "run", "--root", state_root, "--no-view", "busybox", "sh", "-c", "echo started; sleep 100"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "started\n"
    proc.kill()
    proc.wait()
    # The container died with it (PR_SET_PDEATHSIG); its directory and cgroup remain until the next command.
    assert os.listdir(os.path.join(state_root, "containers"))
    result = run(state_root, "--no-view", "busybox", "true")
    assert result.returncode == 0, result.stderr


def test_terminal_is_a_real_pty_with_the_window_size(state_root):
    code, text = run_on_pty([PROCVIEW, "run", "--root", state_root, "--no-view", "-it", "busybox", "sh", "-c",
                             "tty; stty size"], 33, 101)
    assert code == 0, text
    assert "/dev/pts/0" in text and "33 101" in text, text


def test_only_a_rm_containers_writable_layer_is_volatile(state_root):
    # --rm: the overlay never syncs its upper dir (thrown away anyway); a
    # kept container's layer must survive a crash, so it is mounted as usual.
    script = "grep ' / overlay ' /proc/mounts"
    thrown_away = run(state_root, "--no-view", "--rm", "busybox", "sh", "-c", script)
    kept = run(state_root, "--no-view", "busybox", "sh", "-c", script)
    assert thrown_away.returncode == 0 and kept.returncode == 0, thrown_away.stderr + kept.stderr
    assert "volatile" in thrown_away.stdout, thrown_away.stdout
    assert "volatile" not in kept.stdout, kept.stdout
