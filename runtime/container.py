"""``procview run``: one container, from image to exit, in runc's order.

The whole life of a container reads top to bottom in ``run``:

1. clean up after any earlier ``procview run`` that was killed;
2. the image (the built-in ``busybox`` is made on first use);
3. on a bridge network, the container's network: an address, a network
   namespace wired to the bridge, published ports (``runtime/network``);
   the bundle: init layer, upper and work dirs, generated /etc files;
4. the cgroup, with its limits;
5. new pid and time namespaces for pid 1, then fork it;
6. pid 1: the other namespaces, the root filesystem, pivot_root, the view,
   hostname, loopback, user, then the init and the command;
7. wait, forwarding signals (and relaying the terminal with ``-t``);
8. undo everything, in reverse, whatever happened.

Every step that creates something registers its undo first, so a failure
at any step, or a signal, leaves nothing behind. If ``procview run`` itself
is killed (SIGKILL), its container dies with it (``PR_SET_PDEATHSIG``), the
kernel drops the mounts with the last process of the mount namespace, and
the next ``procview`` command removes the directory and cgroup left over
(``cleanup_stale``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import sys
import time
from collections import namedtuple

from procview._io import read_text, remove_tree
from procview.cgroups import Cgroup, CgroupError, Layout, discover
from procview.runtime import namespaces, process
from procview.runtime.limits import Limits, apply_limits
from procview.runtime.linux import CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWUTS, PR_SET_PDEATHSIG, Linux
from procview.runtime.rootfs import (
    SYSTEMD_RESOLVED_UPSTREAMS, MountPlan, RootfsError, Volume, host_resolv_text, hosts_file, init_layer, mount_rootfs,
    pivot_into, prepare_bundle, resolv_conf,
)
from procview.runtime.security import SecurityError, SecurityPlan, apply_paths, confine, confine_init

DEFAULT_ROOT = "/var/lib/procview-runtime"
DEFAULT_VIEW = "/var/lib/procview"
CGROUP_PARENT = "/procview"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class RunError(Exception):
    """procview could not run the container (exit 125, one line)."""

    exit_code = process.EXIT_PROCVIEW_FAILED


_CONFIG_DEFAULTS = {  # every field but ``image`` (the image reference), with its default
    "command": (),  # tuple of str
    "entrypoint": None,  # tuple of str replacing the image's (Kubernetes' command); None: the image's
    "env": (),  # "KEY=VALUE" strings, later ones win
    "workdir": None,  # str
    "user": None,  # "UID[:GID]" or a name from the image's /etc/passwd
    "hostname": None,  # str
    "name": None,  # str
    "volumes": (),  # tuple of rootfs.Volume
    "read_only": False,
    "interactive": False,
    "tty": False,
    "network": "bridge",  # bridge (Docker's default), none, host, a user network's name, container:NAME (runtime/network)
    "publish": (),  # runtime/network/ports.PortMapping: -p, on a bridge network
    "aliases": (),  # --network-alias: more names on a user network
    "limits": Limits(),
    "view": None,  # a procview mount point; None: the default one
    "use_view": True,
    "init": True,
    "cap_add": (),  # capability names, or "ALL"
    "cap_drop": (),
    "privileged": False,
    "security_opt": (),  # "seccomp=PROFILE.json", "seccomp=unconfined", "no-new-privileges[=BOOL]"
    "seccomp_socket": None,  # procview serve's supervisor socket; None: the default one
    # A pod's member (``procview run --pod``): its network is its infra
    # container's (``network`` is then ``container:INFRA``), and so are its
    # IPC and UTS namespaces; its cgroup is under the pod's (runtime/pods.py).
    "pod": None,  # the pod's name
    "cgroup_parent": None,  # None: CGROUP_PARENT; a pod's cgroup for its members and infra
}


class ContainerConfig(namedtuple("ContainerConfig", ("image", *_CONFIG_DEFAULTS), defaults=_CONFIG_DEFAULTS.values())):
    """What the user asked for (``procview run`` options, parsed).

    collections.namedtuple, not dataclasses or typing.NamedTuple, for the
    values ``procview run`` builds: importing ``dataclasses`` (it imports
    ``inspect``) or ``typing`` and creating each class cost ms of a start
    measured against runc's (docs/performance.md)."""

    __slots__ = ()

    @property
    def net_host(self) -> bool:
        return self.network == "host"

    @property
    def bridged(self) -> bool:
        """On a bridge network: ``bridge`` or a user network."""
        return self.network not in ("none", "host") and not self.network.startswith("container:")


