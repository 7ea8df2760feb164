"""The DNS of a user network: what its responder answers, and how.

Each user network has a responder (``responder.py`` starts and stops the
process): it listens on the network's gateway address, port 53, UDP and
TCP, in the host's network namespace, and containers on the network have
it as their only ``nameserver``. Podman's aardvark-dns works the same way;
Docker's embedded DNS server listens inside each container instead
(127.0.0.11), which a process of the host can only do by entering every
container's namespace.

What it answers (``respond``, pure: a query's bytes, its source address
and the network's ``Book`` in; the reply's bytes, or "forward", out):

- the members' names (host name, container name, ``--network-alias``es;
  ``names.py``), case-insensitively, also with a search domain of the
  host's ``/etc/resolv.conf`` appended: ``A`` with every address the name
  has, TTL 0; ``AAAA`` and other types: no answer, no error (the name
  exists, with IPv4 addresses only);
- ``PTR`` of an address of the subnet: the member's first name (its host
  name), or NXDOMAIN (the network's addresses are nobody else's to know);
- a query from outside the network's subnet: REFUSED, so a container on
  another network (or anything else that reaches the host's address)
  cannot learn this network's names;
- anything else is forwarded as it is to the host's nameservers, and
  their answer relayed; none answering in time: SERVFAIL.

TTL 0: a name may move to another address whenever a container stops and
another takes its name, and the answer costs a local round trip. (Docker
answers with 600 s, aardvark-dns with 60 s, to spare their daemons.)

A packet that is not a query is dropped; a query that cannot be read past
its question gets FORMERR. ``serve`` is the edge: trio tasks on the bound
sockets, one per TCP connection and per forwarded query, in one thread.
"""

from __future__ import annotations

import ipaddress
import signal
import sys
from typing import Callable, NamedTuple

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import dns.rrset
import trio

TTL = 0
PORT = 53
UPSTREAM_TIMEOUT = 2.0  # per nameserver; a client's own timeout is ~5 s
MAX_UPSTREAMS = 3  # resolv.conf's MAXNS
MAX_FORWARDS = 64  # queries being forwarded at once; more are dropped (the client asks again)
TCP_IDLE = 10.0  # a TCP connection with no query for this long is closed
UDP_LIMIT = 512  # a UDP reply's size when the query has no EDNS


class Book(NamedTuple):
    """What the responder knows of its network, read fresh per query."""

    subnet: ipaddress.IPv4Network
    addresses: dict  # dns.name.Name (absolute) -> tuple of IPv4 addresses, in members' order
    first_names: dict  # IPv4 address (str) -> its member's first name
    search: tuple = ()  # dns.name.Names: the host's search domains


class Decision(NamedTuple):
    """What to do with a packet: send ``reply``, forward ``query`` (its
    bytes as they came), or neither (drop it)."""

    reply: bytes | None = None
    query: dns.message.Message | None = None  # set: forward it


def book(members, subnet: ipaddress.IPv4Network, search=()) -> Book:
    """The ``Book`` of ``members`` (names.Member): every name of each, and
    each address's first name."""
    addresses: dict = {}
    first_names: dict = {}
    for member in members:
        for text in member.names:
            try:
                name = dns.name.from_text(text)
            except dns.exception.DNSException:
                continue  # a name no DNS query can ask for
            if member.address not in addresses.get(name, ()):
                addresses[name] = addresses.get(name, ()) + (member.address,)
        if member.names:
            first_names.setdefault(member.address, member.names[0])
    return Book(subnet, addresses, first_names, tuple(search))


def respond(wire: bytes, source: str, known: Book, tcp: bool = False) -> Decision:
    """The decision for one packet ``wire`` from ``source`` (an address)."""
    try:
        query = dns.message.from_wire(wire)
    except dns.exception.DNSException:
        return Decision(_form_error(wire))
    if query.flags & dns.flags.QR:
        return Decision()  # a response: not ours to answer
    if not _inside(source, known.subnet):
        return Decision(_error(query, dns.rcode.REFUSED, tcp))
    if query.opcode() != dns.opcode.QUERY:
        return Decision(_error(query, dns.rcode.NOTIMP, tcp))
    if len(query.question) != 1:
        return Decision(_error(query, dns.rcode.FORMERR, tcp))
    response = answer(query, known)
    if response is None:
        return Decision(query=query)
    return Decision(_to_wire(response, query, tcp))


