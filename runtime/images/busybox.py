"""The built-in ``busybox:latest`` image, made from the host's static busybox.

``write_layer(busybox, out)`` writes the image's single layer as a tar:
``/bin/busybox`` (a copy of the host's binary), one symlink to it per applet
at the path ``busybox --list-full`` gives (``usr/bin/free`` ...), a minimal
``/etc/passwd`` and ``/etc/group`` (root and nobody), and the usual empty
directories (``/tmp`` 1777, ``/root`` 0700, ``/home``, ``/var``, ``/proc``,
``/sys``, ``/dev``). ``/etc/hostname``, ``hosts`` and ``resolv.conf`` are
left out: the runtime bind-mounts them. Every entry is owned by root (when
made as root, as ``procview run`` does) and dated with the binary's mtime,
so the same busybox always gives the same layer digest. The store imports the tar like any root file system tar
(``ImageStore.ensure_busybox``), with ``CONFIG`` as the image config.

The binary must be static: the container has no dynamic loader or libc.
``is_static_elf`` reads the ELF program headers itself (no ``ldd``): a
binary is static when none of them is ``PT_INTERP``.
"""

from __future__ import annotations

import os
import struct
import subprocess
from typing import BinaryIO

NAME = "busybox:latest"
CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CONFIG = {"Cmd": ["sh"], "Env": [f"PATH={DEFAULT_PATH}"]}
MISSING = "the built-in busybox image needs a static busybox: apt-get install busybox-static"

PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n"
GROUP = "root:x:0:\nnobody:x:65534:\n"
# (path, mode) of the directories, parents first.
DIRECTORIES = (
    ("bin", 0o755), ("dev", 0o755), ("etc", 0o755), ("home", 0o755), ("proc", 0o555),
    ("root", 0o700), ("sbin", 0o755), ("sys", 0o555), ("tmp", 0o1777), ("usr", 0o755),
    ("usr/bin", 0o755), ("usr/sbin", 0o755), ("var", 0o755),
)

PT_INTERP = 3
_ET_EXEC, _ET_DYN = 2, 3


class ElfError(ValueError):
    """Not an ELF executable this module can read."""


def is_static_elf(path: str) -> bool:
    """True when the ELF executable at ``path`` has no ``PT_INTERP`` program
    header (static, including static-pie). Raises ``ElfError`` for a file
    that is not an ELF executable, ``OSError`` when it cannot be read."""
    with open(path, "rb") as f:
        ident = f.read(16)
        if len(ident) < 16 or ident[:4] != b"\x7fELF":
            raise ElfError(f"{path}: not an ELF file")
        elf_class, data = ident[4], ident[5]
        if data not in (1, 2) or elf_class not in (1, 2):
            raise ElfError(f"{path}: unknown ELF class or byte order")
        end = "<" if data == 1 else ">"
        if elf_class == 1:  # ELF32: e_type..e_shstrndx after e_ident
            fmt = end + "HHIIIIIHHHHHH"
        else:  # ELF64
            fmt = end + "HHIQQQIHHHHHH"
        header = f.read(struct.calcsize(fmt))
        if len(header) < struct.calcsize(fmt):
            raise ElfError(f"{path}: truncated ELF header")
        e_type, _machine, _version, _entry, e_phoff, _shoff, _flags, _ehsize, e_phentsize, e_phnum, *_ = struct.unpack(fmt, header)
        if e_type not in (_ET_EXEC, _ET_DYN):
            raise ElfError(f"{path}: not an ELF executable (e_type {e_type})")
        if e_phnum and e_phentsize < 4:
            raise ElfError(f"{path}: bad program header size {e_phentsize}")
        for i in range(e_phnum):
            f.seek(e_phoff + i * e_phentsize)
            raw = f.read(4)
            if len(raw) < 4:
                raise ElfError(f"{path}: truncated program headers")
            if struct.unpack(end + "I", raw)[0] == PT_INTERP:
                return False
    return True


def find_static_busybox(candidates: tuple[str, ...] = CANDIDATES) -> str | None:
    """The first candidate that is a static busybox (symlinks resolved)."""
    for candidate in candidates:
        path = os.path.realpath(candidate)
        try:
            if os.path.isfile(path) and os.access(path, os.X_OK) and is_static_elf(path):
                return path
        except (OSError, ElfError):
            continue
    return None


def applets(busybox: str) -> list[str]:
    """Applet paths relative to / (``usr/bin/free``), from ``--list-full``."""
    out = subprocess.run([busybox, "--list-full"], capture_output=True, text=True, check=True, timeout=30).stdout
    paths = []
    for line in out.split():
        line = line.strip("/")
        if "/" in line and ".." not in line.split("/") and line != "bin/busybox":
            paths.append(line)
    return sorted(set(paths))


def write_layer(busybox: str, out: BinaryIO) -> None:
    """Write the image's layer, as an uncompressed tar, to ``out``.

    The tree is laid out in a scratch directory and packed with
    ``pack.write_layer``, the packer ``commit`` and ``image export`` use: a
    canonical tar, so exporting the image packs the very same bytes and
    its digest survives export and import."""
    import shutil
    import tempfile

    from procview.runtime.images.pack import write_layer as pack

    st = os.stat(busybox)
    mtime = int(st.st_mtime)
    links = applets(busybox)
    dirs = dict(DIRECTORIES)
    for link in links:  # applets in directories the list above lacks
        parent = link.rpartition("/")[0]
        while parent and parent not in dirs:
            dirs[parent] = 0o755
            parent = parent.rpartition("/")[0]
    scratch = tempfile.mkdtemp(prefix="procview-busybox-")
    try:
        tree = os.path.join(scratch, "rootfs")
        for name in sorted(dirs):
            os.makedirs(os.path.join(tree, name), exist_ok=True)
        shutil.copyfile(busybox, os.path.join(tree, "bin/busybox"))
        os.chmod(os.path.join(tree, "bin/busybox"), 0o755)
        for name, text in (("etc/group", GROUP), ("etc/passwd", PASSWD)):
            with open(os.path.join(tree, name), "w") as f:
                f.write(text)
            os.chmod(os.path.join(tree, name), 0o644)
        for link in links:
            os.symlink("/bin/busybox", os.path.join(tree, link))
        # Owned by root, dated like the binary (directories last, deepest
        # first, as creating their content changed their times).
        for directory, subdirs, files in os.walk(tree, topdown=False):
            for name in files + [d for d in subdirs if os.path.islink(os.path.join(directory, d))]:
                path = os.path.join(directory, name)
                if os.geteuid() == 0:
                    os.lchown(path, 0, 0)
                os.utime(path, (mtime, mtime), follow_symlinks=False)
        for name in sorted(dirs, key=lambda n: -n.count("/")):
            path = os.path.join(tree, name)
            os.chmod(path, dirs[name])
            if os.geteuid() == 0:
                os.chown(path, 0, 0)
            os.utime(path, (mtime, mtime))
        pack(tree, out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