def run(config: ContainerConfig, root: str = DEFAULT_ROOT, linux: Linux | None = None, warn=None,
        container_id: str | None = None, on_started=None, on_exited=None, kept_upper: str | None = None,
        volatile_upper: bool = False) -> int:
    """Run one container to completion; return its exit code (Docker's
    convention). Raises RunError before the command starts.

    ``container_id``: the id to use (a detached container's monitor passes
    its record's); ``on_started(pid, cgroup_path, env, workdir, image,
    networks)`` is called once the command runs, with pid 1's host pid, the
    command's environment and working directory, the image it runs and its
    networks' addresses (``runtime/lifecycle.py``);
    ``on_exited(oom_killed)`` once it has ended, before the cgroup goes:
    whether the kernel's OOM killer killed anything in it. ``kept_upper``:
    the container's writable layer, kept after the run (``rootfs.prepare_bundle``);
    by default it lives and dies with the run. ``volatile_upper``: the
    writable layer is thrown away after this run (``--rm``), so it is never
    synced to disk (``MountPlan.volatile``)."""
    linux = linux or Linux()
    warn = warn or _warn
    hierarchies = discover()
    containers_dir = os.path.join(root, "containers")
    os.makedirs(containers_dir, exist_ok=True)
    cleanup_stale(containers_dir, hierarchies)

    store, image = _image(root, config.image)
    argv = _command(image.config, config.command, config.entrypoint)
    container_id = container_id or os.urandom(32).hex()
    joined = _joined_container(root, config.network, config.pod)  # --network container:NAME, --pod
    hostname = config.hostname or (os.uname().nodename if config.net_host else container_id[:12])
    if joined is not None:
        hostname = joined.hostname
    env = _environment(image.config, config, hostname)
    security = _security(config, root, warn)

    with contextlib.ExitStack() as undo:
        # The image's layers are the overlay's lower dirs: keep them while we run.
        undo.callback(_hold_layers(store, image).close)
        bundle_path = os.path.join(containers_dir, container_id)
        undo.callback(remove_tree, bundle_path)
        lock = _claim_directory(containers_dir, container_id)
        undo.callback(os.close, lock)
        attachment = None
        if config.bridged:
            attachment = _attach_network(root, container_id, bundle_path, linux, config, hostname)
            undo.callback(_detach_network, root, attachment, linux)
        address = attachment.address if attachment else joined.address if joined else None
        peers = attachment.peers if attachment else ()
        host_resolv = host_resolv_text(read_text("/etc/resolv.conf") or "", None if config.net_host else
                                       read_text(SYSTEMD_RESOLVED_UPSTREAMS))
        bundle = prepare_bundle(
            bundle_path, _init_layer(root), hostname, hosts_file(hostname, config.net_host, address, peers),
            resolv_conf(host_resolv, config.net_host, attachment.nameserver if attachment else None), kept_upper,
        )

        cgroup = hierarchies.cgroup(f"{config.cgroup_parent or CGROUP_PARENT}/{container_id[:12]}")
        _write(bundle.file("cgroup"), cgroup.path)
        undo.callback(remove_cgroup, cgroup)
        try:
            cgroup.create()
        except CgroupError as exc:
            raise RunError(f"cgroup: {exc}") from None

        def configure_cgroup() -> None:
            # Called after the fork, while pid 1 sets itself up, and before
            # pid 1 joins the cgroup and is let go (start_in_cgroup).
            for message in apply_limits(cgroup, config.limits):
                warn(message)
            if not config.privileged:
                _restrict_devices(cgroup, linux)

        view = _find_view(config, container_id, warn)
        agent = None
        if view is not None:
            agent = _connect_agent(config, warn)
            if agent is not None:
                undo.callback(agent.close)
                security = _with_view_filter(security, root)
        plan = MountPlan(
            bundle=bundle,
            layers=image.layers,
            view=view,
            volumes=config.volumes,
            read_only=config.read_only,
            cgroup2=hierarchies.layout is Layout.V2,
            workdir=image.config.get("WorkingDir") or "/",
            volatile=volatile_upper,
        )

        networks = {} if attachment is None else {attachment.network.name: {
            "address": attachment.address, "prefix_len": attachment.prefix_len, "gateway": attachment.gateway,
            "ports": [str(mapping) for mapping in attachment.ports],
        }}

        def started(pid: int, cgroup_path: str, env: dict, workdir: str) -> None:
            if on_started is not None:
                on_started(pid, cgroup_path, env, workdir, image, networks)

        # The namespaces pid 1 joins instead of making its own: the network
        # made for it, or another container's (a pod member: its infra's
        # network, IPC and UTS namespaces). Opened here, then checked: the
        # joined pid 1 is still the process we looked at.
        join_fds = []
        if attachment is not None or joined is not None:
            paths = [(attachment.netns_path if attachment else joined.netns_path, CLONE_NEWNET)]
            if joined is not None and config.pod:
                paths += [(f"/proc/{joined.pid}/ns/ipc", CLONE_NEWIPC), (f"/proc/{joined.pid}/ns/uts", CLONE_NEWUTS)]
            for path, nstype in paths:
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    raise RunError(f"{joined.what} is not running") from None
                undo.callback(os.close, fd)
                join_fds.append((fd, nstype))
            if joined is not None and not _still_running(joined):
                raise RunError(f"{joined.what} is not running")
        return _start_and_wait(
            linux, config, plan, cgroup, configure_cgroup, argv, env, hostname, hierarchies.layout is Layout.V2,
            security, agent, container_id, warn, started, on_exited, tuple(join_fds),
        )


