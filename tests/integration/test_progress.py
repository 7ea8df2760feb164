"""What procview pull, image import and image export show, as a user sees
it: on a real terminal (a pseudo-terminal, its screen replayed by the pyte
terminal emulator) a bar per layer with sizes and a speed, and a clean
screen at the end; through a pipe one plain line per layer and no escape
codes; with -q nothing but the reference or ID. No containers: only the
store and, for pull, a registry on 127.0.0.1."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess

import pyte
import pytest

from .pty_helpers import run_on_pty
from .registry_helpers import OciLayout, layer_tar, sha256
from .test_pull import registry  # noqa: F401 (fixture)
from .test_run import PROCVIEW

pytestmark = pytest.mark.integration

MiB = 1 << 20
ROWS, COLS = 30, 100
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
SIZES = r"[0-9.]+[kMG]?B/[0-9.]+[kMG]?B"
SPEED = r"[0-9.]+[kMG]?B/s"


@pytest.fixture
def work(tmp_path):
    return str(tmp_path)


def layered_image(path: str, sizes: list[int], gz: bool = False) -> tuple[list[dict], list[str]]:
    """An OCI layout at ``path`` tagged ``v1``: one layer of random bytes
    per size; (its layer descriptors, their diff_ids)."""
    layout = OciLayout(path)
    layers, diff_ids = [], []
    for i, size in enumerate(sizes):
        tar = layer_tar({f"data/{i}": os.urandom(size)})
        blob = gzip.compress(tar, compresslevel=1, mtime=0) if gz else tar
        layers.append(layout.blob(blob, OCI_LAYER + ("+gzip" if gz else "")))
        diff_ids.append(sha256(tar))
    config = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
              "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": layout.blob(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json"),
                "layers": layers}
    layout.tag(layout.blob(json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json"), "v1")
    return layers, diff_ids


def short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]


# The terminal a user has, whatever the environment the tests run in (CI's
# TERM may be dumb; COLUMNS, LINES and rich's TTY_* would override the pty).
AS_A_USER = ["/usr/bin/env", "-u", "COLUMNS", "-u", "LINES", "-u", "TTY_COMPATIBLE", "-u", "TTY_INTERACTIVE",
             "TERM=xterm-256color", PROCVIEW]


def on_terminal(*args: str) -> tuple[int, str, list[str]]:
    """``procview ARGS`` on a pseudo-terminal: (exit code, all it wrote,
    the screen's non-empty lines at the end). The screen must show the
    cursor at the end."""
    code, output = run_on_pty([*AS_A_USER, *args], ROWS, COLS)
    screen = pyte.Screen(COLS, ROWS)
    pyte.Stream(screen).feed(output)
    assert not screen.cursor.hidden, "the cursor was left hidden"
    return code, output, [line.rstrip() for line in screen.display if line.strip()]


def bars(output: str) -> list[str]:
    """Every bar line ever drawn, escape codes removed."""
    return [ESCAPE.sub("", line).rstrip() for line in re.split(r"[\r\n]", output) if "━" in line]


def assert_bar(output: str, key: str, action: str) -> None:
    """A bar of layer ``key`` saying ``action`` was drawn, with done/total sizes and a speed."""
    pattern = rf"{short(key)}: {action} +━+ +{SIZES} +{SPEED}"
    assert any(re.fullmatch(pattern, line) for line in bars(output)), (pattern, bars(output))


def procview(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROCVIEW, *args], capture_output=True, text=True, timeout=300)


# -- image import and export -------------------------------------------------------------


def test_import_and_export_on_a_terminal_show_a_bar_per_layer_and_end_clean(work):
    layers, diff_ids = layered_image(os.path.join(work, "layout"), [6 * MiB, 4 * MiB, 3 * MiB])
    root = os.path.join(work, "store")

    code, output, screen = on_terminal("image", "import", "--root", root, os.path.join(work, "layout"), "--name", "big:1")
    assert code == 0, output
    for layer in layers:  # an OCI layout's layers are named by their blob digests, as pull's
        assert_bar(output, layer["digest"], "Importing")
    assert screen[:-1] == [f"{short(layer['digest'])}: Import complete" for layer in layers], screen
    assert re.fullmatch(r"Loaded image: big:1 \([0-9a-f]{12}\)", screen[-1]), screen

    archive = os.path.join(work, "big.tar")
    code, output, screen = on_terminal("image", "export", "--root", root, "big:1", archive)
    assert code == 0, output
    for diff_id in diff_ids:  # the store names its layers by diff_id
        assert_bar(output, diff_id, "Exporting")
    assert screen[:-1] == [f"{short(diff_id)}: Export complete" for diff_id in diff_ids], screen
    assert re.fullmatch(r"Exported image: big:1 \([0-9a-f]{12}\)", screen[-1]), screen
    assert procview("image", "import", "--root", os.path.join(work, "again"), archive).returncode == 0


def test_import_and_export_without_a_terminal_print_a_line_per_layer(work):
    layers, diff_ids = layered_image(os.path.join(work, "layout"), [2 * MiB, 1 * MiB])
    root = os.path.join(work, "store")

    imported = procview("image", "import", "--root", root, os.path.join(work, "layout"), "--name", "small:1")
    assert imported.returncode == 0, imported.stderr
    lines = imported.stdout.splitlines()
    assert lines[:-1] == [f"{short(layer['digest'])}: Import complete" for layer in layers]
    assert lines[-1].startswith("Loaded image: small:1 (") and imported.stderr == ""

    archive = os.path.join(work, "small.tar")
    exported = procview("image", "export", "--root", root, "small:1", archive)
    assert exported.returncode == 0, exported.stderr
    lines = exported.stdout.splitlines()
    assert lines[:-1] == [f"{short(diff_id)}: Export complete" for diff_id in diff_ids]
    assert lines[-1].startswith("Exported image: small:1 (") and exported.stderr == ""

    with open(os.path.join(work, "piped.tar"), "wb") as out:  # FILE "-": the lines go to stderr
        piped = subprocess.run([PROCVIEW, "image", "export", "--root", root, "small:1", "-"], stdout=out,
                               stderr=subprocess.PIPE, text=True, timeout=300)
    assert piped.returncode == 0 and piped.stderr == exported.stdout

    for result in (imported, exported, piped):
        assert "\x1b" not in (result.stdout or "") + result.stderr and "\r" not in result.stderr


def test_quiet_import_and_export_print_only_the_name_and_the_id(work):
    layered_image(os.path.join(work, "layout"), [1 * MiB])
    root = os.path.join(work, "store")
    for run in (procview, on_terminal):
        imported = run("image", "import", "-q", "--root", root, os.path.join(work, "layout"), "--name", "quiet:1")
        exported = run("image", "export", "-q", "--root", root, "quiet:1", os.path.join(work, "quiet.tar"))
        if run is procview:
            assert (imported.returncode, imported.stdout, imported.stderr) == (0, "quiet:1\n", "")
            assert exported.returncode == 0 and exported.stderr == ""
            assert re.fullmatch(r"sha256:[0-9a-f]{64}\n", exported.stdout), exported.stdout
        else:  # on a terminal too: no bar, no escape code, only the result
            assert imported[0] == 0 and imported[1] == "quiet:1\r\n"
            assert exported[0] == 0 and re.fullmatch(r"sha256:[0-9a-f]{64}\r\n", exported[1]), exported[1]


def test_a_failure_midway_leaves_a_clean_terminal_and_one_error_line(work):
    path = os.path.join(work, "layout")
    layers, _ = layered_image(path, [3 * MiB, 3 * MiB])
    blob = os.path.join(path, "blobs", "sha256", layers[1]["digest"].removeprefix("sha256:"))
    with open(blob, "r+b") as f:  # same size, other bytes: found out only once read
        f.seek(2 * MiB)
        f.write(b"corrupt")
    code, output, screen = on_terminal("image", "import", "--root", os.path.join(work, "store"), path)
    assert code == 125, output
    assert screen[0] == f"{short(layers[0]['digest'])}: Import complete"
    error = "".join(screen[1:])  # one line, wrapped by the terminal
    assert error.startswith("procview: error: ") and "does not match its digest" in error and "━" not in error, screen
    assert output.rstrip("\r\n").endswith(error[-20:]) and output.count("procview: error: ") == 1
    assert_bar(output, layers[0]["digest"], "Importing")


def test_ctrl_c_midway_leaves_a_clean_terminal(work):
    path = os.path.join(work, "layout")
    layered_image(path, [100 * MiB])  # long enough that ^C, typed at the first bar, comes before the end
    code, output = run_on_pty([*AS_A_USER, "image", "import", "--root", os.path.join(work, "store"), path], ROWS, COLS,
                              reply=(b"Importing", b"\x03"))
    screen = pyte.Screen(COLS, ROWS)
    pyte.Stream(screen).feed(output)
    assert code == 1, output  # click's "Aborted!"
    assert [line.rstrip() for line in screen.display if line.strip()] == ["Aborted!"] and not screen.cursor.hidden
    assert os.listdir(os.path.join(work, "store", "images")) == []


# -- pull ----------------------------------------------------------------------------------


def test_pull_on_a_terminal_shows_download_and_extraction_bars(registry, work):
    path = os.path.join(work, "layout")
    layers, _ = layered_image(path, [5 * MiB, 3 * MiB], gz=True)
    registry.push(f"oci:{path}:v1", "img:v1")
    reference = f"{registry.address}/img:v1"

    code, output, screen = on_terminal("pull", "--root", os.path.join(work, "store"), reference)
    assert code == 0, output
    for layer in layers:
        assert_bar(output, layer["digest"], "Download complete")
        assert_bar(output, layer["digest"], "Extracting")
    assert screen[0] == "v1: Pulling from img"
    assert sorted(screen[1:3]) == sorted(f"{short(layer['digest'])}: Pull complete" for layer in layers)
    assert screen[3].startswith("Digest: sha256:")
    assert screen[4:] == [f"Status: Downloaded newer image for {reference}", reference]

    plain = procview("pull", "--root", os.path.join(work, "plain"), reference)
    assert plain.returncode == 0 and "\x1b" not in plain.stdout + plain.stderr
    assert plain.stdout.splitlines() == screen  # the screen ends as the plain output is

    code, output, screen = on_terminal("pull", "-q", "--root", os.path.join(work, "quiet"), reference)
    assert code == 0 and output == f"{reference}\r\n"


# -- push ------------------------------------------------------------------------------------


def test_push_on_a_terminal_shows_a_pushing_bar_per_layer(registry, work):
    path = os.path.join(work, "layout")
    layered_image(path, [4 * MiB, 2 * MiB])
    root = os.path.join(work, "store")
    reference = f"{registry.address}/img:v1"
    assert procview("image", "import", "--root", root, path, "--name", reference).returncode == 0

    code, output, screen = on_terminal("push", "--root", root, reference)
    assert code == 0, output
    pushed = [line.split(":")[0] for line in screen if line.endswith(": Pushed")]
    assert len(pushed) == 2, screen
    for key in pushed:
        assert any(re.fullmatch(rf"{key}: Pushing +━+ +{SIZES} +{SPEED}", line) for line in bars(output)), bars(output)
    assert screen[0] == f"The push refers to repository [{registry.address}/img]"
    assert re.fullmatch(r"v1: digest: sha256:[0-9a-f]{64} size: \d+", screen[-1]), screen

    again = procview("push", "--root", root, reference)  # no terminal: plain lines, every layer there now
    assert again.returncode == 0 and "\x1b" not in again.stdout + again.stderr
    assert sorted(line for line in again.stdout.splitlines() if "Layer already exists" in line) == \
        sorted(f"{key}: Layer already exists" for key in pushed)
