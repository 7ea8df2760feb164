"""Pods: containers that share a network, IPC and UTS namespaces and a
cgroup, around an infra holder (Kubernetes' pod, as ``podman pod`` makes
one).

A pod is made in three steps (``create``):

1. **Its cgroup**, ``/procview/pod-ID12``, with the pod's limits
   (``--memory``, ``--cpus``): every container of the pod has its cgroup
   below it, so the pod's limits bound all of them together, and a
   container's own limits, if it has any, bound it alone. procview's view
   takes the tightest limit of a cgroup and its ancestors, so ``free``
   inside a container shows its own limit, or the pod's where it has none.
2. **Its infra container** (``ID12-infra``): a detached procview container
   whose only job is to hold the namespaces, as Kubernetes' ``pause``
   container: the built-in busybox image, ``sleep`` under procview's tiny
   init, on the pod's network (``-p`` ports are published on it), with
   the pod's host name, and IPC and UTS namespaces of its own.
3. **Its record**, ``ROOT/pods/ID/pod.json`` (``Pod`` below).

``procview run --pod P`` then starts a *member*: its pid 1 joins the
infra's network, IPC and UTS namespaces (``setns``) instead of making
its own, and keeps its own mount, pid and cgroup namespaces, so the
members of a pod reach each other on ``localhost``, share the host name
and System V IPC, and each sees only its own files and processes. The
record of a member says ``"pod": NAME`` among its options.

``remove`` (``procview pod rm``) removes the members, then the infra, then
the cgroup and the record: nothing of the pod is left.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from collections import namedtuple

from procview._io import remove_tree, replace_file
from procview.runtime.lifecycle import LIVE_PHASES, NAME_PATTERN, RUNNING, LifecycleError, RecordStore

# The infra's command: it waits, as pause does, under procview's tiny init
# (which reaps and forwards SIGTERM, so a pod stops at once).
INFRA_COMMAND = ("sleep", "2147483647")
INFRA_IMAGE = "busybox"


class PodError(Exception):
    """A pod that cannot be made, found or removed (one line; exit 125)."""


class Pod(namedtuple("Pod", "id name created hostname cgroup infra_id options")):
    """One pod. ``cgroup``: its cgroup's path (``/procview/pod-ID12``);
    ``infra_id``: its infra container's id; ``options``: what ``pod
    create`` was given (network, ports, limits), for ``inspect``."""

    __slots__ = ()


def pods_root(root: str) -> str:
    return os.path.join(root, "pods")


def infra_name(pod_id: str) -> str:
    return f"{pod_id[:12]}-infra"


@contextlib.contextmanager
def _locked(root: str):
    """Held while a pod is made or removed: a name is given once.

    A POSIX lock (``lockf``), not ``flock``: the infra's monitor is forked
    while it is held, and an ``flock`` belongs to the open file, which the
    monitor would inherit and hold for its whole life; a POSIX lock
    belongs to this process alone."""
    os.makedirs(pods_root(root), exist_ok=True)
    fd = os.open(os.path.join(pods_root(root), "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def everyone(root: str) -> list[Pod]:
    """Every pod, oldest first (a record that cannot be read is skipped)."""
    found = []
    try:
        names = os.listdir(pods_root(root))
    except FileNotFoundError:
        return []
    for name in names:
        try:
            with open(os.path.join(pods_root(root), name, "pod.json")) as f:
                found.append(Pod(**json.load(f)))
        except (OSError, ValueError, TypeError):
            continue
    return sorted(found, key=lambda pod: pod.created)


def find(root: str, reference: str) -> Pod:
    """The pod named ``reference``, or whose id it is or begins (unambiguously)."""
    pods = everyone(root)
    for pod in pods:
        if pod.name == reference:
            return pod
    matches = [pod for pod in pods if reference and pod.id.startswith(reference)]
    if len(matches) == 1:
        return matches[0]
    raise PodError(f"no such pod: {reference}" if not matches else f"pod id prefix {reference} is ambiguous")


def members(root: str, pod: Pod, store: RecordStore | None = None) -> list:
    """The records of the pod's containers, its infra's excepted."""
    store = store or RecordStore(root)
    return [record for record in store.all() if record.config.get("pod") == pod.name and record.id != pod.infra_id]


def infra(root: str, pod: Pod, store: RecordStore | None = None):
    """The infra container's record, or None if it is gone."""
    store = store or RecordStore(root)
    try:
        return store.load(pod.infra_id)
    except (LifecycleError, ValueError, OSError):
        return None


def state(root: str, pod: Pod, store: RecordStore | None = None) -> str:
    """As Podman says it: Running (the infra and every member run),
    Degraded (the infra runs, some member does not), Exited (the infra
    does not run)."""
    store = store or RecordStore(root)
    holder = infra(root, pod, store)
    if holder is None or holder.phase != RUNNING:
        return "Exited"
    return "Running" if all(record.phase == RUNNING for record in members(root, pod, store)) else "Degraded"


