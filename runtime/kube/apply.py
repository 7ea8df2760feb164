"""``procview apply -f`` and ``delete``: converge the pods that run to the
Pod manifests given (Kubernetes' declarative model, on one host).

The reconcile design (docs/pods.md):

- **apply converges once**, from what is declared to what runs, pod by
  pod: a pod that does not exist is made (``pods.create``, then one
  member per container); a container whose spec changed (its digest, kept
  in its record) is replaced; a container that is missing (removed, or
  its record lost) is started; a container no longer declared is
  removed; a pod whose pod-level spec changed (host name, ports, volumes,
  restart policy) is made again. What is unchanged is left alone, so
  applying the same file twice changes nothing.
- **each container's monitor is its control loop** afterwards
  (runtime/lifecycle.py): it restarts the container by the pod's
  ``restartPolicy`` with Kubernetes' back-off, and keeps its
  ``restartCount`` and last state.
- **``procview controller``** (``reconcile``) converges every applied pod
  to its last applied manifest again, on a period: it starts what no
  monitor looks after any more. It keeps no state of its own, so its
  restart restarts nothing.

Everything is checked before anything is done: every document (manifest.py),
every image (pulled if missing), every ``hostPath`` that must exist, every ``hostPort`` (free,
or held by the pod being re-applied). A file with one bad pod changes
nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex

from procview._io import replace_file
from procview.runtime.kube.manifest import ContainerSpec, ManifestError, PodSpec

MANAGED = "procview apply"  # a pod's options["managed-by"]
RESTART = {"Always": "always", "OnFailure": "on-failure", "Never": "no"}


class ApplyError(Exception):
    """What apply or delete could not do (one line; exit 1, as kubectl)."""


def container_name(pod: str, container: str) -> str:
    """The procview container of a pod's container: ``POD.NAME``."""
    return f"{pod}.{container}"


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def pod_digest(spec: PodSpec) -> str:
    """What, if it changes, makes the pod itself (its infra) made again."""
    ports = sorted((c.ports for c in spec.containers), key=str)
    return _digest([spec.restart_policy, spec.hostname, spec.volumes, ports])


def container_digest(container: ContainerSpec) -> str:
    return _digest(container._asdict())


def publish_specs(spec: PodSpec) -> list[str]:
    """``-p`` specs of the pod's ``hostPort``s (published on its infra)."""
    return [f"{host}:{port}/{protocol}" for c in spec.containers for port, host, protocol in c.ports if host]


def limits_of(memory: int | None, cpus, where: str):
    """``Limits`` of a memory size in bytes and a number of cores (either
    may be None), as ``procview run --memory --cpus`` would parse them."""
    from procview.host import HostFiles
    from procview.runtime.limits import LimitError, parse_limits

    try:
        return parse_limits(HostFiles().online_cpus(), memory=str(memory) if memory else None,
                            cpus=str(cpus) if cpus else None)
    except LimitError as exc:
        raise ApplyError(f"{where}: {exc}") from None


def pod_limits(spec: PodSpec) -> tuple:
    """The pod cgroup's limits, as the kubelet sets them: the sum of its
    containers' limits, where every container has one (else none)."""
    memory = [c.memory_limit for c in spec.containers]
    cpus = [c.cpu_limit for c in spec.containers]
    return (sum(memory) if None not in memory else None, sum(cpus) if None not in cpus else None)


# -- checks before anything is done ----------------------------------------------------


def preflight(root: str, specs: list[PodSpec]) -> None:
    """Every image there, every host path usable, every host port free
    (or the re-applied pod's own): ApplyError naming the first that is not."""
    from procview.runtime.container import RunError, ensure_image
    from procview.runtime.network.ports import PortError, parse_publish, reserve
    from procview.runtime.pods import PodError, find

    for spec in specs:
        for container in spec.containers:
            # Kubernetes' imagePullPolicy IfNotPresent: pulled if missing
            # (its output on stderr), before anything runs.
            try:
                ensure_image(root, container.image)
            except RunError as exc:
                raise ApplyError(f"pod {spec.name}: container {container.name}: {exc}") from None
        for name, (kind, path, check) in spec.volumes.items():
            if kind != "hostPath":
                continue
            if check in ("", "Directory") and not os.path.isdir(path) and not (check == "" and os.path.exists(path)):
                raise ApplyError(f"pod {spec.name}: volume {name}: hostPath {path} does not exist")
            if check == "File" and not os.path.isfile(path):
                raise ApplyError(f"pod {spec.name}: volume {name}: hostPath {path} is not a file")
        try:
            existing = find(root, spec.name)
        except PodError:
            existing = None
        held = set(existing.options.get("publish", [])) if existing else set()
        for text in publish_specs(spec):
            if text in held:
                continue
            try:
                sock, _ = reserve(parse_publish(text))
            except PortError as exc:
                raise ApplyError(f"pod {spec.name}: hostPort: {exc}") from None
            sock.close()


