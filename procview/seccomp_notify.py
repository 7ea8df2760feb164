"""The kernel's seccomp user notification, as a thin layer tests can replace.

A filter action ``SCMP_ACT_NOTIFY`` stops the calling thread in the
syscall and queues a notification on the filter's *listener* fd. Whoever
holds that fd receives it (``SECCOMP_IOCTL_NOTIF_RECV``), may look at and
write into the thread's memory, and answers with a return value or an
errno (``SECCOMP_IOCTL_NOTIF_SEND``), or with ``CONTINUE``: run the real
syscall after all. See seccomp_unotify(2).

The three ioctls are made directly on preallocated buffers: libseccomp's
notify calls (2.5) fold every failure into ECANCELED, and a supervisor
must tell "the caller was interrupted" (ENOENT: carry on) from "this is
not a listener" (drop it). libseccomp still builds the filters and names
the syscalls.

Safety, as seccomp_unotify(2) prescribes: the target's memory is opened
through ``/proc/TID/mem`` *first*, and the notification id is checked with
``SECCOMP_IOCTL_NOTIF_ID_VALID`` *after*: if the id is still valid the
thread is still stopped in this very syscall, so the open fd is its memory
and not that of a process that took its pid since. Only the syscall's
output buffer is ever written.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import os
import select
import struct
from typing import NamedTuple

# seccomp_unotify(2): answer "run the real syscall" (kernel >= 5.5).
SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1

# struct seccomp_notif {u64 id; u32 pid; u32 flags; struct seccomp_data
# {int nr; u32 arch; u64 instruction_pointer; u64 args[6];}} and
# struct seccomp_notif_resp {u64 id; s64 val; s32 error; u32 flags}.
_NOTIF = struct.Struct("=QIIiIQ6Q")
_RESP = struct.Struct("=QqiI")
_ID = struct.Struct("=Q")  # the notification's id: the struct's first field


def _ioc(direction: int, number: int, size: int) -> int:
    """Linux's _IOC(dir, '!', nr, size) (asm-generic/ioctl.h)."""
    return (direction << 30) | (size << 16) | (ord("!") << 8) | number


_WRITE, _READ = 1, 2
SECCOMP_IOCTL_NOTIF_RECV = _ioc(_READ | _WRITE, 0, _NOTIF.size)
SECCOMP_IOCTL_NOTIF_SEND = _ioc(_READ | _WRITE, 1, _RESP.size)
SECCOMP_IOCTL_NOTIF_ID_VALID = _ioc(_WRITE, 2, 8)

# fcntl.ioctl copies a buffer of up to 1024 bytes to a buffer of its own and
# back; a bigger one it hands to the kernel itself. A listener that receives
# into a shared page this big has the notification (its id first) in shared
# memory the moment the kernel marks it received: another process can tell
# which call was being answered if this one dies (listener_holder.py).
SHARED_BUFFER_SIZE = 4096


class Notification(NamedTuple):
    """One stopped syscall: ``pid`` is the thread's id in the receiver's
    pid namespace (0 if it is not visible there)."""

    id: int
    pid: int
    syscall: int
    arch: int
    args: tuple[int, ...]


class NotifyError(OSError):
    pass


@functools.cache
def _libseccomp():
    try:  # by soname: find_library runs ldconfig, which costs ~40 ms
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError as exc:
        from ctypes.util import find_library  # imports subprocess: only when the soname fails
        from procview.native import cannot_load

        name = find_library("seccomp")
        if name is None:  # CDLL(None) would be this program itself
            raise NotifyError(cannot_load("libseccomp", exc)) from None
        try:
            lib = ctypes.CDLL(name, use_errno=True)
        except OSError as again:
            raise NotifyError(cannot_load("libseccomp", again)) from None
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_arch_native.restype = ctypes.c_uint32
    return lib


@functools.cache
def _libc():
    return ctypes.CDLL(None, use_errno=True)


def syscall_number(name: str) -> int:
    """The native number of syscall ``name`` (libseccomp's table)."""
    return _libseccomp().seccomp_syscall_resolve_name(name.encode())


def native_arch() -> int:
    """This machine's AUDIT_ARCH_* value, what ``seccomp_data.arch`` says
    for a native call."""
    return _libseccomp().seccomp_arch_native()


