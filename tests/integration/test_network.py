"""``procview run --network bridge``: real namespaces, a real bridge, veths
and nftables (runtime/network).

Nothing here touches the real host's network. Each test makes a network
namespace that stands in for the host (``NetHost``) and runs ``procview
run`` inside it (``nsenter --net``), so the bridge, the veths, the
forwarding switch and procview's nftables table all live and die there.
Outbound NAT is checked against a server in a second namespace the test
makes (the "outside", on 198.51.100.0/24, TEST-NET-2), joined to the
stand-in host by a veth pair: no packet leaves this machine.

After every test, the stand-in host must be as the test made it: no
procview interface, no procview table, no lease, name or published port
on any network, no DNS responder (process or pidfile), no container
directory, no mount under the state root.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import psutil
import pytest

from procview.runtime.forkserver import SOCKET_ENV as FORKSERVER_SOCKET_ENV

from .conftest import wait_until
from .test_run import PROCVIEW, state_root  # noqa: F401  (fixture)

OUTSIDE_HOST_ADDRESS = "198.51.100.1"  # the stand-in host's end of the link to the outside
OUTSIDE_SERVER_ADDRESS = "198.51.100.2"
BRIDGE = "procview0"

# A server in the outside namespace that answers every connection with
# the address it came from (what NAT made of the container's).
PEER_ADDRESS_SERVER = r"""
import socket, sys
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((sys.argv[1], 8080))
server.listen()
print("listening", flush=True)
while True:
    connection, (address, _port) = server.accept()
    connection.sendall(address.encode() + b"\n")
    connection.close()
"""


class NetHost:
    """A network namespace bound at a file: a stand-in for the host."""

    def __init__(self, path: str):
        self.path = path
        open(path, "w").close()
        subprocess.run(["unshare", f"--net={path}", "true"], check=True)
        self.ip("link", "set", "lo", "up")

    def command(self, *argv: str) -> list[str]:
        return ["nsenter", f"--net={self.path}", *argv]

    def run(self, *argv: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(*argv), capture_output=True, text=True, timeout=timeout, **kwargs)

    def ip(self, *args: str) -> str:
        result = self.run("ip", *args)
        assert result.returncode == 0, (args, result.stderr)
        return result.stdout

    def links(self) -> list[str]:
        return [link["ifname"] for link in json.loads(self.ip("-j", "link", "show"))]

    def nft_tables(self) -> list[str]:
        result = self.run("nft", "list", "tables")
        assert result.returncode == 0, result.stderr
        return [line.strip() for line in result.stdout.splitlines() if line.strip()]

    def close(self) -> None:
        subprocess.run(["umount", self.path], check=False)
        os.unlink(self.path)


@pytest.fixture
def net_host(tmp_path, state_root):  # noqa: F811
    """The stand-in host; afterwards it must hold nothing of procview's."""
    host = NetHost(str(tmp_path / "host-netns"))
    before = set(host.links())
    yield host
    try:
        assert set(host.links()) == before, f"interfaces left behind: {set(host.links()) - before}"
        assert "table ip procview" not in host.nft_tables()
        networks = os.path.join(state_root, "networks")
        assert not os.path.exists(os.path.join(networks, "table.nft")), "the table's record outlived the table"
        for network in os.listdir(networks) if os.path.isdir(networks) else ():
            for kind in ("leases", "members", "ports"):  # addresses, names, published ports
                path = os.path.join(networks, network, kind)
                assert not os.path.isdir(path) or os.listdir(path) == [], f"{network}: {kind} left behind: {os.listdir(path)}"
            assert not os.path.exists(os.path.join(networks, network, "dns.pid")), f"{network}: a DNS responder's pidfile left"
        assert dns_responders(state_root) == [], "DNS responders left running"
        assert not [line for line in open("/proc/self/mountinfo") if state_root in line], "mounts left under the state root"
    finally:
        host.close()


