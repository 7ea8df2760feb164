"""Image references by Docker's rules (runtime/images/reference.py)."""

import pytest

from procview.runtime.images.reference import BadReference, Reference, parse

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    "text, domain, path, tag, digest",
    [
        ("busybox", "docker.io", "library/busybox", "latest", None),
        ("busybox:1.36", "docker.io", "library/busybox", "1.36", None),
        ("library/busybox", "docker.io", "library/busybox", "latest", None),
        ("team/app", "docker.io", "team/app", "latest", None),
        ("docker.io/busybox", "docker.io", "library/busybox", "latest", None),
        ("index.docker.io/team/app:v1", "docker.io", "team/app", "v1", None),
        ("localhost/app", "localhost", "app", "latest", None),
        ("localhost:5000/app:v2", "localhost:5000", "app", "v2", None),
        ("127.0.0.1:5000/a/b/c:v1.2-rc_3", "127.0.0.1:5000", "a/b/c", "v1.2-rc_3", None),
        ("registry.example/app", "registry.example", "app", "latest", None),
        ("[::1]:5000/app:x", "[::1]:5000", "app", "x", None),
        (f"busybox@{D}", "docker.io", "library/busybox", None, D),
        (f"host:5000/repo:tag@{D}", "host:5000", "repo", "tag", D),
        ("my-app__x.y", "docker.io", "library/my-app__x.y", "latest", None),
    ],
)
def test_parse(text, domain, path, tag, digest):
    assert parse(text) == Reference(domain, path, tag, digest)


def test_names_for_the_api_the_store_and_the_user():
    hub = parse("busybox")
    assert (hub.registry, hub.path, hub.api_reference) == ("registry-1.docker.io", "library/busybox", "latest")
    assert (hub.familiar, hub.stored_name, str(hub)) == ("busybox", "busybox:latest", "docker.io/library/busybox:latest")
    team = parse("team/app:1")
    assert (team.familiar, team.stored_name) == ("team/app", "team/app:1")
    local = parse("127.0.0.1:5000/img:v1")
    assert (local.registry, local.stored_name, str(local)) == ("127.0.0.1:5000", "127.0.0.1:5000/img:v1", "127.0.0.1:5000/img:v1")
    by_digest = parse(f"host:5000/repo:tag@{D}")
    assert by_digest.api_reference == D
    assert by_digest.stored_name == f"host:5000/repo@{D}" and str(by_digest) == f"host:5000/repo@{D}"


@pytest.mark.parametrize(
    "bad",
    ["", "Busybox", "busy box", "a:b:c", "../x", "a//b", "-a", "a:", "a:-tag", ":tag", "x" * 256, "a/.b", "a\nb",
     "busybox@sha256:abc", "busybox@md5:" + "0" * 32, "busybox@", "ab" * 32, "host:port/app", "a/b:c/d",
     "http://host/app"],
)
def test_invalid_references_are_one_line(bad):
    with pytest.raises(BadReference) as err:
        parse(bad)
    assert "\n" not in str(err.value).replace(repr(bad), "") and "invalid image name" in str(err.value)
