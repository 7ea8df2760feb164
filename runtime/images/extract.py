"""Safe extraction of one image layer (a tar stream) into a directory.

``extract_layer(stream, dest)`` unpacks a layer the way Docker's overlay2
driver does, so that ``dest`` can serve as an overlayfs lower directory:

- **Whiteouts.** ``D/.wh.NAME`` becomes a character device 0/0 named
  ``D/NAME`` (overlayfs's whiteout); ``D/.wh..wh..opq`` sets the xattr
  ``trusted.overlay.opaque=y`` on ``D`` and is not written itself. Malformed
  whiteouts (``.wh.``, ``.wh..``, ``.wh...``, a ``.wh.`` name used as a
  directory, ``.wh..wh.*`` other than the opaque marker) are refused. The
  AUFS metadata directories at the top (``.wh..wh.plnk`` and friends) are
  skipped, as Docker skips them. A whiteout only applies to *lower* layers
  (image-spec ``layer.md``): when this layer also has an entry ``D/NAME``,
  that entry stays (it hides the lower one by itself); when ``NAME`` is a
  directory of this layer, it becomes opaque instead.
- **Nothing is written outside ``dest``.** Names are made relative as
  Docker does: a leading ``/`` is stripped (``/etc/x`` is ``etc/x`` of the
  layer) and ``..`` is resolved by name; a name whose ``..`` climbs above the
  layer's root is refused. Every parent directory is opened component by
  component with ``O_NOFOLLOW|O_DIRECTORY`` relative to the previous one
  (``dir_fd``), so no symlink can redirect a write: an entry that would
  write through a symlink the layer created (``a -> /etc``, then
  ``a/passwd``) is refused ("breakout"), whatever the link points to.
  Symlinks themselves are stored as they are (their targets are resolved
  inside the container's root, never here).
- **Hardlinks** must point to an entry already extracted from this same
  layer (a link name is layer-relative, like an entry name: ``/etc/passwd``
  means the layer's ``etc/passwd``); a target that climbs out, is missing,
  or is a directory is refused. The link is made with ``linkat`` without
  following symlinks.
- **Device nodes.** Character and block devices are created only when
  running as root (as Docker does), inside ``dest`` like any entry; without
  root they are skipped with a warning (Docker does the same in a user
  namespace). FIFOs are always created. Whether a container may *use* a
  device is the device cgroup's business, not the image's.
- **Metadata.** Owner (as root), mode with setuid/setgid/sticky bits (set
  after the owner: chown clears them), mtime (and PAX atime), and xattrs
  from PAX ``SCHILY.xattr.*`` records. ``trusted.overlay.*`` and
  ``user.overlay.*`` xattrs from the tar are ignored: a layer expresses
  overlay semantics only through whiteout entries. xattrs the file system
  refuses (ENOTSUP, EPERM) are skipped with a warning, as Docker does.
  Directory modes and times are applied after the last entry, so that
  creating children neither needs write permission nor bumps the mtime.
- **Corrupt or truncated streams** raise ``CorruptLayer``: a short member,
  a garbled header, or a stream that ends without an end-of-archive block.
  The stream is read to its end, so a caller hashing it sees every byte.

Errors: ``LayerError`` names the entry and what is wrong with it;
``CorruptLayer`` (a subclass) means the bytes are not a whole tar archive.
File system errors (ENOSPC, EIO) propagate as ``OSError``.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import tarfile
import zlib
from collections import deque
from dataclasses import dataclass
from typing import BinaryIO

log = logging.getLogger(__name__)

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
WHITEOUT_META_PREFIX = ".wh..wh."
OPAQUE_XATTR = "trusted.overlay.opaque"
# Top-level AUFS bookkeeping directories; Docker skips them when unpacking.
AUFS_META_DIRS = frozenset({".wh..wh.plnk", ".wh..wh.aufs", ".wh..wh.orph"})
# xattrs a layer may not set from its tar headers (overlayfs's own).
IGNORED_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.")

_PAX_XATTR = "SCHILY.xattr."
_CHUNK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_BLOCK = tarfile.BLOCKSIZE


class LayerError(Exception):
    """The layer cannot be extracted safely (the message names the entry)."""


class CorruptLayer(LayerError):
    """The layer's bytes are not a whole tar archive."""


