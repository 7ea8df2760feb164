"""The host's own /proc and /sys files: small pure parsers (text in).

Reading happens in ``HostFiles`` (a root you can swap for fixture trees, as
psutil swaps its procfs path); parsing is pure so views and tests share it.
"""

from __future__ import annotations

import os
import re
from collections import namedtuple

from procview._io import read_text
from procview.cgroups import parse_cpulist

# "Name:   12345 kB" or "HugePages_Total:       0" (no unit).
_MEMINFO_LINE = re.compile(r"^([^:\s]+):(\s+)(\d+)(.*)$")
# The same, over a whole text at once (one C-level scan instead of a
# Python loop: meminfo is read on every open and sysinfo computation).
_MEMINFO_LINES = re.compile(r"^([^:\s\n]+):([ \t]+)(\d+)(.*)$", re.M)


def scan_meminfo(text: str) -> list[tuple[str, str, str, str]]:
    """The meminfo lines of ``text``, each as (name, spaces, digits, rest).
    A caller that both parses and rewrites the same text scans it once and
    passes the lines to both."""
    return _MEMINFO_LINES.findall(text)


def parse_meminfo(text: str, lines: list | None = None) -> dict[str, int]:
    """``/proc/meminfo`` (or a node's meminfo with the ``Node N`` prefix
    removed) as {name: value}; values are kB for ``kB`` lines, counts for
    the HugePages_* lines. Unknown or odd lines are skipped. ``lines``:
    ``scan_meminfo(text)``, if the caller has it already."""
    if lines is None:
        lines = _MEMINFO_LINES.findall(text)
    return {name: int(digits) for name, _spaces, digits, _rest in lines}


def replace_meminfo_values(text: str, values: dict[str, int], prefix: str = "", lines: list | None = None) -> str:
    """Rewrite the numbers of a meminfo-style text, keeping every line, the
    host's order and column alignment; names not in ``values`` keep their
    host value. ``prefix`` is stripped before matching (``Node 0 ``).
    ``lines``: ``scan_meminfo(text)``, if the caller has it already."""
    if not prefix:
        if lines is None:
            lines = _MEMINFO_LINES.findall(text)
        if len(lines) == len(text.splitlines()):  # every line is a meminfo line: the fast way
            # One %-format for the whole file instead of a Python string per
            # line: each number goes right-aligned into the host's column,
            # after at least one space (wider numbers grow the line).
            template = "".join([f"{name}: %{len(spaces) + len(digits) - 1}d{rest.replace('%', '%%')}\n"
                                for name, spaces, digits, rest in lines])
            numbers = tuple([max(0, int(values[name])) if name in values else int(digits) for name, _, digits, _ in lines])
            out = template % numbers
            return out if text.endswith("\n") else out[:-1]
    out = []
    for line in text.splitlines():
        body = line[len(prefix):] if prefix and line.startswith(prefix) else line
        match = _MEMINFO_LINE.match(body)
        if match and match.group(1) in values:
            line = (prefix if body is not line else "") + _replaced(*match.groups(), values)
        out.append(line)
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def _replaced(name: str, spaces: str, digits: str, rest: str, values: dict[str, int]) -> str:
    if name not in values:
        return f"{name}:{spaces}{digits}{rest}"
    width = len(spaces) + len(digits)
    number = str(max(0, int(values[name])))
    # Right-align in the host's column; grow if the number is wider.
    padding = max(1, width - len(number))
    return f"{name}:{' ' * padding}{number}{rest}"


class Uptime(namedtuple("Uptime", "uptime idle")):
    """``/proc/uptime``: seconds (floats)."""

    __slots__ = ()


def parse_uptime(text: str) -> Uptime | None:
    parts = text.split()
    try:
        return Uptime(float(parts[0]), float(parts[1]))
    except (IndexError, ValueError):
        return None


def parse_btime(stat_text: str) -> int | None:
    for line in stat_text.splitlines():
        if line.startswith("btime "):
            try:
                return int(line.split()[1])
            except (IndexError, ValueError):
                return None
    return None


class ProcStat(namedtuple("ProcStat", "pid state ppid starttime")):
    """The fields of ``/proc/PID/stat`` procview needs (see proc(5)).

    ``starttime`` is in clock ticks after (the reader's view of) boot.
    """

    __slots__ = ()


def parse_proc_pid_stat(text: str) -> ProcStat | None:
    """``/proc/PID/stat``. The command name (field 2) may hold spaces and
    parentheses, so split after the *last* ``)``, as psutil does."""
    head, sep, tail = text.rpartition(")")
    if not sep:
        return None
    try:
        pid = int(head.split("(", 1)[0])
        fields = tail.split()
        # tail starts at field 3 (state): starttime is field 22.
        return ProcStat(pid, fields[0], int(fields[1]), int(fields[19]))
    except (IndexError, ValueError):
        return None


class ProcStatus(namedtuple("ProcStatus", "state ppid nspid")):
    """The fields of ``/proc/PID/status`` procview needs. ``nspid`` is the
    pid in each nested pid namespace, outermost first (a tuple of ints)."""

    __slots__ = ()


def parse_proc_status(text: str) -> ProcStatus | None:
    """``/proc/PID/status``: State, PPid and NSpid (absent before Linux
    4.1: ``()``). None if State or PPid is missing or garbled.

    The daemon parses one for every thread of a container on each read of
    ``/proc/stat`` and ``loadavg``, so it looks up its three lines with
    ``str.find`` rather than splitting all fifty-odd (4x faster). A
    command name cannot fake a line: the kernel escapes its newlines."""
    text = "\n" + text
    state = _status_field(text, "\nState:")
    ppid = _status_field(text, "\nPPid:")
    nspid = _status_field(text, "\nNSpid:")
    state = state.strip()[:1] if state is not None else ""
    if not state or ppid is None:
        return None
    try:
        return ProcStatus(state, int(ppid), tuple([int(v) for v in nspid.split()]) if nspid else ())
    except ValueError:
        return None


def _status_field(text: str, head: str) -> str | None:
    """The rest of the line that starts with ``head`` (``"\\nPPid:"``)."""
    start = text.find(head)
    if start < 0:
        return None
    start += len(head)
    end = text.find("\n", start)
    return text[start:] if end < 0 else text[start:end]


def parse_timens_boottime_offset(text: str) -> float | None:
    """``/proc/PID/timens_offsets``: ``boottime <secs> <nanosecs>`` line."""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] in ("boottime", "7"):  # 7 = CLOCK_BOOTTIME
            try:
                return int(parts[1]) + int(parts[2]) / 1e9
            except ValueError:
                return None
    return None


class HostFiles:
    """Reads the host's files below ``root`` (``/`` on a real machine)."""

    def __init__(self, root: str = "/"):
        self.root = root

    def path(self, path: str) -> str:
        return path if self.root == "/" else os.path.join(self.root, path.lstrip("/"))

    def read(self, path: str) -> str | None:
        return read_text(self.path(path))

    def readlink(self, path: str) -> str | None:
        try:
            return os.readlink(self.path(path))
        except OSError:
            return None

    def online_cpus(self) -> frozenset[int]:
        cpus = parse_cpulist(self.read("/sys/devices/system/cpu/online"))
        if cpus:
            return cpus
        return frozenset(range(os.cpu_count() or 1))
