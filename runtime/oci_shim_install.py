"""Install ``procview-runc`` on a node, for engines that run it on the host.

containerd runs the OCI runtime that a runtime's ``BinaryName`` names (and
so Kubernetes does, through a ``RuntimeClass``) on the host, outside every
container: the shim must be a file of the host's. procview as a whole
cannot be put there from a container image (pyfuse3 is compiled against one
Python and one libfuse3), but the shim needs almost nothing: the standard
library and a few of procview's modules. This copies exactly those::

    DEST/bin/procview-runc                     a launcher for the node's python3
    DEST/lib/procview-runc-HASH/procview/...   the shim's modules

The modules are found by following the ``import`` statements of
``procview.runtime.oci_shim`` and of every procview module they reach (a
walk over the source, not a list kept by hand), so a new import in the shim
is copied too; an import from outside the standard library is refused,
because the node's python3 would not have it.

The launcher runs ``python3 -I -S``: isolated (no ``PYTHON*`` variables, no
user site, not the script's directory) and without ``site``, so nothing on
the node, not even another procview installed in its Python, is imported
instead of these copies. It finds its modules next to itself
(``../lib``), so it works at whatever path the host sees DEST.

containerd may run the shim at any moment, so the install is atomic: the
module directory is complete before it gets its name (HASH: of its content,
so an unchanged shim is not copied again), and the launcher is a new file
renamed over the old one. The directory the old launcher named stays (a
shim started just before may still import from it); older ones go.

Run in the DaemonSet's init container (deploy/kubernetes/procview.yaml)::

    python -m procview.runtime.oci_shim_install [--python /usr/bin/python3] DEST

Exit status 0: installed (one line says where); 1: not installed (one line
says why); 2: bad usage.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.util
import os
import shutil
import sys

SHIM_MODULE = "procview.runtime.oci_shim"
LAUNCHER = "procview-runc"
LIB_PREFIX = "procview-runc-"
DEFAULT_PYTHON = "/usr/bin/python3"
# Names the launcher as this installer's: any other file at its path (a
# virtualenv's procview-runc, say) is left alone.
MARKER = "# Installed by procview.runtime.oci_shim_install"

LAUNCHER_TEXT = """#!{python} -IS
# procview-runc: runc with procview's view added (docs/engines.md, docs/kubernetes.md).
{marker} from procview {version};
# every install replaces this file: do not edit it.
import os
import sys

LIB = "{lib}"
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), "lib", LIB))
from procview.runtime.oci_shim import main

sys.exit(main())
"""


class InstallError(Exception):
    """The shim cannot be installed (one line for the user)."""


# -- pure: which modules, which files, which launcher ------------------------------


def imported_names(source: str, module: str, is_package: bool) -> set[str]:
    """Absolute names of what ``module``'s ``source`` imports, anywhere in
    it (the shim imports lazily, inside functions). ``from a import b``
    gives ``a`` and ``a.b``: b may be a module or a name in a; the caller
    keeps what exists."""
    package = module if is_package else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def with_parents(module: str) -> list[str]:
    """``a.b.c`` -> ``["a", "a.b", "a.b.c"]``: importing a module imports
    every package above it."""
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def is_stdlib(module: str) -> bool:
    return module.partition(".")[0] in sys.stdlib_module_names


def lib_name(files: dict[str, bytes]) -> str:
    """The module directory's name: a digest of every path and content."""
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.encode() + b"\0" + files[path] + b"\0")
    return LIB_PREFIX + digest.hexdigest()[:16]


def launcher_text(python: str, lib: str, version: str) -> str:
    return LAUNCHER_TEXT.format(python=python, lib=lib, version=version, marker=MARKER)


def lib_of_launcher(text: str) -> str | None:
    """The module directory an installed launcher names."""
    for line in text.splitlines():
        if line.startswith('LIB = "') and line.endswith('"'):
            return line[len('LIB = "'):-1]
    return None


# -- reading the shim's sources ------------------------------------------------------


