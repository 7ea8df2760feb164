"""What a container changed: ``procview diff``, and what ``commit`` keeps.

A container writes only to its own overlay upper directory; its image's
layers stay as they were. So its changes are the upper directory read
against the image (``docker diff`` semantics, one line per path, sorted):

- ``A /path``: added, nothing of that name in the image;
- ``C /path``: changed, the image has it too. A directory is changed as
  soon as something in it is (overlayfs copies it up), so ``C /etc``
  comes with ``A /etc/motd``;
- ``D /path``: deleted: a whiteout in the upper directory. A directory
  that was removed and made again is *opaque* (it hides everything the
  image had there): it is ``C``, and every name the image had in it and
  the new one lacks is ``D``.

Paths that are not the container's own content never count: the init
layer's files the runtime bind-mounts (``/etc/hosts``, ``/etc/hostname``,
``/etc/resolv.conf``) and the volumes, with everything under them. The
same rule (``excluded``) keeps them out of a commit.

``layers`` are the image's layer directories, bottom first, in overlay
form (``ImageStore``'s ``Image.layers``).
"""

from __future__ import annotations

import os
import stat
from typing import Callable, NamedTuple

from procview.runtime.images.extract import is_whiteout
from procview.runtime.images.pack import is_opaque
from procview.runtime.rootfs import INIT_FILES

ADDED, CHANGED, DELETED = "A", "C", "D"


class Change(NamedTuple):
    kind: str  # A, C or D
    path: str  # absolute in the container: "/etc/motd"

    def __str__(self) -> str:
        return f"{self.kind} {self.path}"


def excluded(volume_targets: tuple[str, ...] | list[str]) -> Callable[[str], bool]:
    """The predicate over layer-relative paths (``etc/hosts``) that leaves
    out the init layer's files and the volumes (and what is under them)."""
    roots = {p for p in INIT_FILES}
    roots.update(os.path.normpath(target).strip("/") for target in volume_targets)
    roots.discard("")

    def skip(path: str) -> bool:
        while path:
            if path in roots:
                return True
            path = path.rpartition("/")[0]
        return False

    return skip


def changes(upper: str, layers: tuple[str, ...], skip: Callable[[str], bool] | None = None) -> list[Change]:
    """The container's changes against its image, sorted by path."""
    skip = skip or (lambda _path: False)
    found: list[Change] = []
    _scan(upper, layers, skip, "", found)
    return sorted(found, key=lambda change: os.fsencode(change.path))


def _scan(upper: str, layers: tuple[str, ...], skip, relative: str, found: list[Change]) -> None:
    for base in os.listdir(os.path.join(upper, relative)):
        name = f"{relative}/{base}" if relative else base
        if skip(name):
            continue
        path = os.path.join(upper, name)
        st = os.lstat(path)
        in_image = image_lstat(layers, name) is not None
        if is_whiteout(st):
            if in_image:  # a whiteout over nothing hides nothing
                found.append(Change(DELETED, "/" + name))
            continue
        found.append(Change(CHANGED if in_image else ADDED, "/" + name))
        if stat.S_ISDIR(st.st_mode):
            if in_image and is_opaque(path):
                mine = set(os.listdir(path))
                for gone in image_listdir(layers, name) - mine:
                    if not skip(f"{name}/{gone}"):
                        found.append(Change(DELETED, f"/{name}/{gone}"))
            _scan(upper, layers, skip, name, found)


# -- the image's merged tree, read from its layers -----------------------------------


def image_lstat(layers: tuple[str, ...], name: str) -> os.stat_result | None:
    """lstat of ``name`` (layer-relative) as the merged image shows it, or
    None when the image has nothing there."""
    parts = name.split("/")
    for layer in reversed(layers):
        st, hides_lower = _look(layer, parts)
        if st is not None:
            return None if is_whiteout(st) else st
        if hides_lower:
            return None
    return None


def image_listdir(layers: tuple[str, ...], name: str) -> set[str]:
    """The names the merged image shows in directory ``name``."""
    parts = name.split("/")
    shown: set[str] = set()
    gone: set[str] = set()
    for layer in reversed(layers):
        st, hides_lower = _look(layer, parts)
        if st is not None and stat.S_ISDIR(st.st_mode):
            path = os.path.join(layer, *parts)
            for entry in os.listdir(path):
                if entry not in shown and entry not in gone:
                    (gone if is_whiteout(os.lstat(os.path.join(path, entry))) else shown).add(entry)
        elif st is not None:
            break  # a whiteout or a file: no directory here from this layer down
        if hides_lower:
            break
    return shown


def _look(layer: str, parts: list[str]) -> tuple[os.stat_result | None, bool]:
    """One layer's say on ``parts``: its entry there (None if it has none),
    and whether it hides what the layers below have there: a whiteout or a
    non-directory on the way or at the end, or an opaque directory."""
    hides_lower = False
    for depth in range(1, len(parts) + 1):
        path = os.path.join(layer, *parts[:depth])
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None, hides_lower
        last = depth == len(parts)
        if is_whiteout(st) or not stat.S_ISDIR(st.st_mode):
            return (st if last else None), True
        if is_opaque(path):
            hides_lower = True
        if last:
            return st, hides_lower
    return None, hides_lower
