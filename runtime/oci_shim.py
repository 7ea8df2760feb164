"""``procview-runc``: runc, with procview's view added to each container.

An OCI runtime executable that accepts runc's command line. For ``create``
and ``run`` it edits the bundle's ``config.json`` (the view's bind mounts,
and ``SCMP_ACT_NOTIFY`` for ``sysinfo`` and ``sched_getaffinity`` with
``listenerPath`` = procview's supervisor), then ``execv``s the real runc
with the unchanged command line, so exit codes, stdio, the console socket
and signals are runc's own. Every other subcommand is passed straight
through: it is on every ``docker exec``/``kill``/``state`` path, so this
module imports only ``os`` and ``sys`` until it knows it must edit.

Layers:

- pure: ``parse_runc_argv`` (runc's global flags, Go's flag forms, urfave
  cli's reordering of a command's flags) and ``edit_config`` (config dict
  in, new config dict and warnings out);
- the edge: ``main`` reads ``BUNDLE/config.json``, checks that the view is
  live and that the supervisor accepts a connection, writes the new file
  atomically (temporary file in the bundle, fsync, rename, the old mode),
  and execs runc.

The shim never makes a container fail that runc would start: whatever it
cannot do (no view, no supervisor, a config.json it cannot parse, no
``linux`` section, a profile it must not touch) is left out with one
warning, written where runc writes its own log (``--log``, in its
``--log-format``), else to stderr. See docs/engines.md.
"""

import os
import sys

PROG = "procview-runc"
DEFAULT_VIEW = "/var/lib/procview"
DEFAULT_SECCOMP_SOCKET = "/run/procview/seccomp.sock"  # = procview.DEFAULT_SECCOMP_SOCKET
NOT_FOUND_STATUS = 127  # as a shell's "command not found": the runtime binary is missing

# The same set ``procview run`` binds (runtime/rootfs.py: VIEW_PROC_FILES,
# VIEW_SYS_DIRS); repeated here so that the pass-through path imports nothing.
VIEW_PROC_FILES = ("meminfo", "cpuinfo", "stat", "uptime", "loadavg", "swaps", "diskstats")
VIEW_SYS_DIRS = ("sys/devices/system/cpu", "sys/devices/system/node")
VIEW_SYSCALLS = ("sysinfo", "sched_getaffinity")
# A plain bind, writable flag as ``procview run``'s MS_BIND (the view itself
# answers every write with EROFS; "ro" would only add a remount).
BIND_OPTIONS = ("bind", "rw")

# runc's global flags (runc 1.1 main.go). Those taking a value:
GLOBAL_VALUE_FLAGS = frozenset({"log", "log-format", "root", "criu", "rootless"})
GLOBAL_BOOL_FLAGS = frozenset({"debug", "systemd-cgroup", "help", "h", "version", "v"})
# create's and run's flags taking a value (runc 1.1; pidfd-socket: 1.2),
# and their booleans.
COMMAND_VALUE_FLAGS = frozenset({"bundle", "b", "console-socket", "pid-file", "preserve-fds", "pidfd-socket"})
COMMAND_BOOL_FLAGS = frozenset({"detach", "d", "keep", "no-pivot", "no-new-keyring", "no-subreaper", "help", "h"})
EDITED_COMMANDS = frozenset({"create", "run"})

# Go architecture -> libseccomp names, native first (Docker's archMap): a
# profile the shim makes from nothing lists these, so that no architecture
# an unconfined container could use meets libseccomp's bad-arch action.
NATIVE_ARCHES = {
    "x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "aarch64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
    "armv7l": ["SCMP_ARCH_ARM"],
    "ppc64le": ["SCMP_ARCH_PPC64LE"],
    "s390x": ["SCMP_ARCH_S390X", "SCMP_ARCH_S390"],
    "riscv64": ["SCMP_ARCH_RISCV64"],
    "i686": ["SCMP_ARCH_X86"],
}


# -- the command line (pure) ----------------------------------------------------


def _flag(arg):
    """(name, value or None) of a Go flag argument, or None if ``arg`` is
    not a flag. ``-x``, ``--x``, ``-x=v``, ``--x=v``."""
    if len(arg) < 2 or arg[0] != "-" or arg == "--":
        return None
    body = arg[2:] if arg.startswith("--") else arg[1:]
    if not body or body.startswith("-"):
        return None
    name, eq, value = body.partition("=")
    return name, (value if eq else None)


