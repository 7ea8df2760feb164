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

from procview import DEFAULT_SECCOMP_SOCKET as SECCOMP_SOCKET, __version__

EXIT_FAILURE = 1


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), format="procview: %(levelname)s: %(message)s", stream=sys.stderr)


class _LazyGroup(click.Group):
    """Command groups that live in other packages, imported only when used
    (so ``procview run`` never pays for ``procview image``'s imports)."""

    lazy = {
        "image": ("runtime.images.commands", "image"),
        **{name: ("runtime.lifecycle_commands", name) for name in ("ps", "inspect", "logs", "stop", "kill", "rm", "diff", "commit")},
        "exec": ("runtime.lifecycle_commands", "exec_"),
        "prune": ("runtime.lifecycle_commands", "prune"),
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


@main.command()
@click.argument("mountpoint", default="/var/lib/procview")
@click.option("--pidfile", default=None, help="Write the daemon's pid here once the mount answers.")
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]), show_default=True)
@click.option("--seccomp-socket", envvar="PROCVIEW_SECCOMP_SOCKET", default=SECCOMP_SOCKET, show_default=True,
              help="Where runtimes hand over seccomp listeners (OCI listenerPath) for sysinfo() and sched_getaffinity().")
@click.option("--no-seccomp-socket", is_flag=True, help="Serve the files only; answer no syscalls.")
def serve(mountpoint: str, pidfile: str | None, log_level: str, seccomp_socket: str, no_seccomp_socket: bool) -> None:
    """Mount the view at MOUNTPOINT (FUSE) and serve it in the foreground.

    Containers bind-mount its files over their own, as with LXCFS:
    MOUNTPOINT/proc/meminfo over /proc/meminfo, and so on. Containers whose
    runtime hands their seccomp listener to the socket (procview run does;
    runc and crun with linux.seccomp.listenerPath) also get their own
    values from sysinfo() and sched_getaffinity(). Stops, unmounting, on
    SIGTERM or SIGINT.
    """
    from procview.cgroups import CgroupError
    from procview.daemon import ServeError, serve as run_daemon

    _setup_logging(log_level)
    try:
        run_daemon(mountpoint, pidfile, seccomp_socket=None if no_seccomp_socket else seccomp_socket)
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


class _DockerExitCodes(click.Command):
    """A command whose usage errors exit 125, as ``docker run``'s do (its
    2 would be indistinguishable from a container that exits 2)."""

    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            click.echo(f"procview: error: {exc.format_message()} (see 'procview {self.name} --help')", err=True)
            ctx.exit(125)


@main.command(cls=_DockerExitCodes, context_settings={"allow_interspersed_args": False})
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("-m", "--memory", help="Memory limit (e.g. 512M, 1g).")
@click.option("--memory-swap", help="Memory plus swap (-1: unlimited swap). Default: as much swap as memory.")
@click.option("--cpus", help="CPUs' worth of time (CFS quota); also pins to the first ceil(N) CPUs unless --cpuset-cpus.")
@click.option("--cpu-period", type=int, help="CFS period in µs (default 100000).")
@click.option("--cpu-quota", type=int, help="CFS quota in µs per period.")
@click.option("--cpuset-cpus", help="CPUs the container may use (e.g. 0-1,3).")
@click.option("--pids-limit", type=int, help="Maximum number of tasks (0 or -1: unlimited).")
@click.option("-e", "--env", multiple=True, help="Set KEY=VALUE (or pass KEY from this environment).")
@click.option("--env-file", multiple=True, type=click.Path(dir_okay=False), help="Read KEY=VALUE lines from a file.")
@click.option("-w", "--workdir", help="Working directory inside the container.")
@click.option("-u", "--user", help="UID[:GID] or NAME[:GROUP].")
@click.option("--hostname", help="Container host name (default: the first 12 characters of its id).")
@click.option("--name", help="A name for the container.")
@click.option("--rm", "remove", is_flag=True,
              help="Remove the container when it exits (else it is kept, stopped, for ps -a, diff, commit and rm).")
@click.option("-d", "--detach", is_flag=True, help="Run in the background under a monitor; print the container's id.")
@click.option("--restart", help="With -d: no, on-failure[:N] or always (the monitor restarts the container).")
@click.option("--post-start", help="With -d: a shell command run inside right after the start; if it fails, the container is killed.")
@click.option("--pre-stop", help="With -d: a shell command run inside by 'procview stop' before SIGTERM, within the grace period.")
@click.option("-v", "--volume", multiple=True, help="Bind mount HOST:CONTAINER[:ro].")
@click.option("--read-only", is_flag=True, help="Mount the container's root filesystem read-only.")
@click.option("-i", "--interactive", is_flag=True, help="Keep standard input open.")
@click.option("-t", "--tty", is_flag=True, help="Allocate a terminal.")
@click.option("--net", "--network", "network", default="private", show_default=True,
              type=click.Choice(["private", "host"]), help="private: only loopback; host: the host's network.")
@click.option("--init/--no-init", "use_init", default=True, show_default=True,
              help="Run a tiny init as pid 1 that reaps zombies and forwards signals.")
