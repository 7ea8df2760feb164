"""Private registries for the tests of ``procview pull``.

``LocalRegistry`` runs Debian's ``docker-registry`` (CNCF distribution 2.8)
on 127.0.0.1 at a free port, with filesystem storage and a config file in
its own temporary directory, optionally with htpasswd (bcrypt) basic
auth. ``push`` fills it with ``skopeo copy``. ``stop`` kills it and removes
the directory; the fixtures call it even when a test fails.

``oci_layout`` builds small OCI image layouts by hand (single images and
multi-platform indexes), so tests know every digest.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time

import httpx

REGISTRY = "/usr/bin/docker-registry"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalRegistry:
    def __init__(self, user_password: tuple[str, str] | None = None):
        self.dir = tempfile.mkdtemp(prefix="procview-registry-")
        self.storage = os.path.join(self.dir, "storage")
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.user_password = user_password
        self.log_path = os.path.join(self.dir, "registry.log")
        self.proc: subprocess.Popen | None = None

    def start(self) -> LocalRegistry:
        auth = ""
        if self.user_password:
            htpasswd = os.path.join(self.dir, "htpasswd")
            line = subprocess.run(["htpasswd", "-Bbn", *self.user_password], check=True, capture_output=True, text=True).stdout
            with open(htpasswd, "w") as f:
                f.write(line)
            auth = f"auth:\n  htpasswd:\n    realm: procview-test\n    path: {htpasswd}\n"
        config = os.path.join(self.dir, "config.yml")
        with open(config, "w") as f:
            f.write(f"version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n"
                    f"storage:\n  filesystem:\n    rootdirectory: {self.storage}\n  delete:\n    enabled: true\n"
                    f"http:\n  addr: {self.address}\n  secret: procview-test-secret\n{auth}")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([REGISTRY, "serve", config], stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://{self.address}/v2/", timeout=2)
                return self
            except httpx.TransportError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"docker-registry did not start: {self.log()}") from None
                time.sleep(0.05)

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def push(self, source: str, name: str, all_images: bool = False) -> None:
        """``skopeo copy SOURCE docker://ADDRESS/NAME`` (``oci:DIR:TAG``,
        ``docker-archive:FILE``)."""
        argv = ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--insecure-policy"]
        if all_images:
            argv.append("--all")
        if self.user_password:
            argv.append("--dest-creds=" + ":".join(self.user_password))
        subprocess.run([*argv, source, f"docker://{self.address}/{name}"], check=True, capture_output=True, timeout=120)

    def blob_file(self, digest: str) -> str:
        hex_digest = digest.removeprefix("sha256:")
        return os.path.join(self.storage, "docker/registry/v2/blobs/sha256", hex_digest[:2], hex_digest, "data")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)


# -- OCI layouts -------------------------------------------------------------------------


def layer_tar(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o755, 1700000000
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class OciLayout:
    """An OCI image layout being written in ``path``."""

    def __init__(self, path: str):
        self.path = path
        os.makedirs(os.path.join(path, "blobs", "sha256"), exist_ok=True)
        with open(os.path.join(path, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)

    def blob(self, data: bytes, media_type: str) -> dict:
        digest = sha256(data)
        with open(os.path.join(self.path, "blobs", "sha256", digest.removeprefix("sha256:")), "wb") as f:
            f.write(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def image(self, files: dict[str, bytes], architecture: str = "amd64", cmd: list[str] | None = None) -> dict:
        """An image of one gzip layer; its manifest's descriptor (with platform)."""
        tar = layer_tar(files)
        layer = self.blob(gzip.compress(tar, mtime=0), "application/vnd.oci.image.layer.v1.tar+gzip")
        config = {"architecture": architecture, "os": "linux",
                  "config": {"Cmd": cmd or ["/bin/sh"], "Env": ["PATH=/bin"]},
                  "rootfs": {"type": "layers", "diff_ids": [sha256(tar)]}}
        config_desc = self.blob(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json")
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": config_desc, "layers": [layer]}
        desc = self.blob(json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")
        return {**desc, "platform": {"architecture": architecture, "os": "linux"}}

    def index(self, manifests: list[dict]) -> dict:
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests}
        return self.blob(json.dumps(index).encode(), "application/vnd.oci.image.index.v1+json")

    def tag(self, desc: dict, tag: str) -> None:
        """index.json names ``desc`` as ``tag``."""
        entry = {k: v for k, v in desc.items() if k != "platform"}
        entry["annotations"] = {"org.opencontainers.image.ref.name": tag}
        with open(os.path.join(self.path, "index.json"), "w") as f:
            json.dump({"schemaVersion": 2, "manifests": [entry]}, f)


# -- a relay in front of a registry ------------------------------------------------------


class Relay:
    """A small reverse proxy on 127.0.0.1 in front of a ``LocalRegistry``
    (stdlib http.server; httpx forwards): it records every request's path
    and ``Range``, can cut one blob's first transfer short (``cut``:
    digest -> bytes to send before closing the connection), and can stand
    in for a token service (``bearer``: (user, password, token)): the
    registry's paths then want ``Authorization: Bearer TOKEN``, which
    ``/token`` hands out for the right Basic credentials; and can give
    manifests another media type (``manifest_type``)."""

    def __init__(self, registry: LocalRegistry, cut: dict[str, int] | None = None,
                 bearer: tuple[str, str, str] | None = None, manifest_type: str | None = None):
        import http.server
        import threading

        self.registry = registry
        self.cut = dict(cut or {})
        self.bearer = bearer
        self.manifest_type = manifest_type  # replaces the Content-Type of manifests
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        relay = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                relay.requests.append((self.path, self.headers.get("Range")))
                if relay.bearer and not relay._authorized(self):
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("range", "accept")}
                with httpx.stream("GET", f"http://{relay.registry.address}{self.path}", headers=headers, timeout=30) as r:
                    self.send_response(r.status_code)
                    for key in ("Content-Type", "Content-Length", "Content-Range", "Docker-Content-Digest", "Accept-Ranges"):
                        if key == "Content-Type" and relay.manifest_type and "/manifests/" in self.path:
                            self.send_header(key, relay.manifest_type)
                        elif key in r.headers:
                            self.send_header(key, r.headers[key])
                    self.end_headers()
                    limit = relay._limit(self.path, self.headers.get("Range"))
                    sent = 0
                    for chunk in r.iter_raw():
                        if limit is not None and sent + len(chunk) >= limit:
                            self.wfile.write(chunk[: limit - sent])
                            self.wfile.flush()
                            self.close_connection = True
                            self.connection.shutdown(socket.SHUT_RDWR)
                            return
                        self.wfile.write(chunk)
                        sent += len(chunk)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _limit(self, path: str, range_header: str | None) -> int | None:
        for digest, limit in list(self.cut.items()):
            if path.endswith(f"/blobs/{digest}") and range_header is None:
                del self.cut[digest]  # only the first transfer is cut
                return limit
        return None

    def _authorized(self, handler) -> bool:
        import base64

        user, password, token = self.bearer
        if handler.path.startswith("/token"):
            expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
            if handler.headers.get("Authorization") == expected:
                self._answer(handler, 200, json.dumps({"token": token}).encode())
            else:
                self._answer(handler, 401, b'{"details": "wrong credentials"}')
            return False
        if handler.headers.get("Authorization") == f"Bearer {token}":
            return True
        challenge = f'Bearer realm="http://{self.address}/token",service="procview-test"'
        self._answer(handler, 401, b'{"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}',
                     {"WWW-Authenticate": challenge})
        return False

    @staticmethod
    def _answer(handler, status: int, body: bytes, headers: dict | None = None) -> None:
        handler.send_response(status)
        for key, value in {"Content-Type": "application/json", "Content-Length": str(len(body)), **(headers or {})}.items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(body)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=30)
