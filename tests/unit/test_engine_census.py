"""The census of a container's threads (running/total in loadavg,
procs_running and processes in stat) over copies of the fixture machines:
shared by the container's reads for one clock tick, as each reader sees it."""

from __future__ import annotations

import os
import re
import shutil

from procview.engine import USER_HZ, ViewEngine

from test_engine_forgets import machine  # noqa: F401  (a fixture: a writable copy of a fixture machine, an engine)


def counts(engine: ViewEngine, pid: int) -> tuple[str, str]:
    """loadavg's ``running/total`` and last pid, as ``pid`` reads them."""
    match = re.fullmatch(r"\S+ \S+ \S+ (\d+/\d+) (\d+)\n", engine.render("proc/loadavg", pid).decode())
    assert match
    return match.group(1), match.group(2)


def start_thread(root, tid: int, ns_pid: int, state: str = "R", start: int = 8640131) -> None:
    """Thread ``tid`` (``ns_pid`` in ctr's namespace, started ``start``
    ticks after boot) appears in ctr: in /proc (a copy of 201, another
    python3 thread) and in every task list of ctr's cgroup directories."""
    proc = root / "proc"
    shutil.copytree(proc / "201", proc / str(tid), symlinks=True)
    write_thread(root, tid, ns_pid, state, start)
    lists = [
        os.path.join(directory, name)
        for directory, _dirs, files in os.walk(root)
        if directory.endswith("/parent/ctr")
        for name in files
        if name in ("tasks", "cgroup.threads")
    ]
    assert lists
    for path in lists:
        with open(path, "a") as f:
            f.write(f"{tid}\n")


def write_thread(root, tid: int, ns_pid: int, state: str, start: int) -> None:
    """Thread ``tid``'s status and stat: 201's with these values."""
    proc = root / "proc"
    status = (proc / "201" / "status").read_text()
    status = status.replace("NSpid:\t201\t2", f"NSpid:\t{tid}\t{ns_pid}").replace("State:\tR (running)", f"State:\t{state}")
    assert f"NSpid:\t{tid}\t{ns_pid}" in status
    (proc / str(tid) / "status").write_text(status)
    stat = (proc / "201" / "stat").read_text().replace("201 (python3) R", f"{tid} (python3) {state}", 1)
    assert " 8640131 " in stat  # field 22, the start time
    (proc / str(tid) / "stat").write_text(stat.replace(" 8640131 ", f" {start} ", 1))


def test_each_reader_counts_itself_running_in_a_shared_census(machine):
    """201 is running and 200 sleeps. One census serves both reads of the
    tick, yet each reader counts itself as running (it is inside read()),
    as the kernel counts a task that reads /proc/loadavg."""
    _root, engine = machine
    assert counts(engine, 201) == ("1/3", "5")
    assert counts(engine, 200) == ("2/3", "5")  # itself and 201
    assert counts(engine, 201) == ("1/3", "5")
    assert re.search(r"^procs_running 2$", engine.render("proc/stat", 200).decode(), re.M)


def test_a_thread_started_in_the_container_is_counted_after_one_tick(machine):
    root, engine = machine
    assert counts(engine, 201) == ("1/3", "5")
    start_thread(root, 203, 6)
    # Within the tick the census is shared: at most one tick old.
    assert counts(engine, 201) == ("1/3", "5")
    engine.clock.now += 1 / USER_HZ  # one clock tick
    assert counts(engine, 201) == ("2/4", "6")
    assert re.search(r"^procs_running 2$", engine.render("proc/stat", 201).decode(), re.M)
    assert re.search(r"^processes 6$", engine.render("proc/stat", 201).decode(), re.M)


def test_a_thread_that_exited_is_not_counted_after_one_tick(machine):
    root, engine = machine
    start_thread(root, 203, 6, state="D")
    assert counts(engine, 201) == ("1/4", "6")
    shutil.rmtree(root / "proc" / "203")  # gone from /proc: exited since the cgroup listed it
    engine.clock.now += 1 / USER_HZ  # one clock tick
    assert counts(engine, 201) == ("1/3", "5")


def test_a_blocked_reader_counts_as_running_not_blocked(machine):
    """The reader waits on FUSE in state D while its file is rendered: it
    counts once, as running, whichever read took the census."""
    root, engine = machine
    start_thread(root, 203, 6, state="D")
    stat_by_201 = engine.render("proc/stat", 201).decode()
    assert re.search(r"^procs_running 1$", stat_by_201, re.M) and re.search(r"^procs_blocked 1$", stat_by_201, re.M)
    stat_by_203 = engine.render("proc/stat", 203).decode()
    assert re.search(r"^procs_running 2$", stat_by_203, re.M) and re.search(r"^procs_blocked 0$", stat_by_203, re.M)
    assert counts(engine, 203) == ("2/4", "6")



def test_a_threads_status_is_read_once_not_at_every_census(machine, monkeypatch):
    """The census reads each thread's stat (its state); its status, twice
    the work, only for a thread it has not seen, for the thread's pid in
    the container's namespace, which never changes."""
    import procview.engine

    root, engine = machine
    statuses = []
    real = procview.engine.parse_proc_status
    monkeypatch.setattr(procview.engine, "parse_proc_status", lambda text: statuses.append(text) or real(text))
    assert counts(engine, 201) == ("1/3", "5")
    assert len(statuses) == 2  # 201, 210 (the init, 200, is pid 1 there)
    engine.clock.now += 1 / USER_HZ
    start_thread(root, 203, 6)
    assert counts(engine, 201) == ("2/4", "6")
    assert len(statuses) == 3  # 203 alone


def test_a_reused_thread_id_is_a_new_thread(machine):
    """A thread id the kernel gave again (after going through pid_max) is
    told apart by its start time: its pid in the namespace is read anew."""
    root, engine = machine
    start_thread(root, 203, 6)
    assert counts(engine, 201) == ("2/4", "6")
    write_thread(root, 203, 4, "S", start=8650000)  # 203 exited, and a new thread got its id
    engine.clock.now += 1 / USER_HZ
    assert counts(engine, 201) == ("1/4", "5")
