"""``procview run``: its options, its parser and its body.

``procview run`` is the one command whose start-up time is measured
against runc's whole run (docs/performance.md), so it does not go through
click: importing click alone costs more than runc's run of ``true``.
The options are declared once, in ``OPTIONS``; a small parser with click's
conventions (``--opt value``, ``--opt=value``, ``-m512M``, ``-it``, options
only before IMAGE, ``--`` ends them) reads them, and ``--help`` is written
from the same table. ``procview --help`` lists ``run`` through a thin click
command in ``procview.cli`` that hands its arguments here.

Exit codes, as ``docker run``'s: the command's; 125 when procview fails,
including bad usage (2 would be indistinguishable from a container that
exits 2); 126 when the command cannot be run; 127 when it is not found;
128+n when it was killed by signal n.
"""

from __future__ import annotations

import os
import sys

from procview import DEFAULT_SECCOMP_SOCKET

FLAG, VALUE, INTEGER, MULTIPLE = "flag", "value", "integer", "multiple"


class Option:
    """One option of ``procview run``: its spellings, where its value goes
    (``dest``, the name kept in the container's record), and its kind."""

    __slots__ = ("names", "dest", "kind", "help", "default", "envvar", "choices", "negation", "metavar")

    def __init__(self, names, dest, kind, help, default=None, envvar=None, choices=None, negation=None, metavar=None):
        self.names, self.dest, self.kind, self.help = names, dest, kind, help
        self.default, self.envvar, self.choices, self.negation = default, envvar, choices, negation
        self.metavar = metavar or ("N" if kind == INTEGER else "TEXT")


OPTIONS = (
    Option(("-m", "--memory"), "memory", VALUE, "Memory limit (e.g. 512M, 1g)."),
    Option(("--memory-swap",), "memory_swap", VALUE, "Memory plus swap (-1: unlimited swap). Default: as much swap as memory."),
    Option(("--cpus",), "cpus", VALUE, "CPUs' worth of time (CFS quota); also pins to the first ceil(N) CPUs unless --cpuset-cpus."),
    Option(("--cpu-period",), "cpu_period", INTEGER, "CFS period in µs (default 100000)."),
    Option(("--cpu-quota",), "cpu_quota", INTEGER, "CFS quota in µs per period."),
    Option(("--cpuset-cpus",), "cpuset_cpus", VALUE, "CPUs the container may use (e.g. 0-1,3)."),
    Option(("--pids-limit",), "pids_limit", INTEGER, "Maximum number of tasks (0 or -1: unlimited)."),
    Option(("-e", "--env"), "env", MULTIPLE, "Set KEY=VALUE (or pass KEY from this environment)."),
    Option(("--env-file",), "env_file", MULTIPLE, "Read KEY=VALUE lines from a file.", metavar="FILE"),
    Option(("-w", "--workdir"), "workdir", VALUE, "Working directory inside the container."),
    Option(("-u", "--user"), "user", VALUE, "UID[:GID] or NAME[:GROUP]."),
    Option(("--hostname",), "hostname", VALUE, "Container host name (default: the first 12 characters of its id)."),
    Option(("--name",), "name", VALUE, "A name for the container."),
    Option(("--rm",), "remove", FLAG, "Remove the container when it exits (else it is kept, stopped, for ps -a, diff, commit and rm)."),
    Option(("-d", "--detach"), "detach", FLAG, "Run in the background under a monitor; print the container's id."),
    Option(("--restart",), "restart", VALUE, "With -d: no, on-failure[:N] or always (the monitor restarts the container)."),
    Option(("--restart-backoff",), "restart_backoff", VALUE,
           "With -d: the wait between restarts: docker (0.1 s doubling to 10 s; the default) or kubernetes "
           "(the kubelet's: at once, then 10 s doubling to 5 minutes, shown as CrashLoopBackOff).", metavar="PROFILE"),
    Option(("--post-start",), "post_start", VALUE, "With -d: a shell command run inside right after the start; if it fails, the container is killed."),
    Option(("--pre-stop",), "pre_stop", VALUE, "With -d: a shell command run inside by 'procview stop' before SIGTERM, within the grace period."),
    Option(("-v", "--volume"), "volume", MULTIPLE, "Bind mount HOST:CONTAINER[:ro]."),
    Option(("--read-only",), "read_only", FLAG, "Mount the container's root filesystem read-only."),
    Option(("-i", "--interactive"), "interactive", FLAG, "Keep standard input open."),
    Option(("-t", "--tty"), "tty", FLAG, "Allocate a terminal."),
    Option(("--network", "--net"), "network", VALUE,
           "bridge (the default, as Docker's): an address on procview0, outbound NAT; none: only loopback "
           "(also: private); host: the host's network; NAME: a user network; container:NAME: another "
           "container's network. $PROCVIEW_NETWORK sets the default.", default="bridge",
           envvar="PROCVIEW_NETWORK", metavar="NETWORK"),
    Option(("--pod",), "pod", VALUE,
           "Run in the pod NAME (procview pod create): its network, IPC and UTS namespaces, its host name and its "
           "cgroup (its limits bound all its containers).", metavar="NAME"),
    Option(("--network-alias",), "network_alias", MULTIPLE,
           "Another name the container has on its user network.", metavar="NAME"),
    Option(("-p", "--publish"), "publish", MULTIPLE,
           "Publish a container's port on the host: [IP:][HOSTPORT:]PORT[/tcp|/udp] (no HOSTPORT: any free one); "
           "on a bridge network (bridge or a user network).", metavar="SPEC"),
    Option(("--init",), "use_init", FLAG, "Run a tiny init as pid 1 that reaps zombies and forwards signals (default).",
           default=True, negation="--no-init"),
    Option(("--view",), "view", VALUE, "procview mount to bind into the container (default /var/lib/procview).", metavar="PATH"),
    Option(("--no-view",), "no_view", FLAG, "Do not bind the procview view into the container."),
    Option(("--seccomp-socket",), "seccomp_socket", VALUE,
           "procview serve's supervisor, which answers sysinfo() and sched_getaffinity() for the container.",
           default=DEFAULT_SECCOMP_SOCKET, envvar="PROCVIEW_SECCOMP_SOCKET", metavar="PATH"),
    Option(("--cap-add",), "cap_add", MULTIPLE, "Add a capability (e.g. NET_ADMIN, CAP_SYS_PTRACE, ALL)."),
    Option(("--cap-drop",), "cap_drop", MULTIPLE, "Drop a capability (e.g. CHOWN, ALL)."),
    Option(("--privileged",), "privileged", FLAG, "Every capability, no seccomp, no masked or read-only paths, /sys writable, all devices."),
    Option(("--security-opt",), "security_opt", MULTIPLE, "seccomp=PROFILE.json, seccomp=unconfined, or no-new-privileges[=true|false]."),
    Option(("--root",), "root", VALUE, "State root (images, containers).", default="/var/lib/procview-runtime",
           envvar="PROCVIEW_ROOT", metavar="PATH"),
)

