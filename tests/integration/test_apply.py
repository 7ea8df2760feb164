"""``procview apply -f``, ``get`` and ``delete`` with real Pod manifests,
real pods and real containers (runtime/kube).

The pods have no network of their own (the suite's ``PROCVIEW_NETWORK=none``:
their containers share a loopback), so nothing touches the host's network.
After every test no pod, record, container directory or cgroup is left
(``pod_root`` and ``state_root`` check).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess

import pytest
import yaml

from .conftest import wait_until
from .serve_helpers import no_leftovers, procview_mount, serve_daemons  # noqa: F401 (fixtures)
from .test_pods import pod_root, pv  # noqa: F401 (fixture)
from .test_run import PROCVIEW, state_root  # noqa: F401 (fixture)

TWO_CONTAINERS = """
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  volumes:
  - {name: shared, emptyDir: {}}
  containers:
  - name: server
    image: busybox
    command: [sh, -c]
    args: ["mkdir -p /www && echo from-server > /www/index.html && exec httpd -f -p 8080 -h /www"]
    env: [{name: ROLE, value: server}]
    resources: {limits: {memory: 64Mi}}
    lifecycle:
      postStart: {exec: {command: [sh, -c, "echo started > /shared/hook"]}}
    volumeMounts: [{name: shared, mountPath: /shared}]
  - name: client
    image: busybox
    command: [sh, -c, "sleep 3600"]
    volumeMounts: [{name: shared, mountPath: /shared}]
"""


def apply(root: str, text: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROCVIEW, "apply", "--root", root, "--no-view", *args, "-f", "-"], input=text,
                          capture_output=True, text=True, timeout=300)


def get(root: str, name: str) -> dict:
    result = pv(root, "get", "pod", name, "-o", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def statuses(pod: dict) -> dict:
    return {status["name"]: status for status in pod["status"]["containerStatuses"]}


def test_apply_runs_a_pod_of_two_containers_and_get_reports_it(pod_root):
    result = apply(pod_root, TWO_CONTAINERS)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "pod/web created\n"
    # The containers meet on the pod's loopback, share its emptyDir, and
    # are procview containers named POD.NAME.
    fetched = pv(pod_root, "exec", "web.client", "sh", "-c",
                 "for i in $(seq 50); do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 127.0.0.1 8080 > /tmp/r && [ -s /tmp/r ]"
                 " && break; sleep 0.2; done; tail -1 /tmp/r; cat /shared/hook")
    assert fetched.returncode == 0, fetched.stderr
    assert fetched.stdout.split() == ["from-server", "started"]
    pod = get(pod_root, "web")
    assert pod["apiVersion"] == "v1" and pod["kind"] == "Pod" and pod["metadata"]["name"] == "web"
    assert pod["status"]["phase"] == "Running"
    assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"] == "True"
    server = statuses(pod)["server"]
    assert server["ready"] is True and server["restartCount"] == 0 and "startedAt" in server["state"]["running"]
    rows = pv(pod_root, "get", "pods").stdout.splitlines()
    assert rows[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert rows[1].split()[:4] == ["web", "2/2", "Running", "0"]
    as_yaml = yaml.safe_load(pv(pod_root, "get", "pod", "web", "-o", "yaml").stdout)
    assert as_yaml["spec"]["containers"][0]["name"] == "server"
    # Applying the same file again changes nothing.
    again = apply(pod_root, TWO_CONTAINERS)
    assert again.stdout == "pod/web unchanged\n", again.stderr
    assert statuses(get(pod_root, "web"))["server"]["containerID"] == server["containerID"]
    deleted = subprocess.run([PROCVIEW, "delete", "--root", pod_root, "-f", "-"], input=TWO_CONTAINERS,
                             capture_output=True, text=True, timeout=300)
    assert deleted.returncode == 0 and deleted.stdout == 'pod "web" deleted\n', deleted.stderr
    assert pv(pod_root, "get", "pods").stdout == ""


def test_a_changed_limit_replaces_only_that_container(pod_root):
    assert apply(pod_root, TWO_CONTAINERS).returncode == 0
    before = statuses(get(pod_root, "web"))
    result = apply(pod_root, TWO_CONTAINERS.replace("memory: 64Mi", "memory: 96Mi"))
    assert result.returncode == 0 and result.stdout == "pod/web configured\n", result.stderr
    after = statuses(get(pod_root, "web"))
    assert after["server"]["containerID"] != before["server"]["containerID"]
    assert after["client"]["containerID"] == before["client"]["containerID"]
    record = json.loads(pv(pod_root, "inspect", "web.server").stdout)[0]
    limit = open(f"/sys/fs/cgroup/memory{record['cgroup']}/memory.limit_in_bytes").read().strip() \
        if os.path.isdir("/sys/fs/cgroup/memory") else open(f"/sys/fs/cgroup{record['cgroup']}/memory.max").read().strip()
    assert int(limit) == 96 << 20
    assert pv(pod_root, "delete", "pod", "web").returncode == 0


def test_a_killed_container_is_restarted_and_counted(pod_root):
    assert apply(pod_root, TWO_CONTAINERS).returncode == 0
    record = json.loads(pv(pod_root, "inspect", "web.client").stdout)[0]
    os.kill(record["pid"], signal.SIGKILL)
    wait_until(lambda: statuses(get(pod_root, "web"))["client"]["restartCount"] == 1
               and statuses(get(pod_root, "web"))["client"]["ready"], timeout=120)
    client = statuses(get(pod_root, "web"))["client"]
    assert client["lastState"]["terminated"]["exitCode"] == 137
    assert pv(pod_root, "delete", "pod", "web").returncode == 0


def test_an_oom_killed_container_says_so(pod_root):
    manifest = """
