"""What a burst of containers and readers leaves behind in the daemon:
one copy of each container's cgroup and key however often it is read, and
tables emptied after the burst sized for what is left (an emptied dict
keeps the size it grew to). Over copies of the fixture machines
(tests/fixtures/README.md)."""

from __future__ import annotations

import os
import shutil
import sys

import pytest

from procview import identity
from procview._io import KeptFiles
from procview.engine import ViewEngine
from procview.fs import Entry, OpenFiles

from test_engine import FIXTURES, LAYOUTS, FakeClock

CONTAINER_INIT, CONTAINER_PROCESS = 200, 201
EMPTY_DICT_SIZE = sys.getsizeof({})


@pytest.fixture(params=LAYOUTS)
def machine(request, tmp_path, monkeypatch):
    """A writable copy of a fixture machine and an engine over it that
    reads the container init's cgroup again at every request."""
    monkeypatch.setattr(identity, "CGROUP_TTL", 0.0)
    root = tmp_path / request.param
    shutil.copytree(os.path.join(FIXTURES, request.param), root, symlinks=True)
    return root, ViewEngine(root=str(root), clock=FakeClock())


def test_a_container_read_again_is_handed_the_same_cgroup_and_key(machine):
    _root, engine = machine
    first = engine.identity.container_of(CONTAINER_PROCESS)
    again = engine.identity.container_of(CONTAINER_PROCESS)
    assert again.cgroup is first.cgroup
    assert again.key is first.key
    assert first.key == (first.cgroup.key, first.init_start)


def test_a_v1_cgroup_keeps_one_string_for_the_path_all_its_hierarchies_share(machine):
    _root, engine = machine
    paths = getattr(engine.identity.container_of(CONTAINER_PROCESS).cgroup, "paths", {"v2": "/parent/ctr"})
    assert set(paths.values()) == {"/parent/ctr"}
    assert len({id(path) for path in paths.values()}) == 1


def test_every_table_of_the_engine_holds_the_one_key(machine):
    _root, engine = machine
    for _ in range(3):
        for path in ("proc/stat", "proc/loadavg", "proc/meminfo"):
            engine.render(path, CONTAINER_PROCESS)
    key = engine.identity.container_of(CONTAINER_PROCESS).key
    for table in (engine._tracked, *engine.stat_history._tables.values()):
        assert [k for k in table if k is key] == list(table) == [key]


def test_an_init_moved_to_another_cgroup_is_another_container(machine):
    root, engine = machine
    before = engine.identity.container_of(CONTAINER_PROCESS)
    cgroup_file = root / "proc" / str(CONTAINER_INIT) / "cgroup"
    cgroup_file.write_text(cgroup_file.read_text().replace("/parent/ctr", "/parent"))
    after = engine.identity.container_of(CONTAINER_PROCESS)
    assert after.cgroup.path == "/parent" and before.cgroup.path == "/parent/ctr"
    assert after.key != before.key


def test_v1_cgroups_placed_alike_keep_their_own_path_and_share_one_template_of_the_others():
    """A runtime that makes its cgroups in some hierarchies leaves every
    container at the same path in the others (here name=systemd's "/"):
    each cgroup keeps its own path and a template all of them share, not a
    tuple of a path per hierarchy."""
    from procview.cgroups import Hierarchies, parse_mountinfo

    hierarchies = Hierarchies(parse_mountinfo(open(os.path.join(FIXTURES, "hybrid", "proc", "self", "mountinfo")).read()))

    def cgroup_of(path):
        text = "".join(f"{i}:{c}:{'/' if c.startswith('name=') else path}\n" for i, c in enumerate(hierarchies.v1, 1))
        return hierarchies.cgroup_from_proc_text(text)

    first, second = cgroup_of("/box/one"), cgroup_of("/box/two")
    assert first.key is first._paths and first.key[0] == "/box/one"
    assert first.key[1] is second.key[1]  # the template, shared
    assert first.path == "/box/one" and first.paths["name=systemd"] == "/" and first.paths["memory"] == "/box/one"
    assert set(first.paths) == set(hierarchies.v1)
    assert second.paths["cpu"] == "/box/two" and first != second
    assert first == cgroup_of("/box/one") and hash(first) == hash(cgroup_of("/box/one"))
    assert first._tree_and_path("memory")[1] == "/box/one" and first._tree_and_path("name=systemd")[1] == "/"


