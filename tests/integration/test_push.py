"""procview push, login and logout against a real registry (Debian's
docker-registry, distribution 2.8) on 127.0.0.1, read back with skopeo
and procview pull. No containers are started; nothing leaves the
machine (the non-loopback case runs in an empty network namespace)."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess

import pytest

from procview.runtime.images import ImageStore

from .registry_helpers import LocalRegistry, Relay, free_port
from .test_pull import one_error_line, procview, registry, root, small_image  # noqa: F401 (fixtures)
from .test_run import PROCVIEW

USER, PASSWORD = "alice", "s3cret-pw"


@pytest.fixture
def locked_registry():
    reg = LocalRegistry(user_password=(USER, PASSWORD))
    try:
        yield reg.start()
    finally:
        reg.stop()


def store_dir(root, name="store"):
    return os.path.join(root, name)


def config_dir(root):
    return os.path.join(root, "docker-config")


def config_path(root):
    return os.path.join(config_dir(root), "config.json")


def run(root, *args, input=None, store="store"):
    """procview with the test's own DOCKER_CONFIG; ``--root`` for the image commands."""
    if args[0] in ("push", "pull") or args[:2] == ("image", "tag"):
        at = 2 if args[0] == "image" else 1
        args = (*args[:at], "--root", store_dir(root, store), *args[at:])
    environ = {key: value for key, value in os.environ.items() if key != "PROCVIEW_INSECURE_REGISTRIES"}
    environ["DOCKER_CONFIG"] = config_dir(root)
    return subprocess.run([PROCVIEW, *args], capture_output=True, text=True, timeout=300, env=environ, input=input)


def ok(result):
    assert result.returncode == 0, (result.stdout, result.stderr)
    return result


