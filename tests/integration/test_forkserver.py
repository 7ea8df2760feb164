"""`procview run` through `procview forkserver`: the same containers, the
same streams, exit codes, signals and clean-up as without it, and a
runner forked by the server (not the client) doing the work."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from .pty_helpers import run_on_pty
from .test_run import PROCVIEW, _procview_cgroups, run, state_root  # noqa: F401  (state_root: a fixture)


class ForkServer:
    """A ``procview forkserver`` on its own socket, and the ``procview
    run`` clients a test starts through it."""

    def __init__(self, socket_path: str):
        self.socket_path = socket_path
        self.proc = subprocess.Popen([PROCVIEW, "forkserver", "--socket", socket_path], stderr=subprocess.PIPE,
                                     text=True)
        self.clients: list[subprocess.Popen] = []

    def runners(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children()

    def start(self, state_root, script: str, argv=None, **kwargs) -> subprocess.Popen:
        """A ``procview run`` whose command prints "started" first, then
        runs ``script``; returns once it has printed it."""
        argv = argv or [PROCVIEW]
        client = subprocess.Popen([*argv, "run", "--root", state_root, "--no-view", "busybox", "sh", "-c",
                                   "echo started; " + script], stdout=subprocess.PIPE, text=True, **kwargs)
        self.clients.append(client)
        assert client.stdout.readline() == "started\n"
        return client

    def stop(self) -> None:
        """Whatever the test left running goes first (a killed client takes
        its runner and container along), then the server, which must stop
        cleanly; if it does not, it and everything under it are killed."""
        for client in self.clients:
            if client.poll() is None:
                client.kill()
                client.wait()
        under = psutil.Process(self.proc.pid).children(recursive=True) if self.proc.poll() is None else []
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            for process in [*under, psutil.Process(self.proc.pid)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.kill()
            self.proc.wait()
            raise AssertionError("the fork server did not stop within 60 s of SIGTERM") from None
        assert code == 0
        assert not os.path.exists(self.socket_path)


def _dead(process: psutil.Process) -> bool:
    """Gone, or a zombie: an orphan is reaped by pid 1, which in the test
    VM may take its time (and psutil cannot wait for a non-child there)."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def forkserver(tmp_path, monkeypatch):
    """A fork server that every ``procview run`` of the test uses."""
    server = ForkServer(str(tmp_path / "forkserver.sock"))
    try:
        assert "listening" in server.proc.stderr.readline()
        monkeypatch.setenv("PROCVIEW_FORKSERVER_SOCKET", server.socket_path)
        yield server
    finally:
        server.stop()


def test_a_runner_of_the_server_runs_the_container(state_root, forkserver):
    proc = forkserver.start(state_root, "exec sleep 100")
    runners = forkserver.runners()
    assert len(runners) == 1 and proc.pid not in [r.pid for r in runners]
    # The container's pid 1 is the runner's child, as it is procview run's without a server.
    assert runners[0].children(), "the runner has no container"
    proc.send_signal(signal.SIGTERM)  # passed on: client -> runner -> container
    assert proc.wait(timeout=60) == 143
    time.sleep(0.2)
    assert forkserver.runners() == []


def test_streams_and_exit_codes_are_the_clients(state_root, forkserver, tmp_path):
    result = run(state_root, "--no-view", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
    piped = run(state_root, "--no-view", "-i", "busybox", "tr", "a-z", "A-Z", input="stdin\n")
    assert (piped.returncode, piped.stdout) == (0, "STDIN\n")
    assert run(state_root, "--no-view", "busybox", "nonexistent-command").returncode == 127
    assert run(state_root, "--no-view", "busybox", "sh", "-c", "kill -9 $$").returncode == 137
    bad = run(state_root, "--memory", "abc", "busybox", "true")
    assert bad.returncode == 125 and bad.stderr.count("\n") == 1, bad.stderr
    # The client's directory, environment and umask: relative paths, -e KEY.
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "file").write_text("from the host\n")
    mine = run(state_root, "--no-view", "-v", "data:/data:ro", "-e", "FROM_CLIENT", "busybox", "sh", "-c",
               "cat /data/file; echo $FROM_CLIENT", cwd=tmp_path, env={**os.environ, "FROM_CLIENT": "yes"})
    assert (mine.returncode, mine.stdout) == (0, "from the host\nyes\n"), mine.stderr


def test_a_client_on_a_terminal_runs_the_container_itself(state_root, forkserver):
    """A runner, in a session of its own, could not take the terminal as
    its controlling terminal nor be stopped by job control: a client on a
    terminal keeps its run, and -t works as without a server."""
    runners_seen = []
    result = {}

    def on_pty():
        result["run"] = run_on_pty([PROCVIEW, "run", "--root", state_root, "--no-view", "-it", "busybox", "sh", "-c",
                                    "tty; stty size; sleep 1"], 33, 101)

    thread = threading.Thread(target=on_pty)
    thread.start()
    while thread.is_alive():
        runners_seen += forkserver.runners()
        time.sleep(0.05)
    thread.join()
    code, text = result["run"]
    assert code == 0, text
    assert "/dev/pts/0" in text and "33 101" in text, text
    assert runners_seen == [], "the server ran the container of a client on a terminal"