def test_a_v1_cgroup_with_one_path_in_every_hierarchy_keeps_that_one_string():
    """The common case (a runtime names a container's cgroup alike in
    every hierarchy): the cgroup's paths and key are the one string, not a
    tuple of a dozen references to it."""
    from procview.cgroups import Hierarchies, parse_mountinfo

    hierarchies = Hierarchies(parse_mountinfo(open(os.path.join(FIXTURES, "hybrid", "proc", "self", "mountinfo")).read()))
    text = "".join(f"{i}:{c}:/box/ctr\n" for i, c in enumerate(hierarchies.v1, 1))
    cgroup = hierarchies.cgroup_from_proc_text(text)
    assert cgroup.key == "/box/ctr" and cgroup.key is cgroup._paths
    assert cgroup.paths == {controller: "/box/ctr" for controller in hierarchies.v1}
    assert cgroup.path == "/box/ctr" and cgroup._tree_and_path("memory")[1] == "/box/ctr"
    assert cgroup == hierarchies.cgroup_from_proc_text(text)
    one_missing = "".join(line + "\n" for line in text.splitlines()[1:])
    assert hierarchies.cgroup_from_proc_text(one_missing).key != cgroup.key  # a tuple with a None


def _strings_and_lists_of(cgroup) -> list:
    """The strings and lists a cgroup holds of its own (not its hierarchies')."""
    found = []
    names = [name for klass in type(cgroup).__mro__ for name in getattr(klass, "__slots__", ())]
    names += list(getattr(cgroup, "__dict__", {}))
    for value in (getattr(cgroup, name) for name in names):
        if value is cgroup.hierarchies:
            continue
        for item in value if isinstance(value, tuple) else (value,):
            if isinstance(item, (str, list)):
                found.append(item)
    return found


def test_a_tracked_cgroup_keeps_its_paths_and_no_directory(machine):
    """A container's cgroup holds its path strings only: its directories
    (~95 B each, three or four per container) are made when a file must be
    opened and dropped after, so a burst of containers leaves no directory
    strings in the arenas."""
    _root, engine = machine
    for _ in range(2):
        for path in ("proc/meminfo", "proc/stat", "proc/uptime", "proc/cpuinfo"):
            engine.render(path, CONTAINER_PROCESS)
    cgroup = engine.identity.container_of(CONTAINER_PROCESS).cgroup
    assert cgroup.memory_usage().memory is not None and cgroup.limit_dirs()
    held = _strings_and_lists_of(cgroup)
    assert held and all(isinstance(item, str) for item in held), held
    assert set(held) <= {"/parent/ctr", "/"}, held
    # Nor a dict of its own: slots (a dict is one more small object).
    assert not hasattr(cgroup, "__dict__")


def test_a_cgroups_directory_is_made_anew_and_not_kept(machine):
    _root, engine = machine
    cgroup = engine.identity.container_of(CONTAINER_PROCESS).cgroup
    first = cgroup._dir("memory") if cgroup.version == 1 else cgroup._dir()
    again = cgroup._dir("memory") if cgroup.version == 1 else cgroup._dir()
    assert first == again and first.endswith("/parent/ctr")
    assert first is not again
    assert cgroup.limit_dirs()[0] == first


def _with_kept_files(engine: ViewEngine) -> KeptFiles:
    """The engine over a fixture tree, reading its counters through
    KeptFiles as it does on a real machine."""
    engine._kept = kept = KeptFiles(limit=64)
    engine.hierarchies.read_cgroup_file = kept.read_in
    return kept


