"""Published ports: ``-p [IP:][HOSTPORT:]PORT[/tcp|/udp]``, as ``docker run``.

A published port is a destination NAT rule in procview's nftables table
(``nat.py``): a connection to the host's port goes to the container's
address and port instead. Docker's rules without its userland proxy:

- from elsewhere, and from other containers (through the bridge), in the
  ``prerouting`` hook; from the host itself, in ``output``; both for any
  of the host's own addresses (``fib daddr type local``), or only the
  ``IP`` given;
- ``127.0.0.1``: the host's loopback cannot be a source on a real
  interface, so the bridge gets ``route_localnet`` and what leaves
  through it from 127.0.0.0/8 is masqueraded (``links.ensure_bridge``);
- a container reaching a port published by a container on the same
  bridge ("hairpin"): masqueraded too, so that the reply comes back
  through the host, which undoes the NAT.

The host port is *reserved* for the container's life by a socket bound to
it (not listening: the NAT takes every connection before any socket
would): a program that binds it later gets ``EADDRINUSE`` instead of
silently losing its connections to the container, and a port that is
taken already is refused before anything is set up. ``-p PORT`` (no host
port) lets the kernel choose one, as Docker does, the same way.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from typing import NamedTuple


class PortError(Exception):
    """A publish spec that cannot be used (the message says why)."""


class PortMapping(NamedTuple):
    host_ip: str  # "" = every address of the host
    host_port: int  # 0 = any: the kernel chooses (reserve)
    container_port: int
    protocol: str  # "tcp" or "udp"

    def __str__(self) -> str:
        """Docker's ``port`` line: ``80/tcp -> 0.0.0.0:32768``."""
        return f"{self.container_port}/{self.protocol} -> {self.host_ip or '0.0.0.0'}:{self.host_port}"


def parse_publish(spec: str) -> PortMapping:
    """``PORT``, ``HOSTPORT:PORT``, ``IP:HOSTPORT:PORT`` or ``IP::PORT``,
    each optionally followed by ``/tcp`` or ``/udp``."""
    text, _, protocol = spec.partition("/")
    protocol = protocol or "tcp"
    if protocol not in ("tcp", "udp"):
        raise PortError(f"invalid publish {spec!r}: protocol must be tcp or udp")
    parts = text.rsplit(":", 2)
    host_ip, host_port, container_port = "", "", parts[-1]
    if len(parts) == 2:
        host_port = parts[0]
    elif len(parts) == 3:
        host_ip, host_port = parts[0], parts[1]
        try:
            ipaddress.IPv4Address(host_ip)
        except ValueError:
            raise PortError(f"invalid publish {spec!r}: {host_ip!r} is not an IPv4 address") from None
    return PortMapping(host_ip, _port(spec, host_port, allow_zero=True), _port(spec, container_port), protocol)


def _port(spec: str, text: str, allow_zero: bool = False) -> int:
    if allow_zero and text == "":
        return 0
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise PortError(f"invalid publish {spec!r}: {text!r} is not a port (1-65535)")
    return int(text)


def reserve(mapping: PortMapping) -> tuple[socket.socket, PortMapping]:
    """A socket bound to the mapping's host address and port, held for as
    long as the port is published; and the mapping with the port the
    kernel chose, if it was 0."""
    kind = socket.SOCK_STREAM if mapping.protocol == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(socket.AF_INET, kind | socket.SOCK_CLOEXEC)
    try:
        sock.bind((mapping.host_ip or "0.0.0.0", mapping.host_port))
    except OSError as exc:
        sock.close()
        where = f"{mapping.host_ip or '0.0.0.0'}:{mapping.host_port}/{mapping.protocol}"
        if exc.errno == errno.EADDRINUSE:
            raise PortError(f"host port {where} is already in use") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise PortError(f"host address {mapping.host_ip} is not an address of this host") from None
        raise PortError(f"host port {where}: {exc.strerror}") from None
    return sock, mapping._replace(host_port=sock.getsockname()[1])


def nat_rule(address: str, mapping: PortMapping) -> str:
    """The rule, in nft's language, that sends the mapping's host port to
    ``address`` (the same rule serves the prerouting and output chains)."""
    match = f"ip daddr {mapping.host_ip}" if mapping.host_ip else "fib daddr type local"
    return f"{match} {mapping.protocol} dport {mapping.host_port} dnat to {address}:{mapping.container_port}"


def to_json(mappings) -> list[list]:
    return [list(m) for m in mappings]


def from_json(data) -> list[PortMapping]:
    return [PortMapping(str(ip), int(hp), int(cp), str(proto)) for ip, hp, cp, proto in data]
