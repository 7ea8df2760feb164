"""``procview pod``: pods, groups of containers around an infra holder.

    procview pod create --name NAME [--hostname H] [--network N] [-p SPEC]... [--memory M] [--cpus N]
    procview pod ls
    procview pod inspect NAME...
    procview pod start NAME...
    procview pod stop [-t SECONDS] NAME...
    procview pod rm [-f] NAME...

``procview run --pod NAME ...`` starts a container in a pod. ``--root`` as
for ``procview run``. A failure prints one line, ``procview: error:
...``, and exits 125; with several NAMEs, the others are still acted on.
How pods work: ``runtime/pods.py`` and docs/pods.md.
"""

from __future__ import annotations

import os
import time

import click

from procview.runtime.images.commands import ImageCommandError, _root_option, echo_json_each, echo_table


class PodCommandError(ImageCommandError):
    """One line on stderr, exit 125."""


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def pod() -> None:
    """Manage pods: containers sharing a network, IPC, host name and cgroup."""


@pod.command("create")
@click.option("--name", required=True, help="The pod's name.")
@click.option("--hostname", help="The host name its containers share (default: the pod's name).")
@click.option("--network", "--net", "network", envvar="PROCVIEW_NETWORK", default="bridge", show_default=True,
              help="bridge, none, host or a user network: the infra's, which its containers share.")
@click.option("-p", "--publish", multiple=True, metavar="SPEC", help="Publish a port of the pod: [IP:][HOSTPORT:]PORT[/tcp|/udp].")
@click.option("-m", "--memory", help="Memory limit of the whole pod (e.g. 512M).")
@click.option("--cpus", help="CPUs' worth of time of the whole pod.")
@_root_option
def create(name: str, hostname: str | None, network: str, publish, memory: str | None, cpus: str | None, root: str) -> None:
    """Make a pod and start its infra container; print its id."""
    from procview.host import HostFiles
    from procview.runtime.limits import LimitError, parse_limits
    from procview.runtime.pods import PodError, create as create_pod

    if os.geteuid() != 0:
        raise PodCommandError("procview pod create needs root (it creates namespaces, mounts and cgroups)")
    network = "none" if network == "private" else network
    try:
        limits = parse_limits(HostFiles().online_cpus(), memory=memory, cpus=cpus)
    except LimitError as exc:
        raise PodCommandError(str(exc)) from None
    mappings = ()
    if publish:
        from procview.runtime.network.ports import PortError, parse_publish

        if network in ("none", "host"):
            raise PodCommandError(f"publishing ports needs a bridge network, --network bridge or a user network "
                                  f"(this pod's network: {network})")
        try:
            mappings = tuple(parse_publish(spec) for spec in publish)
        except PortError as exc:
            raise PodCommandError(str(exc)) from None
    if network.startswith("container:"):
        raise PodCommandError("a pod's network cannot be another container's")
    options = {key: value for key, value in (("hostname", hostname), ("network", network), ("publish", list(publish)),
                                              ("memory", memory), ("cpus", cpus)) if value}
    try:
        made = create_pod(root, name, limits, options, hostname=hostname, network=network, publish=mappings)
    except PodError as exc:
        raise PodCommandError(str(exc)) from None
    click.echo(made.id)


@pod.command("ls")
@_root_option
def ls(root: str) -> None:
    """List pods: POD ID, NAME, STATUS, CREATED, CONTAINERS (the infra's included)."""
    from procview.runtime.lifecycle import RecordStore
    from procview.runtime.lifecycle_commands import _ago
    from procview.runtime.pods import everyone, members, state

    store = RecordStore(root)
    now = time.time()
    rows = [("POD ID", "NAME", "STATUS", "CREATED", "CONTAINERS")]
    for found in everyone(root):
        rows.append((found.id[:12], found.name, state(root, found, store), _ago(now - found.created),
                     str(len(members(root, found, store)) + 1)))
    echo_table(rows)


@pod.command("inspect")
@click.argument("names", nargs=-1, required=True)
@_root_option
def inspect(names, root: str) -> None:
    """Print pods as a JSON array: state, host name, cgroup, options, infra and containers."""
    from procview.runtime.pods import PodError, find, to_json

    echo_json_each(names, lambda name: to_json(root, find(root, name)), (PodError,), PodCommandError.exit_code)


@pod.command("start")
@click.argument("names", nargs=-1, required=True)
@_root_option
def start(names, root: str) -> None:
    """Start a stopped pod: its infra, then its containers."""
    from procview.runtime.pods import start as start_pod

    _for_each(root, names, lambda found: start_pod(root, found))


@pod.command("stop")
@click.option("-t", "--time", "grace", type=int, default=10, show_default=True, help="Seconds before SIGKILL.")
@click.argument("names", nargs=-1, required=True)
@_root_option
def stop(grace: int, names, root: str) -> None:
    """Stop a pod's containers, then its infra."""
    from procview.runtime.pods import stop as stop_pod

    _for_each(root, names, lambda found: stop_pod(root, found, grace))


@pod.command("rm")
@click.option("-f", "--force", is_flag=True, help="Kill a running pod's containers first.")
@click.argument("names", nargs=-1, required=True)
@_root_option
def rm(force: bool, names, root: str) -> None:
    """Remove pods, their containers and cgroups (a running pod only with -f)."""
    from procview.runtime.pods import remove

    _for_each(root, names, lambda found: remove(root, found, force))


def _for_each(root: str, names, action) -> None:
    """``action(pod)`` for each name, printed once done; one line per
    failure, exit 125 at the end if any failed."""
    from procview.runtime.lifecycle import LifecycleError
    from procview.runtime.pods import PodError, find

    failed = False
    for name in names:
        try:
            action(find(root, name))
            click.echo(name)
        except (PodError, LifecycleError) as exc:
            click.echo(f"procview: error: {exc}", err=True)
            failed = True
    if failed:
        raise SystemExit(PodCommandError.exit_code)