def parse_runc_argv(argv):
    """``(subcommand, bundle, container_id)`` from runc's arguments
    (``argv`` without the program name).

    Global flags come first (Go's ``flag``: parsing stops at the first
    argument that is not a flag, the subcommand). A command's own flags may
    come before or after its container id (urfave cli reorders them); a
    value flag takes the next argument unless written ``--name=value``.
    ``bundle`` is the ``--bundle``/``-b`` value, else the current directory
    (``None`` for commands other than create and run); ``subcommand`` is
    ``None`` for ``--version``, ``--help`` or no command; ``container_id``
    is ``None`` if there is none (runc will say so) or help was asked for.
    Raises ValueError for a flag runc 1.1 does not know, among the global
    flags or create's and run's (runc will refuse it; nothing is edited).
    """
    args = list(argv)
    i = 0
    while i < len(args):
        flag = _flag(args[i])
        if args[i] == "--":
            i += 1
            break
        if flag is None:
            break
        name, value = flag
        if name in ("help", "h", "version", "v"):
            return None, None, None
        if name not in GLOBAL_VALUE_FLAGS and name not in GLOBAL_BOOL_FLAGS:
            raise ValueError(f"unknown global flag {args[i]}")
        if name in GLOBAL_VALUE_FLAGS and value is None:
            i += 1  # the value is the next argument
        i += 1
    if i >= len(args):
        return None, None, None
    command, rest = args[i], args[i + 1:]
    if command not in EDITED_COMMANDS:
        return command, None, None
    bundle = None
    positional = []
    j = 0
    while j < len(rest):
        arg = rest[j]
        if arg == "--":
            positional.extend(rest[j + 1:])
            break
        flag = _flag(arg)
        if flag is None:
            positional.append(arg)
            j += 1
            continue
        name, value = flag
        if name in ("help", "h"):
            return command, None, None
        if name not in COMMAND_VALUE_FLAGS and name not in COMMAND_BOOL_FLAGS:
            raise ValueError(f"unknown flag {arg} of {command}")
        if name in COMMAND_VALUE_FLAGS and value is None:
            value = rest[j + 1] if j + 1 < len(rest) else None
            j += 1
        if name in ("bundle", "b") and value is not None:
            bundle = value
        j += 1
    return command, bundle if bundle is not None else os.getcwd(), positional[0] if positional else None


def global_flag(argv, wanted):
    """The value of runc's global flag ``wanted`` (e.g. "log"), or None."""
    args = list(argv)
    i = 0
    while i < len(args):
        flag = _flag(args[i])
        if flag is None:
            return None
        name, value = flag
        if name in GLOBAL_VALUE_FLAGS and value is None:
            value = args[i + 1] if i + 1 < len(args) else None
            i += 1
        if name == wanted:
            return value
        i += 1
    return None


# -- the edit (pure) -------------------------------------------------------------


def _norm(path):
    path = "/" + str(path).strip("/")
    parts = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/" + "/".join(parts)


def _inside(path, top):
    return path == top or path.startswith(top.rstrip("/") + "/")


def view_mounts(config_mounts, view, proc_files=VIEW_PROC_FILES, sys_dirs=VIEW_SYS_DIRS):
    """The view's OCI bind mounts that may go into a config whose mounts
    are ``config_mounts`` (list, warnings). A destination the config
    already mounts (or mounts something below or above, other than the
    /proc and /sys file systems themselves) is the user's: left alone."""
    warnings = []
    taken = []
    fs_at = {}
    for mount in config_mounts:
        if not isinstance(mount, dict) or not isinstance(mount.get("destination"), str):
            continue
        destination = _norm(mount["destination"])
        taken.append(destination)
        fs_at[destination] = mount.get("type")
    wanted = []
    if fs_at.get("/proc") == "proc":
        wanted += [(f"/proc/{name}", f"{view}/proc/{name}") for name in proc_files]
    else:
        warnings.append("the config mounts no proc file system at /proc: the view's /proc files are not bound")
    if fs_at.get("/sys") == "sysfs":
        wanted += [("/" + d, f"{view}/{d}") for d in sys_dirs]
    else:
        warnings.append("the config mounts no sysfs at /sys: the view's /sys directories are not bound")
    added = []
    kept = []
    for destination, source in wanted:
        base = "/proc" if destination.startswith("/proc/") else "/sys"
        clash = [t for t in taken if t != base and (_inside(t, destination) or _inside(destination, t)) and t != "/"]
        if clash:
            kept.append(destination)
            continue
        added.append({"destination": destination, "type": "bind", "source": source, "options": list(BIND_OPTIONS)})
    return added, kept, warnings


def _unconditional(entry):
    return not entry.get("args")


