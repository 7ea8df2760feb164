"""runtime.images.extract: layer tars unpacked into real directories.

Every tar is built here with the tarfile module. Each attack test extracts
into ``tmp_path/dest`` next to an ``outside`` directory (holding a
``victim`` file) and checks that nothing outside ``dest`` changed. Tests
that need root (owners, device nodes, ``trusted.*`` xattrs) are marked.

Safety of the suite itself: these tests run as root, so an attack that
succeeded would write wherever it points. Every write-through target is
therefore ``outside`` (by relative or absolute path), never a host path
such as ``/etc`` or ``/``: a broken extractor must fail the tests, not
damage the machine running them. The only host path used is the target of
a *hardlink* (``/etc/passwd``), which at worst would gain a link.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile

import pytest
from conftest import requires_root
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from procview.runtime.images.extract import (
    OPAQUE_XATTR,
    CorruptLayer,
    LayerError,
    extract_layer,
    layer_path,
)

# -- building tars -------------------------------------------------------------------


def entry(name, kind=tarfile.REGTYPE, data=b"", mode=0o644, linkname="", uid=0, gid=0, mtime=1_700_000_000,
          major=0, minor=0, xattrs=None):
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.uid, ti.gid, ti.mtime = kind, mode, uid, gid, mtime
    ti.linkname = linkname
    ti.devmajor, ti.devminor = major, minor
    if xattrs:
        ti.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in xattrs.items()}
    if kind == tarfile.REGTYPE:
        ti.size = len(data)
    return ti, data


def f(name, data=b"", **kw):
    return entry(name, tarfile.REGTYPE, data, **kw)


def d(name, mode=0o755, **kw):
    return entry(name, tarfile.DIRTYPE, mode=mode, **kw)


def sym(name, target):
    return entry(name, tarfile.SYMTYPE, mode=0o777, linkname=target)


def hard(name, target):
    return entry(name, tarfile.LNKTYPE, linkname=target)


def tar_bytes(*entries) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for ti, data in entries:
            tar.addfile(ti, io.BytesIO(data) if ti.isreg() else None)
    return buf.getvalue()


class Place:
    """tmp_path/dest (the layer) next to tmp_path/outside (must stay as is)."""

    def __init__(self, tmp_path):
        self.dest = tmp_path / "dest"
        self.outside = tmp_path / "outside"
        self.outside.mkdir()
        self.victim = self.outside / "victim"
        self.victim.write_text("safe\n")

    def extract(self, *entries, **kw):
        return extract_layer(io.BytesIO(tar_bytes(*entries)), str(self.dest), **kw)

    def assert_outside_untouched(self):
        assert sorted(os.listdir(self.outside)) == ["victim"]
        assert self.victim.read_text() == "safe\n"
        assert os.stat(self.victim).st_nlink == 1

    def tree(self):
        out = {}
        for dirpath, dirnames, filenames in os.walk(self.dest):
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                out[os.path.relpath(path, self.dest)] = os.lstat(path)
        return out


@pytest.fixture
def place(tmp_path):
    return Place(tmp_path)


# -- names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, parts",
    [
        ("a/b", ["a", "b"]),
        ("./a/b/", ["a", "b"]),
        ("/etc/passwd", ["etc", "passwd"]),
        ("//a//./b", ["a", "b"]),
        ("a/../b", ["b"]),
        ("a/b/../../c", ["c"]),
        ("./", []),
        ("/", []),
    ],
)
def test_layer_path(name, parts):
    assert layer_path(name) == parts


@pytest.mark.parametrize("name", ["..", "../x", "../../etc/x", "a/../../x", "/../x", "a/b/../../../x"])
def test_layer_path_refuses_climbing_out(name):
    with pytest.raises(LayerError, match="leaves the layer"):
        layer_path(name)


# -- ordinary content ----------------------------------------------------------------


@requires_root
def test_files_directories_links_and_metadata(place):
    result = place.extract(
        d("./", mode=0o755),
        d("etc", mode=0o750, uid=0, gid=42, mtime=1_600_000_000),
        f("etc/config", b"key=value\n", mode=0o640, uid=1000, gid=1001, mtime=1_500_000_000),
        f("bin/tool", b"\x7fELF...", mode=0o4755, uid=0, gid=0),
        sym("bin/alias", "tool"),
        sym("bin/abs", "/etc/config"),
        hard("bin/tool2", "bin/tool"),
        entry("run/pipe", tarfile.FIFOTYPE, mode=0o620),
        f("etc/xattr", b"x", xattrs={"user.comment": "hello", "trusted.note": "n"}),
    )
    dest = place.dest
    assert result.entries == 9
    assert result.size == len(b"key=value\n") + len(b"\x7fELF...") + 1
    cfg = os.lstat(dest / "etc/config")
    assert (dest / "etc/config").read_bytes() == b"key=value\n"
    assert stat.S_IMODE(cfg.st_mode) == 0o640
    assert (cfg.st_uid, cfg.st_gid) == (1000, 1001)
    assert cfg.st_mtime == 1_500_000_000
    etc = os.lstat(dest / "etc")
    assert stat.S_IMODE(etc.st_mode) == 0o750 and etc.st_gid == 42
    assert etc.st_mtime == 1_600_000_000, "directory mtime is applied after its children"
    tool = os.lstat(dest / "bin/tool")
    assert stat.S_IMODE(tool.st_mode) == 0o4755, "setuid survives chown"
    assert os.readlink(dest / "bin/alias") == "tool"
    assert os.readlink(dest / "bin/abs") == "/etc/config"
    assert os.lstat(dest / "bin/tool2").st_ino == tool.st_ino
    assert tool.st_nlink == 2
    pipe = os.lstat(dest / "run/pipe")
    assert stat.S_ISFIFO(pipe.st_mode) and stat.S_IMODE(pipe.st_mode) == 0o620
    assert os.getxattr(dest / "etc/xattr", "user.comment") == b"hello"
    assert os.getxattr(dest / "etc/xattr", "trusted.note") == b"n"
    # implicit parent directories
    assert stat.S_IMODE(os.lstat(dest / "run").st_mode) == 0o755


@requires_root
def test_binary_xattr_value_round_trips(place):
    raw = bytes(range(256))
    place.extract(f("bin/ping", b"", xattrs={"trusted.blob": raw.decode("utf-8", "surrogateescape")}))
    assert os.getxattr(place.dest / "bin/ping", "trusted.blob") == raw


@requires_root
def test_overlay_xattrs_in_tar_headers_are_ignored(place):
    place.extract(d("a", xattrs={"trusted.overlay.opaque": "y", "trusted.overlay.redirect": "/x"}))
    assert os.listxattr(place.dest / "a") == []


def test_directory_modes_are_applied_last(place):
    place.extract(d("ro", mode=0o555), f("ro/file", b"data"), d("ro/sub", mode=0o500), f("ro/sub/x", b"1"))
    assert (place.dest / "ro/sub/x").read_bytes() == b"1"
    assert stat.S_IMODE(os.lstat(place.dest / "ro").st_mode) == 0o555
    assert stat.S_IMODE(os.lstat(place.dest / "ro/sub").st_mode) == 0o500


def test_later_entries_replace_earlier_ones(place):
    place.extract(
        d("a"), f("a/keep", b"1"),
        d("a", mode=0o700),  # directory over directory: merged, new metadata
        f("b", b"file"), d("b"),  # directory replaces a file
        d("c"), f("c/x", b"1"), f("c", b"now a file"),  # file replaces a directory
        f("e", b"old"), f("e", b"new"),
    )
    dest = place.dest
    assert (dest / "a/keep").read_bytes() == b"1"
    assert stat.S_IMODE(os.lstat(dest / "a").st_mode) == 0o700
    assert (dest / "b").is_dir()
    assert (dest / "c").read_bytes() == b"now a file"
    assert (dest / "e").read_bytes() == b"new"


def test_stream_is_read_to_its_end(place):
    """A caller hashing the stream must see every byte, padding included."""
    data = tar_bytes(f("a", b"x")) + b"\0" * 4096 + b"trailer"
    stream = io.BytesIO(data)
    extract_layer(stream, str(place.dest))
    assert stream.tell() == len(data)


def test_empty_layer(place):
    result = extract_layer(io.BytesIO(b"\0" * 1024), str(place.dest))
    assert result.entries == 0 and os.listdir(place.dest) == []


def test_layer_root_entry_may_only_be_a_directory(place):
    with pytest.raises(LayerError, match="root directory"):
        place.extract(f("./", b"x"))


def test_unsupported_entry_type(place):
    with pytest.raises(LayerError, match="unsupported tar entry type"):
        place.extract(entry("vol", b"V"))  # a GNU volume header


# -- whiteouts -----------------------------------------------------------------------


def test_whiteout_becomes_char_device_0_0(place):
    place.extract(d("a"), f("a/.wh.b"), f(".wh.top"))
    for path in (place.dest / "a/b", place.dest / "top"):
        st = os.lstat(path)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
    assert not (place.dest / "a/.wh.b").exists()


@requires_root
def test_opaque_marker_sets_xattr_and_is_not_written(place):
    place.extract(d("d"), f("d/.wh..wh..opq"), f("d/z", b"z"), f("new/.wh..wh..opq"))
    assert os.getxattr(place.dest / "d", OPAQUE_XATTR) == b"y"
    assert os.getxattr(place.dest / "new", OPAQUE_XATTR) == b"y", "implicit directory"
    assert sorted(os.listdir(place.dest / "d")) == ["z"]


@pytest.mark.parametrize("name", [".wh.", "a/.wh..", "a/.wh...", ".wh..wh.", "a/.wh..wh.foo", ".wh..wh..opqx"])
def test_malformed_whiteouts_are_refused(place, name):
    with pytest.raises(LayerError, match="malformed whiteout"):
        place.extract(f(name))


def test_whiteout_name_used_as_a_directory_is_refused(place):
    with pytest.raises(LayerError, match="used as a directory"):
        place.extract(f(".wh.a/b", b"x"))


def test_whiteout_entry_cannot_be_a_directory(place):
    with pytest.raises(LayerError, match="cannot be a directory"):
        place.extract(d(".wh.a"))


def test_aufs_metadata_is_skipped(place):
    place.extract(d(".wh..wh.plnk"), f(".wh..wh.plnk/123.456", b"x"), f(".wh..wh.aufs"), f("real", b"1"))
    assert os.listdir(place.dest) == ["real"]


@requires_root
def test_whiteout_and_entry_of_the_same_layer(place):
    """A whiteout applies only to lower layers (image-spec layer.md): this
    layer's own entry of that name stays; a directory becomes opaque."""
    place.extract(
        f("file", b"mine"), f(".wh.file"),  # entry then whiteout: entry stays
        d("dir1"), f("dir1/x", b"1"), f(".wh.dir1"),  # directory then whiteout: opaque directory
        f(".wh.dir2"), d("dir2"), f("dir2/y", b"2"),  # whiteout then directory: opaque directory
        f(".wh.f2"), f("f2", b"2"),  # whiteout then file: the file
    )
    dest = place.dest
    assert (dest / "file").read_bytes() == b"mine"
    assert os.getxattr(dest / "dir1", OPAQUE_XATTR) == b"y" and (dest / "dir1/x").exists()
    assert os.getxattr(dest / "dir2", OPAQUE_XATTR) == b"y" and (dest / "dir2/y").exists()
    assert (dest / "f2").read_bytes() == b"2"