def dns_responders(state_root: str) -> list[int]:  # noqa: F811
    """The pids of the DNS responders of networks under ``state_root``."""
    found = []
    for pid in (name for name in os.listdir("/proc") if name.isdigit()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"procview.runtime.network.responder" in argv and state_root.encode() in argv:
            found.append(int(pid))
    return found


def procview_run(net_host, state_root, *args, **kwargs):  # noqa: F811
    return net_host.run(PROCVIEW, "run", "--root", state_root, "--no-view", *args, **kwargs)


def start_procview_run(net_host, state_root, *args):  # noqa: F811
    return subprocess.Popen(net_host.command(PROCVIEW, "run", "--root", state_root, "--no-view", *args),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()  # procview run passes it to the container
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


HTTP_SERVER = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"
# An HTTP GET with nc (Debian's static busybox wget crashes in its
# name-service lookups), tried until the server listens.
HTTP_GET = ("ok=; for i in $(seq 50); do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {address} {port} > /tmp/reply "
            "&& [ -s /tmp/reply ] && {{ cat /tmp/reply; ok=1; break; }}; sleep 0.2; done; [ -n \"$ok\" ]")


def test_a_bridged_container_has_an_address_a_route_and_its_hosts_line(net_host, state_root):  # noqa: F811
    result = procview_run(net_host, state_root, "--network", "bridge", "--hostname", "web", "busybox", "sh", "-c",
                          "ip -4 -o addr show eth0; ip route; tail -1 /etc/hosts; ping -c1 -W5 10.89.0.1 >/dev/null && echo gateway")
    assert result.returncode == 0, result.stderr
    assert "inet 10.89.0.2/16" in result.stdout
    assert "default via 10.89.0.1 dev eth0" in result.stdout
    assert "10.89.0.2\tweb" in result.stdout.splitlines()
    assert result.stdout.splitlines()[-1] == "gateway"
    # While it ran the stand-in host had the bridge; now nothing is left
    # (the fixture checks).


def without_network_default() -> dict:
    """The environment without tests/conftest.py's ``PROCVIEW_NETWORK=none``."""
    return {key: value for key, value in os.environ.items() if key != "PROCVIEW_NETWORK"}


@pytest.mark.parametrize("through_fork_server", [False, True], ids=["direct", "fork-server"])
def test_the_default_network_is_bridge_with_or_without_a_fork_server(net_host, state_root, tmp_path,  # noqa: F811
                                                                       through_fork_server):
    env = without_network_default()
    server = None
    if through_fork_server:
        socket_path = str(tmp_path / "forkserver.sock")
        # In the stand-in host's namespace, as its clients (nsenter execs it: its pid is the server's).
        server = subprocess.Popen(net_host.command(PROCVIEW, "forkserver", "--socket", socket_path),
                                  stderr=subprocess.PIPE, text=True)
        wait_until(lambda: os.path.exists(socket_path), timeout=30)
        env[FORKSERVER_SOCKET_ENV] = socket_path
    else:
        env[FORKSERVER_SOCKET_ENV] = ""  # none
    try:
        client = subprocess.Popen(net_host.command(PROCVIEW, "run", "--root", state_root, "--no-view", "--rm", "-i", "busybox",
                                                   "sh", "-c", "ip -4 -o addr show eth0; read line"),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        first = client.stdout.readline()
        runners = psutil.Process(server.pid).children() if server else []
        out, err = client.communicate("\n", timeout=60)
        assert client.returncode == 0, err
        assert "inet 10.89.0.2/16" in first, first + err
        assert bool(runners) == through_fork_server, "the fork server did not run it" if server else runners
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=60)


def test_two_bridged_containers_talk_http_by_address(net_host, state_root):  # noqa: F811
    server = start_procview_run(net_host, state_root, "--network", "bridge", "--hostname", "server", "busybox",
                                "sh", "-c", HTTP_SERVER)
    try:
        # The first container takes the first free address.
        wait_until(lambda: os.path.exists(os.path.join(state_root, "networks", "bridge", "leases", "10.89.0.2")))
        client = procview_run(net_host, state_root, "--network", "bridge", "busybox", "sh", "-c",
                              HTTP_GET.format(address="10.89.0.2", port=8080))
        assert client.returncode == 0, client.stderr
        assert client.stdout.splitlines()[0].startswith("HTTP/1.") and client.stdout.splitlines()[-1] == "server", client.stdout
        # The bridge and table stay while the server is on the network.
        assert BRIDGE in net_host.links() and "table ip procview" in net_host.nft_tables()
    finally:
        stop(server)


def test_outbound_traffic_is_masqueraded_to_the_hosts_address(net_host, state_root, tmp_path):  # noqa: F811
    outside = NetHost(str(tmp_path / "outside-netns"))
    server = None
    try:
        # The outside: a veth from the stand-in host into its own namespace.
        net_host.ip("link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", outside.path)
        net_host.ip("addr", "add", f"{OUTSIDE_HOST_ADDRESS}/24", "dev", "up0")
        net_host.ip("link", "set", "up0", "up")
        outside.ip("addr", "add", f"{OUTSIDE_SERVER_ADDRESS}/24", "dev", "eth0")
        outside.ip("link", "set", "eth0", "up")
        server = subprocess.Popen(outside.command(sys.executable, "-c", PEER_ADDRESS_SERVER, OUTSIDE_SERVER_ADDRESS),
                                  stdout=subprocess.PIPE, text=True)
        assert server.stdout.readline().strip() == "listening"
        result = procview_run(net_host, state_root, "--network", "bridge", "busybox", "sh", "-c",
                              f"nc -w 5 {OUTSIDE_SERVER_ADDRESS} 8080 </dev/null")
        assert result.returncode == 0, result.stderr
        # The server saw the stand-in host's address, not 10.89.0.2: without
        # the masquerade rule it could not even answer (it has no route
        # to 10.89.0.0/16).
        assert result.stdout.strip() == OUTSIDE_HOST_ADDRESS
    finally:
        if server is not None:
            server.kill()
            server.wait()
        net_host.run("ip", "link", "del", "up0")
        outside.close()


@pytest.mark.parametrize("network, bridge, address", [("bridge", BRIDGE, "10.89.0.2"), ("killnet", None, "10.90.0.2")])
def test_a_killed_run_leaves_what_the_next_command_reclaims(net_host, state_root, tmp_path, network, bridge, address):  # noqa: F811
    if network != "bridge":
        assert procview(net_host, state_root, "network create", network).returncode == 0
        bridge = json.loads(procview(net_host, state_root, "network inspect", network).stdout)[0]["bridge"]
    shared = tmp_path / "shared"
    shared.mkdir()
    run = start_procview_run(net_host, state_root, "--network", network, "--name", "killed", "-v", f"{shared}:/shared",
                             "busybox", "sh", "-c", "touch /shared/up; exec sleep 300")
    containers = os.path.join(state_root, "containers")
    wait_until(lambda: (shared / "up").exists())  # its command runs: everything is set up
    run.kill()  # SIGKILL: nothing of procview run's cleanup runs
    run.wait()
    left = [name for name in net_host.links() if name.startswith("pv")]
    assert left and bridge in net_host.links()
    assert len(os.listdir(containers)) == 1
    # The next command finds the run gone and takes back all it held: its
    # address is free again, and on a user network its name is gone.
    result = procview_run(net_host, state_root, "--rm", "--network", network, "busybox", "sh", "-c",
                          "ip -4 -o addr show eth0; cat /etc/hosts")
    assert result.returncode == 0, result.stderr
    assert f"inet {address}/" in result.stdout
    assert "killed" not in result.stdout
    assert os.listdir(containers) == []
    if network != "bridge":
        assert procview(net_host, state_root, "network rm", network).returncode == 0
    # (the fixture checks the interfaces, table, leases, names, ports and mounts)


def test_a_killed_monitor_leaves_what_the_next_run_reclaims(net_host, state_root):  # noqa: F811
    started = procview_run(net_host, state_root, "-d", "--name", "orphan", "--network", "bridge", "-p", "8085:80",
                           "busybox", "sleep", "300")
    assert started.returncode == 0, started.stderr
    record = json.loads(procview(net_host, state_root, "inspect", "orphan").stdout)[0]
    os.kill(record["monitor_pid"], signal.SIGKILL)  # nothing of the monitor's cleanup runs
    wait_until(lambda: json.loads(procview(net_host, state_root, "inspect", "orphan").stdout)[0]["phase"] == "Unknown")
    assert [name for name in net_host.links() if name.startswith("pv")]
    # The next run takes back the address, the veth, the published port's
    # rule and the port itself: it gets the same address and the port.
    result = procview_run(net_host, state_root, "--rm", "--network", "bridge", "-p", "8085:80", "busybox",
                          "ip", "-4", "-o", "addr", "show", "eth0")
    assert result.returncode == 0, result.stderr
    assert "inet 10.89.0.2/16" in result.stdout
    removed = procview(net_host, state_root, "rm", "-f", "orphan")
    assert removed.returncode == 0, removed.stderr
    # (the fixture checks the interfaces, table, leases, ports and mounts)


def test_a_detached_container_shows_its_address_in_inspect_and_rm_takes_it_back(net_host, state_root):  # noqa: F811
    started = procview_run(net_host, state_root, "-d", "--name", "web", "--network", "bridge", "busybox",
                           "sh", "-c", HTTP_SERVER)
    assert started.returncode == 0, started.stderr
    try:
        inspect = net_host.run(PROCVIEW, "inspect", "--root", state_root, "web")
        assert inspect.returncode == 0, inspect.stderr
        record = json.loads(inspect.stdout)[0]
        assert record["networks"] == {"bridge": {"address": "10.89.0.2", "prefix_len": 16, "gateway": "10.89.0.1", "ports": []}}
        assert record["config"]["network"] == "bridge"
        client = procview_run(net_host, state_root, "--rm", "--network", "bridge", "busybox", "sh", "-c",
                              HTTP_GET.format(address="10.89.0.2", port=8080))
        assert client.returncode == 0, client.stderr
        assert client.stdout.splitlines()[-1] == record["id"][:12]  # the server's host name
    finally:
        removed = net_host.run(PROCVIEW, "rm", "-f", "--root", state_root, "web")
    assert removed.returncode == 0, removed.stderr
    # (the fixture checks that the bridge, table, veths and lease went with it)


def http_get_from_host(net_host, address: str, port: int) -> str:
    """The stand-in host's GET of ``address:port``: the reply's body."""
    script = ("import socket, sys\n"
              "c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)\n"
              "c.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\n"
              "data = b''\n"
              "while chunk := c.recv(4096): data += chunk\n"
              "print(data.decode().splitlines()[-1])\n")
    result = net_host.run(sys.executable, "-c", script, address, str(port))
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_a_published_port_is_reached_from_the_host_and_from_other_containers(net_host, state_root):  # noqa: F811
    started = procview_run(net_host, state_root, "-d", "--name", "web", "--network", "bridge", "-p", "8080:8080",
                           "-p", "127.0.0.1::8080", "busybox", "sh", "-c", HTTP_SERVER)
    assert started.returncode == 0, started.stderr
    try:
        hostname = started.stdout.strip()[:12]
        ports = net_host.run(PROCVIEW, "port", "--root", state_root, "web")
        assert ports.returncode == 0, ports.stderr
        lines = ports.stdout.splitlines()
        assert lines[0] == "8080/tcp -> 0.0.0.0:8080"
        assert lines[1].startswith("8080/tcp -> 127.0.0.1:")
        random_port = int(lines[1].rsplit(":", 1)[1])
        assert random_port != 8080
        # From the host: at 127.0.0.1 (both), and at its address on the
        # bridge (only the port published on every address).
        wait_until(lambda: http_get_from_host(net_host, "127.0.0.1", 8080) == hostname, timeout=30)
        assert http_get_from_host(net_host, "127.0.0.1", random_port) == hostname
        assert http_get_from_host(net_host, "10.89.0.1", 8080) == hostname
        refused = net_host.run(sys.executable, "-c", "import socket; socket.create_connection(('10.89.0.1', %d), 5)" % random_port)
        assert refused.returncode != 0  # published on 127.0.0.1 only
        # From another container, through the host's address: masqueraded
        # there, so that the answer comes back the same way.
        client = procview_run(net_host, state_root, "--rm", "--network", "bridge", "busybox", "sh", "-c",
                              HTTP_GET.format(address="10.89.0.1", port=8080))
        assert client.returncode == 0, client.stderr
        assert client.stdout.splitlines()[-1] == hostname
    finally:
        removed = net_host.run(PROCVIEW, "rm", "-f", "--root", state_root, "web")
    assert removed.returncode == 0, removed.stderr
    # The ports are free again (the fixture checks the rest).
    probe = net_host.run(sys.executable, "-c", "import socket; s = socket.socket(); s.bind(('0.0.0.0', 8080))")
    assert probe.returncode == 0, probe.stderr


def test_a_taken_host_port_is_one_line_and_exit_125(net_host, state_root):  # noqa: F811
    holder = subprocess.Popen(net_host.command(sys.executable, "-c",
                                               "import socket, sys; s = socket.socket(); s.bind(('0.0.0.0', 8081)); "
                                               "s.listen(); print('bound', flush=True); sys.stdin.read()"),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "bound"
        result = procview_run(net_host, state_root, "--network", "bridge", "-p", "8081:80", "busybox", "true")
        assert result.returncode == 125, (result.returncode, result.stderr)
        assert result.stderr.strip().splitlines() == ["procview: error: host port 0.0.0.0:8081/tcp is already in use"]
        assert BRIDGE not in net_host.links() and os.listdir(os.path.join(state_root, "containers")) == []
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("args, message", [
    (["-p", "80"], "publishing ports needs a bridge network, --network bridge or a user network (this container's network: none)"),
    (["--network-alias", "db"], "--network-alias needs a user network (procview network create): the others have no names"),
    (["--network", "bridge", "-p", "70000:80"], "invalid publish '70000:80': '70000' is not a port (1-65535)"),
    (["--network", "bridge", "-p", "80/sctp"], "invalid publish '80/sctp': protocol must be tcp or udp"),
    (["--network", "bridge", "-p", "localhost:80:80"], "invalid publish 'localhost:80:80': 'localhost' is not an IPv4 address"),
])
def test_bad_publish_specs_are_one_line_and_exit_125(net_host, state_root, args, message):  # noqa: F811
    result = procview_run(net_host, state_root, *args, "busybox", "true")
    assert result.returncode == 125, (result.returncode, result.stderr)
    assert result.stderr.strip().splitlines() == [f"procview: error: {message}"]


def test_container_network_mode_joins_another_containers_namespace(net_host, state_root):  # noqa: F811
    started = procview_run(net_host, state_root, "-d", "--name", "web", "--network", "bridge", "busybox",
                           "sh", "-c", HTTP_SERVER)
    assert started.returncode == 0, started.stderr
    try:
        hostname = started.stdout.strip()[:12]
        # Its address, its host name, and its loopback: the server answers
        # at 127.0.0.1.
        joined = procview_run(net_host, state_root, "--rm", "--network", "container:web", "busybox", "sh", "-c",
                              "hostname; ip -4 -o addr show eth0 | awk '{print $4}'; " + HTTP_GET.format(address="127.0.0.1", port=8080))
        assert joined.returncode == 0, joined.stderr
        lines = joined.stdout.splitlines()
        assert lines[:2] == [hostname, "10.89.0.2/16"], joined.stdout
        assert lines[-1] == hostname
        # It took no address or interface of its own.
        assert len([name for name in net_host.links() if name.startswith("pv")]) == 1
    finally:
        removed = net_host.run(PROCVIEW, "rm", "-f", "--root", state_root, "web")
    assert removed.returncode == 0, removed.stderr
    gone = procview_run(net_host, state_root, "--network", "container:web", "busybox", "true")
    assert gone.returncode == 125 and gone.stderr.strip() == "procview: error: no such container: web", gone.stderr


@pytest.mark.parametrize("network, message", [
    ("container:nobody", "no such container: nobody"),
    ("macvlan", "network macvlan not found"),
    ("container:", "network container: not found"),
])
def test_unknown_networks_are_one_line_and_exit_125(net_host, state_root, network, message):  # noqa: F811
    result = procview_run(net_host, state_root, "--network", network, "busybox", "true")
    assert result.returncode == 125, (result.returncode, result.stderr)
    assert result.stderr.strip().splitlines() == [f"procview: error: {message}"]


def procview(net_host, state_root, command: str, *args):  # noqa: F811
    """Another procview command (``"network create"``, ``"exec"``...) in
    the stand-in host, on this state root."""
    return net_host.run(PROCVIEW, *command.split(), "--root", state_root, *args)


# One GET, no retries: the last line of the reply (the server's host name), or nothing.
GET_ONCE = "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {address} {port} | tail -1"


def test_containers_on_a_user_network_find_each_other_by_name(net_host, state_root):  # noqa: F811
    made = procview(net_host, state_root, "network create", "appnet")
    assert made.returncode == 0 and made.stdout.strip() == "appnet", made.stderr
    started = procview_run(net_host, state_root, "-d", "--name", "db", "--network", "appnet", "--network-alias", "database",
                           "busybox", "sh", "-c", HTTP_SERVER)
    assert started.returncode == 0, started.stderr
    try:
        hostname = started.stdout.strip()[:12]
        # By its container name (once it answers), its alias and its host name.
        script = "; ".join([HTTP_GET.format(address="db", port=8080),
                            GET_ONCE.format(address="database", port=8080), GET_ONCE.format(address=hostname, port=8080)])
        client = procview_run(net_host, state_root, "--rm", "--name", "client", "--network", "appnet", "busybox", "sh", "-c", script)
        assert client.returncode == 0, client.stderr
        assert client.stdout.splitlines()[-3:] == [hostname] * 3, client.stdout
        # A container that comes later is in the earlier one's /etc/hosts
        # while it runs, and gone from it after.
        later = start_procview_run(net_host, state_root, "--name", "later", "--network", "appnet", "busybox", "sleep", "300")
        try:
            wait_until(lambda: "later" in procview(net_host, state_root, "exec", "db", "cat", "/etc/hosts").stdout)
            hosts = procview(net_host, state_root, "exec", "db", "cat", "/etc/hosts").stdout
            assert any(line.startswith("10.90.0.") and line.endswith(" later") for line in hosts.splitlines()), hosts
        finally:
            stop(later)
        hosts = procview(net_host, state_root, "exec", "db", "cat", "/etc/hosts").stdout
        assert "later" not in hosts and "client" not in hosts, hosts
        inspect = json.loads(procview(net_host, state_root, "network inspect", "appnet").stdout)[0]
        assert inspect["subnet"] == "10.90.0.0/16" and inspect["gateway"] == "10.90.0.1"
        assert [c["names"] for c in inspect["containers"].values()] == [[hostname, "db", "database"]]
        in_use = procview(net_host, state_root, "network rm", "appnet")
        assert in_use.returncode == 125
        assert in_use.stderr.strip() == "procview: error: network appnet has active endpoints (containers on it: stop them first)"
    finally:
        removed = procview(net_host, state_root, "rm", "-f", "db")
    assert removed.returncode == 0, removed.stderr
    assert procview(net_host, state_root, "network rm", "appnet").returncode == 0
    assert "appnet" not in procview(net_host, state_root, "network ls").stdout


def test_containers_on_different_networks_cannot_reach_each_other(net_host, state_root):  # noqa: F811
    for name in ("front", "back"):
        assert procview(net_host, state_root, "network create", name).returncode == 0
    started = procview_run(net_host, state_root, "-d", "--name", "api", "--network", "back", "-p", "8082:8080",
                           "busybox", "sh", "-c", HTTP_SERVER)
    assert started.returncode == 0, started.stderr
    try:
        hostname = started.stdout.strip()[:12]
        api = json.loads(procview(net_host, state_root, "inspect", "api").stdout)[0]["networks"]["back"]["address"]
        front = json.loads(procview(net_host, state_root, "network inspect", "front").stdout)[0]
        # Its published port, at the host's address on the client's
        # network, answers (so the server is up); its own address does not.
        script = "; ".join([HTTP_GET.format(address=front["gateway"], port=8082),
                            "echo direct: $(" + GET_ONCE.format(address=api, port=8080) + ")"])
        result = procview_run(net_host, state_root, "--rm", "--network", "front", "busybox", "sh", "-c", script)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[-2:] == [hostname, "direct:"], result.stdout
    finally:
        procview(net_host, state_root, "rm", "-f", "api")
    pruned = procview(net_host, state_root, "network prune")
    assert sorted(pruned.stdout.split()) == ["back", "front"], pruned.stdout


@pytest.mark.parametrize("args, message", [
    (["network", "create", "bridge"], "network name bridge is reserved (a network mode of procview run)"),
    (["network", "create", "bad/name"], "invalid network name 'bad/name': only [a-zA-Z0-9][a-zA-Z0-9_.-]* are allowed"),
    (["network", "create", "--subnet", "10.89.0.0/24", "n"], "subnet 10.89.0.0/24 overlaps network bridge's 10.89.0.0/16"),
    (["network", "create", "--subnet", "10.200.0.1/16", "n"], "invalid subnet '10.200.0.1/16': 10.200.0.1/16 has host bits set"),
    (["network", "rm", "nothere"], "network nothere not found"),
    (["network", "rm", "bridge"], "bridge is procview's built-in network: it cannot be removed"),
])
def test_bad_network_commands_are_one_line(net_host, state_root, args, message):  # noqa: F811
    result = procview(net_host, state_root, " ".join(args[:2]), *args[2:])
    assert result.returncode == 125, (result.returncode, result.stderr)
    assert result.stderr.strip().splitlines() == [f"procview: error: {message}"]


def test_a_network_name_is_taken_once(net_host, state_root):  # noqa: F811
    assert procview(net_host, state_root, "network create", "twice").returncode == 0
    again = procview(net_host, state_root, "network create", "twice")
    assert again.returncode == 125 and again.stderr.strip() == "procview: error: network with name twice already exists"
    assert procview(net_host, state_root, "network rm", "twice").returncode == 0


def test_without_nftables_a_bridged_run_is_one_line_and_exit_125(net_host, state_root):  # noqa: F811
    # libnftables hidden (an empty file bound over it) in a mount namespace
    # of this test's own.
    import ctypes

    ctypes.CDLL("libnftables.so.1")
    with open("/proc/self/maps") as f:
        library = next(line.split()[-1] for line in f if "libnftables.so" in line)
    script = f'mount --bind /dev/null "{library}" && exec "$@"'
    result = net_host.run("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                          PROCVIEW, "run", "--root", state_root, "--no-view", "--network", "bridge", "busybox", "true")
    assert result.returncode == 125, (result.returncode, result.stderr)
    assert result.stderr.strip().splitlines() == [
        "procview: error: network bridge: nftables is not installed (no libnftables.so.1; Debian: apt install nftables)"]
    assert BRIDGE not in net_host.links() and os.listdir(os.path.join(state_root, "containers")) == []


def test_a_failure_after_the_address_is_taken_undoes_everything(net_host, state_root):  # noqa: F811
    # Something else called procview0 (a veth here): the run stops when it
    # finds it is no bridge, after taking its address, and gives back all
    # it took, leaving the other interface alone.
    net_host.ip("link", "add", BRIDGE, "type", "veth", "peer", "name", "notours1")
    try:
        result = procview_run(net_host, state_root, "--network", "bridge", "busybox", "true")
        assert result.returncode == 125, (result.returncode, result.stderr)
        assert result.stderr.strip().splitlines() == [
            "procview: error: network bridge: procview0 exists and is not a bridge (not procview's: rename or remove it)"]
        assert BRIDGE in net_host.links() and "table ip procview" not in net_host.nft_tables()
        assert os.listdir(os.path.join(state_root, "containers")) == []
    finally:
        net_host.ip("link", "del", BRIDGE)
    # (the fixture checks the lease, the namespace's file and the rest)


def test_an_overlapping_subnet_is_one_line_and_exit_125(net_host, state_root):  # noqa: F811
    # Another network of the host's on 10.89.7.0/24 (a veth pair: this
    # kernel has no dummy interfaces).
    net_host.ip("link", "add", "other0", "type", "veth", "peer", "name", "other1")
    net_host.ip("addr", "add", "10.89.7.1/24", "dev", "other0")
    net_host.ip("link", "set", "other0", "up")
    net_host.ip("link", "set", "other1", "up")
    try:
        result = procview_run(net_host, state_root, "--network", "bridge", "busybox", "true")
        assert result.returncode == 125, (result.returncode, result.stderr)
        assert result.stderr.strip().splitlines() == [
            "procview: error: network bridge: subnet 10.89.0.0/16 overlaps the host's route to 10.89.7.0/24 "
            "($PROCVIEW_BRIDGE_SUBNET sets another)"
        ]
        assert BRIDGE not in net_host.links() and "table ip procview" not in net_host.nft_tables()
        assert os.listdir(os.path.join(state_root, "containers")) == []
        # What the line says to do works.
        result = procview_run(net_host, state_root, "--network", "bridge", "busybox", "ip", "-4", "-o", "addr", "show", "eth0",
                              env=dict(os.environ, PROCVIEW_BRIDGE_SUBNET="10.77.0.0/24"))
        assert result.returncode == 0, result.stderr
        assert "inet 10.77.0.2/24" in result.stdout
    finally:
        net_host.ip("link", "del", "other0")


def test_the_built_in_subnet_is_configurable_and_kept_while_in_use(net_host, state_root):  # noqa: F811
    other_subnet = dict(os.environ, PROCVIEW_BRIDGE_SUBNET="10.77.0.0/24")
    started = procview_run(net_host, state_root, "-d", "--name", "first", "--network", "bridge", "busybox", "sleep", "600",
                           env=other_subnet)
    assert started.returncode == 0, started.stderr
    try:
        pinned = os.path.join(state_root, "networks", "bridge", "config.json")
        assert json.load(open(pinned))["subnet"] == "10.77.0.0/24"
        # Every command now agrees on it: inspect, and a run that asks for nothing.
        shown = net_host.run(PROCVIEW, "network", "inspect", "--root", state_root, "bridge")
        assert json.loads(shown.stdout)[0]["subnet"] == "10.77.0.0/24", shown.stdout + shown.stderr
        second = procview_run(net_host, state_root, "--rm", "--network", "bridge", "busybox", "ip", "-4", "-o", "addr",
                              "show", "eth0", env=other_subnet)
        assert "inet 10.77.0.3/24" in second.stdout, second.stderr
        # A run asking for another subnet while it is in use: one line, nothing made.
        before = sorted(os.listdir(os.path.join(state_root, "containers")))
        refused = procview_run(net_host, state_root, "--rm", "--network", "bridge", "busybox", "true",
                               env=dict(os.environ, PROCVIEW_BRIDGE_SUBNET="10.78.0.0/24"))
        assert refused.returncode == 125
        assert refused.stderr.strip().splitlines() == [
            "procview: error: network bridge is in use with subnet 10.77.0.0/24: $PROCVIEW_BRIDGE_SUBNET=10.78.0.0/24 "
            "applies once no container is on it"]
        assert sorted(os.listdir(os.path.join(state_root, "containers"))) == before
        assert list(os.listdir(os.path.join(state_root, "networks", "bridge", "leases"))) == ["10.77.0.2"]
    finally:
        removed = net_host.run(PROCVIEW, "rm", "--root", state_root, "-f", "first")
        assert removed.returncode == 0, removed.stderr
    assert not os.path.exists(pinned), "the subnet stayed pinned with no container on the network"


@pytest.mark.parametrize("value, message", [
    ("10.77.0.1/24", "network bridge: invalid subnet '10.77.0.1/24': 10.77.0.1/24 has host bits set"),
    ("fd00::/64", "network bridge: invalid subnet 'fd00::/64': "),
])
def test_a_bad_built_in_subnet_is_one_line_and_exit_125(net_host, state_root, value, message):  # noqa: F811
    result = procview_run(net_host, state_root, "--rm", "--network", "bridge", "busybox", "true",
                          env=dict(os.environ, PROCVIEW_BRIDGE_SUBNET=value))
    assert result.returncode == 125
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("procview: error: " + message), lines
    assert BRIDGE not in net_host.links()


def test_none_is_loopback_only_and_private_still_means_none(net_host, state_root):  # noqa: F811
    for mode in ("none", "private"):
        result = procview_run(net_host, state_root, "--network", mode, "busybox", "sh", "-c", "ls /sys/class/net")
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["lo"], (mode, result.stdout)
    assert BRIDGE not in net_host.links()


def test_containers_on_the_network_together_get_distinct_addresses(net_host, state_root, tmp_path):  # noqa: F811
    # Each writes its address where all can see, and stays until all six
    # have: so all six hold their leases at once.
    shared = tmp_path / "shared"
    shared.mkdir()
    script = ("ip -4 -o addr show eth0 | awk '{print $4}' > /shared/$(hostname); "
              "for i in $(seq 600); do [ $(ls /shared | wc -l) -ge 6 ] && exit 0; sleep 0.1; done; exit 1")
    runs = [start_procview_run(net_host, state_root, "--network", "bridge", "-v", f"{shared}:/shared", "busybox",
                               "sh", "-c", script) for _ in range(6)]
    for run in runs:
        _stdout, stderr = run.communicate(timeout=120)
        assert run.returncode == 0, stderr
    addresses = [path.read_text().strip() for path in shared.iterdir()]
    assert len(set(addresses)) == 6 and all(a.startswith("10.89.0.") and a.endswith("/16") for a in addresses), addresses
    # (the fixture checks that the last one out took the bridge and table)


def test_an_applied_pod_on_the_bridge_serves_its_host_port_and_has_a_pod_ip(net_host, state_root):  # noqa: F811
    manifest = """
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  hostname: webpod
  containers:
  - name: server
    image: busybox
    command: [sh, -c, "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
    ports: [{containerPort: 8080, hostPort: 8093}]
"""
    applied = net_host.run(PROCVIEW, "apply", "--root", state_root, "--no-view", "-f", "-", input=manifest,
                           env=without_network_default())
    assert applied.returncode == 0, applied.stderr
    try:
        pod = json.loads(net_host.run(PROCVIEW, "get", "--root", state_root, "pod", "web", "-o", "json").stdout)
        assert pod["status"]["podIP"] == "10.89.0.2"
        def served() -> bool:
            try:
                return http_get_from_host(net_host, "127.0.0.1", 8093) == "webpod"
            except AssertionError:  # not listening yet
                return False

        wait_until(served, timeout=30)
    finally:
        deleted = net_host.run(PROCVIEW, "delete", "--root", state_root, "pod", "web")
    assert deleted.returncode == 0, deleted.stderr
    # (the fixture checks that the bridge, table, lease and port went with it)
