"""deploy/kubernetes/: every manifest against the Kubernetes API's schema,
and against procview's own names and paths.

The schema is the published OpenAPI one, as JSON schemas for each release
from 1.25 on, bundled by the package ``kubernetes-validate`` (no download;
the oldest and the newest release are checked):
its strict form rejects unknown fields, and every form checks required
fields and types. What no schema knows is checked here against the code:
the DaemonSet serves the view where procview-runc looks for it
(``procview.daemon.DEFAULT_MOUNTPOINT``, ``procview.DEFAULT_SECCOMP_SOCKET``),
installs the shim where containerd-procview.toml's ``BinaryName`` points,
and the RuntimeClass names the handler that file registers. No cluster runs
here (docs/kubernetes.md).
"""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions

import procview
from procview import daemon
from procview.runtime import oci_shim, oci_shim_install

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
MANIFESTS = sorted(DEPLOY.glob("*.yaml"))
CONTAINERD_SNIPPET = DEPLOY / "containerd-procview.toml"
# The oldest and the newest release the schemas cover: a field the
# manifests use must exist in the first and still exist in the last.
KUBERNETES_VERSIONS = [all_versions()[0], all_versions()[-1]]


def documents(path: Path) -> list[dict]:
    with open(path) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


ALL_DOCUMENTS = [(path.name, doc) for path in MANIFESTS for doc in documents(path)]


def the(kind: str, name: str) -> dict:
    (found,) = [doc for _, doc in ALL_DOCUMENTS if doc["kind"] == kind and doc["metadata"]["name"] == name]
    return found


def daemonset() -> dict:
    return the("DaemonSet", "procview")


def pod_spec() -> dict:
    return daemonset()["spec"]["template"]["spec"]


def container(name: str) -> dict:
    spec = pod_spec()
    (found,) = [c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == name]
    return found


