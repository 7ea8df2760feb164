"""procview pull against a real registry (Debian's docker-registry,
distribution 2.8), started per test on 127.0.0.1 and filled with skopeo.
Nothing leaves the machine: every registry is on loopback, and the
non-loopback case is checked inside an empty network namespace."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time

import pytest

from procview.runtime.images import ImageStore

from .registry_helpers import LocalRegistry, OciLayout, Relay, free_port
from .test_run import PROCVIEW, state_root  # noqa: F401 (fixture)

MiB = 1 << 20


@pytest.fixture
def registry():
    reg = LocalRegistry()
    try:
        yield reg.start()
    finally:
        reg.stop()


@pytest.fixture
def root():
    """A private image store (and the DOCKER_CONFIG directory beside it)."""
    path = tempfile.mkdtemp(prefix="procview-pull-")
    try:
        yield path
    finally:
        shutil.rmtree(path)


def procview(*args, env=None, timeout=300):
    environ = {key: value for key, value in os.environ.items() if key != "PROCVIEW_INSECURE_REGISTRIES"}
    environ.update({"DOCKER_CONFIG": "/nonexistent", **(env or {})})
    return subprocess.run([PROCVIEW, *args], capture_output=True, text=True, timeout=timeout, env=environ)


def pull(root, *args, **kwargs):
    return procview("pull", "--root", os.path.join(root, "store"), *args, **kwargs)


def store(root) -> ImageStore:
    return ImageStore(os.path.join(root, "store"))


def one_error_line(result, *words):
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("procview: error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def assert_store_untouched(root):
    """No image, no layer, nothing in tmp/, no pull directory (only
    .partial files may stay)."""
    top = os.path.join(root, "store")
    for sub in ("images", "layers", "tmp"):
        path = os.path.join(top, sub)
        assert not os.path.exists(path) or os.listdir(path) == [], f"{sub}/: {os.listdir(path)}"
    pulls = os.path.join(top, "pulls")
    left = [e for e in os.listdir(pulls) if not e.endswith(".partial")] if os.path.isdir(pulls) else []
    assert left == [], left


def small_image(root, tag="v1", files=None):
    """An OCI layout with one small image tagged ``tag``; its manifest descriptor."""
    layout = OciLayout(os.path.join(root, f"oci-{tag}"))
    desc = layout.image(files or {"bin/hello": b"hello\n"})
    layout.tag(desc, tag)
    return layout, desc


def manifest_of(layout: OciLayout, desc: dict) -> dict:
    with open(os.path.join(layout.path, "blobs", "sha256", desc["digest"].removeprefix("sha256:"))) as f:
        return json.load(f)


# -- pulling ---------------------------------------------------------------------------


def test_pull_by_tag_gives_the_id_an_import_of_the_same_archive_gives(registry, root):
    archive = os.path.join(root, "busybox.tar")
    exported = procview("image", "export", "--root", os.path.join(root, "builder"), "busybox", archive)
    assert exported.returncode == 0, exported.stderr
    registry.push(f"docker-archive:{archive}", "tools/busybox:1.0")

    result = pull(root, f"{registry.address}/tools/busybox:1.0")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "1.0: Pulling from tools/busybox"
    assert lines[1].endswith(": Pull complete") and len(lines[1].split(":")[0]) == 12
    assert lines[2].startswith("Digest: sha256:")
    assert lines[3] == f"Status: Downloaded newer image for {registry.address}/tools/busybox:1.0"
    assert lines[4] == f"{registry.address}/tools/busybox:1.0"

    pulled = store(root).get(f"{registry.address}/tools/busybox:1.0")
    imported = ImageStore(os.path.join(root, "imported")).import_path(archive)
    assert pulled.id == imported.id
    assert pulled.diff_ids == imported.diff_ids and pulled.config == imported.config
    listed = procview("image", "ls", "--root", os.path.join(root, "store"))
    assert f"{registry.address}/tools/busybox:1.0" in listed.stdout and pulled.id[7:19] in listed.stdout

    again = pull(root, f"{registry.address}/tools/busybox:1.0")
    assert again.returncode == 0 and f"Status: Image is up to date for {registry.address}/tools/busybox:1.0" in again.stdout


def test_pull_of_an_oci_image_by_digest_fetches_no_stored_layer(registry, root):
    layout, desc = small_image(root)
    registry.push(f"oci:{layout.path}:v1", "img:v1")
    imported = ImageStore(os.path.join(root, "imported")).import_path(layout.path)

    assert pull(root, f"{registry.address}/img:v1").returncode == 0
    by_digest = pull(root, f"{registry.address}/img@{desc['digest']}")
    assert by_digest.returncode == 0, by_digest.stderr
    layer = manifest_of(layout, desc)["layers"][0]["digest"]
    assert f"{layer[7:19]}: Already exists" in by_digest.stdout
    assert f"Digest: {desc['digest']}" in by_digest.stdout
    assert by_digest.stdout.splitlines()[0] == f"{desc['digest']}: Pulling from img"
    # the layer blob was fetched once, by the first pull
    assert registry.log().count(f"GET /v2/img/blobs/{layer} ") == 1

    stored = store(root).get(f"{registry.address}/img@{desc['digest']}")
    assert stored.id == imported.id == store(root).get(f"{registry.address}/img:v1").id
    listed = procview("image", "ls", "--root", os.path.join(root, "store")).stdout
    assert f"{registry.address}/img@{desc['digest']}" in listed
    # exported untagged, as docker save writes an image that has no tag
    archive = os.path.join(root, "by-digest.tar")
    exported = procview("image", "export", "--root", os.path.join(root, "store"), f"{registry.address}/img@{desc['digest']}", archive)
    assert exported.returncode == 0, exported.stderr
    with tarfile.open(archive) as tar:
        assert json.load(tar.extractfile("manifest.json"))[0]["RepoTags"] == []


def test_quiet_pull_prints_only_the_reference(registry, root):
    layout, _ = small_image(root)
    registry.push(f"oci:{layout.path}:v1", "img:v1")
    result = pull(root, "-q", f"{registry.address}/img:v1")
    assert result.returncode == 0 and result.stdout == f"{registry.address}/img:v1\n" and result.stderr == ""


def test_an_index_gives_this_machines_platform_or_the_one_asked_for(registry, root):
    layout = OciLayout(os.path.join(root, "multi"))
    amd64 = layout.image({"arch": b"amd64\n"}, "amd64")
    arm64 = layout.image({"arch": b"arm64\n"}, "arm64")
    index = layout.index([amd64, arm64])
    layout.tag(index, "multi")
    registry.push(f"oci:{layout.path}:multi", "multi:1", all_images=True)
    config = {arch: manifest_of(layout, d)["config"]["digest"] for arch, d in (("amd64", amd64), ("arm64", arm64))}

    result = pull(root, f"{registry.address}/multi:1")
    assert result.returncode == 0, result.stderr
    assert f"Digest: {index['digest']}" in result.stdout  # the index's, as docker pull prints
    assert store(root).get(f"{registry.address}/multi:1").id == config["amd64"]

    result = pull(root, "--platform", "linux/arm64", f"{registry.address}/multi:1")
    assert result.returncode == 0, result.stderr
    image = store(root).get(f"{registry.address}/multi:1")
    assert image.id == config["arm64"]
    with open(os.path.join(image.layers[0], "arch")) as f:
        assert f.read() == "arm64\n"

    missing = pull(root, "--platform", "linux/s390x", f"{registry.address}/multi:1")
    one_error_line(missing, "no image for linux/s390x", "it has: linux/amd64, linux/arm64")
    bad = pull(root, "--platform", "s390x", f"{registry.address}/multi:1")
    one_error_line(bad, "invalid platform")


# -- failures --------------------------------------------------------------------------


def test_unknown_tag_and_repository_are_one_line(registry, root):
    layout, _ = small_image(root)
    registry.push(f"oci:{layout.path}:v1", "img:v1")
    one_error_line(pull(root, f"{registry.address}/img:v2"), f"manifest for {registry.address}/img:v2 not found", "manifest unknown")
    one_error_line(pull(root, f"{registry.address}/nothing:v1"), "not found")
    one_error_line(pull(root, f"{registry.address}/Bad:v1"), "invalid image name")
    assert_store_untouched(root)


def test_a_corrupted_blob_is_refused_and_nothing_is_kept(registry, root):
    layout, desc = small_image(root, files={"data": os.urandom(64 << 10)})
    registry.push(f"oci:{layout.path}:v1", "img:v1")
    layer = manifest_of(layout, desc)["layers"][0]["digest"]
    with open(registry.blob_file(layer), "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))

    result = pull(root, f"{registry.address}/img:v1")
    one_error_line(result, f"blob {layer} does not match its digest")
    assert_store_untouched(root)
    assert not os.path.exists(os.path.join(root, "store", "pulls", f"{layer[7:]}.partial"))


@pytest.mark.parametrize("change, word", [(-10, "truncated"), (+10, "oversized")])
def test_a_blob_of_the_wrong_size_is_refused(registry, root, change, word):
    layout, desc = small_image(root, files={"data": os.urandom(64 << 10)})
    registry.push(f"oci:{layout.path}:v1", "img:v1")
    layer = manifest_of(layout, desc)["layers"][0]
    path = registry.blob_file(layer["digest"])
    with open(path, "r+b") as f:
        if change < 0:
            f.truncate(layer["size"] + change)
        else:
            f.seek(0, os.SEEK_END)
            f.write(b"\0" * change)
    one_error_line(pull(root, f"{registry.address}/img:v1"), word)
    assert_store_untouched(root)


def test_an_interrupted_download_is_resumed_with_a_range_request(registry, root):
    layout, desc = small_image(root, files={"big": os.urandom(4 * MiB)})
    registry.push(f"oci:{layout.path}:v1", "img:v1")
    layer = manifest_of(layout, desc)["layers"][0]
    relay = Relay(registry, cut={layer["digest"]: MiB})
    try:
        first = pull(root, f"{relay.address}/img:v1")
        one_error_line(first, "pull again to resume")
        assert_store_untouched(root)
        partial = os.path.join(root, "store", "pulls", f"{layer['digest'][7:]}.partial")
        kept = os.path.getsize(partial)
        assert 0 < kept < layer["size"]

        second = pull(root, f"{relay.address}/img:v1")
        assert second.returncode == 0, second.stderr
    finally:
        relay.stop()
    blob_requests = [rng for path, rng in relay.requests if path.endswith(f"/blobs/{layer['digest']}")]
    assert blob_requests == [None, f"bytes={kept}-"]
    assert not os.path.exists(partial)  # deleted once verified
    assert os.listdir(os.path.join(root, "store", "pulls")) == []
    image = store(root).get(f"{relay.address}/img:v1")
    assert image.id == manifest_of(layout, desc)["config"]["digest"]
    assert os.path.getsize(os.path.join(image.layers[0], "big")) == 4 * MiB


def test_an_unknown_manifest_media_type_is_refused(registry, root):
    layout, _ = small_image(root)
    registry.push(f"oci:{layout.path}:v1", "img:v1")
    schema1 = "application/vnd.docker.distribution.manifest.v1+prettyjws"
    relay = Relay(registry, manifest_type=schema1)
    try:
        one_error_line(pull(root, f"{relay.address}/img:v1"), f"unsupported manifest media type {schema1}")
    finally:
        relay.stop()
    assert_store_untouched(root)


def test_registry_down_is_one_line(root):
    result = pull(root, f"127.0.0.1:{free_port()}/img:v1")
    one_error_line(result, "connection refused")
    assert_store_untouched(root)


def test_plain_http_to_a_non_loopback_registry_needs_insecure_registry(root):
    """In a network namespace of its own (no route anywhere), so that no
    packet can leave; the refusal comes before any connection, which the
    second command shows: allowed, it tries and finds no network."""
    netns = ["unshare", "--net", "--"]

    def pull_in_netns(*args, env=None):
        environ = {**os.environ, "DOCKER_CONFIG": "/nonexistent", **(env or {})}
        return subprocess.run([*netns, PROCVIEW, "pull", "--root", os.path.join(root, "store"), *args],
                              capture_output=True, text=True, timeout=120, env=environ)

    refused = pull_in_netns("--plain-http", "192.0.2.1:5000/img:v1")
    one_error_line(refused, "192.0.2.1:5000: plain HTTP is allowed only to loopback registries", "--insecure-registry")
    allowed = pull_in_netns("--plain-http", "--insecure-registry", "192.0.2.1:5000", "192.0.2.1:5000/img:v1")
    one_error_line(allowed, "cannot connect to registry 192.0.2.1:5000", "unreachable")
    from_env = pull_in_netns("--plain-http", "192.0.2.1:5000/img:v1", env={"PROCVIEW_INSECURE_REGISTRIES": "192.0.2.0/24"})
    one_error_line(from_env, "cannot connect to registry 192.0.2.1:5000")
    assert_store_untouched(root)


# -- authentication --------------------------------------------------------------------


def docker_config(root, registry_address, user, password):
    import base64

    directory = os.path.join(root, "docker-config")
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump({"auths": {registry_address: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}}}, f)
    return {"DOCKER_CONFIG": directory}


@pytest.fixture
def locked_registry():
    reg = LocalRegistry(user_password=("alice", "s3cret-pw"))
    try:
        yield reg.start()
    finally:
        reg.stop()


def test_basic_auth_with_docker_config(locked_registry, root):
    layout, _ = small_image(root)
    locked_registry.push(f"oci:{layout.path}:v1", "img:v1")
    ref = f"{locked_registry.address}/img:v1"

    one_error_line(pull(root, ref), "authentication required", "no credentials")
    one_error_line(pull(root, ref, env=docker_config(root, locked_registry.address, "alice", "wrong")),
                   "unauthorized: wrong user name or password for 'alice'")
    assert_store_untouched(root)
    good = pull(root, ref, env=docker_config(root, locked_registry.address, "alice", "s3cret-pw"))
    assert good.returncode == 0, good.stderr
    assert store(root).get(ref)


def test_bearer_token_flow(registry, root):
    layout, _ = small_image(root)
    registry.push(f"oci:{layout.path}:v1", "img:v1")
    relay = Relay(registry, bearer=("bob", "token-pw", "a-token"))
    try:
        ref = f"{relay.address}/img:v1"
        one_error_line(pull(root, ref, env=docker_config(root, relay.address, "bob", "nope")), "wrong user name or password")
        good = pull(root, ref, env=docker_config(root, relay.address, "bob", "token-pw"))
        assert good.returncode == 0, good.stderr
    finally:
        relay.stop()
    tokens = [path for path, _ in relay.requests if path.startswith("/token")]
    assert tokens and all("scope=repository%3Aimg%3Apull" in t and "service=procview-test" in t for t in tokens), tokens


# -- procview run ------------------------------------------------------------------------


def test_run_pulls_an_image_it_does_not_have(registry, root, state_root):  # noqa: F811
    archive = os.path.join(root, "busybox.tar")
    assert procview("image", "export", "--root", os.path.join(root, "builder"), "busybox", archive).returncode == 0
    registry.push(f"docker-archive:{archive}", "bb:1")
    result = procview("run", "--root", state_root, "--rm", "--no-view", f"{registry.address}/bb:1", "echo", "hello",
                      env={"PROCVIEW_FORKSERVER_SOCKET": ""})
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello\n"
    assert result.stderr.startswith(f"Unable to find image '{registry.address}/bb:1' locally\n")
    assert f"Status: Downloaded newer image for {registry.address}/bb:1" in result.stderr

    missing = procview("run", "--root", state_root, "--rm", "--no-view", f"{registry.address}/bb:2", "true",
                       env={"PROCVIEW_FORKSERVER_SOCKET": ""})
    assert missing.returncode == 125 and "manifest unknown" in missing.stderr.splitlines()[-1]


def test_builtin_busybox_needs_no_registry(state_root):  # noqa: F811
    """busybox is made from the host's busybox before any registry is
    asked: it runs in a network namespace with no way out."""
    result = subprocess.run(["unshare", "--net", "--", PROCVIEW, "run", "--root", state_root, "--rm", "--no-view",
                             "--network", "none", "busybox", "echo", "offline"],
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PROCVIEW_FORKSERVER_SOCKET": ""})
    assert result.returncode == 0, result.stderr
    assert result.stdout == "offline\n" and "Unable to find" not in result.stderr


def test_a_full_disk_is_one_line_and_leaves_nothing(registry, root):
    layout, _ = small_image(root, files={"big": os.urandom(3 * MiB)})
    registry.push(f"oci:{layout.path}:v1", "img:v1")
    small = os.path.join(root, "small")
    os.mkdir(small)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "procview-pull-test", small], check=True)
    try:
        result = procview("pull", "--root", small, f"{registry.address}/img:v1")
        one_error_line(result, "No space left on device")
        for sub in ("images", "layers", "tmp"):
            path = os.path.join(small, sub)
            assert not os.path.exists(path) or os.listdir(path) == []
        pulls = os.path.join(small, "pulls")
        assert [e for e in os.listdir(pulls) if not e.endswith(".partial")] == []
    finally:
        subprocess.run(["umount", small], check=True)


def test_a_detached_run_pulls_before_it_starts(registry, root, state_root):  # noqa: F811
    archive = os.path.join(root, "busybox.tar")
    assert procview("image", "export", "--root", os.path.join(root, "builder"), "busybox", archive).returncode == 0
    registry.push(f"docker-archive:{archive}", "bb:1")
    env = {"PROCVIEW_FORKSERVER_SOCKET": ""}
    started = procview("run", "--root", state_root, "-d", "--name", "pulled", "--no-view", f"{registry.address}/bb:1",
                       "echo", "detached", env=env)
    try:
        assert started.returncode == 0, started.stderr
        assert f"Unable to find image '{registry.address}/bb:1' locally" in started.stderr
        assert "Pull complete" in started.stderr
        for _ in range(600):
            logs = procview("logs", "--root", state_root, "pulled", env=env)
            if logs.stdout:
                break
            time.sleep(0.1)
        assert logs.stdout == "detached\n", logs  # the pull's output is not in the container's log
    finally:
        procview("rm", "-f", "--root", state_root, "pulled", env=env)
