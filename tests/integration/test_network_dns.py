"""A user network's DNS responder (runtime/network/responder.py, dns.py):
real containers asking it with busybox ``nslookup``, and dnspython over
TCP from a container's network namespace, in the stand-in host of
test_network.py (its fixture checks that no responder, pidfile, interface,
table, lease or mount is left).

No query leaves the machine: the stand-in host has no route but to its
bridges, so what the responder forwards to the host's nameservers fails
at once (SERVFAIL); the one test of forwarding points the responder, in a
mount namespace of the test's, at a tiny DNS server the test runs on the
stand-in host's loopback.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from .conftest import wait_until
from .test_network import dns_responders, net_host, procview, procview_run, start_procview_run, stop  # noqa: F401
from .test_run import PROCVIEW, state_root  # noqa: F401  (fixture)

GATEWAY = "10.90.0.1"  # the first user network's


def looked_up(output: str) -> dict[str, list[str]]:
    """busybox nslookup's answers: name -> addresses, in order."""
    found: dict[str, list[str]] = {}
    name = None
    for line in output.splitlines():
        if line.startswith("Server:"):
            name = None
        elif line.startswith("Name:"):
            name = line.split(None, 1)[1].strip()
        elif line.startswith("Address: ") and name is not None:  # the server's own line has a tab
            found.setdefault(name, []).append(line.split(None, 1)[1].strip())
    return found


def responder_pid(state_root: str, network: str) -> int:  # noqa: F811
    with open(os.path.join(state_root, "networks", network, "dns.pid")) as f:
        return int(f.read().split()[0])


def container(net_host, state_root, name: str) -> dict:  # noqa: F811
    result = procview(net_host, state_root, "inspect", name)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)[0]


def ask_over_tcp(net_host, pid: int, name: str, rdtype: str = "A") -> list[str]:
    """dnspython's query over TCP from the network namespace of ``pid``
    (a container's pid 1) to the responder: the answer's records."""
    script = ("import sys, dns.message, dns.query\n"
              "reply = dns.query.tcp(dns.message.make_query(sys.argv[1], sys.argv[2]), sys.argv[3], timeout=10)\n"
              "print(reply.rcode(), *[rdata.to_text() for rrset in reply.answer for rdata in rrset])\n")
    result = subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", sys.executable, "-c", script, name, rdtype, GATEWAY],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    rcode, *records = result.stdout.split()
    assert rcode == "0", result.stdout  # NOERROR
    return records


def test_containers_find_each_other_with_nslookup_and_a_later_one_at_once(net_host, state_root):  # noqa: F811
    assert procview(net_host, state_root, "network create", "appnet").returncode == 0
    started = procview_run(net_host, state_root, "-d", "--name", "db", "--network", "appnet", "--network-alias", "database",
                           "busybox", "sleep", "300")
    assert started.returncode == 0, started.stderr
    try:
        hostname = started.stdout.strip()[:12]
        assert dns_responders(state_root) == [responder_pid(state_root, "appnet")]
        client = procview_run(net_host, state_root, "--rm", "--network", "appnet", "busybox", "sh", "-c",
                              f"cat /etc/resolv.conf; nslookup db; nslookup database {GATEWAY}; nslookup DB.; nslookup {hostname}")
        assert client.returncode == 0, client.stderr
        assert f"nameserver {GATEWAY}\n" in client.stdout and "options ndots:0\n" in client.stdout
        assert "nameserver" not in client.stdout.replace(f"nameserver {GATEWAY}", "")  # the responder only
        assert looked_up(client.stdout) == {"db": ["10.90.0.2"], "database": ["10.90.0.2"], "DB": ["10.90.0.2"],
                                            hostname: ["10.90.0.2"]}, client.stdout
        # A container that comes after db started: db finds it at once,
        # with busybox and with dnspython over TCP (name and address both ways).
        later = procview_run(net_host, state_root, "-d", "--name", "later", "--network", "appnet", "busybox", "sleep", "300")
        assert later.returncode == 0, later.stderr
        address = container(net_host, state_root, "later")["networks"]["appnet"]["address"]
        found = procview(net_host, state_root, "exec", "db", "nslookup", "later")
        assert looked_up(found.stdout) == {"later": [address]}, found.stdout + found.stderr
        db_pid = container(net_host, state_root, "db")["pid"]
        assert ask_over_tcp(net_host, db_pid, "later") == [address]
        reverse = ".".join(reversed(address.split("."))) + ".in-addr.arpa"
        assert ask_over_tcp(net_host, db_pid, reverse, "PTR") == [later.stdout.strip()[:12] + "."]
        assert ask_over_tcp(net_host, db_pid, "later", "AAAA") == []  # the name is there, without IPv6
        # One responder for the network, whoever came.
        assert dns_responders(state_root) == [responder_pid(state_root, "appnet")]
    finally:
        for name in ("later", "db"):
            procview(net_host, state_root, "rm", "-f", name)
    # The last container out took the responder and its pidfile with it.
    assert dns_responders(state_root) == []
    assert not os.path.exists(os.path.join(state_root, "networks", "appnet", "dns.pid"))
    assert procview(net_host, state_root, "network rm", "appnet").returncode == 0


