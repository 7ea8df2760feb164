"""Running a command on a real terminal, as a user at a shell would."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import termios
import time


def run_on_pty(argv: list[str], rows: int, cols: int, reply: tuple[bytes, bytes] | None = None,
               timeout: float = 60) -> tuple[int, str]:
    """Run ``argv`` on a new pty of ``rows`` x ``cols``; (exit code, all it
    printed). ``reply``: (prompt, keys): type ``keys`` once ``prompt`` has
    been printed."""
    pid, master = pty.fork()
    if pid == 0:
        os.execv(argv[0], argv)
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    output = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1)
        if not ready:
            continue
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: every process on the pty is gone
            break
        if not chunk:
            break
        output += chunk
        if reply is not None and reply[0] in output:
            os.write(master, reply[1])
            reply = None
    _, status = os.waitpid(pid, 0)
    os.close(master)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")