def test_a_tracked_containers_kept_files_are_filed_under_its_cgroups_own_path_string(machine):
    _root, engine = machine
    kept = _with_kept_files(engine)
    for _ in range(2):
        for path in ("proc/meminfo", "proc/stat", "proc/uptime", "proc/cpuinfo"):
            engine.render(path, CONTAINER_PROCESS)
    cgroup = engine.identity.container_of(CONTAINER_PROCESS).cgroup
    path = cgroup.path
    # One key for the container's files in every hierarchy: its path
    # string, the very one the cgroup holds (no copy, no directory). (v2
    # lists its threads from cgroup.threads of each child cgroup too.)
    assert [key for key in kept._rows if key == path] == [path]
    assert [key for key in kept._rows if key == path][0] is path
    assert all(key.startswith(path) for key in kept._rows), list(kept._rows)
    kept_paths = kept.paths()
    assert any(p.endswith("/parent/ctr/memory.stat") for p in kept_paths), kept_paths
    assert all(os.path.exists(p) for p in kept_paths), kept_paths
    kept.close()


def test_a_kept_cgroup_file_is_kept_by_its_trees_path_string_and_name(tmp_path):
    from procview.cgroups import CgroupTree

    directory = tmp_path / "parent" / "ctr"
    directory.mkdir(parents=True)
    (directory / "memory.stat").write_text("x\n")
    tree = CgroupTree(str(tmp_path), "/")
    path = "/parent/ctr"
    kept = KeptFiles(limit=16)
    for _ in range(3):
        assert kept.read_in(tree, path, "memory.stat") == "x\n"
    assert kept.paths() == [str(directory / "memory.stat")]
    assert [key for key in kept._rows if key is path] == [path]
    (directory / "memory.stat").unlink()
    directory.rmdir()
    assert kept.close_stale() == 1 and len(kept) == 0


def test_a_watch_keeps_no_directory_string(tmp_path):
    from procview.inotify import WriteWatch

    watch = WriteWatch()
    try:
        directory = str(tmp_path)
        refs = sys.getrefcount(directory)
        assert isinstance(watch.add(directory, 0.0), int)
        assert sys.getrefcount(directory) == refs
    finally:
        watch.close()


def test_kept_files_of_a_thousand_gone_directories_leave_tables_of_nothing(tmp_path):
    kept = KeptFiles(limit=4096)
    for index in range(1000):
        directory = tmp_path / f"c{index}"
        directory.mkdir()
        (directory / "memory.stat").write_text("x\n")
        kept.read(str(directory / "memory.stat"))
        shutil.rmtree(directory)
    assert kept.close_stale() == 1000
    assert len(kept) == 0 and len(kept._rows) == 0
    # The table's rows and columns sized for no key (Columns.drop_spare_room).
    assert sys.getsizeof(kept._rows._slot_of) == EMPTY_DICT_SIZE
    assert all(len(column) == 0 for column in kept._fds + kept._inodes)


def test_an_open_file_is_its_snapshot_until_released_and_its_handle_is_handed_out_again():
    files = OpenFiles()
    entry = Entry("file", "proc/meminfo")
    first, second = files.add(7, entry, 4242, b"one\n"), files.add(7, entry, 4343, b"two\n")
    assert (first, second) == (1, 2)
    assert files.snapshot(first) == b"one\n" and files.pids[second] == 4343 and files.entries[second] is entry
    files.started[first] = 1
    files.release(first)
    files.release(first)  # a second RELEASE of a handle changes nothing
    assert files.snapshot(first) is None and files.snapshot(99) is None and files.snapshot(0) is None
    assert len(files) == 1
    again = files.add(8, entry, 4444, b"three\n")
    assert again == first and files.started[again] == 0 and files.inodes[again] == 8
    assert files.snapshot(second) == b"two\n"


def test_open_files_take_no_small_object_each_and_a_burst_leaves_tables_as_before():
    """The kernel holds back RELEASE: a burst of readers leaves thousands
    of closed files in the daemon (docs/performance.md, "Scale")."""
    files = OpenFiles()
    entry, data = Entry("file", "proc/meminfo"), b"MemTotal: 262144 kB\n" * 40
    blocks_before = sys.getallocatedblocks()
    handles = [files.add(100_000 + n, entry, 300_000 + n, data) for n in range(5000)]
    blocks_held = sys.getallocatedblocks() - blocks_before
    # Python's small objects: the handles list of this test (5,000 ints)
    # and little more; an object, a handle and a pid per file were 15,000.
    assert blocks_held < 5000 + 500, blocks_held
    initial = (len(OpenFiles().data), len(OpenFiles().pids))
    for fh in handles:
        files.release(fh)
    assert len(files) == 0
    assert (len(files.data), len(files.pids)) == initial


