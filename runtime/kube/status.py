"""A pod as Kubernetes reports it: the Pod object of ``kubectl get pod -o
json`` (its ``status``: phase, conditions, podIP, startTime,
containerStatuses), and the row of ``kubectl get pods``. Pure: records in,
dicts out.

Phases, by Kubernetes' rules (pod-lifecycle): **Pending** until every
container has started once; **Running** while any container runs, or is
waiting to be started again by the restart policy; **Succeeded** when all
have ended with 0 and none will be restarted; **Failed** when all have
ended, none will be restarted, and one failed; **Unknown** when procview
cannot know (the infra's monitor is gone).
"""

from __future__ import annotations

import time

from procview.runtime.lifecycle import FAILED, PENDING, RUNNING, SUCCEEDED, UNKNOWN


def timestamp(seconds: float | None) -> str | None:
    """RFC 3339 in UTC, whole seconds, as the API server writes them."""
    if seconds is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _terminated(exit_code, oom_killed: bool, started, finished, error=None, reason: str | None = None) -> dict:
    """``state.terminated``; the reason by containerd's rules (OOMKilled
    first, then exit 0: Completed, else Error), unless the monitor kept it."""
    reason = reason or ("OOMKilled" if oom_killed else "Completed" if exit_code == 0 and not error else "Error")
    state = {"exitCode": exit_code if exit_code is not None else 125, "reason": reason,
             "startedAt": timestamp(started), "finishedAt": timestamp(finished)}
    if error:
        state["message"] = error
    return state


def container_status(record, name: str) -> dict:
    """``containerStatuses[]`` of one container's record."""
    data = record.to_json()
    if record.phase == RUNNING:
        state = {"running": {"startedAt": timestamp(record.started_at)}}
    elif record.phase in (SUCCEEDED, FAILED):
        state = {"terminated": _terminated(record.exit_code, record.oom_killed, record.started_at, record.finished_at,
                                           record.error)}
    elif record.phase == PENDING and data.get("waiting_reason"):
        state = {"waiting": {"reason": data["waiting_reason"]}}
    elif record.phase == UNKNOWN:
        state = {"waiting": {"reason": "Unknown", "message": "its monitor is gone"}}
    else:
        state = {"waiting": {"reason": "ContainerCreating"}}
    status = {
        "name": name, "ready": record.phase == RUNNING, "started": record.phase == RUNNING,
        "restartCount": record.restart_count, "state": state, "lastState": {},
        "image": record.image, "imageID": record.image_id or "", "containerID": f"procview://{record.id}",
    }
    last = data.get("last_state")  # the run before, kept by the monitor (runtime/lifecycle.py)
    if isinstance(last, dict) and last:
        status["lastState"] = {"terminated": _terminated(last.get("exit_code"), False, last.get("started_at"),
                                                         last.get("finished_at"), last.get("error"), last.get("reason"))}
    return status


def phase(infra, records: list) -> str:
    if infra is None or infra.phase == UNKNOWN:
        return "Unknown"
    if any(record.phase == RUNNING for record in records):
        return "Running"
    if any(record.phase == PENDING for record in records):
        # Waiting: for its first start (Pending), or to be started again.
        return "Running" if any(record.restart_count or record.to_json().get("waiting_reason") for record in records) \
            else "Pending"
    if records and all(record.phase in (SUCCEEDED, FAILED) for record in records):
        return "Succeeded" if all(record.phase == SUCCEEDED for record in records) else "Failed"
    return "Unknown" if records else "Pending"


def pod_object(pod, spec_source: dict | None, infra, records: list) -> dict:
    """The Pod object: apiVersion, kind, metadata, spec (as applied, or
    as ``pod create`` made it), status."""
    by_name = {record.config.get("kube-container") or record.name.removeprefix(pod.name + "."): record
               for record in records}
    statuses = [container_status(record, name) for name, record in sorted(by_name.items())]
    ready = bool(statuses) and all(status["ready"] for status in statuses)
    started = timestamp(pod.created)
    conditions = [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": started},
        {"type": "Initialized", "status": "True", "lastTransitionTime": started},
        {"type": "ContainersReady", "status": str(ready), "lastTransitionTime": started},
        {"type": "Ready", "status": str(ready), "lastTransitionTime": started},
    ]
    status = {"phase": phase(infra, records), "conditions": conditions, "startTime": started,
              "containerStatuses": statuses}
    addresses = [place.get("address") for place in (infra.networks if infra else {}).values() if place.get("address")]
    if addresses:
        status["podIP"] = addresses[0]
        status["podIPs"] = [{"ip": address} for address in addresses]
    source = spec_source or {}
    metadata = dict(source.get("metadata") or {})
    metadata.update({"name": pod.name, "namespace": metadata.get("namespace", "default"), "uid": pod.id,
                     "creationTimestamp": started})
    spec = source.get("spec") or {"containers": [{"name": name, "image": record.image} for name, record in sorted(by_name.items())],
                                  "hostname": pod.hostname}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec, "status": status}


def table_row(pod_object_: dict, now: float, created: float) -> tuple[str, ...]:
    """NAME, READY, STATUS, RESTARTS, AGE, as ``kubectl get pods``: STATUS
    is a container's waiting or terminated reason if it has one, else the
    phase."""
    statuses = pod_object_["status"]["containerStatuses"]
    reason = None
    for status in statuses:
        state = status["state"]
        if "waiting" in state and state["waiting"]["reason"] != "ContainerCreating":
            reason = state["waiting"]["reason"]
        elif "terminated" in state and pod_object_["status"]["phase"] not in ("Succeeded",):
            reason = reason or state["terminated"]["reason"]
    ready = sum(1 for status in statuses if status["ready"])
    return (pod_object_["metadata"]["name"], f"{ready}/{len(statuses)}", reason or pod_object_["status"]["phase"],
            str(sum(status["restartCount"] for status in statuses)), _age(now - created))


def _age(seconds: float) -> str:
    """kubectl's short ages: 45s, 5m, 3h, 2d."""
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
