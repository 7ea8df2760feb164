"""``procview pull``: an image from a registry into the store, as ``docker pull``.

1. Parse the reference (``reference.py``) and, before any connection,
   apply the plain-HTTP rule (``registry.py``).
2. Fetch the manifest at the tag or digest; a manifest list / image index
   is resolved to the platform asked for (default: linux on this
   machine's architecture). Every manifest must hash to the digest it was
   asked by (or that the registry announced), and the config to its
   descriptor's digest.
3. Layers whose diff_id (the config's ``rootfs.diff_ids``) is stored are
   not fetched. The others are downloaded, three at a time, into
   ``<root>/pulls/<hex>.partial``, hashed as they stream and resumed with
   ``Range`` after an interruption; a verified blob is renamed into this
   pull's own directory ``<root>/pulls/pull-<random>/``.
4. The config and the layer files go through the store's import
   (``ImageStore.import_pulled``): digests and diff_ids checked again,
   layers unpacked safely, the record written last. The image ID is the
   config's digest, as for the same image from a ``docker save`` archive.

After a failure only ``.partial`` files stay (for a resume); the pull's
directory goes, and the store is untouched.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import fcntl
import hashlib
import json
import os
import threading

from procview._io import remove_tree
from procview.runtime.images import importers, progress
from procview.runtime.images.reference import BadReference, Reference, parse
from procview.runtime.images.registry import (
    Registry, RegistryError, insecure_registries, load_credentials, verify_bytes,
)
from procview.runtime.images.store import Image, ImageError, ImageNotFound, ImageStore

PARALLEL_LAYERS = 3


@dataclasses.dataclass
class PullOptions:
    platform: str | None = None  # "OS/ARCH[/VARIANT]"
    insecure: tuple[str, ...] = ()  # registries allowed plain HTTP (--insecure-registry)
    plain_http: bool = False  # skip HTTPS (allowed registries only)
    # $PROCVIEW_INSECURE_REGISTRIES, $DOCKER_CONFIG, $HOME
    environ: dict = dataclasses.field(default_factory=lambda: dict(os.environ))


def pull(store: ImageStore, text: str, options: PullOptions, report: Report) -> Image:
    """Pull ``text`` into ``store``; ``report`` prints what happens (its
    bars are gone when this returns or raises)."""
    try:
        return _pull(store, text, options, report)
    finally:
        report.end_progress()


def _pull(store: ImageStore, text: str, options: PullOptions, report: Report) -> Image:
    try:
        ref = parse(text)
    except BadReference as exc:
        raise ImageError(str(exc)) from None
    want = _platform(options.platform)
    if ref.tag == "latest" and not ref.digest and not _names_tag(text):
        report.line("Using default tag: latest")
    user_password = load_credentials(ref.registry, options.environ)
    insecure = insecure_registries(options.insecure, options.environ)
    with Registry(ref.registry, ref.path, insecure=insecure, plain_http=options.plain_http,
                  user_password=user_password) as registry:
        report.line(f"{ref.tag or ref.digest}: Pulling from {ref.path}")
        top_digest, source = _resolve(registry, ref, want)
        stored = _already_stored(store, ref, source)
        if stored is not None:
            report.done(top_digest, ref, fresh=False)
            return stored
        with _PullDir(os.path.join(store.root, "pulls")) as pull_dir:
            source = _fetch_layers(registry, store, source, pull_dir, report)
            image = store.import_pulled(str(ref), source, ref.stored_name, report)
    report.done(top_digest, ref, fresh=True)
    return image


def _names_tag(text: str) -> bool:
    name = text.partition("@")[0]
    return name.rfind(":") > name.rfind("/")


def _platform(text: str | None) -> importers.Platform | None:
    if text is None:
        return None
    try:
        return importers.parse_platform(text)
    except importers.ArchiveError as exc:
        raise ImageError(str(exc)) from None


# -- manifests -------------------------------------------------------------------------


def _resolve(registry: Registry, ref: Reference, want) -> tuple[str, importers.ImageSource]:
    """(the digest of what the reference names, the image for the
    platform), every manifest verified."""
    media, body, announced = registry.manifest(ref.api_reference)
    top_digest = _manifest_digest(body, ref.digest or announced, str(ref))
    what = str(ref)
    if media in importers.INDEX_TYPES or (not media and _json(body, what).get("manifests") is not None):
        index = _json(body, what)
        manifests = index.get("manifests")
        if not isinstance(manifests, list) or not all(isinstance(d, dict) for d in manifests):
            raise RegistryError(f"{what}: the image index has no manifests list")
        try:
            chosen = importers.choose_manifest(manifests, what, want)
            digest, size = importers.descriptor(chosen, what)
        except importers.ArchiveError as exc:
            raise RegistryError(str(exc)) from None
        media, body, _ = registry.manifest(digest)
        verify_bytes(body, digest, size, f"{what}: manifest")
        media = media or chosen.get("mediaType", "")
    if media not in importers.MANIFEST_TYPES:
        media = media or _json(body, what).get("mediaType") or "none"
        raise RegistryError(f"{what}: unsupported manifest media type {media}")

    def read_config(desc: dict, label: str) -> bytes:
        digest, size = importers.descriptor(desc, label)
        return registry.small_blob(digest, size, label)

    def layer_blob(desc: dict, label: str, diff_id: str | None) -> importers.LayerBlob:
        return importers.LayerBlob(label=label, open=None, size=desc["size"], digest=desc["digest"], diff_id=diff_id)

    try:
        return top_digest, importers.manifest_image(_json(body, what), what, read_config, layer_blob)
    except importers.ArchiveError as exc:
        raise RegistryError(str(exc)) from None


def _manifest_digest(body: bytes, expected: str | None, what: str) -> str:
    """The manifest's digest; it must be the one it was asked by, or the
    one the registry announced (Docker-Content-Digest)."""
    got = "sha256:" + hashlib.sha256(body).hexdigest()
    if expected is not None and expected.startswith("sha256:") and got != expected:
        raise RegistryError(f"{what}: the manifest does not match its digest {expected} (got {got})")
    return got


def _json(body: bytes, what: str) -> dict:
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise RegistryError(f"{what}: the manifest is not valid JSON") from None
    if not isinstance(value, dict):
        raise RegistryError(f"{what}: the manifest is not a JSON object")
    return value


def _already_stored(store: ImageStore, ref: Reference, source: importers.ImageSource) -> Image | None:
    """The stored image, when ``ref``'s name already has this config."""
    image_id = "sha256:" + hashlib.sha256(source.config_bytes).hexdigest()
    try:
        image = store.get(ref.stored_name)
    except ImageNotFound:
        return None
    return image if image.id == image_id else None


