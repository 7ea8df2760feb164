"""``procview serve --metrics``: the address, the counts, their exposition
and the HTTP endpoint, without FUSE. A real daemon scraped while a
container reads: tests/integration/test_metrics.py."""

from __future__ import annotations

import socket

import pyfuse3
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from procview import metrics
from procview.fs import Entry, ViewTree
from procview.metrics import LatencyCounts, MeteredFS, MeteredSupervisor, Metrics, MetricsEndpoint, parse_address, route

from test_supervisor import GETAFFINITY, NATIVE, OTHER, SYSINFO, FakeEngine, FakeListener, FakeNotify, Notification


class Engine:
    """What Metrics asks of the view engine."""

    def __init__(self, tracked=0, failures=None):
        self.tracked = tracked
        self.failures = failures or {"render": 0, "caller": 0}

    def tracked_containers(self):
        return self.tracked


def families(measured: Metrics) -> dict:
    """name -> {(sample name, labels as a sorted tuple): value} of a scrape."""
    text = measured.exposition().decode()
    return {family.name: {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}
            for family in text_string_to_metric_families(text)}


# -- the address -------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:9101", ("127.0.0.1", 9101)),
    ("0.0.0.0:1", ("0.0.0.0", 1)),
    ("[::1]:65535", ("::1", 65535)),
    ("[::]:9101", ("::", 9101)),
])
def test_addresses_that_parse(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", [
    "9101", ":9101", "127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:http", "::1:9101",
    "localhost:9101", "[localhost]:9101", "300.1.1.1:80", "[]:80",
])
def test_addresses_that_do_not(text):
    with pytest.raises(ValueError):
        parse_address(text)


def test_shards_listen_on_consecutive_ports_and_never_past_65535():
    assert metrics.shard_address("::1", 9101, 2) == "[::1]:9103"
    assert metrics.shard_address("127.0.0.1", 65534, 1) == "127.0.0.1:65535"
    with pytest.raises(ValueError):
        metrics.shard_address("127.0.0.1", 65535, 1)


def test_a_taken_port_is_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(metrics.MetricsError, match=rf"^--metrics 127.0.0.1:{port}: Address already in use$"):
            metrics.listen("127.0.0.1", port)


# -- the counts and their exposition -------------------------------------------------------


def test_a_bucket_bound_is_inclusive_and_buckets_are_cumulative():
    series = LatencyCounts()
    for ns in (10_000, 10_001, 30_000_000):
        series.record(ns)
    buckets = dict(series.buckets())
    assert buckets["1e-05"] == 1 and buckets["2.5e-05"] == 2 and buckets["0.01"] == 2 and buckets["+Inf"] == 3
    assert series.total == 3 and series.sum_ns == 30_020_001


def test_the_exposition_parses_and_says_what_was_recorded():
    measured = Metrics(Engine(tracked=3, failures={"render": 1, "caller": 2}), shard=2)
    for ns in (20_000, 40_000, 3_000_000):
        measured.record_render("proc/meminfo", ns)
    measured.record_render("proc/stat", 5_000)
    measured.record_error("ENOENT")
    measured.record_error("ENOENT")
    measured.record_answer("sysinfo", "view", 60_000)
    measured.record_answer("sysinfo", "kernel", 15_000)
    measured.record_answer("sched_getaffinity", "view", 70_000)
    scraped = families(measured)

    reads = scraped["procview_reads"]
    assert reads[("procview_reads_total", (("file", "proc/meminfo"),))] == 3
    assert reads[("procview_reads_total", (("file", "proc/stat"),))] == 1
    render = scraped["procview_render_seconds"]
    meminfo = (("file", "proc/meminfo"),)
    assert render[("procview_render_seconds_count", meminfo)] == 3
    assert render[("procview_render_seconds_sum", meminfo)] == pytest.approx(3_060_000 / 1e9)
    assert render[("procview_render_seconds_bucket", meminfo + (("le", "5e-05"),))] == 2
    assert scraped["procview_errors"] == {
        ("procview_errors_total", (("kind", "ENOENT"),)): 2,
        ("procview_errors_total", (("kind", "caller_failed"),)): 2,
        ("procview_errors_total", (("kind", "render_failed"),)): 1,
    }
    assert scraped["procview_tracked_containers"] == {("procview_tracked_containers", ()): 3}
    answers = scraped["procview_supervisor_answers"]
    assert answers[("procview_supervisor_answers_total", (("result", "view"), ("syscall", "sysinfo")))] == 1
    assert answers[("procview_supervisor_answers_total", (("result", "kernel"), ("syscall", "sysinfo")))] == 1
    answer_time = scraped["procview_supervisor_answer_seconds"]
    assert answer_time[("procview_supervisor_answer_seconds_count", (("syscall", "sysinfo"),))] == 2
    assert answer_time[("procview_supervisor_answer_seconds_count", (("syscall", "sched_getaffinity"),))] == 1
    (name, labels), = scraped["procview_build_info"]
    assert name == "procview_build_info" and dict(labels)["shard"] == "2" and dict(labels)["version"]
    assert "process_cpu_seconds" in scraped  # the daemon's own CPU, memory, fds


