"""Kubernetes ``v1`` Pod manifests: read, checked field by field, and
turned into what procview runs (pure: text in, named tuples out).

procview takes the part of the Pod API a single host can honour:

    apiVersion: v1
    kind: Pod
    metadata: {name, namespace, labels, annotations}
    spec:
      restartPolicy: Always | OnFailure | Never
      hostname, terminationGracePeriodSeconds
      volumes: [{name, hostPath: {path, type}, emptyDir: {medium, sizeLimit}}]
      containers:
      - name, image, command, args, workingDir, imagePullPolicy
        env: [{name, value}]
        ports: [{containerPort, hostPort, protocol, name}]
        resources: {limits: {memory, cpu}, requests: {memory, cpu}}
        lifecycle: {postStart: {exec: {command}}, preStop: {exec: {command}}}
        volumeMounts: [{name, mountPath, readOnly}]

Any other field is refused with its path (``spec.containers[0].foo``),
whether Kubernetes knows it or not: a manifest that asks for something
procview would silently not do is an error, not a surprise later. So is
a malformed quantity, two containers of one name, a mount of an unknown
volume. ``status`` (as ``procview get pod -o yaml`` prints it) is ignored.
"""

from __future__ import annotations

import re
from collections import namedtuple
from decimal import ROUND_CEILING, Decimal, InvalidOperation

# Kubernetes' names: a DNS-1123 label for containers, volumes and ports; a
# pod's name is a DNS-1123 subdomain, kept to procview's own name rule too.
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
RESTART_POLICIES = ("Always", "OnFailure", "Never")


class ManifestError(ValueError):
    """A manifest procview cannot run (one line: where, and what is wrong)."""


ContainerSpec = namedtuple("ContainerSpec", (
    "name", "image", "command", "args", "env", "working_dir", "ports", "memory_limit", "cpu_limit",
    "memory_request", "cpu_request", "post_start", "pre_stop", "mounts",
))
ContainerSpec.__doc__ = """One container of a pod. ``command`` replaces the image's
entrypoint, ``args`` its Cmd (None: the image's); ``env``: "KEY=VALUE"
strings; ``ports``: (container port, host port or None, "tcp"|"udp");
limits and requests in bytes and cores (Decimal), None if not given;
``post_start``/``pre_stop``: the hook's exec command (argv), or None;
``mounts``: (volume name, path inside, read-only)."""

PodSpec = namedtuple("PodSpec", ("name", "namespace", "labels", "restart_policy", "hostname", "grace_seconds",
                                 "volumes", "containers", "source"))
PodSpec.__doc__ = """One Pod manifest, checked. ``volumes``: name -> ("hostPath", path,
hostPath type) or ("emptyDir", None, ""); ``source``: the document as given."""


# -- quantities ------------------------------------------------------------------

_QUANTITY = re.compile(r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?[0-9]+|[kMGTPEm])?")
_SUFFIX = {
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60, "k": Decimal(10) ** 3, "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9, "T": Decimal(10) ** 12, "P": Decimal(10) ** 15, "E": Decimal(10) ** 18,
    "m": Decimal(10) ** -3, None: Decimal(1),
}


