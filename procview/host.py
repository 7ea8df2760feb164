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
# A line's value column: the blanks after "Name:" and the number, as one
# string (``int()`` skips the blanks; its length is the column's width).
_MEMINFO_COLUMN = r"([ \t]+\d+)"


class MeminfoLayout(namedtuple("MeminfoLayout", "names widths template pattern")):
    """What stays the same between two reads of a meminfo text: its names,
    in order, its value columns' widths, and a %-format of the whole text
    with one right-aligned ``%Nd`` in each column (after at least one
    space: a wider number grows the line). ``pattern`` matches exactly the
    texts of this layout whatever their numbers, capturing each column
    (None for a text too long to be worth one). A kernel writes the same
    layout on every read; a number that outgrows its column makes another."""

    __slots__ = ()

    def columns_of(self, text: str) -> tuple[str, ...] | None:
        """The value columns of ``text`` if it has this layout (the same
        names and tails, columns of the same widths), else None."""
        match = self.pattern.fullmatch(text)
        if match is None:
            return None
        columns = match.groups()
        return columns if tuple(map(len, columns)) == self.widths else None

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


# Longer texts get a layout but no pattern (compiling one would cost more
# than it saves).
_PATTERN_MAX_LINES = 256


class MeminfoLayouts:
    """The meminfo layouts a reader has seen, newest first. A machine has
    one or two per file (a number that outgrows its column makes another);
    the bound keeps a stream of odd texts from making each scan try many.
    The view engine keeps one for the daemon's life; only structure is
    kept, never a number."""

    MAX = 8

    def __init__(self):
        self._layouts: list[MeminfoLayout] = []

    def matching(self, text: str) -> tuple[MeminfoLayout, tuple[str, ...]] | None:
        """A kept layout of ``text`` and its value columns, or None."""
        for layout in self._layouts:
            columns = layout.columns_of(text)
            if columns is not None:
                return layout, columns
        return None

    def keep(self, layout: MeminfoLayout) -> None:
        if layout.pattern is not None:
            self._layouts.insert(0, layout)
            del self._layouts[self.MAX:]


def scan_meminfo(text: str, layouts: MeminfoLayouts | None = None) -> MeminfoScan:
    """Scan a meminfo-style text once, for parsing and rewriting it.

    The daemon scans the host's /proc/meminfo on every open, and only its
    numbers change between reads: so with ``layouts`` the names, widths
    and template are worked out once per layout, and a read costs one
    C-level match of the layout's pattern (which also proves the text has
    that layout), the ints and one %-format. A text of no kept layout is
    scanned line by line and its layout kept there."""
    found = layouts.matching(text) if layouts is not None else None
    if found is not None:
        layout, columns = found
    else:
        lines = _MEMINFO_LINES.findall(text)
        if len(lines) != len(text.splitlines()):
            return MeminfoScan({name: int(digits) for name, _spaces, digits, _rest in lines}, (), None)
        layout = _layout_of(lines, text.endswith("\n"))
        if layouts is not None:
            layouts.keep(layout)
        columns = [spaces + digits for _name, spaces, digits, _rest in lines]
    numbers = list(map(int, columns))
    return MeminfoScan(dict(zip(layout.names, numbers)), numbers, layout)


def _layout_of(lines: list[tuple[str, str, str, str]], final_newline: bool) -> MeminfoLayout:
    """The layout of a text whose every line is one of ``lines`` (its
    ``_MEMINFO_LINES`` matches)."""
    widths = tuple([len(spaces) + len(digits) for _name, spaces, digits, _rest in lines])
    end = "\n" if final_newline else ""
    template = "\n".join(
        [f"{_literal(name)}: %{width - 1}d{_literal(rest)}" for (name, _, _, rest), width in zip(lines, widths)]
    )
    pattern = None
    if len(lines) <= _PATTERN_MAX_LINES:
        lines_pattern = [re.escape(f"{name}:") + _MEMINFO_COLUMN + re.escape(rest) for name, _, _, rest in lines]
        pattern = re.compile("\n".join(lines_pattern) + end)
    return MeminfoLayout(tuple([line[0] for line in lines]), widths, template + end if lines else "", pattern)


def _literal(text: str) -> str:
    """``text`` as literal text of a %-format."""
    return text.replace("%", "%%")


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


class InterfaceTraffic(namedtuple("InterfaceTraffic", "received sent")):
    """Bytes one network interface received and sent (ints)."""

    __slots__ = ()


def parse_net_dev(text: str | None) -> dict[str, InterfaceTraffic] | None:
    """``/proc/PID/net/dev`` (the interfaces of that process's network
    namespace) as {interface: InterfaceTraffic}. Each line after the two
    headings is ``NAME: rx_bytes rx_packets ... (8 received columns)
    tx_bytes ...``. None for a missing file; garbled lines are skipped."""
    if text is None:
        return None
    interfaces = {}
    for line in text.splitlines()[2:]:
        name, colon, counters = line.partition(":")
        columns = counters.split()
        if not colon or len(columns) < 9:
            continue
        try:
            interfaces[name.strip()] = InterfaceTraffic(int(columns[0]), int(columns[8]))
        except ValueError:
            continue
    return interfaces


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
