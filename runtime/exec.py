"""``procview exec``: run one more command inside a running container (with ``-t``, on a terminal of its own).

The new process must end up exactly where the container's own command is:
in all its namespaces, in its cgroup, behind its root, with its
capabilities, seccomp profile and view filter. Process tree::

    procview exec                (host; joins nothing; waits, forwards signals,
     |                            hands the view filter's listener to the supervisor)
     `- [joiner]                 put in the container's cgroup by the parent, then
         |                        setns() into ipc, uts, net, cgroup, pid, time and,
         |                        last, mnt; chroot to pid 1's root
         `- CMD                  forked after setns(pid/time) so it is *in* the
                                  container's pid and time namespaces; confined as
                                  the container's command is (security.confine); execve

setns() into a pid or time namespace only changes where the caller's
*children* go, which is why the joiner forks once more. Namespaces the
container shares with the host (``--net host``, the cgroup namespace on v1)
are skipped: joining them would be a no-op.

Exit status: the command's (128+n if killed by signal n); 126/127 when it
cannot be executed or found; 125 when procview fails (Docker's codes, as
for ``docker exec``).
"""

from __future__ import annotations

import os
import socket

from procview.runtime import process
from procview.runtime.lifecycle import RUNNING, LifecycleError, Record, _verified_pid1

# Joined in this order; mnt last, since it changes what every path means.
NAMESPACES = ("ipc", "uts", "net", "cgroup", "pid", "time", "mnt")


class ExecError(LifecycleError):
    def __init__(self, message: str, exit_code: int = process.EXIT_PROCVIEW_FAILED):
        super().__init__(message)
        self.exit_code = exit_code


