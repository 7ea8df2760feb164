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
# Python loop).
_MEMINFO_LINES = re.compile(r"^([^:\s\n]+):([ \t]+)(\d+)(.*)$", re.M)
# Just the value column of every line: the blanks after "Name:" and the
# number, as one string (``int()`` skips the blanks; its length is the
# column's width). Finding a literal ":" is a fast C scan, 3x faster than
# matching every line whole.
_MEMINFO_COLUMN = re.compile(r":([ \t]+\d+)")


class MeminfoLayout(namedtuple("MeminfoLayout", "names template")):
    """What stays the same between two reads of a meminfo text: its names,
    in order, and a %-format of the whole text with one right-aligned
    ``%Nd`` in each line's value column (its width, after at least one
    space: wider numbers grow the line). A kernel writes the same layout
    on every read (a number wider than its column makes another one)."""

    __slots__ = ()

    def fill(self, numbers) -> str:
        """The text with ``numbers`` (ints, in the order of ``names``)."""
        return self.template % tuple(numbers)

    def fill_from(self, values: dict[str, int]) -> str:
        """The text with ``values[name]`` in each line: ``values`` must have
        every name, each an int >= 0 (``meminfo_values`` answers so)."""
        return self.template % tuple(map(values.__getitem__, self.names))


class MeminfoScan(namedtuple("MeminfoScan", "values numbers layout")):
    """One meminfo text, scanned once: its ``values`` ({name: int}, as
    ``parse_meminfo``), its ``layout`` (a MeminfoLayout, or None when a
    line is not a ``Name: number`` line, which only the line-by-line
    rewrite keeps as it is) and, with a layout, the host's ``numbers`` in
    the order of its names (a name the text repeats keeps each line's)."""

    __slots__ = ()


# Layouts seen, by the text's length and column widths. A machine has one
# or two (a number that outgrows its column); the bound only guards
# against a stream of odd texts.
_LAYOUTS: dict = {}
_LAYOUTS_MAX = 64


def scan_meminfo(text: str) -> MeminfoScan:
    """Scan a meminfo-style text once, for parsing and rewriting it.

    The daemon scans the host's /proc/meminfo on every open, and only its
    numbers change between reads: so the names and the template are
    worked out once per layout (``_LAYOUTS``), and a read costs one
    C-level regex pass, the ints and one %-format. A kept layout is used
    only if it writes this very text back from the text's own numbers
    (so it has this text's names, columns and tails); otherwise the text
    is scanned line by line and its layout kept."""
    columns = _MEMINFO_COLUMN.findall(text)
    numbers = list(map(int, columns))
    key = (len(text), tuple(map(len, columns)))
    layout = _LAYOUTS.get(key)
    if layout is None or layout.fill(numbers) != text:
        layout = _layout_of(text, columns)
        if layout is None:
            return MeminfoScan({name: int(digits) for name, _spaces, digits, _rest in _MEMINFO_LINES.findall(text)}, (), None)
        if len(_LAYOUTS) >= _LAYOUTS_MAX:
            _LAYOUTS.clear()
        _LAYOUTS[key] = layout
    return MeminfoScan(dict(zip(layout.names, numbers)), numbers, layout)


def _layout_of(text: str, columns: list[str]) -> MeminfoLayout | None:
    """The layout of ``text`` (``columns``: its ``_MEMINFO_COLUMN``
    matches), or None unless every line is a meminfo line and the columns
    are exactly those lines' value columns (a ":" in a line's tail would
    add one)."""
    lines = _MEMINFO_LINES.findall(text)
    if len(lines) != len(text.splitlines()) or [spaces + digits for _, spaces, digits, _ in lines] != columns:
        return None
    template = "".join([f"{name}: %{len(spaces) + len(digits) - 1}d{rest.replace('%', '%%')}\n"
                        for name, spaces, digits, rest in lines])
    return MeminfoLayout(tuple([line[0] for line in lines]), template if text.endswith("\n") else template[:-1])


def parse_meminfo(text: str, scan: MeminfoScan | None = None) -> dict[str, int]:
    """``/proc/meminfo`` (or a node's meminfo with the ``Node N`` prefix
    removed) as {name: value}; values are kB for ``kB`` lines, counts for
    the HugePages_* lines. Unknown or odd lines are skipped. ``scan``:
    ``scan_meminfo(text)``, if the caller has it already."""
    return (scan or scan_meminfo(text)).values


def replace_meminfo_values(text: str, values: dict[str, int], prefix: str = "", scan: MeminfoScan | None = None) -> str:
    """Rewrite the numbers of a meminfo-style text, keeping every line, the
    host's order and column alignment; names not in ``values`` keep their
    host value. ``prefix`` is stripped before matching (``Node 0 ``).
    ``scan``: ``scan_meminfo(text)``, if the caller has it already."""
    if not prefix:
        scan = scan or scan_meminfo(text)
        if scan.layout is not None:  # every line is a meminfo line: one %-format for the whole file
            return scan.layout.fill([max(0, int(values[name])) if name in values else number
                                     for name, number in zip(scan.layout.names, scan.numbers)])
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