apiVersion: v1
kind: Pod
metadata: {name: hungry}
spec:
  restartPolicy: Never
  containers:
  - name: eat
    image: busybox
    command: [sh, -c, "head -c 200000000 /dev/zero | tail > /dev/null"]
    resources: {limits: {memory: 16Mi}}
"""
    assert apply(pod_root, manifest).returncode == 0
    wait_until(lambda: "terminated" in statuses(get(pod_root, "hungry"))["eat"]["state"], timeout=120)
    pod = get(pod_root, "hungry")
    assert statuses(pod)["eat"]["state"]["terminated"]["reason"] == "OOMKilled", pod
    assert pod["status"]["phase"] == "Failed"
    assert pv(pod_root, "get", "pods").stdout.splitlines()[1].split()[:3] == ["hungry", "0/1", "OOMKilled"]
    assert pv(pod_root, "delete", "pod", "hungry").returncode == 0


def test_pre_stop_runs_on_delete(pod_root, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    manifest = f"""
apiVersion: v1
kind: Pod
metadata: {{name: polite}}
spec:
  terminationGracePeriodSeconds: 10
  volumes: [{{name: out, hostPath: {{path: {out}, type: Directory}}}}]
  containers:
  - name: app
    image: busybox
    command: [sleep, "3600"]
    lifecycle: {{preStop: {{exec: {{command: [sh, -c, "echo goodbye > /out/said"]}}}}}}
    volumeMounts: [{{name: out, mountPath: /out}}]
"""
    assert apply(pod_root, manifest).returncode == 0
    assert pv(pod_root, "delete", "pod", "polite").returncode == 0
    assert (out / "said").read_text() == "goodbye\n"


def test_the_view_shows_the_manifests_limits(pod_root, procview_mount):
    manifest = """
apiVersion: v1
kind: Pod
metadata: {name: sized}
spec:
  containers:
  - name: app
    image: busybox
    command: [sleep, "3600"]
    resources: {limits: {memory: 256Mi, cpu: "1"}}
