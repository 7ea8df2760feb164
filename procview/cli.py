"""The ``procview`` command line.

Each command imports what it needs inside its own function, so that a
command never pays for another's imports. ``procview run`` does not come
through here at all (see ``procview.entry``): click's import alone costs
more than runc's whole run.

Exit codes: 0 success; 1 a command failed at run time (its message says
why); 2 bad usage (click's convention); 125 reserved for ``procview run``
failing before the container's command runs (Docker's convention).
"""

from __future__ import annotations

import logging
import sys

import click

from procview import DEFAULT_SECCOMP_SOCKET as SECCOMP_SOCKET, __version__

EXIT_FAILURE = 1


def _setup_logging(level: str, name: str = "procview") -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), format=f"{name}: %(levelname)s: %(message)s", stream=sys.stderr)


class _LazyGroup(click.Group):
    """Command groups that live in other packages, imported only when used
    (so ``procview run`` never pays for ``procview image``'s imports)."""

    lazy = {
        "image": ("procview.runtime.images.commands", "image"),
        **{name: ("procview.runtime.images.commands", name) for name in ("pull", "push", "login", "logout")},
        "network": ("procview.runtime.network.commands", "network"),
        "pod": ("procview.runtime.pod_commands", "pod"),
        **{name: ("procview.runtime.kube.commands", name) for name in ("apply", "get", "delete", "controller")},
        **{name: ("procview.runtime.lifecycle_commands", name) for name in ("ps", "inspect", "port", "logs", "start", "stop", "kill", "rm", "diff", "commit", "stats")},
        "exec": ("procview.runtime.lifecycle_commands", "exec_"),
        "prune": ("procview.runtime.lifecycle_commands", "prune"),
    }

    def list_commands(self, ctx):
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx, name):
        if name in self.lazy:
            import importlib

            module, attribute = self.lazy[name]
            return getattr(importlib.import_module(module), attribute)
        return super().get_command(ctx, name)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="procview")
def main() -> None:
    """Container resource views: /proc and /sys files that tell a
    container its own memory, CPUs, uptime and load."""


def _metrics_address(ctx, param, value: str | None) -> tuple[str, int] | None:
    """``--metrics ADDR:PORT`` -> (host, port); a malformed one is bad usage."""
    if value is None:
        return None
    from procview.metrics import parse_address

    try:
        return parse_address(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@main.command()
@click.argument("mountpoint", default="/var/lib/procview")
@click.option("--pidfile", default=None, help="Write the daemon's pid here once the mount answers.")
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]), show_default=True)
@click.option("--seccomp-socket", envvar="PROCVIEW_SECCOMP_SOCKET", default=SECCOMP_SOCKET, show_default=True,
              help="Where runtimes hand over seccomp listeners (OCI listenerPath) for sysinfo() and sched_getaffinity().")
@click.option("--no-seccomp-socket", is_flag=True, help="Serve the files only; answer no syscalls.")
@click.option("--spawn-holder/--no-spawn-holder", default=True, show_default=True,
              help="Start a listener holder at the seccomp socket if none answers (under systemd its own unit runs it).")
@click.option("--shards", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Answer on this many cores: K daemons, shard i>0 mounted at MOUNTPOINT.shards/i; procview run and "
                   "procview-runc spread containers over them.")
@click.option("--metrics", "metrics", metavar="ADDR:PORT", default=None, callback=_metrics_address,
              help="Serve Prometheus metrics at http://ADDR:PORT/metrics ([ADDR]:PORT for IPv6; with --shards, "
                   "shard i at PORT+i).")