SUMMARY = "Run COMMAND in a new container from IMAGE (busybox is built in)."

DESCRIPTION = """\
The container gets its own namespaces, an overlay root filesystem, the
limits asked for, and the procview view bound over its /proc and /sys
files, so free, nproc, top and uptime show its limits. Exit status: the
command's; 125 if procview failed; 126 if the command cannot be run; 127
if it was not found; 128+n if it was killed by signal n."""


class UsageError(Exception):
    """The arguments do not form a ``procview run`` command line."""


class HelpRequested(Exception):
    """``-h`` or ``--help`` came before IMAGE."""


def _index(options=OPTIONS) -> dict[str, tuple[Option, bool]]:
    """Every spelling -> (its option, whether this spelling negates it)."""
    index = {}
    for option in options:
        for name in option.names:
            index[name] = (option, False)
        if option.negation:
            index[option.negation] = (option, True)
    return index


def parse(args: list[str], environ=os.environ) -> dict:
    """The options of a ``procview run`` command line, by ``dest``, plus
    ``image`` and ``command`` (a tuple: everything after IMAGE, untouched).

    Options end at the first argument that is not one (IMAGE) or at ``--``,
    so ``procview run busybox ls -l`` passes ``-l`` to ``ls``.
    """
    index = _index()
    values = {}
    for option in OPTIONS:
        default = environ.get(option.envvar, option.default) if option.envvar else option.default
        values[option.dest] = [] if option.kind == MULTIPLE else (False if option.kind == FLAG and default is None else default)
    position = 0
    while position < len(args):
        arg = args[position]
        position += 1
        if arg == "--":
            break
        if arg in ("-h", "--help"):
            raise HelpRequested()
        if arg.startswith("--"):
            name, has_value, attached = arg.partition("=")
            if name not in index:
                raise UsageError(f"no such option: {name}")
            option, negated = index[name]
            if option.kind == FLAG:
                if has_value:
                    raise UsageError(f"option {name} does not take a value")
                values[option.dest] = not negated
                continue
            if not has_value:
                if position == len(args):
                    raise UsageError(f"option {name} requires an argument")
                attached, position = args[position], position + 1
            _store(values, option, name, attached)
        elif arg.startswith("-") and len(arg) > 1:
            # A cluster of short options: flags, then at most one that takes
            # a value, either the rest of the cluster or the next argument.
            for offset in range(1, len(arg)):
                name = "-" + arg[offset]
                if name not in index:
                    raise UsageError(f"no such option: {name}")
                option, _ = index[name]
                if option.kind == FLAG:
                    values[option.dest] = True
                    continue
                rest = arg[offset + 1:]
                if not rest:
                    if position == len(args):
                        raise UsageError(f"option {name} requires an argument")
                    rest, position = args[position], position + 1
                _store(values, option, name, rest)
                break
        else:
            position -= 1
            break
    if position == len(args):
        raise UsageError("missing argument IMAGE")
    values["image"] = args[position]
    values["command"] = tuple(args[position + 1:])
    for option in OPTIONS:
        if option.kind == MULTIPLE:
            values[option.dest] = tuple(values[option.dest])
    return values


