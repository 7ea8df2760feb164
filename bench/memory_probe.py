"""What a ``procview serve`` daemon's memory is made of, pass by pass: a
diagnostic for docs/performance.md ("Not yet flat: RSS from 100 to 1,000"),
never part of procview itself.

Installed as the ``sitecustomize`` of a copy of procview measured with
``--procview-src`` (Python imports it at start from PYTHONPATH)::

    mkdir -p /tmp/pv-probe && git archive HEAD procview runtime | tar -x -C /tmp/pv-probe
    cp bench/memory_probe.py /tmp/pv-probe/sitecustomize.py
    .venv/bin/python bench/scale.py --containers 100 1000 --procview-src /tmp/pv-probe
    # one JSON line per maintenance pass in /tmp/procview-memory-probe/PID.jsonl

After every maintenance pass (every 5 s) it writes the daemon's RSS and
anonymous memory, Python's small-object allocator (arenas of 1 MiB, bytes
in live blocks, from ``sys._debugmallocstats``), glibc's heap
(``mallinfo2``), the live objects the garbage collector tracks, and the
sizes of the engine's and the file system's tables. With
``PYTHONTRACEMALLOC=1`` in the environment (slow: ~10x the CPU per read) it
also writes, at the pass that finds the most files open, the allocation
sites that grew most since the file system was made (PID-peak.txt), and at
each pass after it, what is still allocated that was not at the start
(PID-after.txt).

Set in the daemon's environment (``scale.py --procview-env NAME=VALUE``):

- ``PROBE_TYPES=1``: each line also counts the live objects by type (those
  the garbage collector tracks and the untracked ones they hold: strings,
  numbers, tuples of those), with their bytes.
- ``PROBE_SURVIVORS=1``: the live objects that keep a burst's arenas.
  Before the first pass with ``PROBE_BURST`` (3000) files open, each idle
  pass notes the 16 KiB pools the live objects are in; each idle pass
  after it writes the live objects in other pools, by type, with what
  holds them (PID-survivors.txt; with PYTHONTRACEMALLOC, where each was
  allocated).
"""

from __future__ import annotations

import array
import bisect
import ctypes
import gc
import importlib.abc
import json
import os
import re
import sys
import tempfile
import time
import tracemalloc

OUT = "/tmp/procview-memory-probe"
_state: dict = {"peak": 0}


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _status(path: str, keys: set[str]) -> dict[str, int]:
    with open(path) as f:
        return {k: int(v.split()[0]) for k, _, v in (line.partition(":") for line in f) if k in keys}


def _small_objects() -> dict[str, int]:
    """Arenas and bytes of pymalloc, parsed from sys._debugmallocstats()
    (which writes to the C stderr)."""
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode()
    found = dict(re.findall(r"# (arenas allocated current|bytes in allocated blocks|bytes in available blocks)\s*=\s*([\d,]+)", text))
    return {name: int(value.replace(",", "")) for name, value in found.items()}


def _sizes(*owners) -> dict[str, int]:
    """The length of each table (a dict, list, set or Columns) the owners hold."""
    from procview.columns import Columns

    return {f"{type(owner).__name__}.{name}": len(value) for owner in owners if owner is not None
            for name, value in vars(owner).items() if isinstance(value, (dict, list, set, Columns))}


def _live_objects() -> dict[int, object]:
    """Every live object the garbage collector tracks, and the untracked
    ones they refer to, by address."""
    seen: dict[int, object] = {}
    for obj in gc.get_objects():
        seen[id(obj)] = obj
        for ref in gc.get_referents(obj):
            if not gc.is_tracked(ref):
                seen[id(ref)] = ref
    return seen


def _objects_by_type() -> dict[str, list[int]]:
    """Count and bytes of the live objects (``_live_objects``) by type."""
    totals: dict[str, list[int]] = {}
    for obj in _live_objects().values():
        entry = totals.setdefault(type(obj).__name__, [0, 0])
        entry[0] += 1
        entry[1] += sys.getsizeof(obj)
    return totals


POOL_SHIFT = 14  # pymalloc's pools are 16 KiB