# -- what the engine keeps per container, in small objects ------------------
# (bench/container_footprint.py measures it on real containers; every byte
# here is kept once per container the daemon serves.)


def held_objects(root) -> list:
    """``root`` and every tuple, list, dict and array inside it (ints,
    floats and strings are leaves; other objects are not followed)."""
    held, pending = [], [root]
    while pending:
        obj = pending.pop()
        held.append(obj)
        if isinstance(obj, (tuple, list)):
            pending += obj
        elif isinstance(obj, dict):
            pending += list(obj.keys()) + list(obj.values())
    return held


def test_a_kept_census_is_tuples_of_ints_and_no_dict(machine):
    """Three threads, two not running (200 and 210 sleep): the census kept
    between ticks is a handful of tuples, not dicts keyed by tuples."""
    _root, engine = machine
    engine.render("proc/stat", CONTAINER_PROCESS)
    key = engine.identity.container_of(CONTAINER_PROCESS).key
    tracked = engine._tracked
    slot = tracked.slot(key)
    states, known_pids = engine._kept_states(slot), tracked.census_pids[slot]
    held = held_objects((states, known_pids))
    assert not [obj for obj in held if isinstance(obj, dict)]
    assert states.not_running == (200, 210) and states.states == "SS"
    # (thread id, start time, pid in the container's namespace) of each
    # thread but the init (200), whose pid there is 1
    assert known_pids == (201, 8640131, 2, 210, 8652345, 5)
    assert sum(sys.getsizeof(obj) for obj in held if isinstance(obj, tuple)) < 400


def test_a_census_in_the_hosts_pid_namespace_keeps_no_pids(machine):
    """At level 0 a thread's pid is its id: nothing to remember."""
    _root, engine = machine
    container = engine.identity.container_of(CONTAINER_PROCESS)._replace(pidns_level=0)
    assert engine.thread_states(container, ("level 0",)) is not None
    assert engine._tracked.census_pids[engine._tracked.slot(("level 0",))] == ()


@pytest.mark.parametrize("reader, seen", [
    (5, (3, 1, 1, 9)),  # running already: the census as it is
    (7, (3, 1, 1, 9)),  # not one of its threads
    (4, (3, 2, 1, 9)),  # sleeping: counts itself running
    (8, (3, 2, 0, 9)),  # blocked: counts itself running, not blocked
    (1, (3, 1, 1, 9)), (99, (3, 1, 1, 9)),  # below and above every thread id
])
def test_a_reader_among_the_threads_not_running_counts_itself_running(reader, seen):
    from procview.views._inputs import TaskCensus, ThreadStates

    states = ThreadStates(TaskCensus(3, 1, 1, 9), (4, 8), "SD")
    assert tuple(states.seen_by(reader)) == seen


def test_the_identity_keeps_one_record_per_namespace(machine):
    _root, engine = machine
    container = engine.identity.container_of(CONTAINER_PROCESS)
    inits = engine.identity._inits
    (pidns, slot), = inits.items()
    assert pidns == engine.identity.pid_namespace(CONTAINER_PROCESS) == 4026532200  # the link's number, not its text
    assert inits.cgroup[slot] is container.cgroup and inits.key[slot] is container.key
    assert (inits.pid[slot], inits.start[slot]) == (container.init_pid, container.init_start)
    assert [name for name in vars(engine.identity) if name.startswith("_")] == ["_inits"]


def test_a_container_read_again_keeps_its_one_slot(machine):
    _root, engine = machine
    engine.render("proc/meminfo", CONTAINER_PROCESS)
    key = engine.identity.container_of(CONTAINER_PROCESS).key
    (slot,) = [slot for _key, slot in engine._tracked.items()]
    engine.clock.now += 5
    engine.render("proc/meminfo", CONTAINER_INIT)
    assert list(engine._tracked.items()) == [(key, slot)]
    seen = engine._last_seen(key)
    assert seen.caller_pid == CONTAINER_INIT and engine._tracked.last_read[slot] == engine.clock.now
    assert seen.key is key


