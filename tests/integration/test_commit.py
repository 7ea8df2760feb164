"""diff, commit and image export with real containers: a container changes
its file system (adds, modifies, deletes a file of the image, replaces a
directory, writes to a volume), and the round trip diff -> commit ->
export -> (skopeo inspect) -> import -> run shows exactly those changes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from .test_lifecycle import detach, pv, records, root, wait_for  # noqa: F401 (fixture)
from .test_run import PROCVIEW, state_root  # noqa: F401 (fixture)

CHANGES = (
    "echo new > /added"
    " && echo more >> /etc/passwd"
    " && rm /etc/group"
    " && rm -rf /usr/sbin && mkdir /usr/sbin && echo only > /usr/sbin/only"
    " && echo volume > /vol/file"
    " && echo kept > /etc/hostname-copy && echo ignored >> /etc/hosts"
    " && mv /var /var-renamed"  # a lower directory renamed: copied up whole (redirect_dir=off)
)


def image(root, command, *args):
    """``procview image COMMAND --root ROOT ARGS...``"""
    return subprocess.run([PROCVIEW, "image", command, "--root", root, *args], capture_output=True, text=True, timeout=300)


def ended(root, name):
    def check():
        (record,) = [r for r in records(root) if r["name"] == name]
        return record if record["phase"] not in ("Pending", "Running") else None

    return wait_for(check, f"{name} to end")


@pytest.fixture
def changed(root, tmp_path):
    """A stopped container that made CHANGES, and its volume."""
    volume = tmp_path / "volume"
    volume.mkdir()
    detach(root, "--name", "changer", "-v", f"{volume}:/vol", "busybox", "sh", "-c", CHANGES)
    record = ended(root, "changer")
    assert record["exit_code"] == 0, pv(root, "logs", "changer").stdout
    return volume


def test_diff_lists_the_changes_against_the_image(root, changed):
    result = pv(root, "diff", "changer")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for expected in ("A /added", "C /etc", "C /etc/passwd", "D /etc/group", "A /etc/hostname-copy",
                     "C /usr/sbin", "A /usr/sbin/only", "D /usr/sbin/chroot", "D /var", "A /var-renamed"):
        assert expected in lines, f"{expected!r} missing from:\n{result.stdout}"
    assert not [line for line in lines if "/vol" in line or line.endswith(("/etc/hosts", "/etc/hostname", "/etc/resolv.conf"))], result.stdout
    assert lines == sorted(lines, key=lambda line: line[2:])


def test_commit_export_import_run_round_trip(root, changed, tmp_path):
    commit = pv(root, "commit", "changer", "snapshot:1")
    assert commit.returncode == 0, commit.stderr
    image_id = commit.stdout.strip()
    archive = tmp_path / "snapshot.tar"
    export = image(root, "export", "snapshot:1", str(archive))
    assert export.returncode == 0 and archive.is_file(), export.stderr
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]

    # Another tool reads it: skopeo's docker-archive transport.
    inspect = subprocess.run([shutil.which("skopeo") or "skopeo", "inspect", f"docker-archive:{archive}"],
                             capture_output=True, text=True, timeout=120)
    assert inspect.returncode == 0, inspect.stderr
    skopeo_layers = json.loads(inspect.stdout)["Layers"]
    assert len(skopeo_layers) == 2  # busybox, and the container's changes
    # And copies it (reading every layer) to an OCI layout, which our import
    # reads back into the very layers we have: the digests were true.
    layers_before = sorted(os.listdir(os.path.join(root, "layers")))
    copy = subprocess.run([shutil.which("skopeo") or "skopeo", "copy", "--quiet", f"docker-archive:{archive}",
                           f"oci:{tmp_path / 'oci'}:copy"], capture_output=True, text=True, timeout=300)
    assert copy.returncode == 0, copy.stderr
    assert image(root, "import", str(tmp_path / "oci"), "--name", "via-skopeo:1").returncode == 0
    assert sorted(os.listdir(os.path.join(root, "layers"))) == layers_before

    assert pv(root, "rm", "changer").returncode == 0
    assert image(root, "rm", "snapshot:1").returncode == 0
    imported = image(root, "import", str(archive))
    assert imported.returncode == 0 and "snapshot:1" in imported.stdout, imported.stderr
    # Canonical layers: the same bytes again, so the same image ID.
    assert image_id[len("sha256:"):][:12] in imported.stdout, (image_id, imported.stdout)

    seen = pv(root, "run", "--rm", "--no-view", "snapshot:1", "sh", "-c",
              "cat /added; tail -n1 /etc/passwd; ls /etc/group 2>&1; ls /usr/sbin; ls /vol 2>&1;"
              " cat /etc/hostname-copy; grep -c ignored /etc/hosts; ls -d /var /var-renamed 2>&1")
    assert seen.stdout.splitlines() == [
        "new", "more", "ls: /etc/group: No such file or directory", "only",
        "ls: /vol: No such file or directory", "kept", "0",
        "ls: /var: No such file or directory", "/var-renamed",
    ], seen.stdout + seen.stderr


def test_the_committed_image_runs_what_the_container_ran(root, tmp_path):
    detach(root, "--name", "greeter", "-e", "GREETING=hello", "busybox", "sh", "-c", "echo $GREETING from $(hostname)")
    ended(root, "greeter")
    assert pv(root, "commit", "greeter", "greeter:latest").returncode == 0
    result = pv(root, "run", "--rm", "--no-view", "--hostname", "box", "greeter")
    assert result.returncode == 0 and result.stdout == "hello from box\n", result.stdout + result.stderr


def test_writable_layer_survives_a_restart_and_goes_with_rm(root):
    detach(root, "--name", "counter", "--restart", "on-failure:2", "busybox", "sh", "-c",
           "echo x >> /runs; test $(wc -l < /runs) -ge 3")
    record = ended(root, "counter")
    assert record["restart_count"] == 2 and record["exit_code"] == 0, record
    assert "A /runs" in pv(root, "diff", "counter").stdout
    upper = os.path.join(root, "records", record["id"], "upper")
    assert open(os.path.join(upper, "runs")).read() == "x\nx\nx\n"
    assert pv(root, "rm", "counter").returncode == 0
    assert not os.path.exists(upper)


def test_export_to_standard_output(root, tmp_path):
    archive = tmp_path / "busybox.tar"
    with open(archive, "wb") as out:
        result = subprocess.run([PROCVIEW, "image", "export", "--root", root, "busybox", "-"], stdout=out,
                                stderr=subprocess.PIPE, timeout=300)
    assert result.returncode == 0, result.stderr
    listing = subprocess.run(["tar", "tf", str(archive)], capture_output=True, text=True, check=True).stdout.split()
    assert "manifest.json" in listing and "repositories" in listing and any(n.endswith("/layer.tar") for n in listing)
    # The built-in layer is canonical: exported, it keeps its digest.
    (entry,) = json.loads(subprocess.run(["tar", "xOf", str(archive), "manifest.json"], capture_output=True,
                                         check=True).stdout)
    layers = os.listdir(os.path.join(root, "layers"))
    assert [entry["Layers"][0].split("/")[0]] == layers


def test_bad_input(root, tmp_path):
    assert pv(root, "diff", "nobody").returncode == 125
    assert "no such container" in pv(root, "commit", "nobody", "x:1").stderr
    detach(root, "--name", "plain", "busybox", "true")
    ended(root, "plain")
    bad = pv(root, "commit", "plain", "Not A Name")
    assert bad.returncode == 125 and "invalid image name" in bad.stderr and "Traceback" not in bad.stderr
    missing = image(root, "export", "nothing:here", str(tmp_path / "x.tar"))
    assert missing.returncode == 125 and "no such image" in missing.stderr
    nowhere = image(root, "export", "busybox", str(tmp_path / "no/such/dir/x.tar"))
    assert nowhere.returncode == 125 and "Traceback" not in nowhere.stderr
    assert not os.path.exists(tmp_path / "x.tar")


def test_a_stopped_containers_layers_outlive_its_image(root, tmp_path):
    """image rm of the image a stopped container was made from keeps the
    layers the container needs (diff, commit, restart); rm of the container
    lets prune reclaim them."""
    archive = tmp_path / "base.tar"
    assert image(root, "export", "busybox", str(archive)).returncode == 0
    assert image(root, "import", str(archive), "--name", "base:1").returncode == 0
    base_layers = set(os.listdir(os.path.join(root, "layers")))
    detach(root, "--name", "child", "base:1", "sh", "-c", "echo hi > /note")
    ended(root, "child")
    assert image(root, "rm", "base:1").returncode == 0
    assert image(root, "rm", "busybox").returncode == 0
    assert set(os.listdir(os.path.join(root, "layers"))) == base_layers  # kept for the container
    assert pv(root, "diff", "child").stdout.splitlines() == ["A /note"]
    assert pv(root, "commit", "child", "child:1").returncode == 0
    seen = pv(root, "run", "--rm", "--no-view", "child:1", "cat", "/note")
    assert seen.stdout == "hi\n", seen.stderr
    assert pv(root, "rm", "child").returncode == 0
    assert image(root, "rm", "child:1").returncode == 0
    assert pv(root, "prune").returncode == 0
    assert os.listdir(os.path.join(root, "layers")) == []
