"""Reading image archives: what images a file holds, and their layer blobs.

``open_archive(path, workdir)`` auto-detects the format and returns an
``Archive`` whose ``images()`` lists ``ImageSource``s (names, verified
config, layer blobs to read). Nothing here writes to the store; the store
extracts and verifies the layers (``store.py``). Formats:

1. **docker save** (a tar, or a directory, with ``manifest.json``: a list of
   ``{Config, RepoTags, Layers}``), in the legacy layout
   (``<id>/layer.tar``, ``<hex>.json``; duplicate layers are symlinks to
   one another) and the Docker 25+ layout (``blobs/sha256/<hex>`` next to
   an OCI ``index.json``; ``manifest.json`` wins when both exist, as in
   ``docker load``). The config must hash to the digest in its file name
   (when the name holds one) and a ``blobs/sha256/<hex>`` layer to its hex.
2. **OCI image layout** (a directory with ``oci-layout``, ``index.json`` and
   ``blobs/``, or a tar of one): ``index.json`` -> manifest, through nested
   indexes by picking the ``linux/<this machine's architecture>`` entry ->
   config and layers. Every blob read (indexes, manifests, config, layers)
   must match its descriptor's sha256 digest and size.
3. **A plain root file system tar** (neither ``manifest.json`` nor
   ``oci-layout`` at its top): one layer, an empty config, no name.

The archive itself may be gzip, bzip2 or xz compressed (it is then
decompressed into ``workdir`` first), and so may each layer (detected from
its first bytes, whatever the media type says); zstd is refused with a
message saying so. A tar must end with an end-of-archive block: a docker
save archive cut at a member boundary must not pass for a root file system.

Errors: ``ArchiveError`` (unsupported or inconsistent content) and its
subclass ``CorruptArchive`` (unreadable bytes); the messages name the file
or blob.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import lzma
import os
import platform
import posixpath
import re
import stat
import tarfile
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO, Callable

_CHUNK = 1 << 20
_JSON_LIMIT = 64 << 20  # manifests and configs are small; refuse a "JSON" bomb
_HEX64 = re.compile(r"[0-9a-f]{64}")
_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")

# Media types (OCI image-spec and Docker's schema 2).
INDEX_TYPES = frozenset({
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
})
MANIFEST_TYPES = frozenset({
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
})

_MAGIC = (
    ("gzip", b"\x1f\x8b"),
    ("xz", b"\xfd7zXZ\x00"),
    ("zstd", b"\x28\xb5\x2f\xfd"),
)
_BZIP2 = re.compile(rb"BZh[1-9]1AY&SY")
_SNIFF = 10


class ArchiveError(Exception):
    """The archive cannot be imported (unsupported or inconsistent)."""


class CorruptArchive(ArchiveError):
    """The archive's bytes are unreadable: corrupt or truncated."""


# -- what an archive holds -----------------------------------------------------------


@dataclass(frozen=True)
class LayerBlob:
    """One layer as stored in the archive, not yet read."""

    label: str  # for messages: "layer 2 of 3 (blobs/sha256/ab12...)"
    open: Callable[[], BinaryIO]  # the blob's bytes, possibly compressed
    size: int  # bytes open() will yield (for progress)
    digest: str | None = None  # "sha256:<hex>" the blob as stored must hash to
    diff_id: str | None = None  # "sha256:<hex>" the uncompressed tar must hash to


@dataclass(frozen=True)
class ImageSource:
    """One image of an archive."""

    names: tuple[str, ...]  # references as the archive spells them; may be empty
    tag: str | None  # a bare tag (OCI ref.name "latest") to put after a derived name
    config_bytes: bytes | None  # the image config, verified (None: rootfs tar)
    config: dict  # config_bytes parsed ({} for a rootfs tar)
    layers: tuple[LayerBlob, ...] = field(default_factory=tuple)


# -- byte streams --------------------------------------------------------------------


class Digesting:
    """A reader that hashes (sha256) and counts what passes through it and
    tells ``on_read(n)`` about every chunk."""

    def __init__(self, stream: BinaryIO, on_read: Callable[[int], None] | None = None):
        self._stream = stream
        self._hash = hashlib.sha256()
        self._on_read = on_read
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        if data:
            self._hash.update(data)
            self.count += len(data)
            if self._on_read is not None:
                self._on_read(len(data))
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