def shim_files(root: str = SHIM_MODULE) -> dict[str, bytes]:
    """``{relative path: content}`` of ``root`` and every module of its
    package (procview) it imports, directly or not, with the packages above
    them (``procview/__init__.py``...). Raises InstallError for an import
    the node's Python cannot satisfy."""
    package = root.partition(".")[0]
    files: dict[str, bytes] = {}
    seen: set[str] = set()
    pending = with_parents(root)
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
            raise InstallError(f"{name}: no Python source to copy (the shim imports it)")
        with open(spec.origin, "rb") as f:
            source = f.read()
        is_package = spec.submodule_search_locations is not None
        path = name.replace(".", "/") + ("/__init__.py" if is_package else ".py")
        files[path] = source
        for imported in imported_names(source.decode(), name, is_package):
            if imported.partition(".")[0] == package:
                if imported not in seen and _exists(imported):
                    pending.extend(with_parents(imported))
            elif not is_stdlib(imported):
                raise InstallError(f"{name} imports {imported}, which is not in Python's standard library: "
                                   "the node's python3 would not have it")
    return files


def _exists(module: str) -> bool:
    """Whether ``module`` is a module (not a name inside one)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


# -- the edge: writing DEST ----------------------------------------------------------


def install(dest: str, python: str = DEFAULT_PYTHON) -> str:
    """Install the shim into ``dest``; returns the launcher's path."""
    from procview import __version__

    files = shim_files()
    lib = lib_name(files)
    bin_dir, lib_dir = os.path.join(dest, "bin"), os.path.join(dest, "lib")
    launcher = os.path.join(bin_dir, LAUNCHER)
    previous = _our_previous_lib(launcher)
    for directory in (dest, bin_dir, lib_dir):
        os.makedirs(directory, mode=0o755, exist_ok=True)
    _write_lib(os.path.join(lib_dir, lib), files)
    _replace_file(launcher, launcher_text(python, lib, __version__).encode(), 0o755)
    _remove_stale(lib_dir, keep={lib, previous})
    return launcher


def _our_previous_lib(launcher: str) -> str | None:
    """The module directory the installed launcher names; InstallError if
    the file at its path is not one of ours."""
    try:
        with open(launcher, "rb") as f:
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return None
    if MARKER not in text:
        raise InstallError(f"{launcher} exists and was not installed by procview.runtime.oci_shim_install "
                           "(a procview virtualenv's?): left alone; remove it, or install elsewhere")
    return lib_of_launcher(text)


def _write_lib(path: str, files: dict[str, bytes]) -> None:
    """The module directory, complete before it gets its name."""
    if os.path.isdir(path):
        return  # named by its content: already the same
    staging = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    for relative, content in files.items():
        target = os.path.join(staging, relative)
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        _write_file(target, content, 0o644)
    os.rename(staging, path)


def _replace_file(path: str, content: bytes, mode: int) -> None:
    """A new file renamed over ``path``: readers see the old or the new one."""
    temporary = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    _write_file(temporary, content, mode)
    os.rename(temporary, path)


def _write_file(path: str, content: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # whatever the umask
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_stale(lib_dir: str, keep: set) -> None:
    """Older module directories, and staging ones a killed install left."""
    for name in os.listdir(lib_dir):
        stale = name.startswith(LIB_PREFIX) or (name.startswith("." + LIB_PREFIX) and name.endswith(".tmp"))
        if stale and name not in keep:
            shutil.rmtree(os.path.join(lib_dir, name), ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m procview.runtime.oci_shim_install",
        description="Install procview-runc (the OCI runtime shim) for engines that run it on the host.")
    parser.add_argument("dest", metavar="DEST", help="the installation's root as this process sees it (the "
                        "launcher is DEST/bin/procview-runc), e.g. the host's /opt/procview mounted at /host/opt/procview")
    parser.add_argument("--python", default=DEFAULT_PYTHON,
                        help=f"the node's Python 3, for the launcher's #! line (default: {DEFAULT_PYTHON})")
    args = parser.parse_args(argv)
    if not os.path.isabs(args.python):
        parser.error(f"--python must be an absolute path (a #! line), not {args.python!r}")
    try:
        launcher = install(args.dest, args.python)
    except (InstallError, OSError) as exc:
        print(f"procview-runc install: {exc}", file=sys.stderr)
        return 1
    print(f"procview-runc installed: {launcher} (runs with {args.python})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