def test_a_container_on_another_network_learns_nothing_of_its_names(net_host, state_root):  # noqa: F811
    for name in ("appnet", "other"):
        assert procview(net_host, state_root, "network create", name).returncode == 0
    started = procview_run(net_host, state_root, "-d", "--name", "db", "--network", "appnet", "busybox", "sleep", "300")
    assert started.returncode == 0, started.stderr
    try:
        # Its own responder does not know db (and has no nameserver to ask
        # in the stand-in host); appnet's refuses a query from its subnet.
        result = procview_run(net_host, state_root, "--rm", "--network", "other", "busybox", "sh", "-c",
                              f"nslookup db; echo ---; nslookup db {GATEWAY}")
        own, appnets = result.stdout.split("---\n")
        assert looked_up(result.stdout) == {}, result.stdout
        assert "** server can't find db: REFUSED" in appnets, result.stdout
        assert "REFUSED" not in own and "10.90.0.2" not in result.stdout, result.stdout
        assert len(dns_responders(state_root)) == 1  # other's went with its container
    finally:
        procview(net_host, state_root, "rm", "-f", "db")
    pruned = procview(net_host, state_root, "network prune")
    assert sorted(pruned.stdout.split()) == ["appnet", "other"], pruned.stdout


def test_a_responder_killed_with_sigkill_is_started_again_by_the_next_container(net_host, state_root):  # noqa: F811
    assert procview(net_host, state_root, "network create", "appnet").returncode == 0
    started = procview_run(net_host, state_root, "-d", "--name", "db", "--network", "appnet", "busybox", "sleep", "300")
    assert started.returncode == 0, started.stderr
    try:
        killed = responder_pid(state_root, "appnet")
        os.kill(killed, signal.SIGKILL)
        wait_until(lambda: dns_responders(state_root) == [])
        # db still resolves its peers by /etc/hosts; the next container
        # finds the responder dead (its pidfile left) and starts another.
        client = procview_run(net_host, state_root, "--rm", "--network", "appnet", "busybox", "nslookup", "db")
        assert client.returncode == 0, client.stderr
        assert looked_up(client.stdout) == {"db": ["10.90.0.2"]}, client.stdout
        assert dns_responders(state_root) == [responder_pid(state_root, "appnet")] != [killed]
    finally:
        procview(net_host, state_root, "rm", "-f", "db")
    assert procview(net_host, state_root, "network rm", "appnet").returncode == 0


def test_a_killed_runs_responder_goes_when_prune_reclaims_the_run(net_host, state_root, tmp_path):  # noqa: F811
    assert procview(net_host, state_root, "network create", "appnet").returncode == 0
    shared = tmp_path / "shared"
    shared.mkdir()
    run = start_procview_run(net_host, state_root, "--network", "appnet", "-v", f"{shared}:/shared",
                             "busybox", "sh", "-c", "touch /shared/up; exec sleep 300")
    try:
        wait_until(lambda: (shared / "up").exists())
    finally:
        run.kill()  # SIGKILL: its lease, name and the responder stay
        run.wait()
    assert dns_responders(state_root) == [responder_pid(state_root, "appnet")]
    pruned = procview(net_host, state_root, "network prune")
    assert pruned.stdout.split() == ["appnet"], pruned.stdout + pruned.stderr
    assert dns_responders(state_root) == []


def test_a_responder_leaves_by_itself_when_no_container_is_left(net_host, state_root):  # noqa: F811
    # Without procview run: the network's gateway address on an interface
    # of the test's, a lease taken by hand, the responder started as
    # attach starts it; the lease given back behind its back.
    assert procview(net_host, state_root, "network create", "--subnet", "10.93.0.0/24", "lonely").returncode == 0
    net_host.ip("link", "add", "dnst0", "type", "veth", "peer", "name", "dnst1")
    try:
        net_host.ip("addr", "add", "10.93.0.1/24", "dev", "dnst0")
        net_host.ip("link", "set", "dnst0", "up")
        script = ("import sys\n"
                  "from procview.runtime.network import registry, responder\n"
                  "root = sys.argv[1]\n"
                  "network = registry.load(root, 'lonely')\n"
                  "registry.leases_of(root, network).take('c' * 64)\n"
                  "with registry.locked(root):\n"
                  "    responder.ensure(root, network, '10.93.0.1')\n")
        result = net_host.run(sys.executable, "-c", script, state_root)
        assert result.returncode == 0, result.stderr
        pid = responder_pid(state_root, "lonely")
        assert dns_responders(state_root) == [pid]
        from procview.runtime.network import registry

        registry.leases_of(state_root, registry.load(state_root, "lonely")).release_container("c" * 64)
        wait_until(lambda: dns_responders(state_root) == [])
        assert not os.path.exists(os.path.join(state_root, "networks", "lonely", "dns.pid"))
    finally:
        net_host.ip("link", "del", "dnst0")
    assert procview(net_host, state_root, "network rm", "lonely").returncode == 0


