"""The seccomp programs a container loads, compiled once per distinct input.

Compiling a profile (``procview.runtime.security.seccomp``: parse, resolve, build
through libseccomp) costs ~50 ms; loading the bytes costs nothing. So each
BPF program is kept in ``ROOT/seccomp/``, in a file that holds the exact
inputs it was built from (the profile's bytes, the container's bounding
set, the machine, the kernel release, libseccomp's version and the
compiler's own ``FORMAT_VERSION``) followed by the program. A hit is a
byte-for-byte match of those inputs, so no digest is needed: the file's
name is only a CRC-32 of them, to find it (two inputs with the same CRC
take turns in one file; neither is ever given the other's program). A hit
needs only this module: not the compiler and its profile model, nor
hashlib, whose OpenSSL alone costs ~5 ms of every start.
"""

from __future__ import annotations

import os

FORMAT_VERSION = 1  # bump when seccomp.build() changes what it emits
VIEW_FILTER_VERSION = b"procview view filter 1"  # change with seccomp.build_view_filter()

DEFAULT_PROFILE = os.path.join(os.path.dirname(__file__), "default_profile.json")


class SeccompError(ValueError):
    """A profile procview cannot use (the message says what and where)."""


def read_profile_text(path: str | None) -> tuple[bytes, str]:
    """The profile's bytes and a name for messages (None: the default)."""
    source = path or DEFAULT_PROFILE
    try:
        with open(source, "rb") as f:
            return f.read(), (path or "default profile")
    except OSError as exc:
        raise SeccompError(f"seccomp profile {source}: {exc.strerror}") from None


def program_for(text: bytes, source: str, caps: frozenset[str], warn=None, cache_dir: str | None = None) -> bytes:
    """The BPF program for profile ``text`` and bounding set ``caps`` on
    this machine (with ``cache_dir``: built once per distinct input)."""
    machine, release = os.uname().machine, os.uname().release
    inputs = None
    if cache_dir is not None:
        inputs = cache_inputs(text, caps, machine, release)
        cached = _read_cache(cache_dir, inputs)
        if cached is not None:
            return cached
    from procview.runtime.security import seccomp

    profile = seccomp.parse_profile(text, source)
    program = seccomp.build(seccomp.resolve(profile, caps, machine, seccomp.parse_kernel_version(release)), machine, warn)
    if inputs is not None:
        _write_cache(cache_dir, inputs, program)
    return program


def view_program(cache_dir: str | None = None) -> bytes:
    """``seccomp.build_view_filter()``, built once per machine, kernel and libseccomp."""
    machine, release = os.uname().machine, os.uname().release
    inputs = None
    if cache_dir is not None:
        inputs = cache_inputs(VIEW_FILTER_VERSION, frozenset(), machine, release)
        cached = _read_cache(cache_dir, inputs)
        if cached is not None:
            return cached
    from procview.runtime.security.seccomp import build_view_filter

    program = build_view_filter()
    if inputs is not None:
        _write_cache(cache_dir, inputs, program)
    return program


def cache_inputs(text: bytes, caps: frozenset[str], machine: str, release: str) -> bytes:
    """Everything a program depends on, as one byte string (each part
    length-prefixed, so no two different inputs run together alike)."""
    parts = (str(FORMAT_VERSION).encode(), text, ",".join(sorted(caps)).encode(), machine.encode(), release.encode(),
             _libseccomp_version().encode())
    return b"".join(len(part).to_bytes(8, "little") + part for part in parts)


def _cache_path(cache_dir: str, inputs: bytes) -> str:
    import zlib  # only its small C module: no OpenSSL (hashlib) on the run path

    return os.path.join(cache_dir, f"{zlib.crc32(inputs):08x}.bpf")


def _libseccomp_version() -> str:
    """libseccomp's version, for the cache key. dlopen by soname, not
    through pyseccomp: importing it costs ~40 ms (find_library runs
    ldconfig), which is what the cache saves."""
    import ctypes

    try:
        lib = ctypes.CDLL("libseccomp.so.2")
        lib.seccomp_version.restype = ctypes.POINTER(ctypes.c_uint * 3)
        return ".".join(str(v) for v in lib.seccomp_version().contents)
    except (OSError, AttributeError, ValueError):
        return "unknown"


def _read_cache(cache_dir: str, inputs: bytes) -> bytes | None:
    """The program stored for exactly ``inputs``, or None. File layout:
    the inputs' length (8 bytes, little-endian), the inputs, the program."""
    try:
        with open(_cache_path(cache_dir, inputs), "rb") as f:
            stored = f.read()
    except OSError:
        return None
    size = int.from_bytes(stored[:8], "little")
    if stored[8:8 + size] != inputs:
        return None  # another input with the same CRC, or a damaged file
    program = stored[8 + size:]
    return program if program and len(program) % 8 == 0 else None


def _write_cache(cache_dir: str, inputs: bytes, program: bytes) -> None:
    try:
        os.makedirs(cache_dir, mode=0o700, exist_ok=True)
        path = _cache_path(cache_dir, inputs)
        temporary = f"{path}.{os.getpid()}.tmp"
        with open(temporary, "wb") as f:
            f.write(len(inputs).to_bytes(8, "little") + inputs + program)
        os.rename(temporary, path)  # atomic: a concurrent run reads all or nothing
    except OSError:
        pass  # a cache, not a requirement