def answer(query: dns.message.Message, known: Book) -> dns.message.Message | None:
    """The response to a one-question ``query`` about the network, or
    None: not about it (to be forwarded)."""
    question = query.question[0]
    if question.rdclass not in (dns.rdataclass.IN, dns.rdataclass.ANY):
        return None
    wanted = question.rdtype
    address = _reverse_address(question.name)
    if address is not None:
        if address not in known.subnet:
            return None
        name = known.first_names.get(str(address))
        if name is None:
            return _authoritative(query, dns.rcode.NXDOMAIN)
        response = _authoritative(query)
        if wanted in (dns.rdatatype.PTR, dns.rdatatype.ANY):
            response.answer.append(dns.rrset.from_text(question.name, TTL, dns.rdataclass.IN, dns.rdatatype.PTR, name + "."))
        return response
    addresses = _addresses_of(question.name, known)
    if addresses is None:
        return None
    response = _authoritative(query)
    if wanted in (dns.rdatatype.A, dns.rdatatype.ANY):
        response.answer.append(dns.rrset.from_text(question.name, TTL, dns.rdataclass.IN, dns.rdatatype.A, *addresses))
    return response  # AAAA and the rest: the name is there, without such records


def servfail(query: dns.message.Message, tcp: bool) -> bytes:
    """What a client gets when no nameserver answered a forwarded query."""
    return _error(query, dns.rcode.SERVFAIL, tcp)


def nameservers(resolv_text: str, own: str) -> list[str]:
    """The host's nameservers (``nameserver`` lines, at most three), but
    ``own`` (the responder's address: never itself)."""
    found = []
    for line in resolv_text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver" and "%" not in fields[1]:  # fe80::1%eth0: skipped
            try:
                address = ipaddress.ip_address(fields[1])
            except ValueError:
                continue
            if str(address) != own and str(address) not in found:
                found.append(str(address))
    return found[:MAX_UPSTREAMS]


def search_domains(resolv_text: str) -> tuple:
    """The host's search domains (the last ``search`` or ``domain`` line
    wins, as in the C library), as absolute names."""
    domains: list[str] = []
    for line in resolv_text.splitlines():
        fields = line.split()
        if fields and fields[0] in ("search", "domain"):
            domains = fields[1:]
    found = []
    for domain in domains:
        try:
            name = dns.name.from_text(domain)
        except dns.exception.DNSException:
            continue
        if name != dns.name.root:
            found.append(name)
    return tuple(found)


def _addresses_of(name: dns.name.Name, known: Book) -> tuple | None:
    """The addresses of a member's name, as asked or with a search domain
    appended; None if it is no member's."""
    if name in known.addresses:
        return known.addresses[name]
    for domain in known.search:
        if name != domain and name.is_subdomain(domain):
            bare = name.relativize(domain).concatenate(dns.name.root)
            if bare in known.addresses:
                return known.addresses[bare]
    return None


def _reverse_address(name: dns.name.Name) -> ipaddress.IPv4Address | None:
    """The IPv4 address a whole ``in-addr.arpa`` name stands for, or None."""
    if not name.is_subdomain(dns.reversename.ipv4_reverse_domain):
        return None
    try:
        return ipaddress.IPv4Address(dns.reversename.to_address(name))
    except (dns.exception.DNSException, ValueError):
        return None  # part of one (a /24's zone): not an address


def _inside(source: str, subnet: ipaddress.IPv4Network) -> bool:
    try:
        return ipaddress.ip_address(source) in subnet
    except ValueError:
        return False