_Joined = namedtuple("_Joined", ("what", "pid", "start", "hostname", "address", "netns_path"))


def _joined_container(root: str, network: str, pod: str | None = None):
    """For ``--network container:NAME``: the running container whose
    network namespace this one joins (its pid 1's), or None. ``pod``: the
    container is the infra of that pod (``--pod``)."""
    if not network.startswith("container:"):
        return None
    from procview.runtime.lifecycle import RUNNING, LifecycleError, RecordStore

    name = network[len("container:"):]
    store = RecordStore(root)
    try:
        record = store.load(store.find(name))
    except (LifecycleError, ValueError):
        raise RunError(f"pod {pod} has no infra container (procview pod rm -f {pod})" if pod else f"no such container: {name}") from None
    what = f"pod {pod}" if pod else f"container {name}"
    if record.phase != RUNNING or not record.pid:
        raise RunError(f"{what} is not running")
    addresses = [place["address"] for place in record.networks.values() if "address" in place]
    hostname = record.config.get("hostname") or record.id[:12]
    return _Joined(what, record.pid, _start_time(record.pid), hostname, addresses[0] if addresses else None,
                   f"/proc/{record.pid}/ns/net")


def _still_running(joined) -> bool:
    """The joined container's pid 1 is the process it was when we looked
    (its pid not reused meanwhile): checked after its namespace is open."""
    return joined.start is not None and _start_time(joined.pid) == joined.start


def _start_time(pid: int) -> int | None:
    text = read_text(f"/proc/{pid}/stat")
    try:
        return int(text.rsplit(")", 1)[1].split()[19]) if text else None
    except (IndexError, ValueError):
        return None


def _attach_network(root: str, container_id: str, bundle_path: str, linux, config, hostname: str):
    """The container's place on its bridge network, its published ports
    and its names there (``runtime/network``)."""
    from procview.runtime import network

    names = tuple(dict.fromkeys(n for n in (hostname, config.name, *config.aliases) if n))
    try:
        return network.attach(root, container_id, bundle_path, linux, config.publish,
                              network.find(root, config.network), names)
    except network.NetworkError as exc:
        raise RunError(str(exc)) from None