# -- attacks -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../outside/x", "../../etc/x", "a/../../outside/x", "../outside/victim"])
def test_dotdot_escape_is_refused(place, name):
    with pytest.raises(LayerError, match="leaves the layer"):
        place.extract(f(name, b"pwned"))
    place.assert_outside_untouched()


def test_absolute_names_land_inside_the_layer(place):
    target = str(place.outside / "abs.txt")  # an absolute path to the outside directory
    place.extract(f(target, b"inside"), f("/abs/path", b"x"))
    place.assert_outside_untouched()
    assert (place.dest / target.lstrip("/")).read_bytes() == b"inside"
    assert (place.dest / "abs/path").read_bytes() == b"x"
    assert not os.path.exists("/abs/path")


@pytest.mark.parametrize("target_kind", ["relative", "absolute"])
def test_write_through_a_symlink_of_the_layer_is_refused(place, target_kind):
    target = "../outside" if target_kind == "relative" else str(place.outside)
    with pytest.raises(LayerError, match="symlink.*breakout"):
        place.extract(sym("link", target), f("link/file", b"pwned"))
    place.assert_outside_untouched()
    assert os.readlink(place.dest / "link") == target


@pytest.mark.parametrize(
    "entries",
    [
        lambda out: [sym("etc", out), f("etc/victim", b"pwned")],  # "etc -> /etc" then "etc/passwd", aimed at outside
        lambda out: [d("a"), sym("a/b", "../../outside"), f("a/b/victim", b"pwned")],
        lambda out: [sym("link", "../outside"), d("link/sub")],
        lambda out: [sym("link", "../outside"), f("link/.wh.victim")],
        lambda out: [sym("link", out), f("link/.wh..wh..opq")],
        lambda out: [sym("link", "../outside"), entry("link/fifo", tarfile.FIFOTYPE)],
        lambda out: [sym("link", "../outside"), sym("link/evil", out)],
    ],
    ids=["abs-dir", "nested", "dir-through", "whiteout-through", "opaque-through", "fifo-through", "symlink-through"],
)
def test_every_entry_type_refuses_symlinked_parents(place, entries):
    with pytest.raises(LayerError, match="breakout"):
        place.extract(*entries(str(place.outside)))
    place.assert_outside_untouched()
    with pytest.raises(OSError):
        os.getxattr(place.outside, OPAQUE_XATTR)