"""
    result = subprocess.run([PROCVIEW, "apply", "--root", pod_root, "--view", procview_mount.mount, "--seccomp-socket",
                             procview_mount.seccomp_socket, "-f", "-"], input=manifest, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    inside = pv(pod_root, "exec", "sized.app", "sh", "-c", "head -1 /proc/meminfo; nproc; free -k | sed -n 2p")
    assert inside.returncode == 0, inside.stderr
    meminfo, nproc, free = inside.stdout.splitlines()
    assert re.fullmatch(r"MemTotal:\s+262144 kB", meminfo) and nproc == "1"
    assert free.split()[1] == "262144"
    assert pv(pod_root, "delete", "pod", "sized").returncode == 0


@pytest.mark.parametrize("change, message", [
    (("image: busybox\n    command: [sh, -c, \"sleep", "image: busybox\n    tty: true\n    command: [sh, -c, \"sleep"),
     "spec.containers[1].tty: unknown field"),
    (("memory: 64Mi", "memory: lots"), "spec.containers[0].resources.limits.memory: invalid quantity 'lots'"),
    (("name: client", "name: server"), "spec.containers[1].name: 'server' is the name of another container"),
    # Not here, and not pulled: no registry listens there (nothing leaves this machine).
    (("  - name: client\n    image: busybox", "  - name: client\n    image: 127.0.0.1:1/nothing:1"),
     "container client: "),
])
def test_a_bad_manifest_is_one_line_exit_1_and_nothing_made(pod_root, change, message):
    old, new = change
    assert old in TWO_CONTAINERS
    result = apply(pod_root, TWO_CONTAINERS.replace(old, new, 1))
    assert result.returncode == 1
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("Unable to find image")]
    assert len(lines) == 1 and message in lines[0], lines
    assert pv(pod_root, "get", "pods").stdout == "" and pv(pod_root, "ps", "-a").stdout.splitlines()[1:] == []


def test_a_taken_host_port_is_one_line_and_nothing_made(pod_root):
    import socket

    holder = socket.socket()
    holder.bind(("0.0.0.0", 0))
    port = holder.getsockname()[1]
    try:
        manifest = TWO_CONTAINERS.replace("    env: [", f"    ports: [{{containerPort: 8080, hostPort: {port}}}]\n    env: [")
        result = apply(pod_root, manifest)
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "hostPort" in lines[0] and str(port) in lines[0], lines
        assert pv(pod_root, "get", "pods").stdout == ""
    finally:
        holder.close()


def test_the_controller_starts_what_no_monitor_looks_after(pod_root):
    assert apply(pod_root, TWO_CONTAINERS).returncode == 0
    before = statuses(get(pod_root, "web"))
    record = json.loads(pv(pod_root, "inspect", "web.client").stdout)[0]
    os.kill(record["monitor_pid"], signal.SIGKILL)  # nobody restarts it now
    wait_until(lambda: json.loads(pv(pod_root, "inspect", "web.client").stdout)[0]["phase"] == "Unknown")
    passed = pv(pod_root, "controller", "--once")
    assert passed.returncode == 0 and passed.stdout == "pod/web configured\n", passed.stderr
    after = statuses(get(pod_root, "web"))
    assert after["client"]["ready"] and after["client"]["containerID"] != before["client"]["containerID"]
    assert after["server"]["containerID"] == before["server"]["containerID"]
    # A pass over pods as declared does nothing.
    idle = pv(pod_root, "controller", "--once")
    assert idle.returncode == 0 and idle.stdout == "", idle.stderr
    assert pv(pod_root, "delete", "pod", "web").returncode == 0


def test_a_crash_loop_reaches_crash_loop_back_off(pod_root):
    manifest = """
apiVersion: v1
kind: Pod
metadata: {name: crashy}
spec:
  containers:
  - name: app
    image: busybox
    command: [sh, -c, "exit 3"]
"""
    assert apply(pod_root, manifest).returncode == 0
    # Kubernetes' back-off: restarted at once after the first exit, then
    # waiting 10 s after the second: CrashLoopBackOff, one restart counted.
    wait_until(lambda: statuses(get(pod_root, "crashy"))["app"]["state"].get("waiting", {}).get("reason")
               == "CrashLoopBackOff", timeout=60)
    pod = get(pod_root, "crashy")
    app = statuses(pod)["app"]
    assert app["restartCount"] >= 1 and app["lastState"]["terminated"]["exitCode"] == 3
    assert app["lastState"]["terminated"]["reason"] == "Error"
    assert pod["status"]["phase"] == "Running"  # waiting to be started again, as Kubernetes says it
    row = pv(pod_root, "get", "pods").stdout.splitlines()[1].split()
    assert row[:3] == ["crashy", "0/1", "CrashLoopBackOff"]
    assert pv(pod_root, "delete", "pod", "crashy").returncode == 0  # at once, during the wait


def test_a_changed_image_replaces_the_container_with_the_new_image(pod_root):
    # A second image: busybox plus one file, committed from a container.
    made = pv(pod_root, "run", "--no-view", "--name", "maker", "busybox", "sh", "-c", "echo v2 > /version")
    assert made.returncode == 0, made.stderr
    committed = pv(pod_root, "commit", "maker", "busybox-v2:1")
    assert committed.returncode == 0, committed.stderr
    assert pv(pod_root, "rm", "maker").returncode == 0
    manifest = TWO_CONTAINERS.replace('command: [sh, -c, "sleep 3600"]', 'command: [sh, -c, "cat /version 2>&1; sleep 3600"]')
    assert apply(pod_root, manifest).returncode == 0
    before = statuses(get(pod_root, "web"))["client"]
    result = apply(pod_root, manifest.replace("  - name: client\n    image: busybox", "  - name: client\n    image: busybox-v2:1"))
    assert result.returncode == 0 and result.stdout == "pod/web configured\n", result.stderr
    after = statuses(get(pod_root, "web"))["client"]
    assert after["image"] == "busybox-v2:1" and after["containerID"] != before["containerID"]
    assert after["imageID"] != before["imageID"]
    assert pv(pod_root, "exec", "web.client", "cat", "/version").stdout == "v2\n"
    assert pv(pod_root, "delete", "pod", "web").returncode == 0
