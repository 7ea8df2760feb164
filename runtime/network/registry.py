"""Which bridge networks exist: the built-in ``bridge`` and the user's own
(``procview network create NAME``), each a directory under the state
root:

    ROOT/networks/lock               held by whoever changes any network
    ROOT/networks/NAME/config.json   {"name", "subnet", "interface"} (user networks;
                                     the built-in one's while it is in use)
    ROOT/networks/NAME/leases/       addresses in use (ipam.py)
    ROOT/networks/NAME/members/      who is on it, for names (names.py)
    ROOT/networks/NAME/ports/        published ports (ports.py)
    ROOT/networks/NAME/dns.pid       its DNS responder's pid and start time (responder.py)
    ROOT/networks/NAME/dns.log       the responder's standard error

A user network's bridge is ``pvbr-`` and ten hex digits of its name's
SHA-1 (an interface name has at most 15 characters); its subnet is the
one given, or the first /16 of 10.90.0.0-10.127.255.255 that overlaps
neither another procview network nor a route of the host's. Bridges are
made when a network's first container comes and removed with its last,
as the built-in one's.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import re
from typing import NamedTuple

from procview._io import remove_file, remove_tree, replace_file
from procview.runtime.network.ipam import IpamError, Leases, Subnet

# Docker's rule for names (and procview's for containers').
NAME_PATTERN = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
RESERVED = ("bridge", "host", "none", "private")  # network modes, not networks one can make
AUTO_SUBNETS = [ipaddress.IPv4Network(f"10.{second}.0.0/16") for second in range(90, 128)]


class RegistryError(Exception):
    """A network that cannot be made, found or removed (one line)."""


class BridgeNetwork(NamedTuple):
    name: str
    interface: str  # the bridge's name on the host
    subnet: str


DEFAULT_BRIDGE = BridgeNetwork("bridge", "procview0", "10.89.0.0/16")
# The built-in network's subnet, if not DEFAULT_BRIDGE's (Docker's
# ``--bip``, Podman's ``default_subnet``): read by the run that makes the
# bridge, and pinned in ROOT/networks/bridge/config.json while any
# container is on it, so that every command agrees on it until then.
BUILTIN_SUBNET_ENV = "PROCVIEW_BRIDGE_SUBNET"


def networks_root(root: str) -> str:
    return os.path.join(root, "networks")


def directory(root: str, name: str) -> str:
    return os.path.join(networks_root(root), name)


@contextlib.contextmanager
def locked(root: str, wait: bool = True):
    """Held while any network, its leases, members, ports, bridge, DNS
    responder or procview's table change: one order for all of them.
    ``wait=False``: BlockingIOError if someone holds it now."""
    os.makedirs(networks_root(root), exist_ok=True)
    fd = os.open(os.path.join(networks_root(root), "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        os.close(fd)


def interface_for(name: str) -> str:
    return "pvbr-" + hashlib.sha1(name.encode()).hexdigest()[:10]


def load(root: str, name: str) -> BridgeNetwork | None:
    """The network called ``name``, or None. The built-in one has the
    subnet it was made with while it is in use, else the one asked for."""
    if not NAME_PATTERN.fullmatch(name):
        return None
    saved = _saved(root, name)
    if name == DEFAULT_BRIDGE.name:
        return saved or requested_builtin()
    return saved


def _saved(root: str, name: str) -> BridgeNetwork | None:
    try:
        with open(os.path.join(directory(root, name), "config.json")) as f:
            data = json.load(f)
        return BridgeNetwork(str(data["name"]), str(data["interface"]), str(data["subnet"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def requested_builtin() -> BridgeNetwork:
    """The built-in network as a run that makes its bridge would make it."""
    return DEFAULT_BRIDGE._replace(subnet=os.environ.get(BUILTIN_SUBNET_ENV) or DEFAULT_BRIDGE.subnet)


def pin_builtin(root: str, network: BridgeNetwork) -> None:
    """Under the lock, as a container joins the built-in network: record
    its subnet if it had no container, or check that it is the one in
    use (a bridge cannot be in two subnets at once)."""
    in_use = _saved(root, network.name)
    if in_use is None:
        chosen = ipaddress.IPv4Network(network.subnet)
        for other in everyone(root)[1:]:
            if ipaddress.IPv4Network(other.subnet).overlaps(chosen):
                raise RegistryError(f"network bridge: subnet {chosen} (${BUILTIN_SUBNET_ENV}) overlaps network "
                                    f"{other.name}'s {other.subnet}")
        os.makedirs(directory(root, network.name), exist_ok=True)
        replace_file(os.path.join(directory(root, network.name), "config.json"), json.dumps(network._asdict()))
    elif in_use.subnet != network.subnet:
        raise RegistryError(f"network bridge is in use with subnet {in_use.subnet}: ${BUILTIN_SUBNET_ENV}="
                            f"{network.subnet} applies once no container is on it")


def unpin_builtin(root: str) -> None:
    """With the built-in network's last container: the next run may make
    it again with another subnet."""
    remove_file(os.path.join(directory(root, DEFAULT_BRIDGE.name), "config.json"))


def everyone(root: str) -> list[BridgeNetwork]:
    """The built-in network and every user network, by name."""
    try:
        names = sorted(os.listdir(networks_root(root)))
    except FileNotFoundError:
        names = []
    found = [load(root, DEFAULT_BRIDGE.name)]
    for name in names:
        network = load(root, name) if name != DEFAULT_BRIDGE.name else None
        if network is not None:
            found.append(network)
    return found


def leases_of(root: str, network: BridgeNetwork) -> Leases:
    return Leases(directory(root, network.name), Subnet.parse(network.subnet))


def create(root: str, name: str, subnet: str | None = None, host_routes=None) -> BridgeNetwork:
    """Make the user network ``name``. ``host_routes``: the host's routes
    (IPv4Networks) a subnet must not overlap; read from the kernel when
    not given."""
    if not NAME_PATTERN.fullmatch(name):
        raise RegistryError(f"invalid network name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-]* are allowed")
    if name in RESERVED:
        raise RegistryError(f"network name {name} is reserved (a network mode of procview run)")
    with locked(root):
        if load(root, name) is not None:
            raise RegistryError(f"network with name {name} already exists")
        taken = [(other.name, ipaddress.IPv4Network(other.subnet)) for other in everyone(root)]
        routes = list(host_routes_now() if host_routes is None else host_routes)
        if subnet is not None:
            try:
                chosen = Subnet.parse(subnet).network
            except IpamError as exc:
                raise RegistryError(str(exc)) from None
            for other, network in taken:
                if network.overlaps(chosen):
                    raise RegistryError(f"subnet {chosen} overlaps network {other}'s {network}")
            for route in routes:
                if route.overlaps(chosen):
                    raise RegistryError(f"subnet {chosen} overlaps the host's route to {route}")
        else:
            chosen = next((candidate for candidate in AUTO_SUBNETS
                           if not any(candidate.overlaps(n) for _, n in taken) and not any(candidate.overlaps(r) for r in routes)),
                          None)
            if chosen is None:
                raise RegistryError("no free subnet left in 10.90.0.0-10.127.255.255: give one with --subnet")
        network = BridgeNetwork(name, interface_for(name), str(chosen))
        path = directory(root, name)
        os.makedirs(path, exist_ok=True)
        replace_file(os.path.join(path, "config.json"), json.dumps(network._asdict()))
    return network


def remove(root: str, name: str) -> None:
    """Remove the user network ``name``, which no container may be on."""
    if name == DEFAULT_BRIDGE.name:
        raise RegistryError("bridge is procview's built-in network: it cannot be removed")
    with locked(root):
        network = load(root, name)
        if network is None:
            raise RegistryError(f"network {name} not found")
        if leases_of(root, network).holders():
            raise RegistryError(f"network {name} has active endpoints (containers on it: stop them first)")
        from procview.runtime.network import responder

        responder.stop(directory(root, name))  # one a killed run left, if any
        remove_tree(directory(root, name))


def host_routes_now(except_interface: str | None = None) -> list[ipaddress.IPv4Network]:
    """The host's IPv4 routes (main table), but its default route and
    those through ``except_interface`` (a network's own bridge)."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        skip = (ipr.link_lookup(ifname=except_interface) or [None])[0] if except_interface else None
        return [ipaddress.IPv4Network(f"{route.get('dst')}/{route['dst_len']}", strict=False)
                for route in ipr.get_routes(family=2, table=254)
                if route["dst_len"] != 0 and (skip is None or route.get("oif") != skip)]

