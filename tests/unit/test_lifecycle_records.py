"""Detached containers' records: naming, finding, phases, corrupt files."""

from __future__ import annotations

import fcntl
import json
import os

import pytest

from procview.runtime.lifecycle import (
    FAILED, NAME_PATTERN, PENDING, RUNNING, UNKNOWN, LifecycleError, Record, RecordStore,
)


def record(container_id: str, name: str, phase: str = RUNNING) -> Record:
    return Record(container_id, name, "busybox", ["true"], 1.0, phase=phase)


class Store(RecordStore):
    """A RecordStore whose ``create`` lets go of the record's lock at once,
    as a monitor that died would."""

    def create(self, record: Record) -> int:
        os.close(super().create(record))
        return -1


@pytest.fixture
def store(tmp_path):
    return Store(str(tmp_path))


def test_save_is_atomic_and_round_trips(store):
    r = record("a" * 64, "web")
    store.create(r)
    assert sorted(os.listdir(store.path(r.id))) == ["lock", "state.json"]  # no temporary left
    assert not [entry for entry in os.listdir(store.dir) if entry.startswith(".new-")]
    assert store.load(r.id).name == "web"


def test_a_new_record_appears_with_its_lock_held(tmp_path):
    plain = RecordStore(str(tmp_path))
    r = record("e" * 64, "web", PENDING)
    lock = plain.create(r)
    try:
        assert plain.ids() == [r.id] and plain.load(r.id).phase == PENDING  # never Unknown while it starts
    finally:
        os.close(lock)
    assert plain.load(r.id).phase == UNKNOWN


def test_a_live_phase_without_its_monitor_is_unknown(store):
    r = record("a" * 64, "web")
    store.create(r)
    assert store.load(r.id).phase == UNKNOWN  # nobody holds the lock
    fd = os.open(store.path(r.id, "lock"), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert store.load(r.id).phase == RUNNING
    finally:
        os.close(fd)
    store.save(record(r.id, "web", FAILED))
    assert store.load(r.id).phase == FAILED  # an ended container needs no monitor


def test_find_by_name_id_and_unambiguous_prefix(store):
    store.create(record("ab" + "0" * 62, "one"))
    store.create(record("ac" + "0" * 62, "two"))
    assert store.find("one") == "ab" + "0" * 62
    assert store.find("ac") == "ac" + "0" * 62
    assert store.find("ab" + "0" * 62) == "ab" + "0" * 62
    with pytest.raises(LifecycleError, match="more than one"):
        store.find("a")
    with pytest.raises(LifecycleError, match="no such container"):
        store.find("three")


@pytest.mark.parametrize("text", ['{"id": "trunc', "[]", '{"name": "x"}', ""])
def test_a_corrupt_record_is_reported_not_fatal(store, text):
    store.create(record("b" * 64, "good"))
    os.makedirs(store.path("c" * 64))
    with open(store.path("c" * 64, "state.json"), "w") as f:
        f.write(text)
    warnings = []
    records = {r.id: r for r in store.all(warn=warnings.append)}
    assert records["c" * 64].phase == UNKNOWN and "unreadable state" in warnings[0]
    assert records["b" * 64].name == "good"
    with pytest.raises(ValueError):
        store.load("c" * 64)


def test_new_names_are_docker_like_and_unique(store):
    names = set()
    for i in range(30):
        name = store.new_name()
        assert NAME_PATTERN.match(name) and name not in names
        names.add(name)
        store.create(record(f"{i:064x}", name, FAILED))
    assert all(store.name_taken(name) for name in names)


def test_record_json_ignores_unknown_keys(store):
    data = record("d" * 64, "x").to_json() | {"future_field": 1}
    assert Record.from_json(json.loads(json.dumps(data))).name == "x"


@pytest.mark.parametrize("text, name, retries", [(None, "no", 0), ("no", "no", 0), ("always", "always", 0),
                                                 ("on-failure", "on-failure", 0), ("on-failure:3", "on-failure", 3)])
def test_restart_policies_parse(text, name, retries):
    from procview.runtime.lifecycle import RestartPolicy

    assert RestartPolicy.parse(text) == RestartPolicy(name, retries)


@pytest.mark.parametrize("text", ["sometimes", "always:2", "on-failure:0", "on-failure:-1", "on-failure:x", "no:1"])
def test_bad_restart_policies_are_refused(text):
    from procview.runtime.lifecycle import RestartPolicy

    with pytest.raises(ValueError, match="invalid restart policy"):
        RestartPolicy.parse(text)


def test_restart_decisions():
    from procview.runtime.lifecycle import RestartPolicy

    on_failure = RestartPolicy("on-failure", 2)
    assert on_failure.should_restart(1, 0) and on_failure.should_restart(1, 1)
    assert not on_failure.should_restart(1, 2) and not on_failure.should_restart(0, 0)
    assert RestartPolicy("always").should_restart(0, 100) and not RestartPolicy().should_restart(1, 0)


def delays(profile, runs: list[float]) -> list[float]:
    """The monitor's waits after runs of these lengths, one after another."""
    waits, count = [], 0
    for ran_for in runs:
        count = profile.exits_in_a_row(count, ran_for)
        waits.append(profile.delay(count))
    return waits


def test_the_docker_backoff_is_what_it_always_was():
    from procview.runtime.lifecycle import BACKOFF_PROFILES

    docker = BACKOFF_PROFILES["docker"]
    assert delays(docker, [0.5] * 10) == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0, 10.0]
    # A run of 10 s or more starts over at 0.1 s; one just short of it does not.
    assert delays(docker, [1, 1, 1, 10.0, 1, 9.9]) == [0.1, 0.2, 0.4, 0.1, 0.2, 0.4]