def _authoritative(query: dns.message.Message, rcode: int = dns.rcode.NOERROR) -> dns.message.Message:
    response = dns.message.make_response(query, recursion_available=True)
    response.flags |= dns.flags.AA
    response.set_rcode(rcode)
    return response


def _error(query: dns.message.Message, rcode: int, tcp: bool) -> bytes:
    response = dns.message.make_response(query, recursion_available=True)
    response.set_rcode(rcode)
    return _to_wire(response, query, tcp)


def _form_error(wire: bytes) -> bytes | None:
    """FORMERR for a query whose header and question can be read (the
    rest could not); None (drop it) for anything less, or a response."""
    try:
        query = dns.message.from_wire(wire, question_only=True)
    except dns.exception.DNSException:
        return None
    if query.flags & dns.flags.QR:
        return None
    response = dns.message.make_response(query, recursion_available=True)
    response.set_rcode(dns.rcode.FORMERR)
    return response.to_wire()


def _to_wire(response: dns.message.Message, query: dns.message.Message, tcp: bool) -> bytes:
    """The response's bytes; over UDP, at most what the client takes (its
    EDNS payload, or 512), else without answers and truncated (TC): the
    client asks again over TCP."""
    limit = 65535 if tcp else max(UDP_LIMIT, query.payload if query.edns >= 0 else UDP_LIMIT)
    try:
        return response.to_wire(max_size=limit)
    except dns.exception.TooBig:
        response.answer.clear()
        response.flags |= dns.flags.TC
        return response.to_wire(max_size=limit)


# -- the edge: sockets ----------------------------------------------------------------


async def serve(udp, tcp, read_book: Callable[[], Book], upstreams: list[str], leave_if_unused: Callable) -> None:
    """Answer on the bound stdlib sockets ``udp`` and ``tcp`` (listening)
    until SIGTERM (or SIGINT), or until ``leave_if_unused(close)``, asked
    every second, closes them and says the network has no container left."""
    udp = trio.socket.from_stdlib_socket(udp)
    tcp = trio.socket.from_stdlib_socket(tcp)
    forwards = trio.CapacityLimiter(MAX_FORWARDS)

    def close() -> None:
        udp.close()
        tcp.close()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_serve_udp, udp, read_book, upstreams, forwards, nursery)
        nursery.start_soon(_serve_tcp, tcp, read_book, upstreams, nursery)
        nursery.start_soon(_until_signalled, nursery.cancel_scope)
        while True:
            await trio.sleep(1)
            if leave_if_unused(close):
                nursery.cancel_scope.cancel()
                return


