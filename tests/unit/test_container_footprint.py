"""bench/container_footprint.py's pure parts: splitting a snapshot's
blocks by size, and its report."""

from __future__ import annotations

import importlib.util
import os
import sys
from types import SimpleNamespace

import pytest

BENCH_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "bench")


@pytest.fixture(scope="module")
def footprint():
    sys.path.insert(0, BENCH_DIR)  # it imports _util, as when run from bench/
    try:
        spec = importlib.util.spec_from_file_location("container_footprint", os.path.join(BENCH_DIR, "container_footprint.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(BENCH_DIR)


def test_blocks_up_to_512_bytes_count_as_small(footprint):
    snapshot = SimpleNamespace(traces=[SimpleNamespace(size=size) for size in (16, 512, 513, 4096)])
    assert footprint.sizes(snapshot) == (528, 4609)


def test_the_report_gives_the_per_container_numbers_and_sites(footprint):
    meta = {"command": "sudo bench/container_footprint.py", "date": "2026-12-07 18:00 UTC", "seconds": 9.5,
            "machine": {"os": "Debian", "kernel": "6.1", "cpus": 2, "cpu_model": "x", "memory_gib": 8, "python": "3.11"},
            "load_before": {}, "load_after": {}, "cgroup_layout": "hybrid", "procview_src": "/tmp/pv"}
    results = {"meta": meta, "containers": 1000, "tracked": 1000, "files": ["stat", "loadavg"], "small_bytes_per_container": 2809.4,
               "large_bytes_per_container": 917.0, "small_bytes_left": 73916, "large_bytes_left": 35194,
               "top": [{"site": "procview/engine.py:12", "bytes_per_container": 480.2, "blocks_per_container": 6.0}]}
    text = footprint.render(results)
    assert "- 1,000 containers, each read twice (stat, loadavg); 1,000 tracked" in text
    assert "| while tracked | 2,809 B | 917 B |" in text
    assert "| after they are gone (all 1,000 together) | 73,916 B | 35,194 B |" in text
    assert "| `procview/engine.py:12` | 480 | 6.0 |" in text
    assert "`/tmp/pv`" in text


def test_files_are_the_four_unless_chosen(footprint):
    assert footprint.parse_args([]).files == ["meminfo", "stat", "uptime", "cpuinfo"]
    assert footprint.parse_args(["--files", "stat,loadavg"]).files == ["stat", "loadavg"]
    with pytest.raises(SystemExit):
        footprint.parse_args(["--files", "stat,nonsense"])
