"""``procview serve --metrics``: a real daemon scraped over HTTP while
readers use its mount, the scrape parsed by prometheus-client's parser.

Readers in a limited sandbox cgroup (new pid and mount namespaces, the
view's files bound over /proc, see serve_helpers) make a known number of
reads; the counters must rise by exactly that many. The seccomp
supervisor's counts need a container of ``procview run`` (the last test:
run it in the cgroup v2 VM when containers may not run on the host).
"""

from __future__ import annotations

import os
import socket
import subprocess

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .serve_helpers import (
    PROCVIEW,
    MiB,
    no_leftovers,  # noqa: F401  (autouse fixture)
    procview_mounts,
    run_in_container,
    serve_daemons,  # noqa: F401  (fixture)
)

TIMEOUT = 120.0  # bounds a hang only (the cgroup2 VM emulates its CPU)


def free_port(count: int = 1) -> int:
    """A loopback port with the ``count - 1`` after it free too (as far as
    one can tell: nothing else on this machine is expected to take them)."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port + count <= 65536 and all(_free(port + i) for i in range(1, count)):
            return port


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of one scrape of /metrics."""
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def value(scraped: dict, name: str, **labels) -> float:
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


def start_with_metrics(serve_daemons, port: int, *args: str):
    return serve_daemons.start(args=("--metrics", f"127.0.0.1:{port}", *args))


def test_reads_renders_and_errors_are_counted_exactly(serve_daemons, sandbox):
    port = free_port()
    daemon = start_with_metrics(serve_daemons, port, "--no-seccomp-socket")
    before = scrape(port)
    limited = sandbox.cgroup("limited", memory=256 * MiB)
    run_in_container(sandbox, limited, daemon.mount, [
        "sh", "-c", "for i in 1 2 3 4 5; do cat /proc/meminfo > /dev/null; done; cat /proc/uptime /proc/stat > /dev/null",
    ]).ok()
    with pytest.raises(FileNotFoundError):
        open(daemon.path("proc/nothing"))
    after = scrape(port)

    def rise(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert rise("procview_reads_total", file="proc/meminfo") == 5
    assert rise("procview_reads_total", file="proc/uptime") == 1
    assert rise("procview_reads_total", file="proc/stat") == 1
    assert rise("procview_render_seconds_count", file="proc/meminfo") == 5
    assert rise("procview_render_seconds_bucket", file="proc/meminfo", le="+Inf") == 5
    assert value(after, "procview_render_seconds_sum", file="proc/meminfo") > 0
    assert rise("procview_errors_total", kind="ENOENT") == 1
    assert value(after, "procview_errors_total", kind="render_failed") == 0
    assert value(after, "procview_tracked_containers") >= 1
    assert value(after, "process_open_fds") > 0


def test_other_paths_and_methods_are_refused(serve_daemons):
    port = free_port()
    start_with_metrics(serve_daemons, port, "--no-seccomp-socket")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT) as client:
        assert client.get("/").status_code == 404
        assert client.get("/metrics/x").status_code == 404
        refused = client.post("/metrics", content=b"x" * 1000)
        assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD"
        assert client.head("/metrics").status_code == 200
        assert client.get("/metrics").status_code == 200  # still answering after all that


def test_a_taken_port_stops_serve_before_anything_is_mounted(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root (would mount a FUSE file system)")
    mount = tmp_path / "mnt"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([PROCVIEW, "serve", str(mount), "--no-seccomp-socket", "--metrics", f"127.0.0.1:{port}"],
                                capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 1, result
    assert result.stderr == f"Error: --metrics 127.0.0.1:{port}: Address already in use\n"
    assert not mount.exists() and str(mount) not in procview_mounts()


@pytest.mark.parametrize("address", ["127.0.0.1", "localhost:9101", "127.0.0.1:0", "::1:9101"])
def test_a_malformed_address_is_bad_usage(tmp_path, address):
    result = subprocess.run([PROCVIEW, "serve", str(tmp_path / "mnt"), "--metrics", address],
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 2, result
    assert "Invalid value for '--metrics'" in result.stderr
    assert not (tmp_path / "mnt").exists()


def test_each_shard_serves_its_own_counts_on_the_next_port(serve_daemons, sandbox):
    port = free_port(2)
    daemon = start_with_metrics(serve_daemons, port, "--no-seccomp-socket", "--shards", "2")
    shard1 = daemon.mount + ".shards/1"
    before = [scrape(port), scrape(port + 1)]
    limited = sandbox.cgroup("limited", memory=256 * MiB)
    run_in_container(sandbox, limited, shard1, ["sh", "-c", "cat /proc/meminfo /proc/meminfo > /dev/null"]).ok()
    after = [scrape(port), scrape(port + 1)]
    rises = [value(a, "procview_reads_total", file="proc/meminfo") - value(b, "procview_reads_total", file="proc/meminfo")
             for a, b in zip(after, before)]
    assert rises == [0, 2]
    assert [value(a, "procview_build_info", shard=str(i), version=_version()) for i, a in enumerate(after)] == [1, 1]


def _version() -> str:
    from procview import __version__

    return __version__


# -- the supervisor: a container of procview run -----------------------------------------


def test_supervisor_answers_are_counted(serve_daemons, tmp_path_factory):
    """A container: run it in the cgroup v2 VM unless containers may run on this host."""
    state_root = str(tmp_path_factory.mktemp("procview-root"))
    port = free_port()
    daemon = start_with_metrics(serve_daemons, port)
    before = scrape(port)
    result = subprocess.run(
        [PROCVIEW, "run", "--root", state_root, "--rm", "--view", daemon.mount, "--seccomp-socket", daemon.seccomp_socket,
         "--memory", "512M", "--cpus", "1", "busybox", "sh", "-c", "free; nproc"],
        capture_output=True, text=True, timeout=TIMEOUT * 3)
    assert result.returncode == 0, result.stderr
    after = scrape(port)

    def rise(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert rise("procview_supervisor_answers_total", syscall="sysinfo", result="view") >= 1, result.stdout
    assert rise("procview_supervisor_answers_total", syscall="sched_getaffinity", result="view") >= 1, result.stdout
    answered = sum(v for (name, labels), v in after.items()
                   if name == "procview_supervisor_answers_total" and dict(labels)["syscall"] == "sysinfo")
    assert value(after, "procview_supervisor_answer_seconds_count", syscall="sysinfo") == answered