@click.option("--shard-index", type=int, default=None, hidden=True)  # set by shard 0 for the shards it starts
@click.option("--parent-fd", type=int, default=None, hidden=True)
def serve(mountpoint: str, pidfile: str | None, log_level: str, seccomp_socket: str, no_seccomp_socket: bool,
          spawn_holder: bool, shards: int, metrics: tuple[str, int] | None, shard_index: int | None,
          parent_fd: int | None) -> None:
    """Mount the view at MOUNTPOINT (FUSE) and serve it in the foreground.

    Containers bind-mount its files over their own, as with LXCFS:
    MOUNTPOINT/proc/meminfo over /proc/meminfo, and so on. Containers whose
    runtime hands their seccomp listener to the socket (procview run does;
    runc and crun with linux.seccomp.listenerPath) also get their own
    values from sysinfo() and sched_getaffinity(). Stops, unmounting, on
    SIGTERM or SIGINT.

    With --shards K, K daemons serve the view, one Python process per
    core: this one at MOUNTPOINT (the path binds name) and K-1 children at
    MOUNTPOINT.shards/1 ... K-1, started again if they die and stopped
    with this one.
    """
    from procview.cgroups import CgroupError

    try:  # pyfuse3's extension module links libfuse3
        from procview.daemon import ServeError, serve as run_daemon
    except ImportError as exc:
        from procview.native import explain_import_error

        raise click.ClickException(explain_import_error(exc)) from None

    _setup_logging(log_level, "procview" if shard_index is None else f"procview shard {shard_index}")
    try:
        run_daemon(mountpoint, pidfile, seccomp_socket=None if no_seccomp_socket else seccomp_socket, spawn_holder=spawn_holder,
                   shards=shards, log_level=log_level, parent_fd=parent_fd, metrics=metrics, shard_index=shard_index or 0)
    except (ServeError, CgroupError, OSError) as exc:
        raise click.ClickException(str(exc)) from None


@main.command("listener-holder", context_settings={"ignore_unknown_options": True, "help_option_names": []},
              add_help_option=False, short_help="Keep containers' seccomp listeners across restarts of procview serve.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def listener_holder(args):
    """Keep containers' seccomp listeners across restarts of procview serve
    (see 'procview listener-holder --help').

    ``procview.entry`` sends the command straight to
    ``procview.listener_holder.main``, which needs nothing but the standard
    library (the holder lives as long as the containers); this command is
    what ``procview --help`` lists.
    """
    from procview import listener_holder as holder

    sys.exit(holder.main(list(args)))


@main.command()
@click.option("--socket", "socket_path", envvar="PROCVIEW_FORKSERVER_SOCKET", default="/run/procview/forkserver.sock",
              show_default=True, help="Where procview run hands over its requests.")
def forkserver(socket_path: str) -> None:
    """Start containers for procview run without its start-up imports.

    Imports the runtime once, then forks a ready copy of itself for each
    procview run that connects; procview run passes its arguments,
    environment, directory, standard streams and signals, and exits with
    the container's status. Without a fork server procview run does all
    of it itself. Stops on SIGTERM or SIGINT, after the containers it
    started have ended (a second signal: at once). See docs/runtime.md.
    """
    from procview.unix_socket import notify_systemd
    from procview.runtime.forkserver import ForkServerError, serve as run_forkserver

    def ready() -> None:
        click.echo(f"procview: fork server listening on {socket_path}", err=True)
        try:
            notify_systemd("READY=1")  # Type=notify: "started" means "listening"
        except OSError as exc:
            click.echo(f"procview: warning: could not notify systemd: {exc}", err=True)

    try:
        run_forkserver(socket_path, ready=ready)
    except ForkServerError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.argument("path")
@click.option("--pid", type=int, default=None, help="Render as this process would see it (default: this process).")
@click.option("--root", default="/", show_default=True, hidden=True, help="Machine root to read from (tests).")
@click.option("--log-level", default="warning", type=click.Choice(["debug", "info", "warning", "error"]), show_default=True)
def show(path: str, pid: int | None, root: str, log_level: str) -> None:
    """Print virtual file PATH as process PID sees it.

    PATH is a file of the view, e.g. proc/meminfo, /proc/stat,
    sys/devices/system/cpu/online or sys/devices/system/node/node0/meminfo.
    """
    import os

    from procview.cgroups import CgroupError
    from procview.engine import ViewEngine

    _setup_logging(log_level)
    try:
        engine = ViewEngine(root=root)
    except CgroupError as exc:
        raise click.ClickException(str(exc)) from None
    path = path.strip("/")
    if not engine.is_virtual(path):
        raise click.ClickException(f"{path}: not a file of the view (try proc/meminfo, proc/stat, sys/devices/system/cpu/online)")
    target = os.getpid() if pid is None else pid
    if not os.path.exists(engine.host.path(f"/proc/{target}")):
        raise click.ClickException(f"no process with pid {target}")
    sys.stdout.write(engine.render(path, target).decode())


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False, "help_option_names": []},
              add_help_option=False, short_help="Run COMMAND in a new container from IMAGE (busybox is built in).")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def run(args):
    """Run COMMAND in a new container from IMAGE (see 'procview run --help').

    The options and their parser live in ``procview.runtime.run_command``: the
    ``procview`` entry point (``procview.entry``) goes there directly, without
    importing click, and this command is what ``procview --help`` lists.
    """
    from procview.runtime import run_command

    run_command.main(list(args))