def test_entry_replacing_a_symlink_does_not_write_through_it(place):
    place.extract(sym("link", "../outside/victim"), f("link", b"pwned"))
    place.assert_outside_untouched()
    assert not os.path.islink(place.dest / "link")
    assert (place.dest / "link").read_bytes() == b"pwned"


def test_hardlink_to_host_file_is_refused(place):
    nlink = os.stat("/etc/passwd").st_nlink
    with pytest.raises(LayerError, match="not in this layer"):
        place.extract(hard("passwd", "/etc/passwd"))
    assert os.stat("/etc/passwd").st_nlink == nlink
    assert not (place.dest / "passwd").exists()


def test_hardlink_name_is_layer_relative(place):
    place.extract(f("etc/passwd", b"layer's own\n"), hard("copy", "/etc/passwd"))
    assert os.lstat(place.dest / "copy").st_ino == os.lstat(place.dest / "etc/passwd").st_ino


@pytest.mark.parametrize(
    "entries, message",
    [
        (lambda out: [hard("x", "../outside/victim")], "leaves the layer"),
        (lambda out: [hard("x", "a/../../outside/victim")], "leaves the layer"),
        (lambda out: [sym("l", "../outside"), hard("x", "l/victim")], "symlink.*breakout"),
        (lambda out: [sym("l", out), hard("x", "l/victim")], "symlink.*breakout"),
        (lambda out: [hard("x", "later"), f("later", b"1")], "not in this layer"),
        (lambda out: [d("dir"), hard("x", "dir")], "is a directory"),
        (lambda out: [hard("x", "./")], "root directory"),
    ],
    ids=["dotdot", "dotdot-nested", "via-symlink", "via-abs-symlink", "forward", "directory", "root"],
)
def test_bad_hardlinks_are_refused(place, entries, message):
    with pytest.raises(LayerError, match=message):
        place.extract(*entries(str(place.outside)))
    place.assert_outside_untouched()


