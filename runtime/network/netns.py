"""A network namespace that outlives no one: made before the container's
first process, kept at a file in the container's directory while it is
set up, joined by pid 1 with ``setns``.

Making the namespace first (as ``ip netns add`` does) lets ``procview
run`` plug the container's interface in and give it an address before
anything of the container runs, so the command starts with its network
up. The file is a bind mount of ``/proc/PID/ns/net`` from a short-lived
child that unshared the namespace: the mount keeps the namespace alive
after that child exits.
"""

from __future__ import annotations

import os

from procview.runtime.linux import CLONE_NEWNET, MNT_DETACH, MS_BIND


def create(linux, path: str) -> None:
    """A new network namespace, bound at ``path`` (which must not exist)."""
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444))
    child = os.fork()
    if child == 0:  # in the same mount namespace: the bind mount is the parent's too
        try:
            linux.unshare(CLONE_NEWNET)
            linux.mount("/proc/self/ns/net", path, None, MS_BIND)
            os._exit(0)
        except BaseException:  # noqa: BLE001 - a forked child must never unwind into the caller
            os._exit(1)
    _pid, status = os.waitpid(child, 0)
    if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
        os.unlink(path)
        raise OSError(f"could not make a network namespace at {path}")


def remove(linux, path: str) -> None:
    """Unbind and remove ``path``; the namespace itself goes with its
    last process (and its interfaces with it)."""
    try:
        linux.umount2(path, MNT_DETACH)
    except OSError:
        pass  # not mounted (a create that failed halfway, or unmounted already)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
