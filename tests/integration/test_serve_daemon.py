"""The life of ``procview serve``: readiness, logging, signals, the mount
point, a second daemon, a killed daemon.

Every daemon is a real subprocess (``serve_daemons``); at the end of each
test those still running get SIGTERM and must exit 0, unmount and remove
their pidfile, and ``no_leftovers`` checks that no daemon, mount or
cgroup of the test remains.
"""

from __future__ import annotations

import errno
import os
import signal
import socket

import pytest

from .serve_helpers import (
    MEMINFO_FIRST_LINE,
    MiB,
    PROCVIEW,
    START_TIMEOUT,
    STOP_TIMEOUT,
    enter_root_cgroup,
    errno_of,
    host_meminfo_kib,
    listener_holder_pids,
    meminfo_kib,
    mounts_at,
    no_leftovers,  # noqa: F401  (autouse fixture)
    run_on_host,
    serve_daemons,  # noqa: F401  (fixture)
    start_python_in_container,
    wait_until,
)


def _answers(path: str) -> bytes:
    """Read a file of the mount in a child process, so that a mount that
    does not answer fails the test instead of hanging it."""
    run = run_on_host(["cat", path], timeout=60, preexec_fn=enter_root_cgroup)
    assert run.rc == 0 and run.out, f"the mount does not answer\n{run}"
    return run.out.encode()


def test_pidfile_means_ready_and_sigterm_unmounts_and_exits_0(serve_daemons):
    daemon = serve_daemons.start()
    with open(daemon.pidfile) as f:
        assert f.read() == f"{daemon.pid}\n", daemon.describe()
    assert mounts_at(daemon.mount) == ["fuse.procview"], daemon.describe()
    assert meminfo_kib(_answers(daemon.path("proc/meminfo")).decode()) == host_meminfo_kib()
    code = daemon.stop(signal.SIGTERM)
    assert code == 0, daemon.describe()
    assert mounts_at(daemon.mount) == [], daemon.describe()
    assert not os.path.exists(daemon.pidfile), daemon.describe()
    assert "SIGTERM: unmounting" in daemon.log(), daemon.describe()
    # The default log level is info: no debug lines.
    assert "procview: INFO: ready" in daemon.log() and "DEBUG" not in daemon.log(), daemon.describe()


def test_sigint_also_unmounts_and_exits_0_and_a_missing_mount_point_is_created(serve_daemons, tmp_path):
    mount = tmp_path / "does" / "not" / "exist"
    assert not mount.exists()
    daemon = serve_daemons.start(mount)
    assert mounts_at(str(mount)) == ["fuse.procview"], daemon.describe()
    _answers(daemon.path("proc/uptime"))
    code = daemon.stop(signal.SIGINT)
    assert code == 0, daemon.describe()
    assert mounts_at(daemon.mount) == [], daemon.describe()
    assert not os.path.exists(daemon.pidfile), daemon.describe()
    assert "Traceback" not in daemon.log(), daemon.describe()


def test_notify_socket_gets_ready_only_once_the_mount_answers(serve_daemons, tmp_path):
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(START_TIMEOUT)
        env = dict(os.environ, NOTIFY_SOCKET=address)
        daemon = serve_daemons.start(env=env, wait=False)
        try:
            message = sock.recv(4096).decode()
        except socket.timeout:
            pytest.fail(f"no message on NOTIFY_SOCKET\n{daemon.describe()}", pytrace=False)
        # At the moment READY=1 arrives the mount must already answer.
        assert mounts_at(daemon.mount) == ["fuse.procview"], f"READY=1 before the mount exists\n{daemon.describe()}"
        uptime = _answers(daemon.path("proc/uptime"))
        assert len(uptime.split()) == 2, uptime
        fields = dict(line.split("=", 1) for line in message.splitlines() if "=" in line)
        assert fields.get("READY") == "1", f"first message: {message!r}\n{daemon.describe()}"
        assert fields.get("MAINPID") == str(daemon.pid), f"first message: {message!r}"
        with open(daemon.pidfile) as f:
            assert f.read().strip() == str(daemon.pid), "the pidfile is written before READY=1"
        code = daemon.stop(signal.SIGTERM)
        assert code == 0, daemon.describe()
        assert sock.recv(4096).decode().strip() == "STOPPING=1", daemon.describe()


def _open_files_limits(pid: int) -> tuple[str, str]:
    with open(f"/proc/{pid}/limits") as f:
        (line,) = [line for line in f if line.startswith("Max open files")]
    soft, hard = line.split()[3:5]
    return soft, hard