# A nameserver for the test: on the stand-in host's loopback, port 53, UDP
# and TCP; outside.test is 192.0.2.7, every other name NXDOMAIN.
UPSTREAM = r"""
import selectors, socket
import dns.message, dns.rcode, dns.rrset
def reply(wire):
    query = dns.message.from_wire(wire)
    response = dns.message.make_response(query)
    question = query.question[0]
    if question.name.to_text() == "outside.test." and question.rdtype == 1:
        response.answer.append(dns.rrset.from_text(question.name, 30, "IN", "A", "192.0.2.7"))
    elif question.name.to_text() != "outside.test.":
        response.set_rcode(dns.rcode.NXDOMAIN)
    return response.to_wire()
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind(("127.0.0.1", 53))
tcp = socket.socket(); tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); tcp.bind(("127.0.0.1", 53)); tcp.listen()
selector = selectors.DefaultSelector()
selector.register(udp, selectors.EVENT_READ); selector.register(tcp, selectors.EVENT_READ)
print("listening", flush=True)
while True:
    for key, _ in selector.select():
        if key.fileobj is udp:
            wire, peer = udp.recvfrom(65535)
            udp.sendto(reply(wire), peer)
        else:
            connection, _ = tcp.accept()
            with connection:
                connection.settimeout(10)
                data = b""
                while len(data) < 2 or len(data) < 2 + int.from_bytes(data[:2], "big"):
                    data += connection.recv(65535)
                answer = reply(data[2:])
                connection.sendall(len(answer).to_bytes(2, "big") + answer)
"""


def test_what_is_not_the_networks_is_asked_of_the_hosts_nameservers(net_host, state_root, tmp_path):  # noqa: F811
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("search corp.test\nnameserver 127.0.0.1\n")
    upstream = subprocess.Popen(net_host.command(sys.executable, "-c", UPSTREAM), stdout=subprocess.PIPE, text=True)
    try:
        assert upstream.stdout.readline().strip() == "listening"
        assert procview(net_host, state_root, "network create", "appnet").returncode == 0
        # The first container starts the responder: in a mount namespace
        # whose /etc/resolv.conf is the test's, both read it.
        script = f'mount --bind "{resolv}" /etc/resolv.conf && exec "$@"'
        started = net_host.run("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                               PROCVIEW, "run", "--root", state_root, "--no-view", "-d", "--name", "db", "--network", "appnet",
                               "busybox", "sleep", "300")
        assert started.returncode == 0, started.stderr
        try:
            found = procview(net_host, state_root, "exec", "db", "sh", "-c",
                             "cat /etc/resolv.conf; nslookup outside.test; nslookup db.corp.test; nslookup nothere.test")
            assert found.stdout.startswith(f"search corp.test\nnameserver {GATEWAY}\noptions ndots:0\n"), found.stdout
            assert looked_up(found.stdout) == {"outside.test": ["192.0.2.7"], "db.corp.test": ["10.90.0.2"]}, found.stdout
            assert "** server can't find nothere.test: NXDOMAIN" in found.stdout, found.stdout
            assert ask_over_tcp(net_host, container(net_host, state_root, "db")["pid"], "outside.test") == ["192.0.2.7"]
        finally:
            stop(upstream)
            # No nameserver answering: SERVFAIL.
            gone = procview(net_host, state_root, "exec", "db", "nslookup", "outside.test")
            procview(net_host, state_root, "rm", "-f", "db")
        assert "** server can't find outside.test: SERVFAIL" in gone.stdout, gone.stdout
    finally:
        stop(upstream)
    assert procview(net_host, state_root, "network rm", "appnet").returncode == 0


def test_port_53_taken_on_every_address_stops_the_run_with_one_line(net_host, state_root):  # noqa: F811
    # Another DNS server of the host's, on 0.0.0.0:53 (dnsmasq's default):
    # the responder cannot bind the gateway's port 53.
    holder = subprocess.Popen(net_host.command(sys.executable, "-c",
                                               "import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                                               "s.bind(('0.0.0.0', 53)); print('bound', flush=True); sys.stdin.read()"),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "bound"
        assert procview(net_host, state_root, "network create", "appnet").returncode == 0
        result = procview_run(net_host, state_root, "--network", "appnet", "busybox", "true")
        assert result.returncode == 125, (result.returncode, result.stderr)
        assert result.stderr.strip().splitlines() == [
            f"procview: error: network appnet: DNS responder: cannot listen on {GATEWAY}:53: Address already in use"]
        assert os.listdir(os.path.join(state_root, "containers")) == []
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert procview(net_host, state_root, "network rm", "appnet").returncode == 0
    # (the fixture checks the bridge, lease, name and responder went)
