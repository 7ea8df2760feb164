"""Packing a layer: an overlay-form directory back into a layer tar.

``write_layer(directory, out)`` is the inverse of ``extract.extract_layer``.
It serves two callers: ``procview commit`` packs a container's upper
directory, and ``procview image export`` packs the stored layers of an
image. Both directories are in overlayfs's form, and a layer tar speaks the
OCI image-spec's:

- a **whiteout** (a character device 0/0 named ``D/NAME``) becomes an empty
  regular file ``D/.wh.NAME``, mode 0600, as Docker's overlay2 driver
  writes it;
- an **opaque directory** (xattr ``trusted.overlay.opaque=y``) is written
  as the directory itself followed by an empty ``D/.wh..wh..opq``;
- overlayfs's own xattrs (``trusted.overlay.*``: origin, impure, ...) stay
  out; every other xattr goes into a PAX ``SCHILY.xattr.*`` record;
- files with several links inside the directory are written once, and
  each further name as a hard link to the first;
- sockets are skipped (they mean nothing outside a running system).

The output is **canonical**: entries in sorted order (a directory before
its children), numeric owners only, mtimes in whole seconds, no atime or
ctime. So packing what ``extract_layer`` unpacked from a canonical tar
gives the same bytes, and the same digest: a layer procview wrote keeps
its ``diff_id`` through export and import.

``skip(path)`` leaves out a path (``"etc/hosts"``, layer-relative) and
everything under it; ``commit`` uses it for volumes and the init layer's
files.
"""

from __future__ import annotations

import os
import stat
import tarfile
from typing import BinaryIO, Callable

from procview.runtime.images.extract import IGNORED_XATTR_PREFIXES, OPAQUE_MARKER, OPAQUE_XATTR, WHITEOUT_PREFIX, is_whiteout

_PAX_XATTR = "SCHILY.xattr."


def is_opaque(path: str) -> bool:
    """Whether the directory at ``path`` hides the lower layers' content."""
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def write_layer(directory: str, out: BinaryIO, skip: Callable[[str], bool] | None = None) -> int:
    """Write ``directory`` (overlay form) to ``out`` as an uncompressed layer
    tar; return the bytes of file content written."""
    skip = skip or (lambda _path: False)
    first_name: dict[tuple[int, int], str] = {}  # (st_dev, st_ino) -> name, for hard links
    size = 0
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8",
                      errors="surrogateescape") as tar:
        for name, path, st in _walk(directory, skip):
            if is_whiteout(st):
                head, _, base = name.rpartition("/")
                tar.addfile(_header(f"{head}/{WHITEOUT_PREFIX}{base}".lstrip("/"), st, tarfile.REGTYPE, 0o600))
                continue
            if stat.S_ISSOCK(st.st_mode):
                continue
            info = _header(name, st, _type_of(st), st.st_mode & 0o7777)
            info.pax_headers = _xattrs(path)
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                if key in first_name:
                    info.type, info.linkname = tarfile.LNKTYPE, first_name[key]
                    tar.addfile(info)
                    continue
                first_name[key] = name
            if stat.S_ISREG(st.st_mode):
                info.size = st.st_size
                with open(path, "rb") as f:
                    tar.addfile(info, f)
                size += st.st_size
            elif stat.S_ISLNK(st.st_mode):
                info.linkname = os.readlink(path)
                tar.addfile(info)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
                tar.addfile(info)
            else:  # directories, FIFOs
                tar.addfile(info)
            if stat.S_ISDIR(st.st_mode) and is_opaque(path):
                tar.addfile(_header(f"{name}/{OPAQUE_MARKER}", st, tarfile.REGTYPE, st.st_mode & 0o777))
    return size


def _walk(directory: str, skip: Callable[[str], bool], relative: str = ""):
    """(layer-relative name, path, lstat) of everything under ``directory``,
    sorted by name, each directory before its children; the root itself is
    left out (a layer does not change the container's ``/``)."""
    for base in sorted(os.listdir(os.path.join(directory, relative)), key=os.fsencode):
        name = f"{relative}/{base}" if relative else base
        if skip(name):
            continue
        path = os.path.join(directory, name)
        st = os.lstat(path)
        yield name, path, st
        if stat.S_ISDIR(st.st_mode):
            yield from _walk(directory, skip, name)


def _type_of(st: os.stat_result) -> bytes:
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        return tarfile.DIRTYPE
    if stat.S_ISLNK(mode):
        return tarfile.SYMTYPE
    if stat.S_ISCHR(mode):
        return tarfile.CHRTYPE
    if stat.S_ISBLK(mode):
        return tarfile.BLKTYPE
    if stat.S_ISFIFO(mode):
        return tarfile.FIFOTYPE
    return tarfile.REGTYPE


def _header(name: str, st: os.stat_result, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name + "/" if kind == tarfile.DIRTYPE else name)
    info.type, info.mode = kind, mode
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname = info.gname = ""
    info.mtime = int(st.st_mtime)
    return info


def _xattrs(path: str) -> dict[str, str]:
    try:
        names = sorted(os.listxattr(path, follow_symlinks=False))
    except OSError:
        return {}
    records = {}
    for attr in names:
        if attr.startswith(IGNORED_XATTR_PREFIXES):
            continue
        try:
            value = os.getxattr(path, attr, follow_symlinks=False)
        except OSError:
            continue
        records[_PAX_XATTR + attr] = value.decode("utf-8", "surrogateescape")
    return records
