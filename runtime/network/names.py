"""Containers of a user network find each other by name.

Each container on a user network gets, in its ``/etc/hosts``, a line for
every other container on that network: its address, then its host name,
its container name and its ``--network-alias``es. The files are written
again (in place: they are bind-mounted into the containers, and a bind
mount follows the inode) whenever a container joins or leaves the
network, under the networks' lock.

This is Docker's resolution of names on user networks as the C library
sees it (``getaddrinfo``: ping, wget, curl, Python, Java), from files: it
needs no process, and goes on working whatever happens to one. Programs
that send DNS queries themselves (``nslookup``, ``dig``) ask the network's
DNS responder (``responder.py``, ``dns.py``), which answers from the same
member files. As with Docker, the built-in ``bridge`` network has no names.

A member is a file ``ROOT/networks/NAME/members/ID`` (JSON), written with
the address's lease and removed with it.
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple

from procview._io import remove_file, replace_file
from procview.runtime.rootfs import hosts_file


class Member(NamedTuple):
    container_id: str
    address: str
    names: tuple  # its host name first, then its container name and aliases
    hosts_path: str  # its /etc/hosts as the host sees it (the bundle's file)


def members_dir(network_dir: str) -> str:
    return os.path.join(network_dir, "members")


def save(network_dir: str, member: Member) -> None:
    os.makedirs(members_dir(network_dir), exist_ok=True)
    replace_file(os.path.join(members_dir(network_dir), member.container_id),
                 json.dumps([member.container_id, member.address, list(member.names), member.hosts_path]))


def forget(network_dir: str, container_id: str) -> None:
    remove_file(os.path.join(members_dir(network_dir), container_id))


def everyone(network_dir: str, holders: set[str]) -> list[Member]:
    """The members whose container still holds an address (``holders``:
    container ids); a file of any other is a killed run's, and is removed
    (so only under the networks' lock)."""
    found = []
    for name, path in _files(network_dir):
        if name.endswith(".new") or name not in holders:
            remove_file(path)
            continue
        member = _load(path)
        if member is not None:
            found.append(member)
    return found


def listed(network_dir: str, holders: set[str]) -> list[Member]:
    """The same members as ``everyone``, read without the lock and
    without removing anything (the DNS responder's view)."""
    return [member for member in (_load(path) for name, path in _files(network_dir) if name in holders)
            if member is not None]


def _files(network_dir: str) -> list[tuple[str, str]]:
    directory = members_dir(network_dir)
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    return [(name, os.path.join(directory, name)) for name in names]


def _load(path: str) -> Member | None:
    try:
        with open(path) as f:
            container_id, address, names, hosts_path = json.load(f)
        return Member(str(container_id), str(address), tuple(str(n) for n in names), str(hosts_path))
    except (OSError, ValueError, TypeError):
        return None  # gone meanwhile, or not a member's file


def peer_lines(members: list[Member], container_id: str) -> tuple[str, ...]:
    """``/etc/hosts`` lines for everyone on the network but ``container_id``."""
    return tuple(f"{m.address}\t{' '.join(dict.fromkeys(m.names))}" for m in members if m.container_id != container_id)


def hosts_text(member: Member, members: list[Member]) -> str:
    """A member's whole ``/etc/hosts``."""
    return hosts_file(member.names[0], False, member.address, peer_lines(members, member.container_id))


def refresh(members: list[Member]) -> None:
    """Write every member's ``/etc/hosts`` again, in place (a member whose
    file is not there yet, being set up, gets it whole from its run)."""
    for member in members:
        try:
            with open(member.hosts_path, "r+") as f:
                f.write(hosts_text(member, members))
                f.truncate()
        except FileNotFoundError:
            continue

