"""The seccomp programs a container loads, compiled once per distinct input.

Compiling a profile (``runtime.security.seccomp``: parse, resolve, build
through libseccomp) costs ~50 ms; loading the bytes costs nothing. So the
BPF program is kept in ``ROOT/seccomp/KEY.bpf``, where KEY is a sha256 of
everything the program depends on: the profile's bytes, the container's
bounding set, the machine, the kernel release, libseccomp's version and
the compiler's own ``FORMAT_VERSION``. A cache hit needs only this module;
the compiler (with its profile model) is imported on a miss.
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
    key = None
    if cache_dir is not None:
        key = cache_key(text, caps, machine, release)
        cached = _read_cache(cache_dir, key)
        if cached is not None:
            return cached
    from runtime.security import seccomp

    profile = seccomp.parse_profile(text, source)
    program = seccomp.build(seccomp.resolve(profile, caps, machine, seccomp.parse_kernel_version(release)), machine, warn)
    if key is not None:
        _write_cache(cache_dir, key, program)
    return program


def view_program(cache_dir: str | None = None) -> bytes:
    """``seccomp.build_view_filter()``, built once per machine, kernel and libseccomp."""
    machine, release = os.uname().machine, os.uname().release
    key = None
    if cache_dir is not None:
        key = cache_key(VIEW_FILTER_VERSION, frozenset(), machine, release)
        cached = _read_cache(cache_dir, key)
        if cached is not None:
            return cached
    from runtime.security.seccomp import build_view_filter

    program = build_view_filter()
    if key is not None:
        _write_cache(cache_dir, key, program)
    return program


def cache_key(text: bytes, caps: frozenset[str], machine: str, release: str) -> str:
    import hashlib  # OpenSSL's: ~4 ms to load, so only where a key is made

    digest = hashlib.sha256()
    for part in (str(FORMAT_VERSION).encode(), text, ",".join(sorted(caps)).encode(), machine.encode(), release.encode(),
                 _libseccomp_version().encode()):
        digest.update(len(part).to_bytes(8, "little") + part)
    return digest.hexdigest()


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


def _read_cache(cache_dir: str, key: str) -> bytes | None:
    try:
        with open(os.path.join(cache_dir, key + ".bpf"), "rb") as f:
            program = f.read()
    except OSError:
        return None
    return program if program and len(program) % 8 == 0 else None


def _write_cache(cache_dir: str, key: str, program: bytes) -> None:
    try:
        os.makedirs(cache_dir, mode=0o700, exist_ok=True)
        path = os.path.join(cache_dir, key + ".bpf")
        temporary = f"{path}.{os.getpid()}.tmp"
        with open(temporary, "wb") as f:
            f.write(program)
        os.rename(temporary, path)  # atomic: a concurrent run reads all or nothing
    except OSError:
        pass  # a cache, not a requirement