def _note_survivors(open_files: int) -> None:
    """Before a burst, the pools live objects are in; after it, the live
    objects in other pools (they keep the burst's arenas), by type and
    where they were allocated (with PYTHONTRACEMALLOC)."""
    if open_files >= int(os.environ.get("PROBE_BURST", "3000")):
        _state["burst"] = True
    if open_files:
        return
    if not _state.get("burst"):
        # As an array: a set's ints would be objects in pools of their own.
        _state["pools"] = array.array("q", sorted({address >> POOL_SHIFT for address in _live_objects()}))
        return
    if "pools" not in _state:
        return
    pools = _state["pools"]  # searched by bisection: a set of ints would make objects in new pools

    def was_in_use(pool: int) -> bool:
        at = bisect.bisect_left(pools, pool)
        return at < len(pools) and pools[at] == pool

    survivors = [obj for address, obj in _live_objects().items() if not was_in_use(address >> POOL_SHIFT)]
    by_kind: dict[str, list] = {}
    for obj in survivors:
        where = tracemalloc.get_object_traceback(obj) if tracemalloc.is_tracing() else None
        kind = type(obj).__name__ + ("" if where is None else " " + " <- ".join(str(frame) for frame in list(where)[-4:]))
        by_kind.setdefault(kind, []).append(obj)
    with open(f"{OUT}/{os.getpid()}-survivors.txt", "w") as f:
        f.write(f"{len(survivors)} live objects in {len({id(o) >> POOL_SHIFT for o in survivors})} pools not in use before\n")
        for kind, objs in sorted(by_kind.items(), key=lambda item: -len(item[1]))[:60]:
            counts: dict[str, int] = {}
            for obj in objs[:200]:
                for h in gc.get_referrers(obj):
                    if h is not objs and h is not survivors and not isinstance(h, type(sys._getframe())):
                        name = f"{type(h).__name__} of {len(h) if hasattr(h, '__len__') else '?'}"
                        counts[name] = counts.get(name, 0) + 1
            held_by = ", ".join(f"{n}x {name}" for name, n in sorted(counts.items(), key=lambda i: -i[1])[:4])
            f.write(f"{len(objs):6} {kind}: {repr(objs[0])[:160]!s} (held by {held_by})\n")


_libc = ctypes.CDLL(None)
_libc.mallinfo2.restype = _Mallinfo2


def record(engine, fs) -> None:
    libc = _libc
    heap = libc.mallinfo2()
    open_files = len(fs._open_files) if fs is not None else 0
    line = {
        "t": round(time.monotonic(), 1),
        **_status("/proc/self/status", {"VmRSS", "RssAnon", "VmHWM"}),
        "pymalloc": _small_objects(),
        "glibc": {"arena": heap.arena, "in_use": heap.uordblks, "mmapped": heap.hblkhd},
        "gc_objects": len(gc.get_objects()),
        "open_files": open_files,
        "types": _objects_by_type() if os.environ.get("PROBE_TYPES") else {},
        "tables": _sizes(engine, engine.identity, engine._kept, engine.stat_history, engine.loads, fs),
    }
    os.makedirs(OUT, exist_ok=True)
    if os.environ.get("PROBE_SURVIVORS"):
        _note_survivors(open_files)
    with open(f"{OUT}/{os.getpid()}.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")
    if tracemalloc.is_tracing() and _state["peak"] and not open_files:
        # After a burst: what is still allocated that was not at the start.
        stats = tracemalloc.take_snapshot().compare_to(_state["start"], "traceback")
        with open(f"{OUT}/{os.getpid()}-after.txt", "w") as f:
            for stat in stats[:40]:
                f.write(f"{stat.size_diff:+} B, {stat.count_diff:+} blocks\n  " + "\n  ".join(stat.traceback.format()[-8:]) + "\n")
    if open_files > _state["peak"]:
        _state["peak"] = open_files
    if tracemalloc.is_tracing() and open_files >= _state["peak"] and open_files:
        stats = tracemalloc.take_snapshot().compare_to(_state["start"], "lineno")
        with open(f"{OUT}/{os.getpid()}-peak.txt", "w") as f:
            f.write(f"{open_files} files open\n" + "\n".join(str(s) for s in stats[:40]) + "\n")


def _install() -> None:
    import procview.engine
    import procview.fs

    maintain, make_fs = procview.engine.ViewEngine.maintain, procview.fs.ProcviewFS.__init__

    def probed_maintain(engine):
        maintain(engine)
        record(engine, _state.get("fs"))

    def probed_init(fs, *args, **kwargs):
        make_fs(fs, *args, **kwargs)
        _state["fs"] = fs
        if tracemalloc.is_tracing():
            _state["start"] = tracemalloc.take_snapshot()

    procview.engine.ViewEngine.maintain = probed_maintain
    procview.fs.ProcviewFS.__init__ = probed_init


class _OnDaemonImport(importlib.abc.MetaPathFinder):
    """Installs the probe when procview.daemon is first imported (only
    ``procview serve`` imports it)."""

    def find_spec(self, name, path, target=None):
        if name == "procview.daemon":
            sys.meta_path.remove(self)
            _install()
        return None


sys.meta_path.insert(0, _OnDaemonImport())
