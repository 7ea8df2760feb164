"""The parser of ``procview run``'s options (runtime.run_command), which
follows click's conventions without importing click."""

import pytest

from procview.runtime import run_command
from procview.runtime.run_command import OPTIONS, HelpRequested, UsageError, parse


def test_defaults_and_the_command_after_image():
    options = parse(["busybox", "ls", "-l", "--rm"], environ={})
    assert options["image"] == "busybox"
    assert options["command"] == ("ls", "-l", "--rm")  # options end at IMAGE
    assert options["remove"] is False and options["use_init"] is True
    assert options["network"] == "bridge" and options["root"] == "/var/lib/procview-runtime"
    assert options["env"] == () and options["memory"] is None


@pytest.mark.parametrize("args", [
    ["-m", "512M", "-it", "-e", "A=1", "-eB=2", "--env=C=3", "busybox", "sh"],
    ["--memory=512M", "-i", "-t", "--env", "A=1", "-e", "B=2", "-e", "C=3", "busybox", "sh"],
    ["-m512M", "-tie", "A=1", "-eB=2", "--env", "C=3", "--", "busybox", "sh"],
])
def test_spellings_click_accepts(args):
    options = parse(args, environ={})
    assert options["memory"] == "512M"
    assert options["interactive"] and options["tty"]
    assert options["env"] == ("A=1", "B=2", "C=3")
    assert (options["image"], options["command"]) == ("busybox", ("sh",))


def test_values_kinds_and_negation():
    options = parse(["--cpu-period", "50000", "--net", "host", "--no-init", "--init", "--no-init", "-v", "/a:/b",
                     "--volume=/c:/d:ro", "busybox"], environ={})
    assert options["cpu_period"] == 50000
    assert options["network"] == "host"
    assert options["use_init"] is False  # the last spelling wins
    assert options["volume"] == ("/a:/b", "/c:/d:ro")


def test_environment_gives_defaults_and_options_override_them():
    environ = {"PROCVIEW_ROOT": "/srv/pv", "PROCVIEW_SECCOMP_SOCKET": "/tmp/s.sock"}
    assert parse(["busybox"], environ=environ)["root"] == "/srv/pv"
    assert parse(["busybox"], environ=environ)["seccomp_socket"] == "/tmp/s.sock"
    assert parse(["--root", "/x", "busybox"], environ=environ)["root"] == "/x"


@pytest.mark.parametrize("args, message", [
    (["--no-such-flag", "busybox"], "no such option: --no-such-flag"),
    (["-x", "busybox"], "no such option: -x"),
    (["-ix", "busybox"], "no such option: -x"),
    (["busybox", "--memory"][1:], "option --memory requires an argument"),
    (["-m"], "option -m requires an argument"),
    (["--cpu-quota", "lots", "busybox"], "invalid value for --cpu-quota: 'lots' is not an integer"),
    (["--rm=yes", "busybox"], "option --rm does not take a value"),
    ([], "missing argument IMAGE"),
    (["--rm", "--"], "missing argument IMAGE"),
])
def test_usage_errors_say_what_is_wrong(args, message):
    with pytest.raises(UsageError) as caught:
        parse(args, environ={})
    assert str(caught.value) == message


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["--rm", "-h", "busybox"]])
def test_help_before_image(args):
    with pytest.raises(HelpRequested):
        parse(args, environ={})


def test_help_after_image_belongs_to_the_command():
    assert parse(["busybox", "--help"], environ={})["command"] == ("--help",)


def test_help_text_lists_every_spelling():
    text = run_command.help_text()
    assert text.startswith("Usage: procview run [OPTIONS] IMAGE [COMMAND]...")
    for option in OPTIONS:
        for name in option.names + ((option.negation,) if option.negation else ()):
            assert name in text, name
    assert "env: PROCVIEW_ROOT" in text


def test_run_path_does_not_import_click():
    import subprocess
    import sys

    code = "import sys; from procview.runtime import run_command; run_command.parse(['busybox']); print('click' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


# What ``procview run`` imports in its own process (as -X importtime lists it
# for ``procview run --rm --no-view busybox true``); the fork server preloads
# the same list.
from procview.runtime.forkserver import RUN_PATH_MODULES as _PRELOADED  # noqa: E402

RUN_PATH_MODULES = ("procview.entry", "procview.runtime.forkserver", *_PRELOADED)
# Each costs milliseconds of a start measured against runc's whole run
# (docs/performance.md): shutil loads the zlib, bz2 and lzma libraries,
# typing compiles every annotation of every NamedTuple, hashlib loads OpenSSL.
NOT_ON_RUN_PATH = ("click", "typing", "dataclasses", "shutil", "glob", "hashlib", "logging", "tempfile", "urllib", "rich")


def test_run_path_imports_none_of_the_expensive_modules():
    import subprocess
    import sys

    code = f"import sys; import {', '.join(RUN_PATH_MODULES)}; print(' '.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert set(NOT_ON_RUN_PATH).isdisjoint(result.stdout.split())


def test_fork_server_client_forwards_the_signals_procview_run_forwards():
    from procview.runtime import forkserver, process

    assert forkserver.FORWARDED_SIGNALS == tuple(int(s) for s in process.FORWARDED_SIGNALS)


def test_fork_server_frames_round_trip():
    from procview.runtime import forkserver

    for kind, value in ((forkserver.RUNNER_PID, 4194304), (forkserver.EXIT_STATUS, 143), (forkserver.DECLINED, -1)):
        data = forkserver.frame(kind, value)
        assert len(data) == forkserver.FRAME and forkserver.unframe(data) == (kind, value)


def test_fork_server_client_imports_only_built_in_modules_and_falls_back(tmp_path):
    """The client runs before every ``procview run``: with nobody listening
    it returns, having loaded nothing but the socket module (socket and
    signal would import enum)."""
    import subprocess
    import sys

    code = ("import sys; before = set(sys.modules); from procview.runtime import forkserver; "
            "forkserver.hand_over(['busybox', 'true']); print(' '.join(sorted(set(sys.modules) - before)))")
    for socket_path in (str(tmp_path / "nobody-listens.sock"), ""):
        env = {"PROCVIEW_FORKSERVER_SOCKET": socket_path, "PATH": "/usr/bin:/bin"}
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
        assert set(result.stdout.split()) <= {"__future__", "procview", "procview.runtime", "procview.runtime.forkserver", "_socket"}, result.stdout


def test_the_default_network_can_come_from_the_environment():
    # bridge, as Docker's, unless PROCVIEW_NETWORK says otherwise; an option beats both.
    assert parse(["busybox", "true"], environ={})["network"] == "bridge"
    assert parse(["busybox", "true"], environ={"PROCVIEW_NETWORK": "none"})["network"] == "none"
    assert parse(["--network", "bridge", "busybox", "true"], environ={"PROCVIEW_NETWORK": "none"})["network"] == "bridge"