def edit_seccomp(seccomp, listener, native_arches):
    """(new linux.seccomp or the same object, warnings) with SCMP_ACT_NOTIFY
    for each view syscall the profile allows unconditionally."""
    if seccomp is None:
        return {
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": list(native_arches),
            "listenerPath": listener,
            "syscalls": [{"names": list(VIEW_SYSCALLS), "action": "SCMP_ACT_NOTIFY"}],
        }, []
    if not isinstance(seccomp, dict):
        return seccomp, ["linux.seccomp is not an object: seccomp left as it is"]
    if seccomp.get("listenerPath"):
        return seccomp, [f"the seccomp profile already has a listenerPath ({seccomp['listenerPath']}): "
                         "seccomp left as it is, sysinfo and sched_getaffinity are the kernel's"]
    entries = seccomp.get("syscalls")
    if entries is None:
        entries = []
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("names", []), list) for e in entries):
        return seccomp, ["linux.seccomp.syscalls is not a list of entries: seccomp left as it is"]
    if any(e.get("action") == "SCMP_ACT_NOTIFY" for e in entries) or seccomp.get("defaultAction") == "SCMP_ACT_NOTIFY":
        return seccomp, ["the seccomp profile already notifies: seccomp left as it is"]
    default_allows = seccomp.get("defaultAction") == "SCMP_ACT_ALLOW"
    notify = []
    for name in VIEW_SYSCALLS:
        naming = [e for e in entries if name in (e.get("names") or [])]
        if naming:
            allowed = all(e.get("action") == "SCMP_ACT_ALLOW" and _unconditional(e) for e in naming)
        else:
            allowed = default_allows
        if allowed:
            notify.append(name)
    warnings = []
    denied = [n for n in VIEW_SYSCALLS if n not in notify]
    if denied:
        warnings.append(f"the seccomp profile does not allow {', '.join(denied)} unconditionally: left as the profile says")
    if not notify:
        return seccomp, warnings
    new_entries = []
    for entry in entries:
        names = entry.get("names") or []
        if any(n in notify for n in names):
            names = [n for n in names if n not in notify]
            if not names:
                continue
            entry = dict(entry, names=names)
        new_entries.append(entry)
    new_entries.append({"names": notify, "action": "SCMP_ACT_NOTIFY"})
    new = dict(seccomp, syscalls=new_entries, listenerPath=listener)
    return new, warnings


def edit_config(config, view, listener, *, native_arches=None, proc_files=VIEW_PROC_FILES):
    """``(new_config, warnings)``: ``config`` (a parsed config.json, not
    changed; returned itself when there is nothing to add) with the view's bind mounts from ``view`` (None: no view) and
    the view syscalls sent to ``listener`` (None: no supervisor). Adds
    nothing else. ``native_arches``: the architectures of a profile made
    for an unconfined container (default: this machine's)."""
    warnings = []
    if not isinstance(config, dict):
        return config, ["config.json is not a JSON object: passed to runc unchanged"]
    linux = config.get("linux")
    if not isinstance(linux, dict):
        return config, ["config.json has no linux section: passed to runc unchanged"]
    new = dict(config)
    if view is not None:
        mounts = config.get("mounts")
        if mounts is None:
            mounts = []
        if not isinstance(mounts, list):
            warnings.append("config.json's mounts is not a list: the view is not bound")
        else:
            added, _kept, more = view_mounts(mounts, view, proc_files)
            warnings += more
            if added:
                new["mounts"] = list(mounts) + added
    if listener is not None:
        if native_arches is None:
            native_arches = NATIVE_ARCHES.get(os.uname().machine, [])
        seccomp, more = edit_seccomp(linux.get("seccomp"), listener, native_arches)
        warnings += more
        if seccomp is not linux.get("seccomp"):
            new["linux"] = dict(linux, seccomp=seccomp)
    if new == config:
        return config, warnings  # nothing to add: the caller leaves the file alone
    return new, warnings


# -- the edge --------------------------------------------------------------------


def find_runc(env=None, self_path=None):
    """The real runc's path, or None: ``$PROCVIEW_RUNC``, else ``runc`` on
    PATH that is not this program, else /usr/sbin/runc, /usr/bin/runc."""
    env = os.environ if env is None else env
    self_path = sys.argv[0] if self_path is None else self_path
    try:
        me = os.stat(self_path)
        me = (me.st_dev, me.st_ino)
    except OSError:
        me = None
    configured = env.get("PROCVIEW_RUNC")
    if configured:
        try:
            st = os.stat(configured)
        except OSError:
            return None
        if (st.st_dev, st.st_ino) == me:  # would exec itself forever
            return None
        return configured if os.access(configured, os.X_OK) else None
    candidates = [os.path.join(d or ".", "runc") for d in env.get("PATH", "").split(os.pathsep)]
    candidates += ["/usr/sbin/runc", "/usr/bin/runc"]
    for path in candidates:
        try:
            st = os.stat(path)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == me or not os.access(path, os.X_OK) or os.path.isdir(path):
            continue
        return path
    return None


