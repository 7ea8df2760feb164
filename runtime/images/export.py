"""``procview image export``: an image as a ``docker save`` archive.

The archive has the layout ``docker load``, ``skopeo`` (``docker-archive:``)
and ``procview image import`` read::

    manifest.json          [{"Config": "<id>.json", "RepoTags": [NAME],
                             "Layers": ["<diff_id>/layer.tar", ...]}]
    repositories           {"<repo>": {"<tag>": "<id>"}}  (older readers)
    <id>.json              the image config
    <diff_id>/layer.tar    each layer, uncompressed, bottom first

The store keeps layers unpacked (overlay lower dirs), not as the tars they
came in, so each layer is packed again (``pack.write_layer``). Packing is
canonical, so it is done twice rather than staged on disk: once to learn
the layer's digest and size (the config must name its ``diff_id`` and a
tar header needs the size before the content), once into the archive.
A layer procview made (a commit) packs to the very bytes it was stored
from, so its digest, and the committed image's ID, survive export and
import. A layer imported from elsewhere packs to a canonical form of the
same content, with a digest of its own (no tar-split record of the
original bytes is kept).

The config is the image-spec's minimum: architecture, os, the runtime
config the store keeps (Env, Cmd, Entrypoint, WorkingDir, User) and the
rootfs diff_ids, serialized the way ``ImageStore`` derives IDs.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import time
from typing import BinaryIO

from procview.runtime.images.pack import write_layer

_BLOCK = 512


class HashingSink:
    """A write-only file that hashes and counts, passes on to ``out``
    (if any) and tells ``on_write(n)`` (if any) about every write."""

    def __init__(self, out: BinaryIO | None = None, on_write=None):
        self._out = out
        self._on_write = on_write
        self._hash = hashlib.sha256()
        self.count = 0

    def write(self, data) -> int:
        self._hash.update(data)
        self.count += len(data)
        if self._out is not None:
            self._out.write(data)
        if self._on_write is not None:
            self._on_write(len(data))
        return len(data)

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


def image_config(config: dict, diff_ids: list[str], architecture: str) -> bytes:
    """The image config document, as ``ImageStore`` hashes it for an ID."""
    doc = {
        "architecture": architecture,
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def write_archive(name: str, config: dict, layer_dirs: tuple[str, ...], out: BinaryIO, architecture: str,
                  report=None) -> str:
    """Write the ``docker save`` archive of one image to ``out``; return the
    image ID (``sha256:`` + the config's digest). ``report`` (a
    ``progress.Report``) sees each layer packed twice: ``Preparing`` (its
    size not known yet), then ``Exporting``, then ``Export complete``."""
    from procview.runtime.images.progress import Silent

    report = report or Silent()
    now = int(time.time())
    diff_ids = [_write_layer(out, layer, now, report) for layer in layer_dirs]
    config_bytes = image_config(config, diff_ids, architecture)
    image_id = hashlib.sha256(config_bytes).hexdigest()
    # An image pulled by digest (NAME@sha256:...) has no tag: it is saved
    # untagged, as docker save does (RepoTags empty, no repositories entry).
    tagged = "@" not in name
    repository, _, tag = name.rpartition(":")
    manifest = [{
        "Config": f"{image_id}.json",
        "RepoTags": [name] if tagged else [],
        "Layers": [f"{digest.removeprefix('sha256:')}/layer.tar" for digest in diff_ids],
    }]
    _file(out, f"{image_id}.json", config_bytes, now)
    _file(out, "manifest.json", json.dumps(manifest).encode(), now)
    _file(out, "repositories", json.dumps({repository: {tag: image_id}} if tagged else {}).encode(), now)
    out.write(b"\0" * (2 * _BLOCK))  # end of archive
    return "sha256:" + image_id


def _write_layer(out: BinaryIO, layer: str, mtime: int, report) -> str:
    """Pack the store's layer directory ``layer`` (``layers/<hex>/diff``)
    into ``out`` as ``<diff_id>/layer.tar``; its diff_id. The report names
    the layer by the store's digest of it."""
    from procview.runtime.images.progress import Counted

    key = "sha256:" + os.path.basename(os.path.dirname(layer))
    report.start(key, "Preparing", None)
    counted = Counted(report, key, None)
    probe = HashingSink(on_write=counted.add)
    write_layer(layer, probe)
    counted.flush()
    digest, size = probe.digest, probe.count
    hexdigest = digest.removeprefix("sha256:")
    _entry(out, f"{hexdigest}/", tarfile.DIRTYPE, 0, mtime)
    _entry(out, f"{hexdigest}/layer.tar", tarfile.REGTYPE, size, mtime)
    report.start(key, "Exporting", size)
    counted = Counted(report, key, size)
    sink = HashingSink(out, counted.add)
    write_layer(layer, sink)
    counted.flush()
    if sink.digest != digest:  # the store's layers never change; this would be a bug
        raise RuntimeError(f"layer {hexdigest[:12]} packed differently twice")
    _pad(out, size)
    report.layer(key, "Export complete")
    return digest


def _entry(out: BinaryIO, name: str, kind: bytes, size: int, mtime: int) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mtime = kind, size, mtime
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    out.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))


def _file(out: BinaryIO, name: str, data: bytes, mtime: int) -> None:
    _entry(out, name, tarfile.REGTYPE, len(data), mtime)
    out.write(data)
    _pad(out, len(data))


def _pad(out: BinaryIO, size: int) -> None:
    if size % _BLOCK:
        out.write(b"\0" * (_BLOCK - size % _BLOCK))


__all__ = ["HashingSink", "write_archive", "image_config"]
