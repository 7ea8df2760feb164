"""The OCI seccomp-agent protocol: how a container's seccomp listener is handed over.

runc and crun do it for ``linux.seccomp.listenerPath``, ``procview run``
for its own containers: one message on a unix socket, the OCI
``ContainerProcessState`` JSON, with the fds its ``fds`` list names as
SCM_RIGHTS; the listener is the one named ``seccompFd``. The listener
holder (``listener_holder.py``) receives these messages from runtimes and
passes each listener on to the supervisor in the same form, naming only
the listener.

Pure functions, apart from ``is_listener`` (which asks /proc) and the
client's send, ``hand_over``.
"""

from __future__ import annotations

import array
import json
import os
import socket

OCI_VERSION = "1.0.2"
SECCOMP_FD_NAME = "seccompFd"  # the OCI name of the listener in "fds"
MAX_MESSAGE = 64 * 1024  # the state JSON (runc's carries the annotations)
MAX_FDS = 16
# procview run keeps a copy of its listener and answers it itself when the
# holder is gone (runtime/syscall_view.py); runc and crun keep none. The
# agent learns which from the state's opaque "metadata" field.
KEEPS_A_COPY = "procview-run: keeps a copy"


def state_message(container_id: str, pid: int, bundle: str, status: str = "running", metadata: str = "") -> bytes:
    """The OCI ``ContainerProcessState`` a seccomp agent receives."""
    state = {
        "ociVersion": OCI_VERSION,
        "fds": [SECCOMP_FD_NAME],
        "pid": pid,
        "metadata": metadata,
        "state": {
            "ociVersion": OCI_VERSION, "id": container_id, "status": status, "pid": pid, "bundle": bundle,
            "annotations": {},
        },
    }
    return json.dumps(state).encode()


def parse(message: bytes, fds: list[int]) -> tuple[dict, int]:
    """(the state, the listener's index in ``fds``) of one agent message;
    ValueError (its text fit for a log line) if it is not one."""
    if not fds:
        raise ValueError("a message without an fd")
    try:
        state = json.loads(message)
        names = state["fds"]
        if not isinstance(names, list):
            raise TypeError(names)
        index = names.index(SECCOMP_FD_NAME)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ValueError("not an OCI container process state naming a seccompFd") from None
    if index >= len(fds):
        raise ValueError(f"'fds' names {len(names)} fds but {len(fds)} came")
    return state, index


def describe(state: dict) -> str:
    """A name for logs: ``container abcdef012345 (pid 12)``."""
    inner = state.get("state") if isinstance(state.get("state"), dict) else {}
    return f"container {str(inner.get('id', '?'))[:12]} (pid {state.get('pid', '?')})"


def keeps_a_copy(state: dict) -> bool:
    """Whether the runtime that sent ``state`` keeps its own copy of the
    listener and answers it when nobody else does (procview run)."""
    return state.get("metadata") == KEEPS_A_COPY


def listener_only(state: dict) -> bytes:
    """``state`` as a message that carries the listener alone (what the
    holder passes on: the runtime may have sent more fds)."""
    return json.dumps(dict(state, fds=[SECCOMP_FD_NAME])).encode()


def fds_of(ancdata) -> list[int]:
    """The fds that came as SCM_RIGHTS in ``recvmsg``'s ancillary data."""
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            received = array.array("i")
            received.frombytes(payload[: len(payload) - len(payload) % received.itemsize])
            fds.extend(received)
    return fds


def complete_json(data: bytes) -> bool:
    """Whether ``data`` is a whole JSON document (a stream socket may
    deliver the state in pieces)."""
    try:
        json.loads(data)
        return True
    except ValueError:
        return False


def is_listener(fd: int) -> bool:
    """Whether ``fd`` is a seccomp user-notification listener (the kernel
    names its anonymous inode so)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:seccomp notify"
    except OSError:
        return False


def hand_over(sock: socket.socket, message: bytes, fd: int) -> bool:
    """Send one agent message with the listener ``fd``; False if the agent
    is gone."""
    try:
        socket.send_fds(sock, [message], [fd])
        return True
    except OSError:
        return False


def close_all(fds, keep: int | None = None) -> None:
    for fd in fds:
        if fd != keep:
            os.close(fd)


__all__ = [
    "state_message", "parse", "describe", "keeps_a_copy", "listener_only", "fds_of", "complete_json", "is_listener",
    "hand_over", "close_all", "OCI_VERSION", "SECCOMP_FD_NAME", "MAX_MESSAGE", "MAX_FDS", "KEEPS_A_COPY",
]
