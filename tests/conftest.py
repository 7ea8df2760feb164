"""Test-suite rules shared by every test directory.

1. Every test under ``tests/integration/`` is marked ``integration``
   automatically (no need to repeat ``@pytest.mark.integration``).

2. The skip guard. Integration tests need root and a real kernel; on a
   developer's laptop they may skip, but in CI a skipped integration test
   is a test that silently did not run. So when ``CI=true`` or
   ``PROCVIEW_REQUIRE_INTEGRATION=1`` is set, the session fails (with a
   summary line naming the tests) if

   - any ``integration`` test was skipped, or
   - the run selected integration tests (``-m integration``) and none ran.

   In the second case, when pytest itself found nothing to run it already
   exits 5 ("no tests collected"); the guard keeps that code so a wrapper
   (dev/test) can tell "no integration tests exist yet" from a failure.
   An xfail counts as run, not as skipped. To leave a test out on purpose,
   deselect it (``-m "integration and not ..."``) where the run is defined,
   so the omission is visible there; do not skip it.

3. ``requires_root``: a skip marker, with its reason text in
   ``REQUIRES_ROOT``, for tests that need root:
   ``from conftest import requires_root`` then ``@requires_root``.
   (In CI everything runs as root, so the guard never sees it fire.)

4. Default signal dispositions, whoever starts the suite. An ignored
   signal is inherited across fork and exec: under ``nohup`` (SIGHUP) or
   as a background job of a script (SIGINT, SIGQUIT), every daemon,
   fork server and container the tests start would ignore it too, and
   tests that depend on a signal's default action, or on a client that
   differs from its fork server in what it ignores, would pass or fail by
   who started them. So the session begins by restoring the default
   action of every signal it was started ignoring; a test that wants a
   signal ignored says so itself (``preexec_fn``). Python's own ignores
   (SIGPIPE, SIGXFSZ) stay: the interpreter sets them, not the caller,
   and ``subprocess`` restores them in every child.

5. Containers have no network unless a test asks for one. ``procview
   run``'s default network is ``bridge``, as Docker's, and a bridged run
   changes the host's network (a bridge, procview's nftables table, IPv4
   forwarding). So the session sets ``PROCVIEW_NETWORK=none`` (the
   documented way to change the default) for every command it starts;
   the network tests (tests/integration/test_network.py) name their
   network, or unset the variable to check the default, inside a network
   namespace that stands in for the host.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest

INTEGRATION_DIR = Path(__file__).parent / "integration"

REQUIRES_ROOT = "needs root (run: sudo ./dev/test)"
requires_root = pytest.mark.skipif(os.geteuid() != 0, reason=REQUIRES_ROOT)

# What the session saw of integration tests (reset in pytest_configure):
# "ids": node ids of the collected integration tests, "skipped":
# [(nodeid, reason)], "ran": how many reached their test body.
_seen: dict = {"ids": set(), "skipped": [], "ran": 0}


def guard_enabled() -> bool:
    """True in CI, or when a developer asks for CI's strictness."""
    ci = os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")
    return ci or os.environ.get("PROCVIEW_REQUIRE_INTEGRATION", "").strip() == "1"


# Signals the interpreter itself ignores at start-up (see 4. above).
PYTHON_IGNORES = {signal.SIGPIPE, signal.SIGXFSZ}


def restore_default_signal_actions() -> list[signal.Signals]:
    """Give every signal this process was started ignoring its default
    action back (SIGINT: Python's KeyboardInterrupt); returns them."""
    restored = []
    for sig in signal.valid_signals():
        if sig in PYTHON_IGNORES or sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            ignored = signal.getsignal(sig) == signal.SIG_IGN
        except (OSError, ValueError):  # real-time signals Python does not name
            continue
        if ignored:
            signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
            restored.append(sig)
    return restored


# See 5. above: what every command the tests start inherits.
NO_NETWORK_BY_DEFAULT = {"PROCVIEW_NETWORK": "none"}


def pytest_configure(config: pytest.Config) -> None:
    restore_default_signal_actions()
    os.environ.update(NO_NETWORK_BY_DEFAULT)
    config.addinivalue_line(
        "markers", "integration: needs root and the real kernel; must run (not skip) in CI"
    )
    _seen.update(ids=set(), skipped=[], ran=0)


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(INTEGRATION_DIR):
            item.add_marker(pytest.mark.integration)
        if item.get_closest_marker("integration"):
            _seen["ids"].add(item.nodeid)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.nodeid not in _seen["ids"]:
        return
    if report.skipped and not hasattr(report, "wasxfail"):
        _seen["skipped"].append((report.nodeid, _skip_reason(report)))
    elif report.when == "call":
        _seen["ran"] += 1


def _skip_reason(report: pytest.TestReport) -> str:
    # longrepr of a skip is (file, line, "Skipped: reason").
    if isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    return str(report.longrepr)


def _selects_integration(config: pytest.Config) -> bool:
    expr = config.getoption("markexpr", "") or ""
    return bool(re.search(r"\bintegration\b", expr)) and not re.search(
        r"\bnot\s+integration\b", expr
    )


def _guard_problems(config: pytest.Config) -> list[str]:
    if not guard_enabled():
        return []
    problems = [f"{nodeid} skipped ({reason})" for nodeid, reason in _seen["skipped"]]
    if _selects_integration(config) and _seen["ran"] == 0:
        problems.append("-m integration selected, but no integration test ran")
    return problems


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _guard_problems(session.config) and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    problems = _guard_problems(config)
    if not problems:
        return
    terminalreporter.section("procview skip guard", sep="=", red=True, bold=True)
    for problem in problems:
        terminalreporter.write_line(f"  {problem}")
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        verdict = "pytest's exit 5 (no tests collected) stands"
    else:
        verdict = "integration tests must run, not skip, when CI=true or PROCVIEW_REQUIRE_INTEGRATION=1"
    terminalreporter.write_line(
        f"SKIP GUARD FAILED: {len(problems)} problem(s): {verdict}", red=True, bold=True
    )