def test_the_kubernetes_backoff_is_the_kubelets():
    from procview.runtime.lifecycle import BACKOFF_PROFILES

    kubernetes = BACKOFF_PROFILES["kubernetes"]
    # The first exit is restarted at once, then 10 s doubling, capped at 5 minutes.
    assert delays(kubernetes, [0.1] * 9) == [0, 10, 20, 40, 80, 160, 300, 300, 300]
    # Once it has run 10 minutes, an exit is treated as the first again.
    assert delays(kubernetes, [1, 1, 1, 600, 1, 599, 1]) == [0, 10, 20, 0, 10, 20, 40]


def test_the_backoff_profile_is_part_of_the_policy():
    from procview.runtime.lifecycle import BACKOFF_PROFILES, RestartPolicy

    assert RestartPolicy.parse("always").profile is BACKOFF_PROFILES["docker"]
    policy = RestartPolicy.parse("on-failure:3", "kubernetes")
    assert policy == RestartPolicy("on-failure", 3, "kubernetes") and policy.profile is BACKOFF_PROFILES["kubernetes"]
    with pytest.raises(ValueError, match="invalid restart back-off 'k8s': expected docker or kubernetes"):
        RestartPolicy.parse("always", "k8s")


def test_the_waiting_state_and_the_last_termination_round_trip(store):
    from procview.runtime.lifecycle import CRASH_LOOP_BACK_OFF

    last = {"exit_code": 137, "reason": "OOMKilled", "started_at": 10.5, "finished_at": 11.25, "error": None}
    r = Record("f" * 64, "loop", "busybox", ["false"], 1.0, phase=PENDING, restart_backoff="kubernetes",
               restart_count=1, waiting_reason=CRASH_LOOP_BACK_OFF, next_start_at=21.25, last_state=last)
    store.create(r)
    saved = json.load(open(store.path(r.id, "state.json")))  # as written (load would say Unknown: no monitor)
    assert Record.from_json(saved) == r
    assert (saved["waiting_reason"], saved["next_start_at"], saved["last_state"]) == ("CrashLoopBackOff", 21.25, last)
    assert saved["restart_backoff"] == "kubernetes" and saved["restart_count"] == 1
    # An older record, without the new fields, reads with their defaults.
    older = {key: value for key, value in saved.items()
             if key not in ("restart_backoff", "waiting_reason", "next_start_at", "last_state")}
    assert Record.from_json(older) == Record(**{**vars(r), "restart_backoff": "docker", "waiting_reason": None,
                                                "next_start_at": None, "last_state": None})


