"""Imported image layers under a real overlayfs: do the whiteouts and
opaque directories the extractor writes mean, to the kernel, what the
layer tars said?

Archives are docker save tars built here with tarfile. Each check mounts
overlayfs with the image's layer directories as lowerdir (top layer first),
either in a child process in a private mount namespace
(``unshare --mount --propagation private``), which reports the merged tree
as JSON, or in this process through ``procview.runtime.linux.Linux().mount`` with an
unmount in ``finally``. Either way, no mount is left behind
(``/proc/self/mountinfo`` is checked).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile

import pytest

from procview.runtime.images import Image, ImageStore
from procview.runtime.images.busybox import find_static_busybox
from procview.runtime.linux import MNT_DETACH, Linux

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (overlayfs mounts, trusted.* xattrs)")

# -- layers --------------------------------------------------------------------------

# The layer a lower layer's a/b, a/c, d/x, d/y ...
LOWER = {"a/": None, "a/b": b"lower b\n", "a/c": b"lower c\n", "d/": None, "d/x": b"x\n", "d/y": b"y\n",
         # image-spec layer.md's example, twice (opaque and explicit-whiteout forms)
         "opq/a/": None, "opq/a/b/": None, "opq/a/b/c/": None, "opq/a/b/c/bar": b"bar\n",
         "exp/a/": None, "exp/a/b/": None, "exp/a/b/c/": None, "exp/a/b/c/bar": b"bar\n",
         "keep": b"keep\n"}
# ... and an upper layer: a/.wh.b, an opaque d/ (marker after its sibling:
# it applies regardless of order) with its own z, and the spec's example.
UPPER = {"a/": None, "a/.wh.b": b"", "d/": None, "d/z": b"z\n", "d/.wh..wh..opq": b"",
         "opq/a/": None, "opq/a/.wh..wh..opq": b"", "opq/a/b/": None, "opq/a/b/c/": None, "opq/a/b/c/foo": b"foo\n",
         "exp/a/": None, "exp/a/.wh.b": b"", "exp/a/b/": None, "exp/a/b/c/": None, "exp/a/b/c/foo": b"foo\n"}
# A third layer brings a/b back and hides a whole lower directory.
READD = {"a/": None, "a/b": b"new b\n", ".wh.d": b""}


def layer(files: dict[str, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            ti = tarfile.TarInfo(name.rstrip("/"))
            ti.mtime = 1_700_000_000
            if data is None:
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(ti)
            else:
                ti.size, ti.mode = len(data), 0o644
                tar.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def docker_save(path, tag: str, layers: list[bytes]) -> str:
    diff_ids = ["sha256:" + hashlib.sha256(x).hexdigest() for x in layers]
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    members = {config_name: config}
    names = []
    for i, data in enumerate(layers):
        name = f"{hashlib.sha256(data + bytes([i])).hexdigest()}/layer.tar"
        members[name] = data
        names.append(name)
    members["manifest.json"] = json.dumps([{"Config": config_name, "RepoTags": [tag], "Layers": names}]).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
    return str(path)


# -- mounting ------------------------------------------------------------------------

_CHILD = r"""
import json, os, subprocess, sys
from procview.runtime.linux import Linux
lowers, upper, work, merged, command = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5])
Linux().mount("overlay", merged, "overlay", 0, f"lowerdir={lowers},upperdir={upper},workdir={work}")
tree = {}
for dirpath, dirnames, filenames in os.walk(merged):
    for name in dirnames + filenames:
        path = os.path.join(dirpath, name)
        rel = os.path.relpath(path, merged)
        if os.path.islink(path):
            tree[rel] = "-> " + os.readlink(path)
        elif os.path.isdir(path):
            tree[rel] = "dir"
        else:
            tree[rel] = open(path, "rb").read().decode(errors="replace")
result = {"tree": tree}
if command:
    out = subprocess.run(["chroot", merged] + command, capture_output=True, text=True, timeout=60)
    result["run"] = [out.returncode, out.stdout, out.stderr]
print(json.dumps(result))
"""


def _mounted(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def merged_view(image: Image, tmp_path, command: list[str] | None = None) -> dict:
    """The image's merged tree as overlayfs shows it, from a child in a
    private mount namespace (its mount dies with it)."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux)")
    upper, work, merged = (tmp_path / n for n in ("upper", "work", "merged"))
    for d in (upper, work, merged):
        d.mkdir()
    lowers = ":".join(reversed(image.layers))  # overlayfs wants the top layer first
    out = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", _CHILD,
         lowers, str(upper), str(work), str(merged), json.dumps(command)],
        capture_output=True, text=True, timeout=120, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    )
    assert out.returncode == 0, out.stderr
    assert not _mounted(str(merged)), "the child's mount leaked into this namespace"
    return json.loads(out.stdout)


