"""A user network's DNS responder, the process (what it answers: ``dns.py``).

One per user network with containers on it, never for the built-in
``bridge`` (which has no names, as Docker's). ``attach`` starts it, under
the networks' lock, once the bridge holds the gateway address it listens
on, unless one is alive already; ``detach`` stops it with the network's
last container, where the bridge goes. Its pidfile,
``ROOT/networks/NAME/dns.pid``, holds its pid and its start time (from
``/proc/PID/stat``): a pid the kernel gave to another process since is
never taken for the responder, nor signalled.

    python -m procview.runtime.network.responder ROOT NAME READY_FD

binds the gateway's port 53 (UDP and TCP), forks (the child is the
responder: no one's child, so no one's zombie, and not in the caller's
session), writes the pidfile, writes one byte to READY_FD and only then
imports dnspython and trio, so a container waits for no more than the
bind. Queries that come meanwhile wait in the sockets' queues. Its
standard error is ``dns.log`` beside the pidfile.

It ends on SIGTERM, or by itself when it finds, under the networks' lock
(only if free: it never waits for it), that no container holds an address
on the network any more: it closes its sockets and removes its pidfile
before letting go of the lock, so an ``attach`` that comes next finds
no responder and the port free. A responder killed (``kill -9``) leaves
its pidfile; the next ``attach`` on the network sees it is dead and
starts another. Until then, containers still resolve each other through
``/etc/hosts`` (``names.py``).

``stop`` only signals (SIGTERM, then SIGKILL): it runs where ``procview
run`` can no longer fork (after its container's pid namespace is gone).
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys
import time

from procview._io import read_text, remove_file, replace_file
from procview.host import parse_proc_pid_stat
from procview.runtime.network import registry
from procview.runtime.network.ipam import Subnet

PIDFILE = "dns.pid"
LOG = "dns.log"
READY_TIMEOUT = 10.0  # bounds a hang: the bind takes milliseconds
STOP_TIMEOUT = 2.0  # between SIGTERM and SIGKILL


class ResponderError(Exception):
    """The responder did not start (one line)."""


def pidfile(network_dir: str) -> str:
    return os.path.join(network_dir, PIDFILE)


def running(network_dir: str) -> int | None:
    """The pid of the network's live responder, or None."""
    recorded = _recorded(pidfile(network_dir))
    return recorded[0] if recorded and _alive(*recorded) else None


