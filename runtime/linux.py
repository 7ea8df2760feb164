"""The thin layer over Linux syscalls that Python 3.11 does not wrap.

Everything that needs ctypes goes through ``Linux``; callers take an
instance as a parameter, so tests can pass a fake that records calls or
fails on demand. Errors are ``OSError`` with the errno and the arguments,
like the os module's own.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

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


class Linux:
    """The real syscalls, through libc."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

    def _check(self, result: int, *args) -> int:
        if result < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{os.strerror(err)}: {' '.join(map(str, args))}")
        return result

    def mount(self, source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
        enc = lambda s: None if s is None else os.fsencode(s)  # noqa: E731
        self._check(
            self._libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
            "mount", source, target, fstype,
        )

    def umount2(self, target: str, flags: int = 0) -> None:
        self._check(self._libc.umount2(os.fsencode(target), ctypes.c_int(flags)), "umount2", target)
