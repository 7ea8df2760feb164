"""Pods as Kubernetes reports them (runtime/kube/status.py), from records."""

from procview.runtime.kube.status import pod_object, table_row, timestamp
from procview.runtime.lifecycle import Record
from procview.runtime.pods import Pod

POD = Pod("ab" * 32, "web", 1_700_000_000.0, "web", "/procview/pod-abababababab", "cd" * 32, {})


def record(name: str, phase: str, **fields) -> Record:
    return Record(name * 8, f"web.{name}", "busybox", ["sleep"], 1_700_000_000.0, phase=phase,
                  config={"pod": "web", "kube-container": name}, started_at=1_700_000_001.0, **fields)


INFRA = Record("cd" * 32, "abababababab-infra", "busybox", ["sleep"], 1_700_000_000.0, phase="Running",
               networks={"bridge": {"address": "10.89.0.2"}})


def test_running_containers_make_a_running_ready_pod():
    obj = pod_object(POD, None, INFRA, [record("app", "Running"), record("side", "Running", restart_count=2)])
    status = obj["status"]
    assert status["phase"] == "Running" and status["podIP"] == "10.89.0.2"
    assert status["startTime"] == timestamp(POD.created) == "2023-11-14T22:13:20Z"
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "PodScheduled": "True", "Initialized": "True", "ContainersReady": "True", "Ready": "True"}
    app, side = status["containerStatuses"]
    assert app["name"] == "app" and app["state"] == {"running": {"startedAt": "2023-11-14T22:13:21Z"}}
    assert side["restartCount"] == 2
    assert table_row(obj, POD.created + 125, POD.created) == ("web", "2/2", "Running", "2", "2m")


def test_ended_containers_give_succeeded_failed_and_their_reasons():
    done = pod_object(POD, None, INFRA, [record("app", "Succeeded", exit_code=0, finished_at=1_700_000_002.0)])
    assert done["status"]["phase"] == "Succeeded"
    assert done["status"]["containerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    oom = pod_object(POD, None, INFRA, [record("app", "Failed", exit_code=137, oom_killed=True)])
    assert oom["status"]["phase"] == "Failed"
    assert oom["status"]["containerStatuses"][0]["state"]["terminated"] == {
        "exitCode": 137, "reason": "OOMKilled", "startedAt": "2023-11-14T22:13:21Z", "finishedAt": None}
    assert table_row(oom, POD.created, POD.created)[:3] == ("web", "0/1", "OOMKilled")
    error = pod_object(POD, None, INFRA, [record("app", "Failed", exit_code=3)])
    assert error["status"]["containerStatuses"][0]["state"]["terminated"]["reason"] == "Error"


def test_a_container_waiting_to_restart_keeps_the_pod_running():
    waiting = record("app", "Pending", restart_count=3)
    waiting.__dict__["waiting_reason"] = "CrashLoopBackOff"  # what the monitor writes while it waits
    obj = pod_object(POD, None, INFRA, [waiting])
    assert obj["status"]["phase"] == "Running"
    assert obj["status"]["containerStatuses"][0]["state"] == {"waiting": {"reason": "CrashLoopBackOff"}}
    assert table_row(obj, POD.created, POD.created)[2:4] == ("CrashLoopBackOff", "3")


def test_a_pod_without_its_infra_is_unknown_and_a_new_one_pending():
    assert pod_object(POD, None, None, [record("app", "Running")])["status"]["phase"] == "Unknown"
    fresh = pod_object(POD, None, INFRA, [record("app", "Pending")])
    assert fresh["status"]["phase"] == "Pending"
    assert fresh["status"]["containerStatuses"][0]["state"] == {"waiting": {"reason": "ContainerCreating"}}


def test_the_applied_manifest_is_the_objects_spec_and_metadata():
    source = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "labels": {"app": "web"}},
              "spec": {"containers": [{"name": "app", "image": "busybox"}]}}
    obj = pod_object(POD, source, INFRA, [record("app", "Running")])
    assert obj["metadata"]["labels"] == {"app": "web"} and obj["metadata"]["uid"] == POD.id
    assert obj["metadata"]["namespace"] == "default" and obj["spec"] == source["spec"]