def test_a_killed_client_takes_its_container_along(state_root, forkserver):
    proc = forkserver.start(state_root, "sleep 100")
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 30
    while forkserver.runners() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert forkserver.runners() == [], "the server kept the runner of a client that is gone"
    # As with a killed procview run: the next command cleans up.
    assert run(state_root, "--no-view", "busybox", "true").returncode == 0


def test_a_client_in_another_mount_namespace_runs_the_container_itself(state_root, forkserver):
    proc = forkserver.start(state_root, "exec sleep 100", argv=["unshare", "--mount", PROCVIEW])
    assert forkserver.runners() == [], "the server ran a container for a client whose paths it does not see"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143


@pytest.mark.parametrize("how", ["nohup", "taskset"])
def test_a_client_that_runs_differently_runs_the_container_itself(state_root, forkserver, how):
    """Ignored signals (nohup) and the CPUs a process may use (taskset) are
    inherited by what procview run starts: a runner would have the
    server's, so the server declines."""
    if how == "nohup":
        proc = forkserver.start(state_root, "exec sleep 100", preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    else:
        proc = forkserver.start(state_root, "exec sleep 100", argv=["taskset", "-c", "0", PROCVIEW])
    assert forkserver.runners() == [], f"the server ran the container of a client under {how}"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143


def test_no_server_listening_runs_the_container_in_process(state_root, tmp_path, monkeypatch):
    monkeypatch.setenv("PROCVIEW_FORKSERVER_SOCKET", str(tmp_path / "nobody-listens.sock"))
    result = run(state_root, "--no-view", "busybox", "sh", "-c", "exit 4")
    assert result.returncode == 4 and result.stderr == "", result.stderr


def test_stopping_the_server_lets_running_containers_finish(state_root, forkserver):
    proc = forkserver.start(state_root, "sleep 1; exit 5")
    forkserver.proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 5
    assert forkserver.proc.wait(timeout=60) == 0
    assert _procview_cgroups() == []


def test_the_server_preloads_every_module_a_run_imports(state_root):
    """A module the run imports lazily and the server did not preload would
    be imported again in every runner, at the start's expense."""
    assert run(state_root, "--rm", "--no-view", "busybox", "true").returncode == 0  # builds busybox: not every run's
    traced = subprocess.run([sys.executable, "-X", "importtime", PROCVIEW, "run", "--root", state_root, "--rm",
                             "--no-view", "busybox", "true"], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PROCVIEW_FORKSERVER_SOCKET": ""})
    assert traced.returncode == 0, traced.stderr
    imported = {line.rsplit("|", 1)[1].strip() for line in traced.stderr.splitlines() if line.startswith("import time:")}
    imported.discard("imported package")  # the header line
    code = "import sys; from procview.runtime import forkserver; forkserver.preload(); print(' '.join(sys.modules))"
    preloaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    # The client's own modules come before it hands over; the interpreter
    # looks for a sitecustomize at every start.
    expected = {"procview.entry", "_socket", "sitecustomize"}
    assert imported and imported - set(preloaded) <= expected, sorted(imported - set(preloaded))


def test_a_client_of_another_procview_runs_the_container_itself(state_root, forkserver, tmp_path):
    """Another checkout's procview run: its runtime is not the server's."""
    import procview

    # The same code, found under another path (procview/runtime is a symlink
    # to the checkout's runtime/: it follows along).
    other = tmp_path / "other-checkout"
    other.mkdir()
    os.symlink(os.path.dirname(procview.__file__), other / "procview")
    entry = "import sys; from procview.entry import main; sys.argv[0] = 'procview'; main()"
    proc = forkserver.start(state_root, "exec sleep 100", argv=[sys.executable, "-c", entry], cwd=other)
    assert forkserver.runners() == [], "the server ran another procview's container"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143


def test_a_killed_server_takes_its_runners_and_containers_along(state_root, tmp_path, monkeypatch):
    """As a container dies with its procview run: a runner dies with its
    server (PR_SET_PDEATHSIG), and the client, which waits on the server,
    says so and exits 125 at once."""
    server = ForkServer(str(tmp_path / "forkserver.sock"))
    try:
        assert "listening" in server.proc.stderr.readline()
        monkeypatch.setenv("PROCVIEW_FORKSERVER_SOCKET", server.socket_path)
        client = server.start(state_root, "exec sleep 100")
        (runner,) = server.runners()
        server.proc.kill()
        server.proc.wait()
        assert client.wait(timeout=30) == 125
        deadline = time.monotonic() + 30
        while not _dead(runner) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _dead(runner), "the runner outlived its server"
    finally:
        for process in [server.proc, *server.clients]:
            if process.poll() is None:
                process.kill()
                process.wait()
    # The next command removes what the killed run left, as always.
    monkeypatch.setenv("PROCVIEW_FORKSERVER_SOCKET", "")
    assert run(state_root, "--no-view", "busybox", "true").returncode == 0
