"""Container networks: ``--network none|host|bridge|NAME|container:NAME``.

- ``none`` (``private``, the old name, still works): a network namespace
  of the container's own with loopback only, up (pid 1 unshares it).
- ``host``: the host's network namespace.
- ``bridge``: a namespace plugged into the ``bridge`` network, as Docker's
  default: the Linux bridge ``procview0`` holds the gateway (the subnet's
  first address), each container is one veth pair away from it with the
  next free address (``ipam``), and an nftables rule of procview's own
  table masquerades what leaves the subnet (``nat``). The namespace is
  made and wired before the container's first process exists
  (``netns``), so the command starts with its network up, and pid 1 joins
  it with ``setns``.

User networks (``procview network create NAME``, ``registry``) are more
bridges of the same kind, with subnets of their own; their containers
find each other by name (``names``: in ``/etc/hosts``, and from the
network's DNS responder, ``responder`` and ``dns``, on the gateway
address, their only nameserver), and procview's table drops traffic
between two of its bridges, so containers on different networks cannot
reach each other. Published ports (``-p``, ``ports``) are destination NAT
rules in the same table, each host port held by a bound socket while the
container runs. (``container:NAME`` needs none of this: pid 1 joins the
other container's namespace, runtime/container.py.)

What a bridge attachment creates, in order, each undone in reverse by
``detach``: a marker file in the container's directory (so that whoever
finds the container's run killed knows to ``reclaim``), the host ports'
sockets, the address's lease, the published ports' file, the bridge and
the table (the bridge shared by the network's containers, the table by
every network's, rewritten from all of them), the namespace's file, the
veth pair, and on a user network its member file, every member's
``/etc/hosts`` and the network's DNS responder (started with its first
container, after the bridge it listens on). A bridge and its responder go
with the network's last lease, the table with the last lease of any. One lock (``registry.locked``) orders every
change to any network, so that no run removes the bridge another is
plugging into, or writes the table from what another is changing.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import NamedTuple

from procview._io import remove_file, replace_file
from procview.runtime.network import registry
from procview.runtime.network.ipam import IpamError, Leases, Subnet
from procview.runtime.network.registry import DEFAULT_BRIDGE, BridgeNetwork

# The file in a container's directory that says it was attached (its
# content: the network's name), and the namespace's file beside it.
MARKER = "network"
NETNS_FILE = "netns"


class NetworkError(Exception):
    """A network could not be set up (one line; ``procview run`` exits 125)."""


class Attachment(NamedTuple):
    """One container's place on a bridge network."""

    network: BridgeNetwork
    container_id: str
    netns_path: str  # the namespace pid 1 joins
    address: str  # the container's IPv4 address
    prefix_len: int
    gateway: str
    host_end: str  # the veth's name on the host
    ports: tuple = ()  # its published ports (ports.PortMapping), host ports chosen
    reservations: tuple = ()  # a bound socket per published port, held while it runs
    peers: tuple = ()  # /etc/hosts lines for the other containers of a user network
    nameserver: str | None = None  # its DNS responder's address, on a user network


def host_end_name(container_id: str) -> str:
    """The veth's host end: ``pv`` and 12 characters of the id (an
    interface name has at most 15)."""
    return "pv" + container_id[:12]


def find(root: str, name: str) -> BridgeNetwork:
    """The bridge network ``name`` (``bridge`` or a user network's)."""
    network = registry.load(root, name)
    if network is None:
        raise NetworkError(f"network {name} not found")
    return network


