"""The interfaces of a bridge network, through netlink (pyroute2).

On the host: one Linux bridge per network, holding the gateway address,
and one end of a veth pair per container plugged into it. In the
container's network namespace: the other end, named ``eth0``, with the
container's address and a default route through the gateway, and
loopback up. What ``ip link add ... type veth peer ... netns``, ``ip
addr add`` and ``ip route add default via`` do, as netlink messages.
"""

from __future__ import annotations

import os

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError  # what every call here may raise

CONTAINER_INTERFACE = "eth0"


class NotABridge(OSError):
    """An interface of the bridge's name that is something else (never
    procview's: it is left alone)."""


def ensure_bridge(name: str, gateway: str, prefixlen: int) -> None:
    """The bridge ``name`` exists, holds ``gateway/prefixlen`` and is up."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=name)
        if not found:
            ipr.link("add", ifname=name, kind="bridge")
            found = ipr.link_lookup(ifname=name)
        index = found[0]
        if _kind(ipr, index) != "bridge":
            raise NotABridge(f"{name} exists and is not a bridge (not procview's: rename or remove it)")
        has = {(a.get("address"), a["prefixlen"]) for a in ipr.get_addr(index=index, family=2)}
        if (gateway, prefixlen) not in has:
            ipr.addr("add", index=index, address=gateway, prefixlen=prefixlen)
        ipr.link("set", index=index, state="up")


def plug_container(bridge: str, host_end: str, netns_path: str, address: str, prefixlen: int, gateway: str) -> None:
    """A veth pair: ``host_end`` on the host, in ``bridge``; ``eth0`` in
    the namespace at ``netns_path``, with ``address`` and a default route
    through ``gateway``."""
    netns_fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with IPRoute() as ipr:
            ipr.link("add", ifname=host_end, kind="veth", peer={"ifname": CONTAINER_INTERFACE, "net_ns_fd": netns_fd})
            bridge_index = ipr.link_lookup(ifname=bridge)[0]
            ipr.link("set", index=ipr.link_lookup(ifname=host_end)[0], master=bridge_index, state="up")
    finally:
        os.close(netns_fd)
    with IPRoute(netns=netns_path, flags=0) as inside:
        index = inside.link_lookup(ifname=CONTAINER_INTERFACE)[0]
        inside.addr("add", index=index, address=address, prefixlen=prefixlen)
        inside.link("set", index=index, state="up")
        inside.link("set", index=inside.link_lookup(ifname="lo")[0], state="up")
        inside.route("add", dst="0.0.0.0/0", gateway=gateway)


def delete_bridge(name: str) -> bool:
    """Delete the bridge ``name``, if there is one (an interface of that
    name that is no bridge is not procview's, and stays)."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=name)
        if not found or _kind(ipr, found[0]) != "bridge":
            return False
    return delete_link(name)


def _kind(ipr, index: int) -> str | None:
    """An interface's kind (``bridge``, ``veth``...; None for loopback and
    physical ones)."""
    return ipr.get_links(index)[0].get(("linkinfo", "kind"))


def delete_link(name: str) -> bool:
    """Delete interface ``name`` (a veth's host end takes its peer with
    it; a bridge lets go of what was plugged in); False if there was none."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=name)
        if not found:
            return False
        try:
            ipr.link("del", index=found[0])
        except NetlinkError as exc:
            if exc.code != 19:  # ENODEV: gone meanwhile
                raise
            return False
        return True