def skopeo_inspect(ref, *extra, raw=False):
    argv = ["skopeo", "inspect", "--tls-verify=false", *extra, *(["--raw"] if raw else []), f"docker://{ref}"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def pushed_digest(result) -> str:
    last = result.stdout.splitlines()[-1]
    tag, _, rest = last.partition(": digest: ")
    digest, _, size = rest.partition(" size: ")
    assert digest.startswith("sha256:") and size.isdigit(), last
    return digest


# -- pushing ---------------------------------------------------------------------------


def test_push_builtin_busybox_reads_back_with_skopeo_and_pulls_to_the_same_id(registry, root):
    ref = f"{registry.address}/tools/busybox:1.0"
    ok(run(root, "image", "tag", "busybox", ref))
    local = ImageStore(store_dir(root)).get(ref)

    result = ok(run(root, "push", ref))
    lines = result.stdout.splitlines()
    assert lines[0] == f"The push refers to repository [{registry.address}/tools/busybox]"
    assert lines[1] == f"{local.diff_ids[0][7:19]}: Pushed"
    assert lines[2].startswith("1.0: digest: sha256:") and len(lines) == 3
    digest = pushed_digest(result)

    inspected = skopeo_inspect(ref)
    manifest = skopeo_inspect(ref, raw=True)
    assert inspected["Digest"] == digest
    assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert [layer["digest"] for layer in manifest["layers"]] == inspected["Layers"]
    assert [layer["mediaType"] for layer in manifest["layers"]] == ["application/vnd.docker.image.rootfs.diff.tar.gzip"]
    assert manifest["config"]["digest"] == local.id  # procview's own image: the config is the one its ID names

    ok(run(root, "pull", ref, store="fresh"))
    pulled = ImageStore(store_dir(root, "fresh")).get(ref)
    assert pulled.id == local.id and pulled.diff_ids == local.diff_ids and pulled.config == local.config


def test_push_again_finds_every_layer_and_gives_the_same_digest(registry, root):
    ref = f"{registry.address}/bb:latest"
    ok(run(root, "image", "tag", "busybox", ref))
    first = ok(run(root, "push", ref))
    again = ok(run(root, "push", ref))
    assert again.stdout.splitlines()[1].endswith(": Layer already exists")
    assert "Pushed" not in again.stdout
    assert pushed_digest(again) == pushed_digest(first)


def test_push_an_imported_image(registry, root):
    """An image imported from an OCI layout: its layer is packed again
    (canonical tar, gzip), so the registry gets new blobs with the same
    files; a pull of them gives back the content."""
    layout, _ = small_image(root, files={"bin/hello": b"hello\n", "etc/motd": b"pushed\n"})
    ref = f"{registry.address}/team/app:v1"
    ok(run(root, "image", "import", "--root", store_dir(root), "--name", ref, layout.path))
    quiet = ok(run(root, "push", "-q", ref))
    assert quiet.stdout == f"{ref}\n"

    inspected = skopeo_inspect(ref)
    assert len(inspected["Layers"]) == 1 and inspected["Architecture"] and inspected["Os"] == "linux"
    ok(run(root, "pull", ref, store="fresh"))
    pulled = ImageStore(store_dir(root, "fresh")).get(ref)
    with open(os.path.join(pulled.layers[0], "etc", "motd"), "rb") as f:
        assert f.read() == b"pushed\n"
    assert pulled.config == ImageStore(store_dir(root)).get(ref).config


# -- login, logout and a registry with passwords ---------------------------------------------


def login(root, address, password=PASSWORD, *extra):
    return run(root, "login", "-u", USER, "--password-stdin", *extra, address, input=password + "\n")


def test_push_to_a_password_registry_needs_login(locked_registry, root):
    ref = f"{locked_registry.address}/private/bb:1"
    ok(run(root, "image", "tag", "busybox", ref))
    one_error_line(run(root, "push", ref), "authentication required")

    result = ok(login(root, locked_registry.address))
    assert result.stdout == "Login Succeeded\n"
    assert "stored unencrypted" in result.stderr
    assert stat.S_IMODE(os.stat(config_path(root)).st_mode) == 0o600
    with open(config_path(root)) as f:
        saved = json.load(f)
    assert saved == {"auths": {locked_registry.address: {"auth": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}}}

    digest = pushed_digest(ok(run(root, "push", ref)))
    assert skopeo_inspect(ref, "--authfile", config_path(root))["Digest"] == digest  # skopeo reads the file too

    assert ok(run(root, "logout", locked_registry.address)).stdout == f"Removing login credentials for {locked_registry.address}\n"
    with open(config_path(root)) as f:
        assert json.load(f) == {"auths": {}}
    assert ok(run(root, "logout", locked_registry.address)).stdout == f"Not logged in to {locked_registry.address}\n"
    one_error_line(run(root, "push", ref), "authentication required")


def test_login_with_a_wrong_password_changes_nothing(locked_registry, root):
    os.makedirs(config_dir(root))
    before = json.dumps({"auths": {"other.example": {"auth": "eDp5"}}, "psFormat": "table {{.ID}}"}).encode()
    with open(config_path(root), "wb") as f:
        f.write(before)
    os.chmod(config_path(root), 0o644)

    line = one_error_line(login(root, locked_registry.address, "wrong"), locked_registry.address,
                          f"wrong user name or password for '{USER}'")
    assert "Traceback" not in line
    with open(config_path(root), "rb") as f:
        assert f.read() == before
    assert os.listdir(config_dir(root)) == ["config.json"]

    ok(login(root, locked_registry.address))
    with open(config_path(root)) as f:
        saved = json.load(f)
    assert saved["psFormat"] == "table {{.ID}}" and set(saved["auths"]) == {"other.example", locked_registry.address}
    assert stat.S_IMODE(os.stat(config_path(root)).st_mode) == 0o600


def test_login_answers_a_bearer_challenge(registry, root):
    relay = Relay(registry, bearer=("bob", "token-pw", "a-token"))
    try:
        wrong = run(root, "login", "-u", "bob", "--password-stdin", relay.address, input="nope\n")
        one_error_line(wrong, "wrong user name or password for 'bob'")
        assert not os.path.exists(config_path(root))
        ok(run(root, "login", "-u", "bob", "--password-stdin", relay.address, input="token-pw\n"))
    finally:
        relay.stop()
    tokens = [path for path, _ in relay.requests if path.startswith("/token")]
    assert tokens and all("scope=" not in t for t in tokens), tokens  # a login asks for no repository
    with open(config_path(root)) as f:
        assert relay.address in json.load(f)["auths"]


def test_login_usage_errors(root):
    both = run(root, "login", "-u", USER, "-p", "x", "--password-stdin", "127.0.0.1:1", input="y\n")
    assert both.returncode == 2 and "mutually exclusive" in both.stderr
    no_user = run(root, "login", "--password-stdin", "127.0.0.1:1", input="y\n")
    one_error_line(no_user, "--username")
    no_tty = run(root, "login", "127.0.0.1:1", input="")
    one_error_line(no_tty, "interactive login")
    assert not os.path.exists(config_dir(root))


# -- failures ----------------------------------------------------------------------------


def test_push_of_an_image_the_store_lacks(registry, root):
    one_error_line(run(root, "push", f"{registry.address}/nothing:v1"),
                   f"an image does not exist locally with the tag: {registry.address}/nothing:v1")


def test_push_to_a_registry_that_is_down(root):
    ref = f"127.0.0.1:{free_port()}/bb:1"
    ok(run(root, "image", "tag", "busybox", ref))
    one_error_line(run(root, "push", ref), "connection refused")


def test_push_bad_references(root):
    one_error_line(run(root, "push", "UPPER/case:1"), "invalid image name")
    one_error_line(run(root, "push", f"127.0.0.1:5000/bb@sha256:{'a' * 64}"), "cannot push to a digest")


def test_plain_http_push_to_a_non_loopback_registry_needs_insecure_registry(root):
    """In an empty network namespace, so no packet can leave; the refusal
    comes before any connection (allowed, the push tries and finds no network)."""
    ref = "192.0.2.1:5000/bb:1"
    ok(run(root, "image", "tag", "busybox", ref))

    def push_in_netns(*args):
        environ = {**os.environ, "DOCKER_CONFIG": config_dir(root)}
        environ.pop("PROCVIEW_INSECURE_REGISTRIES", None)
        return subprocess.run(["unshare", "--net", "--", PROCVIEW, "push", "--root", store_dir(root), *args],
                              capture_output=True, text=True, timeout=120, env=environ)

    one_error_line(push_in_netns("--plain-http", ref), "192.0.2.1:5000: plain HTTP is allowed only to loopback")
    one_error_line(push_in_netns("--plain-http", "--insecure-registry", "192.0.2.1:5000", ref),
                   "cannot connect to registry 192.0.2.1:5000")


def test_login_asks_for_the_password_on_a_terminal_without_echo(locked_registry, root, monkeypatch):
    from .pty_helpers import run_on_pty

    monkeypatch.setenv("DOCKER_CONFIG", config_dir(root))
    code, output = run_on_pty([PROCVIEW, "login", "-u", USER, locked_registry.address], 24, 80,
                              reply=(b"Password: ", PASSWORD.encode() + b"\n"))
    assert code == 0, output
    assert "Login Succeeded" in output and PASSWORD not in output
    with open(config_path(root)) as f:
        assert locked_registry.address in json.load(f)["auths"]
