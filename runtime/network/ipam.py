"""IP address management for a bridge network: which address each
container has, kept as files under the state root so that every
``procview`` process (runs, monitors, ``rm``, ``prune``) sees the same.

A network's directory holds one lease file per address in use, named by
the address and holding the id of the container that has it:

    ROOT/networks/bridge/leases/10.89.0.2   ->  "<container id>\\n"

A lease is taken by ``link(2)``-ing a finished file to that name, which
fails if the name exists: two runs can never take the same address, and
a run killed halfway leaves either a whole lease or none. Leases go with
the run that took them (``release``), or, after a ``kill -9``, with the
next command that finds the container gone (``release_container``).

The gateway is the subnet's first address (the bridge's own), as in
Docker; containers get the next free ones, lowest first.
"""

from __future__ import annotations

import ipaddress
import os
from typing import NamedTuple

from procview._io import remove_file


class IpamError(Exception):
    """A subnet or lease that cannot be used (the message says why)."""


class Subnet(NamedTuple):
    """A network's IPv4 subnet and its gateway (the bridge's address)."""

    network: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address

    @classmethod
    def parse(cls, text: str) -> "Subnet":
        """``10.89.0.0/16``: an IPv4 subnet with room for a gateway and at
        least one container (a /30 or larger), in host-bits-zero form."""
        try:
            network = ipaddress.IPv4Network(text, strict=True)
        except ValueError as exc:
            raise IpamError(f"invalid subnet {text!r}: {exc}") from None
        if network.prefixlen > 30:
            raise IpamError(f"invalid subnet {text!r}: too small (at most /30)")
        return cls(network, network.network_address + 1)

    def __str__(self) -> str:
        return str(self.network)

    def hosts(self):
        """The addresses containers can have: every host address but the gateway."""
        for address in self.network.hosts():
            if address != self.gateway:
                yield address


class Leases:
    """The lease files of one network (``directory``/leases)."""

    def __init__(self, directory: str, subnet: Subnet):
        self.directory = os.path.join(directory, "leases")
        self.subnet = subnet

    def take(self, container_id: str) -> ipaddress.IPv4Address:
        """The lowest free address, now leased to ``container_id``."""
        os.makedirs(self.directory, exist_ok=True)
        taken = set(self._names())
        staging = os.path.join(self.directory, f".new-{container_id}")
        with open(staging, "w") as f:
            f.write(container_id + "\n")
        try:
            for address in self.subnet.hosts():
                if str(address) in taken:
                    continue
                try:
                    os.link(staging, os.path.join(self.directory, str(address)))
                    return address
                except FileExistsError:
                    continue  # taken since we listed: try the next one
            raise IpamError(f"no free address left in {self.subnet}")
        finally:
            os.unlink(staging)

    def release(self, address: ipaddress.IPv4Address, container_id: str) -> None:
        """Give ``address`` back, if ``container_id`` still holds it."""
        path = os.path.join(self.directory, str(address))
        if self._holder(path) == container_id:
            remove_file(path)

    def release_container(self, container_id: str) -> list[str]:
        """Give back every address ``container_id`` holds (what a killed
        run left); returns them."""
        released = []
        for name in self._names():
            path = os.path.join(self.directory, name)
            if self._holder(path) == container_id:
                remove_file(path)
                released.append(name)
        return released

    def holders(self) -> dict[str, str]:
        """Address -> the container id that holds it."""
        found = {}
        for name in self._names():
            holder = self._holder(os.path.join(self.directory, name))
            if holder:
                found[name] = holder
        return found

    def _names(self) -> list[str]:
        try:
            return [name for name in os.listdir(self.directory) if not name.startswith(".")]
        except FileNotFoundError:
            return []

    @staticmethod
    def _holder(path: str) -> str | None:
        try:
            with open(path) as f:
                return f.read().strip() or None
        except OSError:
            return None