def ensure(root: str, network: registry.BridgeNetwork, gateway: str) -> None:
    """The responder of ``network`` runs, listening on ``gateway``: started
    if none is alive, and waited for until it has bound its sockets.
    Called under the networks' lock."""
    directory = registry.directory(root, network.name)
    if running(directory) is not None:
        return
    remove_file(pidfile(directory))  # a dead one's
    import subprocess  # here: only the network's first container pays for it

    ready_r, ready_w = os.pipe()
    try:
        with open(os.path.join(directory, LOG), "wb") as log:
            starter = subprocess.Popen(
                [sys.executable, "-m", __name__, root, network.name, str(ready_w)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, pass_fds=(ready_w,),
                start_new_session=True, cwd="/")
        os.close(ready_w)
        ready_w = -1
        bound = _wait_ready(ready_r)
    finally:
        os.close(ready_r)
        if ready_w != -1:
            os.close(ready_w)
    if not bound:
        starter.kill()  # hung before it forked (after, it writes the byte at once)
    starter.wait()
    if not bound:
        stop(directory)
        reason = _last_line(os.path.join(directory, LOG)) or f"not listening on {gateway}:53 after {READY_TIMEOUT:.0f} s"
        raise ResponderError(f"DNS responder: {reason}")


def stop(network_dir: str) -> None:
    """End the network's responder (SIGTERM, then SIGKILL) and remove its
    pidfile. Only signals: never forks."""
    path = pidfile(network_dir)
    recorded = _recorded(path)
    if recorded and _alive(*recorded):
        pid, start = recorded
        _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while _alive(pid, start) and time.monotonic() < deadline:
            time.sleep(0.01)
        if _alive(pid, start):
            _signal(pid, signal.SIGKILL)
    remove_file(path)


def _wait_ready(ready_r: int) -> bool:
    """True once the byte came; False at the end of the pipe (the
    responder died: its reason is in the log) or after READY_TIMEOUT."""
    readable, _, _ = select.select([ready_r], [], [], READY_TIMEOUT)
    return bool(readable) and os.read(ready_r, 1) == b"1"


def _recorded(path: str) -> tuple[int, int] | None:
    text = read_text(path)
    try:
        pid, start = text.split() if text else ()
        return int(pid), int(start)
    except ValueError:
        return None


def _alive(pid: int, start: int) -> bool:
    """``pid`` is still the process that started at ``start``, and has not
    ended (a zombie has)."""
    text = read_text(f"/proc/{pid}/stat")
    stat = parse_proc_pid_stat(text) if text else None
    return stat is not None and stat.starttime == start and stat.state not in ("Z", "X")


def _signal(pid: int, number: int) -> None:
    try:
        os.kill(pid, number)
    except ProcessLookupError:
        pass


def _last_line(path: str) -> str:
    lines = (read_text(path) or "").strip().splitlines()
    return lines[-1].removeprefix("procview-dns: ") if lines else ""


# -- the process ------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    root, name, ready_fd = argv[0], argv[1], int(argv[2])
    # Whatever the starter blocked or ignored (a runner forwards signals) is
    # the responder's no more.
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, signal.SIG_DFL)
    network = registry.load(root, name)
    if network is None or network == registry.DEFAULT_BRIDGE:
        return _fail(f"no user network {name}")
    subnet = Subnet.parse(network.subnet)
    gateway = str(subnet.gateway)
    try:
        udp, tcp = _bind(gateway)
    except OSError as exc:
        return _fail(f"cannot listen on {gateway}:53: {exc.strerror or exc}")
    if os.fork() != 0:
        os._exit(0)  # the starter reaps this one; the child is reparented
    directory = registry.directory(root, name)
    replace_file(pidfile(directory), f"{os.getpid()} {_own_start_time()}\n")
    os.write(ready_fd, b"1")
    os.close(ready_fd)
    try:
        _serve(root, network, subnet, udp, tcp)
    finally:
        udp.close()
        tcp.close()
        _forget_pidfile(directory)
    return 0


def _bind(gateway: str) -> tuple[socket.socket, socket.socket]:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        udp.bind((gateway, 53))
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past the last one's TIME_WAITs
        tcp.bind((gateway, 53))
        tcp.listen(64)
    except OSError:
        udp.close()
        tcp.close()
        raise
    return udp, tcp


def _serve(root: str, network, subnet, udp, tcp) -> None:
    import trio

    from procview.runtime.network import dns, names

    directory = registry.directory(root, network.name)
    host_resolv = read_text("/etc/resolv.conf") or ""  # read once, at the start
    search = dns.search_domains(host_resolv)
    upstreams = dns.nameservers(host_resolv, str(subnet.gateway))

    def read_book() -> dns.Book:
        holders = set(registry.leases_of(root, network).holders().values())
        return dns.book(names.listed(directory, holders), subnet.network, search)

    def leave_if_unused(close) -> bool:
        try:
            with registry.locked(root, wait=False):
                if registry.leases_of(root, network).holders():
                    return False
                close()
                _forget_pidfile(directory)
                return True
        except BlockingIOError:
            return False  # someone is changing a network: ask again later

    trio.run(dns.serve, udp, tcp, read_book, upstreams, leave_if_unused)


def _forget_pidfile(directory: str) -> None:
    """Remove the pidfile if it is this process's."""
    recorded = _recorded(pidfile(directory))
    if recorded and recorded[0] == os.getpid():
        remove_file(pidfile(directory))


def _own_start_time() -> int:
    return parse_proc_pid_stat(read_text("/proc/self/stat")).starttime


def _fail(message: str) -> int:
    print(f"procview-dns: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
