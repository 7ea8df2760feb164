"""Parsers named after the kernel's cgroup file formats (pure: text in).

Each returns None for input it cannot make sense of; the caller treats that
as "unknown" and falls back, never as an error to raise to a reader.
"""

from __future__ import annotations

import re

from ._values import UNLIMITED

# v1 reports "no limit" as PAGE_COUNTER_MAX pages rounded to the page size
# (9223372036854771712 on 4 KiB pages) and some files as -1. Anything at or
# above 2^62 bytes is no real limit on any machine, so it means unlimited.
_UNLIMITED_THRESHOLD = 1 << 62


def parse_single_value(text: str | None):
    """A one-number file (``memory.max``, ``pids.max``, ``cpuacct.usage``).

    Returns an int, UNLIMITED for ``max``/``-1``/huge values, or None.
    """
    if text is None:
        return None
    text = text.strip()
    if not text:
        return None
    if text == "max":
        return UNLIMITED
    try:
        value = int(text)
    except ValueError:
        return None
    if value < 0 or value >= _UNLIMITED_THRESHOLD:
        return UNLIMITED if value == -1 or value >= _UNLIMITED_THRESHOLD else None
    return value


def parse_flat_keyed(text: str | None) -> dict[str, int] | None:
    """``key value`` per line (``memory.stat``, ``cpu.stat``, ``cpuacct.stat``)."""
    if text is None:
        return None
    result: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue
        try:
            result[parts[0]] = int(parts[1])
        except ValueError:
            continue
    return result


class FlatKeyedSelection:
    """A parser of a flat-keyed file that reads only the keys a caller
    needs, each under the caller's name for it: ``{file key: name}``.

    ``memory.stat`` has 40 to 70 lines and a meminfo read needs 13 (v1)
    or 24 (v2) of them on every open; one compiled pattern finds just
    those lines in a single C-level scan (3x faster than splitting every
    line). A line counts as ``parse_flat_keyed`` counts it: the key, blanks,
    an integer, nothing else (the kernel writes ``"%s %llu\\n"``); any
    other line is skipped, so a key with a garbled value is missing."""

    def __init__(self, names: dict[str, str]):
        self.names = dict(names)
        keys = "|".join(re.escape(key) for key in sorted(self.names, key=len, reverse=True))
        # Each line from the newline before it: a pattern that starts with a
        # literal is tried only where that character is, not at every one.
        self._lines = re.compile(rf"\n[ \t]*({keys})[ \t]+([-+]?\d+)[ \t]*$", re.M)

    def parse(self, text: str | None) -> dict[str, int] | None:
        """{name: value} of the selected keys ``text`` has (a key twice:
        the last line wins), or None for no text."""
        if text is None:
            return None
        names = self.names
        return {names[key]: int(value) for key, value in self._lines.findall("\n" + text)}


def parse_nested_keyed(text: str | None) -> dict[str, dict[str, str]] | None:
    """``name key=value key=value`` per line (``io.stat``, ``memory.events`` v2)."""
    if text is None:
        return None
    result: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        fields = {}
        for item in parts[1:]:
            key, sep, value = item.partition("=")
            if sep:
                fields[key] = value
        result[parts[0]] = fields
    return result


def parse_cpu_max(text: str | None):
    """v2 ``cpu.max``: ``$MAX $PERIOD``. Returns (quota or UNLIMITED, period) or None."""
    if text is None:
        return None
    parts = text.split()
    if len(parts) != 2:
        return None
    try:
        period = int(parts[1])
    except ValueError:
        return None
    if period <= 0:
        return None
    if parts[0] == "max":
        return (UNLIMITED, period)
    try:
        quota = int(parts[0])
    except ValueError:
        return None
    if quota <= 0:
        return None
    return (quota, period)


def parse_cpulist(text: str | None) -> frozenset[int] | None:
    """A kernel CPU list such as ``0-3,8,10-11``.

    Returns the set (empty for an empty file, which v1 cpuset uses for "not
    set") or None when the text is garbled, e.g. a reversed range.
    """
    if text is None:
        return None
    text = text.strip()
    cpus: set[int] = set()
    if not text:
        return frozenset()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            first = int(lo)
            last = int(hi) if sep else first
        except ValueError:
            return None
        if first < 0 or last < first:
            return None
        cpus.update(range(first, last + 1))
    return frozenset(cpus)


def format_cpulist(cpus) -> str:
    """The inverse of parse_cpulist: sorted, with ranges (``0-2,5``)."""
    ordered = sorted(cpus)
    parts = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def parse_cpuacct_usage_all(text: str | None):
    """v1 ``cpuacct.usage_all``: header ``cpu user system`` then per-CPU ns.

    Returns {cpu: (user_ns, system_ns)} or None.
    """
    if text is None:
        return None
    result = {}
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) != 3:
            continue
        try:
            result[int(parts[0])] = (int(parts[1]), int(parts[2]))
        except ValueError:
            continue
    return result or None


def parse_percpu(text: str | None) -> list[int] | None:
    """v1 ``cpuacct.usage_percpu``: space-separated ns, index = CPU number."""
    if text is None:
        return None
    try:
        values = [int(v) for v in text.split()]
    except ValueError:
        return None
    return values or None


def parse_blkio_recursive(text: str | None):
    """v1 ``blkio.*_recursive``: ``MAJ:MIN Op value`` lines plus ``Total``.

    Returns {(major, minor): {op: value}} with op lower-cased
    (read, write, sync, async, discard, total).
    """
    if text is None:
        return None
    result: dict[tuple[int, int], dict[str, int]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue
        dev, op, value = parts
        major, sep, minor = dev.partition(":")
        try:
            key = (int(major), int(minor))
            result.setdefault(key, {})[op.lower()] = int(value)
        except ValueError:
            continue
    return result