class Log:
    """Where runc writes its log: ``--log FILE`` (JSON lines with
    ``--log-format json``, logrus text otherwise), else stderr."""

    def __init__(self, argv):
        self.path = global_flag(argv, "log")
        self.json = global_flag(argv, "log-format") == "json"

    def write(self, level, message):
        import time

        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime())
        offset = time.strftime("%z")
        stamp += "Z" if offset in ("+0000", "-0000", "") else f"{offset[:3]}:{offset[3:]}"
        text = f"{PROG}: {message}"
        if self.path:
            if self.json:
                import json

                line = json.dumps({"level": level, "msg": text, "time": stamp})
            else:
                line = f'time="{stamp}" level={level} msg="{_logfmt(text)}"'
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
                try:
                    os.write(fd, (line + "\n").encode())
                finally:
                    os.close(fd)
                return
            except OSError:
                pass  # runc will fail on it too; say it on stderr
        try:
            os.write(2, f"{text}\n".encode())
        except OSError:
            pass


def _logfmt(text):
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def supervisor_listening(path):
    """Whether something accepts connections at the unix socket ``path``
    (the supervisor drops a connection that sends nothing, silently)."""
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(2.0)
    try:
        sock.connect(path)
        return True
    except OSError:
        return False
    finally:
        sock.close()


def write_atomically(path, data):
    """Replace ``path`` by a file holding ``data``: a temporary file in the
    same directory, fsync'd, given the old file's mode and owner, renamed
    over it. The old file stays whole if anything fails."""
    st = os.stat(path)
    directory = os.path.dirname(path) or "."
    temp = os.path.join(directory, f".{os.path.basename(path)}.procview-runc.{os.getpid()}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, st.st_mode & 0o7777)
            try:
                os.fchown(fd, st.st_uid, st.st_gid)
            except OSError:
                pass
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def prepare_bundle(bundle, log, env=None, container_id=""):
    """Edit ``bundle/config.json`` for the view (bound from the view's
    shard for ``container_id``), or leave it (warnings go to ``log``).
    Never raises for anything a container could start with."""
    import json

    env = os.environ if env is None else env
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError:
        return  # runc says what is wrong with the bundle
    try:
        config = json.loads(raw)
    except ValueError as exc:
        log.write("warning", f"{path}: not JSON ({exc}): passed to runc unchanged")
        return
    view = env.get("PROCVIEW_VIEW") or DEFAULT_VIEW
    listener = env.get("PROCVIEW_SECCOMP_SOCKET") or DEFAULT_SECCOMP_SOCKET
    from procview.mounts import is_live_procview, view_for_container

    if not is_live_procview(view):
        log.write("warning", f"no live procview view at {view} (is procview serve running?): the container's /proc and /sys files are the host's")
        view = None
    else:
        view = view_for_container(os.path.realpath(view), container_id)
    if not supervisor_listening(listener):
        log.write("warning", f"no procview supervisor listening at {listener}: sysinfo and sched_getaffinity are the kernel's")
        listener = None
    proc_files = tuple(n for n in VIEW_PROC_FILES if os.path.exists(f"/proc/{n}"))
    new, warnings = edit_config(config, view, listener, proc_files=proc_files)
    for warning in warnings:
        log.write("warning", warning)
    if new is config:
        return
    try:
        write_atomically(path, (json.dumps(new, indent=None) + "\n").encode())
    except OSError as exc:
        log.write("warning", f"{path}: cannot write the edited config ({exc.strerror or exc}): passed to runc unchanged")


def main(argv=None):
    argv = sys.argv if argv is None else argv
    args = argv[1:]
    runc = find_runc()
    if runc is None:
        message = "runc not found (apt-get install runc, or set PROCVIEW_RUNC)"
        if os.environ.get("PROCVIEW_RUNC"):
            message = f"runc not found at PROCVIEW_RUNC={os.environ['PROCVIEW_RUNC']}"
        os.write(2, f"{PROG}: {message}\n".encode())
        _log_only(args, message)
        return NOT_FOUND_STATUS
    try:
        command, bundle, container_id = parse_runc_argv(args)
    except ValueError as exc:  # runc refuses it with its own message
        Log(args).write("warning", f"{exc}: config.json left as it is")
        command = bundle = container_id = None
    if command in EDITED_COMMANDS and container_id is not None:
        log = Log(args)
        try:
            prepare_bundle(bundle, log, container_id=container_id)
        except Exception as exc:  # a bug here must not stop the container
            log.write("warning", f"internal error, config.json left as it was: {exc!r}")
    try:
        os.execv(runc, [runc] + args)
    except OSError as exc:
        os.write(2, f"{PROG}: cannot execute {runc}: {exc.strerror or exc}\n".encode())
        return 126 if os.path.exists(runc) else NOT_FOUND_STATUS


def _log_only(args, message):
    """The not-found line in runc's log file too (containerd reports the
    log's last error), without the stderr copy."""
    log = Log(args)
    if log.path:
        log.write("error", message)


__all__ = ["parse_runc_argv", "edit_config", "edit_seccomp", "view_mounts", "find_runc", "main", "NOT_FOUND_STATUS"]