def test_the_daemon_and_its_holder_raise_their_open_files_limit_to_the_hard_one(serve_daemons):
    """Listeners, kept files and runtimes' connections take fds per
    container: both daemons start from a low soft limit (as systemd's 1024)
    and raise it to the hard one."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(256, hard // 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))  # the daemon inherits it
    try:
        daemon = serve_daemons.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    holders = listener_holder_pids(daemon.seccomp_socket)
    assert holders, daemon.describe()
    for pid in (daemon.popen.pid, *holders):
        got_soft, got_hard = _open_files_limits(pid)
        assert got_soft == got_hard != str(low), (pid, got_soft, got_hard)


def test_log_level_debug_logs_debug(serve_daemons):
    daemon = serve_daemons.start(args=("--log-level", "debug"))
    _answers(daemon.path("proc/meminfo"))
    assert daemon.stop() == 0, daemon.describe()
    assert "procview: DEBUG:" in daemon.log(), daemon.describe()
    assert "procview: INFO: ready" in daemon.log(), daemon.describe()


def test_second_daemon_on_a_live_mount_is_refused_and_the_first_keeps_serving(serve_daemons, tmp_path):
    first = serve_daemons.start()
    second = run_on_host([PROCVIEW, "serve", first.mount, "--pidfile", str(tmp_path / "second.pid")], timeout=START_TIMEOUT)
    assert second.rc == 1, second
    lines = [line for line in second.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "already mounted" in lines[0], f"expected one line saying 'already mounted'\n{second}"
    assert not (tmp_path / "second.pid").exists()
    assert mounts_at(first.mount) == ["fuse.procview"], "the second daemon changed the mounts"
    assert first.alive(), first.describe()
    assert meminfo_kib(_answers(first.path("proc/meminfo")).decode()) == host_meminfo_kib()


def test_second_daemon_through_a_symlink_to_the_live_mount_point_is_refused(serve_daemons, tmp_path):
    """The same mount point named through a symlink is the same mount
    point: a second daemon must not stack a mount on top of the live one."""
    first = serve_daemons.start()
    alias = tmp_path / "alias"
    alias.symlink_to(first.mount)
    second = serve_daemons.start(alias, pidfile=tmp_path / "second.pid", wait=False)
    # Either it refuses (exits) or it mounts and becomes ready: wait for one.
    wait_until(lambda: not second.alive() or os.path.exists(second.pidfile), timeout=START_TIMEOUT)
    if second.alive():
        stacked = mounts_at(first.mount)
        assert second.stop(signal.SIGTERM) == 0, second.describe()
        pytest.fail(f"a second procview serve through the symlink {alias} -> {first.mount} mounted over the live "
                    f"one instead of refusing (mounts there: {stacked})\n{second.describe()}", pytrace=False)
    assert second.popen.returncode == 1 and "already mounted" in second.log(), second.describe()
    assert mounts_at(first.mount) == ["fuse.procview"]
    assert first.alive(), first.describe()


def test_after_kill_9_the_mount_is_dead_and_a_new_daemon_takes_over(serve_daemons, tmp_path):
    pidfile = tmp_path / "procview.pid"
    dead = serve_daemons.start(tmp_path / "mnt", pidfile=pidfile)
    _answers(dead.path("proc/meminfo"))
    dead.popen.kill()
    assert dead.popen.wait(timeout=STOP_TIMEOUT) == -signal.SIGKILL
    # stat() of the mount point may still be answered from the kernel's
    # attribute cache; anything that reaches the (dead) daemon says ENOTCONN.
    for call in (os.statvfs, os.listdir):
        assert errno_of(call, dead.mount) == errno.ENOTCONN, f"{call.__name__}: a killed FUSE daemon leaves ENOTCONN"
    assert errno_of(os.open, dead.path("proc/meminfo"), os.O_RDONLY) == errno.ENOTCONN
    assert mounts_at(dead.mount) == ["fuse.procview"]
    # Same mount point, same pidfile (as a service manager restarting it would).
    new = serve_daemons.start(tmp_path / "mnt", pidfile=pidfile)
    assert mounts_at(new.mount) == ["fuse.procview"], f"the dead mount was not detached\n{new.describe()}"
    assert meminfo_kib(_answers(new.path("proc/meminfo")).decode()) == host_meminfo_kib()
    assert "detaching a dead FUSE mount" in new.log(), new.describe()


def test_sigterm_while_a_container_holds_the_files_still_exits_0_and_unmounts(sandbox, serve_daemons):
    """Containers bind-mount the files into their own mount namespaces; the
    daemon must still stop cleanly, and the container then gets an error,
    never silently the host's numbers."""
    daemon = serve_daemons.start()
    cg = sandbox.cgroup("ctr", memory=256 * MiB)
    ctr = start_python_in_container(sandbox, cg, daemon.mount, MEMINFO_FIRST_LINE)
    first = ctr.request("read")
    assert first.split()[1] == str(256 * 1024), first
    assert daemon.stop(signal.SIGTERM) == 0, daemon.describe()
    assert mounts_at(daemon.mount) == [], daemon.describe()
    assert not os.path.exists(daemon.pidfile)
    after = ctr.request("read")
    assert after == f"errno {errno.ENOTCONN}", f"a container read after the daemon stopped gave {after!r}"
    ctr.close()