def test_registries_are_the_metrics_own():
    # Two daemons' worth of Metrics in one process: no clash in a shared registry.
    first, second = Metrics(Engine()), Metrics(Engine())
    first.record_error("EIO")
    assert ("procview_errors_total", (("kind", "EIO"),)) not in families(second)["procview_errors"]


# -- the measured file system and supervisor --------------------------------------------


class RenderingEngine:
    def __init__(self):
        self.rendered = []

    def render(self, path, pid):
        self.rendered.append((path, pid))
        return b"MemTotal: 1 kB\n"


class Ctx:
    pid = 1234


def test_the_file_system_times_renders_and_counts_the_errors_it_answers(tmp_path):
    measured = Metrics(Engine())
    fs = MeteredFS(RenderingEngine(), measured, ViewTree(str(tmp_path)))
    assert fs._snapshot(Entry("file", "proc/meminfo"), 1234) == b"MemTotal: 1 kB\n"
    assert fs._snapshot(Entry("text", "sys/devices/system/node/online", text="0\n"), 1234) == b"0\n"  # not a render
    with pytest.raises(pyfuse3.FUSEError):
        trio.run(fs.lookup, pyfuse3.ROOT_INODE, b"nothing", Ctx())
    with pytest.raises(pyfuse3.FUSEError):
        trio.run(fs.mkdir, pyfuse3.ROOT_INODE, b"new", 0o755, Ctx())
    with pytest.raises(pyfuse3.FUSEError):
        trio.run(fs.flush, 1)  # ENOSYS: "never send FLUSH again", not an error of a reader's
    assert list(measured.renders) == ["proc/meminfo"] and measured.renders["proc/meminfo"].total == 1
    assert measured.fuse_errors == {"ENOENT": 1, "EROFS": 1}


def test_the_supervisor_counts_answers_by_syscall_and_result(tmp_path):
    measured = Metrics(Engine())
    notify = FakeNotify()
    sup = MeteredSupervisor(FakeEngine(), str(tmp_path / "s.sock"), notify=notify, metrics=measured)
    sup.native_arch = NATIVE
    listener = FakeListener()
    for notification in (Notification(SYSINFO), Notification(SYSINFO, pid=0), Notification(OTHER),
                         Notification(GETAFFINITY, args=(0, 8, 0x1000, 0, 0, 0))):
        sup.answer(listener, notification)
    failing = MeteredSupervisor(FakeEngine(values=RuntimeError("a bug")), str(tmp_path / "t.sock"), notify=notify,
                                metrics=measured)
    failing.native_arch = NATIVE
    failing.answer(listener, Notification(SYSINFO))
    assert measured.answers == {("sysinfo", "view"): 1, ("sysinfo", "kernel"): 1, ("other", "kernel"): 1,
                                ("sched_getaffinity", "view"): 1, ("sysinfo", "failed"): 1}
    assert measured.answer_times["sysinfo"].total == 3
    assert [r[3] for r in listener.responses][-1] is True  # the failed one: the real syscall runs


