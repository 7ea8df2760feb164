"""Masked and read-only paths: what a container may not see or change in
its ``/proc`` and ``/sys`` (Docker's lists, runc's mechanism).

Run in pid 1 after ``pivot_root``, against the container's own ``/`` (as
runc does), and after the view is bound: the view's files
(``/proc/meminfo``, ``/sys/devices/system/cpu``, ...) are in neither list,
so they stay readable, and read-only paths are bind mounts of their own
directories, so nothing bound inside them is hidden.

- Masked **files** get ``/dev/null`` bound over them (reads are empty,
  writes vanish); masked **directories** get an empty read-only tmpfs
  (``nr_blocks=1,nr_inodes=1``).
- Read-only paths are bound onto themselves, then remounted read-only
  (keeping the mount's nosuid/nodev/noexec).
- A path the kernel does not have (``/proc/kcore`` without
  CONFIG_PROC_KCORE, ``/sys/firmware`` on some VMs) is skipped.

``--privileged`` skips all of it and makes ``/sys`` writable
(``unmask_sys``).
"""

from __future__ import annotations

import errno
import os

from procview.runtime.linux import MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, MS_REC, MS_REMOUNT

MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
)
# And each CPU's thermal_throttle directory (GHSA-6fw5-f8r9-fgfm): the
# cpuN directories under this one.
CPU_DIR = "/sys/devices/system/cpu"

READ_ONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

# statvfs f_flag bits that are also mount flags (same values as MS_*).
_KEPT_FLAGS = MS_NOSUID | MS_NODEV | MS_NOEXEC

_MISSING = (errno.ENOENT, errno.ENOTDIR)


def masked_paths(root: str = "/") -> list[str]:
    """Docker's masked paths, and the thermal_throttle directory of each CPU
    that has one under ``root``."""
    cpus = os.path.join(root, CPU_DIR.lstrip("/"))
    try:
        names = os.listdir(cpus)
    except OSError:
        names = []
    throttles = sorted(
        f"{CPU_DIR}/{name}/thermal_throttle"
        for name in names
        if name.startswith("cpu") and name[3:].isdigit() and os.path.lexists(os.path.join(cpus, name, "thermal_throttle"))
    )
    return [*MASKED_PATHS, *throttles]


def mask_paths(linux, paths=None) -> list[str]:
    """Mask each path (see module docstring); returns those masked."""
    done = []
    for path in masked_paths() if paths is None else paths:
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                linux.mount("tmpfs", path, "tmpfs", MS_RDONLY, "nr_blocks=1,nr_inodes=1")
            elif os.path.lexists(path):
                linux.mount("/dev/null", path, None, MS_BIND)
            else:
                continue
        except OSError as exc:
            if exc.errno in _MISSING:
                continue
            raise OSError(exc.errno, f"mask {path}: {exc.strerror or exc}") from None
        done.append(path)
    return done


def make_read_only(linux, paths=READ_ONLY_PATHS) -> list[str]:
    """Bind each path onto itself and remount it read-only."""
    done = []
    for path in paths:
        if not os.path.lexists(path):
            continue
        try:
            linux.mount(path, path, None, MS_BIND | MS_REC)
            kept = os.statvfs(path).f_flag & _KEPT_FLAGS
            linux.mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC | kept)
        except OSError as exc:
            if exc.errno in _MISSING:
                continue
            raise OSError(exc.errno, f"make {path} read-only: {exc.strerror or exc}") from None
        done.append(path)
    return done


def unmask_sys(linux) -> None:
    """``--privileged``: ``/sys`` (and a cgroup2 ``/sys/fs/cgroup``)
    writable, as Docker does."""
    for path in ("/sys", "/sys/fs/cgroup"):
        if not os.path.ismount(path):
            continue
        kept = os.statvfs(path).f_flag & _KEPT_FLAGS
        if path == "/sys":
            # sysfs was mounted read-only: clear it on the superblock too
            # (a new one in a private netns; the host's, already rw, with --net host).
            try:
                linux.mount(None, path, None, MS_REMOUNT | kept)
            except OSError:
                pass
        linux.mount(None, path, None, MS_BIND | MS_REMOUNT | kept)


__all__ = ["MASKED_PATHS", "CPU_DIR", "READ_ONLY_PATHS", "masked_paths", "mask_paths", "make_read_only", "unmask_sys"]