@click.option("--view", "view", help="procview mount to bind into the container (default /var/lib/procview).")
@click.option("--no-view", is_flag=True, help="Do not bind the procview view into the container.")
@click.option("--seccomp-socket", envvar="PROCVIEW_SECCOMP_SOCKET", default=SECCOMP_SOCKET, show_default=True,
              help="procview serve's supervisor, which answers sysinfo() and sched_getaffinity() for the container.")
@click.option("--cap-add", multiple=True, help="Add a capability (e.g. NET_ADMIN, CAP_SYS_PTRACE, ALL).")
@click.option("--cap-drop", multiple=True, help="Drop a capability (e.g. CHOWN, ALL).")
@click.option("--privileged", is_flag=True,
              help="Every capability, no seccomp, no masked or read-only paths, /sys writable, all devices.")
@click.option("--security-opt", multiple=True,
              help="seccomp=PROFILE.json, seccomp=unconfined, or no-new-privileges[=true|false].")
@click.option("--root", envvar="PROCVIEW_ROOT", default="/var/lib/procview-runtime", show_default=True,
              help="State root (images, containers); also $PROCVIEW_ROOT.")
def run(image, command, memory, memory_swap, cpus, cpu_period, cpu_quota, cpuset_cpus, pids_limit, env, env_file,
        workdir, user, hostname, name, remove, detach, restart, post_start, pre_stop, volume, read_only, interactive, tty, network, use_init, view, no_view,
        cap_add, cap_drop, privileged, security_opt, root, seccomp_socket):
    """Run COMMAND in a new container from IMAGE (busybox is built in).

    The container gets its own namespaces, an overlay root filesystem, the
    limits asked for, and the procview view bound over its /proc and /sys
    files, so free, nproc, top and uptime show its limits. Exit status: the
    command's; 125 if procview failed; 126 if the command cannot be run;
    127 if it was not found; 128+n if it was killed by signal n.
    """
    import os

    from runtime.container import ContainerConfig, RunError
    from runtime.limits import LimitError, parse_limits
    from runtime.rootfs import Volume

    def fail(message: str, code: int = 125):
        click.echo(f"procview: error: {message}", err=True)
        sys.exit(code)

    if os.geteuid() != 0:
        fail("procview run needs root (it creates namespaces, mounts and cgroups)")
    try:
        from procview.host import HostFiles

        limits = parse_limits(
            HostFiles().online_cpus(), memory=memory, memory_swap=memory_swap, cpus=cpus, cpu_period=cpu_period,
            cpu_quota=cpu_quota, cpuset_cpus=cpuset_cpus, pids_limit=pids_limit,
        )
    except LimitError as exc:
        fail(str(exc))
    env_items = []
    for path in env_file:
        try:
            with open(path) as f:
                env_items += [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
        except OSError as exc:
            fail(f"--env-file {path}: {exc.strerror}")
    env_items += list(env)
    volumes = []
    for spec in volume:
        parts = spec.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1].startswith("/") or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
            fail(f"invalid volume {spec!r}: expected HOST:CONTAINER[:ro]")
        source = os.path.abspath(parts[0])
        if not os.path.exists(source):
            fail(f"invalid volume {spec!r}: {source} does not exist")
        volumes.append(Volume(source, parts[1], len(parts) == 3 and parts[2] == "ro"))
    config = ContainerConfig(
        image=image, command=tuple(command), env=tuple(env_items), workdir=workdir, user=user, hostname=hostname,
        name=name, volumes=tuple(volumes), read_only=read_only, interactive=interactive, tty=tty,
        net_host=network == "host", limits=limits, view=view, use_view=not no_view, init=use_init,
        cap_add=tuple(cap_add), cap_drop=tuple(cap_drop), privileged=privileged, security_opt=tuple(security_opt),
        seccomp_socket=seccomp_socket,
    )
    if restart and not detach:
        fail("--restart needs -d (the monitor of a detached container restarts it)")
    if (post_start or pre_stop) and not detach:
        fail("--post-start and --pre-stop need -d")
    # The parsed options, kept in the container's record (inspect, exec).
    options = {key: value for key, value in click.get_current_context().params.items() if value not in (None, (), False)}
    if detach:
        if tty or interactive:
            fail("-d cannot be combined with -i or -t yet (there is no attach)")
        from runtime.lifecycle import RestartPolicy, start_detached

        try:
            policy = RestartPolicy.parse(restart)
        except ValueError as exc:
            fail(str(exc))
        if remove and policy.name != "no":
            fail("conflicting options: --restart and --rm")

        try:
            record = start_detached(config, root, list(command), options, remove=remove, restart=policy,
                                    post_start=post_start, pre_stop=pre_stop)
        except RunError as exc:
            fail(str(exc), exc.exit_code)
        click.echo(record.id)
        sys.stdout.flush()
        os._exit(0)
    from runtime.lifecycle import run_foreground

    try:
        code = run_foreground(config, root, list(command), options, remove=remove)
    except RunError as exc:
        fail(str(exc), exc.exit_code)
    # Everything is cleaned up: skip the interpreter's teardown, which costs
    # more than some containers' whole run.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