def test_hardlink_to_a_symlink_links_the_symlink(place):
    place.extract(sym("l", "../outside/victim"), hard("x", "l"))
    assert os.path.islink(place.dest / "x") and os.readlink(place.dest / "x") == "../outside/victim"
    place.assert_outside_untouched()


@requires_root
def test_device_nodes_as_root(place):
    place.extract(
        entry("dev/null", tarfile.CHRTYPE, mode=0o666, major=1, minor=3),
        entry("dev/loop9", tarfile.BLKTYPE, mode=0o660, major=7, minor=9, gid=6),
    )
    null = os.lstat(place.dest / "dev/null")
    assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3) and stat.S_IMODE(null.st_mode) == 0o666
    loop = os.lstat(place.dest / "dev/loop9")
    assert stat.S_ISBLK(loop.st_mode) and loop.st_rdev == os.makedev(7, 9) and loop.st_gid == 6


def test_device_nodes_can_be_turned_off(place):
    place.extract(entry("dev/null", tarfile.CHRTYPE, major=1, minor=3), f("dev/keep", b""), devices=False)
    assert os.listdir(place.dest / "dev") == ["keep"]


@pytest.mark.parametrize("name", ["../outside/null", "/../outside/null"])
def test_device_node_outside_is_refused(place, name):
    with pytest.raises(LayerError):
        place.extract(entry(name, tarfile.CHRTYPE, major=1, minor=3))
    place.assert_outside_untouched()


