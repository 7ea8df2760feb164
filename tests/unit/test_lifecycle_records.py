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


def test_restart_decisions_and_backoff():
    from procview.runtime.lifecycle import RestartPolicy

    on_failure = RestartPolicy("on-failure", 2)
    assert on_failure.should_restart(1, 0) and on_failure.should_restart(1, 1)
    assert not on_failure.should_restart(1, 2) and not on_failure.should_restart(0, 0)
    assert RestartPolicy("always").should_restart(0, 100) and not RestartPolicy().should_restart(1, 0)
    assert [RestartPolicy.backoff(n) for n in (0, 1, 2, 10)] == [0.1, 0.2, 0.4, 10.0]


@pytest.mark.parametrize("policy, code, restarts, stop, expected", [
    ("on-failure:2", 1, 0, False, "Pending"),  # the monitor starts it again: never Failed in between
    ("on-failure:2", 1, 2, False, "Failed"),  # retries used up
    ("on-failure:2", 0, 0, False, "Succeeded"),
    ("always", 0, 5, False, "Pending"),
    ("always", 1, 0, True, "Failed"),  # stop requested: no restart is coming
    ("no", 1, 0, False, "Failed"),
])
def test_a_run_that_will_be_restarted_stays_pending(store, policy, code, restarts, stop, expected):
    from procview.runtime.lifecycle import _Recorder, _will_restart

    r = Record("c" * 64, "again", "busybox", ["false"], 1.0, phase=RUNNING, restart_policy=policy,
               restart_count=restarts)
    store.create(r)
    if stop:
        store.request_stop(r.id)
    _Recorder(store, r).finished(code, restarting=_will_restart(store, r, code))
    saved = json.load(open(store.path(r.id, "state.json")))
    assert (saved["phase"], saved["exit_code"]) == (expected, code)


def test_a_torn_rm_record_is_forgotten_and_a_torn_kept_one_is_not(store):
    # --rm records are written without fsync: after a crash their state may
    # be empty; their mark still says to forget them. A kept record's state
    # is fsync'ed: if it is unreadable anyway, it is shown, never deleted.
    from procview.runtime.lifecycle import AUTO_REMOVE_MARK, remove_orphans

    gone = Record("d" * 64, "gone", "busybox", ["true"], 1.0, auto_remove=True)
    kept = Record("e" * 64, "kept", "busybox", ["true"], 1.0)
    for r in (gone, kept):
        store.create(r)
        open(store.path(r.id, "state.json"), "w").close()  # torn
    assert os.path.exists(store.path(gone.id, AUTO_REMOVE_MARK))
    assert not os.path.exists(store.path(kept.id, AUTO_REMOVE_MARK))
    remove_orphans(store)
    assert store.ids() == [kept.id]