@dataclass(frozen=True)
class Extracted:
    """What ``extract_layer`` unpacked."""

    entries: int  # tar entries processed (whiteouts included)
    size: int  # bytes of regular-file content written (hardlinks counted once)


def extract_layer(tar_stream: BinaryIO, dest_dir: str, *, devices: bool | None = None) -> Extracted:
    """Unpack the tar read from ``tar_stream`` (uncompressed) into
    ``dest_dir`` (created if missing), with overlayfs whiteouts.

    ``devices``: create character/block device nodes (default: only when
    running as root). The stream is read to its end.
    """
    if devices is None:
        devices = os.geteuid() == 0
    created = not os.path.isdir(dest_dir)
    os.makedirs(dest_dir, mode=0o755, exist_ok=True)
    root_fd = os.open(dest_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if created:
            os.fchmod(root_fd, 0o755)  # the container's "/" unless the layer has a "./" entry
        extractor = _Extractor(root_fd, devices)
        source = _Recent(tar_stream)
        try:
            entries = extractor.run(source)
        except (tarfile.TarError, EOFError, zlib.error) as exc:
            raise CorruptLayer(str(exc) or type(exc).__name__) from None
        extractor.finish()
    finally:
        os.close(root_fd)
    if extractor.skipped_devices:
        log.warning("%s: skipped %d device node(s): creating them needs root", dest_dir, extractor.skipped_devices)
    return Extracted(entries=entries, size=extractor.size)


# -- names ---------------------------------------------------------------------------


def layer_path(name: str) -> list[str]:
    """The components of a tar entry name relative to the layer's root.

    A leading ``/`` is dropped (Docker: absolute names are layer-relative),
    ``.`` and empty components vanish and ``..`` removes the previous
    component; a ``..`` with nothing left to remove would leave the layer,
    and raises ``LayerError``. ``[]`` is the layer's root itself.
    """
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise LayerError(f"{name!r}: path leaves the layer (breakout)")
            parts.pop()
        else:
            parts.append(part)
    return parts


def is_whiteout(st: os.stat_result) -> bool:
    """overlayfs's whiteout: a character device with device number 0/0."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


# -- the stream ----------------------------------------------------------------------


class _Recent:
    """The caller's stream as tarfile reads it, keeping the last few chunks
    so that the block where tarfile stopped can be inspected afterwards."""

    KEEP = 64 * 1024

    def __init__(self, stream: BinaryIO):
        self._stream = stream
        self.pos = 0
        self._chunks: deque[tuple[int, bytes]] = deque()
        self._kept = 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        if data:
            self._chunks.append((self.pos, data))
            self._kept += len(data)
            self.pos += len(data)
            while self._kept - len(self._chunks[0][1]) >= self.KEEP:
                self._kept -= len(self._chunks.popleft()[1])
        return data

    def block_at(self, offset: int) -> bytes | None:
        """The 512 bytes at ``offset``, if they were read and are still kept."""
        out = bytearray()
        for start, data in self._chunks:
            lo, hi = max(offset, start), min(offset + _BLOCK, start + len(data))
            if lo < hi:
                out += data[lo - start : hi - start]
        return bytes(out) if len(out) == _BLOCK else None

    def drain(self) -> None:
        while self._stream.read(_CHUNK):
            pass


# -- the extractor -------------------------------------------------------------------


class _Extractor:
    def __init__(self, root_fd: int, devices: bool):
        self.root_fd = root_fd
        self.devices = devices
        self.as_root = os.geteuid() == 0
        self.size = 0
        self.skipped_devices = 0
        # (path components, mode, atime_ns, mtime_ns) of every directory entry,
        # applied by finish() once all children exist.
        self.deferred: list[tuple[list[str], int, int, int]] = []
        self._xattr_warned = False

    def run(self, source: _Recent) -> int:
        count = 0
        tf = tarfile.open(fileobj=source, mode="r|", errors="surrogateescape")
        while True:
            member = tf.next()
            if member is None:
                break
            tf.members.clear()  # a streamed layer can hold millions of entries
            self._entry(tf, member)
            count += 1
        block = source.block_at(tf.offset)
        if block is None:
            raise CorruptLayer(f"the archive ends at byte {source.pos} without an end-of-archive block")
        if block.strip(b"\0"):
            raise CorruptLayer(f"invalid tar header at byte {tf.offset}")
        source.drain()
        return count

    # -- one entry ---------------------------------------------------------------

    def _entry(self, tf: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        name = member.name
        parts = layer_path(name)
        if parts and parts[0] in AUFS_META_DIRS:
            log.debug("skipping AUFS metadata %s", name)
            return
        if not parts:
            if not member.isdir():
                raise LayerError(f"{name!r}: would replace the layer's root directory")
            self._owner_and_xattrs(self.root_fd, member, name)
            self._defer(parts, member)
            return
        for part in parts[:-1]:
            if part.startswith(WHITEOUT_PREFIX):
                raise LayerError(f"{name!r}: whiteout name {part!r} used as a directory")
        if parts[-1].startswith(WHITEOUT_PREFIX):
            self._whiteout(member, parts)
            return
        parent = self._open_dir(parts[:-1], name, create=True)
        try:
            base = parts[-1]
            if member.isdir():
                self._directory(parent, base, member, parts)
            elif member.isreg():
                self._regular(tf, parent, base, member)
            elif member.issym():
                self._symlink(parent, base, member)
            elif member.islnk():
                self._hardlink(parent, base, member, parts)
            elif member.ischr() or member.isblk():
                self._device(parent, base, member)
            elif member.isfifo():
                self._clear(parent, base)
                os.mkfifo(base, 0o600, dir_fd=parent)
                self._node_metadata(parent, base, member)
            else:
                raise LayerError(f"{name!r}: unsupported tar entry type {member.type!r}")
        finally:
            os.close(parent)

    def _directory(self, parent: int, base: str, member: tarfile.TarInfo, parts: list[str]) -> None:
        existing = self._clear(parent, base, keep_dir=True)
        if existing is None or not stat.S_ISDIR(existing.st_mode):
            os.mkdir(base, 0o700, dir_fd=parent)
        fd = os.open(base, _DIR_FLAGS, dir_fd=parent)
        try:
            self._owner_and_xattrs(fd, member, member.name)
            if existing is not None and is_whiteout(existing):
                # ".wh.D" then "D/" in one layer: D hides the lower D's content.
                self._set_opaque(fd, member.name)
        finally:
            os.close(fd)
        self._defer(parts, member)

    def _regular(self, tf: tarfile.TarFile, parent: int, base: str, member: tarfile.TarInfo) -> None:
        self._clear(parent, base)
        fd = os.open(base, _FILE_FLAGS, 0o600, dir_fd=parent)
        try:
            data = tf.extractfile(member)
            remaining = member.size
            while remaining:
                chunk = data.read(min(_CHUNK, remaining))
                if not chunk:
                    raise CorruptLayer(f"{member.name!r}: unexpected end of data")
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
                remaining -= len(chunk)
            self.size += member.size
            self._owner_and_xattrs(fd, member, member.name)
            os.fchmod(fd, member.mode & 0o7777)
            os.utime(fd, ns=_times(member))
        finally:
            os.close(fd)

    def _symlink(self, parent: int, base: str, member: tarfile.TarInfo) -> None:
        if not member.linkname:
            raise LayerError(f"{member.name!r}: symlink with an empty target")
        self._clear(parent, base)
        os.symlink(member.linkname, base, dir_fd=parent)
        if self.as_root:
            os.chown(base, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
        self._xattrs(f"/proc/self/fd/{parent}/{base}", member, member.name)
        os.utime(base, ns=_times(member), dir_fd=parent, follow_symlinks=False)

    def _hardlink(self, parent: int, base: str, member: tarfile.TarInfo, parts: list[str]) -> None:
        name, target = member.name, member.linkname
        try:
            tparts = layer_path(target)
        except LayerError:
            raise LayerError(f"{name!r}: hardlink target {target!r} leaves the layer (breakout)") from None
        if not tparts:
            raise LayerError(f"{name!r}: hardlink to the layer's root directory")
        if tparts == parts:
            return
        tparent = self._open_dir(tparts[:-1], name, create=False, what="hardlink target")
        try:
            try:
                st = os.stat(tparts[-1], dir_fd=tparent, follow_symlinks=False)
            except FileNotFoundError:
                raise LayerError(f"{name!r}: hardlink target {target!r} is not in this layer (or comes after the link)") from None
            if stat.S_ISDIR(st.st_mode):
                raise LayerError(f"{name!r}: hardlink target {target!r} is a directory")
            self._clear(parent, base)
            try:
                os.link(tparts[-1], base, src_dir_fd=tparent, dst_dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                raise LayerError(f"{name!r}: hardlink target {target!r} was removed by this entry") from None
        finally:
            os.close(tparent)

    def _device(self, parent: int, base: str, member: tarfile.TarInfo) -> None:
        if not self.devices:
            self.skipped_devices += 1
            log.debug("skipping device node %s", member.name)
            return
        self._clear(parent, base)
        kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
        try:
            os.mknod(base, kind | 0o600, os.makedev(member.devmajor, member.devminor), dir_fd=parent)
        except PermissionError:  # root in a user namespace
            self.skipped_devices += 1
            return
        self._node_metadata(parent, base, member)

    def _node_metadata(self, parent: int, base: str, member: tarfile.TarInfo) -> None:
        """Owner, xattrs, mode and times of a node just created (not a symlink)."""
        if self.as_root:
            os.chown(base, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
        self._xattrs(f"/proc/self/fd/{parent}/{base}", member, member.name)
        os.chmod(base, member.mode & 0o7777, dir_fd=parent)
        os.utime(base, ns=_times(member), dir_fd=parent, follow_symlinks=False)

    # -- whiteouts ---------------------------------------------------------------

    def _whiteout(self, member: tarfile.TarInfo, parts: list[str]) -> None:
        name, base = member.name, parts[-1]
        if member.isdir():
            raise LayerError(f"{name!r}: a whiteout cannot be a directory")
        if base == OPAQUE_MARKER:
            fd = self._open_dir(parts[:-1], name, create=True)
            try:
                self._set_opaque(fd, name)
            finally:
                os.close(fd)
            return
        hidden = base[len(WHITEOUT_PREFIX) :]
        if base.startswith(WHITEOUT_META_PREFIX) or hidden in ("", ".", ".."):
            raise LayerError(f"{name!r}: malformed whiteout {base!r}")
        parent = self._open_dir(parts[:-1], name, create=True)
        try:
            try:
                st = os.stat(hidden, dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                os.mknod(hidden, stat.S_IFCHR, os.makedev(0, 0), dir_fd=parent)
                if self.as_root:
                    os.chown(hidden, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
                # Dated like its entry, so packing the layer again (pack.py)
                # gives the same bytes.
                os.utime(hidden, ns=_times(member), dir_fd=parent, follow_symlinks=False)
                return
            if stat.S_ISDIR(st.st_mode):
                # This layer's own D stays; the whiteout still hides the lower D.
                fd = os.open(hidden, _DIR_FLAGS, dir_fd=parent)
                try:
                    self._set_opaque(fd, name)
                finally:
                    os.close(fd)
            # Any other entry of this layer named `hidden` already hides the
            # lower one, and a whiteout never applies to its own layer.
        finally:
            os.close(parent)

    def _set_opaque(self, dir_fd: int, name: str) -> None:
        try:
            os.setxattr(dir_fd, OPAQUE_XATTR, b"y")
        except OSError as exc:
            raise LayerError(f"{name!r}: cannot mark the directory opaque ({OPAQUE_XATTR}: {exc.strerror}; needs root)") from None

    # -- helpers -----------------------------------------------------------------

    def _open_dir(self, parts: list[str], name: str, *, create: bool, what: str = "entry") -> int:
        """An fd of directory ``parts`` below the layer's root, opened one
        component at a time without following symlinks; missing directories
        are created (0755) when ``create``."""
        fd = os.dup(self.root_fd)
        try:
            for i, part in enumerate(parts):
                try:
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise LayerError(f"{name!r}: {what} directory {'/'.join(parts[: i + 1])!r} is not in this layer") from None
                    os.mkdir(part, 0o755, dir_fd=fd)
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                    os.fchmod(child, 0o755)  # not the umask's choice
                except OSError as exc:
                    if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                        raise
                    prefix = "/".join(parts[: i + 1])
                    st = os.stat(part, dir_fd=fd, follow_symlinks=False)
                    if stat.S_ISLNK(st.st_mode):
                        raise LayerError(f"{name!r}: {prefix!r} is a symlink in this layer; refusing to write through it (breakout)") from None
                    raise LayerError(f"{name!r}: {prefix!r} is not a directory") from None
                os.close(fd)
                fd = child
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _clear(self, parent: int, base: str, *, keep_dir: bool = False) -> os.stat_result | None:
        """Make room for a new entry: remove whatever ``base`` is, except a
        directory when ``keep_dir`` (a directory entry over a directory
        merges, as in Docker). Returns what was there."""
        try:
            st = os.stat(base, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if stat.S_ISDIR(st.st_mode):
            if not keep_dir:
                shutil.rmtree(base, dir_fd=parent)
        else:
            os.unlink(base, dir_fd=parent)
        return st

    def _owner_and_xattrs(self, fd: int, member: tarfile.TarInfo, name: str) -> None:
        if self.as_root:
            os.fchown(fd, member.uid, member.gid)  # before xattrs: chown clears security.capability
        self._xattrs(fd, member, name)

    def _xattrs(self, target: int | str, member: tarfile.TarInfo, name: str) -> None:
        for key, value in member.pax_headers.items():
            if not key.startswith(_PAX_XATTR):
                continue
            attr = key[len(_PAX_XATTR) :]
            if attr.startswith(IGNORED_XATTR_PREFIXES):
                log.debug("%s: ignoring xattr %s from the layer", name, attr)
                continue
            data = value.encode("utf-8", "surrogateescape")
            try:
                if isinstance(target, int):
                    os.setxattr(target, attr, data)
                else:
                    os.setxattr(target, attr, data, follow_symlinks=False)
            except OSError as exc:
                if exc.errno not in (errno.ENOTSUP, errno.EPERM):
                    raise
                if not self._xattr_warned:
                    log.warning("%s: xattr %s not set (%s); further such failures are not reported", name, attr, exc.strerror)
                    self._xattr_warned = True

    def _defer(self, parts: list[str], member: tarfile.TarInfo) -> None:
        atime_ns, mtime_ns = _times(member)
        self.deferred.append((parts, member.mode & 0o7777, atime_ns, mtime_ns))

    def finish(self) -> None:
        """Apply directory modes and times, in tar order (the last entry for
        a directory wins); directories replaced by later entries are skipped."""
        for parts, mode, atime_ns, mtime_ns in self.deferred:
            try:
                fd = self._open_dir(parts, "/".join(parts), create=False)
            except LayerError:
                continue
            try:
                os.fchmod(fd, mode)
                os.utime(fd, ns=(atime_ns, mtime_ns))
            finally:
                os.close(fd)


def _times(member: tarfile.TarInfo) -> tuple[int, int]:
    mtime_ns = int(member.mtime * 1_000_000_000)
    atime = member.pax_headers.get("atime")
    try:
        atime_ns = int(float(atime) * 1_000_000_000) if atime is not None else mtime_ns
    except ValueError:
        atime_ns = mtime_ns
    return atime_ns, mtime_ns
