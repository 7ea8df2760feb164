"""The ``procview`` command line.

Each command imports what it needs inside its own function, so that a
command never pays for another's imports (``procview run`` must start fast).

Exit codes: 0 success; 1 a command failed at run time (its message says
why); 2 bad usage (click's convention); 125 reserved for ``procview run``
failing before the container's command runs (Docker's convention).
"""

from __future__ import annotations

import logging
import sys

import click

from procview import __version__

EXIT_FAILURE = 1


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), format="procview: %(levelname)s: %(message)s", stream=sys.stderr)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="procview")
def main() -> None:
    """Container resource views: /proc and /sys files that tell a
    container its own memory, CPUs, uptime and load."""


@main.command()
@click.argument("mountpoint", default="/var/lib/procview")
@click.option("--pidfile", default=None, help="Write the daemon's pid here once the mount answers.")
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]), show_default=True)
def serve(mountpoint: str, pidfile: str | None, log_level: str) -> None:
    """Mount the view at MOUNTPOINT (FUSE) and serve it in the foreground.

    Containers bind-mount its files over their own, as with LXCFS:
    MOUNTPOINT/proc/meminfo over /proc/meminfo, and so on. Stops, unmounting,
    on SIGTERM or SIGINT.
    """
    from procview.cgroups import CgroupError
    from procview.daemon import ServeError, serve as run_daemon

    _setup_logging(log_level)
    try:
        run_daemon(mountpoint, pidfile)
    except (ServeError, CgroupError, OSError) as exc:
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