def _store(values: dict, option: Option, name: str, text: str) -> None:
    if option.kind == MULTIPLE:
        values[option.dest].append(text)
        return
    if option.kind == INTEGER:
        try:
            values[option.dest] = int(text)
        except ValueError:
            raise UsageError(f"invalid value for {name}: {text!r} is not an integer") from None
        return
    if option.choices and text not in option.choices:
        raise UsageError(f"invalid value for {name}: {text!r} (choose from {', '.join(option.choices)})")
    values[option.dest] = text


def help_text() -> str:
    """``procview run --help``, written from ``OPTIONS``."""
    rows = []
    for option in OPTIONS:
        spelling = ", ".join(option.names) + (f" / {option.negation}" if option.negation else "")
        if option.kind != FLAG:
            spelling += f" {option.metavar}"
        extra = []
        if option.envvar:
            extra.append(f"env: {option.envvar}")
        if option.default not in (None, True):
            extra.append(f"default: {option.default}")
        rows.append((spelling, option.help + (f"  [{'; '.join(extra)}]" if extra else "")))
    width = max(len(spelling) for spelling, _ in rows) + 2
    lines = ["Usage: procview run [OPTIONS] IMAGE [COMMAND]...", "", "  " + SUMMARY, ""]
    lines += ["  " + line for line in DESCRIPTION.splitlines()]
    lines += ["", "Options:"]
    lines += [f"  {spelling:<{width}}{text}" for spelling, text in rows]
    lines.append(f"  {'-h, --help':<{width}}Show this message and exit.")
    return "\n".join(lines) + "\n"


def fail(message: str, code: int = 125):
    sys.stderr.write(f"procview: error: {message}\n")
    sys.stderr.flush()
    os._exit(code)


def main(args: list[str]) -> None:
    """``procview run ARGS``; never returns."""
    try:
        options = parse(args)
    except HelpRequested:
        sys.stdout.write(help_text())
        sys.stdout.flush()
        os._exit(0)
    except UsageError as exc:
        fail(f"{exc} (see 'procview run --help')")
    if os.geteuid() != 0:
        fail("procview run needs root (it creates namespaces, mounts and cgroups)")
    config = container_config(options)
    if (options["restart"] or options["restart_backoff"]) and not options["detach"]:
        given = "--restart" if options["restart"] else "--restart-backoff"
        fail(f"{given} needs -d (the monitor of a detached container restarts it)")
    if (options["post_start"] or options["pre_stop"]) and not options["detach"]:
        fail("--post-start and --pre-stop need -d")
    # The options as given, kept in the container's record (inspect, exec, commit).
    kept = {key: value for key, value in options.items() if value not in (None, (), False)}
    if options["detach"]:
        _start_detached(config, options, kept)
    from procview.runtime.container import RunError
    from procview.runtime.lifecycle import run_foreground

    try:
        code = run_foreground(config, options["root"], list(options["command"]), kept, remove=options["remove"])
    except RunError as exc:
        fail(str(exc), exc.exit_code)
    # Everything is cleaned up: skip the interpreter's teardown, which costs
    # more than some containers' whole run.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def container_config(options: dict):
    """The ``ContainerConfig`` the options describe, or exit 125 saying
    which option is wrong."""
    from procview.host import HostFiles
    from procview.runtime.container import ContainerConfig
    from procview.runtime.limits import LimitError, parse_limits
    from procview.runtime.rootfs import Volume

    try:
        limits = parse_limits(
            HostFiles().online_cpus(), memory=options["memory"], memory_swap=options["memory_swap"], cpus=options["cpus"],
            cpu_period=options["cpu_period"], cpu_quota=options["cpu_quota"], cpuset_cpus=options["cpuset_cpus"],
            pids_limit=options["pids_limit"],
        )
    except LimitError as exc:
        fail(str(exc))
    env_items = []
    for path in options["env_file"]:
        try:
            with open(path) as f:
                env_items += [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
        except OSError as exc:
            fail(f"--env-file {path}: {exc.strerror}")
    env_items += options["env"]
    volumes = []
    for spec in options["volume"]:
        parts = spec.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1].startswith("/") or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
            fail(f"invalid volume {spec!r}: expected HOST:CONTAINER[:ro]")
        source = os.path.abspath(parts[0])
        if not os.path.exists(source):
            fail(f"invalid volume {spec!r}: {source} does not exist")
        volumes.append(Volume(source, parts[1], len(parts) == 3 and parts[2] == "ro"))
    network = "none" if options["network"] == "private" else options["network"]
    pod = _pod(options)
    if pod is not None:
        from procview.runtime.pods import infra_name

        network = f"container:{infra_name(pod.id)}"
    if network.startswith("container:"):
        if not network[len("container:"):]:
            fail(f"network {network} not found")
    elif network not in ("none", "host", "bridge") and not _user_network_exists(options["root"], network):
        fail(f"network {network} not found")
    if options["network_alias"] and (network in ("none", "host", "bridge") or network.startswith("container:")):
        fail("--network-alias needs a user network (procview network create): the others have no names")
    if network.startswith("container:") and options["hostname"]:
        fail("conflicting options: --hostname and --network container:NAME (it has that container's host name)")
    publish = ()
    if options["publish"]:
        from procview.runtime.network.ports import PortError, parse_publish  # socket, ipaddress: only for -p

        if network in ("none", "host") or network.startswith("container:"):
            fail(f"publishing ports needs a bridge network, --network bridge or a user network (this container's network: {network})")
        try:
            publish = tuple(parse_publish(spec) for spec in options["publish"])
        except PortError as exc:
            fail(str(exc))
    return ContainerConfig(
        image=options["image"], command=options["command"], env=tuple(env_items), workdir=options["workdir"],
        user=options["user"], hostname=options["hostname"], name=options["name"], volumes=tuple(volumes),
        read_only=options["read_only"], interactive=options["interactive"], tty=options["tty"],
        network=network, publish=publish, aliases=tuple(options["network_alias"]), limits=limits, view=options["view"], use_view=not options["no_view"],
        init=options["use_init"], cap_add=options["cap_add"], cap_drop=options["cap_drop"],
        privileged=options["privileged"], security_opt=options["security_opt"], seccomp_socket=options["seccomp_socket"],
        pod=pod.name if pod else None, cgroup_parent=pod.cgroup if pod else None,
    )


