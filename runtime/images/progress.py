"""What long image work shows: ``pull``, ``push``, ``image import`` and ``image export``.

The work is a set of layers, each moving bytes (downloading, extracting,
importing, exporting, pushing). ``Report`` shows it in one of three ways:

* **on a terminal**, one bar per layer in flight, all redrawn in place
  (``progress_bars.py``, built on ``rich``)::

      3f4d90098f5b: Downloading ━━━━━━━━━━━╸━━━━━━━━━━━━━   1.5MB/3MB   2.1MB/s

  A layer that is done turns into its final line (``3f4d90098f5b: Pull
  complete``), printed above the bars, so the screen ends as the plain
  output would. The bars of unfinished layers vanish when the work ends or
  fails, and the cursor comes back, before the error line is printed.
* **not on a terminal** (a pipe, a file, a log), plain lines, one per
  layer when it is done, and no escape codes.
* **quiet** (``-q``), nothing but the result (``result()``): the reference
  or ID at the end.

Keys name layers: a digest (``sha256:<hex>``, shown as its first 12 hex
digits, as Docker does) or a short word (``archive``). Callers may be
threads (pull fetches three layers at once). The bar renderer imports
``rich`` (tens of milliseconds), so it is imported only when a terminal is
to show bars; ``procview run``, which reports a pull on stderr, pays
nothing for a pull that has nothing to fetch.
"""

from __future__ import annotations

import os
import sys
import threading


def human_size(n: int) -> str:
    """Docker's style: decimal units, three significant digits (``4.26MB``)."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 999.5 or unit == "TB":
            return f"{value:.3g}{unit}"
        value /= 1000
    raise AssertionError("unreachable")


def human_speed(bytes_per_second: float | None) -> str:
    """``2.1MB/s``; empty while the speed is not known yet."""
    if bytes_per_second is None:
        return ""
    return f"{human_size(round(bytes_per_second))}/s"


def transfer(done: int, total: int | None) -> str:
    """``1.5MB/3MB``, or ``1.5MB`` when the total is not known."""
    return human_size(done) if total is None else f"{human_size(done)}/{human_size(total)}"


def short_id(key: str) -> str:
    """How a layer is named on screen: a digest's first 12 hex digits."""
    return key.removeprefix("sha256:")[:12]


def layer_line(key: str, status: str) -> str:
    return f"{short_id(key)}: {status}"


def shows_bars(out) -> bool:
    """Whether ``out`` is a terminal that can redraw lines in place."""
    try:
        return out.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


class Report:
    """Progress of work on layers, as the module docstring describes.

    ``action`` is the word of a bar that ``progress`` starts by itself
    (pull's ``Downloading``, push's ``Pushing``); ``start`` names another.
    """

    def __init__(self, out=None, quiet: bool = False, tty: bool | None = None, action: str = "Downloading"):
        self._out = out or sys.stdout
        self._quiet = quiet
        self._tty = shows_bars(self._out) if tty is None else tty
        self._action = action
        self._lock = threading.RLock()
        self._bars = None  # a progress_bars.Bars while bars are on screen

    def __enter__(self) -> Report:
        return self

    def __exit__(self, *exc) -> None:
        self.end_progress()

    @property
    def _showing_bars(self) -> bool:
        return self._tty and not self._quiet

    def line(self, text: str) -> None:
        """A line of text (not when quiet); on a terminal above the bars."""
        if self._quiet:
            return
        with self._lock:
            if self._bars is not None:
                self._bars.print(text)
            else:
                print(text, file=self._out, flush=True)

    def result(self, text: str) -> None:
        """The line the work ends with, printed even when quiet."""
        self.end_progress()
        with self._lock:
            print(text, file=self._out, flush=True)

    def start(self, key: str, action: str, total: int | None) -> None:
        """Layer ``key`` begins ``action`` (``Extracting``) on ``total``
        bytes (None: not known yet), from zero; on a terminal a bar."""
        if self._showing_bars:
            with self._lock:
                self._ensure_bars().start(key, short_id(key), action, total)

    def progress(self, key: str, n: int, total: int | None) -> None:
        """``n`` more bytes of layer ``key`` are done, of ``total``."""
        if self._showing_bars:
            with self._lock:
                bars = self._ensure_bars()
                if not bars.has(key):
                    bars.start(key, short_id(key), self._action, total)
                bars.advance(key, n)

    def status(self, key: str, action: str) -> None:
        """Layer ``key``'s bar says ``action`` now (``Download complete``:
        waiting for the next step), its counts kept."""
        if self._showing_bars:
            with self._lock:
                if self._bars is not None and self._bars.has(key):
                    self._bars.relabel(key, action)

    def layer(self, key: str, status: str) -> None:
        """Layer ``key`` is done: its line ``<id>: <status>``; on a
        terminal its bar, drawn once more as it ends, gives way to it."""
        with self._lock:
            if self._bars is not None and self._bars.has(key):
                self._bars.finish(key, layer_line(key, status))
                return
        self.line(layer_line(key, status))

    def end_progress(self) -> None:
        """The bars go (unfinished ones vanish) and the cursor comes back;
        safe to call twice, and bars may start again afterwards."""
        with self._lock:
            bars, self._bars = self._bars, None
        if bars is not None:
            bars.stop()

    def _ensure_bars(self):
        if self._bars is None:
            from procview.runtime.images.progress_bars import Bars

            self._bars = Bars(self._out)
        return self._bars


class Silent:
    """A report that shows nothing (library callers, tests)."""

    def start(self, key: str, action: str, total: int | None) -> None:
        pass

    def progress(self, key: str, n: int, total: int | None) -> None:
        pass

    def layer(self, key: str, status: str) -> None:
        pass


class Counted:
    """A write-only byte sink's progress, told to ``report`` in steps of
    ``step`` bytes rather than per write (tar writes 10 KiB records)."""

    def __init__(self, report, key: str, total: int | None, step: int = 1 << 18):
        self._report = report
        self._key = key
        self._total = total
        self._step = step
        self._pending = 0

    def add(self, n: int) -> None:
        self._pending += n
        if self._pending >= self._step:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._report.progress(self._key, self._pending, self._total)
            self._pending = 0
