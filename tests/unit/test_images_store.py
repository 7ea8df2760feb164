"""runtime.images: the store, the importers, the built-in busybox and the
``procview image`` commands, on real archives built here with tarfile
(docker save in the legacy and Docker 25+ layouts, OCI image layouts as a
directory and as a tar, root file system tars), unpacked into a real store
under tmp_path."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import multiprocessing
import os
import shutil
import stat
import subprocess
import sys
import tarfile

import pytest
from click.testing import CliRunner
from conftest import requires_root

from procview.runtime.images import Image, ImageError, ImageNotFound, ImageStore, normalize_reference
from procview.runtime.images import busybox
from procview.runtime.images.commands import human_size, image as image_cli
from procview.runtime.images.progress import Silent
from procview.runtime.images.importers import runtime_platform
from procview.runtime.images.store import derived_name

ARCH = runtime_platform()[0]
OTHER_ARCH = "s390x" if ARCH != "s390x" else "amd64"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"

# -- building archives ---------------------------------------------------------------


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def layer(files: dict[str, bytes | None]) -> bytes:
    """A layer tar: name -> content; None (or a name ending in /) is a directory."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            ti = tarfile.TarInfo(name.rstrip("/"))
            ti.mtime = 1_700_000_000
            if data is None or name.endswith("/"):
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(ti)
            else:
                ti.size, ti.mode = len(data), 0o644
                tar.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


BASE = layer({"etc/": None, "etc/os-release": b"ID=test\n", "bin/": None, "bin/sh": b"#!fake shell\n"})
APP = layer({"app/": None, "app/run": b"run\n", "etc/.wh.os-release": b""})
OTHER = layer({"other/": None, "other/file": b"other\n"})


def config_json(layers: list[bytes], section: dict | None = None, arch: str = ARCH, diff_ids: bool = True) -> bytes:
    doc = {"architecture": arch, "os": "linux", "config": section or {}}
    if diff_ids:
        doc["rootfs"] = {"type": "layers", "diff_ids": ["sha256:" + sha(x) for x in layers]}
    return json.dumps(doc, sort_keys=True).encode()


def tar_dir(src, out) -> None:
    with tarfile.open(out, "w") as tar:
        for name in sorted(os.listdir(src)):
            tar.add(os.path.join(src, name), arcname=name)


class Spec:
    """One image for an archive builder."""

    def __init__(self, tags, layers, section=None, config=None, gz=False):
        self.tags = tags
        self.layers = layers
        self.section = section or {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"], "WorkingDir": "/app", "User": "1000"}
        self.config = config if config is not None else config_json(layers, self.section)
        self.gz = gz

    def blob(self, data: bytes) -> bytes:
        return gzip.compress(data, mtime=0) if self.gz else data


def docker_save(path, *specs: Spec, layout: str = "legacy", compress: str | None = None, symlink_dupes: bool = False):
    """Write a docker save archive: ``legacy`` (<id>/layer.tar, <hex>.json)
    or ``oci`` (Docker 25+: blobs/sha256/..., index.json, oci-layout)."""
    members: dict[str, bytes] = {}
    links: dict[str, str] = {}
    manifest = []
    for spec in specs:
        names = []
        for data in spec.layers:
            blob = spec.blob(data)
            if layout == "legacy":
                name = f"{sha(blob + spec.config)}/layer.tar"
                if symlink_dupes and any(v == blob for v in members.values()):
                    first = next(k for k, v in members.items() if v == blob)
                    links[name] = "../" + first
                else:
                    members[name] = blob
                    members[f"{name.split('/')[0]}/VERSION"] = b"1.0"
            else:
                name = f"blobs/sha256/{sha(blob)}"
                members[name] = blob
            names.append(name)
        config_name = f"{sha(spec.config)}.json" if layout == "legacy" else f"blobs/sha256/{sha(spec.config)}"
        members[config_name] = spec.config
        manifest.append({"Config": config_name, "RepoTags": spec.tags, "Layers": names})
    members["manifest.json"] = json.dumps(manifest).encode()
    if layout == "oci":
        members["oci-layout"] = b'{"imageLayoutVersion": "1.0.0"}'
        members["index.json"] = json.dumps({"schemaVersion": 2, "manifests": []}).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
        for name, target in links.items():
            ti = tarfile.TarInfo(name)
            ti.type, ti.linkname = tarfile.SYMTYPE, target
            tar.addfile(ti)
    data = buf.getvalue()
    if compress == "gzip":
        data = gzip.compress(data)
    with open(path, "wb") as f:
        f.write(data)
    return path


class Oci:
    """An OCI image layout directory being written."""

    def __init__(self, root):
        self.root = root
        os.makedirs(os.path.join(root, "blobs", "sha256"), exist_ok=True)
        with open(os.path.join(root, "oci-layout"), "w") as f:
            f.write('{"imageLayoutVersion":"1.0.0"}')

    def blob(self, data: bytes, media: str, **extra) -> dict:
        with open(os.path.join(self.root, "blobs", "sha256", sha(data)), "wb") as f:
            f.write(data)
        return {"mediaType": media, "digest": "sha256:" + sha(data), "size": len(data), **extra}

    def manifest(self, spec: Spec, layer_media: str = OCI_LAYER, **extra) -> dict:
        doc = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": self.blob(spec.config, OCI_CONFIG),
            "layers": [self.blob(spec.blob(x), layer_media + ("+gzip" if spec.gz else "")) for x in spec.layers],
        }
        return self.blob(json.dumps(doc).encode(), OCI_MANIFEST, **extra)

    def index(self, descriptors: list[dict], **extra) -> dict:
        return self.blob(json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}).encode(), OCI_INDEX, **extra)

    def write_index(self, descriptors: list[dict]) -> str:
        with open(os.path.join(self.root, "index.json"), "w") as f:
            json.dump({"schemaVersion": 2, "manifests": descriptors}, f)
        return self.root