def _detach_network(root: str, attachment, linux) -> None:
    from procview.runtime import network

    network.detach(root, attachment, linux)


# -- the two sides of the fork ---------------------------------------------------


def _security(config: ContainerConfig, root: str, warn) -> SecurityPlan:
    """The container's capabilities, seccomp program and paths, checked
    (and the program compiled, or taken from the cache) before anything
    is made."""
    from procview.runtime.security import plan

    try:
        return plan(
            config.cap_add, config.cap_drop, config.privileged, config.security_opt,
            cache_dir=os.path.join(root, "seccomp"), warn=warn,
        )
    except SecurityError as exc:
        raise RunError(str(exc)) from None


def _connect_agent(config: ContainerConfig, warn):
    """A connection to procview serve's seccomp supervisor, or None (with
    a warning: sysinfo and sched_getaffinity then get the kernel's answers)."""
    from procview.runtime import syscall_view

    path = config.seccomp_socket or syscall_view.DEFAULT_SOCKET
    sock = syscall_view.connect(path)
    if sock is None:
        warn(f"no seccomp supervisor at {path}: sysinfo() and sched_getaffinity() report the host's values")
    return sock


def _with_view_filter(security: SecurityPlan, root: str) -> SecurityPlan:
    from procview.runtime.security.programs import SeccompError
    from procview.runtime.syscall_view import with_view_filter

    try:
        return with_view_filter(security, root)
    except (SeccompError, OSError) as exc:
        raise RunError(f"seccomp view filter: {exc}") from None


def _init_layer(root: str) -> str:
    try:
        return init_layer(root)
    except OSError as exc:
        raise RunError(f"init layer: {exc.strerror or exc}") from None


def _restrict_devices(cgroup, linux) -> None:
    from procview.runtime.security import devices

    try:
        devices.restrict(cgroup, linux)
    except OSError as exc:
        raise RunError(f"devices cgroup: {exc.strerror or exc}") from None


def _start_and_wait(
    linux, config, plan, cgroup, configure_cgroup, argv, env, hostname, cgroupns, security, agent, container_id, warn,
    on_started=None, on_exited=None, join_fds=(),
) -> int:
    report_r, report_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    tty_parent = tty_child = None
    if config.tty or security.view_filter is not None:
        import socket  # only for these: the socket module costs ~4 ms of a start measured against runc's
    if config.tty:
        tty_parent, tty_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    # The command sends its seccomp listener fd back over this pair.
    listener_parent = listener_child = None
    if security.view_filter is not None:
        listener_parent, listener_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)

    time_ns = namespaces.time_namespaces_supported()
    try:
        linux.unshare(namespaces.for_children(time_ns))
        if time_ns:
            namespaces.set_boottime_offset(namespaces.boottime_offset_line())
    except OSError as exc:
        raise RunError(f"namespaces: {exc.strerror or exc}") from None
    try:
        join_files = cgroup.open_self_join()  # v1: pid 1 moves itself (see open_self_join); v2: None
    except CgroupError as exc:
        raise RunError(f"cgroup: {exc}") from None

    # pid 1 starts with the signals procview run passes on held, until its
    # handlers are in place: the kernel drops a signal sent to a
    # pid-namespace init that has no handler for it, but never a blocked one.
    signal_mask = signal.pthread_sigmask(signal.SIG_BLOCK, process.FORWARDED_SIGNALS)
    pid = os.fork()
    if pid == 0:  # [1:INIT]
        try:
            os.close(report_r)
            os.close(go_w)
            for parent_end in (tty_parent, listener_parent, agent):
                if parent_end is not None:
                    parent_end.close()
            _container_init(
                linux, config, plan, argv, env, hostname, cgroupns, go_r, report_w, tty_child, security, listener_child,
                join_files, signal_mask, join_fds,
            )
        except BaseException as exc:  # noqa: BLE001 - pid 1 must report, never unwind into the caller's code
            process.report(report_w, "init", str(exc) or type(exc).__name__, process.EXIT_PROCVIEW_FAILED)
        os._exit(process.EXIT_PROCVIEW_FAILED)

    # procview run, in the host's namespaces.
    signal.pthread_sigmask(signal.SIG_SETMASK, signal_mask)
    os.close(report_w)
    os.close(go_r)
    for fd in join_files or ():
        os.close(fd)
    for child_end in (tty_child, listener_child):
        if child_end is not None:
            child_end.close()
    forwarder = _SignalForwarder(pid)
    link = None
    try:
        try:
            failure = process.start_in_cgroup(cgroup, pid, go_w, report_r, configure=configure_cgroup,
                                              joins_itself=join_files is not None)
        except CgroupError as exc:
            raise RunError(f"cgroup: {exc}") from None
        if failure is not None:
            if failure["code"] == process.EXIT_PROCVIEW_FAILED:
                raise RunError(failure["message"])
            raise _ExecFailed(failure)
        if listener_parent is not None:
            link = _link_agent(listener_parent, agent, config, container_id, pid, plan.bundle.path, warn)
        if on_started is not None:
            on_started(pid, cgroup.path, env, config.workdir or plan.workdir)
        if tty_parent is not None:
            process.relay_terminal(tty_parent, forwarder, config.interactive, link)
        if link is None:
            status = process.reap(pid)
        else:
            from procview.runtime.syscall_view import wait_for_exit  # serves the link while it waits

            status = wait_for_exit(pid, link)
        if on_exited is not None:
            on_exited((cgroup.oom_kills() or 0) > 0)
        return process.exit_code_of(status)
    finally:
        forwarder.restore()
        if link is not None:
            link.close()
        if listener_parent is not None:
            listener_parent.close()


