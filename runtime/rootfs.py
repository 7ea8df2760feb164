"""The container's root filesystem, in the order runc builds it.

On the host, ``prepare_bundle`` lays out the container's directory under
the state root::

    init-layer.v1/ the init layer: empty placeholders for what the runtime
                   mounts over (/dev, /proc, /sys, /etc/hosts, ...). It sits
                   between the image and the container's own layer, so a
                   later commit of ``upper/`` never contains them. Made once
                   (``init_layer``) and shared, read-only, by every container:
                   Docker makes one per container, always with this content.
    containers/<id>/
        upper/     the container's own changes (overlay upperdir); a container
                   with a record keeps it in ROOT/records/<id>/upper instead
        work/      overlay's scratch directory (same filesystem as upper)
        merged/    where the overlay is mounted (inside the container's
                   mount namespace only)
        hosts, hostname, resolv.conf   generated, bind-mounted over /etc
        lock       held (flock) by the ``procview run`` that owns it

Inside the container's new mount namespace, ``mount_rootfs`` mounts the
overlay and everything on top of it, then ``pivot_into`` makes it ``/``.
Because every mount lives in that namespace, the kernel takes them all down
when the container's last process exits, whatever killed it.

Every mount target inside the image is resolved with ``secure_join``: an
image whose ``/etc/hosts`` is a symlink to ``/etc/shadow`` must not make us
mount over the host's file.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import namedtuple

from procview._io import remove_tree
from procview.runtime.linux import (
    MNT_DETACH,
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    MS_STRICTATIME,
)

# Placeholders of the init layer (Docker's initlayer): directories, files.
INIT_DIRS = ("dev", "dev/pts", "dev/shm", "proc", "sys", "etc", "tmp")
INIT_FILES = ("etc/hosts", "etc/hostname", "etc/resolv.conf")
INIT_LAYER = "init-layer.v1"  # a new name whenever the placeholders change

# The standard devices (runc's defaults): name, major, minor, mode.
DEVICES = (
    ("null", 1, 3, 0o666),
    ("zero", 1, 5, 0o666),
    ("full", 1, 7, 0o666),
    ("random", 1, 8, 0o666),
    ("urandom", 1, 9, 0o666),
    ("tty", 5, 0, 0o666),
)
DEV_SYMLINKS = (
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
)

# The view's files, bound over the container's own when a procview mount is found.
VIEW_PROC_FILES = ("meminfo", "cpuinfo", "stat", "uptime", "loadavg", "swaps", "diskstats")
VIEW_SYS_DIRS = ("sys/devices/system/cpu", "sys/devices/system/node")

SHM_SIZE = "65536k"  # Docker's default /dev/shm: 64 MiB


class RootfsError(Exception):
    """A step of building the root filesystem failed (says which)."""


class Volume(namedtuple("Volume", "source target read_only")):
    """``-v SOURCE:TARGET[:ro]``: ``source`` is a host path (it exists),
    ``target`` an absolute path in the container."""

    __slots__ = ()


class Bundle(namedtuple("Bundle", "path init kept_upper", defaults=(None,))):
    """The container's directory on the host (see module docstring).

    ``init`` is the shared init layer (``init_layer``); ``kept_upper`` a
    writable layer that outlives the run (see ``prepare_bundle``), or None.
    """

    __slots__ = ()

    @property
    def upper(self) -> str:
        return self.kept_upper or os.path.join(self.path, "upper")

    @property
    def work(self) -> str:
        return os.path.join(self.path, "work")

    @property
    def merged(self) -> str:
        return os.path.join(self.path, "merged")

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def remove(self) -> None:
        remove_tree(self.path)


def init_layer(root: str) -> str:
    """The init layer under the state root ``root``, made on first use.

    It is made in a ``containers/.new-*`` directory (which ``cleanup_stale``
    removes if a run is killed meanwhile) and renamed into place, so it is
    complete or absent; when two runs make it at once, one rename wins."""
    path = os.path.join(root, INIT_LAYER)
    if os.path.isdir(path):
        return path
    staging = os.path.join(root, "containers", f".new-init-layer-{os.getpid()}")
    remove_tree(staging)
    for directory in INIT_DIRS:
        os.makedirs(os.path.join(staging, directory), mode=0o755)
    os.chmod(os.path.join(staging, "tmp"), 0o1777)
    for name in INIT_FILES:
        open(os.path.join(staging, name), "w").close()
    os.symlink("/proc/mounts", os.path.join(staging, "etc/mtab"))
    try:
        os.rename(staging, path)
    except OSError:
        remove_tree(staging)
        if not os.path.isdir(path):  # not a lost race: a real failure
            raise
    return path


def prepare_bundle(path: str, init: str, hostname: str, hosts: str, resolv_conf: str,
                   kept_upper: str | None = None) -> Bundle:
    """Create the container's directory: upper, work, merged and the
    generated /etc files. ``init``: the init layer (``init_layer``).

    ``kept_upper``: use this directory (created if missing) as the upper
    dir instead of one inside the bundle. A container with a record keeps
    its writable layer there across restarts, for ``diff`` and ``commit``
    after it stopped, until ``rm`` (Docker's semantics). It must be on the
    same file system as the bundle (overlayfs wants upper and work
    together): both live under the state root."""
    bundle = Bundle(path, init, kept_upper)
    for directory in (bundle.work, bundle.merged):
        os.makedirs(directory, mode=0o755)
    os.makedirs(bundle.upper, mode=0o755, exist_ok=kept_upper is not None)
    for name, text in (("hostname", hostname + "\n"), ("hosts", hosts), ("resolv.conf", resolv_conf)):
        with open(bundle.file(name), "w") as f:
            f.write(text)
    return bundle


def hosts_file(hostname: str, net_host: bool, address: str | None = None, peers: tuple[str, ...] = ()) -> str:
    """/etc/hosts: the host's with --network host, else Docker's standard
    lines, the host name on the container's ``address`` (a bridge
    network's) or on 127.0.1.1, and ``peers``: lines for the other
    containers of a user network (runtime/network/names.py)."""
    if net_host:
        try:
            with open("/etc/hosts") as f:
                return f.read()
        except OSError:
            pass
    return (
        "127.0.0.1\tlocalhost\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        "fe00::\tip6-localnet\n"
        "ff00::\tip6-mcastprefix\n"
        "ff02::1\tip6-allnodes\n"
        "ff02::2\tip6-allrouters\n"
        f"{address or '127.0.1.1'}\t{hostname}\n"
    ) + "".join(line + "\n" for line in peers)


def resolv_conf(host_text: str, net_host: bool, nameserver: str | None = None) -> str:
    """/etc/resolv.conf from the host's. A private network namespace cannot
    reach the host's loopback resolver (127.0.0.53 and friends), so those
    lines are dropped, as Docker does, and if none is left Docker's
    fallback (8.8.8.8, 8.8.4.4) is named instead. ``nameserver``: the only one the
    container asks (a user network's DNS responder, which forwards what is
    not its own to the host's): the host's search and options lines are
    kept, with ``options ndots:0`` unless they set ndots, as Docker writes
    for its 127.0.0.11."""
    if net_host:
        return host_text
    if nameserver is not None:
        def first_word(line: str) -> str:
            return (line.split() or [""])[0]

        domains = [line for line in host_text.splitlines() if first_word(line) in ("search", "domain")]
        options = [line for line in host_text.splitlines() if first_word(line) == "options"]
        if not any(option.startswith("ndots:") for line in options for option in line.split()[1:]):
            options.append("options ndots:0")
        return "\n".join([*domains, f"nameserver {nameserver}", *options]) + "\n"

    lines = [line for line in host_text.splitlines() if not _loopback_resolver(line)]
    if not any(line.split()[:1] == ["nameserver"] for line in lines):
        lines += [f"nameserver {server}" for server in FALLBACK_NAMESERVERS]
    return "\n".join(lines) + "\n"


# Docker's, for a container whose host has no resolver it can reach.
FALLBACK_NAMESERVERS = ("8.8.8.8", "8.8.4.4")
SYSTEMD_RESOLVED_UPSTREAMS = "/run/systemd/resolve/resolv.conf"


def _loopback_resolver(line: str) -> bool:
    fields = line.split()
    return len(fields) >= 2 and fields[0] == "nameserver" and fields[1].startswith(("127.", "::1"))


def host_resolv_text(etc_text: str, resolved_text: str | None) -> str:
    """The host's resolver configuration a container's is made from: its
    /etc/resolv.conf, or, where that names only loopback resolvers (the
    stub of systemd-resolved, 127.0.0.53) and systemd-resolved's list of
    real upstream servers exists, that list (``resolved_text``), as Docker
    does."""
    nameservers = [line for line in etc_text.splitlines() if line.split()[:1] == ["nameserver"]]
    if nameservers and all(_loopback_resolver(line) for line in nameservers) and resolved_text:
        return resolved_text
    return etc_text


# -- inside the container's mount namespace --------------------------------------


def secure_join(root: str, path: str) -> str:
    """``root`` + ``path``, resolving symlinks as if ``root`` were ``/``:
    the result is always inside ``root``."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        if os.path.islink(candidate):
            links += 1
            if links > 40:
                raise RootfsError(f"{path}: too many levels of symbolic links")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(part)
    return os.path.join(root, *resolved)


def _ensure_target(path: str, like_dir: bool) -> None:
    if os.path.lexists(path):
        return
    if like_dir:
        os.makedirs(path, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "a").close()


_MOUNT_PLAN_FIELDS = (
    "bundle",  # a Bundle
    "layers",  # image layer dirs, bottom first (a tuple)
    "view",  # a live procview mount point, or None
    "volumes",  # a tuple of Volume
    "read_only",
    "cgroup2",  # mount the container's cgroup2 at /sys/fs/cgroup (private cgroupns)
    "workdir",  # the image's WorkingDir; default "/"
    "volatile",  # the writable layer is thrown away after the run (--rm): never sync it; default False
)


class MountPlan(namedtuple("MountPlan", _MOUNT_PLAN_FIELDS, defaults=("/", False))):
    """Everything ``mount_rootfs`` needs (plain values)."""

    __slots__ = ()


def mount_rootfs(linux, plan: MountPlan, before_view=None) -> None:
    """Build the container's tree under ``bundle.merged``; each step names
    itself in the error if it fails. ``before_view()``, if given, is called
    before anything of procview's view or a volume is touched (pid 1 waits
    there until it is in its cgroup: see ``container._container_init``)."""
    root = plan.bundle.merged
    step = "make mounts private"
    try:
        linux.mount(None, "/", None, MS_REC | MS_PRIVATE)
        step = "mount the overlay"
        # Uppermost lower layer first: the init layer, then the image's top.
        lowers = ":".join([plan.bundle.init, *reversed(plan.layers)])
        # redirect_dir and metacopy off: a renamed directory or a chmod'ed
        # file is copied up whole, so the upper dir holds the container's
        # changes by itself, as diff and commit read them.
        options = f"lowerdir={lowers},upperdir={plan.bundle.upper},workdir={plan.bundle.work},redirect_dir=off,metacopy=off"
        # "volatile" (Linux 5.10; podman uses it for --rm) when the writable
        # layer is thrown away after the run: the upper file system is never
        # synced, above all not when the container's last process exits and
        # the overlay goes, which otherwise costs a few ms of every --rm
        # run. After a crash such an upper dir cannot be mounted again; it
        # is never needed again.
        try:
            linux.mount("overlay", root, "overlay", 0, options + (",volatile" if plan.volatile else ""))
        except OSError as exc:
            if not (plan.volatile and exc.errno == errno.EINVAL):
                raise
            linux.mount("overlay", root, "overlay", 0, options)  # a kernel without it
        step = "mount /proc"
        linux.mount("proc", secure_join(root, "proc"), "proc", MS_NOSUID | MS_NOEXEC | MS_NODEV)
        step = "mount /sys"
        linux.mount("sysfs", secure_join(root, "sys"), "sysfs", MS_NOSUID | MS_NOEXEC | MS_NODEV | MS_RDONLY)
        if plan.cgroup2:
            step = "mount /sys/fs/cgroup"
            linux.mount("cgroup2", secure_join(root, "sys/fs/cgroup"), "cgroup2", MS_NOSUID | MS_NOEXEC | MS_NODEV | MS_RDONLY)
        step = "mount /dev"
        _mount_dev(linux, secure_join(root, "dev"))
        step = "bind /etc/hosts, /etc/hostname, /etc/resolv.conf"
        for name in ("hosts", "hostname", "resolv.conf"):
            target = secure_join(root, f"etc/{name}")
            _ensure_target(target, like_dir=False)
            linux.mount(plan.bundle.file(name), target, None, MS_BIND)
        if before_view is not None:
            before_view()
        if plan.view:
            step = "bind the procview view"
            _bind_view(linux, plan.view, root)
        for volume in plan.volumes:
            step = f"mount volume {volume.source}:{volume.target}"
            _bind_volume(linux, volume, root)
    except OSError as exc:
        raise RootfsError(f"{step}: {exc.strerror or exc}") from None


def _mount_dev(linux, dev: str) -> None:
    linux.mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k")
    for name, major, minor, mode in DEVICES:
        path = os.path.join(dev, name)
        os.mknod(path, stat.S_IFCHR | mode, os.makedev(major, minor))
        os.chmod(path, mode)  # mknod applies the umask
    for name, target in DEV_SYMLINKS:
        os.symlink(target, os.path.join(dev, name))
    for name in ("pts", "shm", "mqueue"):
        os.mkdir(os.path.join(dev, name))
    linux.mount("devpts", os.path.join(dev, "pts"), "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5")
    linux.mount("shm", os.path.join(dev, "shm"), "tmpfs", MS_NOSUID | MS_NOEXEC | MS_NODEV, f"mode=1777,size={SHM_SIZE}")
    linux.mount("mqueue", os.path.join(dev, "mqueue"), "mqueue", MS_NOSUID | MS_NOEXEC | MS_NODEV)


def _bind_view(linux, view: str, root: str) -> None:
    for name in VIEW_PROC_FILES:
        source, target = os.path.join(view, "proc", name), os.path.join(root, "proc", name)
        if os.path.exists(target):  # as LXCFS's hook: only files the kernel has
            linux.mount(source, target, None, MS_BIND)
    for directory in VIEW_SYS_DIRS:
        source, target = os.path.join(view, directory), os.path.join(root, directory)
        if os.path.isdir(target):
            linux.mount(source, target, None, MS_BIND)


def _bind_volume(linux, volume: Volume, root: str) -> None:
    target = secure_join(root, volume.target)
    source_is_dir = os.path.isdir(volume.source)
    if os.path.lexists(target) and os.path.isdir(target) != source_is_dir:
        kind = "a directory" if source_is_dir else "a file"
        raise OSError(20 if not source_is_dir else 21, f"cannot mount {kind} on {volume.target}")
    _ensure_target(target, like_dir=source_is_dir)
    linux.mount(volume.source, target, None, MS_BIND | MS_REC)
    if volume.read_only:
        linux.mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC)


def pivot_into(linux, root: str, read_only: bool) -> None:
    """Make ``root`` the container's ``/`` and drop the host's tree."""
    try:
        os.chdir(root)
        # pivot_root(".", "."): the old root ends up stacked under the new
        # one, and a lazy unmount removes it (runc's trick: no put_old dir).
        linux.pivot_root(".", ".")
        linux.umount2(".", MNT_DETACH)
        os.chdir("/")
        if read_only:
            linux.mount(None, "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY)
    except OSError as exc:
        raise RootfsError(f"pivot_root into {root}: {exc.strerror or exc}") from None