def top_level(tree: dict, prefix: str) -> list[str]:
    return sorted(k[len(prefix):] for k in tree if k.startswith(prefix) and "/" not in k[len(prefix):])


@pytest.fixture
def store(tmp_path):
    return ImageStore(str(tmp_path / "state"))


# -- the checks ----------------------------------------------------------------------


def test_whiteouts_and_opaque_directories_under_overlayfs(store, tmp_path):
    img = store.import_path(docker_save(tmp_path / "two.tar", "two:1", [layer(LOWER), layer(UPPER)]))
    assert len(img.layers) == 2
    tree = merged_view(img, tmp_path)["tree"]
    # a/.wh.b hides the lower a/b; a/c shows through
    assert top_level(tree, "a/") == ["c"]
    assert tree["a/c"] == "lower c\n"
    # d/ is opaque: only the upper layer's z
    assert top_level(tree, "d/") == ["z"]
    # image-spec layer.md: a/b/c/bar -> a/b/c/foo, in both forms
    for form in ("opq", "exp"):
        assert tree[f"{form}/a/b/c/foo"] == "foo\n"
        assert f"{form}/a/b/c/bar" not in tree
    assert tree["keep"] == "keep\n"
    # no whiteout marker is visible as a file
    assert not any(".wh." in path for path in tree)


def test_a_later_layer_brings_back_a_whited_out_file(store, tmp_path):
    img = store.import_path(docker_save(tmp_path / "three.tar", "three:1", [layer(LOWER), layer(UPPER), layer(READD)]))
    tree = merged_view(img, tmp_path)["tree"]
    assert tree["a/b"] == "new b\n"
    assert top_level(tree, "a/") == ["b", "c"]
    assert "d" not in tree and not any(k.startswith("d/") for k in tree)


def test_shared_layers_mount_in_two_images(store, tmp_path):
    two = store.import_path(docker_save(tmp_path / "two.tar", "two:1", [layer(LOWER), layer(UPPER)]))
    one = store.import_path(docker_save(tmp_path / "one.tar", "one:1", [layer(LOWER)]))
    assert one.layers[0] == two.layers[0]
    (tmp_path / "one").mkdir()
    tree = merged_view(one, tmp_path / "one")["tree"]
    assert top_level(tree, "a/") == ["b", "c"] and top_level(tree, "d/") == ["x", "y"]


def test_direct_mount_is_cleaned_up(store, tmp_path):
    """Mounted in this process (runtime.linux), unmounted in finally."""
    img = store.import_path(docker_save(tmp_path / "two.tar", "two:1", [layer(LOWER), layer(UPPER)]))
    merged = tmp_path / "merged"
    merged.mkdir()
    linux = Linux()
    # Two lower layers and no upper: a read-only overlay.
    linux.mount("overlay", str(merged), "overlay", 0, f"lowerdir={img.layers[1]}:{img.layers[0]}")
    try:
        assert _mounted(str(merged))
        assert sorted(os.listdir(merged / "a")) == ["c"]
        assert sorted(os.listdir(merged / "d")) == ["z"]
        assert (merged / "opq/a/b/c/foo").read_text() == "foo\n"
        with pytest.raises(OSError):
            (merged / "new").write_text("read-only")
    finally:
        linux.umount2(str(merged), MNT_DETACH)
    assert not _mounted(str(merged))


def test_builtin_busybox_runs_under_overlayfs(store, tmp_path):
    if find_static_busybox() is None:
        pytest.skip("needs a static busybox (apt-get install busybox-static)")
    if shutil.which("chroot") is None:
        pytest.skip("needs chroot (coreutils)")
    img = store.ensure_busybox()
    result = merged_view(img, tmp_path, ["/bin/sh", "-c", "echo hello from $(uname -s); readlink /usr/bin/free; id -u; ls -ld /tmp"])
    code, stdout, stderr = result["run"]
    assert code == 0, stderr
    lines = stdout.splitlines()
    assert lines[:3] == ["hello from Linux", "/bin/busybox", "0"]
    assert lines[3].startswith("drwxrwxrwt")
