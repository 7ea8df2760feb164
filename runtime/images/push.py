"""``procview push``: a stored image to a registry, as ``docker push``.

The store keeps neither the compressed blobs an image came in nor its
original config: only each layer unpacked (an overlay lower dir, named by
its diff_id) and the runtime part of the config (``store.py``). So a push
makes the blobs again, the way ``image export`` makes an archive:

1. Parse the reference (``NAME[:TAG]``, no digest) and find the image
   (the built-in busybox is made if asked for); apply the plain-HTTP rule
   before any connection (``registry.py``).
2. For each layer, bottom first: pack it (``pack.write_layer``, canonical)
   and gzip it deterministically (level 6, no file name, mtime 0) into an
   unnamed temporary file beside the store, hashing both streams: the
   compressed digest names the blob, the uncompressed one is the
   config's diff_id. ``HEAD`` the blob; upload it only if the registry
   lacks it (POST, then one PUT with ``?digest=``). Same content, same
   bytes: a second push finds every layer there.
3. The config: ``export.image_config`` of the runtime config and those
   diff_ids (the document the store hashes for the ID of an image procview
   made, so a committed or built-in image keeps its ID through push and
   pull), uploaded the same way.
4. The manifest, Docker's schema 2
   (``application/vnd.docker.distribution.manifest.v2+json``, gzip
   layers), ``PUT`` at the tag; the registry's digest must be ours.

No cross-repository mount is tried: a mount needs a blob digest the
registry already has under another repository, and the store does not
remember where an image was pulled from, nor the compressed blobs it
came in (a pulled layer packs and compresses to new bytes anyway).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import tempfile
from typing import BinaryIO

from procview.runtime.images.export import HashingSink, image_config
from procview.runtime.images.pack import write_layer
from procview.runtime.images.reference import BadReference, Reference, parse
from procview.runtime.images.registry import Registry, RegistryError, insecure_registries, load_credentials
from procview.runtime.images.store import Image, ImageError, ImageNotFound, ImageStore

MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
LAYER_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"
GZIP_LEVEL = 6  # what Docker's Go gzip writes by default


@dataclasses.dataclass
class PushOptions:
    insecure: tuple[str, ...] = ()  # registries allowed plain HTTP (--insecure-registry)
    plain_http: bool = False  # skip HTTPS (allowed registries only)
    # $PROCVIEW_INSECURE_REGISTRIES, $DOCKER_CONFIG, $HOME
    environ: dict = dataclasses.field(default_factory=lambda: dict(os.environ))


@dataclasses.dataclass(frozen=True)
class PushResult:
    reference: Reference
    digest: str  # the manifest's
    size: int  # the manifest's bytes


# -- pure parts ------------------------------------------------------------------------


def descriptor(media_type: str, digest: str, size: int) -> dict:
    """An OCI/Docker content descriptor."""
    return {"mediaType": media_type, "size": size, "digest": digest}


def build_manifest(config: dict, layers: list[dict]) -> bytes:
    """The schema 2 manifest of a config descriptor and layer descriptors
    (bottom first), serialized once: these bytes are what is hashed and sent."""
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST_TYPE, "config": config, "layers": layers}
    return json.dumps(manifest, indent=3).encode()


def push_reference(text: str) -> Reference:
    """The reference to push to: ``NAME[:TAG]``; a digest is the registry's
    answer, not something to push to."""
    try:
        ref = parse(text)
    except BadReference as exc:
        raise ImageError(str(exc)) from None
    if ref.digest:
        raise ImageError(f"{text}: cannot push to a digest; name the image NAME[:TAG]")
    return ref


# -- packing ---------------------------------------------------------------------------


def pack_compressed(layer_dir: str, out: BinaryIO) -> tuple[str, str, int]:
    """Write ``layer_dir`` to ``out`` as a gzip layer tar; (diff_id, blob
    digest, blob size). Deterministic: the same directory gives the same bytes."""
    blob = HashingSink(out)
    with gzip.GzipFile(filename="", mode="wb", fileobj=blob, compresslevel=GZIP_LEVEL, mtime=0) as gz:
        tar = HashingSink(gz)
        write_layer(layer_dir, tar)
    return tar.digest, blob.digest, blob.count


# -- pushing ---------------------------------------------------------------------------


def push(store: ImageStore, text: str, options: PushOptions, report) -> PushResult:
    """Push the stored image ``text`` to its registry; ``report`` (a
    ``progress.Report``) shows each layer: ``Preparing``, ``Pushing``, then
    ``Pushed`` or ``Layer already exists``."""
    ref = push_reference(text)
    try:
        image = store.get_or_builtin(ref.stored_name)
    except ImageNotFound:
        raise ImageNotFound(f"an image does not exist locally with the tag: {ref.familiar}:{ref.tag}") from None
    user_password = load_credentials(ref.registry, options.environ)
    insecure = insecure_registries(options.insecure, options.environ)
    with store.hold(image), Registry(ref.registry, ref.path, insecure=insecure, plain_http=options.plain_http,
                                     user_password=user_password, actions="pull,push") as registry:
        report.line(f"The push refers to repository [{ref.domain}/{ref.path}]")
        diff_ids, layers = [], []
        for store_diff_id, layer_dir in zip(image.diff_ids, image.layers):
            diff_id, layer = _push_layer(registry, store, store_diff_id, layer_dir, report)
            diff_ids.append(diff_id)
            layers.append(layer)
        config = _push_config(registry, image, diff_ids)
        manifest = build_manifest(config, layers)
        digest = registry.put_manifest(ref.tag, MANIFEST_TYPE, manifest)
    report.line(f"{ref.tag}: digest: {digest} size: {len(manifest)}")
    return PushResult(ref, digest, len(manifest))


def _push_layer(registry: Registry, store: ImageStore, store_diff_id: str, layer_dir: str, report) -> tuple[str, dict]:
    """Pack, compress and (if the registry lacks it) upload one layer:
    (its diff_id, its descriptor). Shown under the store's diff_id, as
    docker push shows layers."""
    try:
        spool = tempfile.TemporaryFile(dir=store.root)  # O_TMPFILE: nothing named is ever left behind
    except OSError as exc:
        raise ImageError(f"cannot make a temporary file under {store.root}: {exc.strerror or exc}") from None
    with spool:
        report.start(store_diff_id, "Preparing", None)  # packing and compressing: size not known yet
        try:
            diff_id, digest, size = pack_compressed(layer_dir, spool)
        except OSError as exc:
            raise ImageError(f"layer {store_diff_id.removeprefix('sha256:')[:12]}: cannot pack it: {exc.strerror or exc}") from None
        if registry.has_blob(digest):
            report.layer(store_diff_id, "Layer already exists")
        else:
            report.start(store_diff_id, "Pushing", size)
            registry.upload_blob(digest, size, spool, lambda n: report.progress(store_diff_id, n, size))
            report.layer(store_diff_id, "Pushed")
    return diff_id, descriptor(LAYER_TYPE, digest, size)


def _push_config(registry: Registry, image: Image, diff_ids: list[str]) -> dict:
    """Upload the image config (unless the registry has it); its descriptor."""
    import io

    from procview.runtime.images.importers import runtime_platform

    config = image_config(image.config, diff_ids, runtime_platform()[0])
    digest = "sha256:" + hashlib.sha256(config).hexdigest()
    if not registry.has_blob(digest):
        registry.upload_blob(digest, len(config), io.BytesIO(config))
    return descriptor(CONFIG_TYPE, digest, len(config))


__all__ = ["PushOptions", "PushResult", "RegistryError", "build_manifest", "descriptor", "pack_compressed", "push",
           "push_reference"]