def _link_agent(listener_parent, agent, config, container_id, pid, bundle, warn):
    from procview.runtime import syscall_view

    path = config.seccomp_socket or syscall_view.DEFAULT_SOCKET
    return syscall_view.link_listener(listener_parent, agent, path, container_id, pid, bundle, warn)


class _ExecFailed(RunError):
    """The command could not be executed (126) or found (127)."""

    def __init__(self, failure: dict):
        super().__init__(failure["message"])
        self.exit_code = failure["code"]


def _container_init(linux, config, plan, argv, env, hostname, cgroupns, go_r, report_w, tty_sock, security, listener_sock,
                    join_files, signal_mask, join_fds=()) -> None:
    """pid 1 of the container. Never returns.

    Security (``runtime/security``): masked and read-only paths here,
    after pivot_root; no_new_privs, seccomp, capabilities and the user in
    the command's process right before execve (``confine``, runc's
    order); then the same confinement for pid 1 itself.

    The cgroup: while pid 1 sets up its namespaces and most of its root
    filesystem, ``procview run`` writes the cgroup's limits and says "go"
    (``wait_for_cgroup``). On v1, pid 1 then moves itself in through the
    ``tasks`` files the parent opened (``join_files``): unlike a write to
    ``cgroup.procs``, that skips the kernel's global threadgroup lock,
    whose first use waits for an RCU grace period (7-22 ms on the
    development host). On v2 the parent moves pid 1 before "go". pid 1
    waits for "go" before it touches procview's view (the daemon judges a
    caller by the cgroup of its pid namespace's init, and remembers it) or
    a volume, and nothing of the user's runs before. Where pid 1 gets a
    cgroup namespace (v2), it must be in the cgroup before it unshares one
    (the namespace's root is the cgroup it is in then) and mounts cgroup2:
    there it waits first."""
    linux.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # die with procview run

    def wait_for_cgroup():
        if os.read(go_r, 1) != b"g":
            os._exit(process.EXIT_PROCVIEW_FAILED)  # procview run is gone, or the cgroup refused us
        os.close(go_r)
        if join_files is not None:
            try:
                Cgroup.join_self(join_files)
            except CgroupError as exc:
                process.report(report_w, "cgroup", f"cgroup: {exc}", process.EXIT_PROCVIEW_FAILED)
                os._exit(process.EXIT_PROCVIEW_FAILED)

    if cgroupns:
        wait_for_cgroup()
    stage = "namespaces"
    try:
        for fd, nstype in join_fds:  # made and wired by procview run (runtime/network), or another container's
            linux.setns(fd, nstype)
            os.close(fd)
        joined_uts = any(nstype == CLONE_NEWUTS for _, nstype in join_fds)
        linux.unshare(namespaces.for_init(new_network=config.network == "none", cgroup_namespace=cgroupns,
                                          new_ipc_uts=not joined_uts))
        if not joined_uts:  # a pod's members share its infra's host name
            linux.sethostname(hostname)
        if config.network == "none":
            stage = "loopback"
            linux.interface_up("lo")
        stage = "rootfs"
        mount_rootfs(linux, plan, before_view=None if cgroupns else wait_for_cgroup)
        pivot_into(linux, plan.bundle.merged, read_only=False)
        stage = "workdir"
        workdir = config.workdir or plan.workdir
        os.makedirs(workdir, exist_ok=True)
        if config.read_only:
            stage = "read-only root"
            from procview.runtime.linux import MS_BIND, MS_RDONLY, MS_REMOUNT

            linux.mount(None, "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY)
        stage = "masked and read-only paths"
        apply_paths(linux, security)
        stage = "user"
        uid, gid, groups = resolve_user(config.user)
        slave = None
        if tty_sock is not None:
            stage = "terminal"
            master, slave = process.open_pty_pair()
            # Sized now, from the user's terminal (still our stdin), so the
            # command never sees 0x0, however late the relay starts.
            if os.isatty(0):
                process.copy_window_size(0, master)
            process.send_fd(tty_sock, master)
            os.close(master)
            tty_sock.close()
    except (OSError, RootfsError, ValueError) as exc:
        process.report(report_w, stage, f"{stage}: {getattr(exc, 'strerror', None) or exc}", process.EXIT_PROCVIEW_FAILED)
        os._exit(process.EXIT_PROCVIEW_FAILED)

    def become_command():
        signal.pthread_sigmask(signal.SIG_SETMASK, signal_mask)  # the command starts as procview run's did
        if slave is not None:
            process.make_controlling_terminal(slave)
        elif not config.interactive:
            null = os.open("/dev/null", os.O_RDONLY)
            os.dup2(null, 0)
            os.close(null)
        os.chdir(workdir)
        try:
            listener = confine(linux, security, uid, gid, groups)
            if listener is not None:
                # To procview run, which passes it to the supervisor; the
                # container itself must not keep its own listener.
                process.send_fd(listener_sock, listener, b"seccomp")
                os.close(listener)
        except OSError as exc:
            message = f"security: {exc.strerror or exc}"
            process.report(report_w, "security", message, process.EXIT_PROCVIEW_FAILED)
            os._exit(process.EXIT_PROCVIEW_FAILED)
        if listener_sock is not None:
            listener_sock.close()
        process.exec_command(list(argv), env, report_w)

    if not config.init:
        become_command()
    child = os.fork()
    if child == 0:
        become_command()
    try:
        confine_init(linux, security, uid, gid, groups)
    except OSError as exc:
        os.kill(child, signal.SIGKILL)
        process.report(report_w, "security", f"security (init): {exc.strerror or exc}", process.EXIT_PROCVIEW_FAILED)
        os._exit(process.EXIT_PROCVIEW_FAILED)
    os.close(report_w)
    if slave is not None:
        os.close(slave)
    if listener_sock is not None:
        listener_sock.close()
    process.run_init(child, signal_mask)


def resolve_user(user: str | None) -> tuple[int, int, list[int]]:
    """``UID[:GID]`` or ``NAME[:GROUP]``, names looked up in the container's
    own /etc/passwd and /etc/group (read after pivot_root). A numeric uid
    missing from /etc/passwd gets gid 0, as in Docker."""
    if not user:
        return 0, 0, []
    name, _, group = user.partition(":")
    passwd = list(_entries("/etc/passwd"))
    if name.isdigit():
        uid = int(name)
        entry = next((fields for fields in passwd if fields[2] == name), None)
        gid = int(entry[3]) if entry else 0
    else:
        entry = next((fields for fields in passwd if fields[0] == name), None)
        if entry is None:
            raise ValueError(f"unable to find user {name}: no matching entries in passwd file")
        uid, gid = int(entry[2]), int(entry[3])
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            entry = next((fields for fields in _entries("/etc/group") if fields[0] == group), None)
            if entry is None:
                raise ValueError(f"unable to find group {group}: no matching entries in group file")
            gid = int(entry[2])
    return uid, gid, []


def _entries(path: str):
    try:
        with open(path) as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) >= 3 and fields[2].isdigit():
                    yield fields
    except OSError:
        return


