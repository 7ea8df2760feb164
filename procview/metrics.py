"""``procview serve --metrics ADDR:PORT``: what the daemon does, for Prometheus.

Three parts, from the read path out to the network:

- **Recording** (``Metrics``): plain integers, no locks. Every FUSE
  request, every seccomp answer and every scrape runs in the daemon's one
  trio thread, so nothing records concurrently. A render's time goes into
  its file's ``LatencyCounts`` (a count per bucket and a sum, in ns, from
  ``time.perf_counter_ns``): one ``bisect`` and two additions per render,
  instead of ``prometheus_client``'s metric objects, which take a lock per
  value they change.
- **Exposition** (``Metrics.collect``): a ``prometheus_client`` collector
  in a ``CollectorRegistry`` of its own (never the library's global
  one). It turns the counts into metric families only when scraped, and
  ``generate_latest`` writes the text format.
- **The endpoint** (``MetricsEndpoint``): a trio task in the daemon's
  nursery, on a TCP socket bound before anything is mounted; HTTP/1.1
  through ``h11``. One request per connection, at most
  ``MAX_CONNECTIONS`` at once (more wait in the kernel's backlog), each
  given ``CONNECTION_TIMEOUT`` seconds in all, so a slow or stuck scraper
  costs the FUSE loop nothing but its share of trio's turns.

Without ``--metrics`` none of this is imported: the daemon runs the plain
``ProcviewFS`` and ``Supervisor``. With it, it runs ``MeteredFS`` and
``MeteredSupervisor``, subclasses that time and count around the same
code. The choice is made once, at start, so the read path without metrics
is exactly the one without this module.

With ``--shards K`` each shard is its own process with its own counts and
serves them itself, shard i on PORT+i (``shard_address``): there is
nothing to gather between processes, and Prometheus adds up the shards'
series (docs/metrics.md).
"""

from __future__ import annotations

import bisect
import errno
import http
import ipaddress
import logging
import socket
import time

import h11
import pyfuse3
import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily

from procview import __version__
from procview.fs import ProcviewFS
from procview.supervisor import Supervisor

log = logging.getLogger(__name__)

# Upper bounds of the latency buckets, in ns: 10 µs to 10 ms, where renders
# and syscall answers fall (docs/performance.md), and +Inf.
LATENCY_BOUNDS_NS = (10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000)

MAX_CONNECTIONS = 4  # scrapes answered at once
CONNECTION_TIMEOUT = 10.0  # seconds for one whole scrape (Prometheus' default scrape_timeout)
MAX_REQUEST_BYTES = 64 * 1024  # what a scraper may send (headers and any body)
METRICS_PATH = b"/metrics"


class MetricsError(Exception):
    """The endpoint cannot listen (one line for the user)."""


# -- the address -------------------------------------------------------------------


def parse_address(text: str) -> tuple[str, int]:
    """``ADDR:PORT`` (``[ADDR]:PORT`` for IPv6) -> (address, port);
    ValueError with a one-line reason. ADDR is an IP address, not a name:
    the daemon's start must not wait on a resolver."""
    host, colon, port_text = text.rpartition(":")
    if not colon or not host:
        raise ValueError(f"{text!r} is not ADDR:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{text!r}: write an IPv6 address in brackets, [ADDR]:PORT")
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        raise ValueError(f"{text!r}: {host!r} is not an IP address") from None
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
    return host, int(port_text)


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def shard_address(host: str, port: int, index: int) -> str:
    """Where shard ``index`` of a ``--metrics HOST:PORT`` daemon listens:
    PORT + index (ValueError past 65535)."""
    if port + index > 65535:
        raise ValueError(f"{format_address(host, port)}: shard {index} would listen on port {port + index}, past 65535")
    return format_address(host, port + index)


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket listening at ``host`` (an IP address) and ``port``;
    MetricsError when it cannot (an address not on this machine, a port
    taken)."""
    where = format_address(host, port)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart need not wait out TIME_WAIT
        sock.bind((host, port))
        sock.listen(16)
    except OSError as exc:
        sock.close()
        raise MetricsError(f"--metrics {where}: {exc.strerror or exc}") from None
    return sock


# -- recording -----------------------------------------------------------------------


class LatencyCounts:
    """One histogram series as plain counts: how many values fell in each
    bucket of ``LATENCY_BOUNDS_NS`` (the last: above them all) and their sum."""

    __slots__ = ("counts", "sum_ns")

    def __init__(self):
        self.counts = [0] * (len(LATENCY_BOUNDS_NS) + 1)
        self.sum_ns = 0

    def record(self, ns: int) -> None:
        self.counts[bisect.bisect_left(LATENCY_BOUNDS_NS, ns)] += 1  # a bound is "le": inclusive
        self.sum_ns += ns

    @property
    def total(self) -> int:
        return sum(self.counts)

    def buckets(self) -> list[tuple[str, int]]:
        """Prometheus' cumulative buckets: (le in seconds, count)."""
        cumulative, result = 0, []
        for bound, count in zip(LATENCY_BOUNDS_NS + (None,), self.counts):
            cumulative += count
            result.append(("+Inf" if bound is None else repr(bound / 1e9), cumulative))
        return result


