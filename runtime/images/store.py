"""The image store of ``procview run``: content-addressed layers and named images.

Layout under the state root (``$PROCVIEW_ROOT``, default
``/var/lib/procview-runtime``)::

    .lock                         flock(2): held (exclusive) by every change
    layers/<hex>/diff/            a layer's unpacked content: an overlayfs lowerdir
    layers/<hex>/.complete        {"diff_id", "size"}; written before the layer
                                  is renamed into place, so a layer directory
                                  always has it (one without is garbage)
    images/<escaped name>.json    {"name", "id", "diff_ids", "config"}
    tmp/                          work in progress and things being deleted

``<hex>`` is the layer's diff_id: the sha256 of its *uncompressed* tar. So a
layer is unpacked once and shared by every image that has it, whatever the
archive or compression it came in. An image record names its layers bottom
first; ``<escaped name>`` is the reference (``busybox:latest``) percent-encoded
(``quote(name, safe="")``), and the record itself holds the real name.

Changes are crash-safe without a journal: an import unpacks and verifies
every layer inside ``tmp/<random>/``, then renames the new layers into
``layers/`` and writes each record to ``tmp/`` and renames it into
``images/`` (atomic). A killed import leaves only ``tmp/*``, which the next
store operation that can take the lock removes, together with any layer no
record names. Removing a layer renames it into ``tmp/`` first, so it
vanishes at once.

Layers in use: a running container's overlay mount needs its layers to stay.
``hold(image)`` takes a shared flock on each layer's ``.complete`` for as
long as the container lives; the store never deletes a layer it cannot lock
exclusively (it is left for a later sweep).

Errors: ``ImageError`` (one line for the user; ``procview`` maps it to exit
125) and its subclass ``ImageNotFound``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections import namedtuple
from collections.abc import Iterator

from procview._io import remove_tree
from procview.runtime.images.reference import PATTERNS as REFERENCE_PATTERNS, BadReference, parse as parse_reference



def _log():
    # logging, hashlib, tempfile and urllib are imported where they are
    # used: ``procview run`` reads this module on its way to a container
    # and uses none of them (docs/performance.md).
    import logging

    return logging.getLogger(__name__)

DEFAULT_ROOT = "/var/lib/procview-runtime"
CONFIG_KEYS = ("Env", "Cmd", "Entrypoint", "WorkingDir", "User")

class ImageError(Exception):
    """An image operation failed; the message is one line for the user."""


class ImageNotFound(ImageError):
    """No image has that name (or ID)."""


class Image(namedtuple("Image", "name id layers config")):
    """A stored image: ``name`` ("busybox:latest"), ``id`` ("sha256:<hex>"
    of the image config), ``layers`` (absolute layer directories, bottom
    layer first, a tuple) and ``config`` (a dict: Env, Cmd, Entrypoint,
    WorkingDir, User, each optional)."""

    __slots__ = ()

    @property
    def diff_ids(self) -> list[str]:
        """The layers' digests (``sha256:<hex>``), bottom first."""
        return ["sha256:" + os.path.basename(os.path.dirname(layer)) for layer in self.layers]


# -- references ----------------------------------------------------------------------

# The grammar of names lives in ``reference.py``; these are the store's own patterns
# (image IDs), compiled on first use. The fork server compiles all of them
# once for all runs.
_ID = r"(?:sha256:)?([0-9a-f]{4,64})"
_HEX64 = r"[0-9a-f]{64}"
PATTERNS = (*REFERENCE_PATTERNS, _ID, _HEX64)


def normalize_reference(name: str, digest_ok: bool = False) -> str:
    """The name an image is stored under: ``NAME:TAG`` in Docker's familiar
    form (the tag defaults to ``latest``; ``docker.io/`` and ``library/``
    are dropped), or ``NAME@sha256:<hex>`` for a digest reference when
    ``digest_ok`` (what ``procview pull`` stores by digest; names given to
    import and commit need a tag). Raises ``ImageError`` for anything else."""
    try:
        parsed = parse_reference(name)
    except BadReference as exc:
        raise ImageError(str(exc)) from None
    if parsed.digest and not digest_ok:
        raise ImageError(f"{name}: a digest names an image pulled by digest, not a new name; use NAME[:TAG]")
    return parsed.stored_name