# -- helpers on the host side ------------------------------------------------------


class _SignalForwarder:
    """Passes the signals procview run receives on to the container's pid 1."""

    def __init__(self, pid: int):
        self.pid = pid
        self.on_resize = None
        self._previous = {}
        for signum in process.FORWARDED_SIGNALS:
            try:
                self._previous[signum] = signal.signal(signum, self._forward)
            except (OSError, ValueError):
                pass

    def _forward(self, signum, _frame):
        if signum == signal.SIGWINCH and self.on_resize is not None:
            self.on_resize()
            return
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            pass

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _image(root: str, reference: str):
    """The image store and the image: the built-in ``busybox`` is made on
    first use (offline, before any registry is asked); any other image the
    store lacks is pulled, as ``docker run`` does, with the pull's output
    on stderr."""
    from procview.runtime.images import ImageError, ImageNotFound, ImageStore

    store = ImageStore(root)
    try:
        try:
            return store, store.get(reference)
        except ImageNotFound:
            if reference in ("busybox", "busybox:latest"):
                return store, store.ensure_busybox()  # the built-in image, made on first use
            if reference.startswith("sha256:"):
                raise
        from procview.runtime.images.pull import PullOptions, Report, pull

        print(f"Unable to find image '{reference}' locally", file=sys.stderr, flush=True)
        return store, pull(store, reference, PullOptions(), Report(out=sys.stderr))
    except ImageError as exc:
        raise RunError(str(exc)) from None