def test_kept_limits_are_numbers_in_columns_stamped_with_the_requests_one_clock_reading(machine, monkeypatch):
    """Memory limits as int64s, the CPU view by reference; the limits, the
    census and the last read are stamped with the request's one reading
    of a clock that moves at every reading."""
    from procview.cgroups import MemoryLimits
    from procview.views.cpuview import CpuView

    _root, engine = machine
    readings = []
    monkeypatch.setattr(engine.clock, "monotonic", lambda: readings.append(engine.clock.now + len(readings) / 1000) or readings[-1])
    engine.render("proc/stat", CONTAINER_PROCESS)
    key = engine.identity.container_of(CONTAINER_PROCESS).key
    tracked = engine._tracked
    slot = tracked.slot(key)
    taken = tracked.limits_taken[slot]
    assert taken in readings
    assert tracked.memory.typecode == tracked.swap.typecode == "q"
    assert isinstance(tracked.cpu_view[slot], CpuView)
    memory_limits, cpu_view = engine.container_limits(engine._last_seen(key), None, taken)  # kept: compute not called
    assert memory_limits == MemoryLimits(tracked.memory[slot], tracked.swap[slot]) and cpu_view is tracked.cpu_view[slot]
    assert tracked.census_taken[slot] == taken and tracked.last_read[slot] == taken


@pytest.mark.parametrize("limit", [536870912, None, "unlimited"])
def test_a_memory_limit_survives_its_int64_form(limit):
    from procview import engine as engine_module
    from procview.cgroups import UNLIMITED

    limit = UNLIMITED if limit == "unlimited" else limit
    assert engine_module._limit_of(engine_module._limit_number(limit)) is limit or limit == 536870912
    assert engine_module._limit_of(engine_module._limit_number(limit)) == limit


def test_a_tracked_container_is_a_slot_not_records(machine):
    """The last read and the limits of 1,000 containers: about a block
    each (its slot's int), where a record per table, its float and its
    watches' array were four and more."""
    from procview.engine import _Request

    _root, engine = machine
    container = engine.identity.container_of(CONTAINER_PROCESS)
    memory_and_view = _Request(engine, container)._limits
    # Made before counting, as identity makes them: a key and a Container
    # per container.
    boxes = [container._replace(key=("container", n)) for n in range(1000)]
    blocks_before = sys.getallocatedblocks()
    for n, box in enumerate(boxes):
        engine.container_limits(box, lambda: memory_and_view, 2.0 + n)
        engine._saw(box, 2.0 + n)
    blocks_held = sys.getallocatedblocks() - blocks_before
    assert len(engine._tracked) == 1001
    assert blocks_held < 1000 * 1.5, blocks_held


def test_maintenance_leaves_tables_sized_for_what_is_left_after_a_burst(machine):
    # A dict keeps the room it grew to: after a thousand containers, ~37 KB
    # of malloc'd table each, for the life of the daemon.
    _root, engine = machine
    tables = [(engine, name) for name in engine._PER_CONTAINER_TABLES]
    for owner, name in tables:
        table = getattr(owner, name)
        for n in range(1000):
            table[("gone", n)] = None
        for n in range(1000):
            del table[("gone", n)]
        assert sys.getsizeof(table) > 10 * EMPTY_DICT_SIZE
    for n in range(1000):  # the views' columns (procview/columns.py)
        engine.stat_history.monotonic(("gone", n), [[n] * 10])
        engine.loads.averages(("gone", n), None, engine.clock.monotonic())
    for n in range(1000):
        engine.stat_history.forget(("gone", n))
        engine.loads.forget(("gone", n))
    engine.maintain()
    for owner, name in tables:
        assert sys.getsizeof(getattr(owner, name)) == EMPTY_DICT_SIZE, name
    assert not engine.stat_history._tables
    assert len(engine.loads._tracked.next_sample) == 0


def test_resized_copies_only_a_table_with_room_to_spare():
    from procview._io import resized

    full = {n: n for n in range(1000)}
    assert resized(full) is full
    for n in range(990):
        del full[n]
    smaller = resized(full)
    assert smaller == full and sys.getsizeof(smaller) < sys.getsizeof(full)


