"""The pure parts of procview pull's registry client (runtime/images/registry.py)
and the platform choice of image indexes (runtime/images/importers.py)."""

import base64

import pytest

from procview.runtime.images import importers
from procview.runtime.images.registry import (
    RegistryError, credentials, docker_config_path, host_of, insecure_registries, parse_challenge, plain_http_allowed,
)


def test_parse_challenge_bearer_and_basic():
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull"')
    assert scheme == "bearer"
    assert params == {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                      "scope": "repository:library/busybox:pull"}
    assert parse_challenge('Basic realm="procview-test"') == ("basic", {"realm": "procview-test"})
    assert parse_challenge('bearer realm=http://127.0.0.1:1/t, service = "a \\"b\\""') == (
        "bearer", {"realm": "http://127.0.0.1:1/t", "service": 'a "b"'})
    # a scope with several actions keeps its commas inside the quotes
    assert parse_challenge('Bearer realm="r",scope="repository:a:pull,push"')[1]["scope"] == "repository:a:pull,push"


@pytest.mark.parametrize("registry, host", [("127.0.0.1:5000", "127.0.0.1"), ("[::1]:5000", "::1"), ("[::1]", "::1"),
                                            ("example.com", "example.com"), ("localhost:80", "localhost")])
def test_host_of(registry, host):
    assert host_of(registry) == host


@pytest.mark.parametrize("registry, insecure, allowed", [
    ("127.0.0.1:5000", [], True),
    ("127.1.2.3", [], True),
    ("[::1]:5000", [], True),
    ("localhost:5000", [], True),
    ("localhost", [], True),
    ("192.0.2.1:5000", [], False),
    ("registry.example:5000", [], False),
    ("192.0.2.1:5000", ["192.0.2.1:5000"], True),
    ("192.0.2.1:5000", ["192.0.2.1"], True),
    ("192.0.2.1:5000", ["192.0.2.1:5001"], False),
    ("192.0.2.1:5000", ["192.0.2.0/24"], True),
    ("192.0.3.1:5000", ["192.0.2.0/24"], False),
    ("registry.example:5000", ["http://registry.example:5000/"], True),
    ("registry.example", ["registry.example"], True),
])
def test_plain_http_rule(registry, insecure, allowed):
    assert plain_http_allowed(registry, insecure) is allowed


def test_insecure_registries_from_options_and_environment():
    got = insecure_registries(["a:1"], {"PROCVIEW_INSECURE_REGISTRIES": "b:2, c:3 d"})
    assert got == ["a:1", "b:2", "c:3", "d"]
    assert insecure_registries([], {}) == []


def _auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def test_credentials_from_docker_config():
    config = {"auths": {
        "https://index.docker.io/v1/": {"auth": _auth("hub", "pw:with:colons")},
        "127.0.0.1:5000": {"auth": _auth("local", "secret")},
        "https://registry.example/v2/": {"username": "u", "password": "p"},
        "other:1": {},
    }}
    assert credentials("registry-1.docker.io", config) == ("hub", "pw:with:colons")
    assert credentials("127.0.0.1:5000", config) == ("local", "secret")
    assert credentials("registry.example", config) == ("u", "p")
    assert credentials("other:1", config) is None
    assert credentials("127.0.0.1:5001", config) is None
    assert credentials("x", {}) is None and credentials("x", {"auths": []}) is None
    with pytest.raises(RegistryError, match="not base64"):
        credentials("bad", {"auths": {"bad": {"auth": "%%%"}}})


def test_docker_config_path():
    assert docker_config_path({"DOCKER_CONFIG": "/etc/dc"}) == "/etc/dc/config.json"
    assert docker_config_path({}).endswith("/.docker/config.json")


INDEX = [
    {"digest": "sha256:" + "1" * 64, "size": 1, "platform": {"os": "linux", "architecture": "amd64"}},
    {"digest": "sha256:" + "2" * 64, "size": 1, "platform": {"os": "linux", "architecture": "arm", "variant": "v6"}},
    {"digest": "sha256:" + "3" * 64, "size": 1, "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
    {"digest": "sha256:" + "4" * 64, "size": 1, "platform": {"os": "unknown", "architecture": "unknown"}},
]


def test_choose_manifest_by_platform():
    assert importers.choose_manifest(INDEX, "x", ("linux", "amd64", None))["digest"][-1] == "1"
    assert importers.choose_manifest(INDEX, "x", ("linux", "arm", "v7"))["digest"][-1] == "3"
    assert importers.choose_manifest(INDEX, "x", ("linux", "arm", None))["digest"][-1] == "2"
    with pytest.raises(importers.ArchiveError) as err:
        importers.choose_manifest(INDEX, "img:1", ("linux", "s390x", None))
    assert str(err.value) == ("img:1 has no image for linux/s390x "
                              "(it has: linux/amd64, linux/arm/v6, linux/arm/v7, unknown/unknown)")


@pytest.mark.parametrize("text, platform", [("linux/amd64", ("linux", "amd64", None)),
                                            ("linux/arm/v7", ("linux", "arm", "v7"))])
def test_parse_platform(text, platform):
    assert importers.parse_platform(text) == platform


@pytest.mark.parametrize("bad", ["linux", "linux/", "a/b/c/d", "Linux/AMD64", ""])
def test_parse_platform_refuses(bad):
    with pytest.raises(importers.ArchiveError, match="OS/ARCH"):
        importers.parse_platform(bad)
