"""``procview ps | inspect | logs | exec | start | stop | kill | rm | diff | commit | prune | stats``: containers.

    procview ps [-a] [--format table|json]
    procview inspect NAME...
    procview logs [-f] NAME
    procview start NAME...
    procview stop [-t SECONDS] NAME...
    procview kill [-s SIGNAL] NAME...
    procview rm [-f] NAME...
    procview diff NAME
    procview commit NAME IMAGE[:TAG]
    procview stats [--no-stream] [--format table|json] [NAME...]

NAME is a container's name, its id, or an unambiguous prefix of the id.
``--root`` (or ``$PROCVIEW_ROOT``) as for ``procview run``. A failure
prints one line, ``procview: error: ...``, and exits 125 (as ``procview
image``); with several NAMEs, the others are still acted on. ``stats``
words an unknown NAME and exits as ``docker stats`` does (1). How detached
containers work: ``runtime/lifecycle.py`` and docs/lifecycle.md.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import click

from procview.runtime.images.commands import ImageCommandError, _root_option, echo_table

EXIT_ERROR = 125


class LifecycleCommandError(ImageCommandError):
    """One line on stderr, exit 125."""


def _store(root: str):
    from procview.runtime.lifecycle import RecordStore

    return RecordStore(root)


def _warn(message: str) -> None:
    click.echo(f"procview: warning: {message}", err=True)


def _for_each(root: str, names, action) -> None:
    """``action(store, id)`` for every NAME; errors are reported one line
    each and make the exit status 125, without stopping the others."""
    from procview.runtime.lifecycle import LifecycleError

    store = _store(root)
    failed = False
    for name in names:
        try:
            action(store, store.find(name))
            click.echo(name)
        except (LifecycleError, ValueError, OSError) as exc:
            click.echo(f"procview: error: {exc}", err=True)
            failed = True
    if failed:
        sys.exit(EXIT_ERROR)


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size} {unit}"
    return "1 second" if seconds == 1 else f"{seconds} seconds"


def _status(record, now: float) -> str:
    from procview.runtime.lifecycle import FAILED, PENDING, RUNNING, SUCCEEDED

    if record.phase == RUNNING:
        return f"Up {_ago(now - (record.started_at or record.created))}"
    if record.phase == PENDING:
        if record.exit_code is None:
            return "Created"
        # Between two runs. The kubernetes profile's waits are long: say
        # when it starts again (kubectl says CrashLoopBackOff); else as Docker.
        if record.waiting_reason and record.restart_backoff == "kubernetes":
            return f"{record.waiting_reason} ({record.exit_code}), restart in {_ago((record.next_start_at or now) - now)}"
        return f"Restarting ({record.exit_code}) {_ago(now - (record.finished_at or now))} ago"
    if record.phase in (SUCCEEDED, FAILED) and record.exit_code is not None:
        return f"Exited ({record.exit_code}) {_ago(now - (record.finished_at or now))} ago"
    return record.phase


@click.command("ps")
@click.option("-a", "--all", "show_all", is_flag=True, help="Also containers that have ended.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@_root_option
def ps(show_all: bool, fmt: str, root: str) -> None:
    """List detached containers (running ones; -a: all)."""
    from procview.runtime.lifecycle import LIVE_PHASES, UNKNOWN

    try:
        every = _store(root).all(warn=_warn)
    except OSError as exc:  # not root
        raise LifecycleCommandError(f"cannot read the containers' records: {exc}") from None
    records = [r for r in every if show_all or r.phase in LIVE_PHASES or r.phase == UNKNOWN]
    records.sort(key=lambda r: r.created, reverse=True)
    if fmt == "json":
        click.echo(json.dumps([r.to_json() for r in records], indent=1))
        return
    now = time.time()
    rows = [("CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "NAMES")]
    for r in records:
        command = " ".join(r.command) or "(image default)"
        rows.append((r.id[:12], r.image, f'"{command[:20]}"', f"{_ago(now - r.created)} ago", _status(r, now), r.name))
    echo_table(rows)


@click.command("inspect")
@click.argument("names", nargs=-1, required=True)
@_root_option
def inspect(names, root: str) -> None:
    """Print containers' records as a JSON array."""
    from procview.runtime.lifecycle import LifecycleError

    store = _store(root)
    found, failed = [], False
    for name in names:
        try:
            found.append(store.load(store.find(name)).to_json())
        except (LifecycleError, ValueError) as exc:
            click.echo(f"procview: error: {exc}", err=True)
            failed = True
    click.echo(json.dumps(found, indent=1))
    if failed:
        sys.exit(EXIT_ERROR)