class _Prefixed:
    """``head`` (already read from ``stream``), then the rest of ``stream``."""

    def __init__(self, head: bytes, stream: BinaryIO):
        self._head = head
        self._stream = stream

    def read(self, size: int = -1) -> bytes:
        if self._head:
            if size is None or size < 0:
                data, self._head = self._head + self._stream.read(), b""
                return data
            data, self._head = self._head[:size], self._head[size:]
            return data
        return self._stream.read(size)


class _Guarded:
    """A decompressing reader whose decoding errors become ``CorruptArchive``."""

    def __init__(self, stream: BinaryIO, kind: str):
        self._stream = stream
        self._kind = kind

    def read(self, size: int = -1) -> bytes:
        try:
            return self._stream.read(size)
        except (OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
            raise CorruptArchive(f"{self._kind}: {exc}") from None


def compression(head: bytes) -> str:
    """``gzip``, ``bzip2``, ``xz``, ``zstd`` or ``none``, from a stream's first bytes."""
    for kind, magic in _MAGIC:
        if head.startswith(magic):
            return kind
    if _BZIP2.match(head):
        return "bzip2"
    return "none"


def _read_head(stream: BinaryIO) -> bytes:
    head = b""
    while len(head) < _SNIFF:
        data = stream.read(_SNIFF - len(head))
        if not data:
            break
        head += data
    return head


def decompressed(stream: BinaryIO) -> BinaryIO:
    """``stream`` uncompressed (gzip, bzip2 or xz, detected from its first
    bytes; anything else passes through). zstd is refused."""
    head = _read_head(stream)
    kind = compression(head)
    source = _Prefixed(head, stream)
    if kind == "none":
        return source
    if kind == "zstd":
        raise ArchiveError("zstd compression is not supported (decompress it with `zstd -d`, or save the image with gzip)")
    opener = {"gzip": lambda s: gzip.GzipFile(fileobj=s, mode="rb"), "bzip2": bz2.BZ2File, "xz": lzma.LZMAFile}[kind]
    return _Guarded(opener(source), kind)


# -- where the files are: a directory or a tar -----------------------------------------


def _relative(name: str, what: str) -> str:
    """A file name of the archive, normalised; refuses names leaving it."""
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            raise ArchiveError(f"{what}: {name!r} points outside the archive")
        parts.append(part)
    if not parts:
        raise ArchiveError(f"{what}: empty file name")
    return "/".join(parts)


class _Files:
    def exists(self, name: str) -> bool:
        raise NotImplementedError

    def open(self, name: str) -> BinaryIO:
        raise NotImplementedError

    def size(self, name: str) -> int:
        raise NotImplementedError

    def read(self, name: str, limit: int = _JSON_LIMIT) -> bytes:
        size = self.size(name)
        if size > limit:
            raise ArchiveError(f"{name} is too large for a JSON document ({size} bytes)")
        with self.open(name) as f:
            data = f.read(limit + 1)
        if len(data) != size:
            raise CorruptArchive(f"{name}: short read")
        return data

    def close(self) -> None:
        pass


class _DirFiles(_Files):
    def __init__(self, root: str):
        self.root = root

    def _path(self, name: str) -> str:
        return os.path.join(self.root, _relative(name, self.root))

    def exists(self, name: str) -> bool:
        return os.path.isfile(self._path(name))

    def open(self, name: str) -> BinaryIO:
        return open(self._path(name), "rb")

    def size(self, name: str) -> int:
        return os.path.getsize(self._path(name))


class _TarFiles(_Files):
    """Random access to the members of a plain (seekable) tar file. Only
    files near the top are indexed (archive formats keep theirs within three
    levels), so indexing a large root file system tar stays cheap."""

    DEPTH = 3

    def __init__(self, path: str):
        self._file = open(path, "rb")
        self.members: dict[str, tarfile.TarInfo] = {}
        try:
            self._tar = tarfile.open(fileobj=self._file, mode="r:")
            self._index()
        except (tarfile.TarError, EOFError) as exc:
            self.close()
            raise CorruptArchive(f"not a tar archive: {exc}" if not self.members else str(exc)) from None
        except BaseException:
            self.close()
            raise

    def _index(self) -> None:
        tar = self._tar
        while True:
            member = tar.next()
            if member is None:
                break
            tar.members.clear()
            parts = [p for p in member.name.split("/") if p not in ("", ".")]
            if parts and len(parts) <= self.DEPTH and not member.isdir() and ".." not in parts:
                self.members["/".join(parts)] = member
        self._file.seek(tar.offset)
        block = self._file.read(tarfile.BLOCKSIZE)
        if len(block) < tarfile.BLOCKSIZE:
            raise CorruptArchive(f"the archive ends at byte {tar.offset} without an end-of-archive block")
        if block.strip(b"\0"):
            raise CorruptArchive(f"invalid tar header at byte {tar.offset}")

    def _member(self, name: str) -> tarfile.TarInfo:
        name = _relative(name, "archive")
        for _ in range(16):  # follow links between members, as docker save makes them
            member = self.members.get(name)
            if member is None:
                raise KeyError(name)
            if member.isreg():
                return member
            if member.issym():
                name = _relative(posixpath.normpath(posixpath.join(posixpath.dirname(name), member.linkname)), name)
            elif member.islnk():
                name = _relative(posixpath.normpath(member.linkname), name)
            else:
                raise KeyError(name)
        raise KeyError(name)

    def exists(self, name: str) -> bool:
        try:
            self._member(name)
            return True
        except (KeyError, ArchiveError):
            return False

    def open(self, name: str) -> BinaryIO:
        return self._tar.extractfile(self._member(name))

    def size(self, name: str) -> int:
        return self._member(name).size

    def close(self) -> None:
        self._file.close()


# -- the archive -----------------------------------------------------------------------


class Archive:
    """An opened image archive; ``images()`` reads its manifests."""

    def __init__(self, path: str, files: _Files, kind: str, rootfs_tar: str | None = None):
        self.path = path
        self.kind = kind  # "docker-save" | "oci-layout" | "rootfs"
        self._files = files
        self._rootfs_tar = rootfs_tar

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._files.close()

    def images(self) -> list[ImageSource]:
        if self.kind == "docker-save":
            return _DockerSave(self.path, self._files).images()
        if self.kind == "oci-layout":
            return _OciLayout(self.path, self._files).images()
        tar = self._rootfs_tar
        blob = LayerBlob(label="root file system tar", open=lambda: open(tar, "rb"), size=os.path.getsize(tar))
        return [ImageSource(names=(), tag=None, config_bytes=None, config={}, layers=(blob,))]


def open_archive(path: str, workdir: str, on_decompress: Callable[[int], None] | None = None) -> Archive:
    """Open ``path`` (a file or a directory) and detect its format.

    A compressed file is first decompressed into ``workdir``;
    ``on_decompress(n)`` is told about every chunk of ``n`` bytes of it read.
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ArchiveError(exc.strerror) from None
    if stat.S_ISDIR(st.st_mode):
        files = _DirFiles(path)
        if files.exists("manifest.json"):
            return Archive(path, files, "docker-save")
        if files.exists("oci-layout"):
            return Archive(path, files, "oci-layout")
        raise ArchiveError("not an image: a directory needs an oci-layout or a manifest.json file")
    tar = path
    with open(path, "rb") as f:
        kind = compression(_read_head(f))
    if kind != "none":
        tar = os.path.join(workdir, "archive.tar")
        _decompress_file(path, tar, on_decompress)
    files = _TarFiles(tar)
    try:
        if files.exists("manifest.json"):
            return Archive(path, files, "docker-save")
        if files.exists("oci-layout"):
            return Archive(path, files, "oci-layout")
    except BaseException:
        files.close()
        raise
    files.close()
    return Archive(path, _Files(), "rootfs", rootfs_tar=tar)


def _decompress_file(path: str, out: str, on_read: Callable[[int], None] | None) -> None:
    with open(path, "rb") as raw, open(out, "wb") as dst:
        src = decompressed(Digesting(raw, on_read))
        while True:
            chunk = src.read(_CHUNK)
            if not chunk:
                break
            dst.write(chunk)


def _json(data: bytes, what: str):
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptArchive(f"{what}: not valid JSON ({exc})") from None


def _check_config(config, what: str, layers: int) -> dict:
    if not isinstance(config, dict):
        raise ArchiveError(f"{what}: the image config is not a JSON object")
    rootfs = config.get("rootfs")
    if rootfs is not None:
        diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        if not isinstance(diff_ids, list) or not all(isinstance(d, str) and _DIGEST.fullmatch(d) for d in diff_ids):
            raise ArchiveError(f"{what}: rootfs.diff_ids must be a list of sha256 digests")
        if len(diff_ids) != layers:
            raise ArchiveError(f"{what}: the config lists {len(diff_ids)} layer diff_ids, the manifest {layers} layers")
    return config


def _diff_ids(config: dict, count: int) -> list[str | None]:
    rootfs = config.get("rootfs")
    if isinstance(rootfs, dict) and isinstance(rootfs.get("diff_ids"), list):
        return list(rootfs["diff_ids"])
    return [None] * count


def _short(digest: str | None) -> str:
    return digest.removeprefix("sha256:")[:12] if digest else "?"


# -- docker save ---------------------------------------------------------------------


class _DockerSave:
    def __init__(self, path: str, files: _Files):
        self.path = path
        self.files = files

    def _read(self, name: str, what: str) -> bytes:
        try:
            return self.files.read(name)
        except KeyError:
            raise CorruptArchive(f"{what}: {name} is missing from the archive") from None
        except FileNotFoundError:
            raise CorruptArchive(f"{what}: {name} is missing from the archive") from None

    def images(self) -> list[ImageSource]:
        manifest = _json(self._read("manifest.json", "manifest.json"), "manifest.json")
        if not isinstance(manifest, list) or not manifest:
            raise ArchiveError(f"manifest.json lists no images")
        return [self._image(entry, i) for i, entry in enumerate(manifest)]

    def _image(self, entry, index: int) -> ImageSource:
        what = f"manifest.json entry {index + 1}"
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str) or not isinstance(entry.get("Layers"), list):
            raise ArchiveError(f"{what}: needs Config and Layers")
        config_name = _relative(entry["Config"], what)
        config_bytes = self._read(config_name, what)
        named = _HEX64.search(posixpath.basename(config_name))
        if named and hashlib.sha256(config_bytes).hexdigest() != named.group(0):
            raise ArchiveError(f"{what}: config {config_name} does not match its digest (sha256:{named.group(0)[:12]})")
        layers = entry["Layers"]
        if not all(isinstance(layer, str) for layer in layers):
            raise ArchiveError(f"{what}: Layers must be file names")
        config = _check_config(_json(config_bytes, f"{what}: {config_name}"), f"{what}: {config_name}", len(layers))
        blobs = []
        for i, (name, diff_id) in enumerate(zip(layers, _diff_ids(config, len(layers)))):
            name = _relative(name, what)
            label = f"layer {i + 1} of {len(layers)} ({name})"
            if not self.files.exists(name):
                raise CorruptArchive(f"{label} is missing from the archive")
            m = re.fullmatch(r"blobs/sha256/([0-9a-f]{64})", name)
            blobs.append(LayerBlob(
                label=label,
                open=lambda n=name: self.files.open(n),
                size=self.files.size(name),
                digest=f"sha256:{m.group(1)}" if m else None,
                diff_id=diff_id,
            ))
        tags = entry.get("RepoTags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ArchiveError(f"{what}: RepoTags must be a list of names")
        return ImageSource(names=tuple(tags), tag=None, config_bytes=config_bytes, config=config, layers=tuple(blobs))


# -- OCI image layout ------------------------------------------------------------------


def runtime_platform() -> tuple[str, str | None]:
    """This machine's architecture as OCI spells it, and its variant."""
    machine = platform.machine().lower()
    return {
        "x86_64": ("amd64", None),
        "amd64": ("amd64", None),
        "aarch64": ("arm64", "v8"),
        "arm64": ("arm64", "v8"),
        "armv7l": ("arm", "v7"),
        "armv6l": ("arm", "v6"),
        "i386": ("386", None),
        "i686": ("386", None),
        "ppc64le": ("ppc64le", None),
        "s390x": ("s390x", None),
        "riscv64": ("riscv64", None),
    }.get(machine, (machine, None))


Platform = tuple  # (os, architecture, variant or None): ("linux", "arm64", "v8")


def parse_platform(text: str) -> Platform:
    """``OS/ARCH[/VARIANT]`` (``linux/arm64``, ``linux/arm/v7``), as
    ``docker pull --platform`` takes it."""
    parts = text.split("/")
    if not 2 <= len(parts) <= 3 or not all(re.fullmatch(r"[a-z0-9_]+", p) for p in parts):
        raise ArchiveError(f"invalid platform {text!r}: use OS/ARCH[/VARIANT], e.g. linux/amd64 or linux/arm/v7")
    return (parts[0], parts[1], parts[2] if len(parts) == 3 else None)


def choose_manifest(descs: list[dict], what: str, want: Platform | None = None) -> dict:
    """The entry of an image index (manifest list) for platform ``want``,
    by default linux on this machine's architecture: an entry with the
    same variant (or none) first. None fits: ``ArchiveError`` naming the
    platforms the index has."""
    if want is None:
        want = ("linux", *runtime_platform())
    matching = [d for d in descs if _platform_matches(d, want)]
    if not matching:
        wanted = "/".join(filter(None, want))
        raise ArchiveError(f"{what} has no image for {wanted} (it has: {_platforms(descs)})")
    exact = [d for d in matching if d["platform"].get("variant") in (None, want[2])]
    return (exact or matching)[0]


def _platform_matches(desc: dict, want: Platform) -> bool:
    plat = desc.get("platform")
    return isinstance(plat, dict) and plat.get("os") == want[0] and plat.get("architecture") == want[1]


def _platforms(descs: list[dict]) -> str:
    seen = ["/".join(filter(None, (p.get("os"), p.get("architecture"), p.get("variant"))))
            for d in descs if isinstance(p := d.get("platform"), dict)]
    return ", ".join(dict.fromkeys(seen)) or "none"


class _OciLayout:
    MAX_DEPTH = 4

    def __init__(self, path: str, files: _Files):
        self.path = path
        self.files = files

    def images(self) -> list[ImageSource]:
        layout = _json(self.files.read("oci-layout"), "oci-layout")
        version = layout.get("imageLayoutVersion") if isinstance(layout, dict) else None
        if not isinstance(version, str) or not version.startswith("1."):
            raise ArchiveError(f"unsupported OCI layout version {version!r}")
        if not self.files.exists("index.json"):
            raise CorruptArchive(f"index.json is missing")
        index = _json(self.files.read("index.json"), "index.json")
        entries = self._manifests(index, "index.json")
        images = []
        for desc in self._for_this_platform(entries, "index.json"):
            images.append(self._image(desc, 0))
        return [img for img in images if img is not None]

    def _manifests(self, index, what: str) -> list[dict]:
        manifests = index.get("manifests") if isinstance(index, dict) else None
        if not isinstance(manifests, list) or not all(isinstance(d, dict) for d in manifests):
            raise ArchiveError(f"{what} has no manifests list")
        return manifests

    def _for_this_platform(self, descs: list[dict], what: str) -> list[dict]:
        """index.json's entries to import: those without a platform, and
        those for linux on this machine's architecture."""
        arch, _ = runtime_platform()
        kept = [d for d in descs if not isinstance(d.get("platform"), dict) or _platform_matches(d, ("linux", arch, None))]
        if not kept:
            raise ArchiveError(f"{what} has no image for linux/{arch} (it has: {_platforms(descs)})")
        return kept

    def _blob(self, desc: dict, what: str) -> tuple[str, int]:
        digest, size = descriptor(desc, what)
        name = f"blobs/sha256/{digest.removeprefix('sha256:')}"
        if not self.files.exists(name):
            raise CorruptArchive(f"{what}: blob {digest} is missing")
        if self.files.size(name) != size:
            raise CorruptArchive(f"{what}: blob {digest} has {self.files.size(name)} bytes, its descriptor says {size}")
        return name, size

    def _verified(self, desc: dict, what: str) -> bytes:
        name, _ = self._blob(desc, what)
        data = self.files.read(name)
        if "sha256:" + hashlib.sha256(data).hexdigest() != desc["digest"]:
            raise ArchiveError(f"{what}: blob {desc['digest']} does not match its digest")
        return data

    def _image(self, desc: dict, depth: int) -> ImageSource | None:
        media = desc.get("mediaType")
        what = f"manifest {_short(desc.get('digest'))}"
        if media in INDEX_TYPES:
            if depth >= self.MAX_DEPTH:
                raise ArchiveError(f"image indexes nested too deep")
            index = _json(self._verified(desc, what), what)
            chosen = choose_manifest(self._manifests(index, what), what)
            image = self._image(chosen, depth + 1)
            if image is None:
                return None
            return ImageSource(names=_names(desc), tag=_tag(desc), config_bytes=image.config_bytes, config=image.config, layers=image.layers)
        if media not in MANIFEST_TYPES:
            return None  # attestations and other artifacts are not images
        manifest = _json(self._verified(desc, what), what)

        def layer_blob(layer: dict, label: str, diff_id: str | None) -> LayerBlob:
            name, size = self._blob(layer, label)
            return LayerBlob(label=label, open=lambda: self.files.open(name), size=size, digest=layer["digest"], diff_id=diff_id)

        image = manifest_image(manifest, what, lambda d, w: self._verified(d, w), layer_blob)
        return ImageSource(names=_names(desc), tag=_tag(desc), config_bytes=image.config_bytes, config=image.config, layers=image.layers)


def descriptor(desc: dict, what: str) -> tuple[str, int]:
    """A content descriptor's ("sha256:<hex>", size), checked."""
    digest, size = desc.get("digest"), desc.get("size")
    if not isinstance(digest, str) or not isinstance(size, int) or size < 0:
        raise ArchiveError(f"{what}: descriptor needs a digest and a size")
    if not _DIGEST.fullmatch(digest):
        raise ArchiveError(f"{what}: unsupported digest {digest!r} (only sha256)")
    return digest, size


def manifest_image(manifest, what: str, read_config: Callable[[dict, str], bytes],
                   layer_blob: Callable[[dict, str, str | None], LayerBlob]) -> ImageSource:
    """The image an (OCI or Docker schema 2) image manifest describes,
    wherever its blobs are: ``read_config(descriptor, what)`` returns the
    config's bytes, verified; ``layer_blob(descriptor, label, diff_id)``
    the ``LayerBlob`` of a layer. Checks the manifest's shape, the layers'
    media types and that the config lists one diff_id per layer."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("config"), dict) or not isinstance(manifest.get("layers"), list):
        raise ArchiveError(f"{what} needs a config and layers")
    config_bytes = read_config(manifest["config"], f"{what}: config")
    layers = manifest["layers"]
    config = _check_config(_json(config_bytes, f"{what}: config"), f"{what}: config", len(layers))
    blobs = []
    for i, (layer, diff_id) in enumerate(zip(layers, _diff_ids(config, len(layers)))):
        if not isinstance(layer, dict):
            raise ArchiveError(f"{what}: layer {i + 1} is not a descriptor")
        label = f"layer {i + 1} of {len(layers)} ({layer.get('digest')})"
        check_layer_type(layer.get("mediaType"), label)
        descriptor(layer, label)
        blobs.append(layer_blob(layer, label, diff_id))
    return ImageSource(names=(), tag=None, config_bytes=config_bytes, config=config, layers=tuple(blobs))


def check_layer_type(media: object, what: str) -> None:
    if not isinstance(media, str):
        raise ArchiveError(f"{what}: layer descriptor has no mediaType")
    if media.endswith(("+zstd", ".zstd")):
        raise ArchiveError(f"{what}: zstd-compressed layers are not supported ({media})")
    if "foreign" in media:
        raise ArchiveError(f"{what}: foreign (Windows) layers are not supported ({media})")
    if not media.endswith((".tar", "+gzip", ".gzip", ".tar.gzip")):
        raise ArchiveError(f"{what}: unsupported layer media type {media}")


def _names(desc: dict) -> tuple[str, ...]:
    notes = desc.get("annotations") if isinstance(desc.get("annotations"), dict) else {}
    for key in ("io.containerd.image.name", "org.opencontainers.image.ref.name"):
        value = notes.get(key)
        if isinstance(value, str) and ("/" in value or ":" in value):
            return (value,)
    return ()


def _tag(desc: dict) -> str | None:
    notes = desc.get("annotations") if isinstance(desc.get("annotations"), dict) else {}
    value = notes.get("org.opencontainers.image.ref.name")
    if isinstance(value, str) and value and "/" not in value and ":" not in value:
        return value
    return None