async def _until_signalled(scope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            scope.cancel()
            return


async def _serve_udp(sock, read_book, upstreams, forwards, nursery) -> None:
    while True:
        try:
            wire, peer = await sock.recvfrom(65535)
        except trio.ClosedResourceError:
            return  # closed by leave_if_unused
        except OSError:
            continue
        decision = _decide(wire, peer[0], read_book, tcp=False)
        if decision.reply is not None:
            await _send_udp(sock, decision.reply, peer)
        elif decision.query is not None:
            token = object()
            try:
                forwards.acquire_on_behalf_of_nowait(token)
            except trio.WouldBlock:
                continue  # too many at once: the client asks again
            nursery.start_soon(_forward_udp, sock, wire, decision.query, peer, upstreams, forwards, token)


async def _forward_udp(sock, wire: bytes, query, peer, upstreams, forwards, token) -> None:
    try:
        reply = await _ask_upstreams(wire, query, upstreams, tcp=False)
        await _send_udp(sock, reply if reply is not None else servfail(query, tcp=False), peer)
    except Exception as exc:  # noqa: BLE001 - one query must not end the responder
        _log(f"forwarding a query from {peer[0]}: {exc!r}")
    finally:
        forwards.release_on_behalf_of(token)


async def _send_udp(sock, reply: bytes, peer) -> None:
    try:
        await sock.sendto(reply, peer)
    except (trio.ClosedResourceError, OSError):
        pass  # the client is gone, or we are leaving


async def _serve_tcp(sock, read_book, upstreams, nursery) -> None:
    while True:
        try:
            connection, peer = await sock.accept()
        except trio.ClosedResourceError:
            return
        except OSError:  # out of descriptors, say: later
            await trio.sleep(0.1)
            continue
        nursery.start_soon(_serve_connection, trio.SocketStream(connection), peer[0], read_book, upstreams)


async def _serve_connection(stream, source: str, read_book, upstreams) -> None:
    """Queries on one TCP connection, each framed by its two-byte length
    (RFC 1035 4.2.2), answered in turn."""
    async with stream:
        try:
            while True:
                wire = None
                with trio.move_on_after(TCP_IDLE):
                    wire = await _receive_framed(stream)
                if wire is None:
                    return
                decision = _decide(wire, source, read_book, tcp=True)
                reply = decision.reply
                if decision.query is not None:
                    reply = await _ask_upstreams(wire, decision.query, upstreams, tcp=True)
                    reply = reply if reply is not None else servfail(decision.query, tcp=True)
                if reply is None:
                    return  # no query: hang up
                await stream.send_all(_framed(reply))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return  # the client hung up
        except Exception as exc:  # noqa: BLE001 - one connection must not end the responder
            _log(f"a TCP connection from {source}: {exc!r}")


def _decide(wire: bytes, source: str, read_book, tcp: bool) -> Decision:
    """``respond``, never raising: whatever goes wrong with one packet is
    logged and the packet dropped."""
    try:
        return respond(wire, source, read_book(), tcp)
    except Exception as exc:  # noqa: BLE001 - one bad packet must not end the responder
        _log(f"dropped a query from {source}: {exc!r}")
        return Decision()


def _log(message: str) -> None:
    print(f"procview-dns: {message}", file=sys.stderr, flush=True)


async def _ask_upstreams(wire: bytes, query, upstreams: list[str], tcp: bool) -> bytes | None:
    """The first answer of the host's nameservers, asked in turn, to the
    query as it came (its id, flags and EDNS kept): None if none gave one."""
    for upstream in upstreams:
        with trio.move_on_after(UPSTREAM_TIMEOUT):
            try:
                reply = await (_ask_tcp if tcp else _ask_udp)(wire, query, upstream)
            except OSError:
                continue  # unreachable, refused: the next one
            if reply is not None:
                return reply
    return None


async def _ask_udp(wire: bytes, query, upstream: str) -> bytes | None:
    family = trio.socket.AF_INET6 if ":" in upstream else trio.socket.AF_INET
    with trio.socket.socket(family, trio.socket.SOCK_DGRAM) as sock:
        await sock.connect((upstream, PORT))  # then only its packets come in
        await sock.send(wire)
        while True:
            reply = await sock.recv(65535)
            if _answers(reply, query):
                return reply


async def _ask_tcp(wire: bytes, query, upstream: str) -> bytes | None:
    family = trio.socket.AF_INET6 if ":" in upstream else trio.socket.AF_INET
    with trio.socket.socket(family, trio.socket.SOCK_STREAM) as sock:
        await sock.connect((upstream, PORT))
        stream = trio.SocketStream(sock)
        await stream.send_all(_framed(wire))
        reply = await _receive_framed(stream)
    return reply if reply is not None and _answers(reply, query) else None


def _answers(reply: bytes, query) -> bool:
    try:
        return query.is_response(dns.message.from_wire(reply))
    except dns.exception.DNSException:
        return False


def _framed(wire: bytes) -> bytes:
    return len(wire).to_bytes(2, "big") + wire


async def _receive_framed(stream) -> bytes | None:
    """One length-framed message, or None at the end of the stream."""
    length = await _receive_exactly(stream, 2)
    if length is None:
        return None
    return await _receive_exactly(stream, int.from_bytes(length, "big"))


async def _receive_exactly(stream, count: int) -> bytes | None:
    data = b""
    while len(data) < count:
        chunk = await stream.receive_some(count - len(data))
        if not chunk:
            return None
        data += chunk
    return data
