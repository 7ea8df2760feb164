"""Image references, by Docker's rules (distribution's ``reference`` grammar).

    reference  := name [ ":" tag ] [ "@" digest ]
    name       := [ domain "/" ] component ( "/" component )*
    domain     := host [ ":" port ]       host: DNS labels, or an IPv6 address in []
    component  := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
    tag        := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
    digest     := "sha256:" 64 lowercase hex digits

The first component is a domain only when it looks like one: it holds a
``.`` or a ``:``, or is ``localhost`` (so ``team/app`` is a repository on
Docker Hub, ``registry.example/app`` one on ``registry.example``). No domain
means ``docker.io``, and a one-component name there is an official image:
``busybox`` is ``docker.io/library/busybox:latest``. The tag defaults to
``latest`` unless a digest is given; with both (``app:1@sha256:...``) the
digest decides what is pulled, as in ``docker pull``.

``parse`` is pure: no I/O, one ``BadReference`` with a line for the user.
"""

from __future__ import annotations

import re

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = (r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
           r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]+)?")
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"sha256:[0-9a-f]{64}"
# Compiled (and cached by ``re``) on first use; the fork server compiles
# them once for all runs (``store.PATTERNS``).
PATTERNS = (_COMPONENT, _DOMAIN, _TAG, _DIGEST)

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"  # where docker.io's registry API answers
_HUB_ALIASES = (DOCKER_HUB, "index.docker.io", DOCKER_HUB_API)
USAGE = "use NAME[:TAG] or NAME@sha256:DIGEST, e.g. busybox:latest or registry.example:5000/team/app:1.0"
MAX_NAME = 255


class BadReference(ValueError):
    """Not a valid image reference; the message is one line for the user."""


class Reference:
    """A parsed reference: ``domain`` ("docker.io", "127.0.0.1:5000"),
    ``path`` ("library/busybox"), ``tag`` ("latest", or None when only a
    digest was given) and ``digest`` ("sha256:<hex>" or None). (A plain
    class: a namedtuple's creation costs ``procview run`` ~0.5 ms.)"""

    __slots__ = ("domain", "path", "tag", "digest")

    def __init__(self, domain: str, path: str, tag: str | None, digest: str | None):
        self.domain, self.path, self.tag, self.digest = domain, path, tag, digest

    def __eq__(self, other) -> bool:
        return isinstance(other, Reference) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return f"Reference(domain={self.domain!r}, path={self.path!r}, tag={self.tag!r}, digest={self.digest!r})"

    def _fields(self) -> tuple:
        return (self.domain, self.path, self.tag, self.digest)

    @property
    def registry(self) -> str:
        """HOST[:PORT] of the registry API (docker.io's is registry-1.docker.io)."""
        return DOCKER_HUB_API if self.domain == DOCKER_HUB else self.domain

    @property
    def familiar(self) -> str:
        """The name as Docker shows it: without ``docker.io/`` and ``library/``."""
        if self.domain != DOCKER_HUB:
            return f"{self.domain}/{self.path}"
        return self.path.removeprefix("library/") if self.path.count("/") == 1 else self.path

    @property
    def stored_name(self) -> str:
        """The name ``procview image ls`` and ``run`` use: ``NAME:TAG``, or
        ``NAME@sha256:<hex>`` for a reference with a digest (the digest is
        what was pulled, so a tag beside it would be a guess)."""
        return f"{self.familiar}@{self.digest}" if self.digest else f"{self.familiar}:{self.tag}"

    @property
    def api_reference(self) -> str:
        """What the manifest endpoint is asked for: the digest, else the tag."""
        return self.digest or self.tag

    def __str__(self) -> str:
        """The full form docker pull prints last: ``docker.io/library/busybox:latest``."""
        return f"{self.domain}/{self.path}" + (f"@{self.digest}" if self.digest else f":{self.tag}")


def parse(text: str) -> Reference:
    """Parse ``text`` by Docker's rules (module docstring)."""
    if re.fullmatch(r"[0-9a-f]{64}", text):
        raise BadReference(f"invalid image name {text!r}: a 64-digit hexadecimal string is an image ID, not a name")
    name, at, digest = text.partition("@")
    if at and not re.fullmatch(_DIGEST, digest):
        algorithm = digest.partition(":")[0]
        why = "only sha256 digests are supported" if algorithm and algorithm != "sha256" else "bad digest"
        raise BadReference(f"invalid image name {text!r}: {why}; {USAGE}")
    tag = None
    colon = name.rfind(":")
    if colon > name.rfind("/") and not name.endswith("]"):
        name, tag = name[:colon], name[colon + 1 :]
        if not re.fullmatch(_TAG, tag):
            raise BadReference(f"invalid image name {text!r}: bad tag {tag!r}; {USAGE}")
    domain, path = _split_domain(name)
    if not path or not all(re.fullmatch(_COMPONENT, part) for part in path.split("/")):
        raise BadReference(f"invalid image name {text!r}: {USAGE}")
    if domain is not None and not re.fullmatch(_DOMAIN, domain):
        raise BadReference(f"invalid image name {text!r}: bad registry {domain!r}; {USAGE}")
    if len(name) > MAX_NAME:
        raise BadReference(f"invalid image name {text!r}: the name is longer than {MAX_NAME} characters")
    if domain is None or domain in _HUB_ALIASES:
        domain = DOCKER_HUB
        if "/" not in path:
            path = f"library/{path}"
    return Reference(domain, path, tag if tag or digest else "latest", digest or None)


def _split_domain(name: str) -> tuple[str | None, str]:
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        return first, rest
    return None, name
