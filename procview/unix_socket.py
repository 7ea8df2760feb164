"""Unix sockets of procview's daemons (the listener holder, the fork
server): where they listen, how clients reach them, and how they tell
systemd they are ready.

A daemon that died leaves its socket file behind, and ``bind`` fails on
it; a daemon that is alive must not be replaced by a second one. So an
existing socket is probed first: if nobody answers it is stale and goes.
"""

from __future__ import annotations

import os
import socket
import stat


class ListenError(Exception):
    """The path cannot be listened on (the message says why)."""


def listen(path: str, role: str, backlog: int = 128, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A listening socket at ``path``, mode 0600 (only root may connect:
    whoever connects hands the daemon file descriptors or a command line).
    ``role`` names the daemon in messages ("listener holder", "fork
    server"); ``kind``: SOCK_STREAM or SOCK_SEQPACKET."""
    try:
        os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
        if os.path.lexists(path):
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                raise ListenError(f"{path}: exists and is not a socket")
            probe = socket.socket(socket.AF_UNIX, kind)  # another kind would get EPROTOTYPE
            try:
                probe.connect(path)
                raise ListenError(f"{path}: another {role} is listening there")
            except (ConnectionRefusedError, FileNotFoundError):
                os.unlink(path)  # left by a daemon that died
            finally:
                probe.close()
        sock = socket.socket(socket.AF_UNIX, kind | socket.SOCK_CLOEXEC)
        old_umask = os.umask(0o177)  # 0600
        try:
            sock.bind(path)
            sock.listen(backlog)
        except OSError:
            sock.close()
            raise
        finally:
            os.umask(old_umask)
    except OSError as exc:  # not root, a read-only /run, a path too long for a socket
        raise ListenError(f"{path}: cannot listen: {exc.strerror or exc}") from None
    return sock


def connect(path: str, kind: int = socket.SOCK_STREAM) -> socket.socket | None:
    """A connection to the daemon listening at ``path``, or None if nobody
    listens there."""
    sock = socket.socket(socket.AF_UNIX, kind | socket.SOCK_CLOEXEC)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    return sock


def notify_systemd(message: str) -> None:
    """Send ``message`` (``READY=1``, ...) to systemd's notification socket,
    if the service has one (``$NOTIFY_SOCKET``); raises OSError if it
    cannot be sent."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(message.encode(), address)
