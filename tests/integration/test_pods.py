"""``procview pod`` and ``procview run --pod``: real pods, real containers
(runtime/pods.py).

The pods here have no network of their own (``--network none``: loopback
only, shared by the pod's containers), so nothing touches the host's
network; after every test no pod, record, container directory or cgroup
is left (the ``state_root`` fixture checks the cgroups and directories,
``pod_root`` the pods and records).
"""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from .conftest import wait_until
from .serve_helpers import no_leftovers, procview_mount, serve_daemons  # noqa: F401 (fixtures)
from .test_run import PROCVIEW, state_root  # noqa: F401 (fixture)

MiB = 1 << 20


def pv(root: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([PROCVIEW, *args[:2], "--root", root, *args[2:]] if args[0] == "pod" else
                          [PROCVIEW, args[0], "--root", root, *args[1:]],
                          capture_output=True, text=True, timeout=120, **kwargs)


@pytest.fixture
def pod_root(state_root):  # noqa: F811
    """The state root; afterwards every pod is removed (a failed test's
    too), and none may have been left by the test itself."""
    yield state_root
    left = json.loads(pv(state_root, "pod", "inspect", *pod_names(state_root)).stdout or "[]") if pod_names(state_root) else []
    for pod in left:
        pv(state_root, "pod", "rm", "-f", pod["name"])
    assert left == [], f"pods left behind: {[pod['name'] for pod in left]}"
    records = os.path.join(state_root, "records")
    assert not os.path.isdir(records) or [n for n in os.listdir(records) if not n.startswith(".")] == []


def pod_names(root: str) -> list[str]:
    lines = pv(root, "pod", "ls").stdout.splitlines()[1:]
    return [line.split()[1] for line in lines]


def create(root: str, name: str, *args: str) -> str:
    result = pv(root, "pod", "create", "--name", name, "--network", "none", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_containers_of_a_pod_share_network_ipc_and_host_name_not_files(pod_root):
    create(pod_root, "web", "--hostname", "webhost")
    server = pv(pod_root, "run", "-d", "--no-view", "--pod", "web", "--name", "server", "busybox", "sh", "-c",
                "mkdir /www && echo from-server > /www/index.html && exec httpd -f -p 8080 -h /www")
    assert server.returncode == 0, server.stderr
    client = pv(pod_root, "run", "--rm", "--no-view", "--pod", "web", "busybox", "sh", "-c",
                "hostname; for i in $(seq 50); do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 127.0.0.1 8080 > /tmp/r"
                " && [ -s /tmp/r ] && break; sleep 0.2; done; tail -1 /tmp/r;"
                " ls /www 2>&1 >/dev/null | grep -c 'No such file'; readlink /proc/self/ns/ipc; readlink /proc/self/ns/mnt")
    assert client.returncode == 0, client.stderr
    hostname, page, no_www, client_ipc, client_mnt = client.stdout.split()
    assert hostname == "webhost"
    assert page == "from-server"  # over the pod's loopback
    assert no_www == "1"  # its files are its own
    server_pid = json.loads(pv(pod_root, "inspect", "server").stdout)[0]["pid"]
    assert client_ipc == os.readlink(f"/proc/{server_pid}/ns/ipc")
    assert client_mnt != os.readlink(f"/proc/{server_pid}/ns/mnt")
    assert client_ipc != os.readlink("/proc/self/ns/ipc")  # the pod's, not the host's
    shown = json.loads(pv(pod_root, "pod", "inspect", "web").stdout)[0]
    assert shown["state"] == "Running" and [c["name"] for c in shown["containers"]] == ["server"]
    assert pv(pod_root, "pod", "rm", "web").returncode == 125  # running: only with -f
    removed = pv(pod_root, "pod", "rm", "-f", "web")
    assert removed.returncode == 0 and removed.stdout.strip() == "web", removed.stderr
    assert pv(pod_root, "ps", "-a").stdout.splitlines()[1:] == []  # its containers went with it


def test_the_view_shows_a_containers_limits_or_else_the_pods(pod_root, procview_mount):
    create(pod_root, "limited", "--memory", "256M", "--cpus", "1")
    view = ("--view", procview_mount.mount, "--seccomp-socket", procview_mount.seccomp_socket)
    script = "head -1 /proc/meminfo; nproc"
    own = pv(pod_root, "run", "--rm", *view, "--pod", "limited", "--memory", "128M", "busybox", "sh", "-c", script)
    assert own.returncode == 0, own.stderr
    pods = pv(pod_root, "run", "--rm", *view, "--pod", "limited", "busybox", "sh", "-c", script)
    assert pods.returncode == 0, pods.stderr
    assert re.fullmatch(r"MemTotal:\s+131072 kB\n1\n", own.stdout), own.stdout
    assert re.fullmatch(r"MemTotal:\s+262144 kB\n1\n", pods.stdout), pods.stdout
    assert pv(pod_root, "pod", "rm", "-f", "limited").returncode == 0


def test_a_stopped_pod_runs_nothing_starts_again_and_rm_leaves_nothing(pod_root):
    pod_id = create(pod_root, "brief")
    started = pv(pod_root, "run", "-d", "--no-view", "--pod", "brief", "--name", "member", "busybox", "sleep", "600")
    assert started.returncode == 0, started.stderr
    cgroup = json.loads(pv(pod_root, "pod", "inspect", "brief").stdout)[0]["cgroup"]
    assert cgroup == f"/procview/pod-{pod_id[:12]}"
    member_cgroup = json.loads(pv(pod_root, "inspect", "member").stdout)[0]["cgroup"]
    assert member_cgroup.startswith(cgroup + "/")
    stopped = pv(pod_root, "pod", "stop", "-t", "5", "brief")
    assert stopped.returncode == 0, stopped.stderr
    shown = json.loads(pv(pod_root, "pod", "inspect", "brief").stdout)[0]
    assert shown["state"] == "Exited" and shown["infra"]["phase"] != "Running"
    assert [c["phase"] for c in shown["containers"]] != ["Running"]
    refused = pv(pod_root, "run", "--rm", "--no-view", "--pod", "brief", "busybox", "true")
    assert refused.returncode == 125
    assert refused.stderr.strip().splitlines() == ["procview: error: pod brief is not running"]
    # Started again: the same infra and member, in the same cgroups, running.
    restarted = pv(pod_root, "pod", "start", "brief")
    assert restarted.returncode == 0, restarted.stderr
    shown = json.loads(pv(pod_root, "pod", "inspect", "brief").stdout)[0]
    assert shown["state"] == "Running" and [c["name"] for c in shown["containers"]] == ["member"]
    assert json.loads(pv(pod_root, "inspect", "member").stdout)[0]["cgroup"] == member_cgroup
    joined = pv(pod_root, "run", "--rm", "--no-view", "--pod", "brief", "busybox", "hostname")
    assert joined.returncode == 0 and joined.stdout.strip() == "brief", joined.stderr
    assert pv(pod_root, "pod", "stop", "-t", "5", "brief").returncode == 0
    assert pv(pod_root, "pod", "rm", "brief").returncode == 0  # stopped: no -f needed
    assert pv(pod_root, "ps", "-a").stdout.splitlines()[1:] == []
    assert not os.path.exists(os.path.join(pod_root, "pods", pod_id))
    # (state_root checks that no cgroup is left, the pod's included)


@pytest.mark.parametrize("args, message", [
    (("--pod", "nope"), "no such pod: nope"),
    (("--pod", "p", "--network", "host"), "conflicting options: --network and --pod"),
    (("--pod", "p", "-p", "8080"), "conflicting options: -p and --pod"),
    (("--pod", "p", "--hostname", "h"), "conflicting options: --hostname and --pod"),
])
def test_bad_runs_in_a_pod_are_one_line_and_exit_125(pod_root, args, message):
    create(pod_root, "p")
    result = pv(pod_root, "run", "--rm", "--no-view", *args, "busybox", "true")
    assert result.returncode == 125
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("procview: error: " + message), lines
    assert pv(pod_root, "pod", "rm", "-f", "p").returncode == 0


@pytest.mark.parametrize("args, message", [
    (("--name", "twice"), "the pod name 'twice' is already in use"),
    (("--name", "bad/name"), "invalid pod name 'bad/name'"),
    (("--name", "m", "--memory", "lots"), "invalid --memory 'lots'"),
    (("--name", "n", "--network", "none", "-p", "80"), "publishing ports needs a bridge network"),
])
def test_bad_pods_are_one_line_exit_125_and_nothing_made(pod_root, args, message):
    create(pod_root, "twice")
    before = sorted(os.listdir(os.path.join(pod_root, "pods")))
    result = pv(pod_root, "pod", "create", "--network", "none", *args)
    assert result.returncode == 125, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("procview: error: " + message), lines
    assert sorted(os.listdir(os.path.join(pod_root, "pods"))) == before
    assert pv(pod_root, "pod", "rm", "-f", "twice").returncode == 0


def test_pod_ls_lists_state_and_containers(pod_root):
    create(pod_root, "listed")
    started = pv(pod_root, "run", "-d", "--no-view", "--pod", "listed", "--name", "one", "busybox", "sleep", "600")
    assert started.returncode == 0, started.stderr
    rows = pv(pod_root, "pod", "ls").stdout.splitlines()
    assert rows[0].split() == ["POD", "ID", "NAME", "STATUS", "CREATED", "CONTAINERS"]
    fields = rows[1].split()
    assert fields[1:3] == ["listed", "Running"] and fields[-1] == "2"  # the infra and one
    assert pv(pod_root, "stop", "one").returncode == 0
    wait_until(lambda: pv(pod_root, "pod", "ls").stdout.splitlines()[1].split()[2] == "Degraded")
    assert pv(pod_root, "pod", "rm", "-f", "listed").returncode == 0


def test_prune_leaves_a_pods_containers_and_rm_refuses_its_infra(pod_root):
    pod_id = create(pod_root, "kept")
    ended = pv(pod_root, "run", "--no-view", "--pod", "kept", "--name", "done", "busybox", "true")
    assert ended.returncode == 0, ended.stderr
    alone = pv(pod_root, "run", "--no-view", "--name", "alone", "busybox", "true")
    assert alone.returncode == 0, alone.stderr
    pruned = pv(pod_root, "prune")
    assert pruned.returncode == 0, pruned.stderr
    names = [line.split()[-1] for line in pv(pod_root, "ps", "-a").stdout.splitlines()[1:]]
    assert sorted(names) == sorted(["done", f"{pod_id[:12]}-infra"])  # "alone" went
    refused = pv(pod_root, "rm", "-f", f"{pod_id[:12]}-infra")
    assert refused.returncode == 125
    assert refused.stderr.strip().endswith("it goes with the pod (procview pod rm)"), refused.stderr
    assert pv(pod_root, "pod", "rm", "-f", "kept").returncode == 0