@click.command("port")
@click.argument("name")
@_root_option
def port(name: str, root: str) -> None:
    """Print a running container's published ports, as docker port does:
    one "PORT/PROTO -> HOST_IP:HOST_PORT" line each."""
    from procview.runtime.lifecycle import LifecycleError

    store = _store(root)
    try:
        record = store.load(store.find(name))
    except (LifecycleError, ValueError) as exc:
        raise LifecycleCommandError(str(exc)) from None
    for network in record.networks.values():
        for line in network.get("ports", ()):
            click.echo(line)


@click.command("logs")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output until the container ends.")
@click.argument("name")
@_root_option
def logs(follow: bool, name: str, root: str) -> None:
    """Print a container's output (stdout and stderr, interleaved)."""
    from procview.runtime.lifecycle import LifecycleError

    store = _store(root)
    try:
        container_id = store.find(name)
    except LifecycleError as exc:
        raise LifecycleCommandError(str(exc)) from None
    out = sys.stdout.buffer
    try:
        log = open(store.log_path(container_id), "rb")
    except FileNotFoundError:
        # A foreground container's output went to the terminal that ran it.
        _warn(f"container {name} ran in the foreground: its output was not logged")
        return
    with log:
        while True:
            chunk = log.read(65536)
            if chunk:
                out.write(chunk)
                out.flush()
                continue
            if not follow or not store.monitor_alive(container_id):
                break
            time.sleep(0.1)
        out.write(log.read())  # what came between the last read and the end
        out.flush()


@click.command("start")
@click.argument("names", nargs=-1, required=True)
@_root_option
def start(names, root: str) -> None:
    """Start containers that ended (or lost their monitor) again, detached."""
    _for_each(root, names, lambda store, container_id: start_container(store, container_id, root))


def start_container(store, container_id: str, root: str) -> None:
    """``docker start``: the container's options, as kept in its record,
    run again under a new monitor (runtime/lifecycle.py ``start_again``)."""
    from procview.runtime.container import RunError
    from procview.runtime.lifecycle import LIVE_PHASES, LifecycleError, start_again
    from procview.runtime.run_command import config_from_record

    record = store.load(container_id)
    if record.phase in LIVE_PHASES and store.monitor_alive(container_id):
        raise LifecycleError(f"container {record.name} is already running")
    if record.config.get("kube-digest"):
        raise LifecycleError(f"container {record.name} is a container of the applied pod {record.config.get('pod')}: "
                             "procview apply or procview controller starts it")
    if record.config.get("infra"):
        raise LifecycleError(f"container {record.name} is the infra of pod {record.config.get('pod')}: use procview pod start")
    try:
        start_again(config_from_record(record.config), root, container_id)
    except RunError as exc:
        raise LifecycleError(str(exc)) from None


@click.command("stop")
@click.option("-t", "--time", "grace", type=click.IntRange(min=0), default=10, show_default=True,
              help="Seconds to wait after SIGTERM before SIGKILL.")
@click.argument("names", nargs=-1, required=True)
@_root_option
def stop(grace: int, names, root: str) -> None:
    """Stop containers: SIGTERM, a grace period, then SIGKILL."""
    from procview.runtime.lifecycle import stop as stop_container

    _for_each(root, names, lambda store, container_id: stop_container(store, container_id, grace, root))


def _signal_number(value: str) -> int:
    text = value.upper().removeprefix("SIG")
    if text.isdigit():
        number = int(text)
    else:
        try:
            number = signal.Signals["SIG" + text].value
        except KeyError:
            raise click.BadParameter(f"unknown signal {value!r}") from None
    if not 0 < number < signal.NSIG:
        raise click.BadParameter(f"unknown signal {value!r}")
    return number


@click.command("kill")
@click.option("-s", "--signal", "sig", default="KILL", show_default=True, help="Signal name or number.")
@click.argument("names", nargs=-1, required=True)
@_root_option
def kill(sig: str, names, root: str) -> None:
    """Send a signal to running containers' commands."""
    from procview.runtime.lifecycle import LIVE_PHASES, LifecycleError, signal_container

    try:
        number = _signal_number(sig)
    except click.BadParameter as exc:
        raise LifecycleCommandError(exc.format_message()) from None

    def act(store, container_id):
        record = store.load(container_id)
        if record.phase not in LIVE_PHASES:
            raise LifecycleError(f"container {record.name} is not running")
        signal_container(record, number)

    _for_each(root, names, act)


