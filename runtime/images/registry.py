"""A client of the OCI distribution API (Docker's registry v2), for
``procview pull``, ``push`` and ``login``.

What a pull needs of a registry, over ``httpx``:

- ``GET /v2/`` (the ping): is it a v2 registry, and which authentication
  does it want (``WWW-Authenticate``)?
- ``GET /v2/<repository>/manifests/<tag or digest>`` with an ``Accept`` of
  the manifest and index types procview reads;
- ``GET /v2/<repository>/blobs/<digest>``: configs and layers, the latter
  resumed with ``Range: bytes=N-`` from a partial file.

What a push needs besides (``push.py``):

- ``HEAD /v2/<repository>/blobs/<digest>``: does the registry have it?
- ``POST /v2/<repository>/blobs/uploads/`` opens an upload session (its
  URL in ``Location``), then one ``PUT <location>?digest=<digest>`` with
  the whole blob (the spec's "monolithic" upload after a POST): the
  registry hashes what it got and answers with ``Docker-Content-Digest``,
  which must be the digest we named;
- ``PUT /v2/<repository>/manifests/<tag>`` with the manifest's media type.

A login (``login.py``) is only the ping with credentials: the challenge
answered, the registry's 200 the proof they are right.

Authentication answers the registry's challenge, as Docker does: ``Basic``
sends the user and password; ``Bearer realm=...,service=...,scope=...``
asks the realm for a token (with the user and password, when there are
any; anonymous otherwise) and sends it. Credentials come from Docker's
``config.json`` (``auths.<registry>.auth``, base64 ``user:password``).

Transport, by Docker's rule: HTTPS verified with the system's CA store,
except for registries allowed plain HTTP (loopback: 127.0.0.0/8, ::1,
``localhost``; and those named with ``--insecure-registry``). For those,
HTTPS is tried first without verifying the certificate, and plain HTTP
when HTTPS fails. ``--plain-http`` goes straight to HTTP, and is refused
for any other registry before a connection is made.

Every error is a ``RegistryError``: one line naming the registry and what
went wrong.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import threading
from collections.abc import Callable, Iterable
from typing import BinaryIO

import httpx

from procview.runtime.images.importers import INDEX_TYPES, MANIFEST_TYPES
from procview.runtime.images.store import ImageError

MANIFEST_ACCEPT = ", ".join(sorted(INDEX_TYPES | MANIFEST_TYPES))
MANIFEST_LIMIT = 4 << 20  # Docker refuses manifests over 4 MiB as well
CONFIG_LIMIT = 64 << 20
_CHUNK = 1 << 16
TIMEOUT = httpx.Timeout(60.0, connect=15.0)


class RegistryError(ImageError):
    """A registry request failed; the message is one line for the user."""


# -- pure parts ------------------------------------------------------------------------


def host_of(registry: str) -> str:
    """``HOST`` of ``HOST[:PORT]`` (``[::1]:5000`` -> ``::1``)."""
    if registry.startswith("["):
        return registry[1 : registry.index("]")]
    return registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry


def plain_http_allowed(registry: str, insecure: Iterable[str]) -> bool:
    """Docker's rule: loopback registries, and those the user named as
    insecure (``HOST``, ``HOST:PORT`` or a CIDR block), may speak HTTP."""
    host = host_of(registry)
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None and address.is_loopback:
        return True
    for entry in insecure:
        entry = entry.strip().removeprefix("http://").removeprefix("https://").rstrip("/")
        if entry and entry in (registry, host):
            return True
        if address is not None and "/" in entry:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
    return False


def insecure_registries(options: Iterable[str], environ: dict) -> list[str]:
    """``--insecure-registry`` values and ``$PROCVIEW_INSECURE_REGISTRIES``
    (comma or space separated)."""
    from_env = re.split(r"[,\s]+", environ.get("PROCVIEW_INSECURE_REGISTRIES", ""))
    return [entry for entry in (*options, *from_env) if entry]


_CHALLENGE_PARAM = re.compile(r'\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``WWW-Authenticate: Bearer realm="https://auth",service="reg"`` ->
    ("bearer", {"realm": ..., "service": ...}). Parameters may be quoted
    (with backslash escapes) or bare."""
    scheme, _, rest = header.strip().partition(" ")
    params = {}
    position = 0
    while position < len(rest):
        m = _CHALLENGE_PARAM.match(rest, position)
        if not m or m.end() == position:
            break
        quoted, bare = m.group(2), m.group(3)
        params[m.group(1).lower()] = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
        position = m.end()
    return scheme.lower(), params