# -- layers ----------------------------------------------------------------------------


class _PullDir:
    """``<root>/pulls/pull-<random>/``: where this pull's verified blobs
    wait for the import, flocked while the pull lives. On entry, the
    directories of killed pulls (not locked) are removed."""

    def __init__(self, pulls: str):
        self.pulls = pulls
        self.path = ""
        self._fd = -1

    def __enter__(self) -> _PullDir:
        os.makedirs(self.pulls, mode=0o700, exist_ok=True)
        for entry in os.listdir(self.pulls):
            if entry.startswith("pull-"):
                self._remove_if_abandoned(os.path.join(self.pulls, entry))
        self.path = os.path.join(self.pulls, f"pull-{os.urandom(8).hex()}")
        os.mkdir(self.path, 0o700)
        self._fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        remove_tree(self.path)
        os.close(self._fd)

    @staticmethod
    def _remove_if_abandoned(path: str) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            remove_tree(path)
        except BlockingIOError:
            pass  # a running pull's
        finally:
            os.close(fd)


def _fetch_layers(registry: Registry, store: ImageStore, source: importers.ImageSource, pull_dir: _PullDir,
                  report: Report) -> importers.ImageSource:
    """Download the layers the store lacks (a few at a time); the source
    with each fetched layer opening its verified file."""
    wanted: dict[str, importers.LayerBlob] = {}
    for blob in source.layers:
        if blob.diff_id is not None and store.has_layer(blob.diff_id):
            report.layer(blob.digest, "Already exists")
        else:
            wanted.setdefault(blob.digest, blob)
    files = {digest: os.path.join(pull_dir.path, digest.removeprefix("sha256:")) for digest in wanted}
    failed = threading.Event()

    def fetch(blob: importers.LayerBlob) -> None:
        if failed.is_set():
            return
        hex_digest = blob.digest.removeprefix("sha256:")
        partial = os.path.join(pull_dir.pulls, f"{hex_digest}.partial")

        def on_read(n: int) -> None:
            if failed.is_set():
                raise _Cancelled()
            report.progress(blob.digest, n, blob.size)

        try:
            registry.fetch_blob(blob.digest, blob.size, partial, files[blob.digest], on_read)
        except OSError as exc:
            raise RegistryError(f"{blob.label}: cannot save the download under {pull_dir.pulls}: {exc.strerror or exc}") from None
        report.status(blob.digest, "Download complete")  # "Pull complete" once extracted

    with concurrent.futures.ThreadPoolExecutor(max_workers=PARALLEL_LAYERS) as pool:
        futures = [pool.submit(fetch, blob) for blob in wanted.values()]
        errors = []
        try:
            for future in concurrent.futures.as_completed(futures):
                try:
                    future.result()
                except _Cancelled:
                    pass
                except Exception as exc:  # noqa: BLE001 - the first failure is reported, the others stop
                    failed.set()
                    errors.append(exc)
        except BaseException:  # Ctrl-C: the downloads stop at their next chunk, not at their end
            failed.set()
            raise
    if errors:
        raise errors[0]

    def opener(path: str):
        return lambda: open(path, "rb")

    layers = tuple(dataclasses.replace(blob, open=opener(files[blob.digest])) if blob.digest in files else blob
                   for blob in source.layers)
    return dataclasses.replace(source, layers=layers)


class _Cancelled(Exception):
    """Another layer failed: this download stops (its partial file stays)."""


# -- what the user sees ----------------------------------------------------------------


class Report(progress.Report):
    """What ``docker pull`` prints (``progress.Report``: bars on a
    terminal, else one line per layer when it is done), then ``Digest:``,
    ``Status:`` and the reference; ``quiet``: only the reference."""

    def done(self, digest: str, ref: Reference, fresh: bool) -> None:
        self.end_progress()
        self.line(f"Digest: {digest}")
        self.line(f"Status: {'Downloaded newer image' if fresh else 'Image is up to date'} for {ref.familiar}"
                  + (f"@{ref.digest}" if ref.digest else f":{ref.tag}"))
        self.result(str(ref))