def exec_in(record: Record, argv: list[str], env_items: list[str], workdir: str | None, user: str | None,
            interactive: bool, root: str, warn, tty: bool = False) -> int:
    """Run ``argv`` in ``record``'s container; its exit code. ``tty``: give
    it a terminal of its own, a pty from the container's devpts, relayed to
    ours (as ``procview run -t``)."""
    from procview.cgroups import CgroupError, discover
    from procview.runtime.container import _SignalForwarder, resolve_user
    from procview.runtime.linux import Linux
    from procview.runtime.security import SecurityError, confine
    from procview.runtime.syscall_view import wait_for_exit

    if record.phase != RUNNING:
        raise ExecError(f"container {record.name} is not running")
    pid1 = _verified_pid1(record)
    if pid1 is None:
        raise ExecError(f"container {record.name} is not running")
    if not argv:
        raise ExecError("no command given")
    linux = Linux()
    namespaces = _namespaces_to_join(pid1)
    root_fd = os.open(f"/proc/{pid1}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    options = record.config
    try:
        security = _security(options, root, warn)
    except SecurityError as exc:
        raise ExecError(str(exc)) from None
    agent = _connect_agent(options, warn)
    if agent is not None:
        from procview.runtime.security.programs import SeccompError
        from procview.runtime.syscall_view import with_view_filter

        try:
            security = with_view_filter(security, root)
        except (SeccompError, OSError) as exc:
            agent.close()
            raise ExecError(f"seccomp view filter: {exc}") from None
    env = dict(record.env)
    for item in env_items:
        key, sep, value = item.partition("=")
        if key:
            env[key] = value if sep else os.environ.get(key, "")
    if tty:
        env.setdefault("TERM", "xterm")
    cgroup = discover().cgroup(record.cgroup)

    report_r, report_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    listener_parent = listener_child = None
    if security.view_filter is not None:
        listener_parent, listener_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    tty_parent = tty_child = None
    if tty:
        tty_parent, tty_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        join_files = cgroup.open_self_join()  # v1: the joiner moves itself (as pid 1 of run does)
    except CgroupError as exc:
        raise ExecError(f"cgroup: {exc}") from None
    joiner = os.fork()
    if joiner == 0:
        try:
            os.close(report_r)
            os.close(go_w)
            for parent_end in (listener_parent, agent, tty_parent):
                if parent_end is not None:
                    parent_end.close()
            _join(linux, namespaces, root_fd, go_r, join_files)
            child = os.fork()
            if child == 0:
                _become_command(linux, security, argv, env, workdir or record.workdir or "/",
                                resolve_user, user if user is not None else options.get("user"),
                                interactive, report_w, listener_child, confine, tty_child)
            if tty_child is not None:
                tty_child.close()  # the command's copy is the only one: EOF when it is gone
            os.close(report_w)
            forwarder = _SignalForwarder(child)
            status = process.exit_code_of(wait_for_exit(child, None))
            forwarder.restore()
            os._exit(status)
        except BaseException as exc:  # noqa: BLE001 - report, never unwind into the CLI's code
            process.report(report_w, "exec", f"exec: {getattr(exc, 'strerror', None) or exc}",
                           process.EXIT_PROCVIEW_FAILED)
            os._exit(process.EXIT_PROCVIEW_FAILED)

    os.close(report_w)
    os.close(go_r)
    os.close(root_fd)
    for fd in join_files or ():
        os.close(fd)
    for fd in namespaces.values():
        os.close(fd)
    for child_end in (listener_child, tty_child):
        if child_end is not None:
            child_end.close()
    forwarder = _SignalForwarder(joiner)
    link = None
    try:
        try:
            failure = process.start_in_cgroup(cgroup, joiner, go_w, report_r, joins_itself=join_files is not None)
        except CgroupError as exc:
            raise ExecError(f"cgroup: {exc}") from None
        if failure is not None:
            raise ExecError(failure["message"], failure["code"])
        if listener_parent is not None:
            link = _link(listener_parent, agent, options, record, joiner, warn)
        if tty_parent is not None:
            process.relay_terminal(tty_parent, forwarder, interactive, link)
        return process.exit_code_of(wait_for_exit(joiner, link))
    finally:
        forwarder.restore()
        if link is not None:
            link.close()
        elif agent is not None:
            agent.close()
        for parent_end in (listener_parent, tty_parent):
            if parent_end is not None:
                parent_end.close()


def _namespaces_to_join(pid1: int) -> dict[str, int]:
    """name -> fd of pid 1's namespaces that differ from ours."""
    fds = {}
    for name in NAMESPACES:
        theirs = f"/proc/{pid1}/ns/{name}"
        try:
            if os.readlink(theirs) == os.readlink(f"/proc/self/ns/{name}"):
                continue
            fds[name] = os.open(theirs, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # a kernel without this namespace type
    return fds


def _join(linux, namespaces: dict[str, int], root_fd: int, go_r: int, join_files: list[int] | None) -> None:
    """In the joiner: wait for "go", be in the container's cgroup (on v1
    move ourselves in through ``join_files``, see ``Cgroup.open_self_join``;
    on v2 the parent has moved us), then enter the namespaces (mnt last)
    and the container's root."""
    if os.read(go_r, 1) != b"g":
        os._exit(process.EXIT_PROCVIEW_FAILED)
    os.close(go_r)
    if join_files is not None:
        from procview.cgroups import Cgroup

        Cgroup.join_self(join_files)  # a CgroupError is reported as the exec's failure
    for name in NAMESPACES:
        if name in namespaces:
            linux.setns(namespaces[name], 0)
            os.close(namespaces[name])
    # setns(mnt) puts us at the namespace's root; pid 1's root (after its
    # pivot_root) is the authority.
    os.fchdir(root_fd)
    os.chroot(".")
    os.close(root_fd)


def _become_command(linux, security, argv, env, workdir, resolve_user, user, interactive, report_w,
                    listener_sock, confine, tty_sock=None) -> None:
    """In the command's process (inside the pid namespace): never returns."""
    stage = "workdir"
    try:
        os.chdir(workdir)
        stage = "user"
        uid, gid, groups = resolve_user(user)
        if tty_sock is not None:
            stage = "terminal"
            master, slave = process.open_pty_pair()  # the container's devpts: we are behind its root
            if os.isatty(0):
                process.copy_window_size(0, master)
            process.send_fd(tty_sock, master)
            os.close(master)
            tty_sock.close()
            process.make_controlling_terminal(slave)  # a session of its own, the pty as 0, 1, 2
        elif not interactive:
            null = os.open("/dev/null", os.O_RDONLY)
            os.dup2(null, 0)
            os.close(null)
        stage = "security"
        listener = confine(linux, security, uid, gid, groups)
        if listener is not None:
            socket.send_fds(listener_sock, [b"seccomp"], [listener])
            os.close(listener)
        if listener_sock is not None:
            listener_sock.close()
    except (OSError, ValueError) as exc:
        process.report(report_w, stage, f"{stage}: {getattr(exc, 'strerror', None) or exc}",
                       process.EXIT_PROCVIEW_FAILED)
        os._exit(process.EXIT_PROCVIEW_FAILED)
    process.exec_command(list(argv), env, report_w)


def _security(options: dict, root: str, warn):
    """The container's own security plan, from the options it was run with."""
    from procview.runtime.security import plan

    return plan(
        tuple(options.get("cap_add") or ()), tuple(options.get("cap_drop") or ()), bool(options.get("privileged")),
        tuple(options.get("security_opt") or ()), cache_dir=os.path.join(root, "seccomp"), warn=warn,
    )


def _connect_agent(options: dict, warn):
    """The supervisor, if the container has the view (as ``run`` decides)."""
    if options.get("no_view"):
        return None
    from procview import DEFAULT_SECCOMP_SOCKET
    from procview.runtime import syscall_view

    return syscall_view.connect(options.get("seccomp_socket") or DEFAULT_SECCOMP_SOCKET)


def _link(listener_parent, agent, options, record, pid, warn):
    from procview import DEFAULT_SECCOMP_SOCKET
    from procview.runtime.syscall_view import link_listener

    path = options.get("seccomp_socket") or DEFAULT_SECCOMP_SOCKET
    return link_listener(listener_parent, agent, path, record.id, pid, "", warn)


__all__ = ["exec_in", "ExecError"]
