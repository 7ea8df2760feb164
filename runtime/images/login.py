"""``procview login`` and ``logout``: credentials in Docker's ``config.json``.

The file is Docker's (``$DOCKER_CONFIG/config.json``, else
``~/.docker/config.json``; ``registry.docker_config_path``), so
``docker``, ``skopeo``, ``podman`` and ``procview pull``/``push`` all read
what a login wrote::

    {"auths": {"127.0.0.1:5000": {"auth": "<base64 of user:password>"}}}

Docker Hub's entry is keyed ``https://index.docker.io/v1/``, as docker
login keys it. A login first proves the credentials: the registry's ping
(``GET /v2/``) with its challenge answered (Basic, or a Bearer token from
its realm) must end in 200. Only then is the file rewritten: every other
key kept, the registry's older entries under other spellings
(``https://HOST/``) dropped, written to a temporary file (mode 0600) in the
same directory and renamed over the old one, so a reader never sees half a
file. A symlinked ``config.json`` is followed. Credential helpers
(``credsStore``) are not run: the password is stored in the file, as
docker does without one, and it says so.

The editing of the document is pure (``with_login``, ``without_login``);
reading and writing are at the edge.
"""

from __future__ import annotations

import base64
import json
import os
import re
import tempfile

from procview.runtime.images.reference import DOCKER_HUB_API
from procview.runtime.images.registry import Registry, RegistryError, docker_config_path, registry_key

HUB_KEY = "https://index.docker.io/v1/"  # the key docker login stores Docker Hub's credentials under
_HUB_NAMES = ("docker.io", "index.docker.io", "registry-1.docker.io")


# -- pure parts ------------------------------------------------------------------------


def server_names(server: str) -> tuple[str, str]:
    """(config.json key, ``HOST[:PORT]`` of the registry API) for what
    the user typed: ``127.0.0.1:5000``, ``https://reg.example/``, or one
    of Docker Hub's names (``docker.io``, ``https://index.docker.io/v1/``)."""
    host = re.sub(r"^[a-z]+://", "", server.strip(), flags=re.IGNORECASE).split("/", 1)[0].lower()
    if not host:
        raise RegistryError(f"{server!r} names no registry: give HOST[:PORT]")
    if host in _HUB_NAMES:
        return HUB_KEY, DOCKER_HUB_API
    return host, host


def with_login(config: dict, key: str, user: str, password: str) -> dict:
    """``config`` with ``auths[key]`` holding ``user:password`` (and no
    other entry for the same registry); everything else as it was."""
    auths = _other_auths(config, key)
    auths[key] = {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}
    return {**config, "auths": auths}


def without_login(config: dict, key: str) -> tuple[dict, bool]:
    """``config`` without any entry for the registry of ``key``; whether
    there was one."""
    auths = _other_auths(config, key)
    before = config.get("auths") if isinstance(config.get("auths"), dict) else {}
    return {**config, "auths": auths}, len(auths) != len(before)


def _other_auths(config: dict, key: str) -> dict:
    auths = config.get("auths")
    if not isinstance(auths, dict):
        return {}
    return {k: v for k, v in auths.items() if registry_key(k) != registry_key(key)}


# -- the file --------------------------------------------------------------------------


def read_config(path: str) -> dict:
    """The parsed file; ``{}`` when there is none."""
    try:
        with open(path, "rb") as f:
            config = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise RegistryError(f"{path}: cannot read Docker's config: {exc}") from None
    if not isinstance(config, dict):
        raise RegistryError(f"{path}: Docker's config is not a JSON object")
    return config


def write_config(path: str, config: dict) -> None:
    """Replace the file at ``path`` (its target, if a symlink) with
    ``config``, atomically, mode 0600; the directory is made (0700) if missing."""
    target = os.path.realpath(path)
    directory = os.path.dirname(target)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=".config.json.", suffix=".tmp", dir=directory)  # mode 0600
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(config, f, indent="\t")
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, target)
        except BaseException:
            try:
                os.unlink(temporary)
            except FileNotFoundError:
                pass
            raise
    except OSError as exc:
        raise RegistryError(f"{path}: cannot save the credentials: {exc.strerror or exc}") from None


# -- the commands' work ----------------------------------------------------------------


def login(server: str, user: str, password: str, environ: dict, insecure=(), plain_http: bool = False) -> str:
    """Check ``user``/``password`` against ``server`` and store them; the
    config file's path. Raises ``RegistryError`` (file unchanged)."""
    from procview.runtime.images.registry import insecure_registries

    key, registry = server_names(server)
    path = docker_config_path(environ)
    config = read_config(path)  # an unreadable file fails before the registry is asked
    with Registry(registry, "", insecure=insecure_registries(insecure, environ), plain_http=plain_http,
                  user_password=(user, password), actions=None):
        pass  # entering pings /v2/ with the challenge answered: a wrong password raises here
    write_config(path, with_login(config, key, user, password))
    return path


def logout(server: str, environ: dict) -> bool:
    """Remove ``server``'s credentials; whether there were any."""
    key, _ = server_names(server)
    path = docker_config_path(environ)
    config = read_config(path)
    changed, removed = without_login(config, key)
    if removed:
        write_config(path, changed)
    return removed