@pytest.mark.parametrize("exit_code, oom_killed, error, reason", [
    (0, False, None, "Completed"),
    (1, False, None, "Error"),
    (137, True, None, "OOMKilled"),
    (0, True, None, "OOMKilled"),  # a process of it was OOM-killed, even if pid 1 exited 0 (containerd's rule)
    (125, False, "post-start hook failed: exit 1", "Error"),
])
def test_the_last_termination_has_kubernetes_reasons(exit_code, oom_killed, error, reason):
    from procview.runtime.lifecycle import terminated_state

    r = Record("a" * 64, "x", "busybox", [], 1.0, started_at=5.0, finished_at=7.5, exit_code=exit_code,
               oom_killed=oom_killed, error=error)
    assert terminated_state(r) == {"exit_code": exit_code, "reason": reason, "started_at": 5.0,
                                   "finished_at": 7.5, "error": error}


def test_a_start_clears_the_waiting_state_and_the_last_runs_outcome(store):
    from procview.runtime.images.store import Image
    from procview.runtime.lifecycle import _Recorder

    last = {"exit_code": 137, "reason": "OOMKilled", "started_at": 1.0, "finished_at": 2.0, "error": None}
    r = Record("b" * 64, "again", "busybox", ["false"], 1.0, phase=PENDING, exit_code=137, oom_killed=True,
               waiting_reason="CrashLoopBackOff", next_start_at=30.0, restart_count=1, last_state=last)
    store.create(r)
    _Recorder(store, r).started(4242, "/procview/x", {}, "/", Image("busybox:latest", "sha256:" + "0" * 64, (), {}))
    saved = json.load(open(store.path(r.id, "state.json")))
    assert (saved["phase"], saved["waiting_reason"], saved["next_start_at"]) == ("Running", None, None)
    assert (saved["exit_code"], saved["oom_killed"], saved["restart_count"]) == (None, False, 1)
    assert saved["last_state"] == last  # what the run before ended with stays


@pytest.mark.parametrize("fields, status", [
    ({"phase": PENDING}, "Created"),
    ({"phase": RUNNING, "started_at": 991.0}, "Up 9 seconds"),
    ({"phase": PENDING, "exit_code": 1, "finished_at": 991.0, "waiting_reason": "CrashLoopBackOff",
      "next_start_at": 991.4}, "Restarting (1) 9 seconds ago"),  # Docker's words for the docker profile
    ({"phase": PENDING, "exit_code": 1, "finished_at": 991.0, "waiting_reason": "CrashLoopBackOff",
      "next_start_at": 1011.0, "restart_backoff": "kubernetes"}, "CrashLoopBackOff (1), restart in 11 seconds"),
    ({"phase": PENDING, "exit_code": 137, "finished_at": 999.0, "restart_backoff": "kubernetes"},
     "Restarting (137) 1 second ago"),  # restarted at once: not waiting
    ({"phase": FAILED, "exit_code": 1, "finished_at": 880.0}, "Exited (1) 2 minutes ago"),
])
def test_ps_status(fields, status):
    from procview.runtime.lifecycle_commands import _status

    assert _status(Record("a" * 64, "x", "busybox", [], 900.0, **fields), now=1000.0) == status


def test_a_stop_ends_the_back_off_wait(store):
    # A wait of an hour: only a stop that interrupts it lets the thread end.
    import threading

    from procview.runtime.lifecycle import _stop_requested_within

    r = record("c" * 64, "waiting", PENDING)
    store.create(r)
    assert _stop_requested_within(store, r.id, 0) is False and _stop_requested_within(store, r.id, 0.01) is False
    answers = []
    waiter = threading.Thread(target=lambda: answers.append(_stop_requested_within(store, r.id, 3600)), daemon=True)
    waiter.start()
    store.request_stop(r.id)
    waiter.join(timeout=60)  # bounds a hang only
    assert answers == [True]


@pytest.mark.parametrize("command", [["ps"], ["ps", "-a"], ["stats", "--no-stream"]])
def test_unreadable_records_are_one_line_not_a_traceback(tmp_path, command):
    from click.testing import CliRunner

    from procview.cli import main

    (tmp_path / "records").write_text("")  # not a directory: listing it fails as an unreadable one does
    result = CliRunner().invoke(main, [*command, "--root", str(tmp_path)])
    assert result.exit_code in (1, 125), result.output
    assert not isinstance(result.exception, OSError), result.exc_info
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "cannot read the containers' records" in lines[0], result.output
