"""The terminal side of ``progress.Report``: one bar per layer, with rich.

``rich.progress`` draws the bars (a table redrawn in place by a refresh
thread, which also hides the cursor while it runs and brings it back on
``stop``). The columns are procview's own so that sizes and speeds read
as in the plain output and ``image ls`` (``progress.human_size``)::

    3f4d90098f5b: Downloading ━━━━━━━━━━━━╸━━━━━━━━━━━━━━   1.5MB/3MB   2.1MB/s

The display is transient: the bars are erased when it stops. A finished
layer's bar is drawn once more (so even a layer done between two refreshes
was seen whole) and then replaced by its final line, printed above the
bars, where it stays; a bar whose step ends (``Download complete``) is
drawn at once too.

Imported only when a terminal shows bars: rich costs tens of milliseconds.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskID
from rich.table import Column
from rich.text import Text

from procview.runtime.images.progress import human_speed, transfer

REFRESH_PER_SECOND = 8
ACTION_WIDTH = 17  # "Download complete", the longest word a bar shows
BAR_WIDTH = 24  # so that a bar's line fits 80 columns


class _Name(ProgressColumn):
    """``3f4d90098f5b: Downloading``, never cut: the bar gives way first."""

    def __init__(self) -> None:
        super().__init__(table_column=Column(no_wrap=True))

    def render(self, task: Task) -> Text:
        return Text(f"{task.fields['name']}: {task.description:<{ACTION_WIDTH}}")


class _Sizes(ProgressColumn):
    """``1.5MB/3MB`` (done/total), or what is done when the total is unknown."""

    def __init__(self) -> None:
        super().__init__(table_column=Column(justify="right", min_width=11, no_wrap=True))

    def render(self, task: Task) -> Text:
        total = None if task.total is None else int(task.total)
        return Text(transfer(int(task.completed), total))


class _Speed(ProgressColumn):
    """``2.1MB/s``, the final speed for a finished layer."""

    def __init__(self) -> None:
        super().__init__(table_column=Column(justify="right", min_width=8, no_wrap=True))

    def render(self, task: Task) -> Text:
        speed = task.finished_speed if task.finished else task.speed
        return Text(human_speed(speed))


class Bars:
    """Bars on the terminal ``out``; started on creation, ``stop`` ends them."""

    def __init__(self, out):
        console = Console(file=out, highlight=False, markup=False, emoji=False)
        self._progress = Progress(_Name(), BarColumn(bar_width=BAR_WIDTH, finished_style="green"), _Sizes(), _Speed(), console=console,
                                  transient=True, refresh_per_second=REFRESH_PER_SECOND)
        self._tasks: dict[str, TaskID] = {}
        self._progress.start()

    def has(self, key: str) -> bool:
        return key in self._tasks

    def start(self, key: str, name: str, action: str, total: int | None) -> None:
        """A bar for ``key`` at zero (a layer's earlier bar gives way)."""
        old = self._tasks.pop(key, None)
        if old is not None:
            self._progress.remove_task(old)
        self._tasks[key] = self._progress.add_task(action, total=total, name=name)

    def advance(self, key: str, n: int) -> None:
        self._progress.advance(self._tasks[key], n)

    def relabel(self, key: str, action: str) -> None:
        """``key``'s bar says ``action`` now, drawn at once: a step ends."""
        self._progress.update(self._tasks[key], description=action)
        self._progress.refresh()

    def finish(self, key: str, text: str) -> None:
        """Draw ``key``'s bar once more, then put ``text`` in its place."""
        self._progress.refresh()
        self._progress.remove_task(self._tasks.pop(key))
        self._progress.refresh()  # printing redraws the bars as last rendered
        self.print(text)

    def print(self, text: str) -> None:
        """A line above the bars, kept when they go."""
        self._progress.console.print(text, soft_wrap=True)

    def stop(self) -> None:
        self._progress.stop()
