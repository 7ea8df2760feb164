"""The thin layer over Linux syscalls that Python 3.11 does not wrap.

Everything that needs ctypes goes through ``Linux``; callers take an
instance as a parameter, so tests can pass a fake that records calls or
fails on demand. Errors are ``OSError`` with the errno and the arguments,
like the os module's own.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import os
import socket
import struct

# mount(2) flags (linux/mount.h)
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_STRICTATIME = 0x1000000

# umount2(2) flags
MNT_FORCE = 0x1
MNT_DETACH = 0x2

# clone(2)/unshare(2) namespace flags (linux/sched.h)
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# prctl(2) options
PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38

# Network interface flags (linux/if.h) and ioctls
IFF_UP = 0x1
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914

# pivot_root has no glibc wrapper.
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}


class Linux:
    """The real syscalls, through libc."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

    @staticmethod
    def _check(result: int, *args) -> int:
        if result < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{os.strerror(err)}: {' '.join(map(str, args))}")
        return result

    # -- mounts ------------------------------------------------------------------

    def mount(self, source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
        def enc(value):
            return None if value is None else os.fsencode(value)

        self._check(
            self._libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
            "mount", source, target, fstype,
        )

    def umount2(self, target: str, flags: int = 0) -> None:
        self._check(self._libc.umount2(os.fsencode(target), ctypes.c_int(flags)), "umount2", target)

    def pivot_root(self, new_root: str, put_old: str) -> None:
        number = _SYS_PIVOT_ROOT[os.uname().machine]
        self._check(self._libc.syscall(ctypes.c_long(number), os.fsencode(new_root), os.fsencode(put_old)), "pivot_root", new_root)

    # -- namespaces and process attributes -------------------------------------

    def unshare(self, flags: int) -> None:
        self._check(self._libc.unshare(ctypes.c_int(flags)), "unshare", hex(flags))

    def setns(self, fd: int, nstype: int = 0) -> None:
        self._check(self._libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns", fd)

    def sethostname(self, name: str) -> None:
        data = name.encode()
        self._check(self._libc.sethostname(data, ctypes.c_size_t(len(data))), "sethostname", name)

    def prctl(self, option: int, arg2: int = 0) -> None:
        zero = ctypes.c_ulong(0)
        self._check(self._libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), zero, zero, zero), "prctl", option)

    # -- network -----------------------------------------------------------------

    def interface_up(self, name: str) -> None:
        """Set IFF_UP on an interface (``ip link set NAME up``), by ioctl."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            request = struct.pack("16sH", name.encode(), 0)
            flags = struct.unpack("16sH", fcntl.ioctl(sock, SIOCGIFFLAGS, request + b"\0" * 22)[:18])[1]
            fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH", name.encode(), flags | IFF_UP) + b"\0" * 22)
