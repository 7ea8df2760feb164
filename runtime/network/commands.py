"""``procview network``: the user networks of ``procview run``.

    procview network create [--subnet CIDR] NAME
    procview network ls
    procview network inspect NAME...
    procview network rm NAME...
    procview network prune

``--root`` as for ``procview run``. A failure prints one line, ``procview:
error: ...``, and exits 125. ``bridge`` (built in) is listed and can be
inspected, never removed. ``prune`` removes every user network no
container is on, and what killed runs left on any network (their leases,
interfaces, namespace files, the table if no network is in use).
"""

from __future__ import annotations

import click

from procview.runtime.images.commands import ImageCommandError, _root_option, echo_json_each, echo_table


class NetworkCommandError(ImageCommandError):
    """One line on stderr, exit 125."""


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def network() -> None:
    """Manage the networks of procview run (bridge is built in)."""


@network.command("create")
@click.option("--subnet", metavar="CIDR", help="The network's IPv4 subnet (default: a free /16 of 10.90.0.0-10.127.255.255).")
@click.argument("name")
@_root_option
def create(subnet: str | None, name: str, root: str) -> None:
    """Make a network whose containers find each other by name."""
    from procview.runtime.network import registry

    try:
        made = registry.create(root, name, subnet)
    except registry.RegistryError as exc:
        raise NetworkCommandError(str(exc)) from None
    click.echo(made.name)


@network.command("ls")
@_root_option
def ls(root: str) -> None:
    """List networks: NAME, SUBNET, BRIDGE, CONTAINERS."""
    from procview.runtime.network import registry

    rows = [("NAME", "SUBNET", "BRIDGE", "CONTAINERS")]
    for found in registry.everyone(root):
        rows.append((found.name, found.subnet, found.interface, str(len(registry.leases_of(root, found).holders()))))
    echo_table(rows)


@network.command("inspect")
@click.argument("names", nargs=-1, required=True)
@_root_option
def inspect(names, root: str) -> None:
    """Print networks as a JSON array: subnet, gateway, bridge, and each
    container's address (and names, on a user network)."""
    from procview.runtime.network import names as naming, registry
    from procview.runtime.network.ipam import Subnet

    def describe(name: str) -> dict:
        network_ = registry.load(root, name)
        if network_ is None:
            raise registry.RegistryError(f"network {name} not found")
        holders = registry.leases_of(root, network_).holders()
        members = {m.container_id: list(m.names) for m in
                   naming.everyone(registry.directory(root, name), set(holders.values()))} if holders else {}
        return {
            "name": network_.name, "subnet": network_.subnet, "gateway": str(Subnet.parse(network_.subnet).gateway),
            "bridge": network_.interface, "builtin": network_.name == registry.DEFAULT_BRIDGE.name,
            "containers": {container_id: {"address": address, "names": members.get(container_id, [])}
                           for address, container_id in sorted(holders.items())},
        }

    echo_json_each(names, describe, (registry.RegistryError,), NetworkCommandError.exit_code)


@network.command("rm")
@click.argument("names", nargs=-1, required=True)
@_root_option
def rm(names, root: str) -> None:
    """Remove user networks no container is on."""
    from procview.runtime.network import registry

    failed = False
    for name in names:
        try:
            registry.remove(root, name)
            click.echo(name)
        except registry.RegistryError as exc:
            click.echo(f"procview: error: {exc}", err=True)
            failed = True
    if failed:
        raise SystemExit(NetworkCommandError.exit_code)


@network.command("prune")
@_root_option
def prune(root: str) -> None:
    """Remove every user network no container is on (after reclaiming
    what killed runs left), and print their names."""
    import os

    from procview.cgroups import discover
    from procview.runtime.container import cleanup_stale
    from procview.runtime.network import registry

    cleanup_stale(os.path.join(root, "containers"), discover())  # killed runs' leases go first
    for found in registry.everyone(root):
        if found.name == registry.DEFAULT_BRIDGE.name:
            continue
        try:
            registry.remove(root, found.name)
            click.echo(found.name)
        except registry.RegistryError:
            continue  # in use