def host_path(spec: dict, mounts: list[dict], path: str) -> tuple[str, dict]:
    """Where ``path`` inside a container with ``mounts`` is on the host,
    through the hostPath volume mounted deepest above it; and that mount."""
    candidates = [m for m in mounts if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert candidates, f"{path} is on no volume: the host never sees it"
    mount = max(candidates, key=lambda m: len(m["mountPath"]))
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert "hostPath" in volume, f"{path} is on volume {volume['name']}, not a hostPath"
    rest = path[len(mount["mountPath"]):]
    return volume["hostPath"]["path"].rstrip("/") + rest, mount


def option(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


# -- the schema ----------------------------------------------------------------------


def test_there_are_manifests_to_check():
    names = {path.name for path in MANIFESTS}
    assert {"procview.yaml", "runtimeclass.yaml", "example-pod.yaml"} <= names
    kinds = sorted(doc["kind"] for _, doc in ALL_DOCUMENTS)
    assert kinds == ["DaemonSet", "Namespace", "Pod", "RuntimeClass"]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name, document", ALL_DOCUMENTS, ids=[f"{n}:{d['kind']}" for n, d in ALL_DOCUMENTS])
def test_every_document_is_valid_for_the_kubernetes_api(name, document, version):
    kubernetes_validate.validate(document, version, strict=True)


# The same validation must be able to fail: one mistake of each kind.
def misspell_a_field(ds):
    ds["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["mountPropogation"] = "Bidirectional"


def give_a_wrong_type(ds):
    ds["spec"]["template"]["spec"]["hostPID"] = "true"


def drop_a_required_field(ds):
    del ds["spec"]["selector"]


def put_a_field_at_the_wrong_level(ds):
    ds["spec"]["template"]["spec"]["privileged"] = True  # it belongs in a container's securityContext


@pytest.mark.parametrize("mistake", [misspell_a_field, give_a_wrong_type, drop_a_required_field, put_a_field_at_the_wrong_level])
def test_a_broken_manifest_is_rejected(mistake):
    broken = copy.deepcopy(daemonset())
    mistake(broken)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_a_runtimeclass_without_handler_is_rejected():
    broken = copy.deepcopy(the("RuntimeClass", "procview"))
    del broken["handler"]
    with pytest.raises(kubernetes_validate.ValidationError, match="handler"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


# -- what the schema does not know: references inside the pod --------------------------


@pytest.mark.parametrize("name", ["procview", "install-procview-runc"])
def test_each_mount_names_a_volume_and_a_valid_propagation(name):
    volumes = {v["name"] for v in pod_spec()["volumes"]}
    for mount in container(name)["volumeMounts"]:
        assert mount["name"] in volumes
        # The schema takes any string here; the API server takes only these.
        assert mount.get("mountPropagation", "None") in {"None", "HostToContainer", "Bidirectional"}
    for volume in pod_spec()["volumes"]:
        assert volume["hostPath"]["type"] in {"", "DirectoryOrCreate", "Directory", "FileOrCreate", "File",
                                              "Socket", "CharDevice", "BlockDevice"}


def test_the_daemonset_runs_in_the_namespace_on_every_node():
    ds = daemonset()
    assert ds["metadata"]["namespace"] == the("Namespace", "procview-system")["metadata"]["name"]
    labels = ds["spec"]["template"]["metadata"]["labels"]
    assert ds["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert {"operator": "Exists"} in pod_spec()["tolerations"]  # every taint
    assert "nodeSelector" not in pod_spec() and "affinity" not in pod_spec()


# -- the DaemonSet against procview's code -----------------------------------------------


def serve_args() -> list[str]:
    command = container("procview")["command"] + container("procview").get("args", [])
    assert command[0].endswith("/procview") and command[1] == "serve", command
    return command[2:]


def test_the_view_is_mounted_on_the_hosts_default_mount_point_and_propagates():
    mountpoint = serve_args()[0]
    on_host, mount = host_path(pod_spec(), container("procview")["volumeMounts"], mountpoint)
    assert on_host == daemon.DEFAULT_MOUNTPOINT == oci_shim.DEFAULT_VIEW
    assert mount["mountPropagation"] == "Bidirectional"  # the FUSE mount reaches the host
    # procview serve refuses to mount over another filesystem, and a volume
    # mounted at the mount point itself would be one.
    assert mount["mountPath"] != mountpoint


def test_the_supervisor_listens_where_runtimes_hand_over_listeners():
    socket = option(serve_args(), "--seccomp-socket")
    on_host, _ = host_path(pod_spec(), container("procview")["volumeMounts"], socket)
    assert on_host == procview.DEFAULT_SECCOMP_SOCKET == oci_shim.DEFAULT_SECCOMP_SOCKET


def test_the_listener_holder_is_a_container_of_its_own_on_the_same_socket():
    """The holder must outlive a restart of the procview container, so it
    is another container of the pod, and serve never starts one itself."""
    holder = container("listener-holder")
    command = holder["command"]
    assert command[0].endswith("/procview") and command[1] == "listener-holder", command
    socket = option(serve_args(), "--seccomp-socket")
    assert option(command, "--socket") == socket
    assert "--no-spawn-holder" in serve_args()
    assert host_path(pod_spec(), holder["volumeMounts"], socket)[0] == \
        host_path(pod_spec(), container("procview")["volumeMounts"], socket)[0]
    assert holder["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_the_daemon_sees_every_process_and_cgroup_of_the_node():
    # FUSE and the supervisor give callers' pids in the mounting daemon's pid namespace.
    assert pod_spec()["hostPID"] is True
    assert container("procview")["securityContext"]["privileged"] is True
    on_host, _ = host_path(pod_spec(), container("procview")["volumeMounts"], "/sys/fs/cgroup")
    assert on_host == "/sys/fs/cgroup"


def test_readiness_is_a_read_through_the_mount():
    mountpoint = serve_args()[0]
    probe = container("procview")["readinessProbe"]["exec"]["command"]
    assert probe[-1].startswith(mountpoint + "/proc/")


def test_the_init_container_installs_the_shim_where_containerd_runs_it():
    init = container("install-procview-runc")
    command = init["command"]
    assert command[1:3] == ["-m", oci_shim_install.__name__]
    dest = command[-1]
    on_host, _ = host_path(pod_spec(), init["volumeMounts"], dest)
    assert f"{on_host}/bin/{oci_shim_install.LAUNCHER}" == BINARY_NAME
    # The launcher's interpreter is the node's, checked by a File hostPath.
    python = option(command, "--python")
    on_host, mount = host_path(pod_spec(), init["volumeMounts"], f"/host{python}")
    assert on_host == python and mount.get("readOnly") is True
    (volume,) = [v for v in pod_spec()["volumes"] if v["name"] == mount["name"]]
    assert volume["hostPath"]["type"] == "File"


def test_every_container_runs_this_versions_image_from_its_virtualenv():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    (venv,) = re.findall(r"python3 -m venv (\S+)", dockerfile)
    for name in ("procview", "listener-holder", "install-procview-runc"):
        image = container(name)["image"]
        assert image.rpartition(":")[2] == procview.__version__, image
        assert container(name)["command"][0].startswith(venv + "/bin/")


# -- the RuntimeClass, the example, and containerd's configuration --------------------------

# The runtime the containerd configuration registers: written by the
# containerd branch of issue 16 (deploy/kubernetes/containerd-procview.toml,
# tested with ctr in tests/integration/test_containerd.py). This test holds
# the three files together once both branches are merged; until then the
# file is missing here and the test fails saying so.
BINARY_NAME = "/opt/procview/bin/procview-runc"
CRI = "io.containerd.grpc.v1.cri"


def test_the_runtimeclass_handler_is_the_runtime_containerd_registers():
    assert CONTAINERD_SNIPPET.exists(), (f"{CONTAINERD_SNIPPET.name} is missing: it comes from the containerd "
                                         "branch of issue 16; merge it before running this test")
    config = tomllib.loads(CONTAINERD_SNIPPET.read_text())
    runtimes = config["plugins"][CRI]["containerd"]["runtimes"]
    shims = {name: runtime for name, runtime in runtimes.items()
             if runtime.get("options", {}).get("BinaryName") == BINARY_NAME}
    assert list(shims) == [the("RuntimeClass", "procview")["handler"]]
    (runtime,) = shims.values()
    assert runtime["runtime_type"] == "io.containerd.runc.v2"


def test_the_example_pod_uses_the_runtimeclass_with_limits():
    pod = the("Pod", "procview-example")
    assert pod["spec"]["runtimeClassName"] == the("RuntimeClass", "procview")["metadata"]["name"]
    for c in pod["spec"]["containers"]:
        assert {"cpu", "memory"} <= set(c["resources"]["limits"])
