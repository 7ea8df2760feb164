"""What procview pull prints (runtime/images/pull.py's Report), and the
plain-HTTP rule applied before any connection (runtime/images/registry.py)."""

import io

import pytest

from procview.runtime.images.pull import Report
from procview.runtime.images.reference import parse
from procview.runtime.images.registry import Registry, RegistryError

LAYER = "sha256:" + "ab" * 32
DIGEST = "sha256:" + "cd" * 32


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_plain_output_is_one_line_per_layer_then_digest_and_status():
    out = io.StringIO()
    report = Report(out)
    report.line("latest: Pulling from library/busybox")
    report.progress(LAYER, 100, 200)  # nothing when not on a terminal
    report.layer(LAYER, "Pull complete")
    report.end_progress()
    report.done(DIGEST, parse("busybox"), fresh=True)
    assert out.getvalue().splitlines() == [
        "latest: Pulling from library/busybox",
        "abababababab: Pull complete",
        f"Digest: {DIGEST}",
        "Status: Downloaded newer image for busybox:latest",
        "docker.io/library/busybox:latest",
    ]


def test_quiet_output_is_the_reference_only():
    out = io.StringIO()
    report = Report(out, quiet=True)
    report.line("latest: Pulling from x")
    report.layer(LAYER, "Pull complete")
    report.done(DIGEST, parse(f"127.0.0.1:5000/app@{DIGEST}"), fresh=False)
    assert out.getvalue() == f"127.0.0.1:5000/app@{DIGEST}\n"


def test_terminal_output_has_a_bar_per_layer_and_ends_with_their_lines(monkeypatch):
    monkeypatch.setenv("TERM", "xterm-256color")  # CI's may be dumb
    out = Terminal()
    report = Report(out)
    report.progress(LAYER, 0, 3_000_000)
    report.progress(LAYER, 1_500_000, 3_000_000)
    report.status(LAYER, "Download complete")
    report.start(LAYER, "Extracting", 3_000_000)
    report.progress(LAYER, 3_000_000, 3_000_000)
    report.layer(LAYER, "Pull complete")
    report.done(DIGEST, parse("busybox"), fresh=True)
    text = out.getvalue()
    assert "abababababab: Extracting" in text and "3MB/3MB" in text
    assert "\x1b[2Kabababababab: Pull complete\n" in text
    bars, _, after = text.rpartition("\x1b[?25h")  # the cursor is back once the bars are gone
    assert bars.count("\x1b[?25l") == 1
    assert after == f"\rDigest: {DIGEST}\nStatus: Downloaded newer image for busybox:latest\ndocker.io/library/busybox:latest\n"


@pytest.mark.parametrize("registry", ["192.0.2.1:5000", "registry.example", "10.0.0.1"])
def test_plain_http_is_refused_before_connecting(registry):
    with pytest.raises(RegistryError, match="plain HTTP is allowed only to loopback registries"):
        Registry(registry, "app", plain_http=True)  # no __enter__: nothing connects
    Registry(registry, "app", plain_http=True, insecure=[registry])  # allowed when named
