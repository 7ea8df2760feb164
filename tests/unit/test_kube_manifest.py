"""Kubernetes Pod manifests as procview reads them (runtime/kube/manifest.py)."""

from decimal import Decimal

import pytest

from procview.runtime.kube.manifest import ManifestError, load, parse_quantity

POD = """
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  restartPolicy: OnFailure
  hostname: front
  terminationGracePeriodSeconds: 5
  volumes:
  - name: data
    hostPath: {path: /srv/data, type: DirectoryOrCreate}
  - name: scratch
    emptyDir: {}
  containers:
  - name: app
    image: busybox
    command: [sh, -c]
    args: ["echo $GREETING; sleep 3600"]
    env: [{name: GREETING, value: hello}]
    workingDir: /work
    ports: [{containerPort: 80, hostPort: 8080}, {containerPort: 53, protocol: UDP}]
    resources:
      limits: {memory: 256Mi, cpu: 500m}
      requests: {memory: 128M, cpu: "0.25"}
    lifecycle:
      postStart: {exec: {command: [touch, /tmp/started]}}
      preStop: {exec: {command: [sh, -c, "echo bye"]}}
    volumeMounts:
    - {name: data, mountPath: /data, readOnly: true}
    - {name: scratch, mountPath: /scratch}
  - name: side
    image: busybox
"""


def test_a_pod_manifest_in_full():
    (pod,) = load(POD, "pod.yaml")
    assert (pod.name, pod.namespace, pod.labels, pod.restart_policy, pod.hostname, pod.grace_seconds) == (
        "web", "default", {"app": "web"}, "OnFailure", "front", 5)
    assert pod.volumes == {"data": ("hostPath", "/srv/data", "DirectoryOrCreate"), "scratch": ("emptyDir", None, "")}
    app, side = pod.containers
    assert app.command == ("sh", "-c") and app.args == ("echo $GREETING; sleep 3600",)
    assert app.env == ("GREETING=hello",) and app.working_dir == "/work"
    assert app.ports == ((80, 8080, "tcp"), (53, None, "udp"))
    assert (app.memory_limit, app.cpu_limit) == (256 << 20, Decimal("0.5"))
    assert (app.memory_request, app.cpu_request) == (128_000_000, Decimal("0.25"))
    assert app.post_start == ("touch", "/tmp/started") and app.pre_stop == ("sh", "-c", "echo bye")
    assert app.mounts == (("data", "/data", True), ("scratch", "/scratch", False))
    assert side.command is None and side.args is None and side.memory_limit is None and side.mounts == ()


def test_json_and_several_documents():
    text = '{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}'
    yaml_text = text + "\n---\n" + text.replace('"a"', '"b"') + "\n---\n"
    assert [pod.name for pod in load(yaml_text, "f")] == ["a", "b"]
    assert load(text, "f")[0].restart_policy == "Always"  # Kubernetes' default


@pytest.mark.parametrize("text, value", [
    ("256Mi", 256 << 20), ("1Gi", 1 << 30), ("500M", 500_000_000), ("1e9", 10 ** 9), ("1E3", 1000),
    ("1048576", 1 << 20), ("1.5Gi", 3 << 29), ("500m", Decimal("0.5")), ("2", 2), ("0.25", Decimal("0.25")), ("100k", 100_000),
])
def test_quantities_as_kubernetes_writes_them(text, value):
    assert parse_quantity(text) == value


@pytest.mark.parametrize("change, message", [
    (("    image: busybox\n    command:", "    image: busybox\n    imagePolicy: x\n    command:"),
     "spec.containers[0].imagePolicy: unknown field, or one procview does not support"),
    (("memory: 256Mi", "memory: lots"), "spec.containers[0].resources.limits.memory: invalid quantity 'lots'"),
    (("cpu: 500m", "cpu: -1"), "spec.containers[0].resources.limits.cpu: invalid quantity -1"),
    (("name: side", "name: app"), "spec.containers[1].name: 'app' is the name of another container"),
    (("  - name: side\n    image: busybox\n", "  - name: side\n"), "spec.containers[1].image: required"),
    (("restartPolicy: OnFailure", "restartPolicy: Sometimes"), "spec.restartPolicy: 'Sometimes' is not one of"),
    (("{name: scratch, mountPath: /scratch}", "{name: nothing, mountPath: /x}"), "no volume 'nothing' in spec.volumes"),
    (("hostPort: 8080", "hostPort: 70000"), "spec.containers[0].ports[0].hostPort: expected a port number"),
    (("name: web", "name: Web_1"), "metadata.name: invalid name 'Web_1'"),
    (("kind: Pod", "kind: Deployment"), "only v1 Pod is supported"),
    (("  hostname: front\n", "  hostname: front\n  nodeName: n1\n"), "spec.nodeName: unknown field"),
    (("emptyDir: {}", "configMap: {name: x}"), "spec.volumes[1].configMap: unknown field"),
])
def test_a_bad_manifest_is_one_line_naming_the_field(change, message):
    old, new = change
    assert old in POD
    with pytest.raises(ManifestError) as caught:
        load(POD.replace(old, new, 1), "pod.yaml")
    text = str(caught.value)
    assert "\n" not in text and text.startswith("pod.yaml: document 1") and message in text, text


@pytest.mark.parametrize("text, message", [
    ("", "no Pod in it"),
    ("a: [", "not YAML or JSON"),
    ("- 1\n", "expected a mapping"),
    (POD + "---\n" + POD, "a second pod named web"),
])
def test_files_that_are_no_pods(text, message):
    with pytest.raises(ManifestError, match=message):
        load(text, "f")


@pytest.mark.parametrize("command, args, argv", [
    (None, None, ["/entry", "default-arg"]),  # the image's entrypoint and Cmd
    (None, ("x",), ["/entry", "x"]),  # args replace the Cmd
    (("sh", "-c"), None, ["sh", "-c"]),  # command replaces both
    (("sh", "-c"), ("echo",), ["sh", "-c", "echo"]),
])
def test_command_and_args_combine_with_the_image_as_in_kubernetes(command, args, argv):
    from procview.runtime.container import _command

    image = {"Entrypoint": ["/entry"], "Cmd": ["default-arg"]}
    assert _command(image, args or (), command) == argv
