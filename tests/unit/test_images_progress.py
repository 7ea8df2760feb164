"""What long image work shows (runtime/images/progress.py): sizes and speeds,
a line per layer off a terminal, nothing but the result when quiet, and
bars on a terminal that leave it clean."""

import io
import re
import subprocess
import sys

import pyte
import pytest

from procview.runtime.images.progress import Report, human_size, human_speed, layer_line, shows_bars, transfer

A = "sha256:" + "ab" * 32
B = "sha256:" + "cd" * 32
ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture(autouse=True)
def a_users_terminal(monkeypatch):
    """The environment of a user at a terminal, whatever the tests run in
    (CI's TERM may be dumb; COLUMNS, LINES and rich's TTY_* would override)."""
    monkeypatch.setenv("TERM", "xterm-256color")
    for name in ("COLUMNS", "LINES", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "NO_COLOR", "FORCE_COLOR"):
        monkeypatch.delenv(name, raising=False)


def screen_of(text: str, rows: int = 24, cols: int = 80) -> tuple[list[str], bool]:
    """What a terminal shows after ``text``: its non-empty lines, and
    whether the cursor is hidden."""
    screen = pyte.Screen(cols, rows)
    screen.set_mode(pyte.modes.LNM)  # "\n" starts a line, as the tty's onlcr makes it
    pyte.Stream(screen).feed(text)
    return [line.rstrip() for line in screen.display if line.strip()], screen.cursor.hidden


@pytest.mark.parametrize("n, text", [(0, "0B"), (999, "999B"), (1000, "1kB"), (1_500_000, "1.5MB"), (3 * 10**9, "3GB")])
def test_sizes_are_docker_style(n, text):
    assert human_size(n) == text


@pytest.mark.parametrize("speed, text", [(None, ""), (0, "0B/s"), (2_100_000.4, "2.1MB/s"), (999.6, "1kB/s")])
def test_speeds(speed, text):
    assert human_speed(speed) == text


def test_transfer_is_done_over_total_or_done_alone():
    assert transfer(1_500_000, 3_000_000) == "1.5MB/3MB"
    assert transfer(12_000_000, None) == "12MB"


def test_layers_are_named_by_twelve_hex_digits():
    assert layer_line(A, "Pull complete") == "abababababab: Pull complete"
    assert layer_line("archive", "Decompressed") == "archive: Decompressed"


def _work(report: Report) -> None:
    """Two layers: one started, moved and done; one reported as stored."""
    report.line("latest: Pulling from app")
    report.layer(B, "Already exists")
    report.start(A, "Importing", 3_000_000)
    for _ in range(3):
        report.progress(A, 1_000_000, 3_000_000)
    report.layer(A, "Import complete")
    report.result("app:1")


def test_off_a_terminal_one_plain_line_per_layer():
    out = io.StringIO()
    _work(Report(out))
    assert out.getvalue() == ("latest: Pulling from app\ncdcdcdcdcdcd: Already exists\n"
                              "abababababab: Import complete\napp:1\n")


def test_quiet_prints_only_the_result_even_on_a_terminal():
    for out in (io.StringIO(), Terminal()):
        _work(Report(out, quiet=True))
        assert out.getvalue() == "app:1\n"


def test_on_a_terminal_bars_show_sizes_and_a_speed_and_end_as_lines():
    out = Terminal()
    _work(Report(out))
    text = out.getvalue()
    bar_lines = [ESCAPE.sub("", line) for line in re.split(r"[\r\n]", text) if "━" in line]
    assert any(re.fullmatch(r"abababababab: Importing +━+ +3MB/3MB +[0-9.]+[kMG]?B/s *", line) for line in bar_lines), bar_lines
    assert screen_of(text) == (["latest: Pulling from app", "cdcdcdcdcdcd: Already exists",
                                "abababababab: Import complete", "app:1"], False)


def test_an_unfinished_bar_vanishes_when_the_work_fails():
    out = Terminal()
    report = Report(out)
    report.line("latest: Pulling from app")
    report.start(A, "Downloading", 3_000_000)
    report.start(B, "Downloading", 3_000_000)
    report.progress(A, 1_000_000, 3_000_000)
    report.layer(B, "Pull complete")
    with pytest.raises(OSError):
        with report:
            raise OSError("No space left on device")
    assert screen_of(out.getvalue()) == (["latest: Pulling from app", "cdcdcdcdcdcd: Pull complete"], False)
    report.end_progress()  # twice is fine
    print("procview: error: No space left on device", file=out)  # the error line comes next, on a clean line
    assert screen_of(out.getvalue())[0][-1] == "procview: error: No space left on device"


def test_dumb_terminals_and_pipes_get_plain_lines(monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    assert shows_bars(Terminal()) and not shows_bars(io.StringIO())
    monkeypatch.setenv("TERM", "dumb")
    assert not shows_bars(Terminal())


def test_rich_is_imported_only_for_bars():
    code = ("import sys\n"
            "from procview.runtime.images.progress import Report\n"
            "r = Report(sys.stdout); r.start('k', 'Importing', 10); r.progress('k', 10, 10); r.layer('k', 'done')\n"
            "print('rich' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout == "k: done\nFalse\n"