def ensure_image(root: str, reference: str) -> None:
    """Make sure the image is in the store (built, or pulled with the
    pull's output on stderr); RunError if it cannot be. For a detached
    run, whose monitor's stderr is the container's log."""
    _image(root, reference)


def _hold_layers(store, image):
    from procview.runtime.images import ImageError

    try:
        return store.hold(image)
    except ImageError as exc:
        raise RunError(str(exc)) from None


def _command(image_config: dict, command: tuple[str, ...], entrypoint: tuple[str, ...] | None = None) -> list[str]:
    """The image's entrypoint and Cmd, as Docker and Kubernetes combine them:
    a given command replaces the Cmd; a given entrypoint replaces the
    image's, and then its Cmd too (Kubernetes' ``command`` without ``args``)."""
    if entrypoint is not None:
        return _nonempty(list(entrypoint) + list(command))
    entrypoint = list(image_config.get("Entrypoint") or [])
    cmd = list(command) or list(image_config.get("Cmd") or [])
    return _nonempty(entrypoint + cmd)


def _nonempty(argv: list[str]) -> list[str]:
    if not argv:
        raise RunError("no command specified")
    return argv


def _environment(image_config: dict, config: ContainerConfig, hostname: str) -> dict[str, str]:
    env: dict[str, str] = {"PATH": DEFAULT_PATH, "HOSTNAME": hostname}
    for item in list(image_config.get("Env") or []) + list(config.env):
        key, sep, value = item.partition("=")
        if key:
            env[key] = value if sep else os.environ.get(key, "")
    if config.tty:
        env.setdefault("TERM", "xterm")
    env.setdefault("HOME", "/root")
    return env