# -- converging ---------------------------------------------------------------------------


def apply(root: str, specs: list[PodSpec], report, view: dict | None = None) -> None:
    """Converge every pod of ``specs``; ``report(line)`` says what was
    done to each (``pod/NAME created|configured|unchanged``, as kubectl).
    ``view``: ContainerConfig's ``view``, ``use_view`` and
    ``seccomp_socket`` for the containers (default: procview run's)."""
    preflight(root, specs)
    for spec in specs:
        report(f"pod/{spec.name} {converge(root, spec, view or {})}")


def converge(root: str, spec: PodSpec, view: dict) -> str:
    from procview.runtime.lifecycle import UNKNOWN, RecordStore
    from procview.runtime.pods import PodError, find, members

    try:
        pod = find(root, spec.name)
    except PodError:
        pod = None
    if pod is not None and pod.options.get("managed-by") != MANAGED:
        raise ApplyError(f"pod {spec.name} exists and was made by procview pod create, not by apply")
    if pod is not None and (pod.options.get("digest") != pod_digest(spec) or not _holder_runs(root, pod)):
        # Changed at the pod's level, or its infra (the namespaces' holder,
        # Kubernetes' sandbox) is gone: the pod is made again, as the
        # kubelet makes a new sandbox.
        _remove_pod(root, pod, spec.grace_seconds)
        pod = None
    if pod is None:
        pod = _create_pod(root, spec, view)
        for container in spec.containers:
            _start(root, pod, spec, container, view)
        return "created"
    _save_manifest(root, pod, spec, view)
    store = RecordStore(root)
    running = {record.name: record for record in members(root, pod, store)}
    wanted = {container_name(spec.name, c.name): c for c in spec.containers}
    def stale(record, declared) -> bool:
        # Not declared any more, changed, or its monitor is gone (so
        # nothing would restart it).
        return declared is None or record.config.get("kube-digest") != container_digest(declared) or record.phase == UNKNOWN

    to_remove = [record for name, record in running.items() if stale(record, wanted.get(name))]
    to_start = [container for name, container in wanted.items() if name not in running or stale(running[name], container)]
    if not to_remove and not to_start:
        return "unchanged"
    for record in to_remove:
        _remove_container(root, store, record.id, spec.grace_seconds)
    _set_pod_limits(pod, spec)  # a changed limit changes the pod's sum
    for container in to_start:
        _start(root, pod, spec, container, view)
    return "configured"


def _holder_runs(root: str, pod) -> bool:
    from procview.runtime.lifecycle import RUNNING
    from procview.runtime.pods import infra

    holder = infra(root, pod)
    return holder is not None and holder.phase == RUNNING


def _create_pod(root: str, spec: PodSpec, view: dict):
    from procview.runtime.network.ports import parse_publish
    from procview.runtime.pods import PodError, create

    limits = limits_of(*pod_limits(spec), f"pod {spec.name}")
    publish = publish_specs(spec)
    options = {"managed-by": MANAGED, "digest": pod_digest(spec), "publish": publish}
    network = os.environ.get("PROCVIEW_NETWORK") or "bridge"
    try:
        pod = create(root, spec.name, limits, options, hostname=spec.hostname or spec.name,
                     network=network, publish=tuple(parse_publish(text) for text in publish))
    except PodError as exc:
        raise ApplyError(str(exc)) from None
    _save_manifest(root, pod, spec, view)
    for name, (kind, _path, _check) in spec.volumes.items():
        if kind == "emptyDir":
            os.makedirs(_empty_dir(root, pod, name))
    return pod


def _save_manifest(root: str, pod, spec: PodSpec, view: dict) -> None:
    """What was applied (``get -o`` shows it, ``reconcile`` converges to
    it again), and the view the containers were given."""
    from procview.runtime.pods import pods_root

    directory = os.path.join(pods_root(root), pod.id)
    replace_file(os.path.join(directory, "manifest.json"), json.dumps(spec.source))
    replace_file(os.path.join(directory, "view.json"), json.dumps(view))


def reconcile(root: str, report) -> None:
    """Converge every applied pod to what was last applied to it again:
    what the controller does on every pass (``procview controller``).
    After a monitor was killed, a member removed by hand, a host restart:
    the missing containers are started; what runs as declared is left
    alone. A pod whose manifest cannot be read is reported and skipped."""
    from procview.runtime.kube.manifest import parse_pod
    from procview.runtime.pods import everyone, pods_root

    for pod in everyone(root):
        if pod.options.get("managed-by") != MANAGED:
            continue
        directory = os.path.join(pods_root(root), pod.id)
        try:
            with open(os.path.join(directory, "manifest.json")) as f:
                spec = parse_pod(json.load(f))
            with open(os.path.join(directory, "view.json")) as f:
                view = json.load(f)
        except FileNotFoundError:
            continue  # being made or removed
        except (OSError, ValueError, ManifestError) as exc:
            report(f"procview: warning: pod {pod.name}: {exc}")
            continue
        try:
            outcome = converge(root, spec, view)
        except ApplyError as exc:
            report(f"procview: warning: {exc}")
            continue
        if outcome != "unchanged":
            report(f"pod/{spec.name} {outcome}")


