"""The kubernetes back-off profile (``--restart-backoff kubernetes``) with
real monitors and containers: the kubelet's waits, the waiting state in
the record, a stop during the wait, and the last termination kept across
a restart. The times checked are the record's own (``next_start_at``
against ``finished_at``), never the wall clock's."""

from __future__ import annotations

from .test_lifecycle import detach, monitors, pv, records, root, wait_for  # noqa: F401 (fixture)
from .test_run import state_root  # noqa: F401 (fixture)

KUBERNETES = ("--restart", "always", "--restart-backoff", "kubernetes")
SLACK = 5.0  # seconds between the runner's finished_at and the monitor's decision, on a loaded machine
# Runs once with the rest of the command line, then sleeps: the writable
# layer (and /ran in it) is kept across restarts.
ONCE = "if [ -e /ran ]; then exec sleep 600; fi; touch /ran; "


def waiting(state_root, restarts: int) -> dict | None:
    """The record, once it waits in back-off after ``restarts`` restarts."""
    (record,) = records(state_root)
    return record if record["waiting_reason"] and record["restart_count"] == restarts else None


def test_a_crash_loop_backs_off_as_the_kubelet_and_a_stop_ends_the_wait(root):
    detach(root, "--name", "loop", *KUBERNETES, "busybox", "sh", "-c", "echo run; exit 1")
    # The first exit is restarted at once; the second waits 10 s.
    first = wait_for(lambda: waiting(root, restarts=1), "the first back-off", timeout=120)
    assert (first["phase"], first["waiting_reason"], first["restart_backoff"]) == ("Pending", "CrashLoopBackOff", "kubernetes")
    assert 10 <= first["next_start_at"] - first["finished_at"] < 10 + SLACK, first
    assert first["exit_code"] == 1 and first["last_state"]["exit_code"] == 1, first
    assert first["last_state"]["reason"] == "Error" and first["last_state"]["finished_at"] == first["finished_at"]
    assert "CrashLoopBackOff (1), restart in" in pv(root, "ps").stdout
    # The third run ends the same way: the wait doubles.
    second = wait_for(lambda: waiting(root, restarts=2), "the second back-off", timeout=120)
    assert 20 <= second["next_start_at"] - second["finished_at"] < 20 + SLACK, second
    # A stop during the wait ends it: no fourth run, the record says Failed.
    stop = pv(root, "stop", "loop", timeout=120)
    assert stop.returncode == 0, stop.stderr
    (record,) = records(root)
    assert (record["phase"], record["waiting_reason"], record["next_start_at"]) == ("Failed", None, None), record
    assert record["restart_count"] == 2 and monitors(root) == []
    # It ended with the third run; last_state is again the run before it.
    assert record["finished_at"] == second["finished_at"] and record["last_state"] == first["last_state"]
    assert pv(root, "logs", "loop").stdout.split() == ["run"] * 3


def test_the_last_termination_is_kept_after_a_restart(root):
    detach(root, "--name", "exit3", *KUBERNETES, "busybox", "sh", "-c", ONCE + "exit 3")
    # 64 MiB; the shell builds a 128 MiB string: the OOM killer ends the first run.
    detach(root, "--name", "hog", *KUBERNETES, "--memory", "64M", "--memory-swap", "64M", "busybox", "sh", "-c",
           ONCE + "x=$(head -c 134217728 /dev/zero | tr '\\0' a)")

    def both_running_again():
        found = {r["name"]: r for r in records(root)}
        return found if all(r["phase"] == "Running" and r["restart_count"] == 1 for r in found.values()) else None

    by_name = wait_for(both_running_again, "both to run again", timeout=120)
    exit3, hog = by_name["exit3"], by_name["hog"]
    assert exit3["last_state"]["exit_code"] == 3 and exit3["last_state"]["reason"] == "Error", exit3
    assert exit3["last_state"]["started_at"] <= exit3["last_state"]["finished_at"] <= exit3["started_at"]
    assert (exit3["exit_code"], exit3["waiting_reason"], exit3["next_start_at"]) == (None, None, None)
    assert hog["last_state"]["reason"] == "OOMKilled", hog
    assert hog["oom_killed"] is False  # this run's: not killed


def test_bad_back_off_options_are_one_line(state_root):
    for args, words in ((("-d", "--restart", "always", "--restart-backoff", "k8s"), "invalid restart back-off 'k8s'"),
                        (("--restart-backoff", "kubernetes"), "--restart-backoff needs -d")):
        result = pv(state_root, "run", "--no-view", *args, "busybox", "true")
        assert result.returncode == 125 and words in result.stderr, result
        assert len(result.stderr.splitlines()) == 1 and result.stdout == ""
