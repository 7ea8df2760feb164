"""The pure parts of procview push: references, the manifest, deterministic
packing; and the registry client's upload answers, against an in-memory
registry (httpx.MockTransport)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile

import httpx
import pytest

from procview.runtime.images import push, registry
from procview.runtime.images.store import ImageError


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_build_manifest_is_docker_schema2():
    config = push.descriptor(push.CONFIG_TYPE, "sha256:" + "c" * 64, 300)
    layers = [push.descriptor(push.LAYER_TYPE, "sha256:" + "a" * 64, 10), push.descriptor(push.LAYER_TYPE, "sha256:" + "b" * 64, 20)]
    manifest = json.loads(push.build_manifest(config, layers))
    assert manifest == {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 300, "digest": "sha256:" + "c" * 64},
        "layers": [
            {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 10, "digest": "sha256:" + "a" * 64},
            {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 20, "digest": "sha256:" + "b" * 64},
        ],
    }
    assert push.build_manifest(config, layers) == push.build_manifest(config, layers)


def test_push_reference():
    ref = push.push_reference("127.0.0.1:5000/team/app")
    assert (ref.domain, ref.path, ref.tag) == ("127.0.0.1:5000", "team/app", "latest")
    assert push.push_reference("busybox:1").path == "library/busybox"
    with pytest.raises(ImageError, match="cannot push to a digest"):
        push.push_reference("app@sha256:" + "a" * 64)
    with pytest.raises(ImageError, match="invalid image name"):
        push.push_reference("Bad/Name")


def test_pack_compressed_is_deterministic_and_names_both_digests(tmp_path):
    layer = tmp_path / "layer"
    (layer / "etc").mkdir(parents=True)
    (layer / "etc" / "motd").write_bytes(b"hello\n")
    os.utime(layer / "etc" / "motd", (1700000000, 1700000000))
    first, second = io.BytesIO(), io.BytesIO()
    diff_id, digest, size = push.pack_compressed(str(layer), first)
    assert push.pack_compressed(str(layer), second) == (diff_id, digest, size)
    blob = first.getvalue()
    assert blob == second.getvalue() and size == len(blob) and digest == sha256(blob)
    tar = gzip.decompress(blob)
    assert diff_id == sha256(tar)
    assert blob[4:8] == b"\0\0\0\0"  # gzip mtime 0
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        assert t.extractfile("etc/motd").read() == b"hello\n"


# -- the registry's answers to an upload ---------------------------------------------------


class FakeRegistry:
    """Answers the push requests; ``stored`` is what its PUT says it stored
    (None: the digest it was given), ``put_status`` its status."""

    def __init__(self, stored=None, put_status=201, put_body=b""):
        self.stored, self.put_status, self.put_body = stored, put_status, put_body
        self.requests = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.method, request.url.path, dict(request.url.params)))
        if request.url.path == "/v2/":
            return httpx.Response(200)
        if request.method == "HEAD":
            return httpx.Response(404)
        if request.method == "POST":
            return httpx.Response(202, headers={"Location": "/v2/app/blobs/uploads/u1?_state=s"})
        if request.method == "PUT":
            request.read()
            digest = self.stored or request.url.params.get("digest") or sha256(request.content)
            return httpx.Response(self.put_status, headers={"Docker-Content-Digest": digest}, content=self.put_body)
        return httpx.Response(404)


@pytest.fixture
def connect(monkeypatch):
    real = httpx.Client

    def make(fake: FakeRegistry) -> registry.Registry:
        monkeypatch.setattr(registry.httpx, "Client", lambda **kw: real(transport=httpx.MockTransport(fake), **kw))
        return registry.Registry("127.0.0.1:5000", "app", plain_http=True, actions="pull,push")
    return make


def test_upload_puts_to_the_location_with_the_digest(connect):
    fake = FakeRegistry()
    data = b"layer bytes"
    with connect(fake) as reg:
        assert reg.has_blob(sha256(data)) is False
        sent = []
        reg.upload_blob(sha256(data), len(data), io.BytesIO(data), sent.append)
    assert sum(sent) == len(data)
    put = [r for r in fake.requests if r[0] == "PUT"][0]
    assert put[1] == "/v2/app/blobs/uploads/u1" and put[2] == {"_state": "s", "digest": sha256(data)}


def test_a_registry_that_stored_another_digest_is_an_error(connect):
    with connect(FakeRegistry(stored="sha256:" + "0" * 64)) as reg:
        with pytest.raises(registry.RegistryError, match="the registry stored sha256:0000"):
            reg.upload_blob(sha256(b"x"), 1, io.BytesIO(b"x"))


def test_a_digest_the_registry_refuses_is_its_words(connect):
    body = json.dumps({"errors": [{"code": "DIGEST_INVALID", "message": "provided digest did not match uploaded content"}]})
    with connect(FakeRegistry(put_status=400, put_body=body.encode())) as reg:
        with pytest.raises(registry.RegistryError, match="digest invalid: provided digest did not match"):
            reg.upload_blob(sha256(b"x"), 1, io.BytesIO(b"x"))


def test_put_manifest_checks_the_digest(connect):
    manifest = b'{"schemaVersion": 2}'
    with connect(FakeRegistry()) as reg:
        assert reg.put_manifest("v1", push.MANIFEST_TYPE, manifest) == sha256(manifest)
    with connect(FakeRegistry(stored="sha256:" + "1" * 64)) as reg:
        with pytest.raises(registry.RegistryError, match="manifest v1: the registry stored"):
            reg.put_manifest("v1", push.MANIFEST_TYPE, manifest)