def derived_name(path: str, tag: str | None = None) -> str:
    """An image name from an archive's file name (``alpine-3.19.tar.gz`` ->
    ``alpine-3.19:latest``), for archives that carry none."""
    base = os.path.basename(os.path.normpath(path)).lower()
    while True:
        stem, ext = os.path.splitext(base)
        if ext not in (".tar", ".tgz", ".gz", ".xz", ".txz", ".bz2", ".tbz2", ".zst", ".oci") or not stem:
            break
        base = stem
    base = re.sub(r"[^a-z0-9._-]+", "-", base)
    base = re.sub(r"[._-]{2,}", "-", base).strip("._-")
    try:
        return normalize_reference(f"{base}:{tag or 'latest'}")
    except ImageError:
        raise ImageError(f"{path}: the archive names no image and its file name gives none: use --name NAME:TAG") from None


def _record_file(name: str) -> str:
    """The record's file name: the name percent-encoded as
    ``urllib.parse.quote(name, safe="")`` does (``/``, ``:``, ``@`` and
    anything else but letters, digits and ``_.-~``), without importing
    urllib on ``procview run``'s path."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "_.-~") else "".join(f"%{b:02X}" for b in c.encode())
                   for c in name) + ".json"


# -- progress ------------------------------------------------------------------------

# What a report shows of a layer being unpacked, and once it is.
IMPORT_WORDS = ("Importing", "Import complete")
PULL_WORDS = ("Extracting", "Pull complete")
# ... and of a layer the store has, which is only read to verify it.
VERIFY_WORDS = ("Verifying", "Already exists")


def _reporter(report):
    """``report``, or one that shows nothing."""
    if report is not None:
        return report
    from procview.runtime.images.progress import Silent

    return Silent()


class _LayerReport:
    """One layer's part of a ``progress.Report``: its key, size and words."""

    def __init__(self, report, key: str, total: int, words: tuple[str, str]):
        self._report = report
        self._key = key
        self._total = total
        self._words = words

    def begin(self, reuse: bool) -> None:
        """The layer is read to be unpacked, or (``reuse``) only verified."""
        if reuse:
            self._words = VERIFY_WORDS
        self._report.start(self._key, self._words[0], self._total)

    def add(self, n: int) -> None:
        self._report.progress(self._key, n, self._total)

    def end(self) -> None:
        self._report.layer(self._key, self._words[1])


class _Decompression:
    """``open_archive``'s ``on_decompress`` for a compressed archive: the
    whole file shows as one bar, ``archive: Decompressing``."""

    KEY = "archive"

    def __init__(self, report, path: str):
        self._report = report
        self._path = path
        self._total: int | None = None

    def add(self, n: int) -> None:
        if self._total is None:
            self._total = os.path.getsize(self._path)
            self._report.start(self.KEY, "Decompressing", self._total)
        self._report.progress(self.KEY, n, self._total)

    def finish(self) -> None:
        if self._total is not None:
            self._report.layer(self.KEY, "Decompressed")


# -- layer holds ---------------------------------------------------------------------


class LayerHold:
    """Shared locks on an image's layers (see ``ImageStore.hold``)."""

    def __init__(self, fds: list[int]):
        self._fds = fds

    def close(self) -> None:
        fds, self._fds = self._fds, []
        for fd in fds:
            os.close(fd)

    def __enter__(self) -> LayerHold:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- the store -----------------------------------------------------------------------


class _Staged(namedtuple("_Staged", "diff_id size path")):
    """A layer of an import: ``path`` is where it was unpacked in the work
    directory, None when it is already stored."""

    __slots__ = ()


