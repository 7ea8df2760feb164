"""The listener holder's protocol and its socket, without containers.

The holder's loop runs in a thread on real unix sockets; what comes in is
sent by the test. Real seccomp listeners (a filter loaded in a forked
child), the supervisor's hand-over and the answers the holder gives are in
tests/integration/test_listener_holder.py.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time

import pytest

from procview import listener_holder, seccomp_agent
from procview.listener_holder import BUSY, HELLO, SYNCED, ListenerHolder, parse_control


class RunningHolder:
    """A ListenerHolder looping in a thread until ``stop``."""

    def __init__(self, tmp_path, exit_when_idle=False, first=None):
        self.agent_path = str(tmp_path / "agent.sock")
        agent, supervisors = listener_holder.bind(self.agent_path)
        self.holder = ListenerHolder(agent, supervisors, exit_when_idle)
        if first is not None:  # as when procview serve starts it: attached from the start
            self.holder.attach(first)
        self._sockets = (agent, supervisors)
        self._stop_r, self._stop_w = os.pipe()
        self.thread = threading.Thread(target=self.holder.run, args=(self._stop_r,), daemon=True)
        self.thread.start()

    def connect_runtime(self) -> socket.socket:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(self.agent_path)
        return client

    def connect_supervisor(self) -> socket.socket:
        link = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        link.connect(listener_holder.supervisor_socket(self.agent_path))
        link.settimeout(30)
        return link

    def stop(self) -> None:
        os.write(self._stop_w, b"x")
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()
        self.holder.close()
        for sock in self._sockets:
            sock.close()
        os.close(self._stop_r)
        os.close(self._stop_w)


@pytest.fixture
def holder(tmp_path):
    running = RunningHolder(tmp_path)
    try:
        yield running
    finally:
        running.stop()


def receive(link: socket.socket) -> tuple[bytes, list[int]]:
    data, ancdata, _flags, _ = link.recvmsg(seccomp_agent.MAX_MESSAGE, socket.CMSG_SPACE(4 * seccomp_agent.MAX_FDS))
    return data, seccomp_agent.fds_of(ancdata)


# -- the protocol (pure) ---------------------------------------------------------------


def test_parse_reads_the_oci_state():
    message = json.dumps({"ociVersion": "1.0.2", "fds": ["other", "seccompFd"], "pid": 12,
                          "state": {"id": "abcdef0123456789", "pid": 12}}).encode()
    state, index = seccomp_agent.parse(message, [30, 31])
    assert index == 1 and seccomp_agent.describe(state) == "container abcdef012345 (pid 12)"


@pytest.mark.parametrize("message, fds, reason", [
    (b"hello", [3], "not an OCI container process state"),
    (b'{"fds": ["seccompFd"]}', [], "without an fd"),
    (b'{"fds": ["x"]}', [3], "not an OCI container process state"),
    (b'{"fds": "seccompFd"}', [3], "not an OCI container process state"),
    (b'{"fds": ["a", "seccompFd"]}', [3], "names 2 fds but 1 came"),
    (b"[1, 2]", [3], "not an OCI container process state"),
])
def test_parse_refuses_bad_messages(message, fds, reason):
    with pytest.raises(ValueError, match=reason):
        seccomp_agent.parse(message, fds)


def test_what_the_holder_passes_on_names_the_listener_alone():
    state = {"ociVersion": "1.0.2", "fds": ["pidFd", "seccompFd"], "pid": 7, "metadata": "m",
             "state": {"id": "c1", "annotations": {"a": "b"}}}
    passed, index = seccomp_agent.parse(seccomp_agent.listener_only(state), [5])
    assert index == 0 and passed == dict(state, fds=["seccompFd"])


def test_procview_runs_state_says_it_keeps_a_copy_and_runcs_does_not():
    ours = json.loads(seccomp_agent.state_message("c1", 42, "/b", metadata=seccomp_agent.KEEPS_A_COPY))
    assert seccomp_agent.keeps_a_copy(ours) and ours["fds"] == ["seccompFd"] and ours["state"]["id"] == "c1"
    assert not seccomp_agent.keeps_a_copy(json.loads(seccomp_agent.state_message("c2", 43, "/b")))


def test_the_supervisor_socket_sits_next_to_the_agent_socket():
    assert listener_holder.supervisor_socket("/run/procview/seccomp.sock") == "/run/procview/seccomp-supervisor.sock"
    assert listener_holder.supervisor_socket("/tmp/agent") == "/tmp/agent-supervisor.sock"


def test_control_messages_round_trip_and_others_are_refused():
    assert parse_control(listener_holder.control(HELLO, pid=3)) == (HELLO, {"holder": HELLO, "pid": 3})
    for message in (b"garbage", b'{"fds": ["seccompFd"]}', b'{"holder": 1}', b"[]"):
        with pytest.raises(ValueError, match="not a message of the listener holder"):
            parse_control(message)


# -- the agent socket: what runtimes send ------------------------------------------------


@pytest.mark.parametrize("payload, with_fd, logged", [
    (b"garbage", True, "not an OCI container process state"),
    (json.dumps({"fds": ["seccompFd"], "pid": 1}).encode(), False, "a message without an fd"),
    (json.dumps({"fds": ["seccompFd"], "pid": 1, "state": {"id": "x"}}).encode(), True, "is not a seccomp listener"),
])
def test_bad_clients_get_a_log_line_and_lose_their_connection(holder, caplog, payload, with_fd, logged):
    client = holder.connect_runtime()
    if with_fd:
        with open("/dev/null") as f:  # an fd that is not a seccomp listener
            socket.send_fds(client, [payload], [f.fileno()])
    else:
        client.sendall(payload)
    client.shutdown(socket.SHUT_WR)
    client.settimeout(30)
    assert client.recv(16) == b""  # dropped
    client.close()
    assert f"seccomp socket: " in caplog.text and logged in caplog.text
    assert not holder.holder.held


def test_a_silent_client_is_dropped_after_the_timeout(holder, caplog, monkeypatch):
    monkeypatch.setattr(listener_holder, "HELLO_TIMEOUT", 0.2)  # for the next connection
    holder.holder.incoming.clear()
    client = holder.connect_runtime()
    client.settimeout(30)
    assert client.recv(16) == b""
    client.close()
    assert "sent nothing" in caplog.text


def test_a_probe_that_connects_and_closes_is_dropped_silently(holder, caplog):
    """procview-runc checks that something listens by connecting and
    closing: no warning per container start."""
    caplog.set_level(logging.INFO)
    client = holder.connect_runtime()
    client.shutdown(socket.SHUT_WR)
    client.settimeout(30)
    assert client.recv(16) == b""
    client.close()
    assert "seccomp socket" not in caplog.text


def test_a_second_holder_on_the_same_socket_is_refused_and_a_stale_one_replaced(tmp_path):
    path = str(tmp_path / "s.sock")
    agent, supervisors = listener_holder.bind(path)
    with pytest.raises(listener_holder.HolderError, match="another listener holder is listening"):
        listener_holder.bind(path)
    agent.close()  # the first "dies": its socket files stay, nobody listens
    supervisors.close()
    for sock in listener_holder.bind(path):
        sock.close()
    (tmp_path / "file").write_text("x")
    with pytest.raises(listener_holder.HolderError, match="not a socket"):
        listener_holder.bind(str(tmp_path / "file"))


# -- the supervisor socket ------------------------------------------------------------


def test_one_supervisor_at_a_time_each_greeted_with_the_in_flight_slot(holder):
    first = holder.connect_supervisor()
    data, fds = receive(first)
    assert parse_control(data)[0] == HELLO and len(fds) == 1
    assert os.fstat(fds[0]).st_size == listener_holder.SLOT  # the memfd of the in-flight call's id
    os.close(fds[0])
    data, fds = receive(first)
    assert parse_control(data) == (SYNCED, {"holder": SYNCED, "listeners": 0}) and fds == []

    second = holder.connect_supervisor()
    assert parse_control(receive(second)[0])[0] == BUSY
    assert receive(second) == (b"", [])  # and closed
    second.close()

    first.close()  # the first goes: the next one is welcome
    deadline = time.monotonic() + 30
    while holder.holder.supervisor is not None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    third = holder.connect_supervisor()
    data, fds = receive(third)
    assert parse_control(data)[0] == HELLO
    seccomp_agent.close_all(fds)
    third.close()


def test_a_holder_that_may_exit_when_idle_does_once_its_supervisor_goes(tmp_path):
    link, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    running = RunningHolder(tmp_path, exit_when_idle=True, first=theirs)
    try:
        data, fds = receive(link)
        assert parse_control(data)[0] == HELLO
        seccomp_agent.close_all(fds)
        assert running.thread.is_alive()
        link.close()  # nothing held, nobody attached: done
        running.thread.join(timeout=30)
        assert not running.thread.is_alive()
    finally:
        running.stop()


# -- procview run's side: the link to the holder -----------------------------------------


def test_procview_run_waits_before_it_answers_a_listener_the_holder_had(monkeypatch):
    """When the holder goes, its supervisor gives its copy up at the same
    moment: procview run starts receiving only TAKEOVER_DELAY later. A
    listener no holder ever had is answered at once."""
    from procview.runtime import syscall_view

    read_end, write_end = os.pipe()  # stands in for the listener (it is only polled here)
    ours, holders = socket.socketpair()
    link = syscall_view.AgentLink("/nonexistent.sock", ours, read_end, b"{}", warn=lambda text: None)
    assert link.fds() == [ours.fileno()] and not link.answering
    holders.close()  # the holder is killed
    link.ready(ours.fileno())
    assert link.fds() == [] and not link.answering
    assert 0 < link.timeout() <= syscall_view.TAKEOVER_DELAY
    later = time.monotonic() + syscall_view.TAKEOVER_DELAY
    monkeypatch.setattr(syscall_view.time, "monotonic", lambda: later)
    assert link.answering and link.fds() == [read_end]
    link.close()
    os.close(write_end)

    read_end, write_end = os.pipe()
    ours, holders = socket.socketpair()
    holders.close()  # nobody took it: the hand-over fails
    link = syscall_view.AgentLink("/nonexistent.sock", ours, read_end, b"{}", warn=lambda text: None)
    assert link.answering and link.fds() == [read_end]
    link.close()
    os.close(write_end)