def docker_config_path(environ: dict) -> str:
    """``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``."""
    directory = environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return os.path.join(directory, "config.json")


# The names docker login stores Docker Hub's credentials under.
_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")


def credentials(registry: str, config: dict) -> tuple[str, str] | None:
    """(user, password) for ``registry`` from a parsed Docker
    ``config.json``: ``auths.<key>.auth`` (base64 ``user:password``) or
    ``username``/``password``. Keys may be ``HOST[:PORT]`` or URLs
    (``https://HOST/v1/``). Credential helpers are not run."""
    auths = config.get("auths") if isinstance(config, dict) else None
    if not isinstance(auths, dict):
        return None
    wanted = {_HUB_KEYS[1]} if registry in _HUB_KEYS else {registry}
    for key, entry in auths.items():
        if not isinstance(entry, dict) or registry_key(key) not in wanted:
            continue
        if isinstance(entry.get("auth"), str) and entry["auth"]:
            try:
                user, sep, password = base64.b64decode(entry["auth"], validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise RegistryError(f"config.json: the auth of {key} is not base64 of user:password") from None
            if sep:
                return user, password
        if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
            return entry["username"], entry["password"]
    return None


def registry_key(key: str) -> str:
    """The registry a ``config.json`` key names (``https://HOST/v1/`` ->
    ``HOST``; Docker Hub's names -> ``index.docker.io``)."""
    host = re.sub(r"^[a-z]+://", "", key).split("/", 1)[0]
    return _HUB_KEYS[1] if host in _HUB_KEYS else host


def load_credentials(registry: str, environ: dict) -> tuple[str, str] | None:
    """``credentials`` from the Docker config file, if there is one."""
    path = docker_config_path(environ)
    try:
        with open(path, "rb") as f:
            config = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise RegistryError(f"{path}: cannot read Docker's credentials: {exc}") from None
    return credentials(registry, config)


def error_text(response: httpx.Response) -> str:
    """The registry's own words: its JSON ``errors[].code: message``, else
    the HTTP status line."""
    try:
        errors = json.loads(response.read()).get("errors")
        words = [_error_words(e.get("code", ""), e.get("message", "")) for e in errors]
        if words:
            return "; ".join(words)
    except (ValueError, AttributeError, TypeError, httpx.HTTPError):
        pass
    return f"HTTP {response.status_code} {response.reason_phrase}".strip()


def _error_words(code: str, message: str) -> str:
    code = code.lower().replace("_", " ")
    return code if not message or message == code else f"{code}: {message}" if code else message


# -- authentication ------------------------------------------------------------------


class _ChallengeAuth(httpx.Auth):
    """Answers a registry's ``WWW-Authenticate`` challenge (Basic, or a
    Bearer token from the realm) and keeps the answer for later requests."""

    def __init__(self, registry: str, user_password: tuple[str, str] | None, scope: str | None):
        self._registry = registry
        self._credentials = user_password
        self._scope = scope
        self._header: str | None = None
        self._lock = threading.Lock()

    def sync_auth_flow(self, request: httpx.Request):
        if self._header is not None:
            request.headers["Authorization"] = self._header
        response = yield request
        challenge = response.headers.get("WWW-Authenticate")
        if response.status_code != 401 or not challenge:
            return
        with self._lock:
            scheme, params = parse_challenge(challenge)
            if scheme == "basic":
                if self._credentials is None:
                    return  # the caller reports the 401: no credentials
                self._header = basic_header(self._credentials)
            elif scheme == "bearer" and params.get("realm"):
                token_response = yield self._token_request(params)
                token_response.read()
                self._header = f"Bearer {self._token(token_response)}"
            else:
                raise RegistryError(f"{self._registry}: unsupported authentication {challenge.split()[0]!r}")
        request.headers["Authorization"] = self._header
        yield request

    def _token_request(self, params: dict[str, str]) -> httpx.Request:
        scope = params.get("scope") or self._scope
        query = {"scope": scope} if scope else {}  # a login asks for no scope, as docker login
        if params.get("service"):
            query["service"] = params["service"]
        request = httpx.Request("GET", params["realm"], params=query)
        if self._credentials is not None:
            request.headers["Authorization"] = basic_header(self._credentials)
        return request

    def _token(self, response: httpx.Response) -> str:
        if response.status_code == 401:
            raise RegistryError(_unauthorized(self._registry, self._credentials))
        if response.status_code != 200:
            raise RegistryError(f"{self._registry}: token service {response.request.url.host}: {error_text(response)}")
        try:
            body = json.loads(response.content)
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"{self._registry}: the token service {response.request.url.host} answered no token")
        return token