class Metrics:
    """The daemon's counts, and the collector that exposes them.

    ``engine``: its tracked containers and the failures it counts
    (``ViewEngine.failures``); ``shard``: which shard this daemon is."""

    def __init__(self, engine, shard: int = 0):
        self.engine = engine
        self.shard = shard
        self.renders: dict[str, LatencyCounts] = {}  # view file -> its render times
        self.fuse_errors: dict[str, int] = {}  # errno name -> FUSE requests answered with it
        self.answers: dict[tuple[str, str], int] = {}  # (syscall, result) -> answers
        self.answer_times: dict[str, LatencyCounts] = {}  # syscall -> its answer times
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        ProcessCollector(registry=self.registry)  # the daemon's CPU seconds, memory, open fds

    def record_render(self, path: str, ns: int) -> None:
        series = self.renders.get(path)
        if series is None:
            series = self.renders[path] = LatencyCounts()
        series.record(ns)

    def record_error(self, kind: str) -> None:
        self.fuse_errors[kind] = self.fuse_errors.get(kind, 0) + 1

    def record_answer(self, syscall: str, result: str, ns: int) -> None:
        key = (syscall, result)
        self.answers[key] = self.answers.get(key, 0) + 1
        series = self.answer_times.get(syscall)
        if series is None:
            series = self.answer_times[syscall] = LatencyCounts()
        series.record(ns)

    def exposition(self) -> bytes:
        """The text format of everything, as a scrape gets it."""
        return generate_latest(self.registry)

    def collect(self):
        """``prometheus_client``'s collector interface: the metric families
        made from the counts now."""
        info = InfoMetricFamily("procview_build", "procview's version, and which shard of the view this daemon is",
                                labels=["version", "shard"])
        info.add_metric([__version__, str(self.shard)], {})
        yield info
        reads = CounterMetricFamily("procview_reads", "Renders of a view file: one per open, and per read at "
                                    "offset 0 of a file kept open", labels=["file"])
        render = HistogramMetricFamily("procview_render_seconds", "Time to render a view file for its reader",
                                       labels=["file"])
        for path, series in sorted(self.renders.items()):
            reads.add_metric([path], series.total)
            render.add_metric([path], series.buckets(), series.sum_ns / 1e9)
        yield reads
        yield render
        errors = CounterMetricFamily("procview_errors", "Errors: FUSE requests answered with an errno (by its name), "
                                     "renders that failed and callers not found (the host's file served)",
                                     labels=["kind"])
        for kind, count in sorted({**self.fuse_errors, **_engine_failures(self.engine)}.items()):
            errors.add_metric([kind], count)
        yield errors
        yield GaugeMetricFamily("procview_tracked_containers", "Containers the view tracks (read lately, with limits)",
                                value=self.engine.tracked_containers())
        answers = CounterMetricFamily("procview_supervisor_answers", "seccomp notifications answered: 'view' the "
                                      "container's own value (or its errno), 'kernel' the real syscall runs, "
                                      "'failed' the answer failed and the real syscall runs", labels=["syscall", "result"])
        for (syscall, result), count in sorted(self.answers.items()):
            answers.add_metric([syscall, result], count)
        yield answers
        answer_time = HistogramMetricFamily("procview_supervisor_answer_seconds", "Time to answer one seccomp "
                                            "notification, from receiving it to the response", labels=["syscall"])
        for syscall, series in sorted(self.answer_times.items()):
            answer_time.add_metric([syscall], series.buckets(), series.sum_ns / 1e9)
        yield answer_time


def _engine_failures(engine) -> dict[str, int]:
    return {f"{kind}_failed": count for kind, count in engine.failures.items()}


# -- the daemon's parts, measured ----------------------------------------------------------


class MeteredFS(ProcviewFS):
    """ProcviewFS that times each render of a view file and counts the
    errors it answers with (``_error``, which only failing requests call;
    not ``flush``'s ENOSYS, which only tells the kernel never to send FLUSH
    again)."""

    def __init__(self, engine, metrics: Metrics, tree=None):
        super().__init__(engine, tree)
        self.metrics = metrics

    def _snapshot(self, entry, pid: int) -> bytes:
        if entry.kind != "file":
            return super()._snapshot(entry, pid)
        start = time.perf_counter_ns()
        data = self.engine.render(entry.vpath, pid)  # what ProcviewFS does for a file, timed
        self.metrics.record_render(entry.vpath, time.perf_counter_ns() - start)
        return data

    def _error(self, code: int) -> pyfuse3.FUSEError:
        self.metrics.record_error(errno.errorcode.get(code, str(code)))
        return pyfuse3.FUSEError(code)