def test_device_node_through_symlink_is_refused(place):
    with pytest.raises(LayerError, match="breakout"):
        place.extract(sym("dev", "../outside"), entry("dev/sda", tarfile.BLKTYPE, major=8, minor=0))
    place.assert_outside_untouched()


# Random layers from a small vocabulary of names, links and whiteouts: a
# layer may be refused, but nothing outside dest ever changes. "OUT" stands
# for the absolute path of the outside directory (never a host path: see
# the module docstring).
_NAMES = st.sampled_from(["link", "link", "a", "..", ".", ".wh.a", ".wh..wh..opq", "victim", "new"])
_PATHS = st.lists(_NAMES, min_size=1, max_size=3).map("/".join)
_TARGETS = st.sampled_from(["../outside", "OUT", "../../outside", "OUT/victim", "a", "../outside/victim", "link", "link/a"])
_KINDS = st.sampled_from(["file", "dir", "symlink", "hardlink", "fifo", "whiteout"])
_ENTRIES = st.tuples(_KINDS, _PATHS, st.one_of(_TARGETS, _PATHS))


def _random_entry(kind, path, target, out):
    target = target.replace("OUT", out)
    if kind == "file":
        return f(path, b"pwned")
    if kind == "dir":
        return d(path)
    if kind == "symlink":
        return sym(path, target)
    if kind == "hardlink":
        return hard(path, target)
    if kind == "whiteout":
        return f(path.rstrip("/") + "/.wh.w")  # would appear as outside/w
    return entry(path, tarfile.FIFOTYPE)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=st.lists(_ENTRIES, min_size=1, max_size=8))
def test_random_layers_never_touch_outside(tmp_path_factory, specs):
    place = Place(tmp_path_factory.mktemp("random"))
    entries = [_random_entry(*spec, str(place.outside)) for spec in specs]
    try:
        place.extract(*entries)
    except LayerError:
        pass
    place.assert_outside_untouched()
    for path in place.tree():
        real = os.path.realpath(os.path.join(place.dest, os.path.dirname(path)))
        assert real.startswith(str(place.dest)), f"{path} sits under a symlinked parent"


# -- corrupt and truncated streams ----------------------------------------------------


def _good() -> bytes:
    return tar_bytes(d("a"), f("a/file", b"x" * 3000), f("b", b"y" * 10))


@pytest.mark.parametrize(
    "mangle, message",
    [
        (lambda b: b[:1536], "end of data|unexpected"),  # cut inside a/file's data
        (lambda b: b[:4096], "end-of-archive"),  # cut at a header boundary (b's header)
        (lambda b: b[: len(_good().rstrip(b"\0")) + 100], "end-of-archive|unexpected"),  # no end blocks
        (lambda b: b"", "empty"),
        (lambda b: os.urandom(4096), None),
        (lambda b: b[:4096] + b"garbage!" * 64 + b[4608:], "invalid tar header at byte 4096"),
    ],
    ids=["mid-data", "header-boundary", "no-end-blocks", "empty", "random", "garbled-header"],
)
def test_corrupt_streams_raise_corrupt_layer(place, mangle, message):
    with pytest.raises(CorruptLayer, match=message):
        extract_layer(io.BytesIO(mangle(_good())), str(place.dest))


def test_trailing_bytes_after_the_end_blocks_are_ignored(place):
    extract_layer(io.BytesIO(_good() + b"trailing junk"), str(place.dest))
    assert (place.dest / "b").read_bytes() == b"y" * 10