def basic_header(user_password: tuple[str, str]) -> str:
    """``Authorization`` for HTTP Basic: ``Basic base64(user:password)``."""
    return "Basic " + base64.b64encode(":".join(user_password).encode()).decode()


def _unauthorized(registry: str, user_password: tuple[str, str] | None) -> str:
    if user_password is None:
        return f"{registry}: authentication required, and Docker's config.json has no credentials for it"
    return f"{registry}: unauthorized: wrong user name or password for {user_password[0]!r}"


# -- the client ------------------------------------------------------------------------


class Registry:
    """One registry, for one repository's pull (``actions="pull"``), push
    (``"pull,push"``) or, with ``actions=None``, a login's ping. Use as a
    context manager."""

    def __init__(self, registry: str, repository: str, *, insecure: Iterable[str] = (), plain_http: bool = False,
                 user_password: tuple[str, str] | None = None, actions: str | None = "pull"):
        self.registry = registry
        self.repository = repository
        self._http_ok = plain_http_allowed(registry, insecure)
        if plain_http and not self._http_ok:
            raise RegistryError(f"{registry}: plain HTTP is allowed only to loopback registries and those named "
                                "with --insecure-registry (or $PROCVIEW_INSECURE_REGISTRIES)")
        self._plain_http = plain_http
        self._credentials = user_password
        scope = f"repository:{repository}:{actions}" if actions else None
        self._auth = _ChallengeAuth(registry, user_password, scope)
        self._client: httpx.Client | None = None
        self._base = ""

    def __enter__(self) -> Registry:
        self._connect()
        return self

    def __exit__(self, *exc) -> None:
        if self._client is not None:
            self._client.close()

    # -- connecting ---------------------------------------------------------------

    def _connect(self) -> None:
        """Ping ``/v2/`` over the first scheme that answers (module docstring)."""
        import ssl

        attempts = []
        if not self._plain_http:
            # An insecure registry's certificate is not checked (Docker's rule).
            attempts.append(("https", False if self._http_ok else ssl.create_default_context()))
        if self._http_ok:
            attempts.append(("http", True))
        failure: Exception | None = None
        for scheme, verify in attempts:
            client = httpx.Client(verify=verify, timeout=TIMEOUT, follow_redirects=True, auth=self._auth,
                                  headers={"User-Agent": "procview"})
            base = f"{scheme}://{self.registry}"
            try:
                response = client.get(f"{base}/v2/")
            except httpx.TransportError as exc:
                client.close()
                failure = exc
                continue
            self._client, self._base = client, base
            self._check(response, "the registry API (/v2/)")
            return
        raise RegistryError(self._transport_message(failure))

    def _transport_message(self, exc: Exception | None) -> str:
        text = str(exc) if exc is not None else "no way to connect"
        if "Connection refused" in text:
            return f"cannot connect to registry {self.registry}: connection refused (is it running?)"
        if isinstance(exc, httpx.TimeoutException):
            return f"cannot connect to registry {self.registry}: timed out"
        if "CERTIFICATE_VERIFY_FAILED" in text:
            return f"registry {self.registry}: its TLS certificate is not trusted ({text.split(']')[-1].strip() or 'verify failed'})"
        return f"cannot connect to registry {self.registry}: {text.splitlines()[0] if text else type(exc).__name__}"

    def _check(self, response: httpx.Response, what: str) -> None:
        if response.status_code in (200, 206):
            return
        if response.status_code == 401:
            raise RegistryError(_unauthorized(self.registry, self._credentials))
        raise RegistryError(f"{self.registry}: {what}: {error_text(response)}")

    def _expect(self, response: httpx.Response, status: int, what: str) -> None:
        """``_check`` for an answer that must be exactly ``status`` (201, 202)."""
        if response.status_code != status:
            self._check(response, what)
            raise RegistryError(f"{self.registry}: {what}: {error_text(response)}")

    def _url(self, kind: str, reference: str) -> str:
        return f"{self._base}/v2/{self.repository}/{kind}/{reference}"

    # -- manifests and small blobs ------------------------------------------------

    def manifest(self, reference: str) -> tuple[str, bytes, str | None]:
        """(media type, bytes, the registry's Docker-Content-Digest or None)
        of the manifest or index at a tag or digest."""
        try:
            with self._client.stream("GET", self._url("manifests", reference), headers={"Accept": MANIFEST_ACCEPT}) as response:
                if response.status_code == 404:
                    sep = "@" if reference.startswith("sha256:") else ":"
                    raise RegistryError(f"manifest for {self.registry}/{self.repository}{sep}{reference} not found: "
                                        f"{error_text(response)}")
                self._check(response, f"manifest {reference}")
                body = _read_limited(response, MANIFEST_LIMIT, f"manifest {reference}")
                media = response.headers.get("Content-Type", "").split(";")[0].strip()
                return media, body, response.headers.get("Docker-Content-Digest")
        except httpx.TransportError as exc:
            raise RegistryError(self._transport_message(exc)) from None

    def small_blob(self, digest: str, size: int, what: str) -> bytes:
        """A blob read into memory (an image config), verified."""
        if size > CONFIG_LIMIT:
            raise RegistryError(f"{what}: {size} bytes is too large")
        try:
            with self._client.stream("GET", self._url("blobs", digest)) as response:
                self._check(response, f"{what} {digest}")
                data = _read_limited(response, size, f"{what} {digest}")
        except httpx.TransportError as exc:
            raise RegistryError(self._transport_message(exc)) from None
        verify_bytes(data, digest, size, what)
        return data

    # -- layers -------------------------------------------------------------------

    def fetch_blob(self, digest: str, size: int, partial: str, done: str,
                   on_read: Callable[[int], None] | None = None) -> None:
        """Download a blob into the file ``partial``, resuming after the
        bytes it already holds (``Range``) and hashing as it streams, then
        rename it to ``done`` once it verifies. The partial file is locked
        meanwhile (another pull of the same blob waits). A mismatched or
        oversized blob deletes it; a broken transfer keeps it for next time
        (``BlobBroken``)."""
        on_read = on_read or (lambda n: None)
        with _locked_file(partial) as out:
            have = out.seek(0, os.SEEK_END)
            if have > size:
                out.truncate(0)
                have = 0
            hasher = _hash_file(out, have)
            try:
                have, hasher = self._stream_blob(digest, size, out, have, hasher, on_read)
            except RegistryError:
                _unlink(partial)
                raise
            except httpx.TransportError as exc:
                out.flush()
                raise BlobBroken(f"{self.registry}: blob {digest[:19]}: the transfer broke after {out.tell()} of {size} "
                                 f"bytes ({type(exc).__name__}); pull again to resume") from None
            if have < size:
                raise BlobBroken(f"{self.registry}: blob {digest[:19]} is truncated: the registry sent {have} of {size} "
                                 "bytes; pull again to resume")
            got = "sha256:" + hasher.hexdigest()
            if got != digest:
                _unlink(partial)
                raise RegistryError(f"{self.registry}: blob {digest} does not match its digest (got {got}); nothing was kept")
            out.flush()
            os.rename(partial, done)  # under the lock: no other pull resumes a finished file

    def _stream_blob(self, digest: str, size: int, out, have: int, hasher, on_read):
        """Append the blob's bytes after the first ``have`` to ``out``:
        (bytes now held, their sha256)."""
        headers = {"Range": f"bytes={have}-"} if have else {}
        with self._client.stream("GET", self._url("blobs", digest), headers=headers) as response:
            if have and response.status_code in (200, 416):  # no ranges, or a range past the end: start again
                out.truncate(0)
                have, hasher = 0, hashlib.sha256()
                if response.status_code == 416:
                    response.close()
                    return self._stream_blob(digest, size, out, 0, hasher, on_read)
            self._check(response, f"blob {digest[:19]}")
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and have + int(length) != size:
                problem = "oversized" if have + int(length) > size else "truncated"
                raise RegistryError(f"{self.registry}: blob {digest[:19]} is {problem}: the registry has "
                                    f"{have + int(length)} bytes, the manifest says {size}")
            on_read(have)
            for chunk in response.iter_raw(_CHUNK):
                if have + len(chunk) > size:
                    raise RegistryError(f"{self.registry}: blob {digest[:19]} is oversized: more than the manifest's {size} bytes")
                out.write(chunk)
                hasher.update(chunk)
                have += len(chunk)
                on_read(len(chunk))
        return have, hasher


    # -- pushing ------------------------------------------------------------------

    def has_blob(self, digest: str) -> bool:
        """Whether the repository has the blob ``digest`` (HEAD)."""
        try:
            response = self._client.head(self._url("blobs", digest))
        except httpx.TransportError as exc:
            raise RegistryError(self._transport_message(exc)) from None
        if response.status_code == 404:
            return False
        self._check(response, f"blob {digest[:19]}")
        return True

    def upload_blob(self, digest: str, size: int, blob: BinaryIO, on_sent: Callable[[int], None] | None = None) -> None:
        """Upload ``size`` bytes of ``blob`` (read from its start) as
        ``digest``: POST for a session, then one PUT of all of it. The
        registry's Docker-Content-Digest must be ``digest``."""
        on_sent = on_sent or (lambda n: None)

        def chunks():
            blob.seek(0)
            while chunk := blob.read(_CHUNK):
                yield chunk
                on_sent(len(chunk))

        what = f"blob {digest[:19]}"
        try:
            started = self._client.post(f"{self._base}/v2/{self.repository}/blobs/uploads/")
            self._expect(started, 202, f"{what}: starting the upload")
            if "Location" not in started.headers:
                raise RegistryError(f"{self.registry}: {what}: the registry opened an upload without a Location")
            target = started.url.join(started.headers["Location"]).copy_merge_params({"digest": digest})
            response = self._client.put(target, content=chunks(), headers={
                "Content-Type": "application/octet-stream", "Content-Length": str(size)})
        except httpx.TransportError as exc:
            raise RegistryError(self._transport_message(exc)) from None
        except httpx.StreamConsumed:  # a 401 in the middle of an upload: the body cannot be sent twice
            raise RegistryError(f"{self.registry}: {what}: the registry asked to authenticate again mid-upload") from None
        self._expect(response, 201, f"{what}: upload")
        self._check_digest(response, digest, what)

    def put_manifest(self, tag: str, media_type: str, body: bytes) -> str:
        """Store ``body`` as the manifest of ``tag``; its digest, as the
        registry confirmed it."""
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        try:
            response = self._client.put(self._url("manifests", tag), content=body, headers={"Content-Type": media_type})
        except httpx.TransportError as exc:
            raise RegistryError(self._transport_message(exc)) from None
        self._expect(response, 201, f"manifest {tag}")
        self._check_digest(response, digest, f"manifest {tag}")
        return digest

    def _check_digest(self, response: httpx.Response, digest: str, what: str) -> None:
        """The registry's Docker-Content-Digest, when it sends one, must be ours."""
        stored = response.headers.get("Docker-Content-Digest")
        if stored is not None and stored != digest:
            raise RegistryError(f"{self.registry}: {what}: the registry stored {stored}, not {digest}")


