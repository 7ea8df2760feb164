"""A Debian root file system for test images, made from this host's own
installed packages: no registry, no network, no debootstrap.

``rootfs_tar(packages, path)`` writes a tar archive of the named Debian
packages and everything they depend on (``Depends`` and ``Pre-Depends``,
resolved against ``/var/lib/dpkg/status``), each with the files
``dpkg-query -L`` lists for it. Engines import the archive as an image
(``docker import``), so the tools inside a test container are the real
Debian binaries, with their real libraries, at their real paths.

Two things are not in any package's file list and are added by hand:

- the merged-/usr links (``/bin -> usr/bin`` and friends, as on the host),
  and the empty mount points an engine expects (``/proc``, ``/sys``,
  ``/dev``, ``/tmp``...);
- ``/etc/passwd`` and ``/etc/group`` with root alone, and the host's
  ``/etc/ld.so.cache`` (made by ``ldconfig``, never packaged): without it
  the dynamic loader would still find the multiarch libraries, but more
  slowly, and not every Debian build agrees on the default path.

The pure parts (reading the status file, the dependency closure) take
text and return values; ``tests/unit/test_debian_rootfs.py`` holds them
to Debian's field syntax.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import tarfile
from dataclasses import dataclass, field

STATUS_FILE = "/var/lib/dpkg/status"
# The links Debian 12's merged /usr has at the top of the file system.
MERGED_USR_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
MOUNT_POINTS = {"proc": 0o555, "sys": 0o555, "dev": 0o755, "tmp": 0o1777, "run": 0o755, "root": 0o700, "etc": 0o755}


@dataclass(frozen=True)
class Package:
    name: str
    provides: tuple[str, ...] = ()
    # Each inner tuple is one dependency's alternatives ("a | b").
    depends: tuple[tuple[str, ...], ...] = field(default=())


def _relation_names(value: str) -> tuple[tuple[str, ...], ...]:
    """``"libc6 (>= 2.34), mawk | awk, python3:any"`` ->
    ``(("libc6",), ("mawk", "awk"), ("python3",))``: versions and
    architecture qualifiers dropped."""
    relations = []
    for relation in value.split(","):
        names = []
        for alternative in relation.split("|"):
            name = re.sub(r"\(.*?\)|\[.*?\]|<.*?>", "", alternative).strip().split(":")[0]
            if name:
                names.append(name)
        if names:
            relations.append(tuple(names))
    return tuple(relations)


def installed_packages(status_text: str) -> dict[str, Package]:
    """The packages ``dpkg``'s status file says are installed, by name."""
    packages = {}
    for stanza in status_text.split("\n\n"):
        fields: dict[str, str] = {}
        key = None
        for line in stanza.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += " " + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if not fields.get("Package") or not fields.get("Status", "").endswith(" installed"):
            continue
        depends = _relation_names(fields.get("Pre-Depends", "")) + _relation_names(fields.get("Depends", ""))
        provides = tuple(names[0] for names in _relation_names(fields.get("Provides", "")))
        packages[fields["Package"]] = Package(fields["Package"], provides, depends)
    return packages


def dependency_closure(wanted: list[str], installed: dict[str, Package]) -> list[str]:
    """``wanted`` and all they depend on, as installed package names.

    An alternative is satisfied by the first of its names that is
    installed, or provided by an installed package (``awk`` by ``mawk``).
    A wanted package that is not installed is an error; a dependency no
    installed package satisfies is one too (dpkg would not have allowed it).
    """
    providers: dict[str, list[str]] = {}
    for package in installed.values():
        for virtual in package.provides:
            providers.setdefault(virtual, []).append(package.name)

    def resolve(names: tuple[str, ...]) -> str:
        for name in names:
            if name in installed:
                return name
            if providers.get(name):
                return sorted(providers[name])[0]
        raise LookupError(f"no installed package satisfies {' | '.join(names)}")

    missing = [name for name in wanted if name not in installed]
    if missing:
        raise LookupError(f"not installed: {', '.join(missing)}")
    seen: set[str] = set()
    todo = list(wanted)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(resolve(names) for names in installed[name].depends)
    return sorted(seen)


def _package_files(package: str) -> list[str]:
    listing = subprocess.run(["dpkg-query", "-L", package], capture_output=True, text=True, check=True)
    return [line for line in listing.stdout.splitlines() if line.startswith("/")]


def _canonical(path: str) -> str:
    """The path under merged /usr: ``/bin/ls`` -> ``/usr/bin/ls`` (dpkg may
    list either; the archive holds each file once, at its real place)."""
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def _add_text(archive: tarfile.TarFile, name: str, text: str, mode: int = 0o644) -> None:
    data = text.encode()
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    archive.addfile(info, io.BytesIO(data))


def _add_directory(archive: tarfile.TarFile, name: str, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    archive.addfile(info)


def rootfs_tar(packages: list[str], path: str) -> list[str]:
    """Writes the root file system of ``packages`` (and their dependencies)
    to the tar archive ``path``; returns the packages it holds."""
    with open(STATUS_FILE) as f:
        names = dependency_closure(packages, installed_packages(f.read()))
    files = sorted({_canonical(p) for name in names for p in _package_files(name)})
    with tarfile.open(path, "w") as archive:
        added: set[str] = set()  # an engine refuses a layer naming a path twice
        links = [link for link in MERGED_USR_LINKS if os.path.islink("/" + link)]
        for link in links:
            info = tarfile.TarInfo(link)
            info.type, info.linkname, info.mode = tarfile.SYMTYPE, os.readlink("/" + link), 0o777
            archive.addfile(info)
            added.add(link)
        for file in files:
            name = file.lstrip("/")
            # dpkg lists what it installed; a path excluded since
            # (dpkg's path-exclude, a removed doc) is simply not there.
            if name and name not in added and name.split("/")[0] not in links and os.path.lexists(file):
                archive.add(file, arcname=name, recursive=False, filter=_as_root)
                added.add(name)
        for name, mode in MOUNT_POINTS.items():
            if name not in added:
                _add_directory(archive, name, mode)
        _add_text(archive, "etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")
        _add_text(archive, "etc/group", "root:x:0:\n")
        if os.path.exists("/etc/ld.so.cache"):
            archive.add("/etc/ld.so.cache", arcname="etc/ld.so.cache", filter=_as_root)
    return names


def _as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info