def _find_view(config: ContainerConfig, container_id: str, warn) -> str | None:
    """The procview mount to bind the container's files from: the view's
    shard for this container (``procview serve --shards``), or None."""
    if not config.use_view:
        return None
    path = os.path.abspath(config.view or DEFAULT_VIEW)
    from procview.mounts import is_live_procview, view_for_container

    if is_live_procview(path):
        return view_for_container(os.path.realpath(path), container_id)
    warn(f"no procview view at {path}: the container sees the host's /proc (start 'procview serve {path}')")
    return None


def _claim_directory(containers_dir: str, container_id: str) -> int:
    """Create the container's directory with its lock already held, so a
    concurrent ``cleanup_stale`` never sees it unlocked: made and locked
    under a dot-name, then renamed into place."""
    staging = os.path.join(containers_dir, f".new-{container_id}")
    os.makedirs(staging, mode=0o755)
    try:
        fd = _hold_lock(os.path.join(staging, "lock"))
        os.rename(staging, os.path.join(containers_dir, container_id))
    except OSError as exc:
        remove_tree(staging)
        raise RunError(f"container directory: {exc.strerror or exc}") from None
    return fd


# A directory without a lock file this old was left by a run killed before
# it took the lock (younger ones may be a run in its first milliseconds).
UNLOCKED_GRACE = 60.0


def _hold_lock(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def cleanup_stale(containers_dir: str, hierarchies) -> None:
    """Remove what a killed ``procview run`` left: a container directory
    whose lock nobody holds, and its cgroup."""
    try:
        entries = os.listdir(containers_dir)
    except OSError:
        return
    for entry in entries:
        path = os.path.join(containers_dir, entry)
        if entry.startswith(".new-") and _younger_than_grace(path):
            # Being claimed (``_claim_directory``): its lock file may exist
            # a moment before it is locked.
            continue
        try:
            fd = os.open(os.path.join(path, "lock"), os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            fd = None  # died before taking the lock: stale too, once old enough
            if _younger_than_grace(path):
                continue
        except OSError:
            continue
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue  # a live procview run owns it
        cgroup_path = (read_text(os.path.join(path, "cgroup")) or "").strip()
        if cgroup_path:
            remove_cgroup(hierarchies.cgroup(cgroup_path), kill=True)
        if os.path.exists(os.path.join(path, "network")):
            _reclaim_network(os.path.dirname(containers_dir), entry, path)
        remove_tree(path)
        if fd is not None:
            os.close(fd)


def _reclaim_network(root: str, container_id: str, path: str) -> None:
    """The address, interfaces and namespace file of a killed run."""
    from procview.runtime import network

    try:
        network.reclaim(root, container_id, path, Linux())
    except (OSError, network.NetworkError) as exc:
        _warn(f"could not reclaim the network of container {container_id[:12]}: {exc}")


def _younger_than_grace(path: str) -> bool:
    try:
        return time.time() - os.stat(path).st_mtime < UNLOCKED_GRACE
    except OSError:
        return True  # gone already, or not ours to judge


def remove_cgroup(cgroup, kill: bool = False, timeout: float = 10.0) -> None:
    # After pid 1 exits the kernel kills the rest of the pid namespace, and
    # the cgroup empties a moment later.
    deadline = time.monotonic() + timeout
    while True:
        if kill:
            for pid in cgroup.processes() or []:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        try:
            cgroup.remove()
            _remove_parent_if_empty(cgroup)
            return
        except CgroupError:
            if time.monotonic() > deadline:
                _warn(f"could not remove cgroup {cgroup.path}: still busy")
                return
            time.sleep(0.01)


def _remove_parent_if_empty(cgroup) -> None:
    """Remove /procview itself once no container uses it (another run may
    still: then rmdir fails and that is fine)."""
    parent = cgroup.with_path(lambda path: path.rsplit("/", 1)[0] or "/")
    if parent.path == CGROUP_PARENT:
        with contextlib.suppress(CgroupError):
            parent.remove_if_empty()


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _warn(message: str) -> None:
    print(f"procview: warning: {message}", file=sys.stderr)


__all__ = ["ContainerConfig", "RunError", "run", "cleanup_stale", "remove_cgroup", "DEFAULT_ROOT"]