def test_a_watch_gives_back_the_room_of_watches_it_dropped(tmp_path):
    from procview.inotify import WriteWatch

    watch = WriteWatch()
    try:
        for n in range(300):
            (tmp_path / f"d{n}").mkdir()
            assert watch.add(str(tmp_path / f"d{n}"), 1.0)
        watch.add(str(tmp_path / "d0"), 2.0)
        assert watch.forget_unused(since=2.0) == 299
        assert len(watch) == 1
        assert sys.getsizeof(watch._wds) + sys.getsizeof(watch._added) < 200
    finally:
        watch.close()


def test_containers_that_see_the_same_cpus_share_one_cpu_view(machine):
    _root, engine = machine
    from procview.views.cpuview import compute_cpu_view

    first = engine.shared_cpu_view(compute_cpu_view(frozenset({0, 1}), None, None))
    equal = compute_cpu_view(frozenset({0, 1}), None, None)
    assert equal == first and equal is not first
    assert engine.shared_cpu_view(equal) is first
    other = compute_cpu_view(frozenset({0}), None, None)
    assert engine.shared_cpu_view(other) is other
    engine.render("proc/cpuinfo", CONTAINER_PROCESS)
    view = engine._tracked.cpu_view[engine._tracked.slot(engine.identity.container_of(CONTAINER_PROCESS).key)]
    assert engine._cpu_views[view] is view  # the container's view is the shared one


def test_the_init_is_pid_1_of_its_namespace_without_reading_its_status(machine, monkeypatch):
    """The init's pid in its own namespace is 1 by definition: no triple is
    kept for it, and its /proc/PID/status is not read for it."""
    _root, engine = machine
    container = engine.identity.container_of(CONTAINER_PROCESS)
    asked = []
    namespace_pid = engine._namespace_pid
    monkeypatch.setattr(engine, "_namespace_pid", lambda tid, level: asked.append(tid) or namespace_pid(tid, level))
    states = engine.thread_states(container, container.key)
    assert CONTAINER_INIT not in asked and asked
    assert states.census.last_pid == 5


def test_containers_with_equal_counts_share_one_task_census(machine):
    _root, engine = machine
    container = engine.identity.container_of(CONTAINER_PROCESS)
    first = engine.thread_states(container, ("one",))
    second = engine.thread_states(container, ("two",))
    assert first.census == second.census and first.census is second.census


def test_maintenance_packs_the_columns_a_burst_left(machine):
    _root, engine = machine
    engine.render("proc/meminfo", CONTAINER_PROCESS)
    for n in range(1000):
        engine._tracked.add(("gone", n))
    for n in range(1000):
        engine._tracked.remove(("gone", n))
    inits = engine.identity._inits
    for n in range(1000):
        inits.add(n)  # no pidfd, a pid that is no init: exited
    engine.maintain()
    assert len(engine._tracked.last_read) == len(engine._tracked.cpu_view) == len(engine._tracked) == 1
    assert len(inits.pid) == len(inits.cgroup) == len(inits) == 1


def test_a_census_with_one_thread_not_running_keeps_its_id_as_a_number(machine):
    """Most containers are one process, asleep: its id goes in a column,
    the census and the state letter are shared objects, and no tuple or
    ThreadStates is kept; any other census keeps its tuple."""
    from procview.views._inputs import TaskCensus, ThreadStates

    _root, engine = machine
    tracked = engine._tracked
    slot = tracked.add(("one asleep",))
    asleep = ThreadStates(TaskCensus(1, 0, 0, 1), (4321,), "S")
    engine._keep_states(slot, asleep)
    assert tracked.not_running[slot] is None and tracked.lone_not_running[slot] == 4321
    assert engine._kept_states(slot) == asleep
    for states in (ThreadStates(TaskCensus(2, 0, 1, 2), (4321, 4322), "SD"), ThreadStates(TaskCensus(1, 1, 0, 1), (), ""), None):
        engine._keep_states(slot, states)
        assert engine._kept_states(slot) == states


@pytest.mark.parametrize("link, inode", [("pid:[4026531836]", 4026531836), ("time:[4026532205]", 4026532205), (None, None), ("pid:[]", None), ("nonsense", None)])
def test_a_namespace_is_known_by_the_inode_number_its_link_names(link, inode):
    from procview.identity import _namespace_inode

    assert _namespace_inode(link) == inode