# -- the endpoint -----------------------------------------------------------------------------


@pytest.mark.parametrize("method, target, status", [
    (b"GET", b"/metrics", 200), (b"HEAD", b"/metrics", 200), (b"GET", b"/metrics?x=1", 200),
    (b"GET", b"/", 404), (b"GET", b"/metrics/", 404), (b"POST", b"/other", 404),
    (b"POST", b"/metrics", 405), (b"PUT", b"/metrics", 405),
])
def test_routes(method, target, status):
    assert route(method, target)[0] == status


async def _exchange(port: int, request: bytes) -> bytes:
    """Send ``request``, read until the server closes."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        received = b""
        while chunk := await stream.receive_some(65536):
            received += chunk
        return received


def _run_endpoint(client, measured=None):
    """Serve on a fresh loopback port while ``client(port)`` runs; its result."""
    measured = measured or Metrics(Engine(tracked=1))
    endpoint = MetricsEndpoint(metrics.listen("127.0.0.1", _free_port()), measured)
    port = endpoint.sock.getsockname()[1]
    result = []

    async def main():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(endpoint.serve)
            result.append(await client(port))
            nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    finally:
        endpoint.close()
    return result[0]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_scrape_gets_the_text_format_and_the_connection_closes():
    async def client(port):
        return await _exchange(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")

    head, _, body = _run_endpoint(client).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-type: text/plain; version=" in head.lower() and b"connection: close" in head.lower()
    names = {family.name for family in text_string_to_metric_families(body.decode())}
    assert {"procview_reads", "procview_tracked_containers", "procview_errors"} <= names


@pytest.mark.parametrize("request_bytes, status", [
    (b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n", b"404"),
    (b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", b"405"),
    (b"NOT HTTP AT ALL\r\n\r\n", b"400"),
])
def test_other_requests_are_refused_and_closed(request_bytes, status):
    async def client(port):
        return await _exchange(port, request_bytes)

    answer = _run_endpoint(client)
    assert answer.split(b" ", 2)[1] == status, answer


def test_a_stuck_scraper_is_cut_off_and_does_not_hold_up_another(monkeypatch):
    monkeypatch.setattr(metrics, "CONNECTION_TIMEOUT", 0.5)

    async def client(port):
        stuck = await trio.open_tcp_stream("127.0.0.1", port)
        await stuck.send_all(b"GET /metr")  # and nothing more
        answered = await _exchange(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")  # meanwhile
        with trio.fail_after(30):  # bounds a hang only
            cut_off = await stuck.receive_some(100)
        await stuck.aclose()
        return answered, cut_off

    answered, cut_off = _run_endpoint(client)
    assert answered.startswith(b"HTTP/1.1 200") and cut_off == b""



def test_without_metrics_the_daemon_does_not_even_import_them():
    import subprocess
    import sys

    code = ("import sys, procview.daemon, procview.cli; "
            "print(sorted(m for m in ('procview.metrics', 'prometheus_client', 'h11') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_shard_0_gives_each_shard_the_next_port_and_refuses_ports_past_65535(tmp_path):
    from procview.shards import ShardError, ShardGroup, shard_argv

    group = ShardGroup(str(tmp_path / "view"), 3, metrics=("127.0.0.1", 9464))
    assert [shard.metrics for shard in group.shards] == ["127.0.0.1:9465", "127.0.0.1:9466"]
    assert shard_argv(1, "/m", "info", 5, "127.0.0.1:9465")[-2:] == ["--metrics", "127.0.0.1:9465"]
    assert "--metrics" not in shard_argv(1, "/m", "info", 5)
    with pytest.raises(ShardError, match="port 65536"):
        ShardGroup(str(tmp_path / "view"), 3, metrics=("127.0.0.1", 65534))