def ref(name: str) -> dict:
    return {"annotations": {"org.opencontainers.image.ref.name": name}}


@pytest.fixture
def store(tmp_path):
    return ImageStore(str(tmp_path / "state"))


def assert_nothing_stored(store: ImageStore) -> None:
    for sub in ("images", "layers", "tmp"):
        path = os.path.join(store.root, sub)
        assert not os.path.exists(path) or os.listdir(path) == [], f"{sub}/ is not empty: {os.listdir(path)}"


def read(image: Image, layer_index: int, path: str) -> bytes:
    with open(os.path.join(image.layers[layer_index], path), "rb") as f:
        return f.read()


# -- references ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "given, normal",
    [
        ("busybox", "busybox:latest"),
        ("busybox:1.36", "busybox:1.36"),
        ("library/busybox", "busybox:latest"),
        ("docker.io/library/busybox:1", "busybox:1"),
        ("docker.io/team/app", "team/app:latest"),
        ("localhost:5000/app", "localhost:5000/app:latest"),
        ("registry.example.com:443/a/b/c:v1.2-rc_3", "registry.example.com:443/a/b/c:v1.2-rc_3"),
        ("my-app__x.y", "my-app__x.y:latest"),
    ],
)
def test_normalize_reference(given, normal):
    assert normalize_reference(given) == normal


@pytest.mark.parametrize("bad", ["", "Busybox", "busy box", "a:b:c", "../x", "a//b", "-a", "a:", "a:-tag", ":tag",
                                 "x" * 256, "busybox@sha256:" + "0" * 64, "a/.b", "a\nb"])
def test_invalid_references_are_refused(bad):
    with pytest.raises(ImageError):
        normalize_reference(bad)


@pytest.mark.parametrize(
    "path, name",
    [
        ("/x/alpine-minirootfs-3.19.1-x86_64.tar.gz", "alpine-minirootfs-3.19.1-x86_64:latest"),
        ("/x/My Rootfs.TGZ", "my-rootfs:latest"),
        ("rootfs.tar.xz", "rootfs:latest"),
        ("/x/oci-dir/", "oci-dir:latest"),
    ],
)
def test_derived_name(path, name):
    assert derived_name(path) == name


def test_derived_name_with_tag_and_failure():
    assert derived_name("/x/app.oci.tar", "v2") == "app:v2"
    with pytest.raises(ImageError, match="--name"):
        derived_name("/x/___.tar")


# -- docker save ---------------------------------------------------------------------