def _empty_dir(root: str, pod, name: str) -> str:
    from procview.runtime.pods import pods_root

    return os.path.join(pods_root(root), pod.id, "volumes", name)


def _set_pod_limits(pod, spec: PodSpec) -> None:
    """A changed container limit changes the pod's sum: written in place."""
    from procview.cgroups import discover
    from procview.runtime.limits import apply_limits

    memory, cpus = pod_limits(spec)
    if memory is None and cpus is None:
        return
    apply_limits(discover().cgroup(pod.cgroup), limits_of(memory, cpus, f"pod {spec.name}"))


def _volumes(root: str, pod, spec: PodSpec, container: ContainerSpec) -> tuple:
    from procview.runtime.rootfs import Volume

    volumes = []
    for name, target, read_only in container.mounts:
        kind, path, check = spec.volumes[name]
        if kind == "emptyDir":
            source = _empty_dir(root, pod, name)
        else:
            source = path
            if check == "DirectoryOrCreate":
                os.makedirs(path, exist_ok=True)
            elif check == "FileOrCreate" and not os.path.exists(path):
                open(path, "a").close()
        volumes.append(Volume(source, target, read_only))
    return tuple(volumes)


def _start(root: str, pod, spec: PodSpec, container: ContainerSpec, view: dict) -> None:
    """One container of the pod, a detached member under its monitor."""
    from procview.runtime.container import ContainerConfig, RunError
    from procview.runtime.lifecycle import RestartPolicy, start_detached
    from procview.runtime.pods import infra_name

    name = container_name(spec.name, container.name)
    limits = limits_of(container.memory_limit, container.cpu_limit, f"pod {spec.name}: container {container.name}")
    config = ContainerConfig(
        image=container.image, command=container.args or (), entrypoint=container.command,
        env=container.env, workdir=container.working_dir, name=name, volumes=_volumes(root, pod, spec, container),
        network=f"container:{infra_name(pod.id)}", limits=limits, pod=spec.name, cgroup_parent=pod.cgroup, **view,
    )
    options = {"image": container.image, "pod": spec.name, "kube-digest": container_digest(container),
               "kube-container": container.name}
    # As procview run keeps them: exec finds the same view and supervisor.
    options.update({key: value for key, value in (("view", view.get("view")), ("no_view", not view.get("use_view", True)),
                                                  ("seccomp_socket", view.get("seccomp_socket"))) if value})
    argv = list(container.command or ()) + list(container.args or ())
    hook = (lambda argv_: shlex.join(argv_) if argv_ else None)
    try:
        start_detached(config, root, argv, options, restart=RestartPolicy.parse(RESTART[spec.restart_policy], "kubernetes"),
                       post_start=hook(container.post_start), pre_stop=hook(container.pre_stop))
    except RunError as exc:
        raise ApplyError(f"pod {spec.name}: container {container.name}: {exc}") from None


# -- deleting --------------------------------------------------------------------------------


def delete(root: str, names: list[str], report, grace: float | None = None) -> bool:
    """Delete the pods ``names`` as Kubernetes does: each container's
    preStop hook and SIGTERM within the grace period, SIGKILL after, then
    everything of the pod. Returns False if any was not found."""
    from procview.runtime.pods import PodError, find

    found_all = True
    for name in names:
        try:
            pod = find(root, name)
        except PodError as exc:
            report(f"procview: error: {exc}", error=True)
            found_all = False
            continue
        _remove_pod(root, pod, grace if grace is not None else _grace(root, pod))
        report(f'pod "{pod.name}" deleted')
    return found_all


def _grace(root: str, pod) -> float:
    from procview.runtime.pods import pods_root

    try:
        with open(os.path.join(pods_root(root), pod.id, "manifest.json")) as f:
            return float(json.load(f)["spec"].get("terminationGracePeriodSeconds", 30))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return 30.0


def _remove_pod(root: str, pod, grace: float) -> None:
    from procview.runtime.pods import remove, stop

    stop(root, pod, grace)
    remove(root, pod, force=True)


def _remove_container(root: str, store, container_id: str, grace: float) -> None:
    from procview.runtime.lifecycle import remove, stop

    stop(store, container_id, grace, root)
    remove(store, container_id, True, root)



__all__ = ["ApplyError", "ManifestError", "apply", "delete", "container_name"]