class MeteredSupervisor(Supervisor):
    """Supervisor that times each answer and counts it by syscall and result."""

    def __init__(self, engine, *args, metrics: Metrics, **kwargs):
        super().__init__(engine, *args, **kwargs)
        self.metrics = metrics
        self.syscall_names = {self.sysinfo_nr: "sysinfo", self.getaffinity_nr: "sched_getaffinity"}

    def answer(self, listener, notification) -> str:
        start = time.perf_counter_ns()
        result = super().answer(listener, notification)
        self.metrics.record_answer(self.syscall_names.get(notification.syscall, "other"), result,
                                   time.perf_counter_ns() - start)
        return result


# -- the endpoint ----------------------------------------------------------------------------


def route(method: bytes, target: bytes) -> tuple[int, list[tuple[bytes, bytes]]]:
    """The status of a request, and the headers that go with it beyond the
    usual: 200 for GET or HEAD of /metrics (a query string is ignored), 404
    for any other path, 405 for another method."""
    path = target.split(b"?", 1)[0]
    if path != METRICS_PATH:
        return 404, []
    if method not in (b"GET", b"HEAD"):
        return 405, [(b"Allow", b"GET, HEAD")]
    return 200, []


class MetricsEndpoint:
    """Serves ``metrics`` over HTTP on ``sock`` (bound and listening)."""

    def __init__(self, sock: socket.socket, metrics: Metrics):
        self.sock = sock
        self.metrics = metrics

    @property
    def address(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return format_address(host, port)

    def close(self) -> None:
        self.sock.close()

    async def serve(self) -> None:
        """Accept scrapes until cancelled, ``MAX_CONNECTIONS`` at a time."""
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(self.sock))
        slots = trio.Semaphore(MAX_CONNECTIONS)
        async with trio.open_nursery() as nursery:
            while True:
                await slots.acquire()
                try:
                    stream = await listener.accept()
                except OSError as exc:  # out of fds, say: the next scrape may fare better
                    slots.release()
                    log.warning("metrics: cannot accept a connection: %s", exc.strerror or exc)
                    await trio.sleep(1.0)
                    continue
                nursery.start_soon(self._connection, stream, slots)

    async def _connection(self, stream: trio.SocketStream, slots: trio.Semaphore) -> None:
        try:
            with trio.move_on_after(CONNECTION_TIMEOUT):
                await self._exchange(stream, h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_BYTES))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the scraper went away
        finally:
            slots.release()
            await trio.aclose_forcefully(stream)

    async def _exchange(self, stream: trio.SocketStream, connection: h11.Connection) -> None:
        try:
            request = await _receive_request(stream, connection)
        except h11.RemoteProtocolError:
            await _send(stream, connection, 400, [], b"")
            return
        if request is None:
            return  # closed before a whole request, or sent too much
        status, headers = route(request.method, request.target)
        if status != 200:
            await _send(stream, connection, status, headers, b"")
            return
        body = self.metrics.exposition()
        headers = [(b"Content-Type", CONTENT_TYPE_LATEST.encode())]
        await _send(stream, connection, 200, headers, body, with_body=request.method != b"HEAD")


async def _receive_request(stream: trio.SocketStream, connection: h11.Connection) -> h11.Request | None:
    """The request, read to its end (a body read and dropped, so that
    closing after the answer sends FIN, not RST); None if the scraper
    closed first or sent more than MAX_REQUEST_BYTES."""
    request, received = None, 0
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(16384)
            received += len(data)
            if received > MAX_REQUEST_BYTES:
                return None
            connection.receive_data(data)
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.EndOfMessage):
            return request
        elif isinstance(event, h11.ConnectionClosed):
            return None


async def _send(stream: trio.SocketStream, connection: h11.Connection, status: int, headers, body: bytes,
                with_body: bool = True) -> None:
    """One response, then the connection ends (``Connection: close``);
    ``with_body`` False: its headers only (HEAD)."""
    headers = list(headers) + [(b"Content-Length", str(len(body)).encode()), (b"Connection", b"close")]
    try:
        data = connection.send(h11.Response(status_code=status, headers=headers, reason=http.HTTPStatus(status).phrase))
        if body and with_body:
            data += connection.send(h11.Data(data=body))
        data += connection.send(h11.EndOfMessage())
    except h11.LocalProtocolError:
        return  # h11 will not answer this request (it was too broken): just close
    await stream.send_all(data)
