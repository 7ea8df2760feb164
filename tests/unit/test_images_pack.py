"""runtime.images.pack and runtime.changes on real directories.

Layers are made the way the store makes them (``extract_layer`` of a tar
built here), and a container's upper directory the way overlayfs writes it
(whiteouts as character devices 0/0, opaque directories by xattr), so both
need root.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile

import pytest
from conftest import requires_root

from procview.runtime.changes import ADDED, CHANGED, DELETED, Change, changes, excluded, image_listdir, image_lstat
from procview.runtime.images.extract import OPAQUE_XATTR, extract_layer
from procview.runtime.images.pack import write_layer
from test_images_extract import d, f, hard, sym, tar_bytes

pytestmark = requires_root


def pack(directory, skip=None) -> bytes:
    out = io.BytesIO()
    write_layer(str(directory), out, skip)
    return out.getvalue()


def members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), errors="surrogateescape") as tar:
        return tar.getmembers()


def whiteout(path) -> None:
    os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))


def layer(tmp_path, name, *entries):
    dest = tmp_path / name
    extract_layer(io.BytesIO(tar_bytes(*entries)), str(dest))
    return str(dest)


# A file capability (vfs_cap_data, revision 2): cap_net_bind_service permitted.
CAP_NET_BIND_SERVICE = "\x01\x00\x00\x02\x00\x04\x00\x00" + "\x00" * 12
RICH_LAYER = (
    d("etc/", mtime=1_600_000_000),
    f("etc/passwd", b"root:x:0:0::/root:/bin/sh\n", mtime=1_600_000_001),
    f("etc/shadow", b"secret\n", mode=0o640, gid=42),
    d("bin/", mode=0o755),
    f("bin/tool", b"\x7fELF...", mode=0o4755, xattrs={"security.capability": CAP_NET_BIND_SERVICE}),
    hard("bin/tool-alias", "bin/tool"),
    sym("bin/sh", "/bin/tool"),
    f("usr/.wh.games", mtime=1_500_000_000),
    d("var/", mode=0o755),
    f("var/.wh..wh..opq"),
    f("var/new", b"x", uid=1000, gid=1000),
    f("data", b"", xattrs={"user.origin": "image"}),
)


def test_whiteouts_and_opaque_directories_go_back_to_their_tar_form(tmp_path):
    directory = layer(tmp_path, "layer", *RICH_LAYER)
    names = [m.name for m in members(pack(directory))]
    assert "usr/.wh.games" in names and "usr/games" not in names
    # The marker comes right after its directory, before the directory's content.
    assert names.index("var/.wh..wh..opq") == names.index("var") + 1 < names.index("var/new")
    by_name = {m.name: m for m in members(pack(directory))}
    assert by_name["usr/.wh.games"].isreg() and by_name["usr/.wh.games"].mode == 0o600
    assert by_name["bin/tool-alias"].islnk() and by_name["bin/tool-alias"].linkname == "bin/tool"
    assert by_name["bin/tool"].mode == 0o4755
    assert by_name["bin/sh"].issym() and by_name["bin/sh"].linkname == "/bin/tool"
    assert by_name["etc/shadow"].gid == 42 and by_name["var/new"].uid == 1000
    assert by_name["data"].pax_headers.get("SCHILY.xattr.user.origin") == "image"
    assert not any(key.startswith("SCHILY.xattr.trusted.overlay") for m in by_name.values() for key in m.pax_headers)


def test_packing_what_was_unpacked_gives_the_same_bytes(tmp_path):
    first = pack(layer(tmp_path, "one", *RICH_LAYER))
    again = tmp_path / "two"
    extract_layer(io.BytesIO(first), str(again))
    assert pack(again) == first  # so a committed layer keeps its digest through export and import


def test_content_and_metadata_survive_a_round_trip(tmp_path):
    source = layer(tmp_path, "one", *RICH_LAYER)
    copy = tmp_path / "two"
    extract_layer(io.BytesIO(pack(source)), str(copy))
    for name in ("etc/passwd", "bin/tool", "var/new"):
        a, b = os.lstat(os.path.join(source, name)), os.lstat(copy / name)
        assert (a.st_mode, a.st_uid, a.st_gid, int(a.st_mtime)) == (b.st_mode, b.st_uid, b.st_gid, int(b.st_mtime))
        assert open(os.path.join(source, name), "rb").read() == (copy / name).read_bytes()
    assert os.stat(copy / "bin/tool").st_ino == os.stat(copy / "bin/tool-alias").st_ino
    assert os.getxattr(copy / "var", OPAQUE_XATTR) == b"y"
    assert os.getxattr(copy / "bin/tool", "security.capability") == CAP_NET_BIND_SERVICE.encode()
    assert stat.S_ISCHR(os.lstat(copy / "usr/games").st_mode)


def test_skip_leaves_out_a_path_and_what_is_under_it(tmp_path):
    directory = layer(tmp_path, "layer", *RICH_LAYER)
    names = [m.name for m in members(pack(directory, skip=lambda p: p == "etc" or p == "bin/sh"))]
    assert not [n for n in names if n.startswith("etc")] and "bin/sh" not in names and "bin/tool" in names


def test_sockets_are_not_packed(tmp_path):
    import socket

    directory = tmp_path / "upper"
    directory.mkdir()
    (directory / "kept").write_text("x")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(directory / "sock"))
        assert [m.name for m in members(pack(directory))] == ["kept"]


# -- changes -------------------------------------------------------------------------


@pytest.fixture
def image(tmp_path):
    """Two layers: the top one removes /opt/old and makes /srv opaque."""
    bottom = layer(tmp_path, "bottom", d("etc/"), f("etc/passwd", b"root\n"), f("etc/hosts", b"x"), d("opt/"),
                   f("opt/old", b"1"), d("srv/"), f("srv/a", b"a"), d("home/"), f("home/readme", b"r"), d("data/"))
    top = layer(tmp_path, "top", d("opt/"), f("opt/.wh.old"), d("srv/"), f("srv/.wh..wh..opq"), f("srv/b", b"b"),
                f("etc/motd", b"hi"))
    return (bottom, top)


def test_the_merged_image_is_read_from_its_layers(image):
    assert image_lstat(image, "etc/passwd") is not None
    assert image_lstat(image, "etc/motd") is not None
    assert image_lstat(image, "opt/old") is None  # whited out by the top layer
    assert image_lstat(image, "srv/a") is None  # hidden by the opaque /srv
    assert image_lstat(image, "nowhere/x") is None
    assert image_listdir(image, "srv") == {"b"}
    assert image_listdir(image, "etc") == {"passwd", "hosts", "motd"}
    assert image_listdir(image, "opt") == set()


def test_changes_are_docker_diffs_against_the_image(image, tmp_path):
    upper = tmp_path / "upper"
    (upper / "etc").mkdir(parents=True)
    (upper / "etc/passwd").write_text("root\nme\n")  # changed
    (upper / "etc/new.conf").write_text("n")  # added
    whiteout(upper / "etc/motd")  # deleted
    whiteout(upper / "etc/never")  # a whiteout over nothing: no change
    (upper / "home").mkdir()
    os.setxattr(upper / "home", OPAQUE_XATTR, b"y")  # rm -rf /home; mkdir /home; touch /home/fresh
    (upper / "home/fresh").write_text("")
    (upper / "tmp").mkdir()  # added, with its content
    (upper / "tmp/x").write_text("")
    assert [str(c) for c in changes(str(upper), image)] == [
        "C /etc", "D /etc/motd", "A /etc/new.conf", "C /etc/passwd",
        "C /home", "A /home/fresh", "D /home/readme",
        "A /tmp", "A /tmp/x",
    ]


def test_runtime_files_and_volumes_are_not_changes(image, tmp_path):
    upper = tmp_path / "upper"
    (upper / "etc").mkdir(parents=True)
    (upper / "etc/hosts").write_text("mounted over by the runtime")
    (upper / "data/volume").mkdir(parents=True)  # a volume's mount point
    (upper / "data/volume/file").write_text("")
    (upper / "data/kept").write_text("")
    skip = excluded(["/data/volume/"])
    assert changes(str(upper), image, skip) == [
        Change(CHANGED, "/data"), Change(ADDED, "/data/kept"), Change(CHANGED, "/etc"),
    ]
    assert skip("etc/hostname") and skip("etc/resolv.conf") and not skip("etc") and not skip("data")
    assert DELETED == "D"


def test_an_empty_upper_directory_has_no_changes(image, tmp_path):
    (tmp_path / "upper").mkdir()
    assert changes(str(tmp_path / "upper"), image) == []
