"""The suite passes whoever starts it: here, part of it is started the way
``nohup`` starts it (SIGHUP ignored), and as a script's background job
under ``nohup`` (SIGHUP, SIGINT and SIGQUIT ignored; tests/conftest.py,
4.). The fork-server tests are the ones that care: a client that ignores
a signal its server does not is declined, so a suite that passed its own
ignores on to the server and clients it starts would see the server
accept what it should decline."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from .serve_helpers import REPO

STARTERS = {
    "nohup": (signal.SIGHUP,),
    "nohup, in the background": (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT),
}


@pytest.mark.parametrize("starter", STARTERS)
def test_the_fork_server_tests_pass_whoever_starts_them(starter):
    def ignore_as_the_starter_does():
        for sig in STARTERS[starter]:
            signal.signal(sig, signal.SIG_IGN)

    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:hypothesispytest",
            "tests/integration/test_forkserver.py", "-k", "differently or terminal or another_procview"]
    result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
                            preexec_fn=ignore_as_the_starter_does)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and " deselected" in result.stdout, result.stdout[-2000:]