def attach(root: str, container_id: str, container_dir: str, linux, publish=(),
           network: BridgeNetwork = DEFAULT_BRIDGE, names: tuple = ()) -> Attachment:
    """Give the container an address on ``network``, a network namespace
    wired to it at ``container_dir``/netns, and its ``publish``ed ports
    (``ports.PortMapping``s, host port 0: any). ``names``: its host name,
    container name and aliases, for the other containers of a user
    network (the built-in ``bridge`` has no names, as Docker's)."""
    try:
        from procview.runtime.network import links, nat, names as naming, netns, ports, responder
    except ImportError as exc:
        raise NetworkError(f"network {network.name}: {exc.name} is not installed") from None
    try:
        nat.check_available()
    except nat.NftError as exc:
        raise NetworkError(f"network {network.name}: {exc}") from None
    builtin = network.name == DEFAULT_BRIDGE.name
    if builtin:
        network = registry.requested_builtin()
    subnet = _subnet(network)
    directory = registry.directory(root, network.name)
    _write(os.path.join(container_dir, MARKER), network.name)
    netns_path = os.path.join(container_dir, NETNS_FILE)
    host_end = host_end_name(container_id)
    reservations, published = [], []
    with contextlib.ExitStack() as undo:
        # The host ports first: a port that is taken stops everything
        # before anything is made.
        for mapping in publish:
            try:
                sock, mapping = ports.reserve(mapping)
            except ports.PortError as exc:
                raise NetworkError(str(exc)) from None
            undo.callback(sock.close)
            reservations.append(sock)
            published.append(mapping)
        with registry.locked(root):
            leases = Leases(directory, subnet)
            try:
                _check_no_overlap(subnet, network.interface)
                address = leases.take(container_id)
            except IpamError as exc:
                hint = f" (${registry.BUILTIN_SUBNET_ENV} sets another)" if builtin else ""
                raise NetworkError(f"network {network.name}: {exc}{hint}") from None
            # Runs after this block has let go of the lock: takes it again.
            undo.callback(_detach_under_lock, root, network, container_id, netns_path, host_end, linux)
            if builtin:
                try:
                    registry.pin_builtin(root, network)
                except registry.RegistryError as exc:
                    raise NetworkError(str(exc)) from None
            try:
                _save_ports(directory, container_id, published)
                peers = ()
                if not builtin:
                    me = naming.Member(container_id, str(address), tuple(names), os.path.join(container_dir, "hosts"))
                    naming.save(directory, me)
                    members = naming.everyone(directory, set(leases.holders().values()))
                    naming.refresh(members)
                    peers = naming.peer_lines(members, container_id)
                _enable_forwarding()
                links.ensure_bridge(network.interface, str(subnet.gateway), subnet.network.prefixlen)
                if network != DEFAULT_BRIDGE:  # it listens on the gateway's address: the bridge's
                    responder.ensure(root, network, str(subnet.gateway))
                _allow_loopback_sources(network.interface)
                _write_table(root)
                netns.create(linux, netns_path)
                links.plug_container(network.interface, host_end, netns_path, str(address), subnet.network.prefixlen,
                                     str(subnet.gateway))
            except (OSError, nat.NftError, links.NetlinkError, responder.ResponderError) as exc:
                raise NetworkError(f"network {network.name}: {getattr(exc, 'strerror', None) or exc}") from None
        undo.pop_all()
    return Attachment(network, container_id, netns_path, str(address), subnet.network.prefixlen, str(subnet.gateway),
                      host_end, tuple(published), tuple(reservations), peers,
                      None if network == DEFAULT_BRIDGE else str(subnet.gateway))


def detach(root: str, attachment: Attachment, linux) -> None:
    """Undo ``attach``: the veth, the namespace's file, the published
    ports, the name, the lease; the bridge and the DNS responder too if no
    other container is on the network, and the table if none is on any."""
    try:
        _detach_under_lock(root, attachment.network, attachment.container_id, attachment.netns_path, attachment.host_end, linux)
    finally:
        for sock in attachment.reservations:  # the host ports are free once no rule sends them on
            sock.close()


def _detach_under_lock(root: str, network: BridgeNetwork, container_id: str, netns_path: str, host_end: str, linux) -> None:
    with registry.locked(root):
        _detach_locked(root, network, container_id, netns_path, host_end, linux)


def reclaim(root: str, container_id: str, container_dir: str, linux) -> None:
    """What a killed run of ``container_id`` left on its network, if it
    had one (its directory has the marker): the same as ``detach`` (its
    reserved host ports died with it)."""
    try:
        with open(os.path.join(container_dir, MARKER)) as f:
            name = f.read().strip()
    except OSError:
        return
    network = registry.load(root, name)
    if network is None:
        return
    _detach_under_lock(root, network, container_id, os.path.join(container_dir, NETNS_FILE), host_end_name(container_id), linux)