class BlobBroken(RegistryError):
    """A blob's transfer ended early; its partial file is kept for a resume."""


def verify_bytes(data: bytes, digest: str, size: int, what: str) -> None:
    """``data`` must be ``size`` bytes hashing to ``digest``."""
    if len(data) != size:
        raise RegistryError(f"{what} {digest[:19]}: {len(data)} bytes, its descriptor says {size}")
    got = "sha256:" + hashlib.sha256(data).hexdigest()
    if got != digest:
        raise RegistryError(f"{what} {digest} does not match its digest (got {got})")


def _read_limited(response: httpx.Response, limit: int, what: str) -> bytes:
    data = bytearray()
    for chunk in response.iter_raw(_CHUNK):
        data += chunk
        if len(data) > limit:
            raise RegistryError(f"{what}: larger than {limit} bytes")
    return bytes(data)


def _hash_file(f, length: int):
    """sha256 of the first ``length`` bytes of ``f`` (what a resume already has)."""
    hasher = hashlib.sha256()
    f.seek(0)
    left = length
    while left:
        chunk = f.read(min(left, 1 << 20))
        if not chunk:
            break
        hasher.update(chunk)
        left -= len(chunk)
    f.seek(0, os.SEEK_END)
    return hasher


@contextlib.contextmanager
def _locked_file(path: str):
    """``path`` opened for appending, created if missing, with an exclusive
    flock; reopened if another pull renamed it away while we waited."""
    while True:
        f = open(path, "ab+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX)
            if os.path.samestat(os.fstat(f.fileno()), os.stat(path)):
                break
        except FileNotFoundError:
            pass
        except BaseException:
            f.close()
            raise
        f.close()
    with f:
        yield f


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