def parse_quantity(value) -> Decimal:
    """A Kubernetes quantity (``256Mi``, ``500m``, ``1.5``, ``1e9``, ``2``)
    as a number; ValueError if it is none."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(value)
    text = str(value).strip()
    match = _QUANTITY.fullmatch(text)
    if not match:
        raise ValueError(value)
    try:
        number = Decimal(match.group(1))
    except InvalidOperation:
        raise ValueError(value) from None
    suffix = match.group(2)
    if suffix and suffix[0] in "eE" and len(suffix) > 1:
        result = number * Decimal(10) ** int(suffix[1:])
    else:
        result = number * _SUFFIX[suffix]
    if result < 0:
        raise ValueError(value)
    return result


def memory_bytes(value, where: str) -> int:
    try:
        amount = parse_quantity(value).to_integral_value(rounding=ROUND_CEILING)
    except ValueError:
        raise ManifestError(f"{where}: invalid quantity {value!r} (expected e.g. 256Mi or 1G)") from None
    if amount <= 0:
        raise ManifestError(f"{where}: must be more than 0")
    return int(amount)


def cpu_cores(value, where: str) -> Decimal:
    try:
        cores = parse_quantity(value)
    except ValueError:
        raise ManifestError(f"{where}: invalid quantity {value!r} (expected e.g. 500m or 2)") from None
    if cores <= 0:
        raise ManifestError(f"{where}: must be more than 0")
    return cores


# -- the walk ------------------------------------------------------------------


def _mapping(value, where: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict:
    if not isinstance(value, dict):
        raise ManifestError(f"{where}: expected a mapping")
    for key in value:
        if key not in allowed:
            path = f"{where}.{key}" if where else str(key)
            raise ManifestError(f"{path}: unknown field, or one procview does not support")
    for key in required:
        if value.get(key) in (None, "", [], {}):
            raise ManifestError(f"{where}.{key}: required" if where else f"{key}: required")
    return value


def _list(value, where: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ManifestError(f"{where}: expected a list")
    return value


def _string(value, where: str) -> str:
    if not isinstance(value, str):
        raise ManifestError(f"{where}: expected a string")
    return value


def _strings(value, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(_string(item, f"{where}[{i}]") for i, item in enumerate(_list(value, where)))


def _name(value, where: str, pattern=DNS_LABEL, limit: int = 63) -> str:
    text = _string(value, where)
    if len(text) > limit or not pattern.fullmatch(text):
        raise ManifestError(f"{where}: invalid name {text!r} (lower-case letters, digits and '-', at most {limit})")
    return text


def parse_pod(document, where: str = "") -> PodSpec:
    """One manifest document (a parsed mapping) as a PodSpec."""
    top = _mapping(document, "", ("apiVersion", "kind", "metadata", "spec", "status"), ("apiVersion", "kind", "metadata", "spec"))
    if top["apiVersion"] != "v1" or top["kind"] != "Pod":
        raise ManifestError(f"{where}kind {top.get('kind')!r} of {top.get('apiVersion')!r}: only v1 Pod is supported")
    metadata = _mapping(top["metadata"], "metadata", ("name", "namespace", "labels", "annotations"), ("name",))
    name = _name(metadata["name"], "metadata.name", DNS_SUBDOMAIN, 253)
    namespace = _string(metadata.get("namespace", "default"), "metadata.namespace")
    labels = metadata.get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise ManifestError("metadata.labels: expected a mapping of strings")
    spec = _mapping(top["spec"], "spec", ("containers", "restartPolicy", "hostname", "volumes",
                                          "terminationGracePeriodSeconds"), ("containers",))
    restart = spec.get("restartPolicy", "Always")
    if restart not in RESTART_POLICIES:
        raise ManifestError(f"spec.restartPolicy: {restart!r} is not one of {', '.join(RESTART_POLICIES)}")
    hostname = _name(spec["hostname"], "spec.hostname") if spec.get("hostname") is not None else None
    grace = spec.get("terminationGracePeriodSeconds", 30)
    if isinstance(grace, bool) or not isinstance(grace, int) or grace < 0:
        raise ManifestError("spec.terminationGracePeriodSeconds: expected a whole number of seconds, 0 or more")
    volumes = _volumes(spec.get("volumes"))
    containers, names = [], set()
    for i, item in enumerate(_list(spec["containers"], "spec.containers")):
        container = _container(item, f"spec.containers[{i}]", volumes)
        if container.name in names:
            raise ManifestError(f"spec.containers[{i}].name: {container.name!r} is the name of another container")
        names.add(container.name)
        containers.append(container)
    if not containers:
        raise ManifestError("spec.containers: required")
    return PodSpec(name, namespace, dict(labels), restart, hostname, grace, volumes, tuple(containers), document)


def _volumes(value) -> dict:
    volumes = {}
    for i, item in enumerate(_list(value, "spec.volumes")):
        where = f"spec.volumes[{i}]"
        volume = _mapping(item, where, ("name", "hostPath", "emptyDir"), ("name",))
        name = _name(volume["name"], f"{where}.name")
        if name in volumes:
            raise ManifestError(f"{where}.name: {name!r} is the name of another volume")
        if ("hostPath" in volume) == ("emptyDir" in volume):
            raise ManifestError(f"{where}: exactly one of hostPath and emptyDir (procview supports no other kind)")
        if "hostPath" in volume:
            host = _mapping(volume["hostPath"], f"{where}.hostPath", ("path", "type"), ("path",))
            path = _string(host["path"], f"{where}.hostPath.path")
            if not path.startswith("/"):
                raise ManifestError(f"{where}.hostPath.path: must be absolute")
            kind = host.get("type", "")
            if kind not in ("", "Directory", "DirectoryOrCreate", "File", "FileOrCreate"):
                raise ManifestError(f"{where}.hostPath.type: {kind!r} is not supported")
            volumes[name] = ("hostPath", path, kind)
        else:
            _mapping(volume["emptyDir"] or {}, f"{where}.emptyDir", ("medium", "sizeLimit"))
            volumes[name] = ("emptyDir", None, "")
    return volumes


def _container(value, where: str, volumes: dict) -> ContainerSpec:
    item = _mapping(value, where, ("name", "image", "command", "args", "env", "workingDir", "ports", "resources",
                                   "lifecycle", "volumeMounts", "imagePullPolicy"), ("name", "image"))
    name = _name(item["name"], f"{where}.name")
    image = _string(item["image"], f"{where}.image")
    env = []
    for i, entry in enumerate(_list(item.get("env"), f"{where}.env")):
        pair = _mapping(entry, f"{where}.env[{i}]", ("name", "value"), ("name",))
        env.append(f"{_string(pair['name'], f'{where}.env[{i}].name')}={_string(pair.get('value', ''), f'{where}.env[{i}].value')}")
    working_dir = _string(item["workingDir"], f"{where}.workingDir") if item.get("workingDir") else None
    if working_dir is not None and not working_dir.startswith("/"):
        raise ManifestError(f"{where}.workingDir: must be absolute")
    ports = []
    for i, entry in enumerate(_list(item.get("ports"), f"{where}.ports")):
        port = _mapping(entry, f"{where}.ports[{i}]", ("containerPort", "hostPort", "protocol", "name"), ("containerPort",))
        container_port = _port(port["containerPort"], f"{where}.ports[{i}].containerPort")
        host_port = _port(port["hostPort"], f"{where}.ports[{i}].hostPort") if port.get("hostPort") else None
        protocol = port.get("protocol", "TCP")
        if protocol not in ("TCP", "UDP"):
            raise ManifestError(f"{where}.ports[{i}].protocol: {protocol!r} is not TCP or UDP")
        ports.append((container_port, host_port, protocol.lower()))
    resources = _mapping(item.get("resources") or {}, f"{where}.resources", ("limits", "requests"))
    amounts = {}
    for kind in ("limits", "requests"):
        given = _mapping(resources.get(kind) or {}, f"{where}.resources.{kind}", ("memory", "cpu"))
        amounts[kind] = (
            memory_bytes(given["memory"], f"{where}.resources.{kind}.memory") if given.get("memory") is not None else None,
            cpu_cores(given["cpu"], f"{where}.resources.{kind}.cpu") if given.get("cpu") is not None else None,
        )
    lifecycle = _mapping(item.get("lifecycle") or {}, f"{where}.lifecycle", ("postStart", "preStop"))
    hooks = {}
    for hook in ("postStart", "preStop"):
        if lifecycle.get(hook) is None:
            hooks[hook] = None
            continue
        handler = _mapping(lifecycle[hook], f"{where}.lifecycle.{hook}", ("exec",), ("exec",))
        action = _mapping(handler["exec"], f"{where}.lifecycle.{hook}.exec", ("command",), ("command",))
        hooks[hook] = _strings(action["command"], f"{where}.lifecycle.{hook}.exec.command")
    mounts = []
    for i, entry in enumerate(_list(item.get("volumeMounts"), f"{where}.volumeMounts")):
        mount = _mapping(entry, f"{where}.volumeMounts[{i}]", ("name", "mountPath", "readOnly"), ("name", "mountPath"))
        if mount["name"] not in volumes:
            raise ManifestError(f"{where}.volumeMounts[{i}].name: no volume {mount['name']!r} in spec.volumes")
        path = _string(mount["mountPath"], f"{where}.volumeMounts[{i}].mountPath")
        if not path.startswith("/"):
            raise ManifestError(f"{where}.volumeMounts[{i}].mountPath: must be absolute")
        mounts.append((mount["name"], path, bool(mount.get("readOnly", False))))
    return ContainerSpec(
        name, image, _strings(item.get("command"), f"{where}.command"), _strings(item.get("args"), f"{where}.args"),
        tuple(env), working_dir, tuple(ports), amounts["limits"][0], amounts["limits"][1], amounts["requests"][0],
        amounts["requests"][1], hooks["postStart"], hooks["preStop"], tuple(mounts),
    )


def _port(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ManifestError(f"{where}: expected a port number, 1-65535")
    return value


def load(text: str, source: str) -> list[PodSpec]:
    """Every Pod of a YAML or JSON file (JSON is YAML; ``---`` separates
    documents; empty documents are skipped). ManifestError names the
    file, the document and the field; two pods of one name are refused."""
    import yaml

    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        raise ManifestError(f"{source}: not YAML or JSON{at}: {getattr(exc, 'problem', None) or exc}") from None
    pods, names = [], set()
    for index, document in enumerate(documents):
        label = document.get("metadata", {}).get("name") if isinstance(document, dict) and isinstance(document.get("metadata"), dict) else None
        try:
            pod = parse_pod(document)
        except ManifestError as exc:
            raise ManifestError(f"{source}: document {index + 1}{f' (pod {label})' if label else ''}: {exc}") from None
        if pod.name in names:
            raise ManifestError(f"{source}: document {index + 1}: a second pod named {pod.name}")
        names.add(pod.name)
        pods.append(pod)
    if not pods:
        raise ManifestError(f"{source}: no Pod in it")
    return pods
