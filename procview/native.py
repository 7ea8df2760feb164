"""The C libraries procview loads, and where they come from.

procview is Python, but two of its jobs are C libraries' work: the FUSE
mount (libfuse3, which pyfuse3's extension module links) and seccomp
filters (libseccomp, through pyseccomp and ctypes). A wheel cannot carry
them; the distribution does. When one is missing, the user gets one line
that names it and the Debian package to install, never a traceback.
"""

# The library as the loader names it -> the Debian package that provides it
# (fuse3 pulls in libfuse3-3 and brings fusermount3 along).
DEBIAN_PACKAGES = {"libfuse3": "fuse3", "libseccomp": "libseccomp2"}


def cannot_load(library: str, reason: object) -> str:
    """The one line that says ``library`` is missing and how to install it."""
    package = DEBIAN_PACKAGES[library]
    return f"{library} cannot be loaded ({reason}): install Debian's {package} package (apt-get install {package})"


def explain_import_error(exc: ImportError) -> str:
    """One line for an ImportError of a dependency: a missing C library
    named as such, anything else as a broken installation."""
    for library in DEBIAN_PACKAGES:
        if library in str(exc):
            return cannot_load(library, exc)
    return f"cannot import {exc.name or 'a dependency'} ({exc}): reinstall procview (pip install procview)"