class Listener:
    """One listener fd (owned: ``close`` closes it). ``buffer``: where
    notifications are received, a writable buffer of at least
    SHARED_BUFFER_SIZE bytes (shared memory, say); it holds the id of a
    received call until the call is answered, else 0."""

    def __init__(self, fd: int, buffer=None):
        self.fd = fd
        self._buffer = buffer if buffer is not None else bytearray(_NOTIF.size)
        self._poller = select.poll()
        self._poller.register(fd, select.POLLIN)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def state(self) -> tuple[bool, bool]:
        """(a notification is waiting, no process uses the filter any more),
        without blocking. The kernel's receive blocks until a notification
        comes, so it is only called when the first is true."""
        events = dict(self._poller.poll(0)).get(self.fd, 0)
        return bool(events & select.POLLIN), bool(events & (select.POLLHUP | select.POLLERR | select.POLLNVAL))

    def receive(self) -> Notification | None:
        """The next notification, or None if its thread was interrupted
        (killed, or a signal handler ran) since the poll said one waited."""
        buffer = self._buffer
        buffer[:_NOTIF.size] = bytes(_NOTIF.size)  # the kernel wants a zeroed struct
        try:
            fcntl.ioctl(self.fd, SECCOMP_IOCTL_NOTIF_RECV, buffer, True)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise NotifyError(exc.errno, f"receiving a notification: {exc.strerror}") from None
        notification_id, pid, _flags, nr, arch, _ip, *args = _NOTIF.unpack_from(buffer)
        return Notification(notification_id, pid, nr, arch, tuple(args))

    def let_run(self) -> bool:
        """Answer the waiting notification, if there is one, with CONTINUE:
        the real syscall runs, as if there were no filter. What procview run
        and the listener holder do while no supervisor is there. True if a
        call was answered."""
        if not self.state()[0]:
            return False  # the kernel's receive would block until a call comes
        notification = self.receive()
        return notification is not None and self.respond(notification.id, continue_=True)

    def id_valid(self, notification_id: int) -> bool:
        """Whether the thread is still stopped in that syscall."""
        try:
            fcntl.ioctl(self.fd, SECCOMP_IOCTL_NOTIF_ID_VALID, struct.pack("=Q", notification_id))
            return True
        except OSError:
            return False

    def respond(self, notification_id: int, value: int = 0, error: int = 0, continue_: bool = False) -> bool:
        """Answer: ``value`` as the syscall's return value, or ``-error``, or
        (``continue_``) let the real syscall run. False if the thread is no
        longer waiting (it died, or a signal interrupted the call)."""
        flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE if continue_ else 0
        response = bytearray(_RESP.pack(notification_id, value, -error if error else 0, flags))
        try:
            fcntl.ioctl(self.fd, SECCOMP_IOCTL_NOTIF_SEND, response, True)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.EINPROGRESS):
                return False
            raise NotifyError(exc.errno, f"answering a notification: {exc.strerror}") from None
        finally:
            if _ID.unpack_from(self._buffer)[0] == notification_id:
                _ID.pack_into(self._buffer, 0, 0)  # answered (or its thread is gone): nothing in flight
        return True


def in_flight(buffer) -> int:
    """The id of the call received into ``buffer`` (a Listener's) and not
    answered yet; 0 if none."""
    return _ID.unpack_from(buffer)[0]


def write_target(listener: Listener, notification: Notification, address: int, data: bytes) -> int:
    """Write ``data`` at ``address`` in the notifying thread; 0 or an errno.

    EFAULT for an address the thread cannot write (what the kernel itself
    answers for a bad buffer); ESRCH when the thread is gone or no longer
    stopped in this syscall.
    """
    try:
        fd = os.open(f"/proc/{notification.pid}/mem", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return exc.errno or errno.ESRCH
    try:
        if not listener.id_valid(notification.id):
            return errno.ESRCH
        try:
            written = os.pwrite(fd, data, address)
        except (OSError, OverflowError):
            return errno.EFAULT
        return 0 if written == len(data) else errno.EFAULT
    finally:
        os.close(fd)


def real_sched_getaffinity(tid: int, length: int) -> tuple[int, bytes]:
    """The raw syscall for thread ``tid``: (the kernel's return value, the
    mask bytes it copied). A negative value is -errno (EINVAL for a
    ``length`` the kernel refuses, ESRCH for a thread that is gone)."""
    if length <= 0 or length > 1 << 20:
        return -errno.EINVAL, b""
    buffer = ctypes.create_string_buffer(length)
    libc = _libc()
    result = libc.syscall(ctypes.c_long(syscall_number("sched_getaffinity")), ctypes.c_long(tid), ctypes.c_uint(length), buffer)
    if result < 0:
        return -ctypes.get_errno(), b""
    return result, buffer.raw[:result]


__all__ = [
    "Listener", "Notification", "NotifyError", "write_target", "real_sched_getaffinity", "syscall_number", "native_arch",
    "SECCOMP_USER_NOTIF_FLAG_CONTINUE", "SHARED_BUFFER_SIZE", "in_flight",
]
