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
sites that grew most since the file system was made (PID-peak.txt).
"""

from __future__ import annotations

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
    return {f"{type(owner).__name__}.{name}": len(value) for owner in owners if owner is not None
            for name, value in vars(owner).items() if isinstance(value, (dict, list, set))}


def record(engine, fs) -> None:
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = _Mallinfo2
    heap = libc.mallinfo2()
    open_files = len(fs._open_files) if fs is not None else 0
    line = {
        "t": round(time.monotonic(), 1),
        **_status("/proc/self/status", {"VmRSS", "RssAnon", "VmHWM"}),
        "pymalloc": _small_objects(),
        "glibc": {"arena": heap.arena, "in_use": heap.uordblks, "mmapped": heap.hblkhd},
        "gc_objects": len(gc.get_objects()),
        "open_files": open_files,
        "tables": _sizes(engine, engine.identity, engine._kept, engine.stat_history, engine.loads, fs),
    }
    os.makedirs(OUT, exist_ok=True)
    with open(f"{OUT}/{os.getpid()}.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")
    if tracemalloc.is_tracing() and open_files > _state["peak"]:
        _state["peak"] = open_files
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