def config_from_record(kept: dict):
    """The ContainerConfig of a container whose options were kept in its
    record (``main`` keeps them), for ``procview start``: every option not
    kept has its default. Exits 125 as ``run`` would if they no longer
    hold (a volume's source gone, a pod removed...)."""
    options = parse([kept.get("image", "busybox")], environ={})
    options.update(kept)
    options["command"] = tuple(kept.get("command", ()))
    if kept.get("pod"):  # its network is the pod's: not one given
        options["network"] = os.environ.get("PROCVIEW_NETWORK") or "bridge"
    return container_config(options)


def _pod(options: dict):
    """The pod of ``--pod``, or None; exit 125 for options a pod's member
    cannot have (it shares the pod's network and host name, as in Podman)."""
    if not options["pod"]:
        return None
    from procview.runtime.pods import PodError, find

    try:
        pod = find(options["root"], options["pod"])
    except PodError as exc:
        fail(str(exc))
    if options["network"] != (os.environ.get("PROCVIEW_NETWORK") or "bridge"):
        fail("conflicting options: --network and --pod (a pod's containers share its network: procview pod create --network)")
    if options["publish"]:
        fail("conflicting options: -p and --pod (ports are published on the pod: procview pod create -p)")
    if options["hostname"]:
        fail("conflicting options: --hostname and --pod (a pod's containers share its host name)")
    return pod


def _user_network_exists(root: str, name: str) -> bool:
    """Whether ``procview network create`` made ``name`` (its config file;
    the module itself is imported only by bridged runs)."""
    return "/" not in name and name not in (".", "..") and os.path.isfile(os.path.join(root, "networks", name, "config.json"))


def _start_detached(config, options: dict, kept: dict) -> None:
    from procview.runtime.container import RunError
    from procview.runtime.lifecycle import RestartPolicy, start_detached

    if options["tty"] or options["interactive"]:
        fail("-d cannot be combined with -i or -t yet (there is no attach)")
    try:
        policy = RestartPolicy.parse(options["restart"], options["restart_backoff"])
    except ValueError as exc:
        fail(str(exc))
    if options["remove"] and policy.name != "no":
        fail("conflicting options: --restart and --rm")
    try:
        record = start_detached(config, options["root"], list(options["command"]), kept, remove=options["remove"],
                                restart=policy, post_start=options["post_start"], pre_stop=options["pre_stop"])
    except RunError as exc:
        fail(str(exc), exc.exit_code)
    sys.stdout.write(record.id + "\n")
    sys.stdout.flush()
    os._exit(0)