class ImageStore:
    """Images and layers under ``root`` (see the module docstring)."""

    def __init__(self, root: str):
        self.root = os.path.abspath(root)
        self._layers = os.path.join(self.root, "layers")
        self._images = os.path.join(self.root, "images")
        self._tmp = os.path.join(self.root, "tmp")
        self._lockfile = os.path.join(self.root, ".lock")

    # -- reading ----------------------------------------------------------------

    def get(self, reference: str) -> Image:
        """The image named ``reference`` (``busybox`` is ``busybox:latest``),
        or with that ID (``sha256:<hex>``, or 4+ leading hex digits)."""
        self._tidy()
        _, record = self._find(reference)
        image = self._image(record)
        for diff in image.layers:
            if not os.path.isfile(os.path.join(os.path.dirname(diff), ".complete")):
                raise ImageError(f"image {image.name}: layer {os.path.basename(os.path.dirname(diff))[:12]} is missing; remove the image and import it again")
        return image

    def list(self) -> list[Image]:
        """Every image, sorted by name (damaged records are skipped)."""
        self._tidy()
        images = []
        for path, record in self._records():
            if record is None:
                _log().warning("%s: damaged image record skipped", path)
                continue
            images.append(self._image(record))
        return sorted(images, key=lambda image: image.name)

    def layer_dirs(self, diff_ids: list[str]) -> tuple[str, ...]:
        """The directories of the layers ``diff_ids`` (as ``Image.layers``)."""
        return tuple(os.path.join(self._layer_dir(d), "diff") for d in diff_ids)

    def layer_size(self, layer: str) -> int:
        """Bytes of file content in a layer directory (``Image.layers``
        entry), as counted when it was unpacked; 0 when unknown."""
        try:
            with open(os.path.join(os.path.dirname(layer), ".complete")) as f:
                return int(json.load(f).get("size", 0))
        except (OSError, ValueError, AttributeError):
            return 0

    def prune(self) -> tuple[int, int]:
        """Delete every layer no image uses and no container holds:
        (layers deleted, bytes of content reclaimed)."""
        with self._locked():
            return self._sweep()

    def hold(self, image: Image) -> LayerHold:
        """Keep ``image``'s layers from being deleted (by ``remove``, or a
        re-import that moves its name) until the returned hold is closed.
        For a running container's overlay mount. Raises ``ImageNotFound``
        when a layer was removed meanwhile."""
        fds: list[int] = []
        try:
            for diff in dict.fromkeys(image.layers):
                marker = os.path.join(os.path.dirname(diff), ".complete")
                try:
                    fd = os.open(marker, os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    raise ImageNotFound(f"image {image.name} was removed") from None
                fds.append(fd)
                fcntl.flock(fd, fcntl.LOCK_SH)
                try:
                    if not os.path.samestat(os.fstat(fd), os.stat(marker)):
                        raise FileNotFoundError(marker)
                except FileNotFoundError:
                    raise ImageNotFound(f"image {image.name} was removed") from None
        except BaseException:
            LayerHold(fds).close()
            raise
        return LayerHold(fds)

    # -- changing ---------------------------------------------------------------

    def import_path(self, path: str, name: str | None = None, report=None) -> Image:
        """Import the archive at ``path`` (docker save, OCI layout or root
        file system tar; see ``importers``) and return its (first) image."""
        return self.import_archive(path, name, report)[0]

    def import_archive(self, path: str, name: str | None = None, report=None) -> list[Image]:
        """Import every image of the archive at ``path``; ``name`` renames a
        single-image archive. ``report`` (a ``progress.Report``) is told
        about every layer as it is read and unpacked. Nothing is stored
        unless all of it verifies."""
        if name is not None:
            name = normalize_reference(name)
        with self._locked():
            return self._import(path, [name] if name else None, report)

    def import_pulled(self, label: str, source, name: str, report=None) -> Image:
        """Store an image ``procview pull`` fetched: ``source`` is an
        ``importers.ImageSource`` (its config verified against the
        manifest) whose layer blobs are downloaded files, or ``open=None``
        for a layer already stored (by diff_id). The layers go through an
        import's verification (blob digest, diff_id, safe extraction),
        ``report`` told of each (``Extracting``, ``Pull complete``);
        ``name`` is the stored name, ``label`` names the image in messages."""
        import tempfile

        with self._locked():
            work = tempfile.mkdtemp(prefix="pull-", dir=self._tmp)
            try:
                staged = self._stage_all(label, [source], work, _reporter(report), PULL_WORDS)
                return self._store(label, [source], [[name]], staged, None)[0]
            finally:
                remove_tree(work)

    def has_layer(self, diff_id: str) -> bool:
        """Whether the layer ``diff_id`` ("sha256:<hex>") is stored."""
        return self._complete(diff_id)

    def remove(self, reference: str) -> None:
        """Remove the image's record, then the layers no other image uses
        (and no container holds)."""
        with self._locked():
            path, record = self._find(reference, for_removal=True)
            os.unlink(path)
            self._fsync_dir(self._images)
            self._sweep()

    def ensure_busybox(self) -> Image:
        """The built-in ``busybox:latest``, made on first use from the host's
        static busybox (see ``busybox.py``)."""
        from procview.runtime.images import busybox

        try:
            return self.get(busybox.NAME)
        except ImageNotFound:
            pass
        binary = busybox.find_static_busybox()
        if binary is None:
            raise ImageError(busybox.MISSING)
        with self._locked():
            try:
                return self.get(busybox.NAME)
            except ImageNotFound:
                pass
            import tempfile

            work = tempfile.mkdtemp(prefix="busybox-", dir=self._tmp)
            try:
                tar = os.path.join(work, "busybox.tar")
                try:
                    with open(tar, "wb") as out:
                        busybox.write_layer(binary, out)
                except (OSError, ValueError) as exc:
                    raise ImageError(f"cannot build the busybox image from {binary}: {exc}") from None
                return self._import(tar, [busybox.NAME], None, config=busybox.CONFIG)[0]
            finally:
                remove_tree(work)

    def commit(self, base_diff_ids: list[str], upper: str, name: str, config: dict,
               skip=None) -> Image:
        """A new image ``name``: the layers ``base_diff_ids`` (bottom first)
        and, on top, ``upper`` (a container's overlay upper directory) packed
        as a layer, without the paths ``skip`` rejects. ``config``: the
        image config (``CONFIG_KEYS``)."""
        import tempfile

        from procview.runtime.images import extract, importers, pack

        name = normalize_reference(name)
        with self._locked():
            for diff_id in base_diff_ids:
                if not self._complete(diff_id):
                    raise ImageError(f"the container's image layer {diff_id.removeprefix('sha256:')[:12]} is gone")
            work = tempfile.mkdtemp(prefix="commit-", dir=self._tmp)
            try:
                tar_path = os.path.join(work, "layer.tar")
                try:
                    with open(tar_path, "wb") as out:
                        pack.write_layer(upper, out, skip)
                    dest = os.path.join(work, "layer")
                    os.mkdir(dest, 0o700)
                    with open(tar_path, "rb") as f:
                        tar = importers.Digesting(f)
                        size = extract.extract_layer(tar, os.path.join(dest, "diff")).size
                        tar.drain()
                except (OSError, extract.LayerError) as exc:
                    raise ImageError(f"cannot pack the container's changes: {exc}") from None
                diff_id = tar.digest
                staged = [_Staged(diff_id, size, None if self._complete(diff_id) else dest)]
                diff_ids = [*base_diff_ids, diff_id]
                record = {"name": name, "id": _synthetic_id(config, diff_ids), "diff_ids": diff_ids,
                          "config": json.loads(json.dumps(config))}
                try:
                    self._commit(staged, [record])
                except OSError as exc:
                    raise ImageError(f"cannot store the image under {self.root}: {exc}") from None
                return self._image(record)
            finally:
                remove_tree(work)

    def tag(self, source: str, target: str) -> Image:
        """Name the image ``source`` also ``target`` (``NAME[:TAG]``), as
        ``docker tag``: a second record with the same ID, layers and
        config. An image that had the name ``target`` loses it."""
        target = normalize_reference(target)
        image = self.get_or_builtin(source)
        with self._locked():
            _, record = self._find(image.id)
            record = {**record, "name": target}
            try:
                self._commit([], [record])
            except OSError as exc:
                raise ImageError(f"cannot store the image under {self.root}: {exc}") from None
            return self._image(record)

    def export(self, reference: str, path: str, report=None) -> tuple[Image, str]:
        """Write the image as a ``docker save`` archive to ``path`` (``-``:
        standard output); a file appears only when complete. ``report``
        (a ``progress.Report``) is told about every layer as it is packed.
        Returns the image and the archive's image ID, which differs from
        the stored one when a layer packs to other bytes than it came in."""
        import tempfile

        from procview.runtime.images.export import write_archive
        from procview.runtime.images.importers import runtime_platform

        image = self.get_or_builtin(reference)
        report = _reporter(report)
        with self.hold(image):
            if path == "-":
                out = os.fdopen(os.dup(1), "wb")
                with out:
                    return image, write_archive(image.name, image.config, image.layers, out, runtime_platform()[0], report)
            directory = os.path.dirname(os.path.abspath(path))
            fd, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
            try:
                with os.fdopen(fd, "wb") as out:
                    archive_id = write_archive(image.name, image.config, image.layers, out, runtime_platform()[0], report)
                    out.flush()
                    os.fsync(out.fileno())
                os.chmod(temporary, 0o644)
                os.replace(temporary, path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary)
                raise
        return image, archive_id

    def get_or_builtin(self, reference: str) -> Image:
        """``get``, except that the built-in busybox is made if asked for
        (what ``export``, ``tag`` and ``procview push`` read)."""
        from procview.runtime.images import busybox

        try:
            return self.get(reference)
        except ImageNotFound:
            try:
                builtin = normalize_reference(reference) == busybox.NAME
            except ImageError:
                builtin = False
            if not builtin:
                raise
            return self.ensure_busybox()

    # -- import -----------------------------------------------------------------

    def _import(self, path: str, names: list[str] | None, report, config: dict | None = None) -> list[Image]:
        """Import with the lock held; ``config`` replaces the image config
        (the built-in busybox's)."""
        import tempfile

        from procview.runtime.images import importers

        report = _reporter(report)
        work = tempfile.mkdtemp(prefix="import-", dir=self._tmp)
        try:
            try:
                decompression = _Decompression(report, path)
                with importers.open_archive(path, work, on_decompress=decompression.add) as archive:
                    decompression.finish()
                    sources = archive.images()
                    if not sources:
                        raise importers.ArchiveError("holds no image for this machine")
                    plans = self._plan(path, sources, names)
                    staged = self._stage_all(path, sources, work, report, IMPORT_WORDS)
            except importers.CorruptArchive as exc:
                raise ImageError(f"{path}: corrupt or truncated archive ({exc})") from None
            except importers.ArchiveError as exc:
                raise ImageError(f"{path}: {exc}") from None
            except OSError as exc:
                raise ImageError(f"{path}: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename and exc.filename != path else "")) from None
            return self._store(path, sources, plans, staged, config)
        finally:
            remove_tree(work)

    def _store(self, path: str, sources: list, plans: list[list[str]], staged: list[list[_Staged]],
               config: dict | None) -> list[Image]:
        """Write the records of verified, staged images (lock held): each
        source under its names in ``plans``."""
        import hashlib

        records = []
        for source, image_names, layers in zip(sources, plans, staged):
            diff_ids = [layer.diff_id for layer in layers]
            runtime_config = _runtime_config(source.config, path) if config is None else json.loads(json.dumps(config))
            if source.config_bytes is not None:
                image_id = "sha256:" + hashlib.sha256(source.config_bytes).hexdigest()
            else:
                image_id = _synthetic_id(runtime_config, diff_ids)
            for image_name in image_names:
                records.append({"name": image_name, "id": image_id, "diff_ids": diff_ids, "config": runtime_config})
        try:
            self._commit([layer for layers in staged for layer in layers], records)
        except OSError as exc:  # what got in place is swept by the next operation
            raise ImageError(f"{path}: cannot store the image under {self.root}: {exc}") from None
        return [self._image(record) for record in records]

    def _plan(self, path: str, sources: list, names: list[str] | None) -> list[list[str]]:
        """The names each image of the archive is stored under."""
        if names is not None:
            if len(sources) != 1:
                raise ImageError(f"{path}: the archive holds {len(sources)} images; --name needs a single-image archive")
            return [names]
        plans = []
        for source in sources:
            found = [normalize_reference(n) for n in source.names if n and n != "<none>:<none>"]
            if not found:
                if len(sources) > 1:
                    raise ImageError(f"{path}: an image of the archive has no name; import a single-image archive with --name")
                found = [derived_name(path, source.tag)]
            plans.append(list(dict.fromkeys(found)))
        return plans

    def _stage_all(self, path: str, sources: list, work: str, report, words: tuple[str, str]) -> list[list[_Staged]]:
        """Read, unpack and verify every layer into ``work``; a layer already
        stored (or seen earlier in this archive) is only verified.
        ``words``: what ``report`` shows of a layer being unpacked, and
        once it is (``IMPORT_WORDS``, ``PULL_WORDS``)."""
        by_diff: dict[str, _Staged] = {}
        result = []
        count = 0
        for source in sources:
            if not source.layers:
                raise ImageError(f"{path}: an image of the archive has no layers")
            layers = []
            for blob in source.layers:
                count += 1
                key = blob.digest or blob.diff_id or f"layer {count}"
                layers.append(self._stage(path, blob, os.path.join(work, f"layer-{count}"), by_diff,
                                          _LayerReport(report, key, blob.size, words)))
            result.append(layers)
        return result

    def _stage(self, path: str, blob, dest: str, by_diff: dict[str, _Staged], report: _LayerReport) -> _Staged:
        """Unpack one layer blob into ``dest`` (or only hash it, when its
        diff_id is already stored) and check its digests."""
        from procview.runtime.images import extract, importers

        known = blob.diff_id
        if blob.open is None:  # a pulled layer the puller found stored, so did not fetch
            if known is None or not (known in by_diff or self._complete(known)):
                raise ImageError(f"{path}: {blob.label}: the stored layer was removed meanwhile; pull again")
            return by_diff.setdefault(known, _Staged(known, 0, None))
        reuse = known is not None and (known in by_diff or self._complete(known))
        report.begin(reuse)
        size = 0
        try:
            with blob.open() as stream:
                raw = importers.Digesting(stream, report.add)
                tar = importers.Digesting(importers.decompressed(raw))
                if reuse:
                    tar.drain()
                else:
                    os.mkdir(dest, 0o700)
                    size = extract.extract_layer(tar, os.path.join(dest, "diff")).size
                    tar.drain()
                raw.drain()
        except extract.CorruptLayer as exc:
            raise ImageError(f"{path}: corrupt or truncated archive ({blob.label}: {exc})") from None
        except extract.LayerError as exc:
            raise ImageError(f"{path}: {blob.label}: {exc}") from None
        except importers.CorruptArchive as exc:
            raise ImageError(f"{path}: corrupt or truncated archive ({blob.label}: {exc})") from None
        except importers.ArchiveError as exc:
            raise ImageError(f"{path}: {blob.label}: {exc}") from None
        except OSError as exc:
            raise ImageError(f"{path}: {blob.label}: cannot unpack: {exc}") from None
        if blob.digest is not None and raw.digest != blob.digest:
            raise ImageError(f"{path}: {blob.label}: content does not match its digest {blob.digest} (got {raw.digest})")
        if known is not None and tar.digest != known:
            raise ImageError(f"{path}: {blob.label}: uncompressed content does not match its diff_id {known} (got {tar.digest})")
        diff_id = tar.digest
        if diff_id in by_diff or self._complete(diff_id):
            if not reuse:
                remove_tree(dest)
            staged = by_diff.get(diff_id) or _Staged(diff_id, 0, None)
        else:
            staged = _Staged(diff_id, size, dest)
        by_diff[diff_id] = staged
        report.end()
        return staged

    def _commit(self, staged: list[_Staged], records: list[dict]) -> None:
        """Move the new layers into place, then write the records."""
        for layer in staged:
            if layer.path is None or not os.path.isdir(layer.path):
                continue
            _write_file(os.path.join(layer.path, ".complete"), json.dumps({"diff_id": layer.diff_id, "size": layer.size}).encode())
            target = self._layer_dir(layer.diff_id)
            if os.path.lexists(target):  # an incomplete leftover
                self._delete_layer(os.path.basename(target))
            os.rename(layer.path, target)
        self._fsync_dir(self._layers)
        for record in records:
            tmp = os.path.join(self._tmp, f"record-{os.urandom(8).hex()}.json")
            _write_file(tmp, json.dumps(record, indent=2, sort_keys=True).encode() + b"\n")
            os.rename(tmp, os.path.join(self._images, _record_file(record["name"])))
        self._fsync_dir(self._images)
        self._sweep()  # a moved name may have left an older image's layers unused

    # -- records ----------------------------------------------------------------

    def _layer_dir(self, diff_id: str) -> str:
        return os.path.join(self._layers, diff_id.removeprefix("sha256:"))

    def _complete(self, diff_id: str) -> bool:
        return os.path.isfile(os.path.join(self._layer_dir(diff_id), ".complete"))

    def _image(self, record: dict) -> Image:
        return Image(name=record["name"], id=record["id"], layers=self.layer_dirs(record["diff_ids"]),
                     config=dict(record["config"]))

    def _records(self) -> Iterator[tuple[str, dict | None]]:
        """(path, record) of every image record; record None when damaged."""
        try:
            files = sorted(os.listdir(self._images))
        except FileNotFoundError:
            return
        for entry in files:
            if entry.endswith(".json"):
                path = os.path.join(self._images, entry)
                yield path, _load_record(path)

    def _find(self, reference: str, for_removal: bool = False) -> tuple[str, dict]:
        if not reference.startswith("sha256:"):
            try:
                name = normalize_reference(reference, digest_ok=True)
            except ImageError:
                name = None
                if not re.fullmatch(_ID, reference):
                    raise
            if name is not None:
                path = os.path.join(self._images, _record_file(name))
                if os.path.exists(path):
                    record = _load_record(path)
                    if record is None:
                        raise ImageError(f"image record {path} is damaged; delete it and import the image again")
                    return path, record
        m = re.fullmatch(_ID, reference)
        if m:
            matches = [(p, r) for p, r in self._records() if r is not None and r["id"].removeprefix("sha256:").startswith(m.group(1))]
            ids = {r["id"] for _, r in matches}
            if len(ids) > 1:
                raise ImageError(f"{reference}: ambiguous image ID prefix (matches {len(ids)} images)")
            if matches:
                if for_removal and len(matches) > 1:
                    names = ", ".join(r["name"] for _, r in matches)
                    raise ImageError(f"image {reference} has several names ({names}): remove them by name")
                return matches[0]
        raise ImageNotFound(f"no such image: {reference}")

    # -- housekeeping -----------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            for d in (self.root, self._layers, self._images, self._tmp):
                os.makedirs(d, mode=0o700, exist_ok=True)
            fd = os.open(self._lockfile, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise ImageError(f"cannot use the image store {self.root}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._recover()
            yield
        finally:
            os.close(fd)

    def _tidy(self) -> None:
        """Remove a killed import's leftovers, if no other store operation runs."""
        try:
            fd = os.open(self._lockfile, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._recover()
        except OSError:
            pass
        finally:
            os.close(fd)

    def _recover(self) -> None:
        """After a killed operation (lock held): empty tmp/, then delete the
        layers it may have left without a record."""
        entries = os.listdir(self._tmp)
        if not entries:
            return
        _log().info("%s: removing what an interrupted operation left in tmp/", self.root)
        for entry in entries:
            path = os.path.join(self._tmp, entry)
            if os.path.isdir(path) and not os.path.islink(path):
                remove_tree(path)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        self._sweep()

    def _sweep(self) -> tuple[int, int]:
        """Delete layers no record names and nobody holds (lock held):
        (layers deleted, bytes reclaimed)."""
        used = self._container_layers()
        for path, record in self._records():
            if record is None:
                _log().warning("%s: damaged image record: not deleting unused layers", path)
                return 0, 0
            used.update(d.removeprefix("sha256:") for d in record["diff_ids"])
        try:
            entries = os.listdir(self._layers)
        except FileNotFoundError:
            return 0, 0
        deleted = reclaimed = 0
        for entry in entries:
            if entry not in used:
                size = self.layer_size(os.path.join(self._layers, entry, "diff"))
                if self._delete_layer(entry):
                    deleted, reclaimed = deleted + 1, reclaimed + size
        return deleted, reclaimed

    def _container_layers(self) -> set[str]:
        """The layers that containers, running or stopped, were made from
        (``ROOT/records/*/state.json``, field ``layers``): a stopped
        container can still be diffed, committed and restarted, so its
        layers stay even when its image is removed (as Docker keeps them)."""
        records = os.path.join(self.root, "records")
        used: set[str] = set()
        try:
            entries = os.listdir(records)
        except FileNotFoundError:
            return used
        for entry in entries:
            try:
                with open(os.path.join(records, entry, "state.json")) as f:
                    layers = json.load(f).get("layers") or []
            except (OSError, ValueError, AttributeError):
                continue
            used.update(str(d).removeprefix("sha256:") for d in layers)
        return used

    def _delete_layer(self, entry: str) -> bool:
        path = os.path.join(self._layers, entry)
        fd = None
        try:
            fd = os.open(os.path.join(path, ".complete"), os.O_RDONLY | os.O_CLOEXEC)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _log().info("layer %s is in use: kept until it is released", entry[:12])
            os.close(fd)
            return False
        except FileNotFoundError:
            pass  # no marker: not a complete layer
        try:
            doomed = os.path.join(self._tmp, f"deleted-{entry[:12]}-{os.urandom(4).hex()}")
            os.rename(path, doomed)
        finally:
            if fd is not None:
                os.close(fd)
        remove_tree(doomed)
        return True

    @staticmethod
    def _fsync_dir(path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# -- helpers -------------------------------------------------------------------------


def _write_file(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _load_record(path: str) -> dict | None:
    try:
        with open(path, "rb") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    ok = (
        isinstance(record, dict)
        and isinstance(record.get("name"), str)
        and isinstance(record.get("id"), str)
        and isinstance(record.get("config"), dict)
        and isinstance(record.get("diff_ids"), list)
        and all(isinstance(d, str) and re.fullmatch(_HEX64, d.removeprefix("sha256:")) for d in record["diff_ids"])
    )
    return record if ok else None


def _runtime_config(config: dict, path: str) -> dict:
    """The part of an image config ``procview run`` uses (``CONFIG_KEYS``)."""
    section = config.get("config") or {}
    if not isinstance(section, dict):
        raise ImageError(f"{path}: the image config's \"config\" is not an object")
    out = {}
    for key in CONFIG_KEYS:
        value = section.get(key)
        if value is None:
            continue
        if key in ("WorkingDir", "User"):
            ok = isinstance(value, str)
        else:
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        if not ok:
            kind = "a string" if key in ("WorkingDir", "User") else "a list of strings"
            raise ImageError(f"{path}: the image config's {key} must be {kind}")
        if value != "":
            out[key] = value
    return out


def _synthetic_id(config: dict, diff_ids: list[str]) -> str:
    """The ID of an image procview made (from a root file system tar, or a
    commit): the digest of the config ``image export`` writes for it."""
    import hashlib

    from procview.runtime.images.export import image_config
    from procview.runtime.images.importers import runtime_platform

    return "sha256:" + hashlib.sha256(image_config(config, diff_ids, runtime_platform()[0])).hexdigest()