@click.command("rm")
@click.option("-f", "--force", is_flag=True, help="Kill a running container first.")
@click.argument("names", nargs=-1, required=True)
@_root_option
def rm(force: bool, names, root: str) -> None:
    """Remove containers (a running one only with -f)."""
    from procview.runtime.lifecycle import LifecycleError, remove
    from procview.runtime.pods import everyone as every_pod

    from procview.runtime.pods import infra_name

    def act(store, container_id):
        for pod in every_pod(root):
            if pod.infra_id == container_id:
                raise LifecycleError(f"container {infra_name(pod.id)} is the infra of pod {pod.name}: "
                                     "it goes with the pod (procview pod rm)")
        remove(store, container_id, force, root)  # a record whose state is unreadable too

    _for_each(root, names, act)


@click.command("exec", context_settings={"allow_interspersed_args": False})
@click.option("-i", "--interactive", is_flag=True, help="Keep standard input open.")
@click.option("-t", "--tty", is_flag=True, help="Give the command a terminal (a pty inside the container).")
@click.option("-e", "--env", multiple=True, help="Set KEY=VALUE (or pass KEY from this environment).")
@click.option("-w", "--workdir", help="Working directory (default: the container's).")
@click.option("-u", "--user", help="UID[:GID] or NAME[:GROUP] (default: the container's).")
@click.argument("name")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@_root_option
def exec_(interactive: bool, tty: bool, env, workdir, user, name: str, command, root: str) -> None:
    """Run COMMAND inside the running container NAME.

    It joins the container's namespaces and cgroup and gets its
    capabilities, seccomp profile and view. Exit status: the command's;
    125 if procview failed; 126/127 if the command cannot be run or found.
    """
    from procview.runtime.exec import ExecError, exec_in
    from procview.runtime.lifecycle import LifecycleError

    store = _store(root)
    try:
        record = store.load(store.find(name))
        code = exec_in(record, list(command), list(env), workdir, user, interactive, root, _warn, tty=tty)
    except ExecError as exc:
        click.echo(f"procview: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except (LifecycleError, ValueError) as exc:
        raise LifecycleCommandError(str(exc)) from None
    sys.stdout.flush()
    sys.exit(code)


@click.command("prune")
@_root_option
def prune(root: str) -> None:
    """Remove ended containers (Succeeded, Failed), then image layers no
    image uses; report the space reclaimed. Unknown containers are kept
    (use rm -f)."""
    from procview.runtime.images import ImageError, ImageStore
    from procview.runtime.lifecycle import FAILED, SUCCEEDED

    from procview.runtime.pods import everyone as every_pod

    store = _store(root)
    store.remove_abandoned()
    reclaimed = 0
    removed = []
    pods = {pod.name for pod in every_pod(root)}
    for record in store.all(warn=_warn):
        if record.config.get("pod") in pods:
            continue  # a pod's container goes with its pod (pod rm), and pod start needs it
        if record.phase in (SUCCEEDED, FAILED) and not store.monitor_alive(record.id):
            reclaimed += _tree_size(store.path(record.id))
            store.remove(record.id)
            removed.append(record.id)
    try:
        layers, layer_bytes = ImageStore(root).prune()
    except ImageError as exc:
        raise LifecycleCommandError(str(exc)) from None
    if removed:
        click.echo("Deleted containers:")
        for container_id in removed:
            click.echo(container_id)
    click.echo(f"Deleted layers: {layers}")
    click.echo(f"Total reclaimed space: {_human(reclaimed + layer_bytes)}")


@click.command("diff")
@click.argument("name")
@_root_option
def diff(name: str, root: str) -> None:
    """List what container NAME changed in its file system, against its
    image: A (added), C (changed), D (deleted), one path per line."""
    from procview.runtime.changes import changes, excluded

    record, upper, layers = _writable_layer(root, name)
    try:
        found = changes(upper, layers, excluded(record.volumes))
    except OSError as exc:
        raise LifecycleCommandError(f"cannot read the changes of {record.name}: {exc}") from None
    try:
        for change in found:
            click.echo(str(change))
        sys.stdout.flush()
    except BrokenPipeError:  # diff | head
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


@click.command("commit")
@click.argument("name")
@click.argument("image")
@_root_option
def commit(name: str, image: str, root: str) -> None:
    """Make image IMAGE[:TAG] from container NAME: its image's layers plus
    one layer with the container's changes (not the runtime's /etc/hosts,
    /etc/hostname, /etc/resolv.conf, nor volumes). The new image runs what
    the container ran, with its environment. A running container is not
    paused while its changes are read."""
    from procview.runtime.changes import excluded
    from procview.runtime.images import ImageError, ImageStore

    record, upper, _layers = _writable_layer(root, name)
    store = ImageStore(root)
    try:
        made = store.commit(record.layers, upper, image, committed_config(store, record), excluded(record.volumes))
    except ImageError as exc:
        raise LifecycleCommandError(str(exc)) from None
    click.echo(made.id)


def committed_config(store, record) -> dict:
    """The image config of a commit, as Docker makes it: the container's
    image's, with the container's command, environment, working directory
    and user."""
    from procview.runtime.images import ImageError

    try:
        config = dict(store.get(record.image_id).config)
    except ImageError:
        config = {}  # the image was removed; its layers were kept for us
    if record.command:
        config["Cmd"] = list(record.command)
    # The runtime's own additions are per run, not the image's: HOSTNAME
    # always; HOME and TERM unless the image or -e set them.
    chosen = {item.partition("=")[0] for item in [*config.get("Env", []), *record.config.get("env", [])]}
    env = {key: value for key, value in record.env.items()
           if key != "HOSTNAME" and (key not in ("HOME", "TERM") or key in chosen)}
    if env:
        config["Env"] = [f"{key}={value}" for key, value in env.items()]
    if record.config.get("workdir"):
        config["WorkingDir"] = record.config["workdir"]
    if record.config.get("user"):
        config["User"] = record.config["user"]
    return config


def _writable_layer(root: str, name: str):
    """(record, upper dir, image layer dirs) of container NAME."""
    from procview.runtime.images.store import ImageStore
    from procview.runtime.lifecycle import LifecycleError

    store = _store(root)
    try:
        record = store.load(store.find(name))
    except (LifecycleError, ValueError) as exc:
        raise LifecycleCommandError(str(exc)) from None
    upper = store.path(record.id, "upper")
    if not record.layers or not os.path.isdir(upper):
        raise LifecycleCommandError(f"container {record.name} has no file system yet (it never started)")
    return record, upper, ImageStore(root).layer_dirs(record.layers)


def _tree_size(path: str) -> int:
    total = 0
    for directory, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_size
            except OSError:
                pass
    return total


def _human(size: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1000
    return f"{size}B"


@click.command("stats")
@click.option("--no-stream", is_flag=True, help="Print one frame and exit (as when not on a terminal).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="A table, or one JSON object per container (docker's {{json .}} keys).")
@click.argument("names", nargs=-1)
@_root_option
def stats(no_stream: bool, fmt: str, names, root: str) -> None:
    """Show containers' CPU %, memory use and limit, network and block I/O
    and tasks, as docker stats: every running container, or those NAMEd.
    On a terminal the frame is redrawn every second until Ctrl-C; with
    --no-stream, or when not on a terminal, one frame. Exit 1 if a NAME is
    not a container."""
    from procview.cgroups import CgroupError, discover
    from procview.runtime.stats import frame_lines, frames, redraw

    store = _store(root)
    try:
        store.ids()
    except OSError as exc:  # not root
        click.echo(f"procview: error: cannot read the containers' records: {exc}", err=True)
        sys.exit(1)
    wanted = _stats_wanted(store, names) if names else None
    try:
        hierarchies = discover()
    except CgroupError as exc:
        click.echo(f"procview: error: {exc}", err=True)
        sys.exit(1)
    out = sys.stdout
    stream = not no_stream and out.isatty()
    try:
        for number, entries in enumerate(frames(store, hierarchies, wanted)):
            lines = frame_lines(entries, fmt)
            out.write(redraw(lines, first=number == 0) if stream else "".join(line + "\n" for line in lines))
            out.flush()
            if not stream:
                break
    except KeyboardInterrupt:
        if not stream:
            raise
        # Ctrl-C is how a stream ends: exit 0, as docker stats does.
    except BrokenPipeError:  # stats | head
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())


def _stats_wanted(store, names) -> list:
    """[(NAME, record)] for ``stats NAME...``; any NAME that is not a
    container: Docker's line for each, exit 1, before any frame."""
    from procview.runtime.lifecycle import LifecycleError, NoSuchContainer

    wanted, failed = [], False
    for name in names:
        try:
            wanted.append((name, store.load(store.find(name))))
        except NoSuchContainer:
            click.echo(f"Error: No such container: {name}", err=True)
            failed = True
        except (LifecycleError, ValueError) as exc:
            click.echo(f"Error: {exc}", err=True)
            failed = True
    if failed:
        sys.exit(1)
    return wanted


COMMANDS = {"ps": ps, "inspect": inspect, "port": port, "logs": logs, "stop": stop, "kill": kill, "rm": rm, "exec": exec_, "prune": prune,
            "diff": diff, "commit": commit, "stats": stats}

__all__ = ["COMMANDS", "ps", "inspect", "port", "logs", "stop", "kill", "rm", "exec_", "prune", "diff", "commit", "stats"]