@requires_root
@pytest.mark.parametrize("layout", ["legacy", "oci"])
def test_import_docker_save(store, tmp_path, layout):
    spec = Spec(["example/app:1.0", "example/app:latest"], [BASE, APP])
    path = docker_save(tmp_path / "app.tar", spec, layout=layout)
    img = store.import_path(str(path))
    assert img.name == "example/app:1.0"
    assert img.id == "sha256:" + sha(spec.config)
    assert img.config == {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"], "WorkingDir": "/app", "User": "1000"}
    assert img.layers == tuple(os.path.join(store.root, "layers", sha(x), "diff") for x in (BASE, APP))
    assert read(img, 0, "etc/os-release") == b"ID=test\n"
    assert read(img, 1, "app/run") == b"run\n"
    whiteout = os.lstat(os.path.join(img.layers[1], "etc/os-release"))
    assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == 0
    for x in (BASE, APP):
        marker = json.load(open(os.path.join(store.root, "layers", sha(x), ".complete")))
        assert marker["diff_id"] == "sha256:" + sha(x) and marker["size"] > 0
    # both tags, same image
    assert store.get("example/app") == Image(name="example/app:latest", id=img.id, layers=img.layers, config=img.config)
    assert [i.name for i in store.list()] == ["example/app:1.0", "example/app:latest"]
    record = json.load(open(os.path.join(store.root, "images", "example%2Fapp%3A1.0.json")))
    assert record == {"name": "example/app:1.0", "id": img.id, "diff_ids": ["sha256:" + sha(x) for x in (BASE, APP)],
                      "config": img.config}
    assert os.listdir(os.path.join(store.root, "tmp")) == []


def test_import_gzip_layers_in_gzip_archive_with_symlinked_duplicates(store, tmp_path):
    specs = [Spec(["one:1"], [BASE, APP], gz=True), Spec(["two:1"], [BASE, OTHER], gz=True)]
    path = docker_save(tmp_path / "two.tar.gz", *specs, compress="gzip", symlink_dupes=True)
    images = store.import_archive(str(path))
    assert [i.name for i in images] == ["one:1", "two:1"]
    assert images[0].layers[0] == images[1].layers[0], "the shared base layer is stored once"
    assert sorted(os.listdir(os.path.join(store.root, "layers"))) == sorted(sha(x) for x in (BASE, APP, OTHER))
    assert read(images[1], 1, "other/file") == b"other\n"


def test_untagged_docker_save_is_named_after_the_file(store, tmp_path):
    path = docker_save(tmp_path / "Saved-Image.tar", Spec(None, [BASE]))
    assert store.import_path(str(path)).name == "saved-image:latest"


def test_name_option_renames_and_needs_a_single_image(store, tmp_path):
    single = docker_save(tmp_path / "a.tar", Spec(["a:1"], [BASE]))
    assert store.import_path(str(single), name="renamed").name == "renamed:latest"
    with pytest.raises(ImageNotFound):
        store.get("a:1")
    double = docker_save(tmp_path / "b.tar", Spec(["a:1"], [BASE]), Spec(["b:1"], [OTHER]))
    with pytest.raises(ImageError, match="holds 2 images; --name"):
        store.import_path(str(double), name="x")


def test_config_without_diff_ids_is_accepted(store, tmp_path):
    spec = Spec(["nodiff:1"], [BASE], config=config_json([BASE], {"Cmd": ["x"]}, diff_ids=False))
    img = store.import_path(str(docker_save(tmp_path / "n.tar", spec)))
    assert img.config == {"Cmd": ["x"]} and read(img, 0, "bin/sh") == b"#!fake shell\n"


# -- verification: nothing stored on a mismatch ------------------------------------------


def _tamper_member(path, member_suffix: str, new: bytes) -> None:
    """Rewrite a tar file with one member's content replaced (same size)."""
    with tarfile.open(path) as tar:
        entries = [(m, tar.extractfile(m).read() if m.isreg() else None) for m in tar.getmembers()]
    with tarfile.open(path, "w") as tar:
        for m, data in entries:
            if m.name.endswith(member_suffix):
                assert len(new) == len(data)
                data = new
            tar.addfile(m, io.BytesIO(data) if data is not None else None)


def _same_size_evil_layer(original: bytes) -> bytes:
    evil = layer({"etc/": None, "etc/os-release": b"ID=evil\n", "bin/": None, "bin/sh": b"#!evil shell\n"})
    assert len(evil) == len(original)
    return evil


def test_docker_save_diff_id_mismatch_stores_nothing(store, tmp_path):
    spec = Spec(["app:1"], [BASE, APP])
    path = docker_save(tmp_path / "app.tar", spec)
    _tamper_member(path, f"{sha(BASE + spec.config)}/layer.tar", _same_size_evil_layer(BASE))
    with pytest.raises(ImageError, match=r"layer 1 of 2 .*does not match its diff_id sha256:" + sha(BASE)):
        store.import_path(str(path))
    assert_nothing_stored(store)


def test_docker25_blob_name_mismatch_stores_nothing(store, tmp_path):
    spec = Spec(["app:1"], [BASE, APP])
    path = docker_save(tmp_path / "app.tar", spec, layout="oci")
    _tamper_member(path, sha(APP), APP.replace(b"run\n", b"pwn\n"))
    with pytest.raises(ImageError, match=r"layer 2 of 2 \(blobs/sha256/" + sha(APP) + r"\): content does not match"):
        store.import_path(str(path))
    assert_nothing_stored(store)


def test_docker_save_config_digest_mismatch(store, tmp_path):
    spec = Spec(["app:1"], [BASE])
    path = docker_save(tmp_path / "app.tar", spec)
    _tamper_member(path, f"{sha(spec.config)}.json", spec.config.replace(b"/bin/sh", b"/bin/xx"))
    with pytest.raises(ImageError, match="does not match its digest"):
        store.import_path(str(path))
    assert_nothing_stored(store)


def test_a_bad_second_image_stores_nothing_of_the_first(store, tmp_path):
    bad = Spec(["b:1"], [OTHER], config=config_json([APP], {}))  # diff_id of another layer
    path = docker_save(tmp_path / "two.tar", Spec(["a:1"], [BASE]), bad)
    with pytest.raises(ImageError, match="layer 1 of 1"):
        store.import_archive(str(path))
    assert_nothing_stored(store)


def test_diff_ids_count_must_match_layers(store, tmp_path):
    spec = Spec(["app:1"], [BASE, APP], config=config_json([BASE], {}))
    with pytest.raises(ImageError, match="1 layer diff_ids, the manifest 2 layers"):
        store.import_path(str(docker_save(tmp_path / "a.tar", spec)))


def test_zstd_layer_is_refused_with_a_clear_message(store, tmp_path):
    zstd_frame = b"\x28\xb5\x2f\xfd" + b"\0" * 60
    spec = Spec(["z:1"], [zstd_frame], config=config_json([zstd_frame], {}))
    with pytest.raises(ImageError, match="zstd compression is not supported"):
        store.import_path(str(docker_save(tmp_path / "z.tar", spec)))
    assert_nothing_stored(store)


def test_zstd_archive_is_refused(store, tmp_path):
    path = tmp_path / "x.tar.zst"
    path.write_bytes(b"\x28\xb5\x2f\xfd" + os.urandom(100))
    with pytest.raises(ImageError, match="zstd"):
        store.import_path(str(path))


def _cut(data: bytes, where: str) -> bytes:
    if where == "half":
        return data[: len(data) // 2]
    if where == "before-manifest":  # at the header of manifest.json: a tar cut at a member boundary
        return data[: data.index(b"manifest.json")]
    if where == "no-end-blocks":
        return data.rstrip(b"\0")[: -1]
    raise AssertionError(where)


@pytest.mark.parametrize("where", ["half", "before-manifest", "no-end-blocks"])
@pytest.mark.parametrize("compress", [None, "gzip"])
def test_truncated_archive_is_reported_and_stores_nothing(store, tmp_path, where, compress):
    plain = docker_save(tmp_path / "full.tar", Spec(["app:1"], [BASE, APP, OTHER])).read_bytes()
    data = _cut(plain, where)
    if compress:
        data = gzip.compress(plain)[: len(gzip.compress(plain)) // 2] if where == "half" else gzip.compress(data)
    path = tmp_path / "cut.tar"
    path.write_bytes(data)
    with pytest.raises(ImageError, match=r"cut.tar: corrupt or truncated archive \("):
        store.import_path(str(path))
    assert_nothing_stored(store)


def test_not_an_archive(store, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"hello, this is not a tar file at all\n" * 40)
    with pytest.raises(ImageError, match="corrupt or truncated archive"):
        store.import_path(str(path))
    with pytest.raises(ImageError, match="No such file"):
        store.import_path(str(tmp_path / "missing.tar"))
    with pytest.raises(ImageError, match="not an image"):
        store.import_path(str(tmp_path))


def test_unsafe_layer_is_refused_and_stores_nothing(store, tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        ti = tarfile.TarInfo("etc")
        ti.type, ti.linkname = tarfile.SYMTYPE, str(tmp_path / "outside")
        tar.addfile(ti)
        ti = tarfile.TarInfo("etc/x")
        tar.addfile(ti, io.BytesIO(b""))
    evil = buf.getvalue()
    (tmp_path / "outside").mkdir()
    with pytest.raises(ImageError, match=r"layer 1 of 1 .*symlink.*breakout"):
        store.import_path(str(docker_save(tmp_path / "e.tar", Spec(["evil:1"], [evil]))))
    assert os.listdir(tmp_path / "outside") == []
    assert_nothing_stored(store)


# -- OCI image layouts ---------------------------------------------------------------


@requires_root
@pytest.mark.parametrize("as_tar", [False, True])
def test_import_oci_layout(store, tmp_path, as_tar):
    oci = Oci(str(tmp_path / "layout"))
    spec = Spec(None, [BASE, APP], gz=True)
    oci.write_index([oci.manifest(spec, **ref("docker.io/library/app:3"))])
    path = str(tmp_path / "layout")
    if as_tar:
        tar_dir(path, tmp_path / "layout.tar")
        path = str(tmp_path / "layout.tar")
    img = store.import_path(path)
    assert img.name == "app:3"
    assert img.id == "sha256:" + sha(spec.config)
    assert read(img, 1, "app/run") == b"run\n"
    assert img.config["Cmd"] == ["/bin/sh"]


def test_oci_bare_tag_gets_a_name_from_the_file(store, tmp_path):
    oci = Oci(str(tmp_path / "My-Layout"))
    oci.write_index([oci.manifest(Spec(None, [BASE]), **ref("v7"))])
    assert store.import_path(str(tmp_path / "My-Layout")).name == "my-layout:v7"


def test_oci_nested_index_picks_this_platform(store, tmp_path):
    oci = Oci(str(tmp_path / "multi"))
    mine = Spec(None, [BASE, APP])
    other = Spec(None, [OTHER], config=config_json([OTHER], {}, arch=OTHER_ARCH))
    attestation = oci.blob(b'{"schemaVersion":2}', OCI_MANIFEST, platform={"os": "unknown", "architecture": "unknown"})
    inner = oci.index([
        oci.manifest(other, platform={"os": "linux", "architecture": OTHER_ARCH}),
        oci.manifest(mine, platform={"os": "linux", "architecture": ARCH}),
        attestation,
    ], **ref("multi:1"))
    oci.write_index([inner])
    img = store.import_path(str(tmp_path / "multi"))
    assert img.name == "multi:1" and img.id == "sha256:" + sha(mine.config)
    assert read(img, 1, "app/run") == b"run\n"


def test_oci_index_without_this_platform(store, tmp_path):
    oci = Oci(str(tmp_path / "foreign"))
    other = Spec(None, [OTHER])
    oci.write_index([oci.index([oci.manifest(other, platform={"os": "linux", "architecture": OTHER_ARCH})], **ref("f:1"))])
    with pytest.raises(ImageError, match=f"no image for linux/{ARCH} \\(it has: linux/{OTHER_ARCH}\\)"):
        store.import_path(str(tmp_path / "foreign"))


@pytest.mark.parametrize("what", ["layer", "config", "manifest"])
def test_oci_blob_digest_mismatch_stores_nothing(store, tmp_path, what):
    oci = Oci(str(tmp_path / "bad"))
    spec = Spec(None, [BASE, APP])
    desc = oci.manifest(spec, **ref("bad:1"))
    oci.write_index([desc])
    manifest = json.loads(open(os.path.join(oci.root, "blobs/sha256", desc["digest"][7:])).read())
    target = {"layer": manifest["layers"][0], "config": manifest["config"], "manifest": desc}[what]
    blob = os.path.join(oci.root, "blobs/sha256", target["digest"][7:])
    data = open(blob, "rb").read()
    with open(blob, "wb") as f:
        f.write(_same_size_evil_layer(BASE) if what == "layer" else data.replace(b"{", b" ", 1))
    with pytest.raises(ImageError, match="does not match its digest"):
        store.import_path(str(tmp_path / "bad"))
    assert_nothing_stored(store)


def test_oci_missing_blob_and_size_mismatch(store, tmp_path):
    oci = Oci(str(tmp_path / "m"))
    desc = oci.manifest(Spec(None, [BASE]), **ref("m:1"))
    manifest = json.loads(open(os.path.join(oci.root, "blobs/sha256", desc["digest"][7:])).read())
    os.unlink(os.path.join(oci.root, "blobs/sha256", manifest["layers"][0]["digest"][7:]))
    oci.write_index([desc])
    with pytest.raises(ImageError, match="corrupt or truncated archive.*is missing"):
        store.import_path(str(tmp_path / "m"))
    oci.write_index([dict(desc, size=desc["size"] + 1)])
    with pytest.raises(ImageError, match="descriptor says"):
        store.import_path(str(tmp_path / "m"))


@pytest.mark.parametrize("media, message", [
    ("application/vnd.oci.image.layer.v1.tar+zstd", "zstd-compressed layers are not supported"),
    ("application/vnd.example.other", "unsupported layer media type"),
])
def test_oci_refused_layer_media_types(store, tmp_path, media, message):
    oci = Oci(str(tmp_path / "z"))
    spec = Spec(None, [BASE])
    config = oci.blob(spec.config, OCI_CONFIG)
    doc = {"schemaVersion": 2, "config": config, "layers": [oci.blob(BASE, media)]}
    oci.write_index([oci.blob(json.dumps(doc).encode(), OCI_MANIFEST, **ref("z:1"))])
    with pytest.raises(ImageError, match=message):
        store.import_path(str(tmp_path / "z"))


# -- root file system tars -----------------------------------------------------------


@pytest.mark.parametrize("compress", [None, "gzip"])
def test_import_rootfs_tar(store, tmp_path, compress):
    data = layer({"./": None, "./etc/": None, "./etc/hostname": b"x\n", "./bin/": None, "./bin/true": b"\x7fELF"})
    path = tmp_path / ("Alpine-3.19.tar" + (".gz" if compress else ""))
    path.write_bytes(gzip.compress(data) if compress else data)
    img = store.import_path(str(path))
    assert img.name == "alpine-3.19:latest"
    assert img.config == {}
    assert img.layers == (os.path.join(store.root, "layers", sha(data), "diff"),)
    assert read(img, 0, "etc/hostname") == b"x\n"
    again = store.import_path(str(path), name="copy:2")
    assert again.id == img.id and again.layers == img.layers


def test_rootfs_tar_with_name(store, tmp_path):
    path = tmp_path / "r.tar"
    path.write_bytes(layer({"a": b"1"}))
    assert store.import_path(str(path), name="team/rootfs:v1").name == "team/rootfs:v1"


# -- get, list, remove ----------------------------------------------------------------


@pytest.fixture
def two_images(store, tmp_path):
    a = store.import_path(str(docker_save(tmp_path / "a.tar", Spec(["a:1"], [BASE, APP]))))
    b = store.import_path(str(docker_save(tmp_path / "b.tar", Spec(["b:1"], [BASE, OTHER], section={"Cmd": ["b"]}))))
    return a, b


def _layers(store):
    return sorted(os.listdir(os.path.join(store.root, "layers")))


def test_get_and_not_found(store, two_images):
    a, b = two_images
    assert store.get("a:1") == a
    assert store.get(a.id) == a
    assert store.get(a.id[7:19]) == a
    with pytest.raises(ImageNotFound, match="^no such image: nothere$"):
        store.get("nothere")
    with pytest.raises(ImageNotFound, match="no such image: a:2"):
        store.get("a:2")
    assert ImageStore(str(store.root) + "-missing").list() == []


def test_remove_keeps_shared_layers(store, two_images):
    a, b = two_images
    store.remove("a:1")
    assert _layers(store) == sorted([sha(BASE), sha(OTHER)])
    assert [i.name for i in store.list()] == ["b:1"]
    store.remove(b.id[7:19])
    assert _layers(store) == [] and store.list() == []
    with pytest.raises(ImageNotFound):
        store.remove("b:1")


def test_remove_by_id_with_several_names_is_refused(store, tmp_path):
    img = store.import_path(str(docker_save(tmp_path / "a.tar", Spec(["x:1", "y:1"], [BASE]))))
    with pytest.raises(ImageError, match="several names"):
        store.remove(img.id)
    store.remove("x:1")
    store.remove(img.id)
    assert store.list() == []


def test_reimport_moves_the_name_and_frees_old_layers(store, tmp_path):
    store.import_path(str(docker_save(tmp_path / "v1.tar", Spec(["app:latest"], [BASE, APP]))))
    store.import_path(str(docker_save(tmp_path / "v2.tar", Spec(["app:latest"], [BASE, OTHER]))))
    assert _layers(store) == sorted([sha(BASE), sha(OTHER)])


def test_held_layers_survive_removal_until_released(store, two_images):
    a, _ = two_images
    hold = store.hold(a)
    store.remove("a:1")
    assert sha(APP) in _layers(store), "held: kept"
    assert os.path.isfile(os.path.join(a.layers[1], "app/run"))
    hold.close()
    store.remove("b:1")  # any later change sweeps it
    assert _layers(store) == []
    with pytest.raises(ImageNotFound, match="was removed"):
        store.hold(a)


def test_damaged_record_is_skipped_by_list(store, two_images):
    with open(os.path.join(store.root, "images", "broken%3A1.json"), "w") as f:
        f.write("{not json")
    assert [i.name for i in store.list()] == ["a:1", "b:1"]
    with pytest.raises(ImageError, match="damaged"):
        store.get("broken:1")


def test_missing_layer_is_reported_by_get(store, two_images):
    a, _ = two_images
    shutil.rmtree(os.path.dirname(a.layers[1]))
    with pytest.raises(ImageError, match=f"layer {sha(APP)[:12]} is missing"):
        store.get("a:1")


# -- interrupted and concurrent imports -------------------------------------------------


class _DieMidway(Silent):
    """Exits, like SIGKILL (no cleanup runs), once half the archive is read."""

    def __init__(self, size: int):
        self.left = size // 2

    def progress(self, key, n, total):
        self.left -= n
        if self.left < 0:
            os._exit(3)


def _die_midway(root: str, path: str) -> None:
    ImageStore(root).import_path(path, report=_DieMidway(os.path.getsize(path)))


def test_killed_import_leaves_nothing_visible_and_is_cleaned_up(store, tmp_path):
    big = layer({"big": os.urandom(4 << 20)})
    path = docker_save(tmp_path / "big.tar", Spec(["big:1"], [BASE, big, APP]))
    child = multiprocessing.get_context("fork").Process(target=_die_midway, args=(store.root, str(path)))
    child.start()
    child.join(60)
    assert child.exitcode == 3
    assert os.listdir(os.path.join(store.root, "tmp")) != [], "the killed import left its work"
    assert os.listdir(os.path.join(store.root, "images")) == []
    assert store.list() == []  # the next operation ...
    assert_nothing_stored(store)  # ... removes the leftovers
    assert store.import_path(str(path)).name == "big:1"


def test_orphan_layers_after_a_crash_between_rename_and_record(store, tmp_path, two_images):
    orphan = os.path.join(store.root, "layers", "0" * 64)
    os.makedirs(os.path.join(orphan, "diff"))
    open(os.path.join(orphan, ".complete"), "w").write("{}")
    os.makedirs(os.path.join(store.root, "tmp", "import-killed"))
    store.list()
    assert not os.path.exists(orphan)


def _import_in_child(root: str, path: str, queue) -> None:
    try:
        queue.put(ImageStore(root).import_path(path).name)
    except Exception as exc:  # reported to the parent
        queue.put(repr(exc))


def test_concurrent_imports_do_not_collide(store, tmp_path):
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    paths = [docker_save(tmp_path / f"{n}.tar", Spec([f"{n}:1"], [BASE, layer({n: os.urandom(1 << 20)})])) for n in "abcd"]
    children = [ctx.Process(target=_import_in_child, args=(store.root, str(p), queue)) for p in paths]
    for child in children:
        child.start()
    results = sorted(queue.get(timeout=60) for _ in children)
    for child in children:
        child.join(30)
    assert results == ["a:1", "b:1", "c:1", "d:1"]
    assert len(_layers(store)) == 5
    assert os.listdir(os.path.join(store.root, "tmp")) == []


class Recorder:
    """A report that records what it is told: (what, key, value)."""

    def __init__(self):
        self.events = []

    def start(self, key, action, total):
        self.events.append(("start", key, (action, total)))

    def progress(self, key, n, total):
        self.events.append(("progress", key, n))

    def layer(self, key, status):
        self.events.append(("layer", key, status))

    def of(self, key):
        return [(what, value) for what, k, value in self.events if k == key and what != "progress"]

    def bytes_of(self, key):
        return sum(value for what, k, value in self.events if k == key and what == "progress")


def test_import_reports_each_layer_with_its_bytes(store, tmp_path):
    big = layer({"x": os.urandom(3 << 20)})
    path = docker_save(tmp_path / "p.tar", Spec(["p:1"], [BASE, big]))
    report = Recorder()
    store.import_path(str(path), report=report)
    for data in (BASE, big):  # legacy docker save: layers are named by diff_id
        key = "sha256:" + sha(data)
        assert report.of(key) == [("start", ("Importing", len(data))), ("layer", "Import complete")]
        assert report.bytes_of(key) == len(data)
    again = Recorder()
    store.import_path(str(path), name="q:1", report=again)  # stored layers are only verified
    assert again.of("sha256:" + sha(big)) == [("start", ("Verifying", len(big))), ("layer", "Already exists")]


def test_import_of_a_compressed_archive_reports_the_decompression(store, tmp_path):
    path = docker_save(tmp_path / "p.tar.gz", Spec(["p:1"], [BASE]), compress="gzip")
    report = Recorder()
    store.import_path(str(path), report=report)
    size = os.path.getsize(path)
    assert report.of("archive") == [("start", ("Decompressing", size)), ("layer", "Decompressed")]
    assert report.bytes_of("archive") == size
    assert report.of("sha256:" + sha(BASE))[-1] == ("layer", "Import complete")


def test_export_reports_each_layer_packed_twice(store, tmp_path):
    path = docker_save(tmp_path / "p.tar", Spec(["p:1"], [BASE, APP]))
    store.import_path(str(path))
    report = Recorder()
    _, archive_id = store.export("p:1", str(tmp_path / "out.tar"), report)
    with tarfile.open(tmp_path / "out.tar") as tar:
        (entry,) = json.load(tar.extractfile("manifest.json"))
        sizes = [tar.getmember(name).size for name in entry["Layers"]]
    assert archive_id == "sha256:" + entry["Config"].removesuffix(".json")
    for data, size in zip((BASE, APP), sizes):
        key = "sha256:" + sha(data)  # the store's name of the layer
        assert report.of(key) == [("start", ("Preparing", None)), ("start", ("Exporting", size)), ("layer", "Export complete")]
        assert report.bytes_of(key) == 2 * size


# -- the built-in busybox --------------------------------------------------------------


def test_is_static_elf_on_real_binaries():
    assert busybox.is_static_elf("/bin/ls") is False  # Debian's ls is dynamic
    static = busybox.find_static_busybox()
    if static is not None:
        assert busybox.is_static_elf(static) is True
    with pytest.raises(busybox.ElfError):
        busybox.is_static_elf("/etc/passwd")


def _elf(cls: int, data: int, phdr_types: list[int]) -> bytes:
    end = "<" if data == 1 else ">"
    import struct

    if cls == 2:
        ehsize, phentsize = 64, 56
        header = struct.pack(end + "HHIQQQIHHHHHH", 2, 62, 1, 0, ehsize, 0, 0, ehsize, phentsize, len(phdr_types), 0, 0, 0)
        phdrs = b"".join(struct.pack(end + "II", t, 5) + b"\0" * (phentsize - 8) for t in phdr_types)
    else:
        ehsize, phentsize = 52, 32
        header = struct.pack(end + "HHIIIIIHHHHHH", 2, 3, 1, 0, ehsize, 0, 0, ehsize, phentsize, len(phdr_types), 0, 0, 0)
        phdrs = b"".join(struct.pack(end + "I", t) + b"\0" * (phentsize - 4) for t in phdr_types)
    return b"\x7fELF" + bytes([cls, data, 1]) + b"\0" * 9 + header + phdrs


@pytest.mark.parametrize("cls", [1, 2])
@pytest.mark.parametrize("data", [1, 2])
def test_is_static_elf_reads_program_headers(tmp_path, cls, data):
    static, dynamic = tmp_path / "static", tmp_path / "dynamic"
    static.write_bytes(_elf(cls, data, [6, 1, 1, 4]))  # PHDR, LOAD, LOAD, NOTE
    dynamic.write_bytes(_elf(cls, data, [6, 3, 1, 2]))  # PHDR, INTERP, LOAD, DYNAMIC
    assert busybox.is_static_elf(str(static)) is True
    assert busybox.is_static_elf(str(dynamic)) is False
    truncated = tmp_path / "truncated"
    phentsize = 56 if cls == 2 else 32
    truncated.write_bytes(_elf(cls, data, [6, 1])[: -(phentsize - 2)])  # the last p_type cut short
    with pytest.raises(busybox.ElfError):
        busybox.is_static_elf(str(truncated))


def _host_busybox():
    path = busybox.find_static_busybox()
    if path is None:
        pytest.skip("needs a static busybox (apt-get install busybox-static)")
    return path


@requires_root
def test_ensure_busybox_builds_the_image_once(store):
    binary = _host_busybox()
    img = store.ensure_busybox()
    assert img.name == "busybox:latest"
    assert img.config == {"Cmd": ["sh"], "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}
    (diff,) = img.layers
    assert open(os.path.join(diff, "bin/busybox"), "rb").read() == open(binary, "rb").read()
    assert os.stat(os.path.join(diff, "bin/busybox")).st_mode & 0o777 == 0o755
    assert os.readlink(os.path.join(diff, "usr/bin/free")) == "/bin/busybox"
    assert os.readlink(os.path.join(diff, "bin/sh")) == "/bin/busybox"
    assert stat.S_IMODE(os.stat(os.path.join(diff, "tmp")).st_mode) == 0o1777
    assert stat.S_IMODE(os.stat(os.path.join(diff, "root")).st_mode) == 0o700
    for d in ("home", "var", "proc", "sys", "dev", "etc"):
        assert os.path.isdir(os.path.join(diff, d))
    assert not os.path.exists(os.path.join(diff, "etc/hostname"))
    passwd = open(os.path.join(diff, "etc/passwd")).read()
    assert passwd.startswith("root:x:0:0:") and "\nnobody:x:65534:65534:" in passwd
    assert "nobody:x:65534:" in open(os.path.join(diff, "etc/group")).read()
    assert store.get("busybox") == img
    assert store.ensure_busybox() == img
    # the same busybox always gives the same layer
    other = ImageStore(store.root + "-2").ensure_busybox()
    assert other.id == img.id and os.path.basename(os.path.dirname(other.layers[0])) == os.path.basename(os.path.dirname(diff))


def test_ensure_busybox_without_a_static_busybox(store, monkeypatch):
    monkeypatch.setattr(busybox, "CANDIDATES", ("/nonexistent/busybox", "/bin/ls"))
    monkeypatch.setattr(busybox.find_static_busybox, "__defaults__", (busybox.CANDIDATES,))
    with pytest.raises(ImageError, match="^the built-in busybox image needs a static busybox: apt-get install busybox-static$"):
        store.ensure_busybox()
    assert_nothing_stored(store)


# -- the commands ----------------------------------------------------------------------


def test_cli_import_ls_rm(tmp_path):
    root = str(tmp_path / "state")
    path = docker_save(tmp_path / "app.tar", Spec(["app:1"], [BASE, APP]))
    runner = CliRunner()
    result = runner.invoke(image_cli, ["import", str(path), "--root", root])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[:2] == [f"{sha(BASE)[:12]}: Import complete", f"{sha(APP)[:12]}: Import complete"]
    assert result.output.splitlines()[2].startswith("Loaded image: app:1 (") and len(result.output.splitlines()) == 3
    result = runner.invoke(image_cli, ["ls"], env={"PROCVIEW_ROOT": root})
    lines = result.output.splitlines()
    assert lines[0].split() == ["NAME", "ID", "LAYERS", "SIZE"]
    name, short_id, layers, size = lines[1].split()
    assert (name, layers) == ("app:1", "2") and len(short_id) == 12 and size.endswith("B")
    result = runner.invoke(image_cli, ["rm", "app", "--root", root])  # app:latest
    assert result.exit_code == 125
    result = runner.invoke(image_cli, ["rm", "app:1", "--root", root])
    assert result.exit_code == 0 and result.output == "Deleted: app:1\n"


def test_cli_quiet_import_and_export_print_only_the_name_and_id(tmp_path):
    root = str(tmp_path / "state")
    path = docker_save(tmp_path / "app.tar", Spec(["app:1", "app:2"], [BASE, APP]))
    runner = CliRunner()
    result = runner.invoke(image_cli, ["import", "-q", str(path), "--root", root])
    assert result.exit_code == 0 and result.output == "app:1\napp:2\n", result.output
    out = tmp_path / "out.tar"
    result = runner.invoke(image_cli, ["export", "--quiet", "app:1", str(out), "--root", root])
    with tarfile.open(out) as tar:
        (entry,) = json.load(tar.extractfile("manifest.json"))
    assert result.exit_code == 0 and result.output == "sha256:" + entry["Config"].removesuffix(".json") + "\n"
    result = runner.invoke(image_cli, ["export", "app:1", str(out), "--root", root])
    assert result.output.splitlines() == [f"{sha(BASE)[:12]}: Export complete", f"{sha(APP)[:12]}: Export complete",
                                          f"Exported image: app:1 ({entry['Config'][:12]})"]


def test_cli_errors_are_one_line_and_exit_125(tmp_path):
    runner = CliRunner()
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"\0" * 100 + b"x")
    result = runner.invoke(image_cli, ["import", str(bad), "--root", str(tmp_path / "s")])
    assert result.exit_code == 125
    assert result.stderr.startswith("procview: error: ") and result.stderr.count("\n") == 1
    assert "corrupt or truncated archive" in result.stderr
    result = runner.invoke(image_cli, ["rm", "nothere", "--root", str(tmp_path / "s")])
    assert result.exit_code == 125 and result.stderr == "procview: error: no such image: nothere\n"
    result = runner.invoke(image_cli, ["import", str(bad), "--name", "Bad Name", "--root", str(tmp_path / "s")])
    assert result.exit_code == 125 and "invalid image name" in result.stderr


def test_cli_as_a_program(tmp_path):
    env = dict(os.environ, PROCVIEW_ROOT=str(tmp_path / "state"))
    code = "from procview.runtime.images.commands import image; image()"
    out = subprocess.run([sys.executable, "-c", code, "ls"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0 and out.stdout.split() == ["NAME", "ID", "LAYERS", "SIZE"]
    out = subprocess.run([sys.executable, "-c", code, "rm", "x"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 125 and out.stderr == "procview: error: no such image: x\n"


@pytest.mark.parametrize("n, text", [(0, "0B"), (512, "512B"), (999, "999B"), (1000, "1kB"), (1_982_256, "1.98MB"),
                                     (999_600, "1MB"), (5 * 10**12, "5TB")])
def test_human_size(n, text):
    assert human_size(n) == text


@pytest.mark.parametrize("name", ["busybox:latest", "registry.example.com:5000/team/app:1.0-rc_2",
                                  "app@sha256:" + "ab" * 32, "ünï/cödé:~tag", "a%b c"])
def test_record_file_names_are_urllib_quote(name):
    # The store writes them without importing urllib (procview run's start);
    # existing state directories hold names urllib.parse.quote made.
    import urllib.parse

    from procview.runtime.images.store import _record_file

    assert _record_file(name) == urllib.parse.quote(name, safe="") + ".json"


def test_tag_names_the_same_image_twice(store, tmp_path):
    img = store.import_path(str(docker_save(tmp_path / "a.tar", Spec(["x:1"], [BASE]))))
    tagged = store.tag("x:1", "127.0.0.1:5000/team/x:2")
    assert tagged.name == "127.0.0.1:5000/team/x:2"
    assert (tagged.id, tagged.layers, tagged.config) == (img.id, img.layers, img.config)
    assert [i.name for i in store.list()] == ["127.0.0.1:5000/team/x:2", "x:1"]
    store.remove("x:1")
    assert store.get("127.0.0.1:5000/team/x:2").layers == img.layers  # the layers stay for the other name
    with pytest.raises(ImageNotFound):
        store.tag("nothing:1", "y:1")
    with pytest.raises(ImageError, match="digest"):
        store.tag("127.0.0.1:5000/team/x:2", "y@sha256:" + "a" * 64)