def create(root: str, name: str, limits, options: dict, hostname: str | None = None, network: str = "bridge",
           publish: tuple = ()) -> Pod:
    """Make the pod ``name``: its cgroup with ``limits``, its infra
    container on ``network`` with the ``publish``ed ports, its record.
    Anything made is undone if a later step fails."""
    from procview.cgroups import discover
    from procview.runtime.container import CGROUP_PARENT, RunError
    from procview.runtime.lifecycle import start_detached
    from procview.runtime.limits import apply_limits

    if not NAME_PATTERN.match(name):
        raise PodError(f"invalid pod name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    pod_id = os.urandom(32).hex()
    hierarchies = discover()
    cgroup = hierarchies.cgroup(f"{CGROUP_PARENT}/pod-{pod_id[:12]}")
    with _locked(root), contextlib.ExitStack() as undo:
        if any(pod.name == name for pod in everyone(root)):
            raise PodError(f"the pod name {name!r} is already in use")
        directory = os.path.join(pods_root(root), pod_id)
        os.makedirs(directory)
        undo.callback(remove_tree, directory)
        cgroup.create()
        undo.callback(_remove_cgroup, cgroup)
        for warning in apply_limits(cgroup, limits):
            print(f"procview: warning: pod {name}: {warning}", file=sys.stderr)
        infra_config = _infra_config(pod_id, name, hostname or name, network, publish, cgroup.path)
        infra_options = {"image": INFRA_IMAGE, "command": list(INFRA_COMMAND), "hostname": hostname or name,
                         "network": network, "pod": name, "infra": True, "no_view": True}
        if publish:
            infra_options["publish"] = [str(mapping) for mapping in publish]
        try:
            record = start_detached(infra_config, root, list(INFRA_COMMAND), infra_options)
        except RunError as exc:
            raise PodError(f"pod {name}: its infra container: {exc}") from None
        pod = Pod(pod_id, name, time.time(), hostname or name, cgroup.path, record.id, options)
        replace_file(os.path.join(directory, "pod.json"), json.dumps(pod._asdict()))
        undo.pop_all()
    return pod


def _infra_config(pod_id: str, name: str, hostname: str, network: str, publish: tuple, cgroup_path: str):
    from procview.runtime.container import ContainerConfig

    return ContainerConfig(image=INFRA_IMAGE, command=INFRA_COMMAND, name=infra_name(pod_id), hostname=hostname,
                           network=network, publish=publish, use_view=False, pod=name, cgroup_parent=cgroup_path)


def start(root: str, pod: Pod) -> None:
    """Start a stopped pod again: its infra (the same container, with its
    namespaces made anew), then every member that does not run, as
    ``procview start`` starts them. A pod of ``procview apply`` is started
    by ``apply`` or the controller, which know its manifest."""
    from procview.runtime.container import RunError
    from procview.runtime.lifecycle import start_again
    from procview.runtime.lifecycle_commands import start_container
    from procview.runtime.network.ports import parse_publish

    if pod.options.get("managed-by"):
        raise PodError(f"pod {pod.name} was made by procview apply: procview apply or procview controller starts it")
    store = RecordStore(root)
    holder = infra(root, pod, store)
    if holder is None:
        raise PodError(f"pod {pod.name} has no infra container (procview pod rm -f {pod.name})")
    if not (holder.phase in LIVE_PHASES and store.monitor_alive(pod.infra_id)):
        publish = tuple(parse_publish(text) for text in pod.options.get("publish", []))
        config = _infra_config(pod.id, pod.name, pod.hostname, pod.options.get("network", "bridge"), publish, pod.cgroup)
        try:
            start_again(config, root, pod.infra_id)
        except (RunError, LifecycleError) as exc:
            raise PodError(f"pod {pod.name}: its infra container: {exc}") from None
    for record in members(root, pod, store):
        if not (record.phase in LIVE_PHASES and store.monitor_alive(record.id)):
            try:
                start_container(store, record.id, root)
            except LifecycleError as exc:
                raise PodError(f"pod {pod.name}: {exc}") from None


def stop(root: str, pod: Pod, grace: float) -> None:
    """Stop the members, then the infra (the namespaces' holder last)."""
    from procview.runtime.lifecycle import stop as stop_container

    store = RecordStore(root)
    for record in members(root, pod, store):
        stop_container(store, record.id, grace, root)
    if infra(root, pod, store) is not None:
        stop_container(store, pod.infra_id, grace, root)


def remove(root: str, pod: Pod, force: bool) -> None:
    """Remove the pod: its members and infra (killed first with
    ``force``), its cgroup, its record."""
    from procview.cgroups import discover
    from procview.runtime.lifecycle import remove as remove_container

    store = RecordStore(root)
    running = [record.name for record in members(root, pod, store) if record.phase in LIVE_PHASES]
    holder = infra(root, pod, store)
    if not force and (running or (holder is not None and holder.phase in LIVE_PHASES)):
        raise PodError(f"pod {pod.name} is running: stop it first, or use pod rm -f")
    with _locked(root):
        for record in members(root, pod, store):
            remove_container(store, record.id, True, root)
        if holder is not None:
            remove_container(store, pod.infra_id, True, root)
        _remove_cgroup(discover().cgroup(pod.cgroup))
        remove_tree(os.path.join(pods_root(root), pod.id))


def _remove_cgroup(cgroup) -> None:
    """The pod's cgroup (its members' went with them), and ``/procview``
    too if it was the last one there."""
    from procview.runtime.container import remove_cgroup

    remove_cgroup(cgroup, kill=True)


def to_json(root: str, pod: Pod) -> dict:
    """What ``pod inspect`` prints."""
    store = RecordStore(root)
    holder = infra(root, pod, store)
    return {
        "id": pod.id, "name": pod.name, "created": pod.created, "state": state(root, pod, store),
        "hostname": pod.hostname, "cgroup": pod.cgroup, "options": pod.options,
        "infra": {"id": pod.infra_id, "name": infra_name(pod.id), "phase": holder.phase if holder else None,
                  "networks": holder.networks if holder else {}},
        "containers": [{"id": record.id, "name": record.name, "phase": record.phase} for record in members(root, pod, store)],
    }