def _detach_locked(root: str, network: BridgeNetwork, container_id: str, netns_path: str, host_end: str, linux) -> None:
    """Each step is tried whatever the one before did: a step that fails
    is reported (one line on stderr) and the rest still run, so that one
    stuck interface never keeps a lease, or the table, forever."""
    from procview.runtime.network import links, nat, names as naming, netns, responder

    def step(what: str, call, *args) -> None:
        try:
            call(*args)
        except Exception as exc:  # noqa: BLE001 - netlink, nftables or the filesystem: report, go on
            print(f"procview: warning: network {network.name}: {what}: {exc}", file=sys.stderr)

    directory = registry.directory(root, network.name)
    leases = Leases(directory, _subnet(network))
    step(f"removing {host_end}", links.delete_link, host_end)
    step("removing the namespace's file", netns.remove, linux, netns_path)
    step("releasing the address", leases.release_container, container_id)
    step("forgetting the published ports", remove_file, _ports_file(directory, container_id))
    step("forgetting its name", naming.forget, directory, container_id)
    holders = leases.holders()
    if holders:
        step("rewriting the others' /etc/hosts",
             lambda: naming.refresh(naming.everyone(directory, set(holders.values()))))
    else:
        if network != DEFAULT_BRIDGE:  # signals only: this may run where no fork can (nat.py)
            step("stopping the DNS responder", responder.stop, directory)
        step(f"removing {network.interface}", links.delete_bridge, network.interface)
        if network.name == DEFAULT_BRIDGE.name:
            step("forgetting its subnet", registry.unpin_builtin, root)
    if any(registry.leases_of(root, other).holders() for other in registry.everyone(root)):
        step("rewriting the nftables table", _write_table, root)
    else:
        step("removing the nftables table", _remove_table, root)


# -- published ports: a file per container; the table, made from every network ------


def _ports_file(directory: str, container_id: str) -> str:
    return os.path.join(directory, "ports", container_id)


def _save_ports(directory: str, container_id: str, published: list) -> None:
    from procview.runtime.network import ports

    if not published:
        return
    os.makedirs(os.path.join(directory, "ports"), exist_ok=True)
    replace_file(_ports_file(directory, container_id), json.dumps(ports.to_json(published)))


def _write_table(root: str) -> None:
    """procview's table, from every network that has containers: its
    masquerade, its containers' published ports (a file of a container
    without an address is what a killed run left: removed), and a drop
    between every two of its bridges."""
    from procview.runtime.network import nat, ports

    in_use, forwards = [], []
    for network in registry.everyone(root):
        directory = registry.directory(root, network.name)
        address_of = {container_id: address for address, container_id in registry.leases_of(root, network).holders().items()}
        if not address_of:
            continue
        in_use.append((network.interface, network.subnet))
        ports_dir = os.path.join(directory, "ports")
        for name in sorted(os.listdir(ports_dir)) if os.path.isdir(ports_dir) else ():
            if name.endswith(".new") or name not in address_of:
                remove_file(os.path.join(ports_dir, name))
                continue
            try:
                with open(os.path.join(ports_dir, name)) as f:
                    mappings = ports.from_json(json.load(f))
            except (OSError, ValueError, TypeError):
                continue
            forwards += [ports.nat_rule(address_of[name], mapping) for mapping in mappings]
    # The table changes only when a network comes or goes or ports are
    # published: a container without ports joining a network in use leaves
    # it as it is, and a libnftables transaction (~9 ms) is saved. What was
    # last written is kept beside the lock (only ever read under it).
    text = nat.table_text(in_use, forwards)
    written = os.path.join(registry.networks_root(root), "table.nft")
    try:
        with open(written) as f:
            if f.read() == text:
                return
    except FileNotFoundError:
        pass
    remove_file(written)  # until the kernel has the new one
    nat.replace_table_text(text)
    _write(written, text)


def _remove_table(root: str) -> None:
    from procview.runtime.network import nat

    remove_file(os.path.join(registry.networks_root(root), "table.nft"))
    nat.remove_table()


def _subnet(network: BridgeNetwork) -> Subnet:
    try:
        return Subnet.parse(network.subnet)
    except IpamError as exc:
        raise NetworkError(f"network {network.name}: {exc}") from None


def _check_no_overlap(subnet: Subnet, bridge: str) -> None:
    """The subnet must not overlap a route of the host's (other than the
    network's own bridge's, and the default route): its addresses would
    shadow, or be shadowed by, real ones."""
    for route in registry.host_routes_now(except_interface=bridge):
        if route.overlaps(subnet.network):
            raise IpamError(f"subnet {subnet} overlaps the host's route to {route}")


def _enable_forwarding() -> None:
    """The host forwards IPv4 packets (Docker turns it on as well): the
    bridge's traffic to anywhere else is routed, not switched."""
    _sysctl_on("/proc/sys/net/ipv4/ip_forward")


def _allow_loopback_sources(bridge: str) -> None:
    """``route_localnet`` on the bridge alone: a connection the host makes
    to a published port at 127.0.0.1, sent on to a container, may leave
    through it (to be masqueraded there) instead of being dropped as a
    martian (Docker does the same on docker0 without its userland proxy)."""
    _sysctl_on(f"/proc/sys/net/ipv4/conf/{bridge}/route_localnet")


def _sysctl_on(path: str) -> None:
    with open(path) as f:
        if f.read().strip() == "1":
            return
    _write(path, "1")


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
