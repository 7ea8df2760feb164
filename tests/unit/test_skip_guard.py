"""The skip guard of tests/conftest.py, run on small throw-away suites.

Each case lays out a suite like ours (tests/conftest.py = our real conftest,
tests/integration/, tests/unit/) in a temporary directory and runs pytest on
it in a subprocess, with the guard's environment variables set or cleared.
"""

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

OUR_CONFTEST = Path(__file__).parents[1] / "conftest.py"

PASSING = "def test_ok():\n    assert True\n"
SKIPPING = "import pytest\n\ndef test_needs_kernel():\n    pytest.skip('no cgroup here')\n"
# The inner runs need no hypothesis; its plugin costs ~1 s per start.
FAST = ("-p", "no:hypothesispytest", "-p", "no:cacheprovider")

SKIPIF = "import pytest\n\n@pytest.mark.skipif(True, reason='not root')\ndef test_needs_root():\n    pass\n"


@pytest.fixture
def suite(pytester: pytest.Pytester):
    """A function (files={relative path: text}) that writes a suite."""

    def write(files: dict[str, str]) -> pytest.Pytester:
        tests = pytester.path / "tests"
        (tests / "integration").mkdir(parents=True)
        (tests / "unit").mkdir()
        (tests / "conftest.py").write_text(OUR_CONFTEST.read_text())
        for name, text in files.items():
            (pytester.path / name).write_text(text)
        return pytester

    return write


@pytest.fixture
def guard_on(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("PROCVIEW_REQUIRE_INTEGRATION", "1")


@pytest.fixture
def guard_off(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("PROCVIEW_REQUIRE_INTEGRATION", raising=False)


def test_skipped_integration_test_fails_the_run_when_required(suite, guard_on):
    result = suite({"tests/integration/test_k.py": SKIPPING}).runpytest_subprocess(*FAST, "tests")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*tests/integration/test_k.py::test_needs_kernel skipped (no cgroup here)",
            "SKIP GUARD FAILED: 1 problem(s)*",
        ]
    )


def test_skipif_marked_integration_test_also_fails_the_run(suite, monkeypatch, guard_off):
    monkeypatch.setenv("CI", "true")
    result = suite({"tests/integration/test_r.py": SKIPIF}).runpytest_subprocess(*FAST, "tests")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*test_needs_root skipped (not root)"])


def test_skipped_integration_test_passes_when_not_required(suite, guard_off):
    result = suite({"tests/integration/test_k.py": SKIPPING}).runpytest_subprocess(*FAST, "tests")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(skipped=1)
    assert "SKIP GUARD" not in result.stdout.str()


def test_skipped_unit_test_is_not_the_guards_business(suite, guard_on):
    result = suite({"tests/unit/test_u.py": SKIPPING}).runpytest_subprocess(*FAST, "tests")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(skipped=1)


def test_tests_under_integration_are_marked_automatically(suite, guard_on):
    files = {"tests/integration/test_i.py": PASSING, "tests/unit/test_u.py": PASSING}
    result = suite(files).runpytest_subprocess(*FAST, "tests", "-v", "-m", "integration")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1, deselected=1)
    result.stdout.fnmatch_lines(["*tests/integration/test_i.py::test_ok PASSED*"])


def test_integration_selection_that_runs_nothing_fails_when_required(suite, guard_on):
    # An explicitly marked integration test outside tests/integration that
    # skips, and no other: nothing ran, and one skipped.
    marked = "import pytest\n\n@pytest.mark.integration\n" + SKIPPING.split("\n\n", 1)[1]
    result = suite({"tests/unit/test_m.py": marked}).runpytest_subprocess(*FAST, "tests", "-m", "integration")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        ["*-m integration selected, but no integration test ran", "SKIP GUARD FAILED: 2 problem(s)*"]
    )


def test_no_integration_tests_at_all_keeps_pytests_exit_5(suite, guard_on):
    result = suite({"tests/unit/test_u.py": PASSING}).runpytest_subprocess(*FAST, "tests", "-m", "integration")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    result.stdout.fnmatch_lines(["*-m integration selected, but no integration test ran"])
